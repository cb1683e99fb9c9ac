"""Isaac Lab / robomimic HDF5 import: files written here in both layouts, then broken on purpose."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cosmos_sim.bridge.isaaclab import IsaacLabImportConfig, import_isaaclab
from cosmos_sim.conditioning.cameras import look_at
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import FormatError, MissingExtraError

h5py = pytest.importorskip("h5py")

H, W = 8, 10
LENGTHS = (5, 3, 4)
K = np.array([[9.0, 0, 4.5], [0, 9.0, 3.5], [0, 0, 1]])


def robomimic_file(path, lengths=LENGTHS, with_camera_matrices=True):
    """robomimic layout: data/demo_i/{actions, obs/<key>, states, rewards, dones} + env_args."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = sum(lengths)
        data.attrs["env_args"] = json.dumps(
            {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}
        )
        for i, n in enumerate(lengths):
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = n
            t = np.arange(n, dtype=np.float32)
            demo["actions"] = np.stack([t + i, -t, t * 0.5], axis=1)
            demo["states"] = np.tile(t[:, None], (1, 9))
            demo["rewards"] = (t == n - 1).astype(np.float32)
            demo["dones"] = (t == n - 1).astype(np.int64) * (i != 1)  # demo_1 never finishes
            obs = demo.create_group("obs")
            obs["agentview_image"] = (
                np.full((n, H, W, 3), 10 * i, np.uint8) + t.astype(np.uint8)[:, None, None, None]
            )
            obs["agentview_image_depth"] = np.full((n, H, W, 1), 1.25, np.float32)
            obs["robot0_joint_pos"] = np.tile(t[:, None], (1, 7)) + i
            obs["object"] = np.zeros((n, 2), np.float64)
            if with_camera_matrices:
                obs["agentview_image_intrinsics"] = np.broadcast_to(K, (n, 3, 3))
                demo.attrs["agentview_image_world_from_camera"] = look_at((1, 0, 1), (0, 0, 0))
            # next_obs mirrors obs in robomimic; the importer ignores it.
            demo.create_group("next_obs")["object"] = np.zeros((n, 2))
    return path


def isaaclab_file(path):
    """Isaac Lab recorder layout: obs as one array, nested states, success attrs, no rewards."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Isaac-Lift-Cube-Franka-v0"})
        for i, n in enumerate((3, 2)):
            demo = data.create_group(f"demo_{i}")
            demo.attrs.update({"num_samples": n, "seed": i, "success": i == 0})
            demo["actions"] = np.ones((n, 7), np.float32) * i
            demo["obs"] = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
            robot = demo.create_group("states/articulation/robot")
            robot["joint_position"] = np.zeros((n, 9))
            robot["root_pose"] = np.zeros((n, 7))
            demo["initial_state/articulation/robot/joint_position"] = np.zeros((1, 9))
    return path


def test_robomimic_layout(tmp_path):
    src = robomimic_file(tmp_path / "demos.hdf5")
    stats = import_isaaclab(IsaacLabImportConfig(src, instruction="lift"), tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert stats.episodes == 3 and [store.episode_length(i) for i in range(3)] == list(LENGTHS)
    assert store.spec.fps == 20.0 and store.spec.source == "isaaclab:Lift"
    assert store.cameras == ["agentview_image"]
    assert store.spec.state_names[:2] == ["object[0]", "object[1]"]  # sorted low-dim obs keys
    assert store.spec.state_dim == 2 + 7
    assert store.success.tolist() == [True, False, True]  # from the last `dones`
    assert store.instructions == ["lift"] * 3
    ep = store.read_episode(2)
    assert np.allclose(ep.action[:, 0], np.arange(4) + 2)
    assert np.allclose(ep.state[:, 2:], np.arange(4)[:, None] + 2)
    assert ep.reward.tolist() == [0, 0, 0, 1]
    cam = ep.cameras["agentview_image"]
    assert cam.rgb.shape == (4, H, W, 3) and cam.rgb[3, 0, 0, 0] == 23
    assert np.allclose(cam.depth, 1.25)
    assert np.allclose(cam.intrinsics, K) and np.allclose(
        cam.world_from_camera[0], look_at((1, 0, 1), (0, 0, 0)), atol=1e-6
    )
    low, high = store.spec.action_low, store.spec.action_high
    assert low[0] == 0 and high[0] == 2 + 3  # bounds over every demo


def test_unknown_camera_matrices_are_nan_and_state_keys_select(tmp_path):
    src = robomimic_file(tmp_path / "demos.hdf5", with_camera_matrices=False)
    config = IsaacLabImportConfig(src, state_keys=["robot0_joint_pos"], fps=15)
    import_isaaclab(config, tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    ep = store.read_episode(0)
    assert np.isnan(ep.cameras["agentview_image"].intrinsics).all()
    assert np.isnan(ep.cameras["agentview_image"].world_from_camera).all()
    assert store.spec.state_dim == 7 and store.spec.fps == 15


def test_isaaclab_recorder_layout(tmp_path):
    src = isaaclab_file(tmp_path / "isaac.hdf5")
    import_isaaclab(IsaacLabImportConfig(src), tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.cameras == [] and len(store) == 2 and store.spec.state_dim == 4
    assert store.success.tolist() == [True, False]
    assert np.allclose(store.read_episode(0).state[1], [4, 5, 6, 7])
    # Appending a second file keeps the store's action space.
    import_isaaclab(IsaacLabImportConfig(src), tmp_path / "s.zarr")
    assert len(EpisodeStore.open(tmp_path / "s.zarr")) == 4


def test_states_used_when_obs_has_no_low_dim_entries(tmp_path):
    src = isaaclab_file(tmp_path / "isaac.hdf5")
    with h5py.File(src, "a") as f:
        for demo in f["data"].values():
            del demo["obs"]
    import_isaaclab(IsaacLabImportConfig(src), tmp_path / "s.zarr")
    names = EpisodeStore.open(tmp_path / "s.zarr").spec.state_names
    assert names[0] == "articulation/robot/joint_position[0]" and len(names) == 9 + 7


def _damage(path, how):
    if how == "corrupt":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
        return None
    with h5py.File(path, "a") as f:
        demo = f["data/demo_1"]
        if how == "no_actions":
            del demo["actions"]
            return "data/demo_1/actions"
        if how == "short_obs":
            image = demo["obs/agentview_image"][:2]
            del demo["obs/agentview_image"]
            demo["obs/agentview_image"] = image
            return "data/demo_1/obs/agentview_image"
        if how == "nan_action":
            actions = demo["actions"][:]
            actions[1, 1] = np.nan
            demo["actions"][...] = actions
            return "data/demo_1/actions"
        if how == "no_data":
            del f["data"]
            return "data"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["corrupt", "no_actions", "short_obs", "nan_action", "no_data"])
def test_bad_files_are_one_line_errors_and_write_nothing(tmp_path, how):
    src = robomimic_file(tmp_path / "demos.hdf5")
    field = _damage(src, how)
    with pytest.raises(FormatError) as e:
        import_isaaclab(IsaacLabImportConfig(src), tmp_path / "s.zarr")
    assert e.value.field == field and str(src) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "s.zarr").exists()


def test_missing_h5py_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingExtraError, match=r"cosmos-sim\[omniverse\]") as e:
        import_isaaclab(IsaacLabImportConfig(tmp_path / "x.hdf5"), tmp_path / "s.zarr")
    assert "Isaac Lab import" in str(e.value)


def test_cli_import_isaaclab(tmp_path):
    src = robomimic_file(tmp_path / "demos.hdf5")
    cmd = [sys.executable, "-m", "cosmos_sim.cli", "import", "isaaclab", str(src)]
    r = subprocess.run([*cmd, "--out", str(tmp_path / "s.zarr")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "imported 3 demos, 12 frames" in r.stdout
    r = subprocess.run(
        [*cmd, "--out", str(tmp_path / "t.zarr"), "--cameras", "wrist"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "wrist" in r.stderr and "Traceback" not in r.stderr
