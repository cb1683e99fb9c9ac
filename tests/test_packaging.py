"""The wheel ships the task data: build it, install it into a fresh venv, record."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_wheel_installs_and_records_an_episode(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("cosmos_sim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cosmos_sim/_tasks/reach/task.toml" in names
    assert "cosmos_sim/_tasks/push/scene.xml" in names
    assert "cosmos_sim/bridge/omniverse/config/extension.toml" in names  # the Kit extension

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # Dependencies come from this test's environment (no download); the package itself
    # only from the wheel: a .pth adds the site dir as a plain path, so the editable
    # install's finder hooks there are not run.
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MUJOCO_GL": "egl"}
    r = subprocess.run(
        [
            str(venv / "bin" / "cosmos-sim"),
            "record",
            "--task",
            "push",
            "--episodes",
            "1",
            "--size",
            "32",
            "--cameras",
            "front",
            "--out",
            "push.zarr",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    where = subprocess.run(
        [
            str(py),
            "-c",
            "import cosmos_sim.bridge.tasks as t; print(t.find_task('push').toml_path)",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(venv) in where  # the task came from the installed wheel, not the checkout
    assert (work / "push.zarr" / "zarr.json").is_file()
