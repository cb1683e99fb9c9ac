"""The action-conditioned world model as shipped: the diffusion model over latents plus a
frame probe that reads state, success and reward off any latent frame.

What a world-model env needs from one object::

    prefill(context latents)             → cache (the context's keys/values, computed once)
    next_frame(cache, action chunk)      → next latent frame (few-step sampler)
    probe(latents)                       → state, success probability, reward per frame

With ``dynamics_hidden > 0`` the model also carries the robot's proprio state, as robot
world models that predict video *and* proprioception do: a state-dynamics head steps the
normalised state with each action chunk, the DiT draws every frame conditioned on its
state, and success / reward are read off the predicted state::

    step_state(state, chunk)             → next state
    read_state(state)                    → success probability, reward
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cosmos_sim.data.packing import Clip, pack_clips, unpack
from cosmos_sim.errors import ConfigError
from cosmos_sim.models.diffusion import DiffusionWorldModel, WorldModelConfig
from cosmos_sim.models.heads import FrameProbe, StateDynamics, StateReadout


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

    def __post_init__(self) -> None:
        if isinstance(self.wm, dict):
            self.wm = WorldModelConfig(**self.wm)
        if isinstance(self.probe, dict):
            self.probe = ProbeConfig(**self.probe)

    def to_dict(self) -> dict:
        return {
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
                p.state_dim, d.action_chunk, d.action_dim, cfg.dynamics_hidden
            )
            self.readout = StateReadout(p.state_dim, cfg.dynamics_hidden)

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
        logit, reward = self.readout(state)
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
    def read_state(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """(…, S) normalised state → success probability (…), reward (…)."""
        logit, reward = self.readout(state)
        return torch.sigmoid(logit), reward

    # -- inference --------------------------------------------------------------------------
    def _tokens(
        self,
        latents: Tensor,
        actions: Tensor | None,
        first_time: int,
        n_context: int,
        states: Tensor | None = None,
        rays: Tensor | None = None,
        views: int = 1,
    ):
        """(B, T, C, h, w) latents (+ (B, T, c, A) chunks, (B, T, S) states, (B, T, 6, h, w)
        Plücker rays) as a TokenBatch starting at `first_time`. With ``views`` V > 1 the T
        frames are V cameras folded time-major (t0v0, t0v1, …), as multi-view models train."""
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
        clips = [
            Clip(
                latents[i],
                n_context,
                None if actions is None else actions[i],
                time=time[i],
                view=view[i] if views > 1 else None,
                rays=None if rays is None else rays[i],
                state=None if states is None else states[i],
            )
            for i in range(b)
        ]
        return pack_clips(clips, self.cfg.wm.dit.patch_size, [[i] for i in range(b)])

    @torch.no_grad()
    def prefill(
        self, context: Tensor, cache=None, first_time: int = 0, states=None, rays=None, views=1
    ):
        """Clean context latents (B, T, C, h, w) (+ their (B, T, S) states and rays) into the
        cache; returns (cache, next-action chunk)."""
        tb = self._tokens(context, None, first_time, context.shape[1], states, rays, views)
        return self.wm.prefill(tb, cache)

    @torch.no_grad()
    def append(
        self, cache, latents: Tensor, time: int, states=None, rays=None, views=1
    ) -> Tensor | None:
        """Add generated frames (now clean context) to the cache; returns the next-action chunk."""
        tb = self._tokens(latents, None, time, latents.shape[1], states, rays, views)
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
    ) -> Tensor:
        """Sample latent frame `time` (B, 1, C, h, w) given the cached past and its action chunk.

        With ``previous`` (B, 1, C, h, w) and ``sigma_start``, sampling starts from the
        previous frame noised to σ_start rather than from pure noise at σ_max: consecutive
        latent frames differ little, and the short path drifts less in long rollouts.
        ``state`` (B, S): the new frame's normalised state (models with proprio state);
        ``rays`` (B, 6, h, w): its Plücker rays (camera-control models), in the same reference
        camera as the cached context's. Multi-view models (``views`` V > 1) sample all V
        views of time step `time` jointly: (B, V, C, h, w), ``previous`` likewise.
        """
        b = action_chunk.shape[0]
        if previous is None and self.cfg.wm.residual:
            raise ConfigError(
                "this world model predicts the change from the previous latent frame: pass it",
                field="previous",
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
        )
        start = None if previous is None or sigma_start is None else batch.tokens
        base = batch.tokens if self.cfg.wm.residual else None
        tokens = self.wm.generate(
            batch,
            cache,
            steps=steps,
            generator=generator,
            guidance=guidance,
            start=start,
            sigma_start=sigma_start if start is not None else None,
            base=base,
        )
        return torch.stack(unpack(tokens, batch))  # (B, 1, C, h, w)

    @torch.no_grad()
    def read(self, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """State (normalised), success probability and reward of latent frames (B, T, …)."""
        state, logit, reward = self.probe(latents)
        return state, torch.sigmoid(logit), reward
