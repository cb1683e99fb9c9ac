"""CameraNav: the moving orbit camera's recorded geometry, camera actions, clamps, experts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cosmos_sim.bridge.camera_motion import (
    CAMERA_ACTION_NAMES,
    CameraMotion,
    OrbitState,
    SmoothRandomCamera,
)
from cosmos_sim.bridge.experts import KINDS
from cosmos_sim.bridge.mujoco_sim import MujocoSim, make_expert, rollout
from cosmos_sim.bridge.tasks import tasks_root
from cosmos_sim.conditioning.cameras import backproject, intrinsics_from_fovy, orbit_pose, project
from cosmos_sim.errors import TaskError

FLOOR, TABLE, BLOCK, GOAL = 0, 1, 7, 8  # envs/cameranav/task.toml [objects]


@pytest.fixture(scope="module")
def sim():
    """The orbit camera only, rgb + depth + segmentation, non-square 48x64."""
    s = MujocoSim("cameranav", height=48, width=64)
    yield s
    s.close()


@pytest.fixture(scope="module")
def episode(sim):
    """One recorded episode (random camera, expert arm): frames and the sim's task kind."""
    frames = list(rollout(sim, make_expert("cameranav", skill=1.0), seed=4))
    return frames


def _orbit(frame, sim) -> OrbitState:
    names = list(sim.state_names)
    return OrbitState(*(float(frame.state[names.index(n)]) for n in sim.kind.state_names[-6:-3]))


def test_action_layout_and_state(sim, episode):
    assert sim.action_space.names == (*CAMERA_ACTION_NAMES, "ee_vx", "ee_vy")
    assert sim.state_names[-6:] == (
        "orbit.azimuth",
        "orbit.elevation",
        "orbit.distance",
        "camera_target.x",
        "camera_target.y",
        "camera_target.z",
    )
    actions = np.stack([f.action for f in episode])
    assert actions.shape == (64, 5) and np.abs(actions).max() <= 1
    assert np.abs(actions[:, :3]).mean() > 0.1  # the camera does move
    poses = np.stack([f.cameras["orbit"].world_from_camera for f in episode])
    assert np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3]) > 0.05


def test_recorded_pose_is_the_orbit_state(sim, episode):
    """Every frame's world_from_camera and K are exactly the documented orbit pose."""
    motion = sim.kind.motion
    k = intrinsics_from_fovy(45.0, 64, 48)
    for frame in episode:
        cf = frame.cameras["orbit"]
        np.testing.assert_allclose(cf.world_from_camera, motion.pose(_orbit(frame, sim)), atol=2e-5)
        np.testing.assert_allclose(cf.intrinsics, k, rtol=1e-6)


@pytest.mark.parametrize("t", [0, 21, 42, 63])
def test_moving_orbit_depth_and_segmentation_agree_with_the_scene(sim, episode, t):
    """Floor pixels back-project onto z = -0.5, table pixels onto its top; the block centre
    projects onto the block's pixels and its back-projected pixels lie on the box."""
    cf = episode[t].cameras["orbit"]
    k, pose = cf.intrinsics.astype(np.float64), cf.world_from_camera.astype(np.float64)
    points = backproject(cf.depth, k, pose)
    floor, table = cf.segmentation == FLOOR, cf.segmentation == TABLE
    if floor.sum() > 10:
        assert np.abs(points[floor][:, 2] + 0.5).max() < 2e-4
    top = table & (np.abs(points[..., :2]).max(axis=-1) < 0.49)  # not the sides (|x| or |y| = 0.5)
    assert top.sum() > 100
    assert np.abs(points[top][:, 2]).max() < 2e-4

    state = dict(zip(sim.state_names, episode[t].state, strict=True))
    centre = np.array([state[f"camera_target.{c}"] for c in "xyz"], np.float64)
    blob = cf.segmentation == BLOCK
    assert blob.sum() >= 4
    (u, v), _ = project(centre, k, pose)
    if 0 <= round(v) < 48 and 0 <= round(u) < 64:
        near = blob[max(round(v) - 1, 0) : round(v) + 2, max(round(u) - 1, 0) : round(u) + 2]
        assert near.any(), "the block centre projects away from the block's pixels"
    half = 0.045
    rel = points[blob] - centre  # the block yaws: compare in its own frame via the radius
    assert np.all(np.abs(rel[:, 2]) <= half + 2e-3)
    assert np.all(np.linalg.norm(rel[:, :2], axis=1) <= half * np.sqrt(2) + 2e-3)


def _reproject(a, b, pose_b: np.ndarray) -> tuple[np.ndarray, int]:
    """Static surfaces of frame a (table top, goal patch) seen from frame b at ``pose_b``.

    Returns the depth errors (bilinear depth of b at the landed point vs its distance to
    b's image plane) and how many table-top points land on floor pixels.
    """
    points = backproject(a.depth, a.intrinsics, a.world_from_camera)
    inner = np.abs(points[..., :2]).max(axis=-1) < 0.48  # the table top, not its sides
    static = ((a.segmentation == TABLE) & inner) | (a.segmentation == GOAL)
    labels = a.segmentation[static]
    uv, z = project(points[static], b.intrinsics, pose_b)
    u0, v0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    h, w = b.depth.shape
    inside = (u0 >= 0) & (u0 < w - 1) & (v0 >= 0) & (v0 < h - 1)
    uv, z, u0, v0, labels = uv[inside], z[inside], u0[inside], v0[inside], labels[inside]
    same = np.ones(len(uv), bool)  # all 4 neighbours show the same surface in b
    for du, dv in itertools.product((0, 1), (0, 1)):
        same &= b.segmentation[v0 + dv, u0 + du] == labels
    fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
    d = b.depth.astype(np.float64)
    depth = (
        d[v0, u0] * (1 - fu) * (1 - fv)
        + d[v0, u0 + 1] * fu * (1 - fv)
        + d[v0 + 1, u0] * (1 - fu) * fv
        + d[v0 + 1, u0 + 1] * fu * fv
    )
    # Table-top points must not land on the floor (the table's edges pin the azimuth).
    ui, vi = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    on_floor = np.sum((labels == TABLE) & (b.segmentation[vi, ui] == FLOOR))
    return np.abs(depth - z)[same], int(on_floor)


def test_static_scene_reprojects_between_moving_frames():
    """Table and goal points seen at frame t land in frame t+1 where, and at the depth, the
    sim renders them — the check behind the camera model's 3-D consistency metric — while
    the previous frame's pose (an off-by-one-frame slip) fails it."""
    sim = MujocoSim("cameranav", height=96, width=128)
    sim.reset(seed=7)
    policy = make_expert("cameranav", skill=1.0, seed=7)
    policy.reset(seed=7)
    errors, on_floor, off_error = [], [], []
    for _ in range(6):
        a = sim.render_camera("orbit")
        sim.step(policy(sim.policy_obs()))
        b = sim.render_camera("orbit")
        assert not np.allclose(a.world_from_camera, b.world_from_camera)
        error, landed = _reproject(a, b, b.world_from_camera)
        errors.append(error)
        on_floor.append(landed)
        stale = _reproject(a, b, a.world_from_camera)  # b labelled with the previous pose
        off_error.append(np.median(stale[0]))
    error = np.concatenate(errors)
    assert error.size > 1000
    assert np.median(error) < 1e-4 and np.quantile(error, 0.99) < 1e-3 and error.max() < 5e-3
    assert sum(on_floor) == 0
    assert min(off_error) > 100 * np.median(error)  # an off-by-one-frame pose is caught
    sim.close()


def test_camera_actions_move_the_pose_as_documented(sim):
    sim.reset(seed=1)
    motion, kind = sim.kind.motion, sim.kind
    start = kind.orbit
    pivot = np.array(motion.pivot)

    def step(camera_action):
        before = sim.world_from_camera("orbit")[:3, 3] - pivot
        sim.step(np.array([*camera_action, 0.0, 0.0], np.float32))
        return before, sim.world_from_camera("orbit")[:3, 3] - pivot

    before, after = step([1.0, 0.0, 0.0])
    assert kind.orbit.azimuth == pytest.approx(((start.azimuth + 8.0 + 180) % 360) - 180)
    turn = np.degrees(np.arctan2(after[1], after[0]) - np.arctan2(before[1], before[0]))
    assert (turn + 180) % 360 - 180 == pytest.approx(8.0, abs=1e-4)  # counter-clockwise
    e0 = kind.orbit.elevation
    before, after = step([0.0, 0.5, 0.0])
    assert kind.orbit.elevation == pytest.approx(e0 + 2.0)
    assert after[2] < before[2]  # view tilts up: the camera comes down
    d0 = kind.orbit.distance
    before, after = step([0.0, 0.0, 1.0])
    assert kind.orbit.distance == pytest.approx(d0 - 0.04)
    assert np.linalg.norm(after) == pytest.approx(np.linalg.norm(before) - 0.04, abs=1e-6)
    np.testing.assert_allclose(
        sim.world_from_camera("orbit"),
        orbit_pose(kind.orbit.azimuth, kind.orbit.elevation, kind.orbit.distance, motion.pivot),
        atol=1e-9,
    )


def test_camera_clamps_and_wrap(sim):
    sim.reset(seed=2)
    kind = sim.kind
    for _ in range(25):
        sim.step(np.array([1.0, 1.0, 1.0, 0.0, 0.0], np.float32))
    assert kind.orbit.elevation == -30.0 and kind.orbit.distance == 0.8
    assert -180.0 <= kind.orbit.azimuth < 180.0
    for _ in range(25):
        sim.step(np.array([-1.0, -1.0, -1.0, 0.0, 0.0], np.float32))
    assert kind.orbit.elevation == -75.0 and kind.orbit.distance == 1.6
    # Out-of-range actions are clipped to the space like every simulator action.
    sim.step(np.array([0.0, 5.0, 0.0, 0.0, 0.0], np.float32))
    assert kind.orbit.elevation == -71.0
    # The table stays in view at every clamp corner.
    for el, dist in itertools.product((-75.0, -30.0), (0.8, 1.6)):
        kind.orbit = OrbitState(33.0, el, dist)
        sim.set_camera_pose("orbit", kind.motion.pose(kind.orbit))
        seg = sim.render_camera("orbit").segmentation
        assert (seg == TABLE).mean() > 0.25, (el, dist)


def test_reset_seeds_the_orbit_and_the_episode_is_deterministic():
    sim = MujocoSim("cameranav", size=24)

    def run(seed):
        frames = list(itertools.islice(rollout(sim, make_expert("cameranav", 0.8), seed), 10))
        return [np.stack([getattr(f, k) for f in frames]) for k in ("action", "state")] + [
            np.stack([f.cameras["orbit"].rgb for f in frames])
        ]

    first, again, other = run(3), run(3), run(4)
    for x, y in zip(first, again, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(first[0], other[0])
    starts = {tuple(np.round(run(s)[1][0, -6:-3], 3)) for s in range(4)}
    assert len(starts) == 4  # each seed starts the orbit elsewhere
    sim.close()


def test_random_camera_is_smooth_seeded_and_bounded():
    motion = CameraMotion()
    obs = {"orbit": np.array([0.0, -50.0, 1.2])}

    def run(seed):
        process = SmoothRandomCamera(motion, fps=10, seed=seed)
        return np.stack([process(obs) for _ in range(400)])

    a = run(0)
    assert np.array_equal(a, run(0)) and not np.array_equal(a, run(1))
    assert np.abs(a).max() <= 1.0
    lag1 = np.mean([np.corrcoef(a[:-1, i], a[1:, i])[0, 1] for i in range(3)])
    assert lag1 > 0.85  # rho = exp(-1 / (10 * 1.0)) = 0.905
    assert 0.3 < a.std() < 0.6


def test_random_camera_turns_back_at_a_clamp():
    motion = CameraMotion()
    process = SmoothRandomCamera(motion, fps=10, seed=0)
    process.value[:] = (0.0, 0.9, -0.9)  # pushing up and out of the clamps
    action = process({"orbit": np.array([0.0, -30.0, 1.6])})
    assert action[1] < 0 and action[2] > 0


def test_camera_expert_centres_the_block_and_skill_grades_it():
    sim = MujocoSim("cameranav", cameras=[])  # success is geometric: nothing rendered
    kind = KINDS["cameranav"](sim.task)

    def success(skill, seeds):
        out = []
        for seed in seeds:
            for _ in rollout(sim, kind.camera_expert(skill, seed=seed), seed):
                pass
            out.append(sim.success)
        return out

    assert all(success(1.0, range(4)))
    assert np.degrees(sim.goal_distance()) < 0.5
    assert sum(success(0.0, range(6))) <= 1
    sim.close()


def test_bad_camera_config_names_the_field(tmp_path):
    import shutil

    root = tasks_root()
    for name in ("common", "push", "cameranav"):
        shutil.copytree(root / name, tmp_path / name)
    toml = tmp_path / "cameranav" / "task.toml"
    text = toml.read_text()
    toml.write_text(text.replace("elevation = [-75.0, -30.0]", "elevation = [-75.0, 95.0]"))
    with pytest.raises(TaskError, match="camera.elevation"):
        MujocoSim(tmp_path / "cameranav", cameras=[])
    toml.write_text(text.replace("yaw_rate = 8.0", "yaw_rte = 8.0"))
    with pytest.raises(TaskError, match="camera.yaw_rte"):
        MujocoSim(tmp_path / "cameranav", cameras=[])
    toml.write_text(
        text.replace('names = ["cam_yaw", "cam_pitch"', 'names = ["cam_pitch", "cam_yaw"')
    )
    with pytest.raises(TaskError, match="action.names"):
        MujocoSim(tmp_path / "cameranav", cameras=[])
    toml.write_text(text.replace('arm = "push"', 'arm = "cameranav"'))
    with pytest.raises(TaskError, match="camera.arm"):
        MujocoSim(tmp_path / "cameranav", cameras=[])
