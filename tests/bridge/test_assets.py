"""Mesh assets into a task scene: a textured glTF mug replaces the push block."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cosmos_sim.bridge.assets import AssetImportConfig, import_asset
from cosmos_sim.bridge.mujoco_sim import MujocoSim, make_expert, rollout
from cosmos_sim.errors import ConfigError, FormatError, TaskError

trimesh = pytest.importorskip("trimesh")
Image = pytest.importorskip("PIL.Image")


def write_mug(path, textured: bool = True) -> None:
    """A 10 cm tall, 8 cm wide cylinder standing along +Y (glTF's up), 1 unit = 1 m."""
    mug = trimesh.creation.cylinder(radius=0.04, height=0.10, sections=32)
    mug.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # z → y
    if textured:
        uv = np.stack(
            [
                np.arctan2(mug.vertices[:, 0], mug.vertices[:, 2]) / (2 * np.pi) + 0.5,
                mug.vertices[:, 1] / 0.1 + 0.5,
            ],
            axis=1,
        )
        image = Image.fromarray(
            np.tile(np.array([[[200, 40, 40]], [[40, 40, 200]]], np.uint8), (4, 8, 1))
        )
        mug.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    else:
        mug.visual.face_colors = [30, 160, 90, 255]
    if str(path).endswith(".obj"):  # (vertex normals would need scipy)
        path.write_text(
            trimesh.exchange.obj.export_obj(mug, include_normals=False, include_color=False)
        )
    else:
        mug.export(path)


def test_textured_gltf_replaces_the_block(tmp_path):
    write_mug(tmp_path / "mug.glb")
    out = import_asset(
        AssetImportConfig(tmp_path / "mug.glb", "push", "block", tmp_path / "push_mug")
    )
    assert (out / "scene.xml").is_file() and (out / "task.toml").is_file()
    assert (out / "assets" / "mug.png").is_file()
    sim = MujocoSim(out, cameras=["top"], size=48)
    m = sim.model
    block = m.body("block").id
    geoms = np.flatnonzero(m.geom_bodyid == block)
    assert len(geoms) == 1 and m.geom_type[geoms[0]] == 7  # one mjGEOM_MESH
    visual = m.geom("mug").id
    assert m.geom_contype[visual] == 2 and m.geom_conaffinity[visual] == 2  # the block's contacts
    assert m.body_mass[block] > 0 and m.ntex >= 1
    assert m.mat_texid[m.geom_matid[visual]].max() >= 0  # textured material
    # Fitted to the 9 cm block: largest side 9 cm, resting on the block's bottom (-4.5 cm).
    vertices = m.mesh_vert[m.mesh_vertadr[m.geom_dataid[visual]] :][
        : m.mesh_vertnum[m.geom_dataid[visual]]
    ]
    rotation = np.zeros(9)
    import mujoco

    mujoco.mju_quat2Mat(rotation, m.geom_quat[visual])
    body_frame = vertices @ rotation.reshape(3, 3).T + m.geom_pos[visual]
    extent = body_frame.max(0) - body_frame.min(0)
    assert extent.max() == pytest.approx(0.09, rel=1e-3)
    assert extent[2] == pytest.approx(0.09, rel=1e-3)  # the mug stands upright (glTF Y-up → Z-up)
    assert body_frame[:, 2].min() == pytest.approx(-0.045, abs=1e-4)
    # The task still runs: the block's object id shows in segmentation and the expert pushes it.
    frames = list(rollout(sim, make_expert(sim.task, 1.0, seed=0), seed=0))
    block_id = {n: i for i, n in sim.label_map.items()}["block"]
    assert (frames[0].cameras["top"].segmentation == block_id).sum() > 5
    start, end = frames[0].state, frames[-1].state
    assert not np.allclose(start, end)
    sim.close()


def test_untextured_obj_with_explicit_scale(tmp_path):
    write_mug(tmp_path / "mug.obj", textured=False)
    config = AssetImportConfig(tmp_path / "mug.obj", "push", "block", tmp_path / "out", scale=0.5)
    out = import_asset(config)
    assert not (out / "assets" / "mug.png").exists()
    sim = MujocoSim(out, cameras=[])
    assert sim.model.ntex == 0 or sim.model.mat_texid[sim.model.geom("mug").matid].max() < 0
    sim.close()


def test_bad_assets_are_clear_errors(tmp_path):
    write_mug(tmp_path / "mug.glb")
    with pytest.raises(TaskError, match="did you mean 'block'"):
        import_asset(AssetImportConfig(tmp_path / "mug.glb", "push", "blok", tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    with pytest.raises(FormatError, match="no such mesh"):
        import_asset(AssetImportConfig(tmp_path / "cup.glb", "push", "block", tmp_path / "b"))
    (tmp_path / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    with pytest.raises(FormatError, match="cannot read the mesh") as e:
        import_asset(AssetImportConfig(tmp_path / "broken.glb", "push", "block", tmp_path / "c"))
    assert str(tmp_path / "broken.glb") in str(e.value)
    with pytest.raises(ConfigError):
        AssetImportConfig(tmp_path / "mug.glb", "push", "block", tmp_path / "d", scale=-1.0)


def test_cli_import_asset(tmp_path):
    write_mug(tmp_path / "mug.glb")
    cmd = [sys.executable, "-m", "cosmos_sim.cli", "import-asset", str(tmp_path / "mug.glb")]
    r = subprocess.run(
        [*cmd, "--task", "push", "--replace", "block", "--out", str(tmp_path / "t")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "t" / "scene.xml").is_file()
    r = subprocess.run(
        [*cmd, "--task", "push", "--replace", "blok"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "did you mean 'block'" in r.stderr and "Traceback" not in r.stderr
