"""EDM diffusion (Karras et al. 2022) for latent world models, kept apart from the network.

* :class:`Denoiser` wraps any inner network ``F`` with the EDM preconditioning
  ``D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ))`` (EDM Table 1).
  σ is given *per latent frame*: clean context frames have σ = 0, so ``D`` returns them
  unchanged (c_skip = 1, c_out = 0) and only the frames to predict are noised.
* :func:`edm_loss`: λ(σ)·‖D(x + σn; σ) − x‖² with ln σ ~ N(P_mean, P_std²) (EDM §5).
* samplers (:data:`SAMPLERS`) are pure functions with one signature
  ``sampler(denoise, x, sigmas) -> x0`` where ``denoise(x, σ) -> D(x; σ)`` closes over the
  conditioning (and KV cache); :func:`guided` wraps two of them into classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cosmos_sim.conditioning.actions import check_actions
from cosmos_sim.data.packing import NULL_INSTRUCTION, Clip, TokenBatch, pack_clips, unpack
from cosmos_sim.errors import ConfigError
from cosmos_sim.models.attention import KVCache
from cosmos_sim.models.dit import Conditioning, DiT, DiTConfig, preset
from cosmos_sim.models.heads import ActionHead, RewardHead, frame_mean

DenoiseFn = Callable[[Tensor, Tensor], Tensor]  # (x, σ scalar tensor) → D(x; σ)


@dataclass
class EDMConfig:
    """EDM noise schedule. ``sigma_data`` should match the latents' standard deviation."""

    sigma_min: float = 0.002
    sigma_max: float = 5.0  # world models: a few steps from 5, not 80 (DIAMOND; see tests)
    sigma_data: float = 0.5
    p_mean: float = -1.2  # training noise levels: ln σ ~ N(p_mean, p_std²)
    p_std: float = 1.2
    rho: float = 7.0  # sampler step spacing (EDM eq. 5)

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ConfigError(
                f"need 0 < sigma_min < sigma_max, got {self.sigma_min=} {self.sigma_max=}",
                field="sigma_min",
            )
        if self.sigma_data <= 0 or self.p_std <= 0:
            raise ConfigError("sigma_data and p_std must be positive", field="sigma_data")

    def to_dict(self) -> dict:
        return asdict(self)


class Denoiser(nn.Module):
    """D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise), EDM preconditioning (Karras et al. 2022)."""

    def __init__(self, inner_model: nn.Module, cfg: EDMConfig) -> None:
        super().__init__()
        self.inner_model, self.cfg = inner_model, cfg

    def precondition(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """c_skip, c_out, c_in, c_noise for noise levels ``sigma`` (any shape, σ ≥ 0)."""
        sd = self.cfg.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.clamp_min(1e-4).log() / 4  # σ = 0 (clean context): a fixed "clean" level
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """λ(σ) = (σ² + σ_data²) / (σ·σ_data)²: unit loss weight on F's target (EDM eq. 8)."""
        sd = self.cfg.sigma_data
        return (sigma**2 + sd**2) / (sigma * sd).clamp_min(1e-12) ** 2

    def forward(self, x: Tensor, sigma: Tensor, cond, cache=None, write_cache: bool = False):
        """x (B, N, P) noisy tokens, sigma (B, F) per frame → (D(x; σ) (B, N, P), hidden (B, N, D))."""
        c_skip, c_out, c_in, c_noise = self.precondition(sigma)
        tok = cond.layout.token_frame  # per-token view of the per-frame factors: (B, N, 1)
        at_tokens = lambda c: c.gather(1, tok)[..., None]  # noqa: E731
        f_out, hidden = self.inner_model(
            at_tokens(c_in) * x, c_noise, cond, cache=cache, write_cache=write_cache
        )
        return at_tokens(c_skip) * x + at_tokens(c_out) * f_out.to(x.dtype), hidden


def sample_training_sigma(cfg: EDMConfig, frame_doc: Tensor, generator=None) -> Tensor:
    """(B, F) noise levels, ln σ ~ N(P_mean, P_std²), one σ per document (its target frames)."""
    b, f = frame_doc.shape
    z = torch.randn(b, f, generator=generator, device=frame_doc.device)
    per_doc = (cfg.p_mean + cfg.p_std * z).exp()
    return per_doc.gather(1, frame_doc.clamp_min(0))


def edm_loss(
    denoiser: Denoiser,
    x0: Tensor,
    sigma: Tensor,
    noise: Tensor,
    is_target: Tensor,
    cond,
    context_sigma: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-frame EDM loss (B, F) (0 on context/padding frames) and the hidden states.

    x0, noise: (B, N, P) tokens; sigma: (B, F); is_target: (B, F) bool. Only target frames
    are scored. Context frames are given clean (σ = 0), or with ``context_sigma`` (B, F)
    of noise augmentation (its level reaches the model through the frame's embedding).
    """
    rest = torch.zeros_like(sigma) if context_sigma is None else context_sigma
    sigma = torch.where(is_target, sigma, rest)
    tok = cond.layout.token_frame
    sigma_tok = sigma.gather(1, tok)[..., None]  # (B, N, 1)
    denoised, hidden = denoiser(x0 + noise * sigma_tok, sigma, cond)
    err = (denoised.float() - x0).pow(2).mean(-1, keepdim=True)  # (B, N, 1)
    per_frame = frame_mean(err, tok, sigma.shape[1])[..., 0] * denoiser.loss_weight(sigma)
    return torch.where(is_target, per_frame, torch.zeros_like(per_frame)), hidden


def per_clip(per_frame: Tensor, batch: TokenBatch) -> Tensor:
    """(B, F) per-frame losses → (n_clips,): mean over each clip's target frames, input order."""
    out = []
    for s in batch.segments:
        frames = slice(s.frame_start, s.frame_start + s.frames)
        target = batch.is_target[s.row, frames]
        out.append(per_frame[s.row, frames][target].sum() / target.sum().clamp_min(1))
    return torch.stack(out)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """n noise levels from σ_max down to σ_min, then 0 (EDM eq. 5): shape (n + 1,)."""
    ramp = torch.linspace(0, 1, n)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1)])


@torch.no_grad()
def sample_euler(denoise: DenoiseFn, x: Tensor, sigmas: Tensor) -> Tensor:
    """Euler method on the probability-flow ODE dx/dσ = (x − D(x; σ))/σ (EDM Alg. 1, 1st order)."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        d = (x - denoise(x, s)) / s
        x = x + d * (s_next - s)
    return x


@torch.no_grad()
def sample_heun(denoise: DenoiseFn, x: Tensor, sigmas: Tensor) -> Tensor:
    """Heun's 2nd-order method (EDM Alg. 1, deterministic); Euler on the last step to σ = 0."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        d = (x - denoise(x, s)) / s
        x_next = x + d * (s_next - s)
        if s_next > 0:
            d_next = (x_next - denoise(x_next, s_next)) / s_next
            x_next = x + (d + d_next) / 2 * (s_next - s)
        x = x_next
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoise: DenoiseFn, x: Tensor, sigmas: Tensor) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): 2nd-order multistep, one evaluation per step."""
    t = lambda s: -s.log()  # noqa: E731  (half-log-SNR time)
    old = None
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        denoised = denoise(x, s)
        if s_next == 0:
            return denoised
        h = t(s_next) - t(s)
        d = denoised
        if old is not None:
            r = (t(s) - t(sigmas[i - 1])) / h
            d = (1 + 1 / (2 * r)) * denoised - old / (2 * r)
        x = (s_next / s) * x - torch.expm1(-h) * d
        old = denoised
    return x


SAMPLERS: dict[str, Callable[[DenoiseFn, Tensor, Tensor], Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}


def guided(cond_fn: DenoiseFn, uncond_fn: DenoiseFn, scale: float) -> DenoiseFn:
    """Classifier-free guidance (Ho & Salimans 2022): D_u + w·(D_c − D_u); w = 1 is D_c alone."""
    if scale == 1.0:
        return cond_fn
    return lambda x, s: (u := uncond_fn(x, s)) + scale * (cond_fn(x, s) - u)


def sample(
    denoise: DenoiseFn,
    shape: tuple[int, ...],
    cfg: EDMConfig,
    steps: int = 4,
    sampler: str = "euler",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    device: torch.device | str = "cpu",
    start: Tensor | None = None,
    sigma_start: float | None = None,
) -> Tensor:
    """Draw x = σ_max·n, n ~ N(0, I) of ``shape`` (or the given ``noise``), integrate to σ = 0.

    With ``start`` (SDEdit, Meng et al. 2022): begin at x = start + σ_start·n instead, a
    guess (for a world model: the previous latent frame) noised to ``sigma_start``.
    """
    if sampler not in SAMPLERS:
        raise ConfigError(
            "unknown sampler", field="sampler", expected=list(SAMPLERS), found=sampler
        )
    top = cfg.sigma_max if sigma_start is None else float(sigma_start)
    if not cfg.sigma_min < top:
        raise ConfigError("sigma_start must exceed sigma_min", field="sigma_start", found=top)
    sigmas = karras_sigmas(steps, cfg.sigma_min, top, cfg.rho)
    n = noise if noise is not None else torch.randn(shape, generator=generator).to(device)
    x = n * sigmas[0] if start is None else start + n * sigmas[0]
    return SAMPLERS[sampler](denoise, x, sigmas)


# --- The diffusion world model: DiT + heads + EDM, trained through the one Trainer ----------


GUIDE_ALL = ("actions", "instruction")  # what classifier-free guidance drops by default


@dataclass
class WorldModelConfig:
    """The world model: network sizes, noise schedule and the training-time options."""

    dit: DiTConfig = field(default_factory=lambda: preset("cpu-small"))
    edm: EDMConfig = field(default_factory=EDMConfig)
    p_drop_action: float = 0.1  # classifier-free guidance: condition dropout per clip
    p_drop_instruction: float = 0.1
    self_forcing: float = 0.0  # share of training steps whose last context frame is generated
    self_forcing_steps: int = 2  # sampler steps for that generated context frame
    context_noise: float = 0.0  # max σ of noise augmentation on context frames (GameNGen)
    # Residual target: a predicted frame is diffused as its difference from the previous
    # latent frame of the same camera, so "nothing moved" is the zero the sampler starts
    # from and the model spends its capacity on the motion (set sigma_data to the std of
    # those differences).
    residual: bool = False
    sampler: str = "euler"  # at ≤ 4 steps Euler beats Heun (tests/models/test_diffusion.py)
    steps: int = 4
    action_loss_weight: float = 1.0
    reward_loss_weight: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.dit, dict):
            self.dit = DiTConfig(**self.dit)
        if isinstance(self.edm, dict):
            self.edm = EDMConfig(**self.edm)
        if self.context_noise < 0:
            raise ConfigError("must be ≥ 0", field="context_noise", found=self.context_noise)
        for name in ("p_drop_action", "p_drop_instruction", "self_forcing"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError("must be in [0, 1]", field=name, found=getattr(self, name))
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                "unknown sampler", field="sampler", expected=list(SAMPLERS), found=self.sampler
            )
        if self.steps < 1 or self.self_forcing_steps < 1:
            raise ConfigError(
                "must be ≥ 1", field="steps", found=(self.steps, self.self_forcing_steps)
            )

    def to_dict(self) -> dict:
        return asdict(self)


class DiffusionWorldModel(nn.Module):
    """Next latent frame(s) from clean context + action chunks (+ rays, views, instruction).

    ``training_step(batch)`` takes either ``{"packed": TokenBatch}`` (``data/packing.py``)
    or a plain batch of equal clips::

        latents          (B, T, C, H, W) float   tokenizer latents (views folded into T)
        n_context        int                     first n latent frames are clean context
        actions          (B, T, c, A) float      normalised chunk leading into each frame (opt.)
        rays             (B, T, 6, H, W) float   Plücker rays at latent resolution (optional)
        time, view       (B, T) long             folded multi-view indices (optional)
        instruction_ids  (B, L) long             hashed words, 0 = padding (optional)
        reward, success  (B, T) float            per latent frame, for the reward head (optional)
        state            (B, T, S) float         normalised proprio state (with dit.state_dim)
    """

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dit
        self.denoiser = Denoiser(DiT(d), cfg.edm)
        self.action_head = ActionHead(d.dim, d.action_chunk, d.action_dim) if d.action_dim else None
        self.reward_head = RewardHead(d.token_dim)

    @property
    def dit(self) -> DiT:
        return self.denoiser.inner_model

    def token_batch(self, batch: dict) -> TokenBatch:
        """The batch as token rows (a plain batch is one clip per row)."""
        if "packed" in batch:  # the Trainer moves tensors, not dataclasses: do it here
            return batch["packed"].to(self.denoiser.inner_model.x_embed.weight.device)
        latents = batch["latents"]
        b, t, c, _, _ = latents.shape
        if c != self.cfg.dit.latent_channels:
            raise ConfigError(
                "latent channels do not match the model (wrong tokenizer?)",
                field="latents",
                expected=self.cfg.dit.latent_channels,
                found=c,
            )
        actions = batch.get("actions")
        if actions is not None:
            check_actions(
                actions, self.cfg.dit.action_dim, "actions", chunk=self.cfg.dit.action_chunk
            )
        n_ctx = int(batch.get("n_context", 1))
        if not 0 <= n_ctx <= t:
            raise ConfigError(
                "context frames out of range", field="n_context", expected=f"0..{t}", found=n_ctx
            )
        get = lambda key, i: None if batch.get(key) is None else batch[key][i]  # noqa: E731
        clips = []
        for i in range(b):
            ids = get("instruction_ids", i)
            clips.append(
                Clip(
                    latents[i],
                    n_ctx,
                    get("actions", i),
                    get("rays", i),
                    get("time", i),
                    get("view", i),
                    None if ids is None else ids[ids > 0],
                    get("sigma", i),
                    get("noise", i),
                    get("state", i) if self.cfg.dit.state_dim else None,
                )
            )
        tb = pack_clips(clips, self.cfg.dit.patch_size, [[i] for i in range(b)])
        return tb.to(latents.device)

    def drop_conditions(self, tb: TokenBatch, cond: Conditioning) -> Conditioning:
        """Classifier-free guidance training: drop each clip's actions / instruction at random."""
        n_docs = int(tb.layout.frame_doc.max()) + 1
        b = tb.tokens.shape[0]
        dev = tb.tokens.device
        keep_a = torch.rand(b, n_docs, device=dev) >= self.cfg.p_drop_action
        keep_i = torch.rand(b, n_docs, device=dev) >= self.cfg.p_drop_instruction
        has_action = tb.has_action & keep_a.gather(1, tb.layout.frame_doc.clamp_min(0))
        words = tb.instruction_doc >= 0
        keep_word = keep_i.gather(1, tb.instruction_doc.clamp_min(0)) | (
            tb.instruction_ids == NULL_INSTRUCTION
        )
        doc = torch.where(
            words & ~keep_word, torch.full_like(tb.instruction_doc, -1), tb.instruction_doc
        )
        return replace(cond, has_action=has_action, instruction_doc=doc)

    @staticmethod
    def unconditional(cond: Conditioning, drop: tuple[str, ...] = GUIDE_ALL) -> Conditioning:
        """The same conditioning with ``drop`` ⊆ ("actions", "instruction") removed (guidance)."""
        doc, has_action = cond.instruction_doc, cond.has_action
        if doc is not None and "instruction" in drop:
            doc = torch.where(
                cond.instruction_ids == NULL_INSTRUCTION, doc, torch.full_like(doc, -1)
            )
        if has_action is not None and "actions" in drop:
            has_action = torch.zeros_like(has_action)
        return replace(cond, has_action=has_action, instruction_doc=doc)

    def previous_tokens(self, tokens: Tensor, is_target: Tensor, layout) -> Tensor:
        """(B, N, P): each target token's patch one latent frame earlier (same clip and
        camera), taken from ``tokens``; a clear error when a target frame has none."""
        index, found = layout.previous_frame_tokens()
        tgt = is_target.gather(1, layout.token_frame)
        if bool((tgt & ~found).any()):
            raise ConfigError(
                "a residual world model predicts a frame from the one before it: every "
                "target frame needs its previous frame in the batch (or pass `base`)",
                field="n_context",
                expected="≥ 1",
            )
        prev = tokens.gather(1, index[..., None].expand_as(tokens))
        return torch.where(tgt[..., None], prev, torch.zeros_like(prev))

    def to_residual(self, tokens: Tensor, is_target: Tensor, layout) -> Tensor:
        """Target tokens as differences from their previous frame (context tokens unchanged)."""
        return tokens - self.previous_tokens(tokens, is_target, layout)

    @torch.no_grad()
    def self_forced_tokens(self, tb: TokenBatch, cond: Conditioning) -> Tensor:
        """Self-forcing: each clip's last context frame replaced by the model's own sample of
        it given the earlier context (and its action), so training sees generated context."""
        ctx, doc = tb.is_context, tb.layout.frame_doc
        same_next = torch.cat(
            [doc[:, 1:] == doc[:, :-1], torch.zeros_like(doc[:, :1], dtype=torch.bool)], 1
        )
        same_prev = torch.cat(
            [torch.zeros_like(doc[:, :1], dtype=torch.bool), doc[:, 1:] == doc[:, :-1]], 1
        )
        next_ctx = torch.cat([ctx[:, 1:], torch.zeros_like(ctx[:, :1])], 1) & same_next
        prev_ctx = torch.cat([torch.zeros_like(ctx[:, :1]), ctx[:, :-1]], 1) & same_prev
        gen = ctx & ~next_ctx & prev_ctx  # (B, F) last context frame that has a context before it
        if not bool(gen.any()):
            return tb.tokens
        gen_cond = (
            cond if cond.has_action is None else replace(cond, has_action=cond.has_action | gen)
        )
        base = self.previous_tokens(tb.tokens, gen, tb.layout) if self.cfg.residual else None
        return self._sample_frames(
            tb.tokens, gen, gen_cond, None, self.cfg.self_forcing_steps, base=base
        )

    def _sample_frames(
        self,
        tokens: Tensor,
        is_target: Tensor,
        cond: Conditioning,
        cache: KVCache | None,
        steps: int,
        sampler: str | None = None,
        guidance: float = 1.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        guide: tuple[str, ...] = GUIDE_ALL,
        start: Tensor | None = None,
        sigma_start: float | None = None,
        base: Tensor | None = None,
        uncond_cache: KVCache | None = None,
    ) -> Tensor:
        """Sample the ``is_target`` frames (B, F) of ``tokens`` (B, N, P) given the other,
        clean frames and the cache. Guidance drops the sampled frames' ``guide`` conditions
        (actions and/or instruction); cached context keys are shared by both branches unless
        ``uncond_cache`` holds the unconditional branch's own (the context encoded without
        the instruction: training drops it from a whole clip, context included).
        With ``base`` (residual models), the sampler works on target − base and adds it back."""
        tgt = is_target.gather(1, cond.layout.token_frame)[..., None]  # (B, N, 1)
        if base is not None and start is not None:
            start = start - base

        def denoiser_for(c: Conditioning, kv: KVCache | None) -> DenoiseFn:
            def denoise(x: Tensor, s: Tensor) -> Tensor:
                sigma = torch.where(is_target, s, torch.zeros_like(s))  # (B, F)
                return self.denoiser(torch.where(tgt, x, tokens), sigma, c, cache=kv)[0]

            return denoise

        uncond = self.unconditional(cond, guide)
        uncond_kv = cache if uncond_cache is None else uncond_cache
        denoise = guided(denoiser_for(cond, cache), denoiser_for(uncond, uncond_kv), guidance)
        x = sample(
            denoise,
            tokens.shape,
            self.cfg.edm,
            steps,
            sampler or self.cfg.sampler,
            generator,
            noise,
            tokens.device,
            start,
            sigma_start,
        )
        if base is not None:
            x = x + base
        return torch.where(tgt, x, tokens)

    def training_step(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        tb = self.token_batch(batch)
        cond = Conditioning.from_batch(tb)
        x0 = tb.tokens
        if self.training and self.cfg.self_forcing and torch.rand(()) < self.cfg.self_forcing:
            x0 = self.self_forced_tokens(tb, cond)
        if self.cfg.residual and batch.get("base") is not None:
            # another base than the previous frame: (B, T, C, h, w) latents (a state renderer's)
            base = self.token_batch({**batch, "latents": batch["base"]}).tokens
            target = tb.is_target.gather(1, tb.layout.token_frame)[..., None]
            x0 = torch.where(target, x0 - base, x0)
        elif self.cfg.residual:
            x0 = self.to_residual(x0, tb.is_target, tb.layout)
        if self.training:
            cond = self.drop_conditions(tb, cond)
        lay = tb.layout
        sigma = (
            tb.sigma if tb.sigma is not None else sample_training_sigma(self.cfg.edm, lay.frame_doc)
        )
        noise = tb.noise if tb.noise is not None else torch.randn_like(x0)
        ctx_sigma = None
        if self.training and self.cfg.context_noise:  # against drift: imperfect context
            ctx_sigma = torch.rand_like(sigma) * self.cfg.context_noise
        per_frame, hidden = edm_loss(self.denoiser, x0, sigma, noise, tb.is_target, cond, ctx_sigma)
        loss = per_frame.sum() / tb.is_target.sum().clamp_min(1)
        metrics = {"loss_diffusion": loss.item()}
        n_frames = lay.frame_doc.shape[1]
        if self.action_head is not None and tb.actions is not None:
            # clean context frame f predicts the chunk leading into frame f + 1 (same clip)
            pred = self.action_head(hidden, lay.token_frame, n_frames)[:, :-1]  # (B, F-1, c, A)
            valid = tb.is_context[:, :-1] & (lay.frame_doc[:, 1:] == lay.frame_doc[:, :-1])
            err = (pred - tb.actions[:, 1:]).pow(2).mean((-1, -2))
            loss_action = (err * valid).sum() / valid.sum().clamp_min(1)
            loss = loss + self.cfg.action_loss_weight * loss_action
            metrics["loss_action"] = loss_action.item()
        if batch.get("reward") is not None:
            t = batch["reward"].shape[1]
            reward, logit = self.reward_head(tb.tokens, lay.token_frame, n_frames)
            loss_reward = (reward[:, :t] - batch["reward"]).pow(2).mean()
            if batch.get("success") is not None:
                loss_reward = loss_reward + F.binary_cross_entropy_with_logits(
                    logit[:, :t], batch["success"].float()
                )
            loss = loss + self.cfg.reward_loss_weight * loss_reward
            metrics["loss_reward"] = loss_reward.item()
        metrics["loss"] = loss.item()
        return loss, metrics

    # --- inference: prefill the context once, then sample each next frame against the cache ---

    @torch.no_grad()
    def prefill(
        self, context: TokenBatch, cache: KVCache | None = None
    ) -> tuple[KVCache, Tensor | None]:
        """Append clean ``context`` frames to ``cache`` (a new one if None).

        Returns the cache and the predicted next action chunk (B, c, A) after the last
        frame (None without an action head).
        """
        cache = cache if cache is not None else self.dit.new_cache()
        cond = Conditioning.from_batch(context)
        cond = replace(cond, has_action=torch.zeros_like(context.has_action))  # clean: no action
        sigma = torch.zeros(context.layout.frame_doc.shape, device=context.tokens.device)
        _, hidden = self.denoiser(context.tokens, sigma, cond, cache=cache, write_cache=True)
        if self.action_head is None:
            return cache, None
        lay = context.layout
        pred = self.action_head(hidden, lay.token_frame, lay.frame_doc.shape[1])  # (B, F, c, A)
        last = (lay.frame_doc >= 0).sum(1) - 1  # (B,) last real frame of each row
        return cache, pred[torch.arange(len(last)), last]

    @torch.no_grad()
    def generate(
        self,
        batch: TokenBatch,
        cache: KVCache | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float = 1.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        guide: tuple[str, ...] = GUIDE_ALL,
        start: Tensor | None = None,
        sigma_start: float | None = None,
        base: Tensor | None = None,
        uncond_cache: KVCache | None = None,
    ) -> Tensor:
        """Sample the target frames of ``batch`` (B, N, P) tokens; context frames are kept.

        With a ``cache`` (from :meth:`prefill`), ``batch`` usually holds only the frames to
        predict (``n_context=0``, times continuing the context's); without one it holds the
        whole clip, and every denoising step recomputes the context. ``guidance`` w > 1
        extrapolates away from the prediction without ``guide`` (actions and/or instruction).
        Dropping an instruction drops it from the context too (as training's condition
        dropout does): pass ``uncond_cache``, the same context prefilled without it.
        A residual model needs each target's previous frame: in ``batch``, or as ``base``
        (B, N, P) — the previous frame's tokens at the target's positions — when it is cached.
        """
        cond = Conditioning.from_batch(batch)
        if self.cfg.residual and base is None:
            base = self.previous_tokens(batch.tokens, batch.is_target, batch.layout)
        return self._sample_frames(
            batch.tokens,
            batch.is_target,
            cond,
            cache,
            steps or self.cfg.steps,
            sampler,
            guidance,
            noise,
            generator,
            guide,
            start,
            sigma_start,
            base,
            uncond_cache,
        )


class LatentRollout:
    """Closed-loop, batched rollout in latent space: one env step = one action chunk → one
    latent frame. The clean context lives in a KV cache (a sliding window of ``window``
    latent frames); each step samples the next frame against it, then appends that frame.

        roll = LatentRollout(model, context_latents)        # (B, n, C, H, W), prefilled once
        frame, next_action = roll.step(action_chunk)        # (B, c, A) → (B, C, H, W)
    """

    def __init__(
        self,
        model: DiffusionWorldModel,
        context: Tensor,
        window: int = 4,
        instruction_ids: Tensor | None = None,
        context_rays: Tensor | None = None,
        guidance: float = 1.0,
    ) -> None:
        self.model, self.window, self.guidance = model, window, guidance
        self.instruction_ids = instruction_ids
        b, n = context.shape[:2]
        self.latent_shape = tuple(context.shape[2:])  # (C, H, W)
        self.time = n  # time index of the next frame
        batch = dict(
            latents=context, n_context=n, rays=context_rays, instruction_ids=instruction_ids
        )
        self.last = context[:, -1]  # (B, C, H, W): the residual model's base
        self.cache, self.next_action = model.prefill(model.token_batch(batch))
        self.cache.keep_last(window)
        # Guidance's unconditional branch reads a context encoded without the instruction,
        # as training's condition dropout removes it from the whole clip.
        self.uncond_cache = None
        if instruction_ids is not None and guidance != 1.0:
            plain = model.token_batch(dict(batch, instruction_ids=None))
            self.uncond_cache = model.prefill(plain)[0]
            self.uncond_cache.keep_last(window)

    @torch.no_grad()
    def step(
        self,
        action_chunk: Tensor | None,
        rays: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """(B, c, A) normalised actions (+ (B, 6, H, W) rays of the new frame) → the next
        latent frame (B, C, H, W) and the predicted following action chunk (or None)."""
        m = self.model
        b = self.cache.doc.shape[0]
        batch = dict(
            latents=torch.zeros(b, 1, *self.latent_shape, device=self.cache.doc.device),
            n_context=0,
            actions=None if action_chunk is None else action_chunk[:, None],
            rays=None if rays is None else rays[:, None],
            time=torch.full((b, 1), self.time, device=self.cache.doc.device),
            instruction_ids=self.instruction_ids,
        )
        target = m.token_batch(batch)
        base = None
        if m.cfg.residual:
            base = m.token_batch(dict(batch, latents=self.last[:, None])).tokens
        target.tokens = m.generate(
            target,
            self.cache,
            guidance=self.guidance,
            noise=noise,
            generator=generator,
            base=base,
            uncond_cache=self.uncond_cache,
        )
        _, self.next_action = m.prefill(target, self.cache)  # the new frame becomes clean context
        self.cache.keep_last(self.window)
        if self.uncond_cache is not None:
            plain = m.token_batch(dict(batch, instruction_ids=None))
            plain.tokens = target.tokens
            m.prefill(plain, self.uncond_cache)
            self.uncond_cache.keep_last(self.window)
        self.time += 1
        frame = torch.stack(unpack(target.tokens, target))[:, 0]  # (B, C, H, W)
        self.last = frame
        return frame, self.next_action
