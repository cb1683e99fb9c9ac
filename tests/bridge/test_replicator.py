"""Replicator BasicWriter import, checked against a MuJoCo scene written out as Replicator would.

The fixture writer converts each MuJoCo camera into a USD camera through the USD API
itself (``pxr.Gf.Camera``: row-vector view matrix, reverse-Z infinite-far projection,
focal length / aperture in tenths of a scene unit, metersPerSceneUnit = 0.01), so the
importer is checked against an implementation of the conventions that is not ours.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmos_sim.bridge.mujoco_sim import MujocoSim, make_expert, rollout
from cosmos_sim.bridge.replicator import ReplicatorImportConfig, import_replicator
from cosmos_sim.conditioning import cameras as cams
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import CameraError, FormatError

pxr = pytest.importorskip("pxr")
from pxr import Gf  # noqa: E402

CAMERAS = ("front", "top", "orbit")
H, W = 48, 64
METERS_PER_UNIT = 0.01  # a centimetre stage
FOCAL = 18.0  # tenths of a scene unit, like USD's default 50 mm lenses
N_FRAMES = 10


@pytest.fixture(scope="module")
def recording():
    """Ten frames of the push expert from three cameras (rgb, depth with inf, segmentation)."""
    sim = MujocoSim("push", cameras=CAMERAS, height=H, width=W)
    sim.set_orbit(azimuth=120.0, elevation=-35.0, distance=1.3, lookat=(0.05, 0.0, 0.0))
    frames = list(itertools.islice(rollout(sim, make_expert("push", 1.0, seed=1), 1), N_FRAMES))
    yield sim, frames
    sim.close()


# ------------------------------------------------------------------ fixture writer


def usd_camera_params(sim: MujocoSim, name: str, frame_pose: np.ndarray) -> dict:
    """camera_params as Replicator writes them, built with pxr from the MuJoCo camera."""
    fovy = float(sim.model.cam_fovy[sim.model.camera(name).id])
    f_pixels = 0.5 * H / np.tan(0.5 * np.deg2rad(fovy))
    camera = Gf.Camera()
    camera.focalLength = FOCAL
    camera.horizontalAperture = W * FOCAL / f_pixels
    camera.verticalAperture = H * FOCAL / f_pixels
    camera.clippingRange = Gf.Range1f(1.0, 1e6)
    gl = frame_pose.astype(np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV → USD camera axes
    gl[:3, 3] /= METERS_PER_UNIT
    camera.transform = Gf.Matrix4d(gl.T.tolist())  # row-vector
    frustum = camera.frustum
    view = np.array(frustum.ComputeViewMatrix())
    proj = np.array(frustum.ComputeProjectionMatrix())
    proj[2, 2], proj[3, 2] = 0.0, 1.0  # reverse-Z, infinite far: ndc z = near / -z
    return {
        "cameraAperture": [camera.horizontalAperture, camera.verticalAperture],
        "cameraApertureOffset": [0.0, 0.0],
        "cameraFisheyeLensP": [],
        "cameraFocalLength": FOCAL,
        "cameraFocusDistance": 400.0,
        "cameraFStop": 0.0,
        "cameraModel": "pinhole",
        "cameraNearFar": [1.0, 1e6],
        "cameraProjection": proj.reshape(-1).tolist(),
        "cameraViewTransform": view.reshape(-1).tolist(),
        "metersPerSceneUnit": METERS_PER_UNIT,
        "renderProductResolution": [W, H],
    }


def colour_of(object_id: int) -> tuple[int, int, int, int]:
    if object_id < 0:
        return (0, 0, 0, 0)
    rng = np.random.default_rng(object_id + 11)
    return tuple(int(v) for v in rng.integers(1, 255, 3)) + (255,)


def write_basicwriter(
    root: Path,
    sim: MujocoSim,
    frames,
    cameras=CAMERAS,
    layout: str = "per_rp",
    colourised: bool = True,
) -> Path:
    """Write frames in a BasicWriter layout: 'single', 'per_rp', 'per_rp_nested' or 'common'."""
    for t, frame in enumerate(frames):
        for name in cameras:
            cf = frame.cameras[name]

            def path(anno: str, ext: str, name=name, t=t) -> Path:
                stem = f"{anno}_{t:04d}.{ext}"
                p = {
                    "single": root / stem,
                    "per_rp": root / name / stem,
                    "per_rp_nested": root / name / anno / stem,
                    "common": root / anno / f"{name}_{stem}",
                }[layout]
                p.parent.mkdir(parents=True, exist_ok=True)
                return p

            rgba = np.concatenate([cf.rgb, np.full((H, W, 1), 255, np.uint8)], axis=-1)
            cv2.imwrite(str(path("rgb", "png")), rgba[..., [2, 1, 0, 3]])
            np.save(path("distance_to_image_plane", "npy"), cf.depth / np.float32(METERS_PER_UNIT))
            ids = np.unique(cf.segmentation)
            names = {i: sim.label_map[i] if i >= 0 else "BACKGROUND" for i in ids.tolist()}
            if colourised:
                colours = np.array([colour_of(i) for i in ids], np.uint8)
                image = colours[np.searchsorted(ids, cf.segmentation)]  # (H, W, 4) RGBA
                cv2.imwrite(str(path("semantic_segmentation", "png")), image[..., [2, 1, 0, 3]])
                labels = {str(colour_of(i)): {"class": n} for i, n in names.items()}
            else:
                raw = (cf.segmentation + 5).astype(np.uint16)  # Replicator's ids are its own
                cv2.imwrite(str(path("semantic_segmentation", "png")), raw)
                labels = {str(i + 5): {"class": n} for i, n in names.items()}
            path("semantic_segmentation_labels", "json").write_text(json.dumps(labels))
            params = usd_camera_params(sim, name, cf.world_from_camera)
            path("camera_params", "json").write_text(json.dumps(params))
    return root


# -------------------------------------------------------------- geometry checks


def check_geometry(store: EpisodeStore, episode: int = 0) -> None:
    """The foundation geometry checks on an imported store (floor, objects, two cameras)."""
    ep = store.read_episode(episode)
    labels = store.spec.segmentation_labels
    ids = {n: i for i, n in labels.items()}
    for name, series in ep.cameras.items():
        k, pose = (
            series.intrinsics[0].astype(np.float64),
            series.world_from_camera[0].astype(np.float64),
        )
        depth, seg = series.depth[0], series.segmentation[0]
        floor = seg == ids["floor"]
        if floor.sum() > 20:  # floor pixels back-project onto z = -0.5 (pixel centres exact)
            z = cams.backproject(depth, k, pose)[floor][:, 2]
            assert np.abs(z + 0.5).max() < 1e-4, name
        block = seg == ids["block"]
        if block.sum() >= 8:
            points = cams.backproject(depth, k, pose)[block]
            (u, v), _ = cams.project(points.mean(0), k, pose)
            assert 0 <= u < W and 0 <= v < H
    for a, b in itertools.permutations(ep.cameras, 2):
        ca, cb = ep.cameras[a], ep.cameras[b]
        seen = ca.segmentation[0] >= 0
        points = cams.backproject(ca.depth[0], ca.intrinsics[0], ca.world_from_camera[0])[seen]
        labels_a = ca.segmentation[0][seen]
        uv, z = cams.project(points, cb.intrinsics[0], cb.world_from_camera[0])
        inside = (
            (uv[:, 0] >= 0) & (uv[:, 0] < W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] < H - 1) & (z > 0)
        )
        uv, z, labels_a = uv[inside], z[inside], labels_a[inside]
        u0, v0 = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        same = cb.segmentation[0][v0, u0] == labels_a
        error = np.abs(cb.depth[0][v0, u0] - z)[same]
        assert same.sum() > 100
        assert np.median(error) < 0.01, (a, b)


# ------------------------------------------------------------------------ tests


@pytest.mark.parametrize(
    "layout, colourised",
    [("per_rp", True), ("per_rp_nested", False), ("common", True)],
)
def test_import_recovers_cameras_images_and_geometry(recording, tmp_path, layout, colourised):
    sim, frames = recording
    folder = write_basicwriter(tmp_path / "out", sim, frames, layout=layout, colourised=colourised)
    out = tmp_path / "store.zarr"
    stats = import_replicator(ReplicatorImportConfig(folder, fps=10, episode_length=4), out)
    store = EpisodeStore.open(out)
    assert stats.episodes == 3 and [store.episode_length(i) for i in range(3)] == [4, 4, 2]
    assert sorted(store.cameras) == sorted(CAMERAS)
    labels = store.spec.segmentation_labels
    assert sorted(labels.values()) == sorted(set(sim.label_map.values()))
    for name in CAMERAS:
        window = store.read_window(
            0,
            0,
            4,
            cameras=[name],
            fields=("rgb", "depth", "segmentation", "intrinsics", "world_from_camera"),
        )
        for t in range(4):
            cf = frames[t].cameras[name]
            assert np.array_equal(window["rgb"][name][t], cf.rgb)
            assert np.abs(window["intrinsics"][name][t] - sim.intrinsics(name)).max() < 1e-5
            assert np.abs(window["world_from_camera"][name][t] - cf.world_from_camera).max() < 1e-5
            depth = window["depth"][name][t]
            assert np.array_equal(np.isinf(depth), np.isinf(cf.depth))
            finite = np.isfinite(cf.depth)
            assert np.allclose(depth[finite], cf.depth[finite], rtol=1e-6)
            seg = window["segmentation"][name][t]
            original = np.vectorize(lambda i: sim.label_map.get(i, "-"))(cf.segmentation)
            imported = np.vectorize(lambda i: labels.get(i, "-"))(seg)
            assert np.array_equal(original, imported)
    check_geometry(store)


def test_single_render_product_flat_folder_with_markers_and_jsonl_actions(recording, tmp_path):
    sim, frames = recording
    folder = write_basicwriter(tmp_path / "out", sim, frames, cameras=["top"], layout="single")
    markers = tmp_path / "markers.jsonl"
    markers.write_text('{"start": 0, "success": true, "instruction": "push it"}\n7\n')
    actions = tmp_path / "actions.jsonl"
    actions.write_text(
        "\n".join(
            json.dumps({"action": f.action.tolist(), "state": f.state.tolist(), "reward": f.reward})
            for f in frames
        )
    )
    config = ReplicatorImportConfig(
        folder, fps=10, markers=markers, actions=actions, camera_name="top"
    )
    import_replicator(config, tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.cameras == ["top"] and len(store) == 2
    assert store.success.tolist() == [True, False]
    assert store.instructions == ["push it", ""]
    ep = store.read_episode(0)
    assert np.allclose(ep.action, np.stack([f.action for f in frames[:7]]))
    assert np.allclose(ep.state, np.stack([f.state for f in frames[:7]]))
    assert np.allclose(ep.reward, [f.reward for f in frames[:7]])


def test_npz_actions_and_append_keeps_label_ids(recording, tmp_path):
    sim, frames = recording
    folder = write_basicwriter(tmp_path / "out", sim, frames, cameras=["front", "top"])
    np.savez(tmp_path / "a.npz", actions=np.stack([f.action for f in frames]))
    config = ReplicatorImportConfig(folder, actions=tmp_path / "a.npz")
    out = tmp_path / "s.zarr"
    import_replicator(config, out)
    import_replicator(config, out)  # append: same label ids, same action space
    store = EpisodeStore.open(out)
    assert len(store) == 2 and store.num_frames == 2 * N_FRAMES
    a, b = store.read_episode(0), store.read_episode(1)
    assert np.array_equal(a.cameras["front"].segmentation, b.cameras["front"].segmentation)
    assert store.spec.state_dim == 0


def test_distance_to_camera_and_instance_segmentation_fallbacks(recording, tmp_path):
    """Without distance_to_image_plane / semantic files, the Euclidean and instance forms are used."""
    sim, frames = recording
    folder = write_basicwriter(
        tmp_path / "out", sim, frames[:2], cameras=["orbit"], layout="single"
    )
    k = sim.intrinsics("orbit")
    for t in range(2):
        plane = folder / f"distance_to_image_plane_{t:04d}.npy"
        v, u = np.mgrid[0:H, 0:W]
        ray = np.sqrt(((u - k[0, 2]) / k[0, 0]) ** 2 + ((v - k[1, 2]) / k[1, 1]) ** 2 + 1)
        np.save(
            folder / f"distance_to_camera_{t:04d}.npy", (np.load(plane) * ray).astype(np.float32)
        )
        plane.unlink()
        labels = json.loads((folder / f"semantic_segmentation_labels_{t:04d}.json").read_text())
        mapping = {key: f"/World/{value['class']}" for key, value in labels.items()}
        mapping = {
            key: "BACKGROUND" if value == "/World/BACKGROUND" else value
            for key, value in mapping.items()
        }
        (folder / f"instance_segmentation_mapping_{t:04d}.json").write_text(json.dumps(mapping))
        (folder / f"semantic_segmentation_{t:04d}.png").rename(
            folder / f"instance_segmentation_{t:04d}.png"
        )
        (folder / f"semantic_segmentation_labels_{t:04d}.json").unlink()
    import_replicator(ReplicatorImportConfig(folder), tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    cam = store.read_episode(0).cameras["camera"]
    original = frames[1].cameras["orbit"]
    finite = np.isfinite(original.depth)
    assert np.allclose(cam.depth[1][finite], original.depth[finite], rtol=1e-5)
    assert np.isinf(cam.depth[1][~finite]).all()
    labels = store.spec.segmentation_labels
    assert "/World/floor" in labels.values()
    names = np.vectorize(lambda i: labels.get(i, "-"))(cam.segmentation[1])
    expected = np.vectorize(lambda i: f"/World/{sim.label_map[i]}" if i >= 0 else "-")(
        original.segmentation
    )
    assert np.array_equal(names, expected)


def test_camera_params_missing_means_unknown_intrinsics(recording, tmp_path):
    sim, frames = recording
    folder = write_basicwriter(tmp_path / "out", sim, frames[:2], cameras=["top"], layout="single")
    for p in folder.glob("camera_params_*.json"):
        p.unlink()
    import_replicator(ReplicatorImportConfig(folder), tmp_path / "s.zarr")
    ep = EpisodeStore.open(tmp_path / "s.zarr").read_episode(0)
    assert np.isnan(ep.cameras["camera"].intrinsics).all()
    assert np.isnan(ep.cameras["camera"].world_from_camera).all()


# ------------------------------------------------------------------- bad input


def _break(folder: Path, how: str) -> str:
    """Damage a written folder; returns the field the error must name."""
    top = folder / "top"
    if how == "missing_file":
        (top / "distance_to_image_plane_0001.npy").unlink()
        return "distance_to_image_plane"
    if how == "bad_json":
        (top / "camera_params_0001.json").write_text("{not json")
        return "camera_params"
    if how == "fisheye":
        p = top / "camera_params_0000.json"
        params = json.loads(p.read_text())
        params["cameraModel"] = "fisheyePolynomial"
        p.write_text(json.dumps(params))
        return "cameraModel"
    if how == "nan_depth":
        p = top / "distance_to_image_plane_0001.npy"
        depth = np.load(p)
        depth[3, 3] = np.nan
        np.save(p, depth)
        return "distance_to_image_plane"
    if how == "unknown_colour":
        p = top / "semantic_segmentation_labels_0001.json"
        labels = json.loads(p.read_text())
        labels.pop(next(k for k, v in labels.items() if v["class"] == "floor"))
        p.write_text(json.dumps(labels))
        return "labels"
    if how == "no_rgb":
        for p in folder.rglob("rgb_*.png"):
            p.unlink()
        return "rgb"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["missing_file", "bad_json", "fisheye", "nan_depth", "unknown_colour", "no_rgb"]
)
def test_malformed_folder_is_one_clear_error_and_writes_nothing(recording, tmp_path, how):
    sim, frames = recording
    folder = write_basicwriter(tmp_path / "out", sim, frames[:3], cameras=["front", "top"])
    field = _break(folder, how)
    out = tmp_path / "s.zarr"
    with pytest.raises((FormatError, CameraError)) as e:
        import_replicator(ReplicatorImportConfig(folder), out)
    assert e.value.field == field
    assert "\n" not in str(e.value) and str(folder) in str(e.value)
    assert not out.exists() and not list(tmp_path.glob(".s.zarr.partial-*"))


def test_bad_side_files_name_the_field(recording, tmp_path):
    sim, frames = recording
    folder = write_basicwriter(tmp_path / "out", sim, frames[:3], cameras=["top"], layout="single")
    np.savez(tmp_path / "short.npz", action=np.zeros((2, 2)))
    with pytest.raises(FormatError, match="one row per frame") as e:
        import_replicator(
            ReplicatorImportConfig(folder, actions=tmp_path / "short.npz"), tmp_path / "s"
        )
    assert e.value.field == "action"
    (tmp_path / "m.txt").write_text("0\n5\n")
    with pytest.raises(FormatError, match="past the last frame"):
        import_replicator(
            ReplicatorImportConfig(folder, markers=tmp_path / "m.txt"), tmp_path / "s"
        )


# --------------------------------------------------- convention property tests


unit = st.floats(-1.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    f=st.floats(20.0, 200.0),
    dx=st.floats(-8.0, 8.0),
    dy=st.floats(-8.0, 8.0),
    meters=st.sampled_from([0.01, 1.0]),
    up=st.sampled_from(["Y", "Z"]),
)
def test_replicator_params_round_trip_and_projection_agree(seed, f, dx, dy, meters, up):
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.diag(r))
    rotation = rotation if np.linalg.det(rotation) > 0 else -rotation
    pose = cams.pose_from_rotation_translation(rotation, rng.uniform(-2, 2, 3))
    k = np.array([[f, 0, (W - 1) / 2 + dx], [0, f, (H - 1) / 2 + dy], [0, 0, 1]])
    params = cams.replicator_params_from_opencv(
        k, pose, W, H, meters_per_scene_unit=meters, up_axis=up
    )
    k2, pose2, size = cams.opencv_from_replicator_params(params, up_axis=up)
    assert size == (W, H)
    assert np.allclose(k2, k, atol=1e-9) and np.allclose(pose2, pose, atol=1e-9)
    # The lens fields say the same as the projection matrix.
    lens = cams.intrinsics_from_usd_lens(
        params["cameraFocalLength"],
        params["cameraAperture"][0],
        W,
        H,
        *params["cameraApertureOffset"],
    )
    assert np.allclose(lens, k, atol=1e-9)
    # A point in front of the camera projects to the same pixel through V·P (USD, pixel
    # edges) and through K / world_from_camera (OpenCV, pixel centres).
    p_cam = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.5, 3.0)])
    p_world = pose[:3, :3] @ p_cam + pose[:3, 3]
    y_up_from_z_up = np.linalg.inv(cams._up_axis_fix(up))
    p_stage = (y_up_from_z_up[:3, :3] @ p_world) / meters
    view = np.array(params["cameraViewTransform"]).reshape(4, 4)
    proj = np.array(params["cameraProjection"]).reshape(4, 4)
    clip = np.append(p_stage, 1.0) @ view @ proj
    ndc = clip[:3] / clip[3]
    usd_uv = np.array([(ndc[0] + 1) / 2 * W - 0.5, (1 - ndc[1]) / 2 * H - 0.5])
    uv, z = cams.project(p_world, k, pose)
    assert np.allclose(uv, usd_uv, atol=1e-6) and z == pytest.approx(p_cam[2])
    assert 0 < ndc[2] <= 1  # reverse-Z: in front of the camera, inside the depth range


def test_replicator_params_errors_name_the_field():
    k = np.array([[50.0, 0.0, (W - 1) / 2], [0.0, 50.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
    params = cams.replicator_params_from_opencv(k, np.eye(4), W, H)
    with pytest.raises(CameraError) as e:
        cams.opencv_from_replicator_params({**params, "cameraModel": "ftheta"})
    assert e.value.field == "cameraModel"
    with pytest.raises(CameraError) as e:
        cams.opencv_from_replicator_params({**params, "cameraProjection": [0.0] * 16})
    assert e.value.field == "cameraProjection"
    with pytest.raises(CameraError) as e:
        cams.opencv_from_replicator_params(
            {k: v for k, v in params.items() if k != "cameraViewTransform"}
        )
    assert e.value.field == "cameraViewTransform"
    no_projection = {k: v for k, v in params.items() if k != "cameraProjection"}
    k, _, _ = cams.opencv_from_replicator_params(no_projection)  # falls back on the lens fields
    assert k[0, 0] == pytest.approx(50.0) and k[0, 2] == pytest.approx((W - 1) / 2)


# --------------------------------------------------------------------------- CLI


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl"}
    cmd = [sys.executable, "-m", "cosmos_sim.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_cli_import_replicator(recording, tmp_path):
    sim, frames = recording
    folder = write_basicwriter(tmp_path / "out", sim, frames[:6], cameras=["front", "top"])
    r = _cli("import", "replicator", folder, "--out", tmp_path / "s.zarr", "--episode-length", 3)
    assert r.returncode == 0, r.stderr
    assert "imported 2 episodes, 6 frames" in r.stdout
    assert len(EpisodeStore.open(tmp_path / "s.zarr")) == 2
    (folder / "top" / "camera_params_0002.json").unlink()
    r = _cli("import", "replicator", folder, "--out", tmp_path / "t.zarr")
    assert r.returncode == 2 and "camera_params" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "t.zarr").exists()
