"""Camera actions for the orbit camera: the pose they drive, a smooth random process, an expert.

A camera action moves the ``orbit`` camera on a sphere around a fixed **pivot** (MuJoCo
free-camera angles, as in :func:`cosmos_sim.conditioning.cameras.orbit_pose`)::

    action = (cam_yaw, cam_pitch, cam_dolly) ∈ [-1, 1]³, one per control step
    azimuth   += cam_yaw   · yaw_rate     (deg; > 0 orbits counter-clockwise seen from above)
    elevation += cam_pitch · pitch_rate   (deg; clamped; > 0 tilts the view up, camera lowers)
    distance  -= cam_dolly · dolly_rate   (m;   clamped; > 0 dollies in, towards the pivot)

Rates, clamps and start ranges come from task.toml ``[camera]``; the clamps keep the
table in view. The pivot sits *below* the table top on purpose: every table point
then lies on the optical axis of exactly one (azimuth, elevation) pair, so "bring
the object to the image centre" is well posed (yaw aligns the azimuth, pitch the
elevation) and dolly changes only the object's apparent size.

* :class:`SmoothRandomCamera` — the recording's camera: an Ornstein–Uhlenbeck process
  per action dimension (correlation time ``noise_tau`` s, stationary std
  ``noise_sigma``), seeded, reflected off the clamps so the camera keeps moving.
* :class:`CameraExpert` — closes the angle from the pose to the centring pose;
  degrade it with :class:`~cosmos_sim.bridge.experts.ScriptedPolicy`'s ``skill``.
  Measured on cameranav (per-frame, arm expert at skill 1), 40 episodes per skill
  (seeds 1000-1039): success 1.00, 0.82, 0.47, 0.07, 0.00 at skill 1, 0.75, 0.5, 0.25, 0.
* :class:`CameraNavPolicy` — a camera part and an arm part joined into the recorded
  action ``[cam_yaw, cam_pitch, cam_dolly, *arm action]``.

This module knows nothing of MuJoCo: :class:`~cosmos_sim.bridge.experts.CameraNavKind`
applies the pose with ``MujocoSim.set_camera_pose`` (the general form of ``set_orbit``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cosmos_sim.bridge.tasks import Task
from cosmos_sim.conditioning.cameras import orbit_pose
from cosmos_sim.errors import TaskError

CAMERA_ACTION_NAMES = ("cam_yaw", "cam_pitch", "cam_dolly")
CAMERA_DIM = len(CAMERA_ACTION_NAMES)
ORBIT_STATE_NAMES = ("orbit.azimuth", "orbit.elevation", "orbit.distance")


def split_action(action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A camera-nav action (..., 3 + A_arm) → (camera part (..., 3), arm part (..., A_arm))."""
    action = np.asarray(action)
    return action[..., :CAMERA_DIM], action[..., CAMERA_DIM:]


def wrap_degrees(angle: float) -> float:
    """Angle in degrees → [-180, 180)."""
    return float((angle + 180.0) % 360.0 - 180.0)


@dataclass(frozen=True)
class OrbitState:
    azimuth: float  # degrees, in [-180, 180)
    elevation: float  # degrees, negative = looking down
    distance: float  # metres from the pivot

    def as_array(self) -> np.ndarray:
        return np.array([self.azimuth, self.elevation, self.distance], np.float64)


@dataclass(frozen=True)
class CameraMotion:
    """task.toml ``[camera]``: which camera moves, how fast, within which limits."""

    camera: str = "orbit"
    pivot: tuple[float, float, float] = (0.0, 0.0, -0.2)
    yaw_rate: float = 8.0  # deg per step at |cam_yaw| = 1
    pitch_rate: float = 4.0  # deg per step at |cam_pitch| = 1
    dolly_rate: float = 0.04  # m per step at |cam_dolly| = 1
    elevation: tuple[float, float] = (-75.0, -30.0)  # clamp (deg)
    distance: tuple[float, float] = (0.8, 1.6)  # clamp (m)
    start_elevation: tuple[float, float] = (-70.0, -35.0)
    start_distance: tuple[float, float] = (0.9, 1.5)
    noise_tau: float = 1.0  # s: correlation time of the random camera actions
    noise_sigma: float = 0.5  # their stationary std (normalised units)
    expert_gain: float = 0.5  # share of the remaining angle error the expert closes per step
    expert_distance: float = 1.2  # m: the distance the expert dollies to

    def step(self, state: OrbitState, action: np.ndarray) -> OrbitState:
        """The pose after one camera action (3,), clamped (see the module docstring)."""
        yaw, pitch, dolly = (float(a) for a in np.clip(action, -1.0, 1.0))
        return OrbitState(
            azimuth=wrap_degrees(state.azimuth + yaw * self.yaw_rate),
            elevation=float(np.clip(state.elevation + pitch * self.pitch_rate, *self.elevation)),
            distance=float(np.clip(state.distance - dolly * self.dolly_rate, *self.distance)),
        )

    def pose(self, state: OrbitState) -> np.ndarray:
        """(4, 4) OpenCV ``world_from_camera`` of an orbit state."""
        return orbit_pose(state.azimuth, state.elevation, state.distance, self.pivot)

    def sample_start(self, rng: np.random.Generator) -> OrbitState:
        return OrbitState(
            azimuth=wrap_degrees(rng.uniform(-180.0, 180.0)),
            elevation=float(rng.uniform(*self.start_elevation)),
            distance=float(rng.uniform(*self.start_distance)),
        )

    def centring_state(self, target: np.ndarray, distance: float) -> OrbitState:
        """The orbit pose (at ``distance``) whose optical axis passes through ``target`` (3,)."""
        forward = np.asarray(self.pivot, np.float64) - np.asarray(target, np.float64)
        azimuth = np.degrees(np.arctan2(forward[1], forward[0]))
        elevation = np.degrees(np.arctan2(forward[2], np.linalg.norm(forward[:2])))
        return OrbitState(
            wrap_degrees(azimuth),
            float(np.clip(elevation, *self.elevation)),
            float(np.clip(distance, *self.distance)),
        )

    @classmethod
    def from_task(cls, task: Task) -> CameraMotion:
        """Read and validate ``[camera]`` (missing fields take the defaults above)."""
        table, path = dict(task.camera), task.toml_path
        table.pop("arm", None)  # read by CameraNavKind
        known = set(cls.__dataclass_fields__)
        for key in table:
            if key not in known:
                raise TaskError(
                    "unknown field", path=path, field=f"camera.{key}", expected=sorted(known)
                )
        values = {}
        for key, value in table.items():
            default = cls.__dataclass_fields__[key].default
            name = f"camera.{key}"
            if isinstance(default, str):
                if not isinstance(value, str):
                    raise TaskError("wrong type", path=path, field=name, expected="a string")
            elif isinstance(default, tuple):
                ok = isinstance(value, list) and len(value) == len(default)
                ok = ok and all(_is_number(v) for v in value)
                if not ok:
                    raise TaskError(
                        "wrong value",
                        path=path,
                        field=name,
                        expected=f"a list of {len(default)} numbers",
                        found=value,
                    )
                value = tuple(float(v) for v in value)
            elif not _is_number(value) or not value > 0:
                raise TaskError(
                    "wrong value", path=path, field=name, expected="a positive number", found=value
                )
            values[key] = value
        motion = cls(**values)
        motion._check(path)
        return motion

    def _check(self, path) -> None:
        for name in ("elevation", "start_elevation"):
            lo, hi = getattr(self, name)
            if not -90.0 < lo <= hi < 90.0:
                raise TaskError(
                    "wrong value",
                    path=path,
                    field=f"camera.{name}",
                    expected="[low, high] with -90 < low <= high < 90 (degrees)",
                    found=[lo, hi],
                )
        for name in ("distance", "start_distance"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise TaskError(
                    "wrong value",
                    path=path,
                    field=f"camera.{name}",
                    expected="[low, high] with 0 < low <= high (m)",
                    found=[lo, hi],
                )
        for name, inner, outer in (
            ("start_elevation", self.start_elevation, self.elevation),
            ("start_distance", self.start_distance, self.distance),
        ):
            if not outer[0] <= inner[0] <= inner[1] <= outer[1]:
                raise TaskError(
                    "start range outside the clamp range",
                    path=path,
                    field=f"camera.{name}",
                    expected=f"within {list(outer)}",
                    found=list(inner),
                )


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------- camera policies


class SmoothRandomCamera:
    """Seeded Ornstein–Uhlenbeck camera actions, reflected off the clamps. ``policy(obs) -> (3,)``.

    ``a_{t+1} = ρ a_t + σ √(1 - ρ²) ε_t`` with ``ρ = exp(-1 / (fps · τ))``, so each dimension
    is stationary N(0, σ²) with correlation time τ; values are clipped to [-1, 1]. When a
    step would push the pose into a clamp, that dimension's process flips sign.
    """

    def __init__(self, motion: CameraMotion, fps: float, seed: int | None = 0) -> None:
        self.motion = motion
        self.rho = float(np.exp(-1.0 / (fps * motion.noise_tau)))
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.value = self.rng.normal(0.0, self.motion.noise_sigma, CAMERA_DIM)

    def __call__(self, obs: dict) -> np.ndarray:
        sigma, rho = self.motion.noise_sigma, self.rho
        self.value = rho * self.value + sigma * np.sqrt(1.0 - rho**2) * self.rng.normal(
            size=CAMERA_DIM
        )
        if "orbit" in obs:
            m = self.motion
            elevation, distance = obs["orbit"][1], obs["orbit"][2]
            after = m.step(OrbitState(0.0, elevation, distance), self.value)
            # Reflect: a push into a clamp turns into a push away from it.
            if (after.elevation <= m.elevation[0] and self.value[1] < 0) or (
                after.elevation >= m.elevation[1] and self.value[1] > 0
            ):
                self.value[1] = -self.value[1]
            if (after.distance <= m.distance[0] and self.value[2] > 0) or (
                after.distance >= m.distance[1] and self.value[2] < 0
            ):
                self.value[2] = -self.value[2]
        return np.clip(self.value, -1.0, 1.0).astype(np.float32)


class CameraExpert:
    """Proportional control towards the centring pose of ``obs["camera_target"]``.

    Duck-types a task kind (``expert(obs)``) so that :class:`ScriptedPolicy` degrades it
    with the same ``skill`` schedule as the arm experts.
    """

    def __init__(self, motion: CameraMotion) -> None:
        self.motion = motion

    def expert(self, obs: dict) -> np.ndarray:
        m = self.motion
        az, el, dist = (float(v) for v in obs["orbit"])
        goal = m.centring_state(obs["camera_target"], m.expert_distance)
        error = np.array(
            [
                wrap_degrees(goal.azimuth - az) / m.yaw_rate,
                (goal.elevation - el) / m.pitch_rate,
                (dist - goal.distance) / m.dolly_rate,
            ]
        )
        return np.clip(m.expert_gain * error, -1.0, 1.0).astype(np.float32)


class CameraNavPolicy:
    """``[camera(obs), arm(obs)]``: the recorded camera-nav action (camera part first)."""

    def __init__(self, camera: Callable[[dict], np.ndarray], arm: Callable[[dict], np.ndarray]):
        self.camera, self.arm = camera, arm

    def reset(self, seed: int | None = None) -> None:
        # Independent streams: the arm sees the episode seed as it would in its own task.
        camera_seed = None if seed is None else [seed, 1]
        for part, part_seed in ((self.camera, camera_seed), (self.arm, seed)):
            if hasattr(part, "reset"):
                part.reset(part_seed)

    def __call__(self, obs: dict) -> np.ndarray:
        camera = np.asarray(self.camera(obs), np.float32)
        return np.concatenate([camera, np.asarray(self.arm(obs), np.float32)])
