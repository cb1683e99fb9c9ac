"""Plücker ray maps (Plücker 1865; as camera conditioning in e.g. CameraCtrl, Cosmos).

Each latent pixel gets the ray through its centre as 6 numbers ``(d, m)``: the unit
direction ``d`` and the moment ``m = o × d`` (``o`` the camera centre). Poses are taken
relative to a reference camera (the first context frame's), so the map does not depend
on where the world origin is. OpenCV convention (x right, y down, z forward); pixel
indices are pixel centres.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cosmos_sim.errors import CameraError


def _as_tensor(x, name: str, shape: tuple[int, int]) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=torch.float64)
    if t.shape[-2:] != shape:
        raise CameraError(
            "wrong matrix shape",
            field=name,
            expected=f"(..., {shape[0]}, {shape[1]})",
            found=tuple(t.shape),
        )
    if not bool(torch.isfinite(t).all()):
        raise CameraError(
            "non-finite values (unknown camera?)", field=name, expected="finite", found="NaN/inf"
        )
    return t


def scale_intrinsics(K: Tensor, image_size: tuple[int, int], height: int, width: int) -> Tensor:
    """K of an ``image_size`` (H, W) image → K of a (height, width) grid over the same view."""
    sy, sx = height / image_size[0], width / image_size[1]
    K = K.clone()
    K[..., 0, 0], K[..., 0, 1], K[..., 1, 1] = (
        K[..., 0, 0] * sx,
        K[..., 0, 1] * sx,
        K[..., 1, 1] * sy,
    )
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5  # pixel centres: u ↦ (u + ½)·s − ½
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def plucker_rays(
    K,
    world_from_camera,
    height: int,
    width: int,
    reference_world_from_camera=None,
    image_size: tuple[int, int] | None = None,
) -> Tensor:
    """(..., 3, 3) intrinsics and (..., 4, 4) poses → (..., 6, height, width) float32 rays.

    ``K`` is for a ``height × width`` grid, or for an ``image_size`` image when given (it is
    then rescaled to the latent grid). With ``reference_world_from_camera`` (..., 4, 4),
    rays are expressed in that camera's frame; without it, in the world frame.
    """
    K = _as_tensor(K, "intrinsics", (3, 3))
    pose = _as_tensor(world_from_camera, "world_from_camera", (4, 4))
    if image_size is not None:
        K = scale_intrinsics(K, image_size, height, width)
    if reference_world_from_camera is not None:
        ref = _as_tensor(reference_world_from_camera, "reference_world_from_camera", (4, 4))
        pose = torch.linalg.inv(ref) @ pose  # reference_from_camera
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    pix = torch.stack([u, v, torch.ones_like(u)], -1)  # (h, w, 3) homogeneous pixel centres
    rays_cam = torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(K), pix)  # (..., h, w, 3)
    d = torch.einsum("...ij,...hwj->...hwi", pose[..., :3, :3], rays_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = pose[..., None, None, :3, 3].expand_as(d)  # (..., h, w, 3) camera centre
    m = torch.linalg.cross(o, d, dim=-1)
    return torch.cat([d, m], -1).movedim(-1, -3).float()  # (..., 6, h, w)


def clip_plucker_rays(K, world_from_camera, height: int, width: int, image_size=None) -> Tensor:
    """(T, 3, 3), (T, 4, 4) of one camera over a clip → (T, 6, h, w), relative to frame 0."""
    pose = _as_tensor(world_from_camera, "world_from_camera", (4, 4))
    return plucker_rays(K, pose, height, width, pose[0], image_size)
