"""USD cameras: stages authored here through the USD API, cross-checked by projecting known points."""

from __future__ import annotations

import sys

import mujoco
import numpy as np
import pytest

from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.bridge.usd import mjcf_cameras, place_in_sim, read_usd_cameras
from cosmos_sim.conditioning import cameras as cams
from cosmos_sim.errors import CameraError, FormatError, MissingExtraError

pytest.importorskip("pxr")
from pxr import Gf, Usd, UsdGeom  # noqa: E402

W, H = 80, 60


def author_stage(path, up_axis: str, meters_per_unit: float, offsets=(0.0, 0.0)) -> None:
    """A rig: 'front' under a moved, rotated Xform; 'top' at the root; a Cube (not a camera)."""
    stage = Usd.Stage.CreateNew(str(path))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y if up_axis == "Y" else UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, meters_per_unit)
    rig = UsdGeom.Xform.Define(stage, "/World/Rig")
    rig.AddTranslateOp().Set(Gf.Vec3d(30.0, -10.0, 50.0))
    rig.AddRotateXYZOp().Set(Gf.Vec3f(10.0, -25.0, 40.0))
    front = UsdGeom.Camera.Define(stage, "/World/Rig/front")
    front.AddTranslateOp().Set(Gf.Vec3d(5.0, 2.0, 80.0))
    front.AddRotateXOp().Set(-15.0)
    front.GetFocalLengthAttr().Set(24.0)
    front.GetHorizontalApertureAttr().Set(20.955)
    front.GetVerticalApertureAttr().Set(20.955 * H / W)
    front.GetHorizontalApertureOffsetAttr().Set(offsets[0])
    front.GetVerticalApertureOffsetAttr().Set(offsets[1])
    front.GetClippingRangeAttr().Set(Gf.Vec2f(1.0, 10000.0))
    top = UsdGeom.Camera.Define(stage, "/World/top")
    top.AddTranslateOp().Set(Gf.Vec3d(0.0, 0.0, 200.0) if up_axis == "Z" else Gf.Vec3d(0, 200.0, 0))
    if up_axis == "Y":
        top.AddRotateXOp().Set(-90.0)  # look down -Y
    top.GetFocalLengthAttr().Set(18.0)
    top.GetHorizontalApertureAttr().Set(20.0)
    top.GetVerticalApertureAttr().Set(20.0 * H / W)
    UsdGeom.Cube.Define(stage, "/World/box")
    stage.GetRootLayer().Save()


def gf_project(stage_path, prim_path: str, points_stage: np.ndarray) -> np.ndarray:
    """Pixel centres of stage points through pxr's own camera frustum (the reference)."""
    stage = Usd.Stage.Open(str(stage_path))
    camera = UsdGeom.Camera(stage.GetPrimAtPath(prim_path)).GetCamera(Usd.TimeCode.Default())
    view = np.array(camera.frustum.ComputeViewMatrix())
    proj = np.array(camera.frustum.ComputeProjectionMatrix())
    homogeneous = np.concatenate([points_stage, np.ones((len(points_stage), 1))], axis=1)
    clip = homogeneous @ view @ proj
    ndc = clip[:, :2] / clip[:, 3:]
    return np.stack([(ndc[:, 0] + 1) / 2 * W - 0.5, (1 - ndc[:, 1]) / 2 * H - 0.5], axis=1)


@pytest.mark.parametrize("up_axis", ["Y", "Z"])
@pytest.mark.parametrize("meters_per_unit", [0.01, 1.0])
@pytest.mark.parametrize("offsets", [(0.0, 0.0), (1.2, -0.8)])
def test_cameras_project_known_points_like_usd(tmp_path, up_axis, meters_per_unit, offsets):
    path = tmp_path / "rig.usda"
    author_stage(path, up_axis, meters_per_unit, offsets)
    rig = read_usd_cameras(path)
    assert sorted(rig) == ["front", "top"]
    front = rig["front"]
    assert front.meters_per_unit == meters_per_unit and front.up_axis == up_axis
    assert front.near_far == pytest.approx((1.0 * meters_per_unit, 10000.0 * meters_per_unit))
    k, pose = front.intrinsics(W, H), front.world_from_camera
    assert k[0, 0] == pytest.approx(W * 24.0 / 20.955) and k[1, 1] == k[0, 0]
    # Points in front of the camera, in stage units and axes.
    rng = np.random.default_rng(0)
    c2w = front.camera_to_world_usd  # row-vector
    local = np.stack(
        [rng.uniform(-20, 20, 12), rng.uniform(-15, 15, 12), -rng.uniform(50, 300, 12)], 1
    )
    points_stage = np.concatenate([local, np.ones((12, 1))], 1) @ c2w
    points_stage = points_stage[:, :3]
    expected = gf_project(path, "/World/Rig/front", points_stage)
    z_up = cams._up_axis_fix(up_axis)[:3, :3]
    points_world = points_stage @ z_up.T * meters_per_unit  # metres, Z-up
    uv, z = cams.project(points_world, k, pose)
    assert np.abs(uv - expected).max() < 1e-3  # pxr stores lens values as float32
    assert np.allclose(z, -local[:, 2] * meters_per_unit)
    # The top camera looks straight down the world's up axis in either stage convention.
    down = rig["top"].world_from_camera[:3, 2]
    assert np.allclose(down, [0.0, 0.0, -1.0], atol=1e-6)
    assert rig["top"].world_from_camera[2, 3] == pytest.approx(200.0 * meters_per_unit)


def test_cameras_go_into_mujoco_by_pose_and_mjcf(tmp_path):
    path = tmp_path / "rig.usda"
    author_stage(path, "Z", 0.01)
    rig = read_usd_cameras(path, prims=["/World/Rig/front"])
    sim = MujocoSim("reach", cameras=["orbit"], height=H, width=W)
    sim.reset(seed=0)  # reset restores the scene's camera poses: place cameras after it
    place_in_sim(sim, rig, {"front": "orbit"})
    assert np.allclose(sim.world_from_camera("orbit"), rig["front"].world_from_camera, atol=1e-6)
    assert np.allclose(sim.intrinsics("orbit"), rig["front"].intrinsics(W, H), atol=1e-6)
    sim.close()
    xml = f"<mujoco><worldbody>{mjcf_cameras(rig, W, H)}</worldbody></mujoco>"
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    pose = cams.world_from_camera_mujoco(data.cam_xpos[0], data.cam_xmat[0])
    assert np.allclose(pose, rig["front"].world_from_camera, atol=1e-6)
    k = cams.intrinsics_from_fovy(float(model.cam_fovy[0]), W, H)
    assert np.allclose(k, rig["front"].intrinsics(W, H), atol=1e-6)


def test_bad_input_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "rig.usda"
    author_stage(path, "Z", 1.0, offsets=(1.0, 0.0))
    with pytest.raises(FormatError, match="not a Camera prim") as e:
        read_usd_cameras(path, prims=["/World/box"])
    assert e.value.field == "/World/box" and str(path) in str(e.value)
    with pytest.raises(FormatError, match="no such prim"):
        read_usd_cameras(path, prims=["/World/nothing"])
    with pytest.raises(FormatError, match="no such USD file"):
        read_usd_cameras(tmp_path / "missing.usda")
    (tmp_path / "bad.usda").write_text("#usda 1.0\n( this is not usd")
    with pytest.raises(FormatError, match="cannot open"):
        read_usd_cameras(tmp_path / "bad.usda")
    rig = read_usd_cameras(path)
    with pytest.raises(CameraError, match="centred principal point"):
        mjcf_cameras(rig, W, H)
    stage = Usd.Stage.Open(str(path))
    UsdGeom.Camera(stage.GetPrimAtPath("/World/top")).GetProjectionAttr().Set("orthographic")
    stage.GetRootLayer().Save()
    with pytest.raises(CameraError) as e:
        read_usd_cameras(path)
    assert e.value.field == "/World/top.projection"
    monkeypatch.setitem(sys.modules, "pxr", None)
    with pytest.raises(MissingExtraError, match=r"cosmos-sim\[omniverse\]"):
        read_usd_cameras(path)
