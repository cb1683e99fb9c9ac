"""Warping a frame into another camera: the geometric base of camera-control world models.

A camera-control world model asked for the view from a new camera starts from the first
context frame warped into that camera, and samples only what the warp misses (CorrDiff's
regression + diffusion split, with geometry as the regression). From RGB alone the warp is
the homography the **table plane** ``z = height`` induces between the two cameras
(Hartley & Zisserman, *Multiple View Geometry*, sec. 13.1): exact for every pixel on the
table, approximate for the arm and the block above it. Pixels of the new camera whose ray
misses the plane in front of either camera (the background above the horizon) take the
**plane at infinity** instead, the rotation-only homography ``K1 R K0⁻¹``.

What is warped (``WARP_REFERENCES``): the episode's ``first`` frame (anchored: nothing
generated is warped again), or the ``previous`` latent frame's last video frame (a smaller
residual — the arm has moved less — but a rollout warps its own generated frames).

OpenCV conventions (``conditioning/cameras.py``): ``world_from_camera`` 4×4, pixel indices
are pixel centres — the same convention as ``cv2.warpPerspective``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from cosmos_sim.conditioning.cameras import invert_pose
from cosmos_sim.conditioning.points import latent_homography
from cosmos_sim.errors import CameraError, ConfigError, TaskError

WARP_REFERENCES = ("first", "previous")  # the frame a warp base warps (module docstring)


def check_warp_reference(reference: str) -> None:
    """Refuse a warp reference other than ``WARP_REFERENCES`` by name (config and CLI)."""
    if reference not in WARP_REFERENCES:
        raise ConfigError(
            "unknown warp reference",
            field="warp_reference",
            expected=list(WARP_REFERENCES),
            found=reference,
        )


def _camera(K, world_from_camera, where: str) -> tuple[np.ndarray, np.ndarray]:
    K, pose = np.asarray(K, np.float64), np.asarray(world_from_camera, np.float64)
    if K.shape != (3, 3) or pose.shape != (4, 4):
        raise CameraError(
            "wrong matrix shape",
            field=where,
            expected="K (3, 3), world_from_camera (4, 4)",
            found=(K.shape, pose.shape),
        )
    if not (np.isfinite(K).all() and np.isfinite(pose).all()):
        raise CameraError("non-finite camera (unknown?)", field=where, found="NaN/inf")
    return K, pose


def plane_to_pixels(K, world_from_camera, height: float, image_size: tuple[int, int]):
    """(3, 3) map from homogeneous plane points ``(x, y, 1)`` at ``z = height`` to homogeneous
    pixels ``(u·w, v·w, w)``, ``w`` the depth (points.py's projection, in pixels)."""
    K, pose = _camera(K, world_from_camera, "intrinsics/world_from_camera")
    return latent_homography(K, pose, height, (0.0, 0.0), (1.0, 1.0), image_size, image_size)


def plane_homography(
    K0, world_from_camera0, K1, world_from_camera1, height: float, image_size: tuple[int, int]
) -> np.ndarray:
    """(3, 3) H with ``p1 ~ H p0`` for pixels of points on the plane ``z = height``."""
    m0 = plane_to_pixels(K0, world_from_camera0, height, image_size)
    m1 = plane_to_pixels(K1, world_from_camera1, height, image_size)
    return m1 @ np.linalg.inv(m0)


def infinity_homography(K0, world_from_camera0, K1, world_from_camera1) -> np.ndarray:
    """(3, 3) ``K1 R10 K0⁻¹``: the homography of points at infinity (camera rotation only)."""
    K0, pose0 = _camera(K0, world_from_camera0, "reference camera")
    K1, pose1 = _camera(K1, world_from_camera1, "target camera")
    rotation = (invert_pose(pose1) @ pose0)[:3, :3]  # camera1_from_camera0
    return K1 @ rotation @ np.linalg.inv(K0)


def plane_visible(
    K0, world_from_camera0, K1, world_from_camera1, height: float, image_size: tuple[int, int]
) -> np.ndarray:
    """(H, W) bool: target pixels whose ray meets the plane in front of both cameras."""
    m0 = plane_to_pixels(K0, world_from_camera0, height, image_size)
    m1 = plane_to_pixels(K1, world_from_camera1, height, image_size)
    v, u = np.mgrid[: image_size[0], : image_size[1]].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], -1)  # (H, W, 3) target pixel centres
    plane = pix @ np.linalg.inv(m1).T  # (H, W, 3) ~ (x, y, 1) / depth1
    s = plane[..., 2]  # 1 / depth in the target camera (up to the sign of the ray)
    depth0 = (plane @ m0.T)[..., 2] / np.where(s == 0, np.inf, s)
    return (s > 0) & (depth0 > 0)


def warp_frame(
    frame: np.ndarray,
    K0,
    world_from_camera0,
    K1,
    world_from_camera1,
    height: float,
) -> np.ndarray:
    """``frame`` (H, W, C) seen by camera 0 → as camera 1 would see it (same dtype): the table
    plane's homography, the plane at infinity where the target ray misses the table plane;
    pixels from outside the frame replicate its border."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
        raise CameraError("a frame is (H, W, C)", field="frame", found=frame.shape)
    size = frame.shape[:2]
    args = (K0, world_from_camera0, K1, world_from_camera1)
    dsize, flags = (size[1], size[0]), cv2.INTER_LINEAR
    border = cv2.BORDER_REPLICATE
    on_plane = cv2.warpPerspective(
        frame, plane_homography(*args, height, size), dsize, flags=flags, borderMode=border
    )
    at_infinity = cv2.warpPerspective(
        frame, infinity_homography(*args), dsize, flags=flags, borderMode=border
    )
    visible = plane_visible(*args, height, size)
    out = np.where(
        visible[..., None], on_plane.reshape(frame.shape), at_infinity.reshape(frame.shape)
    )
    return out.astype(frame.dtype)


def warp_video(frame: np.ndarray, K: np.ndarray, poses: np.ndarray, height: float) -> np.ndarray:
    """One frame (H, W, C) of ``poses[0]``'s camera → (T, H, W, C) warped to every pose in
    ``poses`` (T, 4, 4); ``K`` (3, 3) or (T, 3, 3)."""
    poses = np.asarray(poses, np.float64)
    Ks = np.broadcast_to(np.asarray(K, np.float64), (len(poses), 3, 3))
    return np.stack(
        [warp_frame(frame, Ks[0], poses[0], k, p, height) for k, p in zip(Ks, poses, strict=True)]
    )


def interpolate_pose(pose0: np.ndarray, pose1: np.ndarray, alpha: float) -> np.ndarray:
    """The 4×4 pose ``alpha`` ∈ [0, 1] of the way from ``pose0`` to ``pose1``: the rotation
    about its fixed axis (Rodrigues), the camera centre on the straight line."""
    rotvec, _ = cv2.Rodrigues(pose0[:3, :3].T @ pose1[:3, :3])
    turn, _ = cv2.Rodrigues(alpha * rotvec)
    out = np.eye(4)
    out[:3, :3] = pose0[:3, :3] @ turn
    out[:3, 3] = (1 - alpha) * pose0[:3, 3] + alpha * pose1[:3, 3]
    return out


def chunk_poses(pose_from: np.ndarray, pose_to: np.ndarray, chunk: int) -> np.ndarray:
    """(chunk, 4, 4): the camera at each video frame of a latent frame, from the pose at the
    previous latent frame's last video frame to ``pose_to`` at this one's (a world-model env
    knows only those: one pose per step)."""
    return np.stack([interpolate_pose(pose_from, pose_to, j / chunk) for j in range(1, chunk + 1)])


@torch.no_grad()
def warp_base_latents(
    tokenizer: torch.nn.Module,
    reference: np.ndarray,
    K: np.ndarray,
    reference_pose: np.ndarray,
    pose_from: np.ndarray,
    pose_to: np.ndarray,
    height: float,
    chunk: int,
) -> Tensor:
    """The warp base of B new latent frames (B, C, h, w): each ``reference`` frame (B, H, W, 3)
    uint8 of camera ``reference_pose`` (B, 4, 4) warped into the c cameras from
    ``pose_from`` to ``pose_to`` (B, 4, 4), and encoded as one latent frame. The tokenizer
    encodes each group of c frames on its own, so this is the latent frame the whole warped
    video would give. ``K`` (3, 3) of the (H, W) frames; ``chunk`` video frames per latent
    frame (the tokenizer's temporal compression)."""
    clips = []
    for ref, p_ref, p0, p1 in zip(reference, reference_pose, pose_from, pose_to, strict=True):
        warped = [warp_frame(ref, K, p_ref, K, p, height) for p in chunk_poses(p0, p1, chunk)]
        clips.append(np.stack([ref, *warped]))  # (1 + c, H, W, 3): a 2-latent-frame clip
    video = torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    device = next(tokenizer.parameters()).device
    return tokenizer.encode(video.to(device))[:, 1].float()  # (B, C, h, w)


@torch.no_grad()
def decode_frames(tokenizer: torch.nn.Module, latents: Tensor) -> np.ndarray:
    """Latent clips (B, N, C, h, w) → their decoded video (B, 1 + c(N − 1), H, W, 3) uint8."""
    video = tokenizer.decode(latents.to(next(tokenizer.parameters()).device))
    return (
        ((video.float().clamp(-1, 1) + 1) * 127.5)
        .round()
        .byte()
        .permute(0, 1, 3, 4, 2)
        .cpu()
        .numpy()
    )


def reference_frames(tokenizer: torch.nn.Module, first: Tensor) -> np.ndarray:
    """First latent frames (B, C, h, w) → their decoded frames (B, H, W, 3) uint8: what the
    warp starts from, in training and in the env alike (the model sees only latents)."""
    return decode_frames(tokenizer, first[:, None])[:, 0]


def mujoco_table_height(task: str) -> float:
    """World height (m) of the top of the ``table`` geom of a built-in MuJoCo task."""
    from cosmos_sim.bridge.mujoco_sim import MujocoSim

    sim = MujocoSim(task, height=16, width=16, depth=False, segmentation=False)
    try:
        try:
            geom = sim.model.geom("table")
        except KeyError as e:
            raise TaskError(
                "the plane warp needs the scene's table: no geom named 'table'",
                path=task,
                field="table",
            ) from e
        return float(geom.pos[2] + geom.size[2])
    finally:
        sim.close()
