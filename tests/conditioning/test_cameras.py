"""Camera conventions: intrinsics from fovy, OpenGL <-> OpenCV, projection round trips."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmos_sim.conditioning.cameras import (
    CV_FROM_GL,
    backproject,
    cv_from_gl,
    fovy_from_intrinsics,
    gl_from_cv,
    intrinsics_from_fovy,
    invert_pose,
    look_at,
    mujoco_camera_from_pose,
    orbit_pose,
    project,
    quat_from_matrix,
    world_from_camera_mujoco,
)
from cosmos_sim.errors import CameraError

angles = st.floats(-180.0, 180.0)
elevations = st.floats(-85.0, 85.0)
distances = st.floats(0.2, 5.0)
coords = st.floats(-1.0, 1.0)


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_intrinsics_from_fovy():
    k = intrinsics_from_fovy(90.0, width=80, height=64)
    # tan(45°) = 1: the half-height (32 px) equals the focal length; square pixels.
    assert np.allclose(k, [[32.0, 0.0, 39.5], [0.0, 32.0, 31.5], [0.0, 0.0, 1.0]])
    assert fovy_from_intrinsics(k, 64) == pytest.approx(90.0)
    k60 = intrinsics_from_fovy(60.0, 64, 64)
    assert k60[1, 1] == pytest.approx(32.0 / np.tan(np.deg2rad(30.0)))
    with pytest.raises(CameraError, match="fovy"):
        intrinsics_from_fovy(0.0, 64, 64)


def test_image_edges_lie_on_the_frustum():
    """The top edge of the top pixel row (v = -0.5) is fovy/2 above the optical axis."""
    k = intrinsics_from_fovy(50.0, 40, 30)
    top_edge = np.array([0.0, np.tan(np.deg2rad(-25.0)), 1.0])  # camera frame, y down
    uv, z = project(top_edge, k, np.eye(4))
    assert uv[1] == pytest.approx(-0.5) and uv[0] == pytest.approx(19.5) and z == 1.0


def test_gl_cv_flip_is_its_own_inverse():
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = random_rotation(0), [0.1, -2.0, 3.0]
    assert np.allclose(gl_from_cv(cv_from_gl(pose)), pose)
    assert np.allclose(CV_FROM_GL @ CV_FROM_GL, np.eye(4))
    # the GL camera's -Z (view direction) is the CV camera's +Z; GL +Y (up) is CV -Y (down)
    cv = cv_from_gl(pose)
    assert np.allclose(cv[:3, 2], -pose[:3, 2]) and np.allclose(cv[:3, 1], -pose[:3, 1])
    assert np.allclose(cv[:3, 3], pose[:3, 3])


def test_mujoco_camera_round_trip_and_quaternion():
    for seed in range(5):
        rotation = random_rotation(seed)
        expected = np.zeros(4)
        mujoco.mju_mat2Quat(expected, rotation.ravel())
        assert np.allclose(quat_from_matrix(rotation), expected * np.sign(expected[0]))
        pose = world_from_camera_mujoco(np.array([0.5, 0.2, 1.0]), rotation.ravel())
        pos, quat = mujoco_camera_from_pose(pose)
        back = np.zeros(9)
        mujoco.mju_quat2Mat(back, quat)
        assert np.allclose(pos, [0.5, 0.2, 1.0]) and np.allclose(back.reshape(3, 3), rotation)
    with pytest.raises(CameraError, match="rigid"):
        mujoco_camera_from_pose(np.diag([1.0, 1.0, -1.0, 1.0]))


def test_look_at_points_z_at_the_target_with_y_down():
    pose = look_at(eye=[0.0, -2.0, 1.0], target=[0.0, 0.0, 1.0])
    assert np.allclose(pose[:3, 2], [0.0, 1.0, 0.0])  # forward
    assert np.allclose(pose[:3, 1], [0.0, 0.0, -1.0])  # image down = world down
    assert np.allclose(pose[:3, 0], [1.0, 0.0, 0.0])  # image right
    (u, v), z = project(np.array([0.0, 0.0, 1.0]), intrinsics_from_fovy(45, 65, 33), pose)
    assert (u, v, z) == pytest.approx((32.0, 16.0, 2.0))
    with pytest.raises(CameraError):
        look_at([0.0, 0.0, 1.0], [0.0, 0.0, 0.0])  # straight down: up is parallel


@settings(max_examples=60, deadline=None)
@given(angles, elevations, distances, coords, coords)
def test_orbit_camera_looks_at_its_target(azimuth, elevation, distance, x, y):
    lookat = np.array([x, y, 0.1])
    pose = orbit_pose(azimuth, elevation, distance, lookat)
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    assert abs(pose[2, 0]) < 1e-9  # no roll: image x stays horizontal
    assert np.linalg.norm(pose[:3, 3] - lookat) == pytest.approx(distance)
    (u, v), z = project(lookat, intrinsics_from_fovy(45, 64, 64), pose)
    assert (u, v, z) == pytest.approx((31.5, 31.5, distance))
    assert np.allclose(invert_pose(pose) @ pose, np.eye(4), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 10_000),
    st.floats(20.0, 120.0),
    st.integers(2, 24),
    st.integers(2, 24),
    st.floats(0.1, 10.0),
)
def test_project_inverts_backproject(seed, fovy, height, width, depth_scale):
    rng = np.random.default_rng(seed)
    k = intrinsics_from_fovy(fovy, width, height)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = random_rotation(seed), rng.normal(size=3)
    depth = rng.uniform(0.05, 1.0, size=(height, width)) * depth_scale
    points = backproject(depth, k, pose)  # (H, W, 3)
    uv, z = project(points, k, pose)
    v, u = np.mgrid[0:height, 0:width]
    assert np.allclose(uv[..., 0], u, atol=1e-6) and np.allclose(uv[..., 1], v, atol=1e-6)
    assert np.allclose(z, depth, rtol=1e-9, atol=1e-9)


def test_points_behind_the_camera_have_negative_depth():
    _, z = project(np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 2.0]]), np.eye(3), np.eye(4))
    assert list(z) == [-1.0, 2.0]
