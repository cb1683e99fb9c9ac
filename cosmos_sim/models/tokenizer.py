"""Causal video tokenizer: a Cosmos-style 3-D conv autoencoder, 4× in time, 8× in space.

Layout of a clip of ``T = 1 + 4k`` frames (NVIDIA Cosmos Tokenizer, 2025)::

    frames   0 | 1 2 3 4 | 5 6 7 8 | ...        the first frame is encoded on its own,
    latents  0 |    1    |    2    | ...        then each group of 4 frames

Frame 0 is replicated three times so every latent frame covers a group of 4; the
space-to-depth front end folds each 4×4×4 (time × height × width) block into channels
*within* a group, so a convolution never sees more than one group at once. Every
temporal convolution is causal (padded on the left only), hence latent ``j`` depends on
frames ``≤ 4j`` and never on later ones.

Two heads share the trunk:

* ``cv``: 16 continuous latent channels (diffusion world model);
* ``dv``: finite scalar quantisation, FSQ (Mentzer et al. 2023), levels (8,8,8,5,5,5) =
  64000 codes (autoregressive world model).

Video is ``(B, T, 3, H, W)`` float in [-1, 1]; multi-camera clips are extra batch items.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cosmos_sim.errors import ConfigError

TIME_FACTOR = 4  # frames per latent frame (after the first)
SPACE_FACTOR = 8  # pixels per latent pixel, per axis
S2D = 4  # spatial space-to-depth of the front end (the trunk does the last 2×)


@dataclass
class TokenizerConfig:
    """Sizes of the tokenizer. ``kind`` picks the head: "cv" continuous, "dv" FSQ."""

    kind: str = "cv"
    latent_channels: int = 16  # cv head
    fsq_levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # dv head: 64000 codes
    width: int = 128  # channels at H/4
    width_low: int = 256  # channels at H/8 (the latent resolution)
    enc_blocks: tuple[int, int] = (1, 2)  # residual blocks at H/4, H/8
    dec_blocks: tuple[int, int] = (2, 2)  # residual blocks at H/8, H/4
    linear_bypass: bool = False  # a learned linear block code beside the conv trunk
    trunk_scale: float = 1.0  # the conv trunk's heads are multiplied by this (see Encoder)
    # The decoder's own widths (0: the encoder's). A narrower decoder on the same latents is
    # a fast decoder (decode-only fine-tune of a tokenizer, ``--decoder-width``).
    dec_width: int = 0
    dec_width_low: int = 0

    def __post_init__(self) -> None:
        self.fsq_levels = tuple(int(v) for v in self.fsq_levels)
        self.enc_blocks = tuple(int(v) for v in self.enc_blocks)
        self.dec_blocks = tuple(int(v) for v in self.dec_blocks)
        if self.kind not in ("cv", "dv"):
            raise ConfigError(
                "unknown tokenizer kind", field="kind", expected="cv or dv", found=self.kind
            )
        if self.latent_channels < 1:
            raise ConfigError(
                "must be positive", field="latent_channels", found=self.latent_channels
            )
        if not self.fsq_levels or min(self.fsq_levels) < 2:
            raise ConfigError(
                "each FSQ level must be ≥ 2", field="fsq_levels", found=self.fsq_levels
            )
        for name in ("width", "width_low", "dec_width", "dec_width_low"):
            if getattr(self, name) % 8 or getattr(self, name) < 0:
                raise ConfigError(
                    "must be a multiple of 8",
                    field=name,
                    expected="e.g. 96",
                    found=getattr(self, name),
                )
        if len(self.enc_blocks) != 2 or len(self.dec_blocks) != 2:
            raise ConfigError("two block counts (H/4, H/8)", field="enc_blocks/dec_blocks")

    @property
    def decoder_widths(self) -> tuple[int, int]:
        """The decoder's (channels at H/4, channels at H/8)."""
        return self.dec_width or self.width, self.dec_width_low or self.width_low

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)

    @property
    def bottleneck_channels(self) -> int:
        return self.latent_channels if self.kind == "cv" else len(self.fsq_levels)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _preset(kind: str, **sizes) -> TokenizerConfig:
    return TokenizerConfig(kind=kind, **sizes)


PRESETS: dict[str, dict] = {
    "cpu-small": dict(
        width=128,
        width_low=256,
        enc_blocks=(1, 2),
        dec_blocks=(2, 2),
        linear_bypass=True,
    ),
    "gpu": dict(
        width=256,
        width_low=512,
        enc_blocks=(2, 4),
        dec_blocks=(4, 4),
        linear_bypass=True,
    ),
}


def tokenizer_config(preset: str, kind: str) -> TokenizerConfig:
    """The named preset (``cpu-small`` or ``gpu``) for head ``kind`` ("cv" | "dv")."""
    if preset not in PRESETS:
        raise ConfigError(
            "unknown tokenizer preset", field="preset", expected=sorted(PRESETS), found=preset
        )
    return _preset(kind, **PRESETS[preset])


def check_video(video: torch.Tensor) -> None:
    """Raise ConfigError unless ``video`` is (B, 1+4k, 3, H, W) with H, W multiples of 8."""
    if video.ndim != 5 or video.shape[2] != 3:
        raise ConfigError("video must be (B, T, 3, H, W)", field="video", found=tuple(video.shape))
    _, t, _, h, w = video.shape
    if (t - 1) % TIME_FACTOR:
        raise ConfigError(
            "clip length must be 1 + 4k frames (the first frame alone, then groups of 4)",
            field="frames",
            expected="1, 5, 9, 13, ...",
            found=t,
        )
    if h % SPACE_FACTOR or w % SPACE_FACTOR:
        raise ConfigError(
            "image height and width must be multiples of 8",
            field="image size",
            expected="H, W % 8 == 0",
            found=(h, w),
        )


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023, "FSQ: VQ-VAE made simple")."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        L = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("levels", L, persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.int64), 0)
        self.register_buffer("basis", basis, persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """tanh-bound z (..., d) so rounding gives exactly L_i values per channel."""
        half_l = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., d) → quantised values in [-1, 1] (straight-through gradient)."""
        b = self.bound(z.float())
        q = b + (torch.round(b) - b).detach()
        return q / (self.levels // 2)

    def codes(self, q: torch.Tensor) -> torch.Tensor:
        """Quantised (..., d) in [-1, 1] → integer code (...,) in [0, prod(levels))."""
        digits = torch.round(q * (self.levels // 2) + self.levels // 2).long()
        return (digits * self.basis).sum(-1)

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer code (...,) → quantised (..., d) in [-1, 1]."""
        digits = (codes.unsqueeze(-1) // self.basis) % self.levels.long()
        return (digits - self.levels // 2) / (self.levels // 2)


class ChannelNorm(nn.Module):
    """RMS norm over channels at each (t, y, x): per position, so causal by construction."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(c, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, N, h, w)
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6) * self.gain


class CausalConv3d(nn.Conv3d):
    """3-D conv padded only on the past side of time (kernel_t - 1 frames of the first)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: tuple[int, int, int], stride: int = 1
    ) -> None:
        kt, kh, kw = kernel
        # height and width: "same" zero padding by the conv itself (bit for bit what an F.pad
        # of the input gives, without that padded copy: ~10-30% faster per conv on CPU)
        padding = (0, kh // 2, kw // 2)
        super().__init__(c_in, c_out, kernel, stride=(1, stride, stride), padding=padding)
        self.pad_t = kt - 1

    # While a :class:`StreamingDecoder` runs: [the last pad_t input frames of its previous
    # call, or None before the first], so a call continues the previous one in time.
    stream: list | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, N, h, w)
        if self.pad_t:
            past = None if self.stream is None else self.stream[0]
            if past is None:  # replicate the first latent frame into the past
                past = x[:, :, :1].expand(-1, -1, self.pad_t, -1, -1)
            x = torch.cat([past.to(x.dtype), x], dim=2)
            if self.stream is not None:
                self.stream[0] = x[:, :, -self.pad_t :]
        return super().forward(x)


class ResBlock(nn.Module):
    """norm → SiLU → causal (2,3,3) conv → norm → SiLU → (1,3,3) conv, plus the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = ChannelNorm(c), CausalConv3d(c, c, (2, 3, 3))
        self.norm2, self.conv2 = ChannelNorm(c), CausalConv3d(c, c, (1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


def space_to_depth(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, 4n, H, W) → (B, 3·4·S2D·S2D, n, H/S2D, W/S2D): fold each 4×4×4 block into channels."""
    b, c, t, h, w = video.shape
    x = video.reshape(b, c, t // TIME_FACTOR, TIME_FACTOR, h // S2D, S2D, w // S2D, S2D)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # (B, 3, 4, s, s, n, h', w')
    return x.reshape(b, c * TIME_FACTOR * S2D * S2D, t // TIME_FACTOR, h // S2D, w // S2D)


def depth_to_space(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`: (B, 192, n, h, w) → (B, 3, 4n, 4h, 4w)."""
    b, _, n, h, w = x.shape
    x = x.reshape(b, 3, TIME_FACTOR, S2D, S2D, n, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, 3, n, 4, h, s, w, s)
    return x.reshape(b, 3, n * TIME_FACTOR, h * S2D, w * S2D)


def space_to_channel(x: torch.Tensor) -> torch.Tensor:
    """(B, C, N, h, w) → (B, 4C, N, h/2, w/2), channel order (c, i, j) as F.pixel_unshuffle."""
    b, c, n, h, w = x.shape
    x = x.reshape(b, c, n, h // 2, 2, w // 2, 2).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(b, 4 * c, n, h // 2, w // 2)


def channel_to_space(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`space_to_channel`: (B, 4C, N, h, w) → (B, C, N, 2h, 2w)."""
    b, c4, n, h, w = x.shape
    x = x.reshape(b, c4 // 4, 2, 2, n, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, c4 // 4, n, 2 * h, 2 * w)


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        c_in = 3 * TIME_FACTOR * S2D * S2D
        self.stem = CausalConv3d(c_in, cfg.width, (1, 3, 3))
        self.high = nn.Sequential(*[ResBlock(cfg.width) for _ in range(cfg.enc_blocks[0])])
        self.down = CausalConv3d(cfg.width, cfg.width_low, (1, 3, 3), stride=2)
        self.low = nn.Sequential(*[ResBlock(cfg.width_low) for _ in range(cfg.enc_blocks[1])])
        self.norm = ChannelNorm(cfg.width_low)
        self.head = CausalConv3d(cfg.width_low, cfg.bottleneck_channels, (1, 1, 1))
        # Linear code of each 4×8×8 block, added to the head: Adam fits a linear (PCA-like)
        # code in a few hundred steps, and the conv trunk only has to learn the residual.
        self.bypass = (
            CausalConv3d(4 * c_in, cfg.bottleneck_channels, (1, 1, 1))
            if cfg.linear_bypass
            else None
        )
        # trunk_scale < 1 damps how fast the trunk's output can grow on top of the bypass.
        self.trunk_scale = cfg.trunk_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 192, N, H/4, W/4)
        h = self.high(self.stem(x))
        h = self.low(self.down(h))  # (B, width_low, N, H/8, W/8)
        z = self.trunk_scale * self.head(F.silu(self.norm(h)))  # (B, bottleneck, N, H/8, W/8)
        if self.bypass is not None:
            z = z + self.bypass(space_to_channel(x))  # (B, 768, N, H/8, W/8) → bottleneck
        return z


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        c_out = 3 * TIME_FACTOR * S2D * S2D
        width, width_low = cfg.decoder_widths
        self.stem = CausalConv3d(cfg.bottleneck_channels, width_low, (1, 3, 3))
        self.low = nn.Sequential(*[ResBlock(width_low) for _ in range(cfg.dec_blocks[0])])
        self.up = CausalConv3d(width_low, width * 4, (1, 3, 3))  # then pixel shuffle 2×
        self.high = nn.Sequential(*[ResBlock(width) for _ in range(cfg.dec_blocks[1])])
        self.norm = ChannelNorm(width)
        self.head = CausalConv3d(width, c_out, (1, 3, 3))
        self.bypass = (
            CausalConv3d(cfg.bottleneck_channels, 4 * c_out, (1, 1, 1))
            if cfg.linear_bypass
            else None
        )
        self.trunk_scale = cfg.trunk_scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, bottleneck, N, h, w)
        out = self.trunk_scale * self._trunk(z)  # (B, 192, N, H/4, W/4)
        if self.bypass is not None:
            out = out + channel_to_space(self.bypass(z))
        return out

    def _trunk(self, z: torch.Tensor) -> torch.Tensor:
        x = self.low(self.stem(z))
        x = self.up(x)  # (B, 4·width, N, h, w)
        b, c4, n, h, w = x.shape
        x = F.pixel_shuffle(x.transpose(1, 2).reshape(b * n, c4, h, w), 2)
        x = x.reshape(b, n, c4 // 4, 2 * h, 2 * w).transpose(1, 2)  # (B, width, N, 2h, 2w)
        x = self.high(x)
        return self.head(F.silu(self.norm(x)))  # (B, 192, N, H/4, W/4)


class VideoTokenizer(nn.Module):
    """Causal video autoencoder with a continuous (cv) or FSQ (dv) bottleneck."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.fsq = FSQ(cfg.fsq_levels) if cfg.kind == "dv" else None
        self.initialize_weights()
        if cfg.linear_bypass:
            # The bypass is a fixed PCA code (init_bypass_pca), not trained: Adam would move
            # each of its 768-input weights by ~lr per step and scramble the code in ~50 steps.
            self.encoder.bypass.requires_grad_(False)
            self.decoder.bypass.requires_grad_(False)

    def initialize_weights(self) -> None:
        # Residual branches start as the identity (their last conv zeroed), so the trunk
        # begins as a plain stem → head path and deep stacks train from step 0.
        for m in self.modules():
            if isinstance(m, ResBlock):
                nn.init.zeros_(m.conv2.weight)
                nn.init.zeros_(m.conv2.bias)
        if self.cfg.linear_bypass:
            # With the linear bypass the trunk starts silent (heads zeroed): the model is
            # exactly the bypass code at step 0 (see init_bypass_pca) and learns the residual.
            for head in (self.encoder.head, self.decoder.head):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    @torch.no_grad()
    def init_bypass_pca(self, video: torch.Tensor) -> float:
        """Set the linear bypass to the PCA code of 4×8×8 blocks of ``video`` (B, T, 3, H, W).

        Encoder: whitened top-``C`` principal components (unit-variance latents; for dv
        scaled by the gain whose FSQ codes reconstruct best). Decoder: the least-squares
        linear map from those (quantised) codes back to the blocks. Returns the PSNR (dB)
        of that linear code on ``video``.
        """
        assert self.cfg.linear_bypass, "init_bypass_pca needs linear_bypass=True"
        check_video(video)
        x = video.float().transpose(1, 2)
        x = torch.cat([x[:, :, :1].expand(-1, -1, TIME_FACTOR - 1, -1, -1), x], dim=2)
        blocks = space_to_channel(space_to_depth(x))  # (B, 768, N, H/8, W/8)
        flat = blocks.movedim(1, -1).reshape(-1, blocks.shape[1]).double()  # (M, 768)
        mu = flat.mean(0)
        _, sv, v = torch.linalg.svd(flat - mu, full_matrices=False)
        c = self.cfg.bottleneck_channels
        basis, sigma = v[:c], sv[:c] / (len(flat) - 1) ** 0.5  # (C, 768), per-component std
        white = (flat - mu) @ basis.T / sigma  # (M, C) unit-variance PCA coefficients
        best = None
        for gain in (1.0,) if self.fsq is None else (0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
            code = white * gain
            if self.fsq is not None:  # FSQ: quantise, then fit the best linear decoder to the codes
                code = self.fsq(code.float()).double()
            design = torch.cat([code, torch.ones(len(code), 1, dtype=code.dtype)], 1)
            sol = torch.linalg.lstsq(design, flat).solution  # (C + 1, 768)
            mse = ((design @ sol - flat) / 2).pow(2).mean()
            if best is None or mse < best[0]:
                best = (mse, gain, sol)
        mse, gain, sol = best
        enc, dec = self.encoder.bypass, self.decoder.bypass
        enc.weight.copy_((gain * basis / sigma[:, None]).view(c, -1, 1, 1, 1).float())
        enc.bias.copy_((-gain * (basis @ mu) / sigma).float())
        dec.weight.copy_(sol[:c].T.reshape(-1, c, 1, 1, 1).float())
        dec.bias.copy_(sol[c].float())
        return float(-10 * torch.log10(mse))

    # -- shapes ---------------------------------------------------------------------
    @staticmethod
    def latent_frames(frames: int) -> int:
        return 1 + (frames - 1) // TIME_FACTOR

    @staticmethod
    def video_frames(latent_frames: int) -> int:
        return 1 + TIME_FACTOR * (latent_frames - 1)

    # -- encode / decode -------------------------------------------------------------
    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] → pre-quantisation latents (B, N, C, H/8, W/8)."""
        check_video(video)
        x = video.transpose(1, 2)  # (B, 3, T, H, W)
        pad = x[:, :, :1].expand(-1, -1, TIME_FACTOR - 1, -1, -1)
        x = torch.cat([pad, x], dim=2)  # (B, 3, 4N, H, W): frame 0 fills the first group
        z = self.encoder(space_to_depth(x))  # (B, C, N, H/8, W/8)
        return z.transpose(1, 2)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, C, h, w) → FSQ values in [-1, 1] (dv) or z unchanged (cv)."""
        if self.fsq is None:
            return z
        return self.fsq(z.movedim(2, -1)).movedim(-1, 2)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """cv: latents (B, N, 16, H/8, W/8); dv: integer codes (B, N, H/8, W/8)."""
        z = self.quantize(self.encode_raw(video))
        if self.fsq is None:
            return z
        return self.fsq.codes(z.movedim(2, -1))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """cv latents (B, N, C, h, w) or dv codes (B, N, h, w) → video (B, 1+4(N-1), 3, 8h, 8w)."""
        if self.fsq is not None and latents.ndim == 4:
            latents = self.fsq.from_codes(latents).movedim(-1, 2)
        return self._decode(latents)

    def _decode(self, z: torch.Tensor, first: bool = True) -> torch.Tensor:
        x = self.decoder(
            z.transpose(1, 2).to(self.decoder.stem.weight.dtype)
        )  # (B, 192, N, h', w')
        video = depth_to_space(x)
        if first:  # drop the replicated frame-0 copies
            video = video[:, :, TIME_FACTOR - 1 :]
        return video.transpose(1, 2)  # (B, T, 3, H, W)

    @torch.no_grad()
    def channel_gains(self, latents: torch.Tensor, delta: float = 0.1) -> torch.Tensor:
        """How much each latent channel moves the decoded pixels around ``latents`` (cv,
        (B, N, C, h, w)): the mean squared pixel change per unit change of that channel
        everywhere, normalised to mean 1 → (C,). A latent loss weighted by these is the
        pixel MSE to first order; the PCA code's first channel (a block's mean colour)
        weighs ~13× the mean, its last ones ~0.05×."""
        base = self._decode(latents)
        gains = []
        for c in range(latents.shape[2]):
            moved = latents.clone()
            moved[:, :, c] += delta
            gains.append((self._decode(moved) - base).pow(2).mean() / delta**2)
        g = torch.stack(gains)
        return g / g.mean()

    def stream(self) -> StreamingDecoder:
        """A decoder that takes the latent frames a few at a time (an env's steps)."""
        return StreamingDecoder(self)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Reconstruct (B, T, 3, H, W) → (B, T, 3, H, W)."""
        return self._decode(self.quantize(self.encode_raw(video)))


class StreamingDecoder:
    """Decodes a latent video in pieces, each call continuing the previous one: every causal
    conv keeps the last input frames it saw, so the frames come out exactly as decoding the
    whole history at once would give them, at the cost of the new latent frames alone.

        stream = tokenizer.stream()
        video = stream.decode(context)          # (B, 1 + 4(n-1), 3, H, W)
        video = stream.decode(next_latent)      # (B, 4, 3, H, W) for each new frame

    The batch size stays fixed across calls; start a new stream for a new video.
    """

    def __init__(self, tokenizer: VideoTokenizer) -> None:
        self.tokenizer = tokenizer
        self._convs = [
            m for m in tokenizer.decoder.modules() if isinstance(m, CausalConv3d) and m.pad_t
        ]
        self._past: list[list] = [[None] for _ in self._convs]
        self._first = True

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The next cv latents (B, n, C, h, w) or dv codes (B, n, h, w) → their video frames."""
        tok = self.tokenizer
        if tok.fsq is not None and latents.ndim == 4:
            latents = tok.fsq.from_codes(latents).movedim(-1, 2)
        for conv, past in zip(self._convs, self._past, strict=True):
            conv.stream = past
        try:
            video = tok._decode(latents, first=self._first)
        finally:
            for conv in self._convs:
                conv.stream = None
        self._first = False
        return video


# -- reconstruction loss: L1 + SSIM + image gradient (no pretrained networks) -----------


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of images (N, C, H, W) in [0, 1], Gaussian window."""
    c = x.shape[1]
    g = _gaussian_window(size).to(x)
    wh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    ww = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(v, wh, groups=c), ww, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean()


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] (over the whole tensor)."""
    mse = F.mse_loss(x.float(), y.float())
    return -10 * torch.log10(mse.clamp_min(1e-10))


@dataclass
class LossWeights:
    l1: float = 1.0
    ssim: float = 0.2
    grad: float = 0.5


def reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, w: LossWeights | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + (1 - SSIM) + image-gradient L1 of videos (B, T, 3, H, W) in [-1, 1]."""
    with torch.autocast(recon.device.type, enabled=False):
        # fp32 always: under bf16 autocast the SSIM blur convolutions would run in bf16,
        # where blur(x²) - blur(x)² cancels catastrophically (the variances of flat
        # regions come out as noise ≫ c2) and the loss pulls the model apart.
        return _reconstruction_loss(recon.float(), target.float(), w or LossWeights())


def _reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, w: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    b, t, c, h, wd = target.shape
    x = (recon.reshape(b * t, c, h, wd) + 1) / 2  # (B·T, 3, H, W) in [0, 1]
    y = (target.reshape(b * t, c, h, wd) + 1) / 2
    l1 = (x - y).abs().mean()
    s = ssim(x, y)
    gx = (
        (x.diff(dim=-1) - y.diff(dim=-1)).abs().mean()
        + (x.diff(dim=-2) - y.diff(dim=-2)).abs().mean()
    ) / 2
    loss = w.l1 * l1 + w.ssim * (1 - s) + w.grad * gx
    return loss, {"l1": l1.item(), "ssim": s.item(), "psnr": psnr(x.clamp(0, 1), y).item()}
