"""Record any Gymnasium env made with ``render_mode="rgb_array"``.

One camera, ``render``, with the env's RGB frames resized to the requested size; its
intrinsics and pose are unknown (NaN), and there is no depth or segmentation. The
observation is flattened into ``state``; Box actions are stored as they are, Discrete
actions as one float (the action index). The policy is the env's own seeded random
sampler unless one is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from dataclasses import dataclass

import cv2
import gymnasium as gym
import numpy as np

from cosmos_sim.bridge.record import Outcome
from cosmos_sim.data.episode import CameraFrame, Frame
from cosmos_sim.data.store import CameraSpec, StoreSpec
from cosmos_sim.errors import ConfigError

CAMERA = "render"
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame-rendered envs: no display needed


@dataclass
class GymRenderConfig:
    env_id: str
    size: int = 64
    max_steps: int = 200

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError(
                "image size too small", field="size", expected=">= 8", found=self.size
            )
        if self.max_steps < 1:
            raise ConfigError("need at least one step", field="max_steps", found=self.max_steps)


def _action_bounds(space: gym.Space) -> tuple[list[float], list[float]]:
    if isinstance(space, gym.spaces.Box):
        low = np.broadcast_to(space.low, space.shape).reshape(-1)
        high = np.broadcast_to(space.high, space.shape).reshape(-1)
        return low.astype(float).tolist(), high.astype(float).tolist()
    if isinstance(space, gym.spaces.Discrete):
        return [float(space.start)], [float(space.start + space.n - 1)]
    raise ConfigError(
        "only Box and Discrete action spaces can be recorded",
        field="action_space",
        found=type(space).__name__,
    )


class GymRenderSource:
    """An EpisodeSource over a Gymnasium env (see :mod:`cosmos_sim.bridge.record`)."""

    def __init__(
        self,
        config: GymRenderConfig,
        policy: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.config = config
        try:
            self.env = gym.make(
                config.env_id, render_mode="rgb_array", max_episode_steps=config.max_steps
            )
        except gym.error.Error as e:
            raise ConfigError(
                f"cannot make the Gymnasium env ({e})", field="env", found=config.env_id
            ) from e
        self.policy = policy
        self._low, self._high = _action_bounds(self.env.action_space)
        self._state_dim = int(gym.spaces.flatdim(self.env.observation_space))

    def store_spec(self) -> StoreSpec:
        return StoreSpec(
            fps=float(self.env.metadata.get("render_fps") or 30),
            action_low=self._low,
            action_high=self._high,
            cameras={
                CAMERA: CameraSpec(
                    self.config.size, self.config.size, depth=False, segmentation=False
                )
            },
            state_dim=self._state_dim,
            source=f"gymnasium:{self.config.env_id}",
        )

    def _image(self) -> np.ndarray:
        try:
            rgb = np.asarray(self.env.render())[..., :3]
        except gym.error.Error as e:
            raise ConfigError(
                f"the env cannot render ({e})", field="env", found=self.config.env_id
            ) from e
        s = self.config.size
        return cv2.resize(rgb, (s, s), interpolation=cv2.INTER_AREA)

    def episode(self, seed: int) -> Generator[Frame, None, Outcome]:
        obs, info = self.env.reset(seed=seed)
        self.env.action_space.seed(seed)
        success = False
        while True:
            image = self._image()
            action = self.policy(obs) if self.policy else self.env.action_space.sample()
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            yield Frame(
                cameras={CAMERA: CameraFrame(rgb=image)},
                action=np.asarray(action, dtype=np.float32).reshape(-1),
                state=gym.spaces.flatten(self.env.observation_space, obs).astype(np.float32),
                reward=float(reward),
            )
            success = bool(info.get("is_success", info.get("success", False)))
            obs = next_obs
            if terminated or truncated:
                return Outcome(success=success)

    def close(self) -> None:
        self.env.close()
