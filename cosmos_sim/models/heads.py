"""Heads beside the denoiser: next action chunk, and reward / success from latents (per
latent frame on token rows laid out by a ``SequenceLayout``, plain or packed, pooling a
frame's tokens with :func:`frame_mean`); the proprio-state heads (dynamics, readout) and
the state renderer, the regression half of a CorrDiff-style world model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cosmos_sim.conditioning import points
from cosmos_sim.errors import ConfigError


def frame_mean(x: Tensor, token_frame: Tensor, n_frames: int) -> Tensor:
    """(B, N, D) token rows → (B, F, D) mean over each frame's tokens (0 for empty frames)."""
    b, _, d = x.shape
    idx = token_frame[..., None].expand(-1, -1, d)
    total = x.new_zeros(b, n_frames, d).scatter_add_(1, idx, x)
    count = x.new_zeros(b, n_frames, 1).scatter_add_(
        1, token_frame[..., None], torch.ones_like(x[..., :1])
    )
    return total / count.clamp_min(1)


class ActionHead(nn.Module):
    """DiT hidden states of a clean frame → the action chunk that follows it (B, F, c, A).

    Cosmos's "next frame + next action": the same context that predicts the next latent
    frame also predicts the next action chunk.
    """

    def __init__(self, dim: int, chunk: int, action_dim: int) -> None:
        super().__init__()
        self.chunk, self.action_dim = chunk, action_dim
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, chunk * action_dim)
        )

    def forward(self, hidden: Tensor, token_frame: Tensor, n_frames: int) -> Tensor:
        pooled = frame_mean(hidden, token_frame, n_frames)  # (B, F, D)
        return self.net(pooled).unflatten(-1, (self.chunk, self.action_dim))


class RewardHead(nn.Module):
    """Latent patches of a frame → (reward, success logit): scores generated latents too."""

    def __init__(self, token_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.token_mlp = nn.Sequential(
            nn.Linear(token_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, tokens: Tensor, token_frame: Tensor, n_frames: int) -> tuple[Tensor, Tensor]:
        pooled = frame_mean(self.token_mlp(tokens), token_frame, n_frames)  # (B, F, H)
        reward, success_logit = self.out(pooled).unbind(-1)  # (B, F) each
        return reward, success_logit


class FrameProbe(nn.Module):
    """A whole latent frame (C, h, w) → state (S), success logit and reward.

    Unlike :class:`RewardHead` it keeps where things are (the frame is flattened, not
    pooled), which a state such as "end effector at (x, y)" needs. It reads clean
    latents in training and generated ones in a world-model env.
    """

    def __init__(
        self, channels: int, height: int, width: int, state_dim: int, hidden: int = 256
    ) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(32 * height * width, hidden),
            nn.SiLU(),
            nn.Linear(hidden, state_dim + 2),
        )

    def forward(self, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, C, h, w) → state (B, T, S), success logit (B, T), reward (B, T)."""
        b, t = latents.shape[:2]
        out = self.net(latents.flatten(0, 1)).unflatten(0, (b, t))  # (B, T, S + 2)
        return out[..., : self.state_dim], out[..., self.state_dim], out[..., self.state_dim + 1]


class StateDynamics(nn.Module):
    """Proprio dynamics: normalised state (S) + the action chunk (c, A) → state one latent
    frame later. Predicts the change (the state persists by default); an MLP, since joint
    and object states are low-dimensional and nearly smooth in the actions.

    ``substeps``: step once per control action of the chunk instead of once per chunk. A
    contact (the finger meeting the block) then starts at the right control step instead
    of being averaged over the chunk, and stage 2 can supervise every recorded frame.

    ``delta_scale`` (S,): the typical size of one step's change of each dimension; the net
    predicts the change in these units. A joint velocity changes by its whole spread in one
    control step, a block's position by 1/60 of it: on one scale the net's output is
    all velocity and the positions (what the frames are drawn from) are a rounding error.
    """

    def __init__(
        self,
        state_dim: int,
        chunk: int,
        action_dim: int,
        hidden: int = 256,
        substeps: bool = False,
        delta_scale: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.substeps = substeps
        scale = torch.ones(state_dim) if delta_scale is None else torch.tensor(delta_scale)
        if scale.shape != (state_dim,) or not bool((scale > 0).all()):
            raise ConfigError(
                "the dynamics head's delta scale needs one positive number per state dimension",
                field="dynamics_delta_scale",
                expected=f"{state_dim} numbers > 0",
                found=scale.tolist(),
            )
        self.register_buffer("delta_scale", scale.float(), persistent=False)  # from the config
        self.net = nn.Sequential(
            nn.Linear(state_dim + (1 if substeps else chunk) * action_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, state_dim),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, state: Tensor, chunk: Tensor, frames: bool = False) -> Tensor:
        """(…, S) state, (…, c, A) chunk → (…, S) next state; ``frames`` (substeps only):
        the state after every control step, (…, c, S)."""
        if not self.substeps:
            if frames:
                raise ConfigError("per-frame states need a substep dynamics head", field="frames")
            return (
                state + self.net(torch.cat([state, chunk.flatten(-2)], dim=-1)) * self.delta_scale
            )
        out = []
        for k in range(chunk.shape[-2]):
            state = (
                state + self.net(torch.cat([state, chunk[..., k, :]], dim=-1)) * self.delta_scale
            )
            out.append(state)
        return torch.stack(out, dim=-2) if frames else state


class StateReadout(nn.Module):
    """Normalised state (…, S) → success logit (…) and reward (…): the task's outcome as a
    function of the (predicted) state, learned from the recorded labels.

    With ``text_vocab`` > 0 (instruction models) it also reads the episode's hashed
    instruction (B, L), 0-padded: the same state succeeds under "reach the red target" and
    fails under "reach the blue target". A mean of word embeddings is enough for that.
    """

    def __init__(self, state_dim: int, hidden: int = 256, text_vocab: int = 0) -> None:
        super().__init__()
        text_dim = 16 if text_vocab else 0
        self.words = (
            nn.EmbeddingBag(text_vocab, text_dim, mode="mean", padding_idx=0)
            if text_vocab
            else None
        )
        self.net = nn.Sequential(
            nn.Linear(state_dim + text_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2),
        )

    def forward(
        self, state: Tensor, instruction_ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(B, …, S) state (+ (B, L) instruction ids) → success logit, reward (B, …)."""
        if self.words is not None:
            if instruction_ids is None:
                raise ConfigError(
                    "this success head reads the episode's instruction",
                    field="instruction_ids",
                    expected="(B, L) hashed words",
                )
            words = self.words(instruction_ids)  # (B, 16)
            words = words.view(words.shape[0], *[1] * (state.dim() - 2), -1)
            state = torch.cat([state, words.expand(*state.shape[:-1], -1)], dim=-1)
        out = self.net(state)
        return out[..., 0], out[..., 1]


class _FiLMBlock(nn.Module):
    """Residual conv block whose normalised features are scaled / shifted by a vector."""

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(8, width), nn.GroupNorm(8, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * width)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.film(cond)[..., None, None].chunk(2, dim=1)
        h = self.norm2(self.conv1(F.silu(self.norm1(x)))) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class _LatentRenderer(nn.Module):
    """What the state renderers share: the latent grid, the point maps and the conv net (a
    FiLM-conditioned trunk whose output, zero at the start, is added to a base frame)."""

    def _grid_buffers(self, height: int, width: int) -> None:
        """The latent grid's cell centres (h, w, 2) and its coordinates (1, 2, h, w) in [-1, 1]."""
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=torch.float32),
            torch.arange(width, dtype=torch.float32),
            indexing="ij",
        )
        self.register_buffer("centres", torch.stack([xs, ys], -1), False)
        grid = torch.stack([xs / max(width - 1, 1), ys / max(height - 1, 1)]) * 2 - 1
        self.register_buffer("coords", grid[None], False)

    def _trunk_layers(self, inputs: int, state_dim: int, hidden: int, depth: int, channels: int):
        """The conv net: ``inputs`` maps in, FiLM-conditioned on the three states, the change
        of ``channels`` latent channels out (zero at the start)."""
        cond_dim = 4 * hidden
        self.inp = nn.Conv2d(inputs + 2, hidden, 3, padding=1)  # + the pixel coordinates
        self.cond = nn.Sequential(
            nn.Linear(3 * state_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )
        self.blocks = nn.ModuleList(_FiLMBlock(hidden, cond_dim) for _ in range(depth))
        self.out = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _trunk(self, base: Tensor, maps: list[Tensor], states: list[Tensor]) -> Tensor:
        """``base`` (B, C, h, w) + the net's change from the input ``maps`` and ``states``."""
        x = torch.cat([*maps, self.coords.expand(base.shape[0], -1, -1, -1)], dim=1)
        h, c = self.inp(x), self.cond(torch.cat(states, dim=-1))
        for block in self.blocks:
            h = block(h, c)
        return (base.float() + self.out(F.silu(h))).to(base.dtype)

    def _point_maps(self, homographies: Tensor, state: Tensor) -> Tensor:
        """(B, K, 3, 3) homographies of the view, (B, S) normalised state → (B, 4·K, h, w)."""
        uv = points.project(homographies, state[:, self.index])  # (B, K, 2)
        feats = points.point_features(uv[:, None, None], self.centres)  # (B, h, w, 4K)
        return feats.permute(0, 3, 1, 2)


class StateRenderer(_LatentRenderer):
    """A latent frame from the proprio state: the regression half of a CorrDiff-style model
    (Mardani et al. 2024, NVIDIA: a regression network predicts the mean, a diffusion model
    the residual). The frames of a tabletop scene are nearly a function of its state, which
    a small conv net learns in minutes where the DiT, from actions and a global state
    embedding, had not learned to move the arm at all; the DiT then diffuses only what the
    rendering misses.

    In: a reference latent frame of the episode (its first: the scene's look), the states
    at the reference, at the previous and at the new frame (a latent frame spans the c video
    frames between them), each also as state-point maps in the view
    (:mod:`cosmos_sim.conditioning.points`). Out: the new latent frame (reference + change;
    the change starts at zero).
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        state_dim: int,
        state_points: list[dict],
        hidden: int = 64,
        depth: int = 6,
    ) -> None:
        super().__init__()
        if not state_points:
            raise ConfigError(
                "a state renderer needs the DiT's state points (train with --state-points)",
                field="state_points",
            )
        index, homography = points.point_tensors(state_points)
        self.register_buffer("index", index, False)
        self.register_buffer("homography", homography, False)
        self._grid_buffers(height, width)
        self._trunk_layers(
            channels + 3 * points.FEATURES * len(state_points), state_dim, hidden, depth, channels
        )

    def _maps(self, state: Tensor, view: Tensor) -> Tensor:
        """(B, S) normalised state, (B,) view → (B, 4·K, h, w) point maps."""
        return self._point_maps(self.homography[view], state)

    def forward(
        self,
        reference: Tensor,
        s_ref: Tensor,
        s_prev: Tensor,
        s_new: Tensor,
        view: Tensor | None = None,
    ) -> Tensor:
        """(B, C, h, w) reference latents, (B, S) normalised states, (B,) view → (B, C, h, w)."""
        b = reference.shape[0]
        view = torch.zeros(b, dtype=torch.long, device=reference.device) if view is None else view
        states = [s.float() for s in (s_ref, s_prev, s_new)]
        maps = [reference.float(), *(self._maps(s, view) for s in states)]
        return self._trunk(reference, maps, states)


class CameraRenderer(_LatentRenderer):
    """The state renderer of a camera-control model, whose camera moves: the new latent frame
    from the episode's first frame **warped into the new camera** by the table plane (the
    warp base, ``conditioning/warp.py``: right on the table, wrong above it), the first
    latent frame itself, the new camera's Plücker rays relative to the first camera, and
    the states, each as point maps projected through the *new* camera (the homographies
    come from its pose at run time, where a fixed camera's are in the config). Out: the warp
    base + a change (zero at the start), which moves the arm and block the warp smeared
    to where the states put them and fills in what the warp could not see.

    ``points_cfg``: per planar state point its state indices ``x`` / ``y``, world ``height``
    (m) and the state normalisation of the pair (``mean``, ``std``: the map works on the
    normalised state).
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        state_dim: int,
        points_cfg: list[dict],
        hidden: int = 64,
        depth: int = 6,
    ) -> None:
        super().__init__()
        if not points_cfg:
            raise ConfigError(
                "a camera renderer needs the state's planar points and their heights",
                field="renderer_points",
            )
        self.register_buffer("index", torch.tensor([[p["x"], p["y"]] for p in points_cfg]), False)
        self.register_buffer("world", points.plane_points(points_cfg), False)  # (K, 4, 3)
        self._grid_buffers(height, width)
        inputs = 2 * channels + 3 * points.FEATURES * len(points_cfg) + 6  # + rays
        self._trunk_layers(inputs, state_dim, hidden, depth, channels)

    def forward(
        self,
        first: Tensor,
        base: Tensor,
        rays: Tensor,
        intrinsics: Tensor,
        world_from_camera: Tensor,
        s_ref: Tensor,
        s_prev: Tensor,
        s_new: Tensor,
    ) -> Tensor:
        """(B, C, h, w) the first latent frame and the warp base, (B, 6, h, w) the new
        camera's rays relative to the first, its (B, 3, 3) latent-grid K and (B, 4, 4)
        pose, (B, S) normalised states → the new latent frame (B, C, h, w)."""
        homographies = points.camera_homographies(
            intrinsics.float(), world_from_camera.float(), self.world
        )
        states = [s.float() for s in (s_ref, s_prev, s_new)]
        maps = [
            base.float(),
            first.float(),
            *(self._point_maps(homographies, s) for s in states),
            rays.float(),
        ]
        return self._trunk(base, maps, states)
