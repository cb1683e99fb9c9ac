"""USD cameras → OpenCV K and ``world_from_camera``, and into the embedded MuJoCo scene.

One camera rig for both simulators: author (or export) the cameras in USD, read them
here, and place matching cameras in a MuJoCo task (``set_camera_pose`` on a running
:class:`~cosmos_sim.bridge.mujoco_sim.MujocoSim`, or ``<camera>`` MJCF elements)::

    rig = read_usd_cameras("rig.usda")                   # {name: UsdCamera}
    k = rig["front"].intrinsics(width=640, height=480)
    place_in_sim(sim, rig, {"front": "orbit"})           # USD camera → sim camera
    xml = mjcf_cameras(rig, width=64, height=64)         # <camera …/> lines for a scene

Read per Camera prim: ``focalLength``, ``horizontalAperture``, ``verticalAperture``,
``horizontalApertureOffset``, ``verticalApertureOffset`` (one unit: tenths of a scene
unit; only ratios matter), ``clippingRange`` (scene units), ``projection``, and the
world transform; the stage's ``metersPerUnit`` and ``upAxis`` convert to metres in
this package's Z-up world. Pixels are square (the horizontal aperture rules, as in
the RTX renderer). usd-core is an optional extra (``pip install 'cosmos-sim[omniverse]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmos_sim.conditioning import cameras as cams
from cosmos_sim.errors import CameraError, FormatError, MissingExtraError


def _pxr():
    try:
        from pxr import Usd, UsdGeom
    except ImportError as e:
        raise MissingExtraError("usd-core", "omniverse", "Reading USD cameras") from e
    return Usd, UsdGeom


@dataclass
class UsdCamera:
    """One USD Camera prim, converted to this package's conventions on demand."""

    prim_path: str
    focal_length: float
    horizontal_aperture: float
    vertical_aperture: float
    horizontal_offset: float
    vertical_offset: float
    near_far: tuple[float, float]  # metres
    camera_to_world_usd: np.ndarray  # (4, 4) row-vector, scene units, stage axes
    meters_per_unit: float
    up_axis: str

    @property
    def name(self) -> str:
        return self.prim_path.rsplit("/", 1)[-1]

    @property
    def world_from_camera(self) -> np.ndarray:
        """(4, 4) OpenCV camera-to-world, metres, Z-up world."""
        return cams.world_from_camera_usd(
            self.camera_to_world_usd, self.meters_per_unit, self.up_axis
        )

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """(3, 3) OpenCV K when rendered at ``width`` × ``height`` (square pixels)."""
        return cams.intrinsics_from_usd_lens(
            self.focal_length,
            self.horizontal_aperture,
            width,
            height,
            self.horizontal_offset,
            self.vertical_offset,
        )

    def fovy(self, width: int, height: int) -> float:
        """MuJoCo's vertical field of view (degrees) for this lens at this image size."""
        if abs(self.horizontal_offset) > 1e-9 or abs(self.vertical_offset) > 1e-9:
            raise CameraError(
                "MuJoCo cameras have a centred principal point; this USD camera has aperture offsets",
                path=self.prim_path,
                field="horizontalApertureOffset/verticalApertureOffset",
                expected=(0.0, 0.0),
                found=(self.horizontal_offset, self.vertical_offset),
            )
        return cams.fovy_from_intrinsics(self.intrinsics(width, height), height)


def read_usd_cameras(
    path: str | Path, prims: list[str] | None = None, time: float | None = None
) -> dict[str, UsdCamera]:
    """Camera prims of a ``.usd`` / ``.usda`` / ``.usdc`` stage by prim name (all, or ``prims``)."""
    usd, usd_geom = _pxr()
    path = Path(path)
    if not path.is_file():
        raise FormatError("no such USD file", path=path)
    try:
        stage = usd.Stage.Open(str(path))
    except Exception as e:  # pxr raises Tf.ErrorException for unreadable layers
        raise FormatError(
            f"cannot open the USD stage ({str(e).strip().splitlines()[-1]})", path=path
        ) from e
    if stage is None:
        raise FormatError("cannot open the USD stage", path=path)
    meters = float(usd_geom.GetStageMetersPerUnit(stage))
    up = str(usd_geom.GetStageUpAxis(stage))
    code = usd.TimeCode.Default() if time is None else usd.TimeCode(time)
    if prims is None:
        found = [p for p in stage.Traverse() if p.IsA(usd_geom.Camera)]
    else:
        found = []
        for prim_path in prims:
            prim = stage.GetPrimAtPath(prim_path)
            if not prim or not prim.IsValid():
                raise FormatError("no such prim", path=path, field=prim_path)
            if not prim.IsA(usd_geom.Camera):
                raise FormatError(
                    "not a Camera prim",
                    path=path,
                    field=prim_path,
                    expected="Camera",
                    found=str(prim.GetTypeName()) or "untyped",
                )
            found.append(prim)
    if not found:
        raise FormatError("the stage has no Camera prims", path=path)
    out: dict[str, UsdCamera] = {}
    for prim in found:
        camera = _read_camera(usd_geom.Camera(prim), code, meters, up, path)
        key = (
            camera.name if camera.name not in out else camera.prim_path.strip("/").replace("/", "_")
        )
        out[key] = camera
    return out


def _read_camera(camera, code, meters: float, up: str, path: Path) -> UsdCamera:
    prim_path = str(camera.GetPath())

    def get(attr, name):
        value = attr.Get(code)
        if value is None:
            raise FormatError(
                "camera attribute has no value", path=path, field=f"{prim_path}.{name}"
            )
        return value

    projection = str(get(camera.GetProjectionAttr(), "projection"))
    if projection != "perspective":
        raise CameraError(
            "only perspective cameras convert to a pinhole K",
            path=path,
            field=f"{prim_path}.projection",
            expected="perspective",
            found=projection,
        )
    near, far = get(camera.GetClippingRangeAttr(), "clippingRange")
    matrix = np.array(camera.ComputeLocalToWorldTransform(code), dtype=np.float64)
    result = UsdCamera(
        prim_path=prim_path,
        focal_length=float(get(camera.GetFocalLengthAttr(), "focalLength")),
        horizontal_aperture=float(get(camera.GetHorizontalApertureAttr(), "horizontalAperture")),
        vertical_aperture=float(get(camera.GetVerticalApertureAttr(), "verticalAperture")),
        horizontal_offset=float(
            get(camera.GetHorizontalApertureOffsetAttr(), "horizontalApertureOffset")
        ),
        vertical_offset=float(
            get(camera.GetVerticalApertureOffsetAttr(), "verticalApertureOffset")
        ),
        near_far=(float(near) * meters, float(far) * meters),
        camera_to_world_usd=matrix,
        meters_per_unit=meters,
        up_axis=up,
    )
    try:
        result.intrinsics(2, 2)  # validates the lens
        result.world_from_camera  # validates the transform  # noqa: B018
    except CameraError as e:
        raise CameraError(
            e.message, path=path, field=f"{prim_path}.{e.field}", expected=e.expected, found=e.found
        ) from e
    return result


# ------------------------------------------------------------------- into MuJoCo


def mjcf_cameras(cameras: dict[str, UsdCamera], width: int, height: int) -> str:
    """``<camera>`` elements (one per line) for a MuJoCo ``<worldbody>``, same poses and lenses."""
    lines = []
    for name, camera in cameras.items():
        pos, quat = cams.mujoco_camera_from_pose(camera.world_from_camera)
        fovy = camera.fovy(width, height)
        lines.append(
            f'<camera name="{name}" mode="fixed" pos="{_fmt(pos)}" quat="{_fmt(quat)}" fovy="{fovy:.10g}"/>'
        )
    return "\n".join(lines)


def place_in_sim(sim, cameras: dict[str, UsdCamera], mapping: dict[str, str] | None = None) -> None:
    """Move the sim's world-mounted cameras onto USD cameras (``mapping``: USD name → sim camera).

    Without a mapping, USD cameras are matched to sim cameras of the same name. Call it
    after ``sim.reset`` (a reset restores the scene's own camera poses).
    """
    mapping = mapping or {name: name for name in cameras}
    for usd_name, sim_name in mapping.items():
        if usd_name not in cameras:
            raise CameraError(
                "no such USD camera", field="mapping", expected=sorted(cameras), found=usd_name
            )
        camera = cameras[usd_name]
        sim.set_camera_pose(
            sim_name, camera.world_from_camera, fovy=camera.fovy(sim.width, sim.height)
        )


def _fmt(values) -> str:
    return " ".join(f"{float(v):.10g}" for v in values)
