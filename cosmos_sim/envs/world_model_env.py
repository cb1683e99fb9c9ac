"""A trained world model as a Gymnasium env: batched by construction, the single env is
its batch of one.

``gym.make("cosmos_sim/WorldModel-v0", model="wm-diffusion-reach")`` or
``gym.make_vec("cosmos_sim/WorldModel-v0", num_envs=32, model=…)`` (one batched forward
pass for every sub-env). Spaces are those of the simulator env it imitates
(:mod:`cosmos_sim.envs.sim_env`), so a policy runs unchanged in either:

=================  ========================================  ==============================
observation key    space                                      meaning
=================  ========================================  ==============================
``<camera>``       Box(0, 255, (H, W, 3), uint8)              last generated frame
``state``          Box(-inf, inf, (S,), float32)              read off the latent frame by the
                                                               model's probe (true at reset)
=================  ========================================  ==============================

Action: Box(low, high, (chunk, A), float32), one action chunk per step; the model
generates one latent frame = ``chunk`` video frames for it.

Reset draws the real first frame from the simulator with the same seed as
``cosmos_sim/<Task>-v0`` (so both start from the same state) and encodes it; the torch
generator of the sampler is seeded from it too, so ``reset(seed=s)`` is reproducible.
Reward: the probe's reward summed over nothing else (one per step); ``terminated`` only
for tasks whose success rule is ``when = "any"`` and the success probability > 0.5;
``truncated`` at the task's episode length. ``info``: ``frames`` {camera: (chunk, H, W, 3)},
``success_probability``, ``is_success`` (probability > 0.5), ``next_action`` (the
model's prediction of the next chunk, in action units).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.conditioning.actions import ActionStats
from cosmos_sim.device import precision as device_precision
from cosmos_sim.envs.spaces import check_action, chunk_action_space, observation_space
from cosmos_sim.errors import CameraError, ModelError
from cosmos_sim.models import zoo

# Each latent frame may start from the previous one noised to this σ (SDEdit); None starts
# from pure noise at σ_max, which drifted least for wm-diffusion-reach in
# benchmarks/world_model.py (20.5 dB at 9 latent steps vs 19.4-19.9 dB from the previous frame).
SIGMA_START: float | None = None
# Classifier-free guidance scale on the action chunk (1 = plain conditional sampling).
GUIDANCE: float = 1.0


@dataclass
class LoadedWorldModel:
    """A world model, its tokenizer and the statistics it was trained with."""

    model: torch.nn.Module
    tokenizer: torch.nn.Module
    task: str
    cameras: list[str]
    action_stats: ActionStats
    state_mean: np.ndarray
    state_std: np.ndarray
    name: str
    context_frames: int
    image_size: tuple[int, int]

    @classmethod
    def load(cls, model: str, device: str = "cpu") -> LoadedWorldModel:
        loaded = zoo.load_model(model, device)
        if loaded.kind != "world-model-diffusion":
            raise ModelError(
                "not a diffusion world model", path=loaded.path, field="kind", found=loaded.kind
            )
        meta = loaded.config
        try:
            tok = zoo.load_model(meta["tokenizer"], device)
        except ModelError:
            tok = zoo.load_model(meta.get("tokenizer_path", meta["tokenizer"]), device)
        if tok.weights_hash != meta["tokenizer_hash"]:
            raise ModelError(
                "the world model was trained with a different tokenizer",
                path=loaded.path,
                field="tokenizer_hash",
                expected=meta["tokenizer_hash"],
                found=f"{tok.weights_hash} ({tok.path})",
            )
        stats = loaded.stats or {}
        if "action_mean" not in stats or "state_mean" not in stats:
            raise ModelError("missing normalisation statistics", path=loaded.path / "stats.json")
        recipe_frames = int(meta.get("context_frames", 3))  # latent frames of context in training
        return cls(
            model=loaded.module,
            tokenizer=tok.module,
            task=str(meta["task"]).removeprefix("mujoco:"),
            cameras=list(meta["cameras"]),
            action_stats=ActionStats(
                np.asarray(stats["action_mean"], np.float32),
                np.asarray(stats["action_std"], np.float32),
            ),
            state_mean=np.asarray(stats["state_mean"], np.float32),
            state_std=np.asarray(stats["state_std"], np.float32),
            name=loaded.path.name,
            context_frames=recipe_frames,
            image_size=tuple(meta["image_size"]),
        )


@torch.no_grad()
def decoder_window(
    tokenizer: torch.nn.Module, size: tuple[int, int], longest: int = 12
) -> int | None:
    """The fewest trailing latent frames that decode the newest frame exactly as the whole
    history does (the causal decoder's receptive field), measured once; None = whole history.

    Decoding only that window keeps an env step's cost flat instead of growing with the
    episode.
    """
    g = torch.Generator().manual_seed(0)
    h, w = size[0] // 8, size[1] // 8
    z = torch.randn(1, longest, tokenizer.cfg.bottleneck_channels, h, w, generator=g)
    full = tokenizer.decode(z)[:, -4:]
    for window in range(2, longest):
        if torch.allclose(tokenizer.decode(z[:, -window:])[:, -4:], full, atol=1e-5):
            return window
    return None


class WorldModelVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` rollouts of one world model, advanced by one batched forward pass."""

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        model: str = "wm-diffusion-reach",
        task: str | None = None,
        family: str = "diffusion",
        sampler_steps: int | None = None,
        sigma_start: float | None = SIGMA_START,
        guidance: float = GUIDANCE,
        cameras: str | list[str] | None = None,
        size: int | None = None,
        device: str = "cpu",
        include_state: bool = True,
        render_mode: str | None = None,
        precision: str | None = None,
    ) -> None:
        if family != "diffusion":
            raise ModelError(
                "only diffusion world models are available in this version",
                field="family",
                found=family,
            )
        self.wm = LoadedWorldModel.load(model, device)
        # The DiT runs under bf16 autocast where this machine runs bf16 faster (probed once
        # and cached, see cosmos_sim/device.py); "fp32" / "bf16" force it.
        if precision is not None and precision not in ("fp32", "bf16"):
            raise ModelError(
                "unknown precision", field="precision", expected="fp32 or bf16", found=precision
            )
        self._precision = device_precision(device)
        if precision is not None and precision != self._precision.name:
            dtype = None if precision == "fp32" else torch.bfloat16
            self._precision = replace(self._precision, autocast_dtype=dtype, name=precision)
        if task is not None and task != self.wm.task:
            raise ModelError(
                "the model was trained on another task",
                field="task",
                expected=self.wm.task,
                found=task,
            )
        cams = [c.strip() for c in cameras.split(",")] if isinstance(cameras, str) else cameras
        cams = cams or self.wm.cameras[:1]
        if len(cams) != 1 or cams[0] not in self.wm.cameras:
            raise CameraError(
                "this world model generates one camera at a time",
                field="cameras",
                expected=f"one of {self.wm.cameras}",
                found=cams,
            )
        self.camera = cams[0]
        height, width = self.wm.image_size
        if size is not None and size != height:
            raise ModelError(
                "the model generates another image size", field="size", expected=height, found=size
            )
        self.sim = MujocoSim(
            self.wm.task,
            cameras=[self.camera],
            height=height,
            width=width,
            depth=False,
            segmentation=False,
        )
        self.num_envs, self.device, self.render_mode = num_envs, torch.device(device), render_mode
        self.sampler_steps, self.include_state = sampler_steps, include_state
        self.sigma_start = sigma_start  # None: sample from pure noise at the model's σ_max
        self.guidance = guidance  # classifier-free guidance on the action chunk (1 = none)
        self.chunk = self.wm.model.chunk
        self.max_steps = self.sim.task.episode_length // self.chunk
        self.metadata = {**self.metadata, "render_fps": self.sim.fps}
        space = self.sim.action_space
        self.single_action_space = chunk_action_space(space.low, space.high, self.chunk)
        state_dim = len(self.sim.state_names) if include_state else None
        self.single_observation_space = observation_space(
            [self.camera], self.sim.height, self.sim.width, state_dim
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self._latents: torch.Tensor | None = None  # (B, T, C, h, w) every latent frame so far
        self._state: torch.Tensor | None = None  # (B, S) normalised proprio state (if modelled)
        self._cache = None
        self._t = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._last: dict[str, np.ndarray] = {}
        self._generator = torch.Generator().manual_seed(0)
        self._window = decoder_window(self.wm.tokenizer, (self.sim.height, self.sim.width))

    # -- helpers ---------------------------------------------------------------------------
    def _encode_first(self, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Real first frames (B, H, W, 3) and states (B, S) from the simulator."""
        frames, states = [], []
        for s in seeds:
            f = self.sim.reset(seed=int(s))
            frames.append(f.cameras[self.camera].rgb)
            states.append(f.state)
        return np.stack(frames), np.stack(states).astype(np.float32)

    def _to_latent(self, frames: np.ndarray) -> torch.Tensor:
        video = (
            torch.from_numpy(frames).permute(0, 3, 1, 2)[:, None].float() / 127.5 - 1
        )  # (B, 1, 3, H, W)
        return self.wm.tokenizer.encode(video.to(self.device))  # (B, 1, C, h, w)

    def _decode_last(self) -> np.ndarray:
        """The `chunk` video frames of the newest latent frame, (B, c, H, W, 3) uint8."""
        latents = self._latents if self._window is None else self._latents[:, -self._window :]
        video = self.wm.tokenizer.decode(latents)[:, -self.chunk :]  # (B, c, 3, H, W)
        return (
            ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 1, 3, 4, 2).cpu().numpy()
        )

    def _observation(self, frames: np.ndarray, states: np.ndarray) -> dict[str, np.ndarray]:
        obs = {self.camera: frames}
        if self.include_state:
            obs["state"] = states.astype(np.float32)
        return obs

    # -- the Gymnasium API -----------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        super().reset(seed=seed if seed is None or isinstance(seed, int) else int(seed[0]))
        if seed is None:
            seeds = [int(s) for s in self.np_random.integers(0, 2**31, self.num_envs)]
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in seed]
        self._generator.manual_seed(int(seeds[0]))
        frames, states = self._encode_first(seeds)
        with torch.no_grad():
            self._latents = self._to_latent(frames)
            self._state = None
            if self.wm.model.has_state:  # the model steps the proprio state with each chunk
                norm = (states - self.wm.state_mean) / self.wm.state_std
                self._state = torch.from_numpy(norm.astype(np.float32)).to(self.device)
            with self._precision.autocast():
                self._cache, next_action = self.wm.model.prefill(
                    self._latents, states=None if self._state is None else self._state[:, None]
                )
            next_action = None if next_action is None else next_action.float()
        self._t[:] = 0
        self._done[:] = False
        self._seeds = seeds
        self._last = self._observation(frames, states)
        info = {"success_probability": np.zeros(self.num_envs, np.float32)}
        if next_action is not None:
            info["next_action"] = self.wm.action_stats.denormalize(next_action.cpu().numpy())
        return self._last, info

    def step(self, actions):
        if self._latents is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_action(actions, self.action_space)
        if self._done.any():
            # Gymnasium's NEXT_STEP autoreset: finished sub-envs restart now. A world model
            # advances its whole batch together, so the batch restarts when all are done.
            if not self._done.all():
                raise gym.error.Error("sub-envs finish together in a world-model vector env")
            self.reset(seed=[s + 10_000 for s in self._seeds])
            zeros = np.zeros(self.num_envs, np.float32)
            flags = np.zeros(self.num_envs, bool)
            return self._last, zeros, flags, flags.copy(), {}
        chunk = torch.from_numpy(self.wm.action_stats.normalize(actions)).float().to(self.device)
        time = int(self._t[0]) + 1
        shape = tuple(self._latents.shape[2:])
        model = self.wm.model
        with torch.no_grad():  # the state is integrated over the episode: always fp32
            new_state = None if self._state is None else model.step_state(self._state, chunk)
        with torch.no_grad(), self._precision.autocast():
            z = model.next_frame(
                self._cache,
                chunk,
                time,
                shape,
                steps=self.sampler_steps,
                generator=self._generator,
                previous=self._latents[:, -1:],
                sigma_start=self.sigma_start,
                guidance=self.guidance,
                state=new_state,
            )
            new_states = None if new_state is None else new_state[:, None]
            next_action = model.append(self._cache, z, time, new_states)  # (B, c, A) normalised
        z, next_action = z.float(), None if next_action is None else next_action.float()
        with torch.no_grad():
            # Keep as much context as the model was trained with (RoPE sees only differences).
            self._cache.keep_last(self.wm.context_frames)
            # Only the decoder's receptive field is needed from here on.
            self._latents = torch.cat([self._latents, z], 1)[:, -(self._window or 0) :]
            if new_state is None:  # success, reward and state read off the generated frame
                state_n, prob, reward = (x[:, 0] for x in model.read(z))
            else:  # … or off the predicted proprio state
                state_n, (prob, reward) = new_state, model.read_state(new_state)
                self._state = new_state
            frames = self._decode_last()
        self._t += 1
        prob = prob.cpu().numpy()
        state = state_n.cpu().numpy() * self.wm.state_std + self.wm.state_mean
        success = prob > 0.5
        terminated = success & (self.sim.task.success.when == "any")
        truncated = (self._t >= self.max_steps) & ~terminated
        self._done = terminated | truncated
        self._last = self._observation(frames[:, -1], state)
        info: dict[str, Any] = {
            "frames": {self.camera: frames},
            "success_probability": prob.astype(np.float32),
            "is_success": success,
        }
        if next_action is not None:
            info["next_action"] = self.wm.action_stats.denormalize(next_action.cpu().numpy())
        return (
            self._last,
            reward.cpu().numpy().astype(np.float64),
            terminated,
            truncated,
            info,
        )

    def render(self):
        if self.render_mode != "rgb_array" or not self._last:
            return None
        return self._last[self.camera]

    def close_extras(self, **kwargs) -> None:
        self.sim.close()


class WorldModelEnv(gym.Env):
    """The single env: a :class:`WorldModelVectorEnv` batch of one."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, **kwargs) -> None:
        self.vec = WorldModelVectorEnv(1, render_mode=render_mode, **kwargs)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.vec.metadata["render_fps"]}
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self._needs_reset = True

    @property
    def task(self):
        return self.vec.sim.task

    @property
    def sim(self):
        return self.vec.sim

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        episode_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        obs, info = self.vec.reset(seed=[episode_seed])
        self._needs_reset = False
        return _first(obs), {"success_probability": float(info["success_probability"][0])}

    def step(self, action):
        if self._needs_reset:
            raise gym.error.ResetNeeded("the episode has ended: call reset() before step()")
        obs, reward, terminated, truncated, info = self.vec.step(
            np.asarray(action, np.float32)[None]
        )
        self._needs_reset = bool(terminated[0] or truncated[0])
        one = {
            "frames": {k: v[0] for k, v in info["frames"].items()},
            "success_probability": float(info["success_probability"][0]),
            "is_success": bool(info["is_success"][0]),
        }
        if "next_action" in info:
            one["next_action"] = info["next_action"][0]
        return _first(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), one

    def render(self):
        frame = self.vec.render()
        return None if frame is None else frame[0]

    def close(self) -> None:
        self.vec.close()


def _first(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in obs.items()}
