"""Wrappers shared by the simulator and world-model envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ChunkedAction(gym.ActionWrapper):
    """Let a per-frame policy drive a chunked env: one action, repeated for the whole chunk.

    The wrapped env's action space is ``(chunk, A)``; this wrapper's is ``(A,)``.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.action_space
        assert isinstance(space, gym.spaces.Box) and len(space.shape) == 2, space
        self.chunk = space.shape[0]
        self.action_space = gym.spaces.Box(space.low[0], space.high[0], dtype=space.dtype)

    def action(self, action):
        return np.repeat(np.asarray(action, dtype=np.float32)[None], self.chunk, axis=0)
