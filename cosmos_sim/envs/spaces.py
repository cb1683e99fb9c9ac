"""The spaces every cosmos_sim env shares, built and checked in one place, so the
simulator and the world-model envs cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from cosmos_sim.errors import ActionError


def chunk_action_space(low: np.ndarray, high: np.ndarray, chunk: int) -> gym.spaces.Box:
    """Box of shape (chunk, A): one env step takes `chunk` per-frame actions."""
    return gym.spaces.Box(np.tile(low, (chunk, 1)), np.tile(high, (chunk, 1)), dtype=np.float32)


def observation_space(
    cameras: Sequence[str], height: int, width: int, state_dim: int | None
) -> gym.spaces.Dict:
    """One uint8 image per camera, plus the state vector unless `state_dim` is None."""
    obs = {name: gym.spaces.Box(0, 255, (height, width, 3), dtype=np.uint8) for name in cameras}
    if state_dim is not None:
        obs["state"] = gym.spaces.Box(-np.inf, np.inf, (state_dim,), dtype=np.float32)
    return gym.spaces.Dict(obs)


def check_action(action, space: gym.spaces.Box) -> np.ndarray:
    """The action as float32, or an ActionError: wrong shape, non-finite, outside the space."""
    action = np.asarray(action, dtype=np.float32)
    if action.shape != space.shape:
        raise ActionError(
            "wrong action chunk shape", field="action", expected=space.shape, found=action.shape
        )
    if not np.isfinite(action).all():
        raise ActionError("non-finite action", field="action", found="NaN/inf")
    low, high = np.broadcast_to(space.low, space.shape), np.broadcast_to(space.high, space.shape)
    if (action < low - 1e-6).any() or (action > high + 1e-6).any():
        raise ActionError(
            "action outside the action space",
            field="action",
            expected=f"within [{low.min():g}, {high.max():g}]",
            found=f"[{action.min():.3f}, {action.max():.3f}]",
        )
    return action
