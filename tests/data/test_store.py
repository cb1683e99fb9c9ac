"""Episode store: round trip, append, lazy windows, crash safety, validation errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from factories import synthetic_frame, synthetic_store, tiny_spec, write_synthetic_episodes

from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import StoreError


def check_episode(store: EpisodeStore, e: int, length: int) -> None:
    """Every value of episode e matches what synthetic_frame wrote."""
    ep = store.read_episode(e)
    assert len(ep) == length
    for t in (0, length // 2, length - 1):
        want = synthetic_frame(store.spec, e, t)
        np.testing.assert_array_equal(ep.action[t], want.action)
        np.testing.assert_array_equal(ep.state[t], want.state)
        assert ep.reward[t] == want.reward
        for name, cam in want.cameras.items():
            got = ep.cameras[name]
            np.testing.assert_array_equal(got.rgb[t], cam.rgb)
            np.testing.assert_array_equal(got.depth[t], cam.depth)
            np.testing.assert_array_equal(got.segmentation[t], cam.segmentation)
            np.testing.assert_array_equal(got.intrinsics[t], cam.intrinsics)
            np.testing.assert_array_equal(got.world_from_camera[t], cam.world_from_camera)
    assert ep.instruction == f"episode {e}"
    assert ep.success == (e % 2 == 0)


def test_round_trip_and_reopen(tmp_path):
    synthetic_store(tmp_path / "s.zarr", lengths=(9, 13))
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert len(store) == 2 and store.num_frames == 22
    assert store.episode_bounds(1) == (9, 22)
    assert store.episode_bounds(-1) == (9, 22)
    check_episode(store, 0, 9)
    check_episode(store, 1, 13)
    assert store.attrs["fps"] == 10.0 and store.attrs["schema_version"] == 1
    assert store.spec.segmentation_labels == {0: "table", 1: "block"}


def test_append_to_existing_store(tmp_path):
    path = tmp_path / "s.zarr"
    synthetic_store(path, lengths=(5,))
    store = EpisodeStore.open_or_create(path, tiny_spec())
    write_synthetic_episodes(store, [7, 40], first_episode=1)
    store = EpisodeStore.open(path)
    assert [store.episode_length(i) for i in range(3)] == [5, 7, 40]
    for e, n in enumerate([5, 7, 40]):
        check_episode(store, e, n)


def test_append_with_different_spec_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    synthetic_store(path, lengths=(5,))
    with pytest.raises(StoreError, match="action_space.low"):
        EpisodeStore.open_or_create(path, tiny_spec(action_dim=4))
    with pytest.raises(StoreError, match="cameras"):
        EpisodeStore.open_or_create(path, tiny_spec(cameras=("front",)))


def test_window_reads_are_lazy_and_strided(tmp_path):
    store = synthetic_store(tmp_path / "s.zarr", lengths=(9, 40))
    w = store.read_window(1, 3, 5, cameras=["top"], stride=4, fields=("rgb", "depth", "action"))
    assert set(w["rgb"]) == {"top"}
    np.testing.assert_allclose(w["action"][:, 0], 1 + np.arange(3, 20, 4) / 100, rtol=1e-6)
    np.testing.assert_array_equal(w["depth"]["top"][:, 0, 0], 0.5 + np.arange(3, 20, 4))
    with pytest.raises(StoreError, match="window outside the episode"):
        store.read_window(0, 5, 3, stride=2)
    with pytest.raises(StoreError, match="no such camera"):
        store.read_window(0, 0, 2, cameras=["wrist"])
    with pytest.raises(StoreError, match="no such episode"):
        store.read_episode(2)


def test_writer_exception_discards_the_episode(tmp_path):
    store = synthetic_store(tmp_path / "s.zarr", lengths=(6,))
    with pytest.raises(RuntimeError), store.writer(flush_every=2) as w:
        for t in range(5):
            w.add(synthetic_frame(store.spec, 1, t))
        raise RuntimeError("policy crashed")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert len(store) == 1 and not store.has_partial_episode


def test_bad_frames_are_refused_before_writing(tmp_path):
    store = synthetic_store(tmp_path / "s.zarr", lengths=(6,))
    frame = synthetic_frame(store.spec, 1, 0)
    frame.action = np.array([0.0, np.nan, 0.0], np.float32)
    with store.writer() as w, pytest.raises(StoreError, match="non-finite action"):
        w.add(frame)
    frame = synthetic_frame(store.spec, 1, 0)
    frame.cameras["top"].rgb = frame.cameras["top"].rgb[:, :-1]
    with (
        store.writer() as w,
        pytest.raises(StoreError, match=r"cameras/top/rgb.*expected \(16, 24, 3\)"),
    ):
        w.add(frame)
    assert EpisodeStore.open(tmp_path / "s.zarr").num_frames == 6


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from factories import synthetic_frame, tiny_spec
    from cosmos_sim.data.store import EpisodeStore
    store = EpisodeStore.open_or_create({path!r}, tiny_spec())
    e = len(store)
    while True:
        with store.writer(flush_every=3) as w:
            for t in range(10 + e):
                w.add(synthetic_frame(store.spec, e, t))
                if t == 7 and e == {pause_episode}:
                    print("mid", e, flush=True)
                    time.sleep(60)
            w.commit(success=e % 2 == 0, instruction=f"episode {{e}}")
        print("committed", e, flush=True)
        e += 1
    """
)


def _spawn(path: Path, pause_episode: int) -> subprocess.Popen:
    """A writer that records episodes forever, pausing mid-way through `pause_episode`."""
    code = CHILD.format(
        tests=str(Path(__file__).parents[1]), path=str(path), pause_episode=pause_episode
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_sigkill_mid_episode_keeps_completed_episodes(tmp_path):
    path = tmp_path / "s.zarr"
    child = _spawn(path, pause_episode=2)
    lines = []
    for line in child.stdout:  # wait until episode 2 is half written, then kill
        lines.append(line.split())
        if lines[-1] == ["mid", "2"]:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = EpisodeStore.open(path)
    assert len(store) == 2
    assert store.has_partial_episode  # frames of episode 2 are on disk, but invisible
    check_episode(store, 0, 10)
    check_episode(store, 1, 11)
    # The next writer trims the partial episode and appends cleanly after it.
    store = EpisodeStore.open(path, writable=True)
    write_synthetic_episodes(store, [12], first_episode=2)
    store = EpisodeStore.open(path)
    assert len(store) == 3 and not store.has_partial_episode
    check_episode(store, 2, 12)


def test_sigkill_at_random_instants(tmp_path):
    """Kill a busy writer at arbitrary moments; every reopen sees only whole episodes."""
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(0)
    for _ in range(4):
        child = _spawn(path, pause_episode=-1)
        child.stdout.readline()  # it has committed an episode and is writing the next
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        store = EpisodeStore.open(path)
        for e in range(len(store)):
            check_episode(store, e, 10 + e)


# ------------------------------------------------------------ malformed stores
def _edit_json(path: Path, fn) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _set_attr(key, value):
    def fn(meta):
        if value is None:
            del meta["attributes"][key]
        else:
            meta["attributes"][key] = value

    return fn


def _recreate(key, dtype, shape):
    def fn(root: Path):
        g = zarr.open_group(root, mode="r+")
        del g[key]
        g.create_array(key, shape=shape, dtype=dtype)

    return fn


MALFORMED = {
    "missing directory": (lambda root: shutil.rmtree(root), "no such store"),
    "not zarr": (lambda root: (root / "zarr.json").unlink(), "not a zarr v3 store"),
    "corrupt metadata": (
        lambda root: (root / "zarr.json").write_text("{not json"),
        "cannot read zarr metadata",
    ),
    "not an episode store": (
        lambda root: _edit_json(root / "zarr.json", _set_attr("schema_version", None)),
        "attrs.schema_version: not an episode store",
    ),
    "future schema": (
        lambda root: _edit_json(root / "zarr.json", _set_attr("schema_version", 99)),
        r"unknown schema version \(expected 1, found 99\)",
    ),
    "missing fps": (
        lambda root: _edit_json(root / "zarr.json", _set_attr("fps", None)),
        "attrs.fps: missing store attribute",
    ),
    "missing episode_ends": (
        lambda root: shutil.rmtree(root / "episode_ends"),
        "episode_ends: missing array",
    ),
    "episode_ends dtype": (_recreate("episode_ends", "float32", (2,)), "episode_ends: wrong dtype"),
    "episode_ends decreasing": (
        lambda root: zarr.open_array(root / "episode_ends", mode="r+").__setitem__(
            slice(None), [9, 4]
        ),
        r"episode_ends\[1\]: episode_ends must be strictly increasing",
    ),
    "missing action": (lambda root: shutil.rmtree(root / "action"), "action: missing array"),
    "action dtype": (_recreate("action", "float64", (22, 3)), r"action: wrong dtype"),
    "action too short": (
        _recreate("action", "float32", (20, 3)),
        r"action: length mismatch.*found 20",
    ),
    "action width": (_recreate("action", "float32", (22, 4)), r"action: wrong shape"),
    "missing camera": (
        lambda root: shutil.rmtree(root / "cameras" / "top"),
        "cameras/top/rgb: missing array",
    ),
    "rgb wrong size": (
        _recreate("cameras/front/rgb", "uint8", (22, 16, 25, 3)),
        r"cameras/front/rgb: wrong shape",
    ),
    "intrinsics wrong shape": (
        _recreate("cameras/front/intrinsics", "float32", (22, 4, 4)),
        r"cameras/front/intrinsics: wrong shape",
    ),
    "success too short": (
        _recreate("episode_success", "bool", (1,)),
        "episode_success: length mismatch",
    ),
    "segmentation dtype": (
        _recreate("cameras/top/segmentation", "uint8", (22, 16, 24)),
        "cameras/top/segmentation: wrong dtype",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_store_gives_its_own_clear_error(tmp_path, case):
    root = tmp_path / "s.zarr"
    synthetic_store(root, lengths=(9, 13))
    damage, message = MALFORMED[case]
    damage(root)
    with pytest.raises(StoreError, match=message) as info:
        EpisodeStore.open(root)
    assert str(root) in str(info.value)  # the one line names the file
    assert "\n" not in str(info.value)


def test_corrupt_chunk_names_the_array(tmp_path):
    root = tmp_path / "s.zarr"
    synthetic_store(root, lengths=(9, 13))
    chunk = next((root / "cameras" / "front" / "rgb" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(b"garbage")
    store = EpisodeStore.open(root)
    with pytest.raises(StoreError, match="cameras/front/rgb: corrupt data"):
        store.read_episode(0)


def test_segmentation_labels_can_grow_but_not_change(tmp_path):
    store = synthetic_store(tmp_path / "s.zarr", lengths=(5,))
    store.add_segmentation_labels({2: "mug"})
    assert EpisodeStore.open(tmp_path / "s.zarr").spec.segmentation_labels == {
        0: "table",
        1: "block",
        2: "mug",
    }
    with pytest.raises(StoreError, match=r"segmentation_labels\[1\].*expected block, found cup"):
        store.add_segmentation_labels({1: "cup"})
