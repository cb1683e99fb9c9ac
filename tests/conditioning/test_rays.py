"""Plücker ray maps: unit directions, moments, invariance to the world origin, intrinsics scaling."""

import numpy as np
import pytest
import torch

from cosmos_sim.conditioning.rays import clip_plucker_rays, plucker_rays
from cosmos_sim.errors import CameraError


def random_pose(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = q, rng.normal(size=3) * 2
    return pose


K64 = np.array([[60.0, 0, 31.5], [0, 60.0, 31.5], [0, 0, 1]])


def test_directions_unit_and_moment_is_origin_cross_direction():
    rng = np.random.default_rng(0)
    pose = random_pose(rng)
    rays = plucker_rays(K64, pose, 8, 8, image_size=(64, 64))
    assert rays.shape == (6, 8, 8) and rays.dtype == torch.float32
    d, m = rays[:3].double(), rays[3:].double()
    torch.testing.assert_close(
        d.norm(dim=0), torch.ones(8, 8, dtype=torch.float64), atol=1e-6, rtol=0
    )
    o = torch.as_tensor(pose[:3, 3])[:, None, None].expand_as(d)
    torch.testing.assert_close(m, torch.linalg.cross(o, d, dim=0), atol=1e-5, rtol=0)


def test_invariant_to_a_world_origin_shift():
    rng = np.random.default_rng(1)
    poses = np.stack([random_pose(rng) for _ in range(3)])
    shift = random_pose(rng)  # a rigid change of world frame
    k = np.stack([K64] * 3)
    a = clip_plucker_rays(k, poses, 8, 8, image_size=(64, 64))
    b = clip_plucker_rays(k, shift @ poses, 8, 8, image_size=(64, 64))
    assert a.shape == (3, 6, 8, 8)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the reference frame itself has its centre at the origin: zero moment
    assert a[0, 3:].abs().max() < 1e-6


def test_latent_grid_rays_pass_through_the_pixel_block_centres():
    """Scaled intrinsics: latent cell (i, j) of an 8× grid looks through image point 8j + 3.5."""
    rays = plucker_rays(K64, np.eye(4), 8, 8, image_size=(64, 64))
    d = rays[:3]
    u = 60.0 * d[0] / d[2] + 31.5  # project the directions back with the image K
    v = 60.0 * d[1] / d[2] + 31.5
    centres = torch.arange(8) * 8 + 3.5
    torch.testing.assert_close(u[0], centres, atol=1e-4, rtol=0)
    torch.testing.assert_close(v[:, 0], centres, atol=1e-4, rtol=0)
    # the centred principal point looks straight down +z (OpenCV)
    assert torch.allclose(rays[:3, 3:5, 3:5].mean((1, 2)), torch.tensor([0.0, 0.0, 1.0]), atol=0.02)


def test_bad_cameras_are_refused():
    with pytest.raises(CameraError, match="world_from_camera"):
        plucker_rays(K64, np.eye(3), 8, 8)
    with pytest.raises(CameraError, match="non-finite"):
        plucker_rays(np.full((3, 3), np.nan), np.eye(4), 8, 8)
