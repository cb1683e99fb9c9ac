"""A trained world model as a Gymnasium env: batched by construction, the single env is
its batch of one.

``gym.make("cosmos_sim/WorldModel-v0", model="wm-diffusion-reach")`` or
``gym.make_vec("cosmos_sim/WorldModel-v0", num_envs=32, model=…)`` (one batched forward
pass for every sub-env). The model's ``variant`` (config.toml, see
:mod:`.loaded_world_model`) says which simulator env it imitates; the spaces are that
env's, so a policy runs unchanged in either:

===========  ==================================  ==========================================
variant      imitates                            each step
===========  ==================================  ==========================================
action       ``cosmos_sim/<Task>-v0``, one of     one latent frame from the action chunk,
             the model's cameras (``cameras=``)   the context's KV cache kept
camera       ``cosmos_sim/CameraNav-v0``, same    the commanded orbit camera (exact pose →
             ``arm=`` / ``arm_skill=``            Plücker rays, exact ``orbit.*`` state) and
                                                  the arm's actions (the policy's or the
                                                  scripted expert's): :mod:`.world_model_camera`;
                                                  the context re-prefilled every step
multiview    ``cosmos_sim/<Task>-v0`` with the    all V views generated jointly (folded into
             model's cameras                      time), each view decoded on its own
instruction  ``cosmos_sim/<Task>-v0`` of a task   as action; the context, every new frame,
             with several instructions            the cache and the success head read the
             (``ReachColor``, ``PushSide``), one  episode's instruction (hashed in the model's
             of the model's cameras               vocabulary), drawn from the seed as the
                                                  simulator draws it
===========  ==================================  ==========================================

=================  ========================================  ==============================
observation key    space                                      meaning
=================  ========================================  ==============================
``<camera>``       Box(0, 255, (H, W, 3), uint8)              last generated frame; one key
                                                               per observed camera (multiview:
                                                               ``cameras=`` picks a subset of
                                                               the views, default all)
``state``          Box(-inf, inf, (S,), float32)              the model's proprio state (true
                                                               at reset); camera: its
                                                               ``orbit.*`` the commanded pose
=================  ========================================  ==============================

=================  ========================================  ==============================
action             space                                      per-frame layout
=================  ========================================  ==============================
action, multiview  Box(low, high, (chunk, A), float32)        the task's (task.toml)
camera             Box(-1, 1, (chunk, 3), float32)            cam_yaw, cam_pitch, cam_dolly
(``arm="expert"``)
camera             Box(-1, 1, (chunk, 5), float32)            … then ee_vx, ee_vy
(``arm="policy"``)
=================  ========================================  ==============================

One env step takes one action chunk; the model generates one latent frame = ``chunk``
video frames (per view) for it.

``decoder=`` decodes with another tokenizer with the same latents as the model's own:
``decoder="tokenizer-cv-4x8x8-pca-fast"`` is ~6× cheaper to decode, for a little image
quality (its card has both), which makes multi-view and RL-in-imagination runs faster.

Reset draws the real first frame(s) from the simulator with the same seed as the env it
imitates (so both start from the same state) and encodes them; the torch generator of
the sampler is seeded from it too, so ``reset(seed=s)`` is reproducible. An instruction
model's episode takes its instruction from that simulator reset too (same seed → same
instruction as ``cosmos_sim/<Task>-v0``); ``reset(options={"instruction": text})`` forces it
(the vector env also takes a list, one text or None per sub-env).
Reward: the model's reward (one per step). ``terminated`` only for tasks whose success
rule is ``when = "any"`` and the success probability > 0.5 (otherwise success is judged
at the end, as in the simulator); ``truncated`` at the task's episode length. ``info``:
``frames`` {camera: (chunk, H, W, 3)} of the observed cameras, ``success_probability``,
``is_success`` (probability > 0.5), ``next_action`` (the model's prediction of the next
chunk, in action units and the env's action layout); camera: ``goal_distance`` (rad,
between the commanded camera's axis and the predicted camera target); instruction:
``instruction`` (the episode's text, at reset and every step, as the simulator env's).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.device import precision as device_precision
from cosmos_sim.envs.loaded_world_model import (
    LoadedWorldModel,
    check_drivable,
    observed_cameras,
)
from cosmos_sim.envs.spaces import check_action, chunk_action_space, observation_space
from cosmos_sim.envs.world_model_camera import CameraNavControl
from cosmos_sim.envs.world_model_rollouts import CachedRollout, Sampler, WindowRollout
from cosmos_sim.errors import ConfigError, ModelError
from cosmos_sim.models.tokenizer import StreamingDecoder

__all__ = ["LoadedWorldModel", "WorldModelEnv", "WorldModelVectorEnv"]

# Each latent frame may start from the previous one noised to this σ (SDEdit); None starts
# from pure noise at σ_max, which drifted least for wm-diffusion-reach in
# benchmarks/world_model.py (20.5 dB at 9 latent steps vs 19.4-19.9 dB from the previous frame).
SIGMA_START: float | None = None
# Classifier-free guidance scale on the action chunk and the instruction (1 = plain
# conditional sampling).
GUIDANCE: float = 1.0


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
        chunk: int | None = None,
        arm: str | None = None,
        arm_skill: float = 1.0,
        device: str = "cpu",
        include_state: bool = True,
        render_mode: str | None = None,
        precision: str | None = None,
        decoder: str | None = None,
    ) -> None:
        if family != "diffusion":
            raise ModelError(
                "only diffusion world models are available in this version",
                field="family",
                found=family,
            )
        self.wm = LoadedWorldModel.load(model, device, decoder)
        check_drivable(self.wm)
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
        # The cameras observed, and those generated: every view of a multi-view model.
        self.cameras = observed_cameras(self.wm, cameras)
        self.camera = self.cameras[0]
        multiview = self.wm.variant == "multiview"
        self.generated = list(self.wm.cameras) if multiview else self.cameras
        height, width = self.wm.image_size
        if size is not None and size != height:
            raise ModelError(
                "the model generates another image size", field="size", expected=height, found=size
            )
        self.chunk = self.wm.model.chunk
        if chunk is not None and chunk != self.chunk:
            raise ModelError(
                "the model generates another chunk", field="chunk", expected=self.chunk, found=chunk
            )
        if arm is not None and self.wm.variant != "camera":
            raise ConfigError(
                "arm= is for camera-control world models (driven as CameraNav-v0)",
                field="arm",
                found=arm,
            )
        self.sim = MujocoSim(
            self.wm.task,
            cameras=self.generated,
            height=height,
            width=width,
            depth=False,
            segmentation=False,
        )
        self.num_envs, self.device, self.render_mode = num_envs, torch.device(device), render_mode
        self.sampler_steps, self.include_state = sampler_steps, include_state
        self.sigma_start = sigma_start  # None: sample from pure noise at the model's σ_max
        self.guidance = guidance  # classifier-free guidance on the chunk / instruction (1 = none)
        self.instructed = self.wm.variant == "instruction"  # reads the episode's instruction
        self.max_steps = self.sim.task.episode_length // self.chunk
        self.metadata = {**self.metadata, "render_fps": self.sim.fps}
        space = self.sim.action_space
        self.single_action_space = chunk_action_space(space.low, space.high, self.chunk)
        self.camera_nav: CameraNavControl | None = None
        if self.wm.variant == "camera":
            try:
                self.camera_nav = CameraNavControl(
                    self.sim, self.chunk, num_envs, arm or "expert", arm_skill
                )
            except Exception:
                self.sim.close()  # refused: release the renderer before raising
                raise
            self.single_action_space = self.camera_nav.action_space
            k = torch.as_tensor(self.sim.intrinsics(self.camera_nav.camera), dtype=torch.float64)
            self.rollout = WindowRollout(
                self.wm.model, self.wm.context_frames, k, (height, width), self.wm.tokenizer
            )
        else:
            self.rollout = CachedRollout(self.wm.model, self.wm.context_frames, len(self.generated))
        state_dim = len(self.sim.state_names) if include_state else None
        self.single_observation_space = observation_space(
            self.cameras, self.sim.height, self.sim.width, state_dim
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self._stream: StreamingDecoder | None = None  # decodes each new latent frame
        self._state: torch.Tensor | None = None  # (B, S) normalised proprio state (if modelled)
        self._state_now = np.zeros((num_envs, len(self.sim.state_names)), np.float32)
        self._t = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._instructions: np.ndarray | None = None  # (B,) str each episode's (instructed)
        self._instruction_ids: torch.Tensor | None = None  # (B, L) their hashed words
        self._last: dict[str, np.ndarray] = {}
        self._generator = torch.Generator().manual_seed(0)

    @property
    def _sampler(self) -> Sampler:
        return Sampler(
            self.sampler_steps, self.sigma_start, self.guidance, self._generator, self._precision
        )

    # -- helpers ---------------------------------------------------------------------------
    def _first_frames(
        self, seeds: list[int], instructions: list[str | None]
    ) -> tuple[np.ndarray, np.ndarray, list, list[str]]:
        """Real first frames (B, V, H, W, 3), states (B, S), orbit poses (camera variant,
        else None) and each episode's instruction (forced, or drawn from its seed as the
        simulator env draws it) from the simulator."""
        frames, states, orbits, texts = [], [], [], []
        for s, text in zip(seeds, instructions, strict=True):
            f = self.sim.reset(seed=int(s), instruction=text)
            frames.append(np.stack([f.cameras[c].rgb for c in self.generated]))
            states.append(f.state)
            orbits.append(getattr(self.sim.kind, "orbit", None))  # exact, float64
            texts.append(self.sim.instruction)
        return np.stack(frames), np.stack(states).astype(np.float32), orbits, texts

    def _forced_instructions(self, options: dict | None) -> list[str | None]:
        """``options["instruction"]``: one text for every sub-env, or one text (or None:
        drawn from the seed) per sub-env; checked against the task before anything resets."""
        forced = (options or {}).get("instruction")
        if forced is None:
            return [None] * self.num_envs
        if not self.instructed:
            raise ConfigError(
                "this world model reads no instruction: options['instruction'] is for "
                "instruction world models",
                field="instruction",
                found=forced,
            )
        texts = [forced] * self.num_envs if isinstance(forced, str) else list(forced)
        if len(texts) != self.num_envs:
            raise ConfigError(
                "one instruction per sub-env, or one text for all",
                field="instruction",
                expected=f"{self.num_envs} texts",
                found=len(texts),
            )
        for text in texts:
            if text is not None:
                self.sim.task.find_instruction(text)  # "did you mean …" for a typo
        return texts

    def _to_latent(self, frames: np.ndarray) -> torch.Tensor:
        """(B, V, H, W, 3) uint8 → (B, V, C, h, w): each view's first frame encoded alone."""
        b, v = frames.shape[:2]
        video = torch.from_numpy(frames.reshape(b * v, *frames.shape[2:]))
        video = video.permute(0, 3, 1, 2)[:, None].float() / 127.5 - 1  # (B·V, 1, 3, H, W)
        z = self.wm.tokenizer.encode(video.to(self.device))  # (B·V, 1, C, h, w)
        return z.reshape(b, v, *z.shape[2:])

    def _decode(self, z: torch.Tensor) -> np.ndarray:
        """The video frames of the next latent time step z (B, V, C, h, w), (B, V, c, H, W, 3)
        uint8 (one frame after reset). The stream decodes z alone, exactly as the whole
        history would decode, so a step costs the same late in an episode as early."""
        b, v = z.shape[:2]
        with self._precision.autocast():  # bf16 halves the decoder's time where it is faster
            video = self._stream.decode(z.reshape(b * v, 1, *z.shape[2:]))  # (B·V, c, 3, H, W)
        video = video.float()
        video = ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 1, 3, 4, 2)
        return video.reshape(b, v, *video.shape[1:]).cpu().numpy()

    def _observation(self, frames: np.ndarray, states: np.ndarray) -> dict[str, np.ndarray]:
        """(B, V, H, W, 3) frames of the generated views → the observed cameras (+ state)."""
        obs = {c: frames[:, self.generated.index(c)] for c in self.cameras}
        if self.include_state:
            obs["state"] = states.astype(np.float32)
        return obs

    def _instruction_info(self) -> dict[str, np.ndarray]:
        """``instruction`` (B,) str: each sub-env's episode instruction (instruction models)."""
        return {} if self._instructions is None else {"instruction": self._instructions.copy()}

    def _next_action(self, next_action: torch.Tensor | None) -> dict[str, np.ndarray]:
        """The model's next chunk in action units, in the env's layout (camera: the camera
        part only when the arm is the expert's)."""
        if next_action is None:
            return {}
        action = self.wm.action_stats.denormalize(next_action.cpu().numpy())
        return {"next_action": action[..., : self.single_action_space.shape[-1]]}

    # -- the Gymnasium API -----------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        super().reset(seed=seed if seed is None or isinstance(seed, int) else int(seed[0]))
        if seed is None:
            seeds = [int(s) for s in self.np_random.integers(0, 2**31, self.num_envs)]
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in seed]
        forced = self._forced_instructions(options)
        self._generator.manual_seed(int(seeds[0]))
        frames, states, orbits, texts = self._first_frames(seeds, forced)
        ids, self._instructions = None, None
        if self.instructed:  # the episode's words, as its training clips carried them
            ids = self.wm.model.hash_instructions(texts).to(self.device)  # (B, L) long
            self._instructions = np.array(texts)
        self._instruction_ids = ids  # the success head reads them too
        poses = None
        if self.camera_nav is not None:
            self.camera_nav.reset(orbits, seeds)
            poses = self.camera_nav.poses()
        with torch.no_grad():
            first = self._to_latent(frames)  # (B, V, C, h, w)
            self._stream = self.wm.tokenizer.stream()
            self._decode(first)  # the decoder's causal past: the first frame
            self._state = None
            if self.wm.model.has_state:  # the model steps the proprio state with each chunk
                norm = (states - self.wm.state_mean) / self.wm.state_std
                self._state = torch.from_numpy(norm.astype(np.float32)).to(self.device)
            next_action = self.rollout.start(first, self._state, self._sampler, poses, ids)
        self._t[:] = 0
        self._done[:] = False
        self._seeds = seeds
        self._state_now = states
        self._last = self._observation(frames, states)
        info = {"success_probability": np.zeros(self.num_envs, np.float32)}
        if self.camera_nav is not None:
            info["goal_distance"] = self.camera_nav.goal_distance(states)
        return self._last, info | self._instruction_info() | self._next_action(next_action)

    def step(self, actions):
        if self._stream is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_action(actions, self.action_space)
        if self._done.any():
            # Gymnasium's NEXT_STEP autoreset: finished sub-envs restart now. A world model
            # advances its whole batch together, so the batch restarts when all are done.
            if not self._done.all():
                raise gym.error.Error("sub-envs finish together in a world-model vector env")
            _, info = self.reset(seed=[s + 10_000 for s in self._seeds])
            zeros = np.zeros(self.num_envs, np.float32)
            flags = np.zeros(self.num_envs, bool)
            return self._last, zeros, flags, flags.copy(), info
        wm, nav, model = self.wm, self.camera_nav, self.wm.model
        # camera: the commanded cameras move, the arm's part joins (policy's or expert's)
        model_actions = actions if nav is None else nav.step(actions, self._state_now)
        chunk = torch.from_numpy(wm.action_stats.normalize(model_actions)).float().to(self.device)
        with torch.no_grad():  # the state is integrated over the episode: always fp32
            new_state = None if self._state is None else model.step_state(self._state, chunk)
            if new_state is not None and nav is not None:
                new_state = nav.exact_model_state(new_state, wm.state_mean, wm.state_std)
        poses = None if nav is None else nav.poses()
        z, next_action = self.rollout.step(chunk, new_state, self._sampler, poses)  # (B, V, …)
        with torch.no_grad():
            if new_state is None:  # success, reward and state read off the generated views
                state_n, prob, reward = (x.mean(1) for x in model.read(z))
            else:  # … or off the predicted proprio state
                state_n = new_state
                prob, reward = model.read_state(new_state, self._instruction_ids)
                self._state = new_state
            frames = self._decode(z)  # (B, V, c, H, W, 3)
        self._t += 1
        prob = prob.cpu().numpy()
        state = state_n.cpu().numpy() * wm.state_std + wm.state_mean
        if nav is not None:
            state = nav.exact_state(state)  # the commanded orbit, exact (not via normalising)
        self._state_now = state.astype(np.float32)
        success = prob > 0.5
        terminated = success & (self.sim.task.success.when == "any")
        truncated = (self._t >= self.max_steps) & ~terminated
        self._done = terminated | truncated
        self._last = self._observation(frames[:, :, -1], self._state_now)
        info: dict[str, Any] = {
            "frames": {c: frames[:, self.generated.index(c)] for c in self.cameras},
            "success_probability": prob.astype(np.float32),
            "is_success": success,
        }
        if nav is not None:
            info["goal_distance"] = nav.goal_distance(self._state_now)
        return (
            self._last,
            reward.cpu().numpy().astype(np.float64),
            terminated,
            truncated,
            info | self._instruction_info() | self._next_action(next_action),
        )

    def render(self):
        if self.render_mode != "rgb_array" or not self._last:
            return None
        return np.concatenate([self._last[c] for c in self.cameras], axis=2)

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
        """``options={"instruction": text}`` forces an instruction model's instruction."""
        super().reset(seed=seed)
        episode_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        obs, info = self.vec.reset(seed=[episode_seed], options=options)
        self._needs_reset = False
        return _first(obs), _first_info(info)

    def step(self, action):
        if self._needs_reset:
            raise gym.error.ResetNeeded("the episode has ended: call reset() before step()")
        obs, reward, terminated, truncated, info = self.vec.step(
            np.asarray(action, np.float32)[None]
        )
        self._needs_reset = bool(terminated[0] or truncated[0])
        return (
            _first(obs),
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            _first_info(info),
        )

    def render(self):
        frame = self.vec.render()
        return None if frame is None else frame[0]

    def close(self) -> None:
        self.vec.close()


def _first(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in obs.items()}


def _first_info(info: dict[str, Any]) -> dict[str, Any]:
    """Sub-env 0's info: per-env numbers as Python scalars, arrays and frames as they are."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key == "frames":
            out[key] = _first(value)
        elif np.ndim(value) == 1:
            out[key] = np.asarray(value)[0].item()  # float / bool
        else:
            out[key] = value[0]
    return out
