"""The Replicator writer core, fed annotator-shaped dicts as Replicator hands them to Writer.write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cosmos_sim.bridge.omniverse import (
    CosmosSimWriterCore,
    WriterConfig,
    extension_folder,
    extension_search_path,
)
from cosmos_sim.conditioning.cameras import look_at, replicator_params_from_opencv
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import CameraError, ConfigError, FormatError

H, W = 12, 16
METERS = 0.01
K = np.array([[14.0, 0.0, 7.5], [0.0, 14.0, 5.5], [0.0, 0.0, 1.0]])
RPS = {
    "/Render/RP_front": look_at((1.0, 0.0, 0.5), (0, 0, 0)),
    "/Render/RP_top": look_at((0, 0.01, 2.0), (0, 0, 0)),
}
CLASSES = ["cube", "table"]


def annotator_outputs(t: int, pose: np.ndarray, colorize: bool = False, id_shift: int = 0) -> dict:
    """One render product's annotators, shaped as Replicator returns them."""
    rng = np.random.default_rng(t)
    rgb = rng.integers(0, 255, (H, W, 4), dtype=np.uint8)
    depth = np.full((H, W), 150.0, np.float32)  # scene units (cm)
    depth[:3] = np.inf  # sky
    names = {0: "BACKGROUND", 1: "UNLABELLED", 2 + id_shift: "table", 3 + id_shift: "cube"}
    seg = np.full((H, W), 2 + id_shift, np.uint32)
    seg[:3] = 0
    seg[5:8, 5:9] = 3 + id_shift
    if colorize:
        colours = {
            0: (0, 0, 0, 0),
            1: (0, 0, 0, 255),
            2 + id_shift: (10, 200, 30, 255),
            3 + id_shift: (250, 5, 5, 255),
        }
        data = np.zeros((H, W, 4), np.uint8)
        for i, c in colours.items():
            data[seg == i] = c
        labels = {str(colours[i]): {"class": n} for i, n in names.items()}
    else:
        data = seg
        labels = {i: {"class": n} for i, n in names.items()}  # live data: integer keys
    params = replicator_params_from_opencv(K, pose, W, H, meters_per_scene_unit=METERS)
    params = {k: np.asarray(v) if isinstance(v, list) else v for k, v in params.items()}
    return {
        "rgb": rgb,
        "distance_to_image_plane": depth,
        "semantic_segmentation": {"data": data, "info": {"idToLabels": labels}},
        "camera_params": params,
    }


def frame_data(t: int, layout: str, **kw) -> dict:
    per_rp = {rp: annotator_outputs(t, pose, **kw) for rp, pose in RPS.items()}
    if layout == "renderProduct":
        return {"renderProducts": per_rp}
    if layout == "annotator":
        out: dict = {"annotators": {}}
        for rp, annos in per_rp.items():
            for a, v in annos.items():
                out["annotators"].setdefault(a, {})[rp] = v
        return out
    data = {}  # legacy, several render products: "<annotator>-<rp>"
    suffix = "_0f3a" if layout == "legacy_suffixed" else ""  # annotators made with init params
    for rp, annos in per_rp.items():
        data.update({f"{a}{suffix}-{rp}": v for a, v in annos.items()})
        data[f"rp_{rp}"] = {"camera": "/World/cam", "resolution": (W, H)}
    return data


def make_core(out: Path, **kw) -> CosmosSimWriterCore:
    config = WriterConfig(
        out=out,
        fps=15,
        action_low=[-1.0, -1.0],
        action_high=[1.0, 1.0],
        state_names=["q0", "q1", "q2"],
        **kw,
    )
    step = {"t": 0}

    def callback():
        step["t"] += 1
        return {"action": [0.1 * step["t"], -0.1], "state": [step["t"], 0.0, 1.0], "reward": 0.5}

    return CosmosSimWriterCore(config, callback)


@pytest.mark.parametrize("layout", ["renderProduct", "annotator", "legacy", "legacy_suffixed"])
def test_core_writes_episodes_with_cameras_depth_and_labels(tmp_path, layout):
    out = tmp_path / "s.zarr"
    core = make_core(out, classes=["table"])
    for episode, length in enumerate((3, 2)):
        for t in range(length):
            core.write(frame_data(t, layout, id_shift=episode * 4))  # Replicator ids drift
        assert core.end_episode(success=episode == 0, instruction=f"ep{episode}") == episode
    core.close()
    store = EpisodeStore.open(out)
    assert len(store) == 2 and [store.episode_length(i) for i in (0, 1)] == [3, 2]
    assert sorted(store.cameras) == ["RP_front", "RP_top"]
    assert store.spec.segmentation_labels == {0: "table", 1: "cube"}
    assert store.success.tolist() == [True, False] and store.instructions == ["ep0", "ep1"]
    for e in (0, 1):
        ep = store.read_episode(e)
        front = ep.cameras["RP_front"]
        assert np.array_equal(
            front.rgb[0], annotator_outputs(0, RPS["/Render/RP_front"])["rgb"][..., :3]
        )
        assert np.isinf(front.depth[0, :3]).all() and np.allclose(front.depth[0, 3:], 1.5)
        seg = front.segmentation[0]
        assert (seg[:3] == -1).all() and (seg[5:8, 5:9] == 1).all() and seg[10, 0] == 0
        assert np.allclose(front.intrinsics[0], K, atol=1e-5)
        assert np.allclose(front.world_from_camera[0], RPS["/Render/RP_front"], atol=1e-5)
        assert np.allclose(ep.state[:, 2], 1.0) and np.allclose(ep.reward, 0.5)
    assert np.allclose(store.read_episode(0).action[:, 0], [0.1, 0.2, 0.3])


def test_colourised_segmentation_and_new_classes_extend_the_label_map(tmp_path):
    out = tmp_path / "s.zarr"
    core = make_core(out)  # no classes given: ids in order of appearance
    core.write(frame_data(0, "renderProduct", colorize=True))
    core.end_episode(success=True)
    ep = EpisodeStore.open(out).read_episode(0)
    labels = EpisodeStore.open(out).spec.segmentation_labels
    seg = ep.cameras["RP_top"].segmentation[0]
    assert labels[int(seg[5, 5])] == "cube" and labels[int(seg[10, 0])] == "table"
    assert (seg[:3] == -1).all()
    # A second writer appends and meets a new class: the map grows, old ids stay.
    core2 = make_core(out)
    data = frame_data(1, "renderProduct")
    for rp in data["renderProducts"].values():
        rp["semantic_segmentation"]["info"]["idToLabels"][3] = {"class": "mug"}
    core2.write(data)
    core2.end_episode(success=False)
    store = EpisodeStore.open(out)
    assert store.spec.segmentation_labels == {**labels, 2: "mug"}
    assert (store.read_episode(1).cameras["RP_top"].segmentation[0][5:8, 5:9] == 2).all()


def test_bad_frames_are_one_line_errors(tmp_path):
    core = make_core(tmp_path / "s.zarr")
    data = frame_data(0, "renderProduct")
    data["renderProducts"]["/Render/RP_top"]["distance_to_image_plane"][5, 5] = np.nan
    with pytest.raises(FormatError, match="NaN depth") as e:
        core.write(data)
    assert e.value.field == "RP_top.distance_to_image_plane"
    data = frame_data(0, "renderProduct")
    data["renderProducts"]["/Render/RP_top"]["camera_params"]["cameraModel"] = "fisheyePolynomial"
    with pytest.raises(CameraError) as e:
        core.write(data)
    assert e.value.field == "cameraModel" and "RP_top" in str(e.value)
    with pytest.raises(FormatError, match="no known annotator"):
        core.write({"normals": np.zeros((H, W, 4))})
    no_callback = CosmosSimWriterCore(
        WriterConfig(out=tmp_path / "t.zarr", fps=15, action_low=[-1], action_high=[1])
    )
    with pytest.raises(ConfigError, match="set_step"):
        no_callback.write(frame_data(0, "renderProduct"))
    no_callback.set_step([0.5])
    no_callback.write(frame_data(0, "renderProduct"))
    no_callback.end_episode(success=True)
    assert EpisodeStore.open(tmp_path / "t.zarr").num_frames == 1


WRITER_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from bridge_test_omniverse_writer import frame_data, make_core
core = make_core({out!r})
for episode in range(2):
    for t in range(3):
        core.write(frame_data(t, "renderProduct"))
    core.end_episode(success=True)
for t in range(20):  # a long third episode, killed mid-way
    core.write(frame_data(t, "renderProduct"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_mid_episode_keeps_completed_episodes(tmp_path):
    # The script imports this file's helpers under another name (no tests package).
    helper = tmp_path / "bridge_test_omniverse_writer.py"
    helper.write_text(Path(__file__).read_text())
    out = tmp_path / "s.zarr"
    script = textwrap.dedent(WRITER_SCRIPT.format(tests=str(tmp_path), out=str(out)))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    store = EpisodeStore.open(out)
    assert len(store) == 2 and store.num_frames == 6 and store.has_partial_episode
    core = make_core(out)  # the next writer trims the partial episode and appends
    core.write(frame_data(0, "renderProduct"))
    core.end_episode(success=False)
    store = EpisodeStore.open(out)
    assert len(store) == 3 and store.num_frames == 7 and not store.has_partial_episode


def test_kit_extension_folder_and_guarded_adapter():
    folder = extension_folder()
    config = tomllib.loads((folder / "config" / "extension.toml").read_text())
    module = config["python"]["module"][0]["name"]
    assert (folder / module / "__init__.py").is_file()
    assert "omni.replicator.core" in config["dependencies"]
    assert extension_search_path() == folder.parent
    from cosmos_sim.bridge.omniverse import kit

    assert not kit.HAVE_KIT  # no Omniverse here: importing works, registering explains why not
    with pytest.raises(ConfigError, match="inside Omniverse Kit"):
        kit.register_writer()
    assert os.path.basename(str(folder)) == "omniverse"


def test_cli_prints_the_extension_search_path():
    r = subprocess.run(
        [sys.executable, "-m", "cosmos_sim.cli", "omniverse", "path"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip())
    assert (folder / "omniverse" / "config" / "extension.toml").is_file()


def test_isaac_sim_example_is_valid_and_its_control_is_plain_python():
    """The example needs Isaac Sim to run; here: it compiles, imports without omni, and its maths works."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "isaac_sim_writer.py"
    compile(path.read_text(), str(path), "exec")
    spec = importlib.util.spec_from_file_location("isaac_sim_writer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "omni" not in sys.modules and "isaacsim" not in sys.modules
    q = np.zeros(9)
    action = module.reach_action(q, np.full(9, 0.1))
    assert action.shape == (7,) and action.dtype == np.float32 and np.allclose(action, 0.4)
    assert np.allclose(module.reach_action(q, np.full(9, 10.0)), 1.0)  # clipped
    assert module.parse_args(["--out", "x.zarr"]).episodes == 3
