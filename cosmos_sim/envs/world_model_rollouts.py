"""How WorldModel-v0 advances a world model's latent frames: one rollout per conditioning.

=================  =================================================================
variant            rollout
=================  =================================================================
action, multiview, :class:`CachedRollout`: the context's keys/values are computed once
instruction        and each generated time step is appended; the cache keeps the last
                   ``context_frames`` *time steps*. A multi-view model's V views are
                   folded time-major (one time step = V frames) and generated jointly.
                   An instruction model's every prefill / next frame / append reads the
                   episode's instruction (as each frame of a training clip does).
camera             :class:`WindowRollout`: each frame's Plücker rays are relative to the
                   first frame of its context window (the model's ``ray_reference``),
                   and that frame moves with the window — so the window is prefilled
                   anew at every step, its rays recomputed in the new reference. A
                   ``warp_base`` model draws each frame over the episode's first frame
                   warped into the new camera (:class:`WarpBase`), not the previous frame.
=================  =================================================================

Both share one signature::

    start(latents, states, sampler, poses, instruction_ids)   → next-action chunk
    step(chunk, state, sampler, poses)                        → new latents, next-action chunk

``latents`` (B, V, C, h, w): one time step of every view; ``states`` / ``state`` (B, S):
the normalised proprio state of that time step (None for models without one); ``chunk``
(B, c, A): the normalised action chunk leading into the new time step; ``poses`` (B, 4, 4)
float64: the camera's ``world_from_camera`` at that time step (camera variant, else None);
``instruction_ids`` (B, L) long: the episode's hashed instruction (instruction variant, else
None), kept for the whole episode.
The next-action chunk is (B, c, A) normalised, or None when the model has no such head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cosmos_sim.conditioning.rays import clip_plucker_rays, plucker_rays, scale_intrinsics
from cosmos_sim.conditioning.warp import reference_frames, warp_base_latents
from cosmos_sim.device import Precision
from cosmos_sim.errors import ConfigError


@dataclass
class Sampler:
    """How each latent frame is drawn (the env's sampler settings)."""

    steps: int | None  # None: the model's own
    sigma_start: float | None  # SDEdit start from the previous frame; None: pure noise
    guidance: float  # classifier-free guidance on the action chunk and instruction (1 = none)
    generator: torch.Generator
    precision: Precision  # the DiT's autocast


def _float(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.float()


def _next_frame(model, cache, chunk, time, previous: Tensor, sampler: Sampler, **controls):
    """The model's next latent time step after ``previous`` (B, V, C, h, w), drawn with the
    env's ``sampler`` settings (inside the caller's autocast)."""
    return model.next_frame(
        cache,
        chunk,
        time,
        tuple(previous.shape[2:]),
        steps=sampler.steps,
        generator=sampler.generator,
        previous=previous,
        sigma_start=sampler.sigma_start,
        guidance=sampler.guidance,
        **controls,
    )


class CachedRollout:
    """Action, multi-view and instruction models: a KV cache of the context, appended to
    every step. With guidance, an instruction model keeps a second cache of the same context
    encoded without the instruction: guidance's unconditional branch, as in training.

    A model with a state renderer draws each new frame as the renderer's frame (from the
    episode's first frame and the states) plus the DiT's sampled residual: the renderer's
    frame is the base the residual DiT adds to, where other models use the previous frame."""

    def __init__(self, model: torch.nn.Module, context_frames: int, views: int = 1) -> None:
        self.model, self.context_frames, self.views = model, context_frames, views
        self._cache = None
        self._uncond = None  # the context without the instruction (guided instruction models)
        self._instruction: Tensor | None = None  # (B, L) long the episode's hashed words
        self._last: Tensor | None = None  # (B, V, C, h, w) the newest time step
        self._time = 0
        # the renderer's reference: the episode's first time step and state; the newest state
        self._ref: tuple[Tensor, Tensor] | None = None
        self._state: Tensor | None = None

    def _per_view(self, state: Tensor | None) -> Tensor | None:
        """(B, S) → (B, V, S): every view of a time step carries its state."""
        return None if state is None else state[:, None].expand(-1, self.views, -1)

    @torch.no_grad()
    def start(
        self,
        latents: Tensor,
        states: Tensor | None,
        sampler: Sampler,
        poses=None,
        instruction_ids: Tensor | None = None,
    ):
        assert poses is None, "only camera-control models take poses"
        states = self._per_view(states)
        with sampler.precision.autocast():
            self._cache, next_action = self.model.prefill(
                latents, states=states, views=self.views, instruction_ids=instruction_ids
            )
            self._uncond = None
            if instruction_ids is not None and sampler.guidance != 1.0:
                self._uncond, _ = self.model.prefill(latents, states=states, views=self.views)
        self._last, self._time, self._instruction = latents, 0, instruction_ids
        if getattr(self.model, "renderer", None) is not None:
            self._ref, self._state = (latents.float(), states[:, 0].float()), states[:, 0]
        return _float(next_action)

    def _base(self, state: Tensor | None) -> Tensor:
        """What the new frame is drawn relative to: the previous frame, or the renderer's
        (every view of it, from that view's first frame)."""
        if self._ref is None:
            return self._last
        ref, s_ref = self._ref  # (B, V, C, h, w), (B, S)
        b, v = ref.shape[:2]
        per_view = lambda s: s.float().repeat_interleave(v, 0)  # noqa: E731
        view = torch.arange(v, device=ref.device).repeat(b)
        base = self.model.render(
            ref.flatten(0, 1), per_view(s_ref), per_view(self._state), per_view(state), view
        )
        self._state = state
        return base.unflatten(0, (b, v))

    @torch.no_grad()
    def step(self, chunk: Tensor, state: Tensor | None, sampler: Sampler, poses=None):
        assert poses is None, "only camera-control models take poses"
        time = self._time + 1
        with sampler.precision.autocast():
            z = _next_frame(
                self.model,
                self._cache,
                chunk,
                time,
                self._base(state),
                sampler,
                state=state,
                views=self.views,
                instruction_ids=self._instruction,
                uncond_cache=self._uncond,
            )  # (B, V, C, h, w)
            next_action = self.model.append(
                self._cache,
                z,
                time,
                self._per_view(state),
                views=self.views,
                instruction_ids=self._instruction,
            )
            if self._uncond is not None:
                self.model.append(self._uncond, z, time, self._per_view(state), views=self.views)
        # Keep as much context as the model was trained with (RoPE sees only differences);
        # the cache counts time steps, so a multi-view model keeps all V views of each.
        for cache in (self._cache, self._uncond):
            if cache is not None:
                cache.keep_last(self.context_frames)
        self._last, self._time = z.float(), time
        return self._last, _float(next_action)


class WarpBase:
    """A ``warp_base`` camera model's residual base: a decoded frame warped into the cameras
    of each new latent frame by the table plane, and encoded (``conditioning/warp.py``;
    training's base is the same, ``world_model_variants.warp_base_sequence``). The frame is
    the episode's first (``reference="first"``) or the newest latent frame's last video
    frame (``"previous"``, decoded by a stream as the env decodes it)."""

    def __init__(
        self,
        tokenizer: torch.nn.Module,
        intrinsics: Tensor,
        height: float,
        chunk: int,
        reference: str = "first",
    ) -> None:
        self.tokenizer, self.height, self.chunk = tokenizer, height, chunk
        self.intrinsics = np.asarray(intrinsics, np.float64)  # (3, 3) K of the images
        self.reference = reference
        self._stream = None  # "previous": the decoder's causal past
        self._reference: np.ndarray | None = None  # (B, H, W, 3) uint8 the frames warped
        self._reference_pose: np.ndarray | None = None  # (B, 4, 4) their cameras

    def start(self, latents: Tensor, poses: Tensor) -> None:
        """The episode's first latent frames (B, 1, C, h, w) and cameras (B, 4, 4)."""
        if self.reference == "previous":
            self._stream = self.tokenizer.stream()
        self.advance(latents, poses, first=True)

    @torch.no_grad()
    def advance(self, latents: Tensor, poses: Tensor, first: bool = False) -> None:
        """The newest latent frames (B, 1, C, h, w), at cameras (B, 4, 4), are in the rollout:
        a ``previous`` base warps their last video frame next (a ``first`` one keeps frame 0)."""
        if not first and self.reference == "first":
            return
        if self._stream is None:
            self._reference = reference_frames(self.tokenizer, latents[:, 0].float())
        else:
            device = next(self.tokenizer.parameters()).device
            video = self._stream.decode(latents.float().to(device))[:, -1]  # (B, 3, H, W)
            video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte()
            self._reference = video.permute(0, 2, 3, 1).cpu().numpy()
        self._reference_pose = poses.cpu().numpy().astype(np.float64)

    def base(self, pose_from: Tensor, pose_to: Tensor) -> Tensor:
        """(B, 1, C, h, w): the new latent frame's base, the camera moving from ``pose_from``
        (the previous latent frame's) to ``pose_to`` (B, 4, 4)."""
        z = warp_base_latents(
            self.tokenizer,
            self._reference,
            self.intrinsics,
            self._reference_pose,
            pose_from.cpu().numpy().astype(np.float64),
            pose_to.cpu().numpy().astype(np.float64),
            self.height,
            self.chunk,
        )
        return z[:, None]


def warp_base_of(model: torch.nn.Module, tokenizer, intrinsics: Tensor) -> WarpBase | None:
    """The :class:`WarpBase` of a ``warp_base`` camera model (None for every other model)."""
    cfg = getattr(model, "cfg", None)
    if not getattr(cfg, "warp_base", False):
        return None
    if tokenizer is None:
        raise ConfigError(
            "a warp-base camera model needs its tokenizer in the rollout (to warp frames)",
            field="tokenizer",
        )
    reference = getattr(cfg, "warp_reference", "first")
    return WarpBase(tokenizer, intrinsics, cfg.warp_height, model.chunk, reference)


class WindowRollout:
    """Camera-control models: the context window re-prefilled every step with its rays
    relative to the window's first frame, as in training (``ray_reference``). A model
    with ``warp_base`` needs the ``tokenizer``: its base is built from frames."""

    def __init__(
        self,
        model: torch.nn.Module,
        context_frames: int,
        intrinsics: Tensor,
        image_size: tuple[int, int],
        tokenizer: torch.nn.Module | None = None,
    ) -> None:
        self.model, self.context_frames = model, context_frames
        # (3, 3) float64 K of the (H, W) images: the camera's fovy never changes
        self.intrinsics, self.image_size = intrinsics, image_size
        self.warp = warp_base_of(model, tokenizer, intrinsics)
        self._latents: Tensor | None = None  # (B, T, C, h, w) the window, T <= context_frames
        self._states: Tensor | None = None  # (B, T, S) its normalised states (or None)
        self._poses: Tensor | None = None  # (B, T, 4, 4) float64 its cameras
        self._first_time = 0  # time step of the window's first frame
        self._cache = None
        # a camera renderer's reference: the episode's first latent frame, camera and state
        self._first: tuple[Tensor, Tensor, Tensor | None] | None = None

    def _rays(self, poses: Tensor) -> Tensor:
        """(B, T, 4, 4) poses → (B, T, 6, h, w) rays relative to each row's first pose."""
        t, (h, w) = poses.shape[1], self._latents.shape[-2:]
        k = scale_intrinsics(self.intrinsics, self.image_size, h, w).expand(t, 3, 3)  # latent grid
        return torch.stack([clip_plucker_rays(k, p, h, w) for p in poses]).to(self._latents)

    def _prefill(self, precision: Precision) -> Tensor | None:
        rays = self._rays(self._poses)  # float64 maths, outside autocast (as in training)
        with precision.autocast():
            self._cache, next_action = self.model.prefill(
                self._latents, first_time=self._first_time, states=self._states, rays=rays
            )
        return _float(next_action)

    @torch.no_grad()
    def start(
        self,
        latents: Tensor,
        states: Tensor | None,
        sampler: Sampler,
        poses: Tensor,
        instruction_ids: Tensor | None = None,
    ):
        assert instruction_ids is None, "camera-control models take no instruction"
        self._latents, self._poses, self._first_time = latents, poses[:, None], 0
        self._states = None if states is None else states[:, None]
        if self.warp is not None:
            self.warp.start(latents, poses)
        self._first = (latents[:, 0].float(), poses, states)
        return self._prefill(sampler.precision)

    def _render(self, base: Tensor, poses: Tensor, state: Tensor | None) -> Tensor:
        """A camera renderer's frame (B, 1, C, h, w) over the warp ``base``, at the new
        cameras ``poses`` (B, 4, 4) and state (the model's own; the camera part as commanded)."""
        first, first_pose, s_ref = self._first
        h, w = first.shape[-2:]
        k = scale_intrinsics(self.intrinsics, self.image_size, h, w).expand(len(poses), 3, 3)
        rays = plucker_rays(k, poses, h, w, first_pose).to(first)  # relative to the first
        z = self.model.render_camera(
            first,
            base[:, 0].float(),
            rays,
            k.to(first),
            poses.to(first),
            s_ref,
            self._states[:, -1],
            state,
        )
        return z[:, None]

    @torch.no_grad()
    def step(self, chunk: Tensor, state: Tensor | None, sampler: Sampler, poses: Tensor):
        time = self._first_time + self._latents.shape[1]
        window_poses = torch.cat([self._poses, poses[:, None]], 1)  # (B, T + 1, 4, 4)
        rays = self._rays(window_poses)[:, -1]  # the new frame's, in the window's reference
        base = self._latents[:, -1:]  # (B, 1, C, h, w) the previous frame, or the warp's
        if self.warp is not None:
            base = self.warp.base(self._poses[:, -1], poses).to(base)
        if getattr(self.model.cfg, "renderer_points", None):
            base = self._render(base, poses, state).to(base)
        with sampler.precision.autocast():
            z = _next_frame(
                self.model,
                self._cache,
                chunk,
                time,
                base,
                sampler,
                state=state,
                rays=rays,
            ).float()  # (B, 1, C, h, w)
        if self.warp is not None:
            self.warp.advance(z, poses)
        # Slide the window: the next step's reference is its (possibly new) first frame.
        keep = self.context_frames
        self._latents = torch.cat([self._latents, z], 1)[:, -keep:]
        self._poses = window_poses[:, -keep:]
        if state is not None:
            self._states = torch.cat([self._states, state[:, None]], 1)[:, -keep:]
        self._first_time = time + 1 - self._latents.shape[1]
        return z, self._prefill(sampler.precision)
