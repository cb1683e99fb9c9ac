"""Task kinds (reset sampler, task state, scripted expert) and the skill-graded policy.

A task.toml's ``kind`` picks one :class:`TaskKind`; its ``[reset]`` and ``[expert]``
tables parametrise it. :class:`ScriptedPolicy` degrades the expert with a ``skill``
knob so one command yields a family of policies of graded success rate::

    lapse = 1 - skill
    with probability lapse²             a uniform random action, held for 1-3 steps
    with probability lapse·(1 - lapse)  hesitate: a zero action, held for 1-2 steps
    otherwise                           the expert's action + N(0, (NOISE · lapse)²), clipped

so skill 0 is a uniform random policy and skill 1 the noiseless expert. Measured
success over 40 episodes (seeds 1000-1039) at skill 1, 0.75, 0.5, 0.25, 0:
reach 1.00, 0.88, 0.33, 0.05, 0.00; push 1.00, 0.93, 0.43, 0.05, 0.00;
reach-color 1.00, 0.90, 0.40, 0.05, 0.00; push-side 1.00, 0.95, 0.45, 0.03, 0.00.

A task with several instructions (``[[instructions]]``) has several targets or goals
in its scene; the episode's instruction picks the one that counts (``sim.rule``), and
:meth:`TaskKind.points` hands the expert that one under the kind's usual name
(``target``, ``goal``), so every expert follows the instruction unchanged.

:class:`CameraNavKind` wraps an arm kind and adds camera actions (see
:mod:`cosmos_sim.bridge.camera_motion`); its camera expert is graded the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mujoco
import numpy as np

from cosmos_sim.bridge.camera_motion import (
    CAMERA_ACTION_NAMES,
    CAMERA_DIM,
    ORBIT_STATE_NAMES,
    CameraExpert,
    CameraMotion,
    CameraNavPolicy,
    OrbitState,
    SmoothRandomCamera,
)
from cosmos_sim.bridge.tasks import ActionSpec, Task
from cosmos_sim.errors import ConfigError, TaskError

if TYPE_CHECKING:
    from cosmos_sim.bridge.mujoco_sim import MujocoSim

NOISE = 0.6  # expert action noise std at skill 0 (in normalised action units)


def _unit_speed(velocity: np.ndarray, max_speed: float) -> np.ndarray:
    """Velocity (m/s) → normalised action, keeping its direction when it saturates."""
    action = np.asarray(velocity, dtype=np.float64) / max_speed
    norm = np.linalg.norm(action)
    return (action / norm if norm > 1.0 else action).astype(np.float32)


def _number(task: Task, section: str, key: str, default: float | None = None) -> float:
    """A positive number from task.toml [section] key, or a TaskError naming the field."""
    table = getattr(task, section)
    value = table.get(key, default)
    if value is None:
        raise TaskError(
            "missing field", path=task.toml_path, field=f"{section}.{key}", expected="a number"
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise TaskError(
            "wrong value",
            path=task.toml_path,
            field=f"{section}.{key}",
            expected="a positive number",
            found=value,
        )
    return float(value)


def _range(task: Task, section: str, key: str, default: list | None = None) -> tuple[float, float]:
    """A [low, high] pair from task.toml [section] key, 0 <= low <= high."""
    value = getattr(task, section).get(key, default)
    if value is None:
        raise TaskError(
            "missing field", path=task.toml_path, field=f"{section}.{key}", expected="[low, high]"
        )
    ok = isinstance(value, list) and len(value) == 2
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not ok or not 0 <= value[0] <= value[1]:
        raise TaskError(
            "wrong value",
            path=task.toml_path,
            field=f"{section}.{key}",
            expected="[low, high] with 0 <= low <= high",
            found=value,
        )
    return float(value[0]), float(value[1])


def _names(task: Task, section: str, key: str, default: list[str]) -> tuple[str, ...]:
    """A non-empty list of distinct names from task.toml [section] key."""
    value = getattr(task, section).get(key, default)
    ok = isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)
    if not ok or len(set(value)) != len(value):
        raise TaskError(
            "wrong value",
            path=task.toml_path,
            field=f"{section}.{key}",
            expected="a non-empty list of distinct body names",
            found=value,
        )
    return tuple(value)


def _angles(task: Task, key: str, count: int) -> tuple[float, ...] | None:
    """Optional task.toml [reset] key: one angle (degrees) per goal, or None when absent."""
    value = task.reset.get(key)
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == count
    if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise TaskError(
            "wrong value",
            path=task.toml_path,
            field=f"reset.{key}",
            expected=f"{count} numbers (degrees), one per goal",
            found=value,
        )
    return tuple(float(v) for v in value)


class TaskKind:
    """Everything task-specific: scene checks, reset sampling, task state and the expert."""

    state_names: tuple[str, ...] = ()
    required_bodies: tuple[str, ...] = ()
    site_roles: tuple[str, ...] = ("point", "region")  # rule fields that name scene sites

    def __init__(self, task: Task) -> None:
        self.task = task
        self.elbow = _range(task, "reset", "elbow", [0.6, 2.2])

    def check_scene(self, sim: MujocoSim) -> None:
        """Every required body, and a site of the same name (what :meth:`points` reads)."""
        for name in self.required_bodies:
            for obj in (mujoco.mjtObj.mjOBJ_BODY, mujoco.mjtObj.mjOBJ_SITE):
                if mujoco.mj_name2id(sim.model, obj, name) < 0:
                    kind = obj.name[6:].lower()
                    raise TaskError(
                        f"scene has no {kind} named '{name}'", path=self.task.scene_path, field=name
                    )

    def reset(self, sim: MujocoSim, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def state(self, sim: MujocoSim) -> np.ndarray:
        raise NotImplementedError

    def points(self, sim: MujocoSim) -> dict[str, np.ndarray]:
        """Privileged world positions the expert steers by (besides ``ee``)."""
        return {name: sim.data.site(name).xpos.copy() for name in self.required_bodies}

    def expert(self, obs: dict) -> np.ndarray:
        raise NotImplementedError

    # Hooks with the plain-arm behaviour; CameraNavKind overrides them.

    def goal_distance(self, sim: MujocoSim) -> float:
        """Distance (m) from the episode rule's site ``point`` to site ``region`` on its axes."""
        rule = sim.rule
        delta = sim.data.site(rule.point).xpos - sim.data.site(rule.region).xpos
        return float(np.linalg.norm(delta[: len(rule.axes)]))

    def apply_action(self, sim: MujocoSim, action: np.ndarray) -> np.ndarray:
        """Apply any non-arm action parts; return the arm's end-effector velocity action."""
        return action

    def policy(self, skill: float, seed: int = 0):
        """The scripted policy ``make_expert`` returns: this expert degraded by ``skill``."""
        return ScriptedPolicy(self, self.task.action, skill=skill, seed=seed)

    def _random_arm(self, sim: MujocoSim, rng: np.random.Generator) -> np.ndarray:
        """Random arm pose (elbow bent either way); returns the end effector's xy."""
        shoulder = rng.uniform(-np.pi, np.pi)
        elbow = rng.choice([-1.0, 1.0]) * rng.uniform(*self.elbow)
        sim.data.qpos[sim._arm_qpos] = shoulder, elbow
        mujoco.mj_kinematics(sim.model, sim.data)
        return sim.data.site("ee").xpos[:2].copy()


def _instructed(sim: MujocoSim, candidates: tuple[str, ...]) -> str:
    """The candidate the episode's rule names as its region; the first one when it names none
    (an arm kind inside cameranav, whose region is the camera)."""
    region = sim.rule.region
    return region if region in candidates else candidates[0]


def _polar(rng: np.random.Generator, radius_range) -> np.ndarray:
    r, a = rng.uniform(*radius_range), rng.uniform(-np.pi, np.pi)
    return np.array([r * np.cos(a), r * np.sin(a)])


class ReachKind(TaskKind):
    """The end effector onto a target: mocap bodies ``[reset] targets`` (default ``["target"]``).

    Each target body carries a site of its name; reset places every target at random
    (``min_target_separation`` apart, each ``min_start_distance`` from the end effector);
    the episode rule's region says which one counts. State: ``<target>.x, <target>.y``
    for every target, in ``targets`` order.
    """

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        self.targets = _names(task, "reset", "targets", ["target"])
        self.required_bodies = self.targets
        self.state_names = tuple(f"{t}.{axis}" for t in self.targets for axis in "xy")
        self.target_radius = _range(task, "reset", "target_radius")
        self.min_start = _number(task, "reset", "min_start_distance", 0.15)
        self.min_separation = _number(task, "reset", "min_target_separation", 0.15)
        self.gain = _number(task, "expert", "gain", 6.0)

    def reset(self, sim: MujocoSim, rng: np.random.Generator) -> None:
        for _ in range(1000):
            ee = self._random_arm(sim, rng)
            targets = [_polar(rng, self.target_radius) for _ in self.targets]
            far = all(np.linalg.norm(ee - t) >= self.min_start for t in targets)
            apart = all(
                np.linalg.norm(a - b) >= self.min_separation
                for i, a in enumerate(targets)
                for b in targets[i + 1 :]
            )
            if far and apart:
                break
        for name, target in zip(self.targets, targets, strict=True):
            body = sim.model.body(name)
            sim.data.mocap_pos[body.mocapid[0]] = [*target, body.pos[2]]

    def state(self, sim: MujocoSim) -> np.ndarray:
        return np.concatenate([sim.data.site(t).xpos[:2] for t in self.targets])

    def points(self, sim: MujocoSim) -> dict[str, np.ndarray]:
        """Every target by name, and the instructed one as ``target``."""
        target = _instructed(sim, self.targets)
        return {**super().points(sim), "target": sim.data.site(target).xpos.copy()}

    def expert(self, obs: dict) -> np.ndarray:
        """Proportional control of the end effector towards the target."""
        return _unit_speed(self.gain * (obs["target"][:2] - obs["ee"][:2]), self.task.max_speed)


class PushKind(TaskKind):
    """The finger pushes the block onto a goal patch: mocap bodies ``[reset] goals`` (default ``["goal"]``).

    Reset places the block, then each goal ``push_distance`` from it: in a uniform
    direction, or, with ``goal_angles``, in that goal's direction (degrees, 0 = +x, 90 =
    +y) ± ``angle_jitter``; every push path keeps ``min_clearance`` from the arm base. The
    episode rule's region says which goal counts. State: ``block.x, block.y, block.yaw``,
    then ``<goal>.x, <goal>.y`` for every goal, in ``goals`` order.
    """

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        self.goals = _names(task, "reset", "goals", ["goal"])
        self.required_bodies = ("block", *self.goals)
        self.state_names = ("block.x", "block.y", "block.yaw") + tuple(
            f"{g}.{axis}" for g in self.goals for axis in "xy"
        )
        self.goal_angles = _angles(task, "goal_angles", len(self.goals))
        jitter = _number(task, "reset", "angle_jitter") if "angle_jitter" in task.reset else 0.0
        self.angle_jitter = np.deg2rad(jitter)  # ± around each goal angle
        self.block_radius = _range(task, "reset", "block_radius")
        self.goal_radius = _range(task, "reset", "goal_radius")
        self.push_distance = _range(task, "reset", "push_distance")
        self.min_clearance = _number(task, "reset", "min_clearance", 0.15)
        self.contact = _number(task, "expert", "block_half") + _number(
            task, "expert", "finger_radius"
        )
        self.push_speed = _number(task, "expert", "push_speed", 0.5)
        self.circle = _number(task, "expert", "circle_radius", 0.11)

    def reset(self, sim: MujocoSim, rng: np.random.Generator) -> None:
        lo, hi = self.goal_radius
        for _ in range(1000):
            block = _polar(rng, self.block_radius)
            goals = [block + self._push(rng, i) for i in range(len(self.goals))]
            if all(
                lo <= np.linalg.norm(goal) <= hi
                and _segment_distance(block, goal) >= self.min_clearance
                for goal in goals
            ):
                break
        for _ in range(1000):
            if np.linalg.norm(self._random_arm(sim, rng) - block) >= self.circle:
                break
        d, m = sim.data, sim.model
        for name, value in zip(("block_x", "block_y"), block, strict=True):
            d.qpos[m.joint(name).qposadr[0]] = value
        d.qpos[m.joint("block_yaw").qposadr[0]] = rng.uniform(-np.pi / 4, np.pi / 4)
        for name, goal in zip(self.goals, goals, strict=True):
            body = m.body(name)
            d.mocap_pos[body.mocapid[0]] = [*goal, body.pos[2]]

    def _push(self, rng: np.random.Generator, goal: int) -> np.ndarray:
        """The block-to-goal offset of goal number ``goal`` (direction drawn first, then length)."""
        if self.goal_angles is None:
            angle = rng.uniform(-np.pi, np.pi)
        else:
            jitter = rng.uniform(-self.angle_jitter, self.angle_jitter)
            angle = np.deg2rad(self.goal_angles[goal]) + jitter
        return rng.uniform(*self.push_distance) * np.array([np.cos(angle), np.sin(angle)])

    def state(self, sim: MujocoSim) -> np.ndarray:
        d = sim.data
        yaw = d.qpos[sim.model.joint("block_yaw").qposadr[0]]
        goals = [d.site(g).xpos[:2] for g in self.goals]
        return np.concatenate([d.site("block").xpos[:2], [yaw], *goals])

    def points(self, sim: MujocoSim) -> dict[str, np.ndarray]:
        """The block, every goal by name, and the instructed goal as ``goal``."""
        goal = _instructed(sim, self.goals)
        return {**super().points(sim), "goal": sim.data.site(goal).xpos.copy()}

    def expert(self, obs: dict) -> np.ndarray:
        """Get behind the block (circling around it if needed), then push it along the goal line."""
        ee, block, goal = obs["ee"][:2], obs["block"][:2], obs["goal"][:2]
        to_goal = goal - block
        remaining = np.linalg.norm(to_goal)
        if remaining < 0.01:
            return np.zeros(2, np.float32)
        u = to_goal / remaining  # push direction
        n = np.array([-u[1], u[0]])  # its left normal
        rel = ee - block
        along, lateral = rel @ u, rel @ n
        speed = self.task.max_speed
        if along < -0.8 * self.contact and abs(lateral) < 0.02:
            # Behind the block and on the line: push, steering back onto the line.
            push = min(self.push_speed * speed, 2.0 * remaining + 0.03)
            lag = -self.contact - along  # > 0 when the finger trails the contact point
            return _unit_speed(u * (push + 2.0 * max(lag, 0.0)) - 4.0 * lateral * n, speed)
        behind = block - u * (self.contact + 0.02)
        rel_angle = np.arctan2(lateral, along)  # 0 = in front of the block, ±π = behind it
        to_behind = np.pi - abs(rel_angle)
        if to_behind > np.deg2rad(35):
            # Circle round the block at a safe radius, towards the side we are already on.
            turn = np.sign(rel_angle) * min(to_behind, np.deg2rad(50))
            a = np.arctan2(rel[1], rel[0]) + turn
            waypoint = block + self.circle * np.array([np.cos(a), np.sin(a)])
        else:
            waypoint = behind
        return _unit_speed(8.0 * (waypoint - ee), speed)


def _segment_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance from the origin (the arm base) to the segment a-b."""
    ab = b - a
    s = np.clip(-(a @ ab) / (ab @ ab), 0.0, 1.0)
    return float(np.linalg.norm(a + s * ab))


class CameraNavKind(TaskKind):
    """An arm task watched by a camera that the camera actions move (``[camera]``, camera_motion).

    Action ``[cam_yaw, cam_pitch, cam_dolly, *arm action]``: the camera part moves camera
    ``[camera] camera`` (the orbit camera) before the physics step, the rest drives the arm
    of kind ``[camera] arm`` (default push, parametrised by the same [reset]/[expert]).
    Success: the centre of the body carrying site ``[success] point`` lies within
    ``radius`` radians of the optical axis of camera ``[success] region`` — i.e. it projects
    within ``f · tan(radius)`` pixels of the principal point.
    """

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        path, arm = task.toml_path, task.camera.get("arm", "push")
        if arm not in KINDS or KINDS[arm] is CameraNavKind:
            arms = [k for k, v in KINDS.items() if v is not CameraNavKind]
            raise TaskError(
                "unknown arm kind", path=path, field="camera.arm", expected=arms, found=arm
            )
        self.arm = KINDS[arm](task)
        self.motion = CameraMotion.from_task(task)
        a = task.action
        if a.names[:CAMERA_DIM] != CAMERA_ACTION_NAMES or a.dim == CAMERA_DIM:
            raise TaskError(
                "a camera-nav action starts with the camera actions, then the arm's",
                path=path,
                field="action.names",
                expected=f"{list(CAMERA_ACTION_NAMES)} + the arm's names",
                found=list(a.names),
            )
        if a.low[:CAMERA_DIM] != (-1.0,) * CAMERA_DIM or a.high[:CAMERA_DIM] != (1.0,) * CAMERA_DIM:
            raise TaskError(
                "camera actions are normalised",
                path=path,
                field="action.low/high",
                expected="-1 and 1 for the camera dimensions",
                found=[list(a.low[:CAMERA_DIM]), list(a.high[:CAMERA_DIM])],
            )
        for instruction in task.instructions:
            if instruction.success.region != self.motion.camera:
                raise TaskError(
                    "the success region of a camera-nav task is the moving camera",
                    path=path,
                    field=instruction.fields[1],
                    expected=self.motion.camera,
                    found=instruction.success.region,
                )
        self.camera_action = ActionSpec(
            a.names[:CAMERA_DIM], a.low[:CAMERA_DIM], a.high[:CAMERA_DIM]
        )
        self.arm_action = ActionSpec(a.names[CAMERA_DIM:], a.low[CAMERA_DIM:], a.high[CAMERA_DIM:])
        target_names = tuple(f"camera_target.{c}" for c in "xyz")
        self.state_names = self.arm.state_names + ORBIT_STATE_NAMES + target_names
        self.required_bodies = self.arm.required_bodies
        self.site_roles = ("point",)  # the region is the moving camera
        self.orbit: OrbitState | None = None  # set by reset, moved by apply_action

    def check_scene(self, sim: MujocoSim) -> None:
        self.arm.check_scene(sim)
        m, name = sim.model, self.motion.camera
        cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if (
            cid < 0
            or m.cam_bodyid[cid] != 0
            or m.cam_mode[cid] != mujoco.mjtCamLight.mjCAMLIGHT_FIXED
        ):
            raise TaskError(
                "the moving camera must be a fixed camera on the world body",
                path=self.task.scene_path,
                field="camera.camera",
                found=name,
            )

    def reset(self, sim: MujocoSim, rng: np.random.Generator) -> None:
        self.arm.reset(sim, rng)
        self.orbit = self.motion.sample_start(rng)
        sim.set_camera_pose(self.motion.camera, self.motion.pose(self.orbit))

    def apply_action(self, sim: MujocoSim, action: np.ndarray) -> np.ndarray:
        if self.orbit is None:
            raise TaskError("call reset() before step(): it places the moving camera")
        self.orbit = self.motion.step(self.orbit, action[:CAMERA_DIM])
        sim.set_camera_pose(self.motion.camera, self.motion.pose(self.orbit))
        return action[CAMERA_DIM:]

    def target(self, sim: MujocoSim) -> np.ndarray:
        """(3,) world centre of the body the camera should centre."""
        body = sim.model.site(sim.rule.point).bodyid[0]
        return sim.data.xpos[body].copy()

    def goal_distance(self, sim: MujocoSim) -> float:
        """Angle (rad) between the camera's optical axis and the ray to the target."""
        pose = sim.world_from_camera(self.motion.camera)
        x, y, z = pose[:3, :3].T @ (self.target(sim) - pose[:3, 3])  # OpenCV camera frame
        return float(np.arctan2(np.hypot(x, y), z))

    def _orbit(self) -> np.ndarray:
        return np.full(3, np.nan) if self.orbit is None else self.orbit.as_array()

    def state(self, sim: MujocoSim) -> np.ndarray:
        return np.concatenate([self.arm.state(sim), self._orbit(), self.target(sim)])

    def points(self, sim: MujocoSim) -> dict[str, np.ndarray]:
        return {**self.arm.points(sim), "orbit": self._orbit(), "camera_target": self.target(sim)}

    def expert(self, obs: dict) -> np.ndarray:
        """The camera expert and the arm expert side by side."""
        return np.concatenate([CameraExpert(self.motion).expert(obs), self.arm.expert(obs)])

    def policy(self, skill: float, seed: int = 0) -> CameraNavPolicy:
        """The recording policy: smooth random camera actions, the arm expert at ``skill``."""
        policy = CameraNavPolicy(
            SmoothRandomCamera(self.motion, self.task.fps),
            ScriptedPolicy(self.arm, self.arm_action, skill=skill),
        )
        policy.reset(seed)
        return policy

    def camera_expert(self, skill: float, seed: int = 0, arm_skill: float = 1.0) -> CameraNavPolicy:
        """The centring camera expert at ``skill`` with the arm expert at ``arm_skill``."""
        policy = CameraNavPolicy(
            ScriptedPolicy(CameraExpert(self.motion), self.camera_action, skill=skill),
            ScriptedPolicy(self.arm, self.arm_action, skill=arm_skill),
        )
        policy.reset(seed)
        return policy


KINDS: dict[str, type[TaskKind]] = {
    "reach": ReachKind,
    "push": PushKind,
    "cameranav": CameraNavKind,
}


class ScriptedPolicy:
    """A task expert degraded by ``skill`` (see the module docstring). ``policy(obs) -> action``."""

    def __init__(
        self, kind: TaskKind, action: ActionSpec, skill: float = 1.0, seed: int = 0
    ) -> None:
        if not 0.0 <= skill <= 1.0:
            raise ConfigError(
                "skill must be in [0, 1]", field="skill", expected="0 <= skill <= 1", found=skill
            )
        self.kind, self.skill = kind, float(skill)
        self.low = np.array(action.low, np.float32)
        self.high = np.array(action.high, np.float32)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the policy's noise (``rollout`` does this with the episode seed)."""
        self.rng = np.random.default_rng(seed)
        self._held: np.ndarray | None = None
        self._hold = 0

    def __call__(self, obs: dict) -> np.ndarray:
        if self._hold > 0 and self._held is not None:
            self._hold -= 1
            return self._held.copy()
        lapse = 1.0 - self.skill
        draw = self.rng.random()
        p_random, p_hesitate = lapse**2, lapse * (1.0 - lapse)
        if draw < p_random:  # distracted: a random action for a few steps
            self._held = self.rng.uniform(self.low, self.high).astype(np.float32)
            self._hold = int(self.rng.integers(0, 3))
            return self._held.copy()
        if draw < p_random + p_hesitate:  # hesitating: stand still for a moment
            self._held = np.zeros_like(self.low)
            self._hold = int(self.rng.integers(0, 2))
            return self._held.copy()
        action = self.kind.expert(obs)
        if lapse > 0:
            action = action + self.rng.normal(0.0, NOISE * lapse, size=action.shape)
        return np.clip(action, self.low, self.high).astype(np.float32)
