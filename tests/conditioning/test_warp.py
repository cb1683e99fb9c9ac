"""The camera warp base: the table plane's homography between two cameras of the simulator
maps table points where the simulator projects them, and warping frame 0 into frame t's
camera reproduces the simulator's frame t on the table."""

import numpy as np
import pytest

from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.conditioning.cameras import backproject, project
from cosmos_sim.conditioning.warp import (
    chunk_poses,
    infinity_homography,
    interpolate_pose,
    mujoco_table_height,
    plane_homography,
    plane_visible,
    warp_frame,
)
from cosmos_sim.errors import CameraError

SIZE = 64


@pytest.fixture(scope="module")
def orbit_frames():
    """Frame 0 and frame 12 of a cameranav episode whose camera yaws, pitches and dollies
    (rgb, depth, segmentation, K, pose), and the table's object id."""
    sim = MujocoSim("cameranav", height=SIZE, width=SIZE, cameras=["orbit"])
    try:
        first = sim.reset(seed=4).cameras["orbit"]
        for _ in range(12):
            sim.step(np.array([0.8, -0.5, 0.6, 0.0, 0.0]))  # camera moves, the arm stays
        last = sim.observe(["orbit"]).cameras["orbit"]
        table = sim.task.objects["table"]
    finally:
        sim.close()
    return first, last, table


def _camera(frame):
    return frame.intrinsics.astype(np.float64), frame.world_from_camera.astype(np.float64)


def test_table_height_is_the_top_of_the_scenes_table():
    assert mujoco_table_height("cameranav") == pytest.approx(0.0, abs=1e-9)
    assert mujoco_table_height("push") == pytest.approx(0.0, abs=1e-9)


def test_plane_homography_maps_table_points_to_their_pixels_in_the_new_camera(orbit_frames):
    first, last, _ = orbit_frames
    (k0, p0), (k1, p1) = _camera(first), _camera(last)
    assert np.abs(p1[:3, 3] - p0[:3, 3]).max() > 0.05  # the camera really moved
    xy = np.random.default_rng(0).uniform(-0.3, 0.3, (50, 2))
    world = np.concatenate([xy, np.zeros((50, 1))], 1)  # on the table top
    uv0, _ = project(world, k0, p0)
    uv1, _ = project(world, k1, p1)
    h = plane_homography(k0, p0, k1, p1, 0.0, (SIZE, SIZE))
    mapped = np.concatenate([uv0, np.ones((50, 1))], 1) @ h.T
    np.testing.assert_allclose(mapped[:, :2] / mapped[:, 2:], uv1, atol=1e-4)  # float32 poses


def test_plane_homography_agrees_with_the_simulators_depth_on_table_pixels(orbit_frames):
    """Table pixels of frame 0 back-projected through the simulator's depth land where the
    homography puts them in frame t's camera (sub-pixel: the depth is rendered, float32)."""
    first, last, table = orbit_frames
    (k0, p0), (k1, p1) = _camera(first), _camera(last)
    world = backproject(first.depth, k0, p0)
    top = (first.segmentation == table) & (np.abs(world[..., 2]) < 1e-4)  # not its sides
    assert top.sum() > 0.5 * (first.segmentation == table).sum()  # the table top is z = 0
    uv1, _ = project(world[top], k1, p1)
    v, u = np.nonzero(top)
    h = plane_homography(k0, p0, k1, p1, 0.0, (SIZE, SIZE))
    mapped = np.stack([u, v, np.ones_like(u)], 1) @ h.T
    assert np.abs(mapped[:, :2] / mapped[:, 2:] - uv1).max() < 0.05


def test_warp_puts_the_goal_patch_on_the_table_where_the_new_camera_sees_it(orbit_frames):
    """The goal patch lies on the table: frame 0's goal pixels warped into frame t's camera
    fall on frame t's goal (or the block, which may hide part of it). Colours are not
    compared: MuJoCo's headlight moves with the camera, so the table brightens as it turns."""
    first, last, table = orbit_frames
    (k0, p0), (k1, p1) = _camera(first), _camera(last)
    warped = warp_frame(first.rgb, k0, p0, k1, p1, 0.0)
    assert warped.dtype == np.uint8 and warped.shape == first.rgb.shape
    goal, block = 8, 7  # envs/cameranav/task.toml [objects]
    mask = (first.segmentation == goal).astype(np.float32)[..., None]
    moved = warp_frame(mask, k0, p0, k1, p1, 0.0)[..., 0] > 0.5
    on_goal = np.isin(last.segmentation, [goal, block])
    assert moved.sum() > 100
    assert (moved & on_goal).sum() / moved.sum() > 0.85  # edge pixels: the patch is 4 mm high
    assert (mask[..., 0] > 0.5)[on_goal].sum() == 0  # copying the frame misses it entirely


def test_plane_visibility_and_the_plane_at_infinity(orbit_frames):
    first, last, _ = orbit_frames
    (k0, p0), (k1, p1) = _camera(first), _camera(last)
    visible = plane_visible(k0, p0, k1, p1, 0.0, (SIZE, SIZE))
    assert visible.all()  # the orbit camera looks down at the table: every ray meets z = 0
    # a camera looking up sees the plane nowhere
    up = p1.copy()
    up[:3, :3] = p1[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    assert not plane_visible(k0, p0, k1, up, 0.0, (SIZE, SIZE)).any()
    # pure rotation: the plane at infinity is the identity for the same camera
    np.testing.assert_allclose(infinity_homography(k0, p0, k0, p0), np.eye(3), atol=1e-6)


def test_same_camera_warp_is_the_identity(orbit_frames):
    first, _, _ = orbit_frames
    k0, p0 = _camera(first)
    np.testing.assert_array_equal(warp_frame(first.rgb, k0, p0, k0, p0, 0.0), first.rgb)


def test_pose_interpolation_ends_at_both_poses_and_steps_evenly(orbit_frames):
    first, last, _ = orbit_frames
    (_, p0), (_, p1) = _camera(first), _camera(last)
    np.testing.assert_allclose(interpolate_pose(p0, p1, 0.0), p0, atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(p0, p1, 1.0), p1, atol=1e-6)
    poses = chunk_poses(p0, p1, 4)
    assert poses.shape == (4, 4, 4)
    np.testing.assert_allclose(poses[-1], p1, atol=1e-6)
    for pose in poses:  # still rotations
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(poses[1, :3, 3], (p0[:3, 3] + p1[:3, 3]) / 2, atol=1e-12)


def test_bad_cameras_and_frames_are_one_line_errors(orbit_frames):
    first, last, _ = orbit_frames
    (k0, p0), (k1, p1) = _camera(first), _camera(last)
    with pytest.raises(CameraError, match="wrong matrix shape"):
        plane_homography(k0[:2], p0, k1, p1, 0.0, (SIZE, SIZE))
    bad = p1.copy()
    bad[0, 3] = np.nan
    with pytest.raises(CameraError, match="non-finite"):
        warp_frame(first.rgb, k0, p0, k1, bad, 0.0)
    with pytest.raises(CameraError, match="frame"):
        warp_frame(first.rgb[..., 0], k0, p0, k1, p1, 0.0)


def test_an_unknown_warp_reference_is_refused_by_name_in_the_config_too():
    from cosmos_sim.conditioning.warp import check_warp_reference
    from cosmos_sim.errors import ConfigError
    from cosmos_sim.models.world_model import ActionWorldModelConfig

    check_warp_reference("previous")
    with pytest.raises(ConfigError, match="warp_reference: unknown warp reference.*found last"):
        check_warp_reference("last")
    with pytest.raises(ConfigError, match="unknown warp reference"):
        ActionWorldModelConfig(warp_reference="last")
