"""The cosmos-sim command end to end, as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.viz.rerun_log import entity_paths

ENV = {**os.environ, "MUJOCO_GL": "egl", "RERUN_ANALYTICS": "0"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cosmos_sim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def record_reach(out: Path, episodes: int, seed: int, *extra: str) -> subprocess.CompletedProcess:
    """Two cameras at 32×32: the small real store every CLI test works on."""
    args = ["--task", "reach", "--episodes", episodes, "--cameras", "front,top", "--size", 32]
    return cli("record", *args, "--seed", seed, "--out", out, *extra)


@pytest.fixture(scope="module")
def reach_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "reach.zarr"
    r = record_reach(out, 2, 5, "--skill", "0.8")
    assert r.returncode == 0, r.stderr
    assert "recorded 2 episodes" in r.stdout
    return out


def test_record_writes_a_valid_store(reach_store):
    store = EpisodeStore.open(reach_store)
    assert len(store) == 2
    assert store.cameras == ["front", "top"]
    assert store.spec.cameras["front"].height == 32
    assert store.spec.source == "mujoco:reach"
    ep = store.read_episode(1)
    assert ep.cameras["top"].rgb.shape == (len(ep), 32, 32, 3)
    assert np.isfinite(ep.cameras["top"].intrinsics).all()
    assert ep.instruction


def test_record_appends_and_is_deterministic(reach_store, tmp_path):
    again = tmp_path / "again.zarr"
    r = record_reach(again, 1, 6, "--skill", "0.8")
    assert r.returncode == 0, r.stderr
    # Seed 6 is episode 1 of the store recorded with --seed 5: identical frames and actions.
    a, b = EpisodeStore.open(reach_store).read_episode(1), EpisodeStore.open(again).read_episode(0)
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.cameras["front"].rgb, b.cameras["front"].rgb)
    r = record_reach(again, 1, 7)  # appends (default skill: a different policy is fine)
    assert r.returncode == 0, r.stderr
    assert len(EpisodeStore.open(again)) == 2


def test_info_reports_the_store(reach_store):
    r = cli("info", reach_store, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["episodes"] == 2
    assert summary["cameras"]["front"]["rgb"] == [32, 32, 3]
    assert len(summary["action"]["mean"]) == EpisodeStore.open(reach_store).spec.action_dim
    table = cli("info", reach_store)
    assert (
        table.returncode == 0
        and "success rate" in table.stdout
        and "world_from_camera" in table.stdout
    )


def test_view_writes_an_rrd_with_the_expected_entities(reach_store, tmp_path):
    rrd = tmp_path / "ep1.rrd"
    r = cli("view", reach_store, "--episode", 1, "--out", rrd)
    assert r.returncode == 0, r.stderr
    paths = set(entity_paths(rrd))
    for cam in ("front", "top"):
        base = f"/world/episode/cameras/{cam}"
        assert {base, f"{base}/rgb", f"{base}/depth", f"{base}/segmentation"} <= paths
    store = EpisodeStore.open(reach_store)
    for name in store.spec.action_names:
        assert f"/episode/action/{name}" in paths
    assert "/episode/instruction" in paths
    assert any(p.startswith("/episode/state/") for p in paths)


def test_record_gymnasium_render_env(tmp_path):
    out = tmp_path / "pendulum.zarr"
    r = cli(
        "record",
        "--env",
        "Pendulum-v1",
        "--episodes",
        2,
        "--max-steps",
        12,
        "--size",
        32,
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    store = EpisodeStore.open(out)
    assert len(store) == 2 and store.num_frames == 24
    ep = store.read_episode(0)
    assert ep.cameras["render"].rgb.shape == (12, 32, 32, 3)
    assert ep.cameras["render"].rgb.std() > 0  # a real picture, not a blank frame
    assert np.isnan(ep.cameras["render"].world_from_camera).all()  # camera pose unknown
    assert ep.action.shape == (12, 1) and ep.state.shape == (12, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("info", "/nonexistent/store.zarr"), "/nonexistent/store.zarr: no such store"),
        (("record", "--task", "reech", "--out", "x.zarr"), "did you mean 'reach'"),
        (("record", "--task", "reach", "--cameras", "wrist", "--out", "x.zarr"), "wrist"),
        (("record", "--out", "x.zarr"), "give exactly one of --task or --env"),
        (("record", "--env", "NoSuchEnv-v0", "--out", "x.zarr"), "NoSuchEnv-v0"),
        (
            ("train", "world-model", "--data", "x.zarr", "--keep-state-heads"),
            "--keep-state-heads needs --init",
        ),
        (("train", "renderer", "--model", "no-such-model", "--data", "x.zarr"), "no-such-model"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, args, message):
    r = subprocess.run(
        [sys.executable, "-m", "cosmos_sim.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert not (tmp_path / "x.zarr").exists()  # nothing half-written


def test_view_of_a_missing_episode_is_refused(reach_store, tmp_path):
    r = cli("view", reach_store, "--episode", 7, "--out", tmp_path / "x.rrd")
    assert r.returncode == 2 and "no such episode" in r.stderr
    assert not (tmp_path / "x.rrd").exists()
