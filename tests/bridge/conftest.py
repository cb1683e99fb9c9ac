"""Fixtures for the simulator tests: one small MuJoCo simulator per task, shared per module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.bridge.tasks import tasks_root

CAMERAS = ("front", "top", "side", "orbit")


@pytest.fixture(scope="module", params=["reach", "push"])
def sim(request):
    """All four cameras, rgb + depth + segmentation, non-square 64x80 to catch aspect slips."""
    s = MujocoSim(request.param, cameras=CAMERAS, height=64, width=80)
    yield s
    s.close()


@pytest.fixture
def task_copy(tmp_path) -> Path:
    """A writable copy of envs/reach (+ envs/common for its includes) to break on purpose."""
    root = tasks_root()
    shutil.copytree(root / "common", tmp_path / "common")
    shutil.copytree(root / "reach", tmp_path / "reach")
    return tmp_path / "reach"
