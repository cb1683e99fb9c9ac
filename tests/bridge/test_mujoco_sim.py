"""The MuJoCo bridge: camera geometry against the renderer, determinism, experts, task errors."""

from __future__ import annotations

import itertools

import mujoco
import numpy as np
import pytest

from cosmos_sim.bridge.mujoco_sim import MujocoSim, make_expert, record_episode, rollout
from cosmos_sim.bridge.tasks import find_task, load_task
from cosmos_sim.conditioning.cameras import backproject, orbit_pose, project
from cosmos_sim.errors import ActionError, CameraError, TaskError

CAMERAS = ("front", "top", "side", "orbit")  # as in conftest.sim
ORBIT = dict(azimuth=120.0, elevation=-35.0, distance=1.3, lookat=(0.05, 0.0, 0.0))


def pose_scene(sim: MujocoSim) -> tuple[str, np.ndarray]:
    """A fixed, unoccluded layout: the object front-right, the arm folded back-left.

    Returns the object's name and its centre in world coordinates.
    """
    sim.reset(seed=0)
    m, d = sim.model, sim.data
    name = "target" if sim.task.kind == "reach" else "block"
    if name == "target":
        d.mocap_pos[m.body("target").mocapid[0], :2] = (0.25, -0.15)
    else:
        d.qpos[m.joint("block_x").qposadr[0]] = 0.22
        d.qpos[m.joint("block_y").qposadr[0]] = -0.12
        d.qpos[m.joint("block_yaw").qposadr[0]] = 0.3
        d.mocap_pos[m.body("goal").mocapid[0], :2] = (-0.1, -0.25)
    d.qpos[sim._arm_qpos] = (np.deg2rad(135), 0.4)
    mujoco.mj_forward(m, d)
    sim.set_orbit(**ORBIT)
    return name, d.body(name).xpos.copy()


def test_frame_contract(sim):
    frame = sim.reset(seed=1)
    assert set(frame.cameras) == set(CAMERAS)
    for cf in frame.cameras.values():
        assert cf.rgb.shape == (64, 80, 3) and cf.rgb.dtype == np.uint8
        assert cf.depth.shape == (64, 80) and cf.depth.dtype == np.float32
        assert cf.segmentation.shape == (64, 80) and cf.segmentation.dtype == np.int32
        assert cf.intrinsics.dtype == np.float32 and cf.world_from_camera.dtype == np.float32
        assert set(np.unique(cf.segmentation)) <= set(sim.label_map) | {-1}
        assert np.all(np.isfinite(cf.depth[cf.segmentation >= 0]))
    assert frame.state.shape == (len(sim.state_names),) and frame.state.dtype == np.float32
    assert frame.action.shape == (2,) and np.all(np.isnan(frame.action))  # filled by the recorder


@pytest.mark.parametrize("camera", CAMERAS)
def test_object_projects_onto_its_segmentation(sim, camera):
    name, centre = pose_scene(sim)
    cf = sim.render_camera(camera)
    k, pose = cf.intrinsics.astype(np.float64), cf.world_from_camera.astype(np.float64)
    blob = cf.segmentation == {v: i for i, v in sim.label_map.items()}[name]
    assert blob.sum() >= 8, f"{name} barely visible from {camera}"

    (u, v), z = project(centre, k, pose)
    assert blob[round(v), round(u)], f"{name} centre projects off its pixels in {camera}"

    points = backproject(cf.depth, k, pose)[blob]  # (N, 3) world points on the object
    if name == "target":  # sphere: every back-projected pixel lies on its surface
        radius = sim.model.geom_size[sim.model.body("target").geomadr[0], 0]
        off_surface = np.abs(np.linalg.norm(points - centre, axis=1) - radius)
        assert off_surface.max() < 0.01
    else:  # box: inside the (slightly inflated) box and on its boundary
        half = sim.model.geom_size[sim.model.body("block").geomadr[0]]
        local = np.abs((points - centre) @ sim.data.body("block").xmat.reshape(3, 3))
        assert np.all(local <= half + 0.01)
        assert np.all(np.max(local / half, axis=1) > 1 - 0.01 / half.min())
    assert z - 0.08 < cf.depth[round(v), round(u)] < z  # visible surface in front of the centre


@pytest.mark.parametrize("camera", CAMERAS)
def test_pixel_centres_match_mujoco_exactly(sim, camera):
    """Floor pixels back-project onto z = -0.5 to float precision; half a pixel off does not."""
    pose_scene(sim)
    cf = sim.render_camera(camera)
    floor = cf.segmentation == 0
    assert floor.sum() > 20
    k, pose = cf.intrinsics.astype(np.float64), cf.world_from_camera.astype(np.float64)
    height_error = np.abs(backproject(cf.depth, k, pose)[floor][:, 2] + 0.5)
    assert height_error.max() < 1e-4
    k_shifted = k.copy()
    k_shifted[:2, 2] += 0.5  # the "pixel corners" convention
    assert np.abs(backproject(cf.depth, k_shifted, pose)[floor][:, 2] + 0.5).max() > 1e-3


def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    u0, v0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
    return (
        image[v0, u0] * (1 - fu) * (1 - fv)
        + image[v0, u0 + 1] * fu * (1 - fv)
        + image[v0 + 1, u0] * (1 - fu) * fv
        + image[v0 + 1, u0 + 1] * fu * fv
    )


@pytest.mark.parametrize(
    "a, b", [("front", "top"), ("top", "side"), ("side", "orbit"), ("orbit", "front")]
)
def test_two_cameras_agree_on_depth(sim, a, b):
    """Points seen by camera a reproject into camera b at the depth b measured there."""
    pose_scene(sim)
    ca, cb = sim.render_camera(a), sim.render_camera(b)
    seen = ca.segmentation >= 0
    points = backproject(ca.depth, ca.intrinsics, ca.world_from_camera)[seen]  # (N, 3)
    labels = ca.segmentation[seen]
    uv, z = project(points, cb.intrinsics, cb.world_from_camera)
    h, w = cb.depth.shape
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] < h - 1) & (z > 0)
    uv, z, labels = uv[inside], z[inside], labels[inside]
    # Keep points whose 4 neighbouring pixels in b show the same object (no occlusion edge).
    u0, v0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    same = np.ones(len(uv), bool)
    for du, dv in itertools.product((0, 1), (0, 1)):
        same &= cb.segmentation[v0 + dv, u0 + du] == labels
    error = np.abs(_bilinear(cb.depth.astype(np.float64), uv[same]) - z[same])
    assert same.sum() > 200
    assert np.median(error) < 2e-3
    assert np.mean(error < 0.01) > 0.9  # the rest: b sees a nearer part of the same object


def test_orbit_camera_pose_is_set_and_rendered(sim):
    pose_scene(sim)
    assert np.allclose(sim.world_from_camera("orbit"), orbit_pose(**ORBIT), atol=1e-6)
    moved = sim.render_camera("orbit").rgb
    sim.reset(seed=0)  # reset restores the scene's camera poses
    assert not np.allclose(sim.world_from_camera("orbit"), orbit_pose(**ORBIT), atol=1e-3)
    pose_scene(sim)
    assert np.array_equal(sim.render_camera("orbit").rgb, moved)
    with pytest.raises(CameraError, match="did you mean 'orbit'"):
        sim.set_camera_pose("orbitt", np.eye(4))


def test_same_seed_same_episode_and_different_seeds_differ():
    sim = MujocoSim("reach", cameras=["front"], size=32)
    policy = make_expert("reach", skill=0.5, seed=0)

    def run(seed):
        frames = list(itertools.islice(rollout(sim, policy, seed), 8))
        return (
            np.stack([f.cameras["front"].rgb for f in frames]),
            np.stack([f.cameras["front"].depth for f in frames]),
            np.stack([f.action for f in frames]),
            np.stack([f.state for f in frames]),
        )

    first, again, other = run(5), run(5), run(6)
    for x, y in zip(first, again, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[2], other[2])
    sim.close()


@pytest.mark.parametrize("task", ["reach", "push"])
def test_expert_succeeds_and_random_policy_rarely_does(task):
    sim = MujocoSim(task, cameras=[])  # state only: no rendering
    expert = [record_episode(sim, make_expert(task, 1.0), seed).success for seed in range(3)]
    random = [record_episode(sim, make_expert(task, 0.0), seed).success for seed in range(4)]
    assert all(expert), expert
    assert sum(random) <= 1, random
    sim.close()


def test_episode_records_actions_rewards_and_length():
    sim = MujocoSim("reach", cameras=["top"], size=16)
    episode = record_episode(sim, make_expert("reach", 1.0), seed=2)
    assert len(episode) == sim.task.episode_length
    assert episode.cameras["top"].rgb.shape == (len(episode), 16, 16, 3)
    assert np.all(np.isfinite(episode.action)) and np.all(np.abs(episode.action) <= 1)
    assert episode.reward[-1] > episode.reward[0]  # the expert closes in on the target
    assert episode.success and episode.instruction == "reach the red target"
    with pytest.raises(ActionError):
        sim.step(np.zeros(3))
    with pytest.raises(ActionError):
        sim.step(np.array([np.nan, 0.0]))
    sim.close()


# ---------------------------------------------------------------------- task.toml errors


def test_unknown_task_suggests_a_known_one():
    with pytest.raises(TaskError, match="did you mean 'reach'") as e:
        find_task("rech")
    assert "push" in str(e.value)


def test_find_task_accepts_a_folder(task_copy):
    assert find_task(task_copy).name == "reach"
    assert find_task(str(task_copy)).folder == task_copy


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("episode_length = 40", "", "episode_length"),  # missing
        ("episode_length = 40", 'episode_length = "forty"', "episode_length"),  # wrong type
        ("fps = 10", "fps = -1", "control.fps"),
        ("radius = 0.04", 'radius = "small"', "success.radius"),
        ("low = [-1.0, -1.0]", "low = [-1.0]", "action"),
        ('when = "end"', 'when = "sometimes"', "success.when"),
        ("fps = 10", "fps = 7", "control.fps"),  # does not divide the physics rate
        ("target = 6", "", "objects"),  # the target's geom maps to no object
        ("target_radius = [0.16, 0.36]", 'target_radius = "far"', "reset.target_radius"),
        ("gain = 6.0", "gain = -6.0", "expert.gain"),
    ],
)
def test_bad_task_toml_names_file_and_field(task_copy, old, new, field):
    toml = task_copy / "task.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))
    with pytest.raises(TaskError) as e:
        MujocoSim(load_task(task_copy), cameras=[])
    assert e.value.field == field
    assert e.value.path.endswith("task.toml")
    assert f"task.toml: {field}" in str(e.value)


def test_bad_scene_names_the_scene_file(task_copy):
    scene = task_copy / "scene.xml"
    scene.write_text(scene.read_text().replace('<site name="target"', '<site name="aim"'))
    with pytest.raises(TaskError, match="no site named 'target'") as e:
        MujocoSim(load_task(task_copy), cameras=[])
    assert e.value.path.endswith("scene.xml")
