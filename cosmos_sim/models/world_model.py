"""The action-conditioned world model as shipped: the diffusion model over latents plus a
frame probe that reads state, success and reward off any latent frame.

What a world-model env needs from one object::

    prefill(context latents)             → cache (the context's keys/values, computed once)
    next_frame(cache, action chunk)      → next latent frame (few-step sampler)
    append(cache, new latents)           → the new frame as clean context
    probe(latents)                       → state, success probability, reward per frame

An instruction model (``text_vocab`` > 0, trained with ``--variant instruction``) takes the
episode's ``instruction_ids`` (B, L) — :meth:`ActionWorldModel.hash_instructions` — in all
three: in training every frame of a clip, context included, cross-attends to its
instruction, so the cached context keys must be computed with it too. Guidance that drops
the instruction drops it from the whole clip as well: its branch reads ``uncond_cache``, the
same context prefilled without the instruction.

With ``dynamics_hidden > 0`` the model also carries the robot's proprio state, as robot
world models that predict video *and* proprioception do: a state-dynamics head steps the
normalised state with each action chunk, the DiT draws every frame conditioned on its
state, and success / reward are read off the predicted state::

    step_state(state, chunk)             → next state
    read_state(state)                    → success probability, reward

With ``renderer_hidden > 0`` a :class:`~cosmos_sim.models.heads.StateRenderer` draws each
new latent frame from the episode's first one and the states (``render``), and the residual
DiT diffuses the difference to it — its base, where other models use the previous frame
(CorrDiff's regression + diffusion split; the envs' rollouts do this).

A camera model with ``warp_base`` does the same with geometry: its base is the first
context frame warped into each new camera (``conditioning/warp.py``; the camera rollout
builds it, the training loader precomputes it). With ``renderer_points`` too, a
:class:`~cosmos_sim.models.heads.CameraRenderer` refines that warp from the states and the
new camera (``render_camera``), and its frame is the base (precomputed for training as well:
the renderer is fitted first and frozen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cosmos_sim.data.packing import Clip, pack_clips, unpack
from cosmos_sim.errors import ConfigError
from cosmos_sim.models.diffusion import GUIDE_ALL, DiffusionWorldModel, WorldModelConfig
from cosmos_sim.models.dit import instruction_ids
from cosmos_sim.models.heads import (
    CameraRenderer,
    FrameProbe,
    StateDynamics,
    StateReadout,
    StateRenderer,
)


@dataclass
class ProbeConfig:
    channels: int = 16
    height: int = 8
    width: int = 8
    state_dim: int = 0
    hidden: int = 256


@dataclass
class ActionWorldModelConfig:
    wm: WorldModelConfig = field(default_factory=WorldModelConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    state_loss_weight: float = 1.0
    success_loss_weight: float = 1.0
    dynamics_hidden: int = 0  # > 0: proprio state dynamics + readout heads (see module doc)
    dynamics_noise: float = 0.02  # std of noise on the dynamics head's input state in training
    dynamics_substeps: bool = False  # the dynamics head steps once per control action
    # (S,) one step's typical change per state dimension: the dynamics head's output units
    # (StateDynamics; set by `train state-heads` when it builds fresh heads)
    dynamics_delta_scale: list[float] | None = None
    renderer_hidden: int = 0  # > 0: a StateRenderer this wide is the DiT's residual base
    # camera models: the first context frame warped into each new camera (conditioning/warp.py,
    # the table plane at z = warp_height m) is the DiT's residual base; batch["base"] in training
    warp_base: bool = False
    warp_height: float = 0.0
    warp_reference: str = "first"  # the frame warped: "first" or "previous" (warp.py)
    # camera models with a renderer: the state's planar points (points.camera_point_config)
    renderer_points: list[dict] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.wm, dict):
            self.wm = WorldModelConfig(**self.wm)
        if isinstance(self.probe, dict):
            self.probe = ProbeConfig(**self.probe)
        from cosmos_sim.conditioning.warp import check_warp_reference

        check_warp_reference(self.warp_reference)
        if self.warp_base and self.renderer_hidden and not self.renderer_points:
            raise ConfigError(
                "one residual base: a fixed-camera state renderer or the camera warp, not both",
                field="warp_base",
                expected="renderer_hidden = 0, or renderer_points (a camera renderer)",
                found=self.renderer_hidden,
            )
        if self.renderer_points and not (self.warp_base and self.warp_reference == "first"):
            raise ConfigError(
                "a camera renderer refines the first frame's warp: it needs warp_base with "
                "warp_reference = 'first'",
                field="warp_reference",
                expected="first",
                found=self.warp_reference if self.warp_base else "no warp base",
            )

    def to_dict(self) -> dict:
        # (dynamics_substeps only when set: older runs' configs stay as they were and resume)
        extra = {"dynamics_substeps": True} if self.dynamics_substeps else {}
        if self.dynamics_delta_scale is not None:
            extra["dynamics_delta_scale"] = [float(x) for x in self.dynamics_delta_scale]
        if self.renderer_hidden:
            extra["renderer_hidden"] = self.renderer_hidden
        if self.warp_base:  # (only when set: older models' configs stay as they were)
            extra |= {"warp_base": True, "warp_height": self.warp_height}
            if self.warp_reference != "first":
                extra["warp_reference"] = self.warp_reference
        if self.renderer_points:
            extra["renderer_points"] = [dict(p) for p in self.renderer_points]
        return extra | {
            "wm": self.wm.to_dict(),
            "probe": dict(self.probe.__dict__),
            "state_loss_weight": self.state_loss_weight,
            "success_loss_weight": self.success_loss_weight,
            "dynamics_hidden": self.dynamics_hidden,
            "dynamics_noise": self.dynamics_noise,
        }


class ActionWorldModel(nn.Module):
    def __init__(self, cfg: ActionWorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wm = DiffusionWorldModel(cfg.wm)
        p = cfg.probe
        self.probe = FrameProbe(p.channels, p.height, p.width, p.state_dim, p.hidden)
        self.dynamics = self.readout = None
        if cfg.dynamics_hidden:
            d = cfg.wm.dit
            self.dynamics = StateDynamics(
                p.state_dim,
                d.action_chunk,
                d.action_dim,
                cfg.dynamics_hidden,
                cfg.dynamics_substeps,
                cfg.dynamics_delta_scale,
            )
            self.readout = StateReadout(p.state_dim, cfg.dynamics_hidden, d.text_vocab)
        self.renderer = None
        if cfg.renderer_hidden:
            d = cfg.wm.dit
            self.renderer = (
                CameraRenderer(
                    p.channels,
                    p.height,
                    p.width,
                    p.state_dim,
                    cfg.renderer_points,
                    cfg.renderer_hidden,
                )
                if cfg.renderer_points
                else StateRenderer(
                    p.channels, p.height, p.width, p.state_dim, d.state_points, cfg.renderer_hidden
                )
            )

    @classmethod
    def from_config(cls, config: dict) -> ActionWorldModel:
        return cls(ActionWorldModelConfig(**config))

    @property
    def chunk(self) -> int:
        return self.cfg.wm.dit.action_chunk

    @property
    def action_dim(self) -> int:
        return self.cfg.wm.dit.action_dim

    def training_step(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        """Diffusion loss (+ next-action head) on the clip, probe losses on its clean latents."""
        keys = (
            "latents",
            "n_context",
            "actions",
            "state",
            "rays",
            "time",
            "view",
            "instruction_ids",
        )
        wm_batch = {k: batch[k] for k in keys if k in batch}
        if self.cfg.warp_base:  # the loader's warped first frames (world_model_variants.py)
            if batch.get("base") is None:
                raise ConfigError(
                    "a warp-base model trains against the warped first frame: the batch "
                    "needs it (train with --warp-base)",
                    field="base",
                )
            wm_batch["base"] = batch["base"]
        if self.renderer is not None and not self.cfg.renderer_points:
            # the DiT diffuses what the renderer misses (a camera renderer's frames are the
            # loader's base already: precomputed over the warp, which is precomputed too)
            wm_batch["base"] = self.render_clip(batch["latents"], batch["state"], batch.get("view"))
        loss, metrics = self.wm.training_step(wm_batch)
        if self.dynamics is not None:
            loss = loss + self._state_losses(batch, metrics)
        state, logit, reward = self.probe(batch["latents"])
        loss_state = F.mse_loss(state, batch["state"])
        loss_success = F.binary_cross_entropy_with_logits(logit, batch["success"])
        loss_reward = F.mse_loss(reward, batch["reward"])
        loss = (
            loss
            + self.cfg.state_loss_weight * loss_state
            + self.cfg.success_loss_weight * (loss_success + loss_reward)
        )
        with torch.no_grad():
            accuracy = ((logit > 0) == (batch["success"] > 0.5)).float().mean().item()
        metrics |= {
            "loss_state": loss_state.item(),
            "loss_success": loss_success.item(),
            "success_acc": accuracy,
            "loss": loss.item(),
        }
        return loss, metrics

    @torch.no_grad()
    def render_clip(self, latents: Tensor, state: Tensor, view: Tensor | None = None) -> Tensor:
        """(B, F, C, h, w) clip, (B, F, S) its states → the renderer's frames for every time
        step after the first, each view from its own frame at the first time step (the
        first time step itself is kept): the residual base in training. ``view`` (B, F):
        views folded time-major (every time step holds views 0 … V − 1 in order)."""
        b, f = latents.shape[:2]
        v = 1 if view is None else int(view.max()) + 1
        order = torch.arange(v, device=latents.device).repeat(f // v)
        if view is not None and (f % v or not bool((view == order).all())):
            raise ConfigError(
                "the renderer's base needs views folded time-major, every view at every step",
                field="view",
            )
        t = f // v
        lat = latents.unflatten(1, (t, v))  # (B, T, V, C, h, w)
        s = state.float().unflatten(1, (t, v))[:, :, 0]  # (B, T, S): a time step's state
        n = b * (t - 1) * v
        per_frame = lambda x: x[:, :, None].expand(-1, -1, v, -1).reshape(n, -1)  # noqa: E731
        out = self.render(
            lat[:, :1].expand(-1, t - 1, -1, -1, -1, -1).reshape(n, *lat.shape[3:]),
            per_frame(s[:, :1].expand(-1, t - 1, -1)),
            per_frame(s[:, :-1]),
            per_frame(s[:, 1:]),
            torch.arange(v, device=latents.device).repeat(b * (t - 1)),
        )
        out = torch.cat([lat[:, :1], out.view(b, t - 1, v, *lat.shape[3:])], 1)
        return out.flatten(1, 2)

    def render(self, reference, s_ref, s_prev, s_new, view=None) -> Tensor:
        """The state renderer's latent frame (B, C, h, w); see :class:`StateRenderer`."""
        if self.renderer is None:
            raise ConfigError("this world model has no state renderer", field="renderer_hidden")
        if self.cfg.renderer_points:
            raise ConfigError(
                "a camera renderer draws from the warp and the camera (render_camera)",
                field="renderer_points",
            )
        return self.renderer(reference, s_ref, s_prev, s_new, view)

    def render_camera(
        self, first, base, rays, intrinsics, world_from_camera, s_ref, s_prev, s_new
    ) -> Tensor:
        """A camera model's renderer frame (B, C, h, w); see :class:`CameraRenderer`."""
        if not self.cfg.renderer_points:
            raise ConfigError("this world model has no camera renderer", field="renderer_points")
        return self.renderer(first, base, rays, intrinsics, world_from_camera, s_ref, s_prev, s_new)

    def _state_losses(self, batch: dict, metrics: dict) -> Tensor:
        """Dynamics: unroll from the clip's first state with every chunk (``actions_all``:
        chunk j leads into frame j) and match the recorded states; readout on true states."""
        state, chunks = batch["state"], batch["actions_all"]
        s = state[:, 0] + self.cfg.dynamics_noise * torch.randn_like(state[:, 0])
        errs = []
        for j in range(1, state.shape[1]):
            s = self.dynamics(s, chunks[:, j])
            errs.append(F.mse_loss(s, state[:, j]))
        loss_dyn = torch.stack(errs).mean()
        logit, reward = self.readout(state, batch.get("instruction_ids"))
        loss_read = F.binary_cross_entropy_with_logits(logit, batch["success"]) + F.mse_loss(
            reward, batch["reward"]
        )
        metrics |= {"loss_dynamics": loss_dyn.item(), "loss_readout": loss_read.item()}
        return self.cfg.state_loss_weight * loss_dyn + self.cfg.success_loss_weight * loss_read

    @property
    def has_state(self) -> bool:
        """True when the model carries proprio state (dynamics + readout heads)."""
        return self.dynamics is not None

    @torch.no_grad()
    def step_state(self, state: Tensor, chunk: Tensor) -> Tensor:
        """(B, S) normalised state + (B, c, A) normalised chunk → (B, S) next state."""
        return self.dynamics(state, chunk)

    @torch.no_grad()
    def read_state(
        self, state: Tensor, instruction_ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(B, …, S) normalised state (+ the episode's (B, L) instruction ids, instruction
        models) → success probability (B, …), reward (B, …)."""
        logit, reward = self.readout(state, instruction_ids)
        return torch.sigmoid(logit), reward

    # -- inference --------------------------------------------------------------------------
    @property
    def text_vocab(self) -> int:
        """Size of the hashed instruction vocabulary (0: the model reads no instruction)."""
        return self.cfg.wm.dit.text_vocab

    def hash_instructions(self, texts: Sequence[str]) -> Tensor:
        """Instructions → (B, L) long hashed words (or the pretrained text encoder's ids),
        0-padded: the ids training's clips carry (``world_model_variants.instruction_ids``,
        in this model's vocabulary)."""
        if not self.text_vocab:
            raise ConfigError(
                "this world model reads no instruction (trained without --variant instruction)",
                field="text_vocab",
                expected="> 0",
                found=0,
            )
        encoder = self.cfg.wm.dit.text_encoder
        words = [instruction_ids(text, self.text_vocab, encoder) for text in texts]
        ids = torch.zeros(len(words), max([1, *(len(w) for w in words)]), dtype=torch.long)
        for i, w in enumerate(words):
            ids[i, : len(w)] = w
        return ids

    def _instruction(self, ids: Tensor | None, b: int) -> list[Tensor | None]:
        """(B, L) 0-padded ids → each clip's words (None: no instruction, the null word only)."""
        if ids is None:
            return [None] * b
        if not self.text_vocab:
            raise ConfigError(
                "this world model reads no instruction (text_vocab = 0)",
                field="instruction_ids",
                found=f"{tuple(ids.shape)} ids",
            )
        if ids.dim() != 2 or ids.shape[0] != b or ids.dtype != torch.long:
            raise ConfigError(
                "one row of hashed words per batch element",
                field="instruction_ids",
                expected=f"({b}, L) long",
                found=f"{tuple(ids.shape)} {ids.dtype}",
            )
        if bool((ids < 0).any() or (ids >= self.text_vocab).any()):
            raise ConfigError(
                "instruction ids outside the model's vocabulary (hash_instructions makes them)",
                field="instruction_ids",
                expected=f"0 ≤ id < {self.text_vocab}",
                found=f"{int(ids.min())}..{int(ids.max())}",
            )
        return [row[row > 0].cpu() for row in ids]  # as training's token_batch: no padding

    def _tokens(
        self,
        latents: Tensor,
        actions: Tensor | None,
        first_time: int,
        n_context: int,
        states: Tensor | None = None,
        rays: Tensor | None = None,
        views: int = 1,
        instruction_ids: Tensor | None = None,
    ):
        """(B, T, C, h, w) latents (+ (B, T, c, A) chunks, (B, T, S) states, (B, T, 6, h, w)
        Plücker rays, (B, L) instruction ids) as a TokenBatch starting at `first_time`. With
        ``views`` V > 1 the T frames are V cameras folded time-major (t0v0, t0v1, …), as
        multi-view models train."""
        b, t = latents.shape[:2]
        if t % views:
            raise ConfigError(
                "folded frames must hold every view of each time step",
                field="latents",
                expected=f"a multiple of {views} frames",
                found=t,
            )
        time = (first_time + torch.arange(t) // views).expand(b, t)
        view = (torch.arange(t) % views).expand(b, t)
        if self.cfg.wm.dit.state_dim and states is None:
            raise ConfigError(
                "this world model draws each frame from its proprio state: pass the states",
                field="states",
            )
        if self.cfg.wm.dit.rays and rays is None:
            raise ConfigError(
                "this camera-control world model needs each frame's Plücker rays",
                field="rays",
            )
        words = self._instruction(instruction_ids, b)
        clips = [
            Clip(
                latents[i],
                n_context,
                None if actions is None else actions[i],
                time=time[i],
                view=view[i] if views > 1 else None,
                rays=None if rays is None else rays[i],
                instruction_ids=words[i],
                state=None if states is None else states[i],
            )
            for i in range(b)
        ]
        tb = pack_clips(clips, self.cfg.wm.dit.patch_size, [[i] for i in range(b)])
        return tb.to(latents.device)  # as the training batch: on the model's device

    @torch.no_grad()
    def prefill(
        self,
        context: Tensor,
        cache=None,
        first_time: int = 0,
        states=None,
        rays=None,
        views=1,
        instruction_ids: Tensor | None = None,
    ):
        """Clean context latents (B, T, C, h, w) (+ their (B, T, S) states and rays, and the
        episode's (B, L) instruction ids) into the cache; returns (cache, next-action chunk)."""
        tb = self._tokens(
            context, None, first_time, context.shape[1], states, rays, views, instruction_ids
        )
        return self.wm.prefill(tb, cache)

    @torch.no_grad()
    def append(
        self,
        cache,
        latents: Tensor,
        time: int,
        states=None,
        rays=None,
        views=1,
        instruction_ids: Tensor | None = None,
    ) -> Tensor | None:
        """Add generated frames (now clean context) to the cache, with the instruction the
        cache was prefilled with; returns the next-action chunk."""
        tb = self._tokens(
            latents, None, time, latents.shape[1], states, rays, views, instruction_ids
        )
        return self.wm.prefill(tb, cache)[1]

    @torch.no_grad()
    def next_frame(
        self,
        cache,
        action_chunk: Tensor,
        time: int,
        latent_shape: tuple[int, int, int],
        *,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        guidance: float = 1.0,
        previous: Tensor | None = None,
        sigma_start: float | None = None,
        state: Tensor | None = None,
        rays: Tensor | None = None,
        views: int = 1,
        instruction_ids: Tensor | None = None,
        guide: tuple[str, ...] = GUIDE_ALL,
        uncond_cache=None,
    ) -> Tensor:
        """Sample latent frame `time` (B, 1, C, h, w) given the cached past and its action chunk.

        With ``previous`` (B, 1, C, h, w) and ``sigma_start``, sampling starts from the
        previous frame noised to σ_start rather than from pure noise at σ_max: consecutive
        latent frames differ little, and the short path drifts less in long rollouts.
        ``state`` (B, S): the new frame's normalised state (models with proprio state);
        ``rays`` (B, 6, h, w): its Plücker rays (camera-control models), in the same reference
        camera as the cached context's. Multi-view models (``views`` V > 1) sample all V
        views of time step `time` jointly: (B, V, C, h, w), ``previous`` likewise.
        ``instruction_ids`` (B, L): the episode's, the same the cache was prefilled with.
        ``guidance`` w > 1 extrapolates away from the prediction without ``guide`` (actions
        and/or the instruction); without the instruction, that branch reads ``uncond_cache``:
        the context prefilled with ``instruction_ids=None``.
        """
        b = action_chunk.shape[0]
        if previous is None and self.cfg.wm.residual:
            raise ConfigError(
                "this world model predicts the change from the previous latent frame: pass it",
                field="previous",
            )
        drops_text = guidance != 1.0 and instruction_ids is not None and "instruction" in guide
        if drops_text and cache is not None and uncond_cache is None:
            raise ConfigError(
                "guidance drops the instruction from the context too, as training does: "
                "pass the context prefilled without it",
                field="uncond_cache",
                expected="a cache from prefill(..., instruction_ids=None)",
            )
        placeholder = torch.zeros(b, views, *latent_shape) if previous is None else previous
        states = None if state is None else state[:, None].expand(b, views, -1)
        batch = self._tokens(
            placeholder,
            action_chunk[:, None].expand(b, views, *action_chunk.shape[1:]),
            time,
            0,
            states,
            None if rays is None else rays[:, None],
            views,
            instruction_ids,
        )
        start = None if previous is None or sigma_start is None else batch.tokens
        base = batch.tokens if self.cfg.wm.residual else None
        tokens = self.wm.generate(
            batch,
            cache,
            steps=steps,
            generator=generator,
            guidance=guidance,
            guide=guide,
            start=start,
            sigma_start=sigma_start if start is not None else None,
            base=base,
            uncond_cache=uncond_cache if drops_text else None,
        )
        return torch.stack(unpack(tokens, batch))  # (B, 1, C, h, w)

    @torch.no_grad()
    def read(self, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """State (normalised), success probability and reward of latent frames (B, T, …)."""
        state, logit, reward = self.probe(latents)
        return state, torch.sigmoid(logit), reward
