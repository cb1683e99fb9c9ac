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


# ------------------------------------------------------------------ USD / Replicator
#
# USD cameras look along −Z with +Y up (like OpenGL). USD matrices are *row-vector*
# matrices (``p' = p · M``, translation in the last row), so a flat row-major USD
# matrix reshaped to 4×4 is the transpose of the usual column-vector matrix. Lens
# values (focal length, apertures, offsets) share one unit (tenths of a scene unit);
# only their ratios matter. The RTX renderer has square pixels: the horizontal
# aperture fixes both focal lengths and the authored vertical aperture is ignored.
# Replicator and Isaac put pixel centres at ``i + 0.5``; here they sit at ``i``.

PINHOLE_CAMERA_MODELS = ("pinhole",)
# World-axis change from a Y-up stage to this package's Z-up world (+90° about x).
Z_UP_FROM_Y_UP = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def _up_axis_fix(up_axis: str) -> np.ndarray:
    if up_axis not in ("Y", "Z"):
        raise CameraError("unknown stage up axis", field="upAxis", expected="Y or Z", found=up_axis)
    return Z_UP_FROM_Y_UP if up_axis == "Y" else np.eye(4)


def world_from_camera_usd(
    camera_to_world_usd: np.ndarray, meters_per_unit: float = 1.0, up_axis: str = "Z"
) -> np.ndarray:
    """OpenCV ``world_from_camera`` (metres, Z-up world) from a USD camera-to-world matrix.

    ``camera_to_world_usd`` is a row-vector USD matrix (e.g. a prim's local-to-world
    transform, 16 values or 4×4) in scene units of a ``up_axis``-up stage. A uniform
    scale in the transform is removed; shear or mirroring is refused.
    """
    m = np.asarray(camera_to_world_usd, dtype=np.float64)
    if m.size != 16 or not np.all(np.isfinite(m)):
        raise CameraError(
            "camera transform must be 16 finite numbers", field="transform", found=m.shape
        )
    pose = m.reshape(4, 4).T  # column-vector camera-to-world, OpenGL-style camera axes
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise CameraError(
            "camera transform is not affine",
            field="transform",
            expected="last column (0, 0, 0, 1) in USD row-vector form",
            found=np.round(pose[3], 6).tolist(),
        )
    rotation = pose[:3, :3]
    scale = np.linalg.norm(rotation, axis=0)
    if np.ptp(scale) > 1e-5 * scale.max() or scale.min() <= 0:
        raise CameraError(
            "camera transform has a non-uniform scale", field="transform", found=scale.tolist()
        )
    rotation = rotation / scale
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-5) or np.linalg.det(rotation) < 0:
        raise CameraError(
            "camera transform is not a rotation (shear or mirror)",
            field="transform",
            found=np.round(rotation, 4).tolist(),
        )
    pose = pose_from_rotation_translation(rotation, pose[:3, 3] * float(meters_per_unit))
    return cv_from_gl(_up_axis_fix(up_axis) @ pose)


def usd_from_world_from_camera(
    world_from_camera: np.ndarray, meters_per_unit: float = 1.0, up_axis: str = "Z"
) -> np.ndarray:
    """Inverse of :func:`world_from_camera_usd`: a row-vector USD camera-to-world 4×4."""
    pose = _up_axis_fix(up_axis).T @ gl_from_cv(world_from_camera)
    pose = pose.copy()
    pose[:3, 3] /= float(meters_per_unit)
    return pose.T


def intrinsics_from_usd_lens(
    focal_length: float,
    horizontal_aperture: float,
    width: int,
    height: int,
    horizontal_offset: float = 0.0,
    vertical_offset: float = 0.0,
) -> np.ndarray:
    """OpenCV K of a USD pinhole camera rendered at ``width`` × ``height`` (square pixels).

    ``f = W · focal / horizontalAperture``. A positive offset moves the film window
    right / up, so the optical axis lands left of / below the image centre (the
    ``GfCamera`` frustum convention).
    """
    if not (focal_length > 0 and horizontal_aperture > 0):
        raise CameraError(
            "focal length and horizontal aperture must be positive",
            field="focalLength/horizontalAperture",
            found=(focal_length, horizontal_aperture),
        )
    if width < 1 or height < 1:
        raise CameraError("image size must be positive", field="resolution", found=(width, height))
    f = width * focal_length / horizontal_aperture
    cx = width / 2.0 - f * horizontal_offset / focal_length - 0.5
    cy = height / 2.0 + f * vertical_offset / focal_length - 0.5
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def intrinsics_from_usd_projection(projection: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV K from a USD row-vector perspective projection (any near/far, reverse-Z or not).

    Clip x = ``x·P00 + z·P20`` over ``w = −z``, so the optical axis sits at
    NDC ``−P20`` (x) and ``−P21`` (y, up); pixel edges run ``W·(1 + ndc_x)/2`` right
    and ``H·(1 − ndc_y)/2`` down, minus half a pixel for integer pixel centres.
    """
    p = np.asarray(projection, dtype=np.float64)
    if p.size != 16 or not np.all(np.isfinite(p)):
        raise CameraError(
            "projection must be 16 finite numbers", field="cameraProjection", found=p.shape
        )
    p = p.reshape(4, 4)
    if not (np.isclose(p[2, 3], -1.0, atol=1e-6) and np.isclose(p[3, 3], 0.0, atol=1e-6)):
        raise CameraError(
            "not a perspective projection (orthographic cameras are not supported)",
            field="cameraProjection",
            expected="P[2][3] = -1 and P[3][3] = 0",
            found=(float(p[2, 3]), float(p[3, 3])),
        )
    if not (p[0, 0] > 0 and p[1, 1] > 0):
        raise CameraError(
            "projection has non-positive focal terms",
            field="cameraProjection",
            found=(float(p[0, 0]), float(p[1, 1])),
        )
    fx, fy = p[0, 0] * width / 2.0, p[1, 1] * height / 2.0
    cx = width * (1.0 - p[2, 0]) / 2.0 - 0.5
    cy = height * (1.0 + p[2, 1]) / 2.0 - 0.5
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def usd_projection_from_intrinsics(
    intrinsics: np.ndarray, width: int, height: int, near: float = 0.01
) -> np.ndarray:
    """Inverse of :func:`intrinsics_from_usd_projection`: reverse-Z, infinite far plane."""
    k = np.asarray(intrinsics, dtype=np.float64)
    p = np.zeros((4, 4))
    p[0, 0], p[1, 1] = 2.0 * k[0, 0] / width, 2.0 * k[1, 1] / height
    p[2, 0] = 1.0 - 2.0 * (k[0, 2] + 0.5) / width
    p[2, 1] = 2.0 * (k[1, 2] + 0.5) / height - 1.0
    p[2, 3] = -1.0  # w = -z
    p[3, 2] = near  # ndc z = near / -z: 1 at the near plane, 0 at infinity
    return p


def _params_field(params: dict, key: str, size: int | None = None, source=None) -> np.ndarray:
    if key not in params:
        raise CameraError("camera_params lacks a field", path=source, field=key)
    try:
        value = np.asarray(params[key], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise CameraError(
            "camera_params field is not numeric", path=source, field=key, found=params[key]
        ) from e
    if size is not None and value.size != size:
        raise CameraError(
            "camera_params field has the wrong size",
            path=source,
            field=key,
            expected=size,
            found=value.size,
        )
    if not np.all(np.isfinite(value)):
        raise CameraError("camera_params field is not finite", path=source, field=key)
    return value.reshape(-1) if size != 1 else value.reshape(())


def opencv_from_replicator_params(
    params: dict, *, up_axis: str = "Z", source=None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Replicator ``camera_params`` → (OpenCV K, ``world_from_camera`` in metres, (W, H)).

    ``cameraViewTransform`` is the row-vector world→camera matrix, so its inverse is
    the USD camera-to-world. K comes from ``cameraProjection`` (what the renderer
    used), or from the focal length and aperture when the projection is absent.
    Fisheye and other non-pinhole models are refused.
    """
    model = params.get("cameraModel", "pinhole")
    if isinstance(model, bytes):
        model = model.decode()
    if str(model) not in PINHOLE_CAMERA_MODELS:
        raise CameraError(
            "unsupported camera model (only undistorted pinhole cameras convert to K)",
            path=source,
            field="cameraModel",
            expected=" or ".join(PINHOLE_CAMERA_MODELS),
            found=model,
        )
    width, height = (int(v) for v in _params_field(params, "renderProductResolution", 2, source))
    meters = float(params.get("metersPerSceneUnit", 1.0))
    if not meters > 0:
        raise CameraError(
            "metersPerSceneUnit must be positive",
            path=source,
            field="metersPerSceneUnit",
            found=meters,
        )
    view = _params_field(params, "cameraViewTransform", 16, source).reshape(4, 4)
    try:
        camera_to_world = np.linalg.inv(view)
        pose = world_from_camera_usd(camera_to_world, meters, up_axis)
    except (np.linalg.LinAlgError, CameraError) as e:
        raise CameraError(
            f"cameraViewTransform is not a camera pose ({getattr(e, 'message', e)})",
            path=source,
            field="cameraViewTransform",
        ) from e
    try:
        if "cameraProjection" in params:
            proj = _params_field(params, "cameraProjection", 16, source)
            k = intrinsics_from_usd_projection(proj, width, height)
        else:
            focal = float(_params_field(params, "cameraFocalLength", 1, source))
            aperture = _params_field(params, "cameraAperture", 2, source)
            offset = (
                _params_field(params, "cameraApertureOffset", 2, source)
                if "cameraApertureOffset" in params
                else np.zeros(2)
            )
            k = intrinsics_from_usd_lens(focal, aperture[0], width, height, *offset)
    except CameraError as e:
        if e.path is not None:
            raise
        raise CameraError(
            e.message, path=source, field=e.field, expected=e.expected, found=e.found
        ) from e
    return k, pose, (width, height)


def replicator_params_from_opencv(
    intrinsics: np.ndarray,
    world_from_camera: np.ndarray,
    width: int,
    height: int,
    *,
    meters_per_scene_unit: float = 1.0,
    focal_length: float = 24.0,
    near: float = 0.01,
    up_axis: str = "Z",
) -> dict:
    """Inverse of :func:`opencv_from_replicator_params` (square pixels): a ``camera_params`` dict."""
    k = np.asarray(intrinsics, dtype=np.float64)
    if not np.isclose(k[0, 0], k[1, 1], rtol=1e-6):
        raise CameraError(
            "USD cameras have square pixels",
            field="intrinsics",
            expected="fx = fy",
            found=k[:2, :2].tolist(),
        )
    f = k[0, 0]
    camera_to_world = usd_from_world_from_camera(world_from_camera, meters_per_scene_unit, up_axis)
    return {
        "cameraModel": "pinhole",
        "cameraViewTransform": np.linalg.inv(camera_to_world).reshape(-1).tolist(),
        "cameraProjection": usd_projection_from_intrinsics(k, width, height, near)
        .reshape(-1)
        .tolist(),
        "cameraFocalLength": focal_length,
        "cameraAperture": [width * focal_length / f, height * focal_length / f],
        "cameraApertureOffset": [
            (width / 2.0 - 0.5 - k[0, 2]) * focal_length / f,
            (k[1, 2] + 0.5 - height / 2.0) * focal_length / f,
        ],
        "cameraNearFar": [near, 1e6],
        "metersPerSceneUnit": meters_per_scene_unit,
        "renderProductResolution": [width, height],
    }
