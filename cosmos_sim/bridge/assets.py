"""Mesh assets (.glb / .gltf / .obj / .stl) → a MuJoCo task scene, replacing an object's geometry.

::

    import_asset(AssetImportConfig("mug.glb", task="push", replace="block", out="tasks/push_mug"))
    # then: cosmos-sim record --task tasks/push_mug …

The new task folder is self-contained (the scene flattened by MuJoCo's model editor,
the task.toml copied, the mesh files under ``assets/``). The replaced body keeps its
name, joints, sites and object id; its geoms become one mesh geom that

* shows the asset's material: its base-colour texture (with the mesh's texture
  coordinates) or its colour, and
* collides through the mesh's convex hull (MuJoCo builds the hull of every mesh it
  collides), with the contact and density settings of the geom it replaces; mass and
  inertia come from the hull too (``inertia="convex"``), so open meshes work.

By default the mesh is scaled so that its largest side equals the largest side of
the replaced geometry, centred on it horizontally and resting on the same bottom.
glTF is Y-up by specification and is turned Z-up; OBJ / STL are taken as Z-up.
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from cosmos_sim.bridge.tasks import TASK_FILE, find_task
from cosmos_sim.conditioning.cameras import Z_UP_FROM_Y_UP
from cosmos_sim.errors import ConfigError, FormatError, TaskError

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".stl", ".ply")


@dataclass
class AssetImportConfig:
    mesh: Path
    task: str | Path
    replace: str  # the body whose geoms the mesh replaces
    out: Path  # the new task folder
    scale: float | None = None  # None: fit the replaced geometry's largest side
    up_axis: str | None = None  # None: Y for glTF, Z otherwise
    name: str | None = None  # asset name in the MJCF (default: the mesh file's stem)

    def __post_init__(self) -> None:
        self.mesh, self.out = Path(self.mesh), Path(self.out)
        if self.scale is not None and not self.scale > 0:
            raise ConfigError("must be positive", field="scale", found=self.scale)
        if self.up_axis is None:
            self.up_axis = "Y" if self.mesh.suffix.lower() in (".glb", ".gltf") else "Z"
        if self.up_axis not in ("Y", "Z"):
            raise ConfigError("must be Y or Z", field="up_axis", found=self.up_axis)
        self.name = self.name or "".join(c if c.isalnum() else "_" for c in self.mesh.stem)


def load_mesh(path: Path, up_axis: str = "Z"):
    """One triangle mesh (a glTF scene's meshes merged with their node transforms), Z-up."""
    import trimesh

    if not path.is_file():
        raise FormatError("no such mesh file", path=path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise FormatError(
            "unsupported mesh format",
            path=path,
            expected=" ".join(MESH_SUFFIXES),
            found=path.suffix,
        )
    try:
        mesh = trimesh.load(path, force="mesh")
    except Exception as e:  # trimesh raises many types for a broken file
        raise FormatError(f"cannot read the mesh ({type(e).__name__}: {e})", path=path) from e
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise FormatError("the file holds no triangles", path=path)
    if up_axis == "Y":
        mesh.apply_transform(Z_UP_FROM_Y_UP)
    return mesh


def _body_box(model: mujoco.MjModel, body_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (body frame) of a body's geoms."""
    lows, highs = [], []
    for g in np.flatnonzero(model.geom_bodyid == body_id):
        centre, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        corners = centre + half * np.array(np.meshgrid(*[[-1, 1]] * 3)).reshape(3, -1).T
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, model.geom_quat[g])
        points = corners @ rotation.reshape(3, 3).T + model.geom_pos[g]
        lows.append(points.min(0))
        highs.append(points.max(0))
    return np.min(lows, axis=0), np.max(highs, axis=0)


def _texture_image(mesh):
    """The base-colour texture (PIL image) of a textured mesh, else None."""
    visual = mesh.visual
    if getattr(visual, "kind", None) != "texture" or getattr(visual, "uv", None) is None:
        return None
    material = visual.material
    return getattr(material, "baseColorTexture", None) or getattr(material, "image", None)


def _base_colour(mesh) -> list[float]:
    material = getattr(mesh.visual, "material", None)
    colour = getattr(material, "baseColorFactor", None)
    if colour is None:
        colour = getattr(material, "diffuse", None)
    if colour is None and getattr(mesh.visual, "kind", None) == "face":
        colour = np.asarray(mesh.visual.face_colors).mean(0)
    if colour is None:
        return [0.7, 0.7, 0.7, 1.0]
    colour = np.asarray(colour, dtype=np.float64).reshape(-1)[:4]
    colour = colour / 255.0 if colour.max() > 1.0 else colour
    return list(np.concatenate([colour, [1.0] * (4 - len(colour))]))


def _write_obj(mesh, path: Path, with_uv: bool) -> None:
    from trimesh.exchange.obj import export_obj

    text = export_obj(
        mesh,
        include_normals=False,
        include_color=False,
        include_texture=with_uv,
        write_texture=False,
    )
    lines = [ln for ln in text.splitlines() if not ln.startswith(("mtllib", "usemtl"))]
    path.write_text("\n".join(lines) + "\n")


def import_asset(config: AssetImportConfig) -> Path:
    """Write the new task folder (see the module docstring); returns its path."""
    task = find_task(config.task)
    if config.out.exists():
        raise ConfigError("output folder exists", field="out", found=str(config.out))
    mesh = load_mesh(config.mesh, config.up_axis)
    model = mujoco.MjModel.from_xml_path(str(task.scene_path))
    body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, config.replace)
    if body_id < 0:
        names = [model.body(i).name for i in range(1, model.nbody)]
        close = difflib.get_close_matches(config.replace, names, n=1)
        raise TaskError(
            f"no body named '{config.replace}'"
            + (f"; did you mean '{close[0]}'?" if close else ""),
            path=task.scene_path,
            field="replace",
            expected=names,
        )
    if not np.any(model.geom_bodyid == body_id):
        raise TaskError(
            "the body has no geoms to replace", path=task.scene_path, field=config.replace
        )
    low, high = _body_box(model, body_id)

    # Scale and place the mesh in the body frame: centred in x/y, resting on the same bottom.
    extent = mesh.bounds[1] - mesh.bounds[0]
    scale = config.scale or float((high - low).max() / extent.max())
    mesh.apply_scale(scale)
    target = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
    current = np.array([*(mesh.bounds[0, :2] + mesh.bounds[1, :2]) / 2, mesh.bounds[0, 2]])
    mesh.apply_translation(target - current)

    assets = config.out / "assets"
    assets.mkdir(parents=True)
    try:
        image = _texture_image(mesh)
        _write_obj(mesh, assets / f"{config.name}.obj", with_uv=image is not None)
        if image is not None:
            image.convert("RGB").save(assets / f"{config.name}.png")
        spec = _edit_scene(task.scene_path, config, image is not None, _base_colour(mesh))
        xml = spec.to_xml()
        (config.out / "scene.xml").write_text(xml)
        shutil.copy(task.toml_path, config.out / TASK_FILE)
        mujoco.MjModel.from_xml_path(str(config.out / "scene.xml"))  # the result must load
    except Exception:
        shutil.rmtree(config.out, ignore_errors=True)
        raise
    return config.out


def _edit_scene(scene: Path, config: AssetImportConfig, textured: bool, rgba) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(str(scene))
    base = scene.parent
    for item in (*spec.meshes, *spec.textures, *spec.hfields):  # keep existing files reachable
        folder = spec.meshdir if item in spec.meshes else spec.texturedir
        if getattr(item, "file", ""):
            item.file = str((base / folder / item.file).resolve())
    spec.meshdir = spec.texturedir = ""
    spec.modelfiledir = str(config.out.resolve())  # the new files resolve from the new folder
    name = config.name
    mesh = spec.add_mesh(name=name, file=f"assets/{name}.obj")
    mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_CONVEX
    material = spec.add_material(name=f"{name}_material", rgba=[1, 1, 1, 1] if textured else rgba)
    if textured:
        spec.add_texture(
            name=f"{name}_texture", type=mujoco.mjtTexture.mjTEXTURE_2D, file=f"assets/{name}.png"
        )
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = f"{name}_texture"
    body = spec.body(config.replace)
    old = list(body.geoms)
    template = old[0]
    body.add_geom(
        name=name,
        type=mujoco.mjtGeom.mjGEOM_MESH,
        meshname=name,
        material=f"{name}_material",
        contype=template.contype,
        conaffinity=template.conaffinity,
        condim=template.condim,
        friction=template.friction,
        density=template.density,
        group=template.group,
    )
    for geom in old:
        spec.delete(geom)
    return spec
