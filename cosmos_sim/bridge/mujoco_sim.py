"""The embedded simulator: MuJoCo tabletop tasks rendered into :class:`Frame` objects.

::

    sim = MujocoSim("reach", cameras=["front", "top"], size=64)
    policy = make_expert(sim.task, skill=0.8, seed=3)
    episode = record_episode(sim, policy, seed=3)      # or: for frame in rollout(sim, policy, 3)
    sim.success, sim.label_map, sim.action_space, sim.state_names, sim.fps
    sim.close()

Control: an action is a normalised end-effector velocity on the table plane
(``task.toml [action]``); each control step integrates ``1 / (fps · timestep)`` physics
substeps, and a damped-least-squares Jacobian controller turns the velocity into
joint-velocity targets. ``reset`` restores every camera to its scene pose, so a seed
fixes the whole episode. A task kind may add action parts of its own: cameranav's
actions start with camera actions that move the orbit camera before each physics step,
and its ``reset`` seeds the orbit's start pose (nothing else moves it mid-episode).

A task with several instructions (``task.toml [[instructions]]``) draws each episode's
instruction from the reset seed (``reset(seed, instruction=…)`` forces one; the scene
layout of a seed is the same either way); :attr:`instruction` and :attr:`rule` are the
episode's, and :attr:`success` is judged by that instruction's rule.

Per camera and step the simulator renders (each only when asked) RGB, depth (metres
to the image plane, ``inf`` where nothing is hit) and segmentation (object ids of
``task.toml [objects]``, −1 for background), with OpenCV intrinsics and
``world_from_camera`` from :mod:`cosmos_sim.conditioning.cameras`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mujoco  # importing cosmos_sim (the parent package) first has set MUJOCO_GL
import numpy as np

from cosmos_sim.bridge.experts import KINDS, ScriptedPolicy, TaskKind
from cosmos_sim.bridge.tasks import Instruction, SuccessRule, Task, find_task
from cosmos_sim.conditioning import cameras as cam
from cosmos_sim.data.episode import CameraFrame, Episode, Frame
from cosmos_sim.errors import ActionError, CameraError, ConfigError, TaskError

ARM_JOINTS = ("shoulder", "elbow")
EE_SITE = "ee"
ARM_STATE_NAMES = ("shoulder.pos", "elbow.pos", "shoulder.vel", "elbow.vel", "ee.x", "ee.y")
DLS_DAMPING = 0.03  # damped-least-squares λ (m): keeps joint speeds finite near singularities


@dataclass
class SimConfig:
    """Everything a :class:`MujocoSim` needs; ``None`` fields take the task's defaults."""

    task: str | Path | Task = "reach"
    cameras: Sequence[str] | None = None  # default: task.toml [render] cameras
    height: int | None = None  # default: task.toml [render] size
    width: int | None = None
    seed: int = 0  # seeds the first reset when reset() gets no seed
    rgb: bool = True
    depth: bool = True
    segmentation: bool = True
    shadow_size: int | None = None  # default: task.toml; 0 = no shadows (fastest)
    multisample: int = 4  # MSAA samples for RGB (depth and segmentation are never blended)

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 1024:
                raise ConfigError(
                    "image size out of range", field=name, expected="1..1024", found=value
                )
        if self.shadow_size is not None and self.shadow_size < 0:
            raise ConfigError("must be >= 0", field="shadow_size", found=self.shadow_size)
        if not 0 <= self.multisample <= 16:
            raise ConfigError("must be in 0..16", field="multisample", found=self.multisample)
        if not (self.rgb or self.depth or self.segmentation):
            raise ConfigError(
                "nothing to render", field="rgb/depth/segmentation", expected="at least one True"
            )
        if isinstance(self.cameras, str):
            self.cameras = [c.strip() for c in self.cameras.split(",") if c.strip()]


@dataclass(frozen=True)
class ActionSpace:
    low: np.ndarray  # (A,) float32
    high: np.ndarray  # (A,) float32
    names: tuple[str, ...] = field(default=())

    @property
    def shape(self) -> tuple[int]:
        return (len(self.names),)


class MujocoSim:
    """One MuJoCo scene + one offscreen renderer. See the module docstring."""

    def __init__(self, task: str | Path | Task | SimConfig = "reach", **overrides) -> None:
        if "size" in overrides:
            size = overrides.pop("size")
            overrides.setdefault("height", size)
            overrides.setdefault("width", size)
        self.config = task if isinstance(task, SimConfig) else SimConfig(task=task, **overrides)
        cfg = self.config
        self.task: Task = cfg.task if isinstance(cfg.task, Task) else find_task(cfg.task)
        self.kind: TaskKind = KINDS[self.task.kind](self.task)
        self.height = cfg.height or self.task.size
        self.width = cfg.width or self.task.size
        try:
            self.model = mujoco.MjModel.from_xml_path(str(self.task.scene_path))
        except ValueError as e:
            raise TaskError(f"MuJoCo cannot load the scene: {e}", path=self.task.scene_path) from e
        self.data = mujoco.MjData(self.model)
        m = self.model
        m.vis.quality.shadowsize = (
            self.task.shadow_size if cfg.shadow_size is None else cfg.shadow_size
        )
        m.vis.quality.offsamples = cfg.multisample
        m.vis.global_.offwidth = max(m.vis.global_.offwidth, self.width)
        m.vis.global_.offheight = max(m.vis.global_.offheight, self.height)

        substeps = 1.0 / (self.task.fps * m.opt.timestep)
        if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            raise TaskError(
                "control rate must divide the physics rate",
                path=self.task.toml_path,
                field="control.fps",
                expected=f"1 / (k * {m.opt.timestep}) for an integer k",
                found=self.task.fps,
            )
        self.frame_skip = round(substeps)
        # cameras=None: the task's cameras; cameras=[]: state only, nothing rendered.
        self.cameras = self._check_cameras(
            self.task.cameras if cfg.cameras is None else cfg.cameras
        )
        self._camera_ids = {name: m.camera(name).id for name in self.cameras}
        self._check_scene()
        self.label_map, self._geom_object = self._object_ids()
        self._default_cam_pos = m.cam_pos.copy()
        self._default_cam_quat = m.cam_quat.copy()
        self._default_cam_fovy = m.cam_fovy.copy()

        self._renderer: mujoco.Renderer | None = None  # opened on the first render
        self._scene_option = mujoco.MjvOption()
        self._scene_option.sitegroup[:] = 0  # sites are markers for the code, not scene objects
        self._rng = np.random.default_rng(cfg.seed)
        self._instruction: Instruction = self.task.instructions[0]  # set by every reset
        self.t = 0
        self._succeeded_any = False

    # ----------------------------------------------------------------- properties

    @property
    def fps(self) -> float:
        return self.task.fps

    @property
    def instruction(self) -> str:
        """The episode's instruction (the task's first before the first reset)."""
        return self._instruction.text

    @property
    def rule(self) -> SuccessRule:
        """The success rule of the episode's instruction."""
        return self._instruction.success

    @property
    def action_space(self) -> ActionSpace:
        a = self.task.action
        return ActionSpace(np.array(a.low, np.float32), np.array(a.high, np.float32), a.names)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ARM_STATE_NAMES + self.kind.state_names

    @property
    def done(self) -> bool:
        return self.t >= self.task.episode_length

    @property
    def success(self) -> bool:
        """Success by the task's rule: now (``when = "end"``) or at any step so far."""
        return self._succeeded_any if self.rule.when == "any" else self.goal_reached()

    # ------------------------------------------------------------------- stepping

    def reset(self, seed: int | None = None, instruction: str | None = None) -> Frame:
        """Start an episode (seeded: same seed → same episode) and return its first observation.

        ``instruction`` (one of the task's texts) overrides the one drawn from the seed.
        The returned Frame's ``action`` is NaN until the caller records the action taken.
        """
        forced = None if instruction is None else self.task.find_instruction(instruction)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        choices = self.task.instructions
        # Drawn even when forced, so a seed gives the same layout whatever the instruction;
        # a single-instruction task draws nothing (its seeds give the episodes they always gave).
        drawn = choices[int(self._rng.integers(len(choices)))] if len(choices) > 1 else choices[0]
        self._instruction = forced or drawn
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        m.cam_pos[:], m.cam_quat[:], m.cam_fovy[:] = (
            self._default_cam_pos,
            self._default_cam_quat,
            self._default_cam_fovy,
        )
        self.kind.reset(self, self._rng)
        mujoco.mj_forward(m, d)
        self.t = 0
        self._succeeded_any = self.goal_reached()
        return self.observe()

    def step(self, action: np.ndarray) -> float:
        """Apply one normalised end-effector velocity action for 1/fps seconds; returns the reward."""
        action = self.kind.apply_action(self, self._check_action(action))  # e.g. camera actions
        velocity = action.astype(np.float64) * self.task.max_speed  # (2,) m/s on the table plane
        m, d = self.model, self.data
        jac = np.zeros((3, m.nv))
        site = m.site(EE_SITE).id
        dofs = self._arm_dofs
        for _ in range(self.frame_skip):
            mujoco.mj_jacSite(m, d, jac, None, site)
            j = jac[:2, dofs]  # (2, 2) planar end-effector Jacobian
            qdot = j.T @ np.linalg.solve(j @ j.T + DLS_DAMPING**2 * np.eye(2), velocity)
            d.ctrl[self._arm_actuators] = qdot
            mujoco.mj_step(m, d)
        self.t += 1
        reached = self.goal_reached()
        self._succeeded_any |= reached
        return float(reached) - self.goal_distance()

    def observe(self, cameras: Sequence[str] | None = None) -> Frame:
        """Render the current state: a Frame with NaN action and zero reward."""
        names = self.cameras if cameras is None else cameras
        cams = {name: self.render_camera(name) for name in names}
        action = np.full(self.task.action.dim, np.nan, dtype=np.float32)
        return Frame(cameras=cams, action=action, state=self.state())

    def state(self) -> np.ndarray:
        """(S,) float32, named by :attr:`state_names`."""
        d = self.data
        arm = np.concatenate([d.qpos[self._arm_qpos], d.qvel[self._arm_dofs]])
        ee = d.site(EE_SITE).xpos[:2]
        return np.concatenate([arm, ee, self.kind.state(self)]).astype(np.float32)

    def policy_obs(self) -> dict[str, np.ndarray]:
        """What a policy sees: ``state`` plus privileged positions (``ee`` and task points)."""
        obs = {"state": self.state(), "ee": self.data.site(EE_SITE).xpos.copy()}
        obs.update(self.kind.points(self))
        return obs

    def goal_distance(self) -> float:
        """The task kind's distance to success (metres between sites; radians for cameranav)."""
        return self.kind.goal_distance(self)

    def goal_reached(self) -> bool:
        return self.goal_distance() <= self.rule.radius

    # ------------------------------------------------------------------ rendering

    def render_camera(self, name: str) -> CameraFrame:
        """RGB / depth / segmentation (as configured) with K and world_from_camera of one camera."""
        cid = self._camera_id(name)
        r, cfg = self._open_renderer(), self.config
        r.update_scene(self.data, cid, self._scene_option)
        rgb = r.render().copy() if cfg.rgb else np.zeros((self.height, self.width, 3), np.uint8)
        depth = segmentation = None
        if cfg.segmentation or cfg.depth:
            r.enable_segmentation_rendering()
            seg_raw = r.render()  # (H, W, 2): MuJoCo object id, object type
            r.disable_segmentation_rendering()
            is_geom = seg_raw[..., 1] == mujoco.mjtObj.mjOBJ_GEOM
            segmentation = np.where(
                is_geom, self._geom_object[np.where(is_geom, seg_raw[..., 0], 0)], -1
            )
            segmentation = segmentation.astype(np.int32)
        if cfg.depth:
            r.enable_depth_rendering()
            depth = r.render().astype(np.float32)
            r.disable_depth_rendering()
            depth[seg_raw[..., 0] < 0] = np.inf  # nothing hit: infinitely far
        if not cfg.segmentation:
            segmentation = None
        return CameraFrame(
            rgb=rgb,
            depth=depth,
            segmentation=segmentation,
            intrinsics=self.intrinsics(name).astype(np.float32),
            world_from_camera=self.world_from_camera(name).astype(np.float32),
        )

    def intrinsics(self, name: str) -> np.ndarray:
        """(3, 3) float64 OpenCV K of camera ``name`` at the simulator's image size."""
        fovy = float(self.model.cam_fovy[self._camera_id(name)])
        return cam.intrinsics_from_fovy(fovy, self.width, self.height)

    def world_from_camera(self, name: str) -> np.ndarray:
        """(4, 4) float64 OpenCV camera-to-world pose of camera ``name`` now."""
        cid = self._camera_id(name)
        return cam.world_from_camera_mujoco(self.data.cam_xpos[cid], self.data.cam_xmat[cid])

    def set_camera_pose(
        self, name: str, world_from_camera: np.ndarray, fovy: float | None = None
    ) -> None:
        """Move a world-mounted camera (e.g. ``orbit``) to an OpenCV pose; optionally change fovy."""
        self._check_cameras([name])
        cid = self.model.camera(name).id
        if (
            self.model.cam_bodyid[cid] != 0
            or self.model.cam_mode[cid] != mujoco.mjtCamLight.mjCAMLIGHT_FIXED
        ):
            raise CameraError("only fixed cameras on the world body can be moved", field=name)
        pos, quat = cam.mujoco_camera_from_pose(np.asarray(world_from_camera, dtype=np.float64))
        self.model.cam_pos[cid], self.model.cam_quat[cid] = pos, quat
        if fovy is not None:
            cam.intrinsics_from_fovy(fovy, self.width, self.height)  # validates
            self.model.cam_fovy[cid] = fovy
        mujoco.mj_camlight(self.model, self.data)

    def set_orbit(
        self, azimuth: float, elevation: float, distance: float, lookat=(0.0, 0.0, 0.0)
    ) -> None:
        """Place the ``orbit`` camera on a sphere around ``lookat`` (degrees; elevation < 0 = from above)."""
        self.set_camera_pose("orbit", cam.orbit_pose(azimuth, elevation, distance, lookat))

    def _open_renderer(self) -> mujoco.Renderer:
        if self._renderer is None:
            self._renderer = _make_renderer(self.model, self.height, self.width)
            # Mesa's first depth read after context creation differs in the last float bits
            # from every later one: render a throwaway frame so equal seeds give equal frames.
            scratch = mujoco.MjData(self.model)
            mujoco.mj_forward(self.model, scratch)
            self._renderer.update_scene(scratch, -1, self._scene_option)
            for mode in ("enable_depth_rendering", "enable_segmentation_rendering", None):
                if mode:
                    getattr(self._renderer, mode)()
                self._renderer.render()
                self._renderer.disable_depth_rendering()
                self._renderer.disable_segmentation_rendering()
        return self._renderer

    def close(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> MujocoSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # ----------------------------------------------------------------- validation

    def _check_action(self, action) -> np.ndarray:
        action = np.asarray(action, dtype=np.float32)
        space = self.action_space
        if action.shape != space.shape:
            raise ActionError(
                "wrong action shape", field="action", expected=space.shape, found=action.shape
            )
        if not np.all(np.isfinite(action)):
            raise ActionError(
                "non-finite action", field="action", expected="finite values", found=action.tolist()
            )
        return np.clip(action, space.low, space.high)

    def _camera_id(self, name: str) -> int:
        cid = self._camera_ids.get(name)
        if cid is None:
            self._check_cameras([name])
            cid = self._camera_ids[name] = self.model.camera(name).id
        return cid

    def _check_cameras(self, names: Sequence[str]) -> list[str]:
        known = [self.model.camera(i).name for i in range(self.model.ncam)]
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise CameraError(
                    f"unknown camera '{name}'{hint}", field="cameras", expected=known, found=name
                )
        return list(names)

    def _check_scene(self) -> None:
        m, path = self.model, self.task.scene_path
        names = {
            mujoco.mjtObj.mjOBJ_JOINT: ARM_JOINTS,
            mujoco.mjtObj.mjOBJ_SITE: (EE_SITE,),
            mujoco.mjtObj.mjOBJ_ACTUATOR: ARM_JOINTS,
        }
        for obj, wanted in names.items():
            for name in wanted:
                if mujoco.mj_name2id(m, obj, name) < 0:
                    raise TaskError(
                        f"scene has no {obj.name[6:].lower()} named '{name}'", path=path, field=name
                    )
        self.task.check_sites({m.site(i).name for i in range(m.nsite)}, self.kind.site_roles)
        joints = [m.joint(j) for j in ARM_JOINTS]
        self._arm_qpos = np.array([j.qposadr[0] for j in joints])
        self._arm_dofs = np.array([j.dofadr[0] for j in joints])
        self._arm_actuators = np.array([m.actuator(j).id for j in ARM_JOINTS])
        self.kind.check_scene(self)

    def _object_ids(self) -> tuple[dict[int, str], np.ndarray]:
        """Map every geom to its object: the nearest named body of [objects], or a world geom's name."""
        m, objects = self.model, self.task.objects
        geom_object = np.full(m.ngeom, -1, dtype=np.int32)
        for g in range(m.ngeom):
            body = int(m.geom_bodyid[g])
            name = m.geom(g).name if body == 0 else None
            while body != 0 and m.body(body).name not in objects:
                body = int(m.body_parentid[body])
            name = m.body(body).name if body != 0 else name
            if name not in objects:
                raise TaskError(
                    f"geom {g} ('{m.geom(g).name}') belongs to no object",
                    path=self.task.toml_path,
                    field="objects",
                    expected=f"an entry for one of its bodies (or the world geom's name), known: {sorted(objects)}",
                    found=m.body(int(m.geom_bodyid[g])).name,
                )
            geom_object[g] = objects[name]
        return {i: n for n, i in sorted(objects.items(), key=lambda kv: kv[1])}, geom_object


def _make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    try:
        return mujoco.Renderer(model, height, width)
    except mujoco.FatalError as e:
        raise ConfigError(
            f"MuJoCo cannot open an offscreen OpenGL context ({e})",
            field="MUJOCO_GL",
            expected="MUJOCO_GL=egl set before mujoco is first imported (import cosmos_sim first)",
            found=os.environ.get("MUJOCO_GL"),
        ) from e


# ------------------------------------------------------------------ episodes


Policy = Callable[[dict], np.ndarray]


def rollout(
    sim: MujocoSim, policy: Policy, seed: int, instruction: str | None = None
) -> Iterator[Frame]:
    """Run one seeded episode; yield each observation Frame with the action taken and its reward.

    ``instruction`` forces the episode's instruction (default: drawn from the seed).
    ``sim.success`` and ``sim.instruction`` hold the episode's outcome and instruction once
    the iterator is exhausted.
    """
    if hasattr(policy, "reset"):
        policy.reset(seed=seed)
    frame = sim.reset(seed=seed, instruction=instruction)
    while not sim.done:
        action = np.asarray(policy(sim.policy_obs()), dtype=np.float32)
        frame.reward = sim.step(action)
        frame.action = action
        yield frame
        if not sim.done:
            frame = sim.observe()


def record_episode(
    sim: MujocoSim, policy: Policy, seed: int, instruction: str | None = None
) -> Episode:
    """One whole seeded episode in memory (``instruction``: as in :func:`rollout`)."""
    frames = list(rollout(sim, policy, seed, instruction))
    return Episode.from_frames(frames, success=sim.success, instruction=sim.instruction)


def make_expert(task: str | Path | Task, skill: float = 1.0, seed: int = 0) -> ScriptedPolicy:
    """The task's scripted expert degraded by ``skill`` ∈ [0, 1] (1 = expert, 0 = uniform random).

    For a camera-nav task: the recording policy (smooth random camera actions, the arm's
    expert at ``skill``); its camera expert is ``KINDS["cameranav"](task).camera_expert``.
    """
    task = task if isinstance(task, Task) else find_task(task)
    return KINDS[task.kind](task).policy(skill=skill, seed=seed)
