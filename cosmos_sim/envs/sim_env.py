"""The embedded simulator as a Gymnasium env: the ground truth the world-model envs imitate.

``gym.make("cosmos_sim/Reach-v0")`` / ``"cosmos_sim/Push-v0"`` (``CameraNav-v0`` is the
subclass in :mod:`cosmos_sim.envs.camera_nav_env`); ``ReachColor-v0`` and ``PushSide-v0``
are tasks with several instructions ("reach the red/blue target", "push the block to the
left/right"): each episode's instruction is drawn from the reset seed, or forced with
``reset(options={"instruction": text})``, and decides success. It is in ``info``, never
in the observation; the ``state`` holds every target / goal position. One env step takes an
**action chunk** of ``chunk`` per-frame actions (the tokenizer's temporal compression,
4 by default) and renders ``chunk`` frames, exactly as a world-model env step does, so
that a policy runs unchanged in either. Wrap a per-frame policy with
:class:`cosmos_sim.envs.wrappers.ChunkedAction`.

=================  ========================================  ======================
observation key    space                                      meaning
=================  ========================================  ======================
``<camera>``       Box(0, 255, (H, W, 3), uint8)              last frame of the chunk
``state``          Box(-inf, inf, (S,), float32)              proprio + task state
=================  ========================================  ======================

=================  ========================================  ======================
action             Box(low, high, (chunk, A), float32)        ``chunk`` actions, each
                                                               a normalised end-effector
                                                               velocity (task.toml)
=================  ========================================  ======================

Actions outside the space, of the wrong shape or non-finite raise ``ActionError``; a
step after the episode ended raises ``gymnasium.error.ResetNeeded``.

Reward: the sum over the chunk of the task's per-step reward (1 when the goal is
reached, minus the distance to it). ``terminated`` only for tasks whose success rule is
``when = "any"`` (success ends the episode); ``truncated`` at the task's episode length.
``info``: ``frames`` {camera: (chunk, H, W, 3) uint8} (every frame of the step),
``is_success`` (the episode instruction's success rule, as of now), ``goal_distance``,
``instruction`` (the episode's, also at reset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.envs.spaces import check_action, chunk_action_space, observation_space
from cosmos_sim.errors import ActionError


class SimEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "reach",
        *,
        cameras: Sequence[str] | str = ("front",),
        size: int = 64,
        chunk: int = 4,
        include_state: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if chunk < 1:
            raise ActionError("chunk must be >= 1", field="chunk", found=chunk)
        if render_mode not in (None, "rgb_array"):
            raise gym.error.Error(f"render_mode must be None or 'rgb_array', found {render_mode!r}")
        self.sim = MujocoSim(task, cameras=cameras, size=size, depth=False, segmentation=False)
        self.chunk = chunk
        self.include_state = include_state
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.sim.fps}
        space = self.sim.action_space
        self.action_space = chunk_action_space(space.low, space.high, chunk)
        state_dim = len(self.sim.state_names) if include_state else None
        self.observation_space = observation_space(
            self.sim.cameras, self.sim.height, self.sim.width, state_dim
        )
        self._last: dict[str, np.ndarray] = {}
        self._needs_reset = True

    @property
    def task(self):
        return self.sim.task

    def _observation(self, frame) -> dict[str, np.ndarray]:
        obs = {name: frame.cameras[name].rgb for name in self.sim.cameras}
        if self.include_state:
            obs["state"] = frame.state
        return obs

    def _info(self, frames: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        info = {
            "is_success": self.sim.success,
            "goal_distance": self.sim.goal_distance(),
            "instruction": self.sim.instruction,
        }
        if frames is not None:
            info["frames"] = frames
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``options={"instruction": text}`` forces one of the task's instructions."""
        super().reset(seed=seed)
        # A seed fixes the episode; without one, draw the next from the env's own RNG.
        episode_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        self.episode_seed = episode_seed  # subclasses seed their own parts with it
        instruction = (options or {}).get("instruction")
        frame = self.sim.reset(seed=episode_seed, instruction=instruction)
        self._last = self._observation(frame)
        self._needs_reset = False
        return self._last, self._info()

    def step(self, action):
        if self._needs_reset:
            raise gym.error.ResetNeeded("the episode has ended: call reset() before step()")
        action = check_action(action, self.action_space)
        reward, frames = 0.0, {name: [] for name in self.sim.cameras}
        for a in action:
            reward += self.sim.step(self._sim_action(a))
            frame = self.sim.observe()
            for name in self.sim.cameras:
                frames[name].append(frame.cameras[name].rgb)
            if self.sim.done:
                break
        self._last = self._observation(frame)
        terminated = self.task.success.when == "any" and self.sim.success
        truncated = self.sim.done and not terminated
        self._needs_reset = terminated or truncated
        stacked = {name: np.stack(f) for name, f in frames.items()}
        return self._last, float(reward), bool(terminated), bool(truncated), self._info(stacked)

    def _sim_action(self, action: np.ndarray) -> np.ndarray:
        """One env action (A,) → the simulator's action (identity here; CameraNavEnv adds the arm's)."""
        return action

    def render(self):
        if self.render_mode != "rgb_array" or not self._last:
            return None
        return np.concatenate([self._last[name] for name in self.sim.cameras], axis=1)

    def close(self) -> None:
        self.sim.close()
