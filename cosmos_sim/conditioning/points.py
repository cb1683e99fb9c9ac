"""State points: where the proprio state's planar positions fall in each camera's latent grid.

A world model told only "the end effector is at (x, y)" through a global embedding has to
learn the camera's projection before it can draw the arm there — slow on a small CPU
budget (the first models drew the arm ~25 cm from where their state said). The tasks'
states name planar positions as ``<point>.x`` / ``<point>.y`` pairs at a fixed height
(the arm's end effector, a block sliding on the table, targets), so for a fixed camera
the map from the *normalised* state pair to latent-grid coordinates is one homography
per point and camera, computed here once from the store's ``K`` and ``world_from_camera``
and saved in the model's config. The DiT (``models/dit.py``, ``StatePoints``) and the state
renderer (``models/heads.py``, ``StateRenderer``) turn them into Gaussian bumps at each
token / latent pixel, the way keypoint / trajectory maps condition video models. OpenCV
conventions; latent coordinates are latent-pixel centres.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from cosmos_sim.errors import CameraError

# How far a camera may move over a store (metres / radians, max abs entry of the pose)
# for its homography to still hold: the recorded cameras of a fixed-camera task are
# bit-identical across episodes; a moving one (CameraNav) has rays instead.
FIXED_CAMERA_TOLERANCE = 1e-4
SIGMAS = (0.5, 1.5)  # latent pixels: a narrow and a wide bump
FEATURES = 4  # per point: both bumps and the narrow one times the offset (dx, dy)


def point_tensors(state_points: list[dict]) -> tuple[Tensor, Tensor]:
    """A ``state_points`` config → (K, 2) long state indices of (x, y) and (V, K, 3, 3)
    float homographies (view-major)."""
    views = len(state_points[0]["homographies"])
    mats = [[p["homographies"][v] for p in state_points] for v in range(views)]
    index = torch.tensor([[p["x"], p["y"]] for p in state_points])
    return index, torch.tensor(mats).view(views, len(state_points), 3, 3)


def project(homographies: Tensor, xy: Tensor) -> Tensor:
    """(..., K, 3, 3) homographies, (..., K, 2) normalised state pairs → (..., K, 2) latent
    (column, row) coordinates."""
    homog = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
    uvw = (homographies @ homog[..., None])[..., 0]
    return uvw[..., :2] / uvw[..., 2:].clamp_min(1e-3)  # points behind the camera: far away


def point_features(uv: Tensor, centres: Tensor) -> Tensor:
    """Points at (..., K, 2) latent coordinates seen from (..., 2) cell centres (x, y) →
    (..., 4·K): per point, a narrow and a wide Gaussian of the distance d and the narrow one
    times d (the sub-cell offset: an 8×8 latent grid is coarse for a 2 cm block)."""
    d = uv - centres[..., None, :]
    r2 = d.square().sum(-1, keepdim=True)
    near, wide = (torch.exp(-r2 / (2 * s**2)) for s in SIGMAS)
    return torch.cat([near, wide, near * d.clamp(-2, 2)], -1).flatten(-2)


def planar_points(state_names: Sequence[str]) -> list[tuple[str, int, int]]:
    """(name, x index, y index) of every ``<name>.x`` / ``<name>.y`` pair in the state."""
    names = list(state_names)
    return [
        (n[:-2], i, names.index(n[:-2] + ".y"))
        for i, n in enumerate(names)
        if n.endswith(".x") and n[:-2] + ".y" in names
    ]


def mujoco_point_heights(task: str) -> dict[str, float]:
    """World height of each planar state point of a built-in MuJoCo task (from its sites
    after a reset; the points move in their plane only)."""
    from cosmos_sim.bridge.mujoco_sim import MujocoSim

    sim = MujocoSim(task, height=16, width=16, depth=False, segmentation=False)
    try:
        sim.reset(seed=0)
        heights = {}
        for name, _, _ in planar_points(sim.state_names):
            try:
                heights[name] = float(sim.data.site(name).xpos[2])
            except KeyError:
                continue
        return heights
    finally:
        sim.close()


def latent_homography(
    K: np.ndarray,
    world_from_camera: np.ndarray,
    height: float,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: tuple[int, int],
    grid: tuple[int, int],
) -> np.ndarray:
    """(3, 3) map from a normalised state pair ``(x_n, y_n, 1)`` to homogeneous latent-grid
    coordinates ``(u, v, w)`` (column, row): the world point is ``(mean + std·x_n, height)``,
    projected by the camera, rescaled from an ``image_size`` image to a ``grid`` of latent
    pixels (pixel centres map to pixel centres)."""
    K = np.asarray(K, np.float64)
    pose = np.asarray(world_from_camera, np.float64)
    if K.shape != (3, 3) or pose.shape != (4, 4):
        raise CameraError(
            "wrong matrix shape", field="intrinsics/world_from_camera", found=(K.shape, pose.shape)
        )
    if not (np.isfinite(K).all() and np.isfinite(pose).all()):
        raise CameraError("non-finite camera (unknown?)", field="intrinsics/world_from_camera")
    (mx, my), (sx, sy) = mean, std
    world = np.array([[sx, 0, mx], [0, sy, my], [0, 0, height], [0, 0, 1]])  # (4, 3)
    pixel = K @ np.linalg.inv(pose)[:3] @ world  # (3, 3): normalised pair → pixels
    fy, fx = grid[0] / image_size[0], grid[1] / image_size[1]
    to_grid = np.array([[fx, 0, (fx - 1) / 2], [0, fy, (fy - 1) / 2], [0, 0, 1]])
    return to_grid @ pixel


def plane_points(points_cfg: Sequence[dict]) -> Tensor:
    """(K, 4, 3) per point the map from its normalised state pair ``(x_n, y_n, 1)`` to the
    homogeneous world point ``(mean + std·x_n, height, 1)`` (``points_cfg`` entries carry
    ``height``, ``mean`` and ``std``, as :func:`camera_point_config` writes them)."""
    out = []
    for p in points_cfg:
        (mx, my), (sx, sy), h = p["mean"], p["std"], p["height"]
        out.append([[sx, 0, mx], [0, sy, my], [0, 0, h], [0, 0, 1]])
    return torch.tensor(out, dtype=torch.float32)


def camera_homographies(intrinsics: Tensor, world_from_camera: Tensor, world: Tensor) -> Tensor:
    """(B, 3, 3) latent-grid K, (B, 4, 4) poses, (K, 4, 3) :func:`plane_points` → (B, K, 3, 3)
    homographies from the normalised state pairs to latent-grid coordinates: what
    :func:`latent_homography` computes once for a fixed camera, for a moving one."""
    camera_from_world = torch.linalg.inv(world_from_camera)[:, :3]  # (B, 3, 4)
    return (intrinsics @ camera_from_world)[:, None] @ world  # (B, K, 3, 3)


def camera_point_config(
    state_names: Sequence[str],
    heights: dict[str, float],
    mean: Sequence[float],
    std: Sequence[float],
) -> list[dict]:
    """A camera renderer's ``renderer_points``: per planar point with a known height, its
    state indices, height and the normalisation of its pair (plain numbers)."""
    return [
        {
            "name": name,
            "x": ix,
            "y": iy,
            "height": float(heights[name]),
            "mean": [float(mean[ix]), float(mean[iy])],
            "std": [float(std[ix]), float(std[iy])],
        }
        for name, ix, iy in planar_points(state_names)
        if name in heights
    ]


def state_point_config(
    state_names: Sequence[str],
    heights: dict[str, float],
    mean: Sequence[float],
    std: Sequence[float],
    cameras: Sequence[tuple[np.ndarray, np.ndarray]],
    image_size: tuple[int, int],
    grid: tuple[int, int],
) -> list[dict]:
    """The DiT's ``state_points`` config: per planar point with a known height, its state
    indices and one homography per camera (the model's view order), as plain lists."""
    out = []
    for name, ix, iy in planar_points(state_names):
        if name not in heights:
            continue
        mats = [
            latent_homography(
                K,
                pose,
                heights[name],
                (mean[ix], mean[iy]),
                (std[ix], std[iy]),
                image_size,
                grid,
            )
            for K, pose in cameras
        ]
        out.append(
            {"name": name, "x": ix, "y": iy, "homographies": [m.ravel().tolist() for m in mats]}
        )
    return out


def fixed_camera(intrinsics: np.ndarray, poses: np.ndarray, where: str) -> tuple:
    """The one (K, world_from_camera) of a camera recorded as (T, 3, 3) / (T, 4, 4); a
    clear error when it moves (state points need a fixed camera)."""
    K, pose = np.asarray(intrinsics, np.float64), np.asarray(poses, np.float64)
    finite = bool(np.isfinite(K).all() and np.isfinite(pose).all())
    spread = max(np.ptp(K, axis=0).max(), np.ptp(pose, axis=0).max()) if finite else np.nan
    if not finite or spread > FIXED_CAMERA_TOLERANCE:
        raise CameraError(
            "state points need a fixed camera with known pose",
            path=where,
            field="world_from_camera",
            expected=f"constant within {FIXED_CAMERA_TOLERANCE}",
            found=float(spread),
        )
    return K[0], pose[0]
