"""Diffusion transformer (DiT, Peebles & Xie 2023) over latent patches, for world models.

Read top to bottom: config and presets, the embedders, one block, the model.

* tokens are latent patches laid out by a :class:`~cosmos_sim.data.packing.SequenceLayout`
  (a plain batch or packed clips — the model does not care);
* adaLN-Zero: each block's shift / scale / gate come from its frame's conditioning
  vector = noise-level embedding + that frame's action-chunk embedding (Cosmos's
  action-conditioned recipe; zero for clean context frames and for dropped actions);
* self-attention with 3-D RoPE (time, row, column) plus a learned absolute embedding
  of (row, column) and of the camera view; block-causal over latent frames, so clean
  context keys/values can be cached (:class:`~cosmos_sim.models.attention.KVCache`);
* Plücker ray patches enter every block through a zero-initialised projection, and so
  do the state-point maps (where the proprio state puts the end effector, the block, ...);
* cross-attention to the instruction (hashed words, encoder trained with the model).

The time axis has no absolute embedding on purpose: with RoPE alone, attention depends
only on time *differences*, so a sliding window of cached context stays exact when the
env's frame counter grows past anything seen in training.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from cosmos_sim.conditioning import points
from cosmos_sim.conditioning import text as text_encoders
from cosmos_sim.data.packing import NULL_INSTRUCTION, SequenceLayout, TokenBatch
from cosmos_sim.errors import ConfigError
from cosmos_sim.models.attention import AttentionMask, KVCache, attention, resolve_backend


@dataclass
class DiTConfig:
    """Sizes of the DiT. ``action_dim=0`` / ``text_vocab=0`` / ``rays=False`` drop a control."""

    latent_channels: int = 16
    patch_size: int = 1  # latent pixels per token side (8×8 latents, p=1 → 64 tokens/frame)
    dim: int = 192
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    action_dim: int = 0  # A: per-step action size (0 = no action conditioning)
    action_chunk: int = 4  # c: actions per latent frame (the tokenizer's temporal factor)
    # Also add the action embedding to the frame's tokens (zero-initialised projection):
    # adaLN alone shares one pathway with the noise level and learned actions slowly here.
    action_tokens: bool = False
    # S: proprio state size (0 = none). Each frame's normalised state is embedded and added
    # like its action chunk (context frames too): a frame is drawn where its state says.
    state_dim: int = 0
    # Planar state points with one (3, 3) normalised-state → latent-grid homography per
    # view (conditioning/points.py): each frame's points as Gaussian maps on its tokens.
    state_points: list[dict] = field(default_factory=list)
    rays: bool = False  # Plücker ray conditioning (camera control)
    max_views: int = 4  # learned view embeddings (multi-view folded into time)
    max_grid: int = 32  # learned (row, column) embeddings, in patches
    text_vocab: int = 0  # hashed instruction vocabulary (0 = no cross-attention)
    # what turns the instruction's ids into tokens: "hashed" (a table trained with the model)
    # or "minilm" (a frozen pretrained sentence encoder; conditioning/text.py)
    text_encoder: str = "hashed"
    attention: str = "sdpa"  # sdpa | flex | te | auto (see models/attention.py)
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("latent_channels", "patch_size", "dim", "depth", "heads", "action_chunk"):
            if int(getattr(self, name)) < 1:
                raise ConfigError("must be ≥ 1", field=name, found=getattr(self, name))
        if self.dim % self.heads:
            raise ConfigError(
                f"dim must be a multiple of heads, got {self.dim=} {self.heads=}", field="dim"
            )
        hs = self.dim // self.heads
        if hs % 2 or hs < 6:
            raise ConfigError(
                "head size dim/heads must be even and ≥ 6 (3-D RoPE)", field="heads", found=hs
            )
        if self.action_dim < 0 or self.text_vocab < 0 or self.text_vocab == 1:
            raise ConfigError("action_dim ≥ 0 and text_vocab = 0 or ≥ 2", field="text_vocab")
        text_encoders.check_text_encoder(self.text_encoder)
        if self.text_encoder == "minilm" and self.text_vocab not in (0, text_encoders.MINILM_VOCAB):
            raise ConfigError(
                "the pretrained text encoder reads its own WordPiece ids",
                field="text_vocab",
                expected=text_encoders.MINILM_VOCAB,
                found=self.text_vocab,
            )
        for p in self.state_points:
            views = len(self.state_points[0]["homographies"])
            ok = {"x", "y", "homographies"} <= p.keys() and len(p["homographies"]) == views
            if not ok or any(len(m) != 9 for m in p["homographies"]):
                raise ConfigError(
                    "a state point needs x, y and one 3×3 homography per view (all alike)",
                    field="state_points",
                    found=p.get("name", p.keys()),
                )
            if not 0 <= min(p["x"], p["y"]) <= max(p["x"], p["y"]) < max(self.state_dim, 1):
                raise ConfigError(
                    "state point index outside the state",
                    field="state_points",
                    expected=f"< state_dim {self.state_dim}",
                    found=(p["x"], p["y"]),
                )
        resolve_backend(self.attention)  # validates; resolved where used ("auto" stays portable)

    @property
    def token_dim(self) -> int:  # P = C·p·p
        return self.latent_channels * self.patch_size**2

    def to_dict(self) -> dict:
        out = asdict(self)
        if out["text_encoder"] == "hashed":  # (only when set: older configs stay as they were)
            del out["text_encoder"]
        return out


# Presets: named instances in one registry (cosmos-sim train ... --preset NAME). A variant
# sets its controls on top: preset("cpu-small", action_dim=A) or preset(..., rays=True).
PRESETS: dict[str, DiTConfig] = {
    # 6.6 M parameters (0.8 M of them the hashed-word table): 64×64 clips → 8×8 latents,
    # 64 tokens per latent frame; a 32 × 64-token forward takes ~0.3-0.4 s on this CPU.
    "cpu-small": DiTConfig(dim=192, depth=6, heads=4, text_vocab=4096, action_tokens=True),
    # ~200 M parameters: 256×256 clips → 32×32 latents, 2×2 patches = 256 tokens per frame.
    "gpu": DiTConfig(
        dim=768,
        depth=12,
        heads=12,
        patch_size=2,
        text_vocab=32768,
        attention="auto",
        action_tokens=True,
    ),
}


def preset(name: str, **overrides) -> DiTConfig:
    if name not in PRESETS:
        raise ConfigError("unknown preset", field="preset", expected=list(PRESETS), found=name)
    return DiTConfig(**{**PRESETS[name].to_dict(), **overrides})


def hash_instruction(text: str, vocab: int, max_words: int = 16) -> Tensor:
    """Lower-case words → stable hashed ids in [2, vocab) (0 = padding, 1 = null)."""
    words = text.lower().replace(",", " ").replace(".", " ").split()[:max_words]
    return torch.tensor([2 + zlib.crc32(w.encode()) % (vocab - 2) for w in words], dtype=torch.long)


def instruction_ids(text: str, vocab: int, encoder: str = "hashed") -> Tensor:
    """An instruction → (L,) long ids for the DiT's ``text_encoder`` (0 = padding)."""
    text_encoders.check_text_encoder(encoder)
    return hash_instruction(text, vocab) if encoder == "hashed" else text_encoders.minilm_ids(text)


@dataclass
class Conditioning:
    """Everything a forward pass sees besides the noisy tokens and their noise level."""

    layout: SequenceLayout
    actions: Tensor | None = None  # (B, F, c, A) normalised action chunks
    has_action: Tensor | None = None  # (B, F) bool: False → zero action embedding
    rays: Tensor | None = None  # (B, N, 6·p·p) Plücker ray patches
    states: Tensor | None = None  # (B, F, S) normalised proprio state per frame
    instruction_ids: Tensor | None = None  # (B, L) long hashed words, 0 = padding
    instruction_doc: Tensor | None = None  # (B, L) long document of each word, -1 = padding

    @classmethod
    def from_batch(cls, batch: TokenBatch) -> Conditioning:
        return cls(
            batch.layout,
            batch.actions,
            batch.has_action,
            batch.rays,
            batch.states,
            batch.instruction_ids,
            batch.instruction_doc,
        )


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def frame_index(token_frame: Tensor, n_frames: int) -> Tensor:
    """(B, N) row-local frame of each token → (B·N,) index into the flattened (B·F) frames."""
    b = token_frame.shape[0]
    offsets = torch.arange(b, device=token_frame.device)[:, None] * n_frames
    return (token_frame + offsets).flatten()


def gather_frames(x: Tensor, flat_index: Tensor) -> Tensor:
    """(B, F, D) per-frame rows → (B, N, D) per-token rows (index_select: ~10× gather on CPU)."""
    b, _, d = x.shape
    return x.flatten(0, 1).index_select(0, flat_index).view(b, -1, d)


class FrameSpread:
    """Per-frame rows onto tokens held as (B, G, T, D) groups. Where every row's tokens are its
    first G frames, T contiguous tokens each (the envs' batches), a frame's row broadcasts over
    its T tokens: no (B, N, 9D) gather per block, and its bf16 → fp32 casts stay per frame.
    Other layouts (packed rows) keep one group, G = 1, T = N, and gather per token."""

    def __init__(self, token_frame: Tensor, n_frames: int) -> None:
        b, n = token_frame.shape
        t = int((token_frame[0] == 0).sum())  # tokens of the first frame
        per_frame = torch.arange(n, device=token_frame.device) // max(t, 1)
        regular = t > 0 and n % t == 0 and n // t <= n_frames
        regular = regular and torch.equal(token_frame, per_frame.expand(b, n))
        self.groups = (n // t, t) if regular else (1, n)
        self.index = None if regular else frame_index(token_frame, n_frames)  # (B·N,)

    def group(self, x: Tensor) -> Tensor:
        """(B, N, K) per token → (B, G, T, K), a view."""
        return x.view(x.shape[0], *self.groups, x.shape[-1])

    def __call__(self, x: Tensor) -> Tensor:
        """(B, F, K) per frame → (B, G, 1, K) (broadcast over T) or (B, 1, N, K)."""
        if self.index is None:
            return x[:, : self.groups[0], None]
        return self.group(gather_frames(x, self.index))


class NoiseLevelEmbedder(nn.Module):
    """c_noise → sinusoidal features → MLP (DiT's TimestepEmbedder)."""

    def __init__(self, dim: int, n_freq: int = 256) -> None:
        super().__init__()
        self.n_freq = n_freq
        self.mlp = nn.Sequential(nn.Linear(n_freq, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: Tensor) -> Tensor:  # (B, F) → (B, F, D)
        half = self.n_freq // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=c_noise.device) / half)
        args = c_noise[..., None].float() * 1000 * freqs  # EDM c_noise is O(1): spread it out
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Rope3D(nn.Module):
    """Rotary position embedding (Su et al. 2021) with the head split over (time, row, column)."""

    def __init__(self, head_size: int, theta: float) -> None:
        super().__init__()
        d_hw = 2 * (head_size // 6)
        dims = (head_size - 2 * d_hw, d_hw, d_hw)  # time gets the remainder
        for axis, d in zip("thw", dims, strict=True):
            self.register_buffer(
                f"freq_{axis}", theta ** (-torch.arange(0, d, 2).float() / d), persistent=False
            )

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, 3) positions → cos, sin of shape (B, N, 1, 1, hs/2) (broadcast over q/k, heads)."""
        angles = torch.cat(
            [
                pos[..., i, None].float() * f
                for i, f in enumerate((self.freq_t, self.freq_h, self.freq_w))
            ],
            dim=-1,
        )
        return angles.cos()[:, :, None, None], angles.sin()[:, :, None, None]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, N, 2, nh, hs) queries and keys together, in fp32 (what mixing with the fp32
    cos/sin promotes to anyway), rounded once to x's dtype: one cast of x up front, instead of
    a strided cast per product (bf16 × fp32 on CPU copies its bf16 operand)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.heads, self.backend = cfg.heads, resolve_backend(cfg.attention)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x, rope, mask, cache: KVCache | None, layer: int, write: bool) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads)
        q, k = apply_rope(qkv[:, :, :2], *rope).permute(2, 0, 3, 1, 4)  # (B, nh, N, hs)
        v = qkv[:, :, 2].transpose(1, 2)
        if cache is not None:  # context keys/values computed once, reused
            k, v = cache.attend_kv(layer, k, v, write)
        y = attention(q, k, v, mask, self.backend)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.heads, self.backend = cfg.heads, resolve_backend(cfg.attention)
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: Tensor, text: Tensor, mask: AttentionMask) -> Tensor:
        (b, n, d), nl, hs = x.shape, text.shape[1], x.shape[2] // self.heads
        q = self.q(x).view(b, n, self.heads, hs).transpose(1, 2)  # (B, nh, N, hs)
        k, v = self.kv(text).view(b, nl, 2, self.heads, hs).permute(2, 0, 3, 1, 4)
        y = attention(q, k, v, mask, self.backend)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class StatePoints(nn.Module):
    """Per-token maps of where each frame's state points project in the token's view
    (:func:`~cosmos_sim.conditioning.points.point_features` at the token's patch centre)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        index, homography = points.point_tensors(cfg.state_points)
        self.register_buffer("index", index, False)
        self.register_buffer("homography", homography, False)
        self.patch = cfg.patch_size
        self.dim = points.FEATURES * len(cfg.state_points)

    def forward(self, states: Tensor, lay: SequenceLayout) -> Tensor:
        """(B, F, S) normalised states → (B, N, 4·K) features."""
        view = lay.frame_view.clamp(max=self.homography.shape[0] - 1)
        uv = points.project(self.homography[view], states.float()[:, :, self.index])
        uv = uv.flatten(2).gather(1, lay.token_frame[..., None].expand(-1, -1, uv[0, 0].numel()))
        centre = lay.token_hw.flip(-1).float() * self.patch + (self.patch - 1) / 2  # (x, y)
        return points.point_features(uv.unflatten(-1, (-1, 2)), centre)


class DiTBlock(nn.Module):
    """adaLN-Zero block: self-attention, cross-attention, MLP, each scaled, shifted, gated."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(cfg)
        self.cross = CrossAttention(cfg) if cfg.text_vocab else None
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(cfg.mlp_ratio * d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))
        self.ray_proj = nn.Linear(6 * cfg.patch_size**2, d) if cfg.rays else None
        n_points = points.FEATURES * len(cfg.state_points)
        self.point_proj = nn.Linear(n_points, d) if n_points else None

    def forward(
        self, x, cond, frames, rope, masks, rays, points, text, cache, layer, write
    ) -> Tensor:
        """x (B, G, T, D) tokens grouped by ``frames`` (:class:`FrameSpread`), cond (B, F, D)."""
        mod = frames(self.ada_ln(cond))  # (B, G, 1, 9D) or (B, 1, N, 9D)
        sh1, sc1, g1, sh2, sc2, g2, sh3, sc3, g3 = mod.chunk(9, dim=-1)
        if self.ray_proj is not None and rays is not None:
            x = x + frames.group(self.ray_proj(rays))
        if self.point_proj is not None and points is not None:
            x = x + frames.group(self.point_proj(points))
        h = modulate(self.norm1(x), sh1, sc1).flatten(1, 2)  # (B, N, D)
        x = x + g1 * frames.group(self.attn(h, rope, masks[0], cache, layer, write))
        if self.cross is not None and text is not None:
            h = modulate(self.norm2(x), sh2, sc2).flatten(1, 2)
            x = x + g2 * frames.group(self.cross(h, text, masks[1]))
        return x + g3 * self.mlp(modulate(self.norm3(x), sh3, sc3))


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 2 * cfg.dim))
        self.linear = nn.Linear(cfg.dim, cfg.token_dim)

    def forward(self, x: Tensor, cond: Tensor, frames: FrameSpread) -> Tensor:
        shift, scale = frames(self.ada_ln(cond)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, G, T, P)


class DiT(nn.Module):
    """F(c_in·x, c_noise): the network inside :class:`~cosmos_sim.models.diffusion.Denoiser`."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.x_embed = nn.Linear(cfg.token_dim, d)
        self.noise_embed = NoiseLevelEmbedder(d)
        self.row_embed = nn.Parameter(torch.zeros(cfg.max_grid, d))
        self.col_embed = nn.Parameter(torch.zeros(cfg.max_grid, d))
        self.view_embed = nn.Embedding(cfg.max_views, d)
        self.action_embed = self.action_to_tokens = None
        if cfg.action_dim:
            a = cfg.action_chunk * cfg.action_dim
            self.action_embed = nn.Sequential(nn.Linear(a, d), nn.SiLU(), nn.Linear(d, d))
            if cfg.action_tokens:
                self.action_to_tokens = nn.Linear(d, d)
        self.state_embed = None
        if cfg.state_dim:
            self.state_embed = nn.Sequential(
                nn.Linear(cfg.state_dim, d), nn.SiLU(), nn.Linear(d, d)
            )
            if self.action_to_tokens is None:
                self.action_to_tokens = nn.Linear(d, d)
        self.points = StatePoints(cfg) if cfg.state_points and cfg.state_dim else None
        self.text_embed = None
        if cfg.text_vocab:
            hashed = cfg.text_encoder == "hashed"
            self.text_embed = (
                nn.Embedding(cfg.text_vocab, d) if hashed else text_encoders.PretrainedText(d)
            )
        self.rope = Rope3D(d // cfg.heads, cfg.rope_theta)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final = FinalLayer(cfg)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT init. Zero-initialised, so that at init every block is the identity and the
        output is 0 (D(x) = c_skip·x): each block's adaLN modulation (shift, scale AND gate),
        the final adaLN and output projection, and every per-block Plücker-ray and
        state-point projection."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.row_embed, self.col_embed, self.view_embed.weight):
            nn.init.normal_(p, std=0.02)
        if isinstance(self.text_embed, nn.Embedding):
            nn.init.normal_(self.text_embed.weight, std=0.02)
        for lin in self.noise_embed.mlp[0], self.noise_embed.mlp[2]:
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada_ln[-1].weight)  # gates 0 → block = identity
            nn.init.zeros_(block.ada_ln[-1].bias)
            for proj in (block.ray_proj, block.point_proj):
                if proj is not None:
                    nn.init.zeros_(proj.weight)
                    nn.init.zeros_(proj.bias)
        for p in (*self.final.ada_ln[-1].parameters(), *self.final.linear.parameters()):
            nn.init.zeros_(p)
        if self.action_to_tokens is not None:
            nn.init.zeros_(self.action_to_tokens.weight)
            nn.init.zeros_(self.action_to_tokens.bias)

    def frame_conditioning(
        self, c_noise: Tensor, cond: Conditioning
    ) -> tuple[Tensor, Tensor | None]:
        """(B, F, D) noise-level + action-chunk embedding (zero where no action), and the
        action embedding alone (None without actions) for the token pathway."""
        c = self.noise_embed(c_noise)
        a = None
        if self.action_embed is not None and cond.actions is not None:
            a = self.action_embed(cond.actions.flatten(2).to(c.dtype))  # (B, F, D)
            if cond.has_action is not None:
                a = a * cond.has_action[..., None].to(a.dtype)
        if self.state_embed is not None and cond.states is not None:
            s = self.state_embed(cond.states.to(c.dtype))
            a = s if a is None else a + s
        if a is not None:
            c = c + a
        return c, a

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        cond: Conditioning,
        cache: KVCache | None = None,
        write_cache: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """x (B, N, P) tokens, c_noise (B, F) → (output (B, N, P), hidden (B, N, D)).

        With ``cache``, the tokens attend to the cached context too; ``write_cache`` appends
        their keys/values (use it for clean context frames only).
        """
        lay = cond.layout
        b, n, _ = x.shape
        self.check_layout(lay)
        token_doc, token_time = lay.token_doc, lay.token_time  # (B, N)
        h = self.x_embed(x)  # (B, N, D)
        h = h + self.row_embed[lay.token_hw[..., 0]] + self.col_embed[lay.token_hw[..., 1]]
        h = h + self.view_embed(lay.frame_view.gather(1, lay.token_frame))
        c, a = self.frame_conditioning(c_noise, cond)  # (B, F, D)
        frames = FrameSpread(lay.token_frame, c.shape[1])  # token → frame row
        h = frames.group(h)  # (B, G, T, D)
        if a is not None and self.action_to_tokens is not None:
            h = h + frames(self.action_to_tokens(a))
        rope = self.rope(lay.token_positions())  # cos, sin (B, N, 1, 1, hs/2)
        k_doc, k_time = (
            (token_doc, token_time) if cache is None else cache.keys_for(token_doc, token_time)
        )
        self_mask = AttentionMask(token_doc, k_doc, token_time, k_time)
        text, cross_mask = None, None
        if self.text_embed is not None:
            ids, text_doc = cond.instruction_ids, cond.instruction_doc
            if ids is None:  # no instruction: every document sees only the null word
                ids = torch.full((b, 1), NULL_INSTRUCTION, dtype=torch.long, device=x.device)
                text_doc = torch.zeros_like(ids)
                token_doc_q = torch.zeros_like(token_doc)
            else:
                token_doc_q = token_doc
            text = (
                self.text_embed(ids)
                if isinstance(self.text_embed, nn.Embedding)
                else self.text_embed(ids, text_doc)
            )  # (B, L, D)
            cross_mask = AttentionMask(token_doc_q, text_doc)
        masks = (self_mask, cross_mask)
        point_maps = None
        if self.points is not None and cond.states is not None:
            point_maps = self.points(cond.states, lay).to(h.dtype)
        for i, block in enumerate(self.blocks):
            h = block(h, c, frames, rope, masks, cond.rays, point_maps, text, cache, i, write_cache)
        if cache is not None and write_cache:
            cache.commit(token_doc, token_time)
        return self.final(h, c, frames).flatten(1, 2), h.flatten(1, 2)

    def check_layout(self, lay: SequenceLayout) -> None:
        """Refuse grids and views beyond the learned embeddings (a clear error, not an IndexError)."""
        grid, views = int(lay.token_hw.max()) + 1, int(lay.frame_view.max()) + 1
        if grid > self.cfg.max_grid:
            raise ConfigError(
                "latent grid larger than the model's position embedding (in patches)",
                field="max_grid",
                expected=f"≤ {self.cfg.max_grid}",
                found=grid,
            )
        if views > self.cfg.max_views:
            raise ConfigError(
                "more camera views than the model has view embeddings",
                field="max_views",
                expected=f"≤ {self.cfg.max_views}",
                found=views,
            )

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.depth)
