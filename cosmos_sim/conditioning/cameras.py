"""Camera conventions: the only place that converts between them.

Inside the package every camera is **OpenCV**: x right, y down, z forward (into the
scene); poses are ``world_from_camera`` 4×4 (camera-to-world) and intrinsics are a
3×3 ``K``. Integer pixel indices are pixel *centres*, so the pixel ``(u, v)`` covers
``[u - 0.5, u + 0.5] × [v - 0.5, v + 0.5]`` and a centred principal point sits at
``((W - 1) / 2, (H - 1) / 2)``.

Foreign conventions convert here and nowhere else:

* MuJoCo / OpenGL / USD cameras look along their −Z axis with +Y up (x right). The
  two frames differ by a 180° turn about x: :data:`CV_FROM_GL` (its own inverse).
* MuJoCo gives the *vertical* field of view ``fovy`` in degrees and square pixels.
"""

from __future__ import annotations

import numpy as np

from cosmos_sim.errors import CameraError

# Axis flip between an OpenGL-style camera frame (x right, y up, z backward) and an
# OpenCV one (x right, y down, z forward). Symmetric and its own inverse.
CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])
GL_FROM_CV = CV_FROM_GL


# --------------------------------------------------------------------------- poses


def cv_from_gl(world_from_camera_gl: np.ndarray) -> np.ndarray:
    """OpenGL-convention camera pose(s) (..., 4, 4) → OpenCV-convention pose(s)."""
    return np.asarray(world_from_camera_gl, dtype=np.float64) @ CV_FROM_GL


def gl_from_cv(world_from_camera_cv: np.ndarray) -> np.ndarray:
    """OpenCV-convention camera pose(s) (..., 4, 4) → OpenGL-convention pose(s)."""
    return np.asarray(world_from_camera_cv, dtype=np.float64) @ GL_FROM_CV


def pose_from_rotation_translation(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4×4 rigid transform from a 3×3 rotation and a 3-vector translation."""
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    pose[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return pose


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of rigid transform(s) (..., 4, 4): ``camera_from_world`` from ``world_from_camera``."""
    pose = np.asarray(pose, dtype=np.float64)
    rotation_t = np.swapaxes(pose[..., :3, :3], -1, -2)
    out = np.zeros_like(pose)
    out[..., :3, :3] = rotation_t
    out[..., :3, 3] = -(rotation_t @ pose[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def world_from_camera_mujoco(cam_xpos: np.ndarray, cam_xmat: np.ndarray) -> np.ndarray:
    """OpenCV ``world_from_camera`` from MuJoCo's ``data.cam_xpos`` / ``data.cam_xmat``.

    ``cam_xmat`` (row-major 3×3, or flat 9) has the camera's x/y/z axes as columns in
    world coordinates, in the OpenGL convention (looks along −Z).
    """
    return cv_from_gl(pose_from_rotation_translation(cam_xmat, cam_xpos))


def mujoco_camera_from_pose(world_from_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`world_from_camera_mujoco`: (pos (3,), quat (4,) w-x-y-z) for MJCF."""
    pose_gl = gl_from_cv(world_from_camera)
    rotation = pose_gl[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5) or np.linalg.det(rotation) < 0:
        raise CameraError(
            "world_from_camera is not a rigid transform",
            field="world_from_camera",
            expected="an orthonormal rotation with det +1",
            found=np.round(rotation, 4).tolist(),
        )
    return pose_gl[:3, 3].copy(), quat_from_matrix(rotation)


def quat_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w ≥ 0, of a 3×3 rotation matrix (Shepperd's method)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = np.zeros(4)
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV ``world_from_camera`` of a camera at ``eye`` looking at ``target`` (no roll)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    if np.linalg.norm(forward) < 1e-9:
        raise CameraError("look_at needs eye != target", field="eye", found=eye.tolist())
    z = forward / np.linalg.norm(forward)
    x = np.cross(z, up)  # image right = forward × up
    if np.linalg.norm(x) < 1e-9:
        raise CameraError(
            "look_at: viewing direction is parallel to the up vector",
            field="up",
            expected="an up vector not parallel to target - eye",
            found=up.tolist(),
        )
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # image down
    return pose_from_rotation_translation(np.stack([x, y, z], axis=1), eye)


def orbit_pose(
    azimuth: float, elevation: float, distance: float, lookat=(0.0, 0.0, 0.0)
) -> np.ndarray:
    """OpenCV ``world_from_camera`` on a sphere around ``lookat`` (MuJoCo free-camera angles).

    ``azimuth`` (degrees) turns the viewing direction about +z from +x; ``elevation``
    (degrees) tilts it, negative = looking down (so the camera sits above ``lookat``).
    """
    if not distance > 0:
        raise CameraError("orbit distance must be positive", field="distance", found=distance)
    if not -90.0 < elevation < 90.0:
        raise CameraError(
            "orbit elevation must be strictly between -90 and 90 degrees",
            field="elevation",
            expected="(-90, 90)",
            found=elevation,
        )
    az, el = np.deg2rad(azimuth), np.deg2rad(elevation)
    forward = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    lookat = np.asarray(lookat, dtype=np.float64)
    return look_at(lookat - distance * forward, lookat)


# ---------------------------------------------------------------------- intrinsics


def intrinsics_from_fovy(fovy_degrees: float, width: int, height: int) -> np.ndarray:
    """OpenCV K for a symmetric pinhole with vertical field of view ``fovy`` and square pixels.

    The frustum's vertical extent spans the full image height ``H`` (pixel edges), so
    ``f = (H / 2) / tan(fovy / 2)``; its axis hits the image centre, which in the
    pixel-centre convention is ``((W - 1) / 2, (H - 1) / 2)``.
    """
    if not 0.0 < fovy_degrees < 180.0:
        raise CameraError("fovy must be in (0, 180) degrees", field="fovy", found=fovy_degrees)
    if width < 1 or height < 1:
        raise CameraError("image size must be positive", field="size", found=(width, height))
    focal = 0.5 * height / np.tan(0.5 * np.deg2rad(fovy_degrees))
    return np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def fovy_from_intrinsics(intrinsics: np.ndarray, height: int) -> float:
    """Vertical field of view (degrees) of K for an image ``height`` pixels tall."""
    return float(np.rad2deg(2.0 * np.arctan(0.5 * height / float(intrinsics[1, 1]))))


# ------------------------------------------------------- projection, back-projection


def project(
    points_world: np.ndarray, intrinsics: np.ndarray, world_from_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World points (..., 3) → pixel coordinates uv (..., 2) and depth z (...) along the axis.

    ``z`` is the distance to the image plane (negative behind the camera); ``uv`` is
    in the pixel-centre convention (column u, row v).
    """
    points = np.asarray(points_world, dtype=np.float64)
    camera_from_world = invert_pose(world_from_camera)
    p_cam = points @ camera_from_world[:3, :3].T + camera_from_world[:3, 3]  # (..., 3)
    z = p_cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = p_cam[..., :2] / z[..., None]
    k = np.asarray(intrinsics, dtype=np.float64)
    uv = xy @ k[:2, :2].T + k[:2, 2]
    return uv, z


def pixel_grid(height: int, width: int) -> np.ndarray:
    """(H, W, 2) pixel-centre coordinates (u = column, v = row)."""
    v, u = np.meshgrid(
        np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
    )
    return np.stack([u, v], axis=-1)


def backproject(
    depth: np.ndarray, intrinsics: np.ndarray, world_from_camera: np.ndarray
) -> np.ndarray:
    """Depth image (H, W) (distance to the image plane) → world points (H, W, 3).

    Pixels with non-finite depth come out non-finite.
    """
    depth = np.asarray(depth, dtype=np.float64)
    h, w = depth.shape
    k = np.asarray(intrinsics, dtype=np.float64)
    uv = pixel_grid(h, w)  # (H, W, 2)
    xy = (uv - k[:2, 2]) @ np.linalg.inv(k[:2, :2]).T  # normalised image coordinates
    p_cam = np.concatenate([xy, np.ones((h, w, 1))], axis=-1) * depth[..., None]  # (H, W, 3)
    pose = np.asarray(world_from_camera, dtype=np.float64)
    return p_cam @ pose[:3, :3].T + pose[:3, 3]
