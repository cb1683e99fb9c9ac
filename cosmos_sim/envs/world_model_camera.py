"""CameraNav-v0's camera and arm inside WorldModel-v0, for camera-control world models.

A camera-control model (``variant = "camera"``, trained on a cameranav store) imitates
:class:`~cosmos_sim.envs.camera_nav_env.CameraNavEnv`: the same ``arm`` / ``arm_skill``
kwargs and spaces. Per env step and sub-env:

* the camera is **commanded, not predicted**: its orbit state steps once per frame with
  :meth:`~cosmos_sim.bridge.camera_motion.CameraMotion.step` from the camera part of the
  chunk, exactly as in the simulator. The pose at the chunk's last frame gives the new
  latent frame's Plücker rays, and the exact orbit state overwrites the ``orbit.*``
  entries of the model's state;
* the arm's actions come from the policy (``arm="policy"``, action (chunk, 5)) or from the
  task's scripted arm expert at ``arm_skill`` (``arm="expert"``, action (chunk, 3)), seeded
  with the episode seed as in CameraNav-v0. The expert plans the whole chunk from the
  model's state at its start — the block taken as still, its own end effector moving by
  each commanded velocity (as :class:`~cosmos_sim.evaluation.policies.ExpertPolicy`) —
  where the simulator's expert sees every frame;
* ``goal_distance`` is the angle (rad) between the exact camera's optical axis and the
  model's predicted ``camera_target.xyz``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from cosmos_sim.bridge.camera_motion import CAMERA_DIM, ORBIT_STATE_NAMES, OrbitState
from cosmos_sim.bridge.experts import CameraNavKind, ScriptedPolicy
from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.envs.camera_nav_env import ARM_MODES
from cosmos_sim.envs.spaces import chunk_action_space
from cosmos_sim.errors import ConfigError, ModelError
from cosmos_sim.evaluation.policies import privileged_from_state


class CameraNavControl:
    """The commanded orbit camera and the arm of ``num_envs`` CameraNav episodes."""

    def __init__(
        self,
        sim: MujocoSim,
        chunk: int,
        num_envs: int,
        arm: str = "expert",
        arm_skill: float = 1.0,
    ) -> None:
        kind = sim.kind
        if not isinstance(kind, CameraNavKind):
            raise ModelError(
                "a camera-control world model is driven as CameraNav-v0: its task must be a "
                "camera-nav task",
                field="task",
                expected="cameranav",
                found=sim.task.name,
            )
        if arm not in ARM_MODES:
            raise ConfigError("unknown arm mode", field="arm", expected=ARM_MODES, found=arm)
        self.motion, self.camera, self.chunk = kind.motion, kind.motion.camera, chunk
        self.state_names = tuple(sim.state_names)
        self.orbit_index = [self.state_names.index(n) for n in ORBIT_STATE_NAMES]
        self.target_index = [self.state_names.index(f"camera_target.{c}") for c in "xyz"]
        self.step_length = sim.task.max_speed / sim.task.fps  # m of end-effector travel per frame
        self.experts = []
        space = sim.action_space
        low, high = space.low, space.high
        if arm == "expert":
            self.experts = [
                ScriptedPolicy(kind.arm, kind.arm_action, skill=arm_skill) for _ in range(num_envs)
            ]
            low, high = low[:CAMERA_DIM], high[:CAMERA_DIM]
        self.action_space = chunk_action_space(low, high, chunk)
        self.orbits: list[OrbitState] = []

    def reset(self, orbits: Sequence[OrbitState], seeds: Sequence[int]) -> None:
        """Each episode's start pose (the simulator's, exact) and its arm expert's seed."""
        self.orbits = list(orbits)
        if self.experts:  # none when the policy drives the arm
            for expert, seed in zip(self.experts, seeds, strict=True):
                expert.reset(seed)

    def step(self, actions: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Move every camera by the (B, c, 3 | 5) env actions; the full (B, c, 5) chunk.

        ``states`` (B, S): each sub-env's state at the chunk's start, in state units.
        """
        camera = actions[..., :CAMERA_DIM]
        arm = self._arm_actions(states) if self.experts else actions[..., CAMERA_DIM:]
        for i, chunk in enumerate(camera):
            for action in chunk:
                self.orbits[i] = self.motion.step(self.orbits[i], action)
        return np.concatenate([camera, arm], -1).astype(np.float32)

    def _arm_actions(self, states: np.ndarray) -> np.ndarray:
        """(B, c, A_arm): the arm expert's chunk, planned from each state (open loop)."""
        out = []
        for expert, state in zip(self.experts, states, strict=True):
            points = privileged_from_state(state, self.state_names)
            actions = []
            for _ in range(self.chunk):
                actions.append(expert(points))
                points["ee"] = points["ee"] + actions[-1] * self.step_length
            out.append(np.stack(actions))
        return np.stack(out).astype(np.float32)

    def orbit_array(self) -> np.ndarray:
        """(B, 3) float64 azimuth (deg), elevation (deg), distance (m) now."""
        return np.stack([o.as_array() for o in self.orbits])

    def poses(self) -> Tensor:
        """(B, 4, 4) float64 OpenCV ``world_from_camera`` of every camera now."""
        return torch.from_numpy(np.stack([self.motion.pose(o) for o in self.orbits]))

    def exact_state(self, state: np.ndarray) -> np.ndarray:
        """(B, S) state in state units with its ``orbit.*`` entries the commanded ones."""
        state = np.array(state, np.float32)
        state[:, self.orbit_index] = self.orbit_array()
        return state

    def exact_model_state(self, state: Tensor, mean: np.ndarray, std: np.ndarray) -> Tensor:
        """(B, S) normalised model state with its ``orbit.*`` entries the commanded ones."""
        idx = self.orbit_index
        orbit = (self.orbit_array() - mean[idx]) / std[idx]
        state = state.clone()
        state[:, idx] = torch.from_numpy(orbit).to(state)
        return state

    def goal_distance(self, state: np.ndarray) -> np.ndarray:
        """(B,) float32 angle (rad) between each camera's axis and the state's camera target."""
        out = []
        for orbit, s in zip(self.orbits, state, strict=True):
            pose = self.motion.pose(orbit)
            target = np.asarray(s[self.target_index], np.float64)
            x, y, z = pose[:3, :3].T @ (target - pose[:3, 3])  # OpenCV camera frame
            out.append(np.arctan2(np.hypot(x, y), z))
        return np.asarray(out, np.float32)
