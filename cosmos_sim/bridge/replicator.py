"""Replicator BasicWriter output folders → episodes in the store.

BasicWriter writes one file per annotator and frame (``<annotator>_<frame:04d>.<ext>``,
an optional ``<seq>_`` before the frame number). Three layouts are read::

    DIR/rgb_0000.png  camera_params_0000.json  …            one render product
    DIR/<rp>/rgb_0000.png   or   DIR/<rp>/rgb/rgb_0000.png   several (default)
    DIR/rgb/<rp>_rgb_0000.png                                several, use_common_output_dir

Per render product (one store camera each) and frame:

    rgb_NNNN.png                          RGBA uint8            → rgb (alpha dropped)
    distance_to_image_plane_NNNN.npy      float32 scene units   → depth × metersPerSceneUnit, inf kept
    distance_to_camera_NNNN.npy           (used when the above is absent; converted with K)
    semantic_segmentation_NNNN.png        colourised RGBA or integer ids
      + semantic_segmentation_labels_NNNN.json   {"(r, g, b, a)" | "id": {"class": name}}
    instance_segmentation_NNNN.png        (used when semantic is absent)
      + instance_segmentation_mapping_NNNN.json  {"(r, g, b, a)" | "id": prim path}
    camera_params_NNNN.json               → K and world_from_camera (cameras.py)

Class names become stable integer ids (sorted names → 0, 1, …; BACKGROUND and
UNLABELLED → −1) and the label map goes into the store attrs. A flat frame sequence
splits into episodes by a fixed length or a marker file; actions, states and rewards
come from an optional side file (JSON lines or npz), else a zero placeholder action.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cosmos_sim.bridge.record import Outcome, RecordStats, record
from cosmos_sim.conditioning.cameras import opencv_from_replicator_params
from cosmos_sim.data.episode import UNKNOWN_INTRINSICS, UNKNOWN_POSE, CameraFrame, Frame
from cosmos_sim.data.store import CameraSpec, EpisodeStore, StoreSpec
from cosmos_sim.errors import CameraError, ConfigError, FormatError, StoreError

ANNOTATOR_EXTENSIONS = {
    "rgb": ("png", "jpg", "jpeg"),
    "distance_to_image_plane": ("npy",),
    "distance_to_camera": ("npy",),
    "semantic_segmentation": ("png",),
    "semantic_segmentation_labels": ("json",),
    "instance_segmentation": ("png",),
    "instance_segmentation_mapping": ("json",),
    "camera_params": ("json",),
}
_NAMES = "|".join(sorted(ANNOTATOR_EXTENSIONS, key=len, reverse=True))
_FILE = re.compile(rf"^(?:(?P<rp>.+)_)?(?P<anno>{_NAMES})_(?P<num>\d+(?:_\d+)*)\.(?P<ext>\w+)$")
_COLOUR_KEY = re.compile(r"^\(\s*(\d+),\s*(\d+),\s*(\d+)(?:,\s*(\d+))?\s*\)$")
BACKGROUND_CLASSES = ("background", "unlabelled", "unlabeled")
SEGMENTATION_KINDS = (
    ("semantic_segmentation", "semantic_segmentation_labels"),
    ("instance_segmentation", "instance_segmentation_mapping"),
)

FrameKey = tuple[int, ...]


@dataclass
class ReplicatorImportConfig:
    """How to turn one BasicWriter folder into episodes."""

    folder: Path
    fps: float = 30.0
    episode_length: int | None = None  # split every N frames (the last may be shorter)
    markers: Path | None = None  # or: episode start frames (see `read_markers`)
    actions: Path | None = None  # JSON lines or npz with action (+ state, reward) per frame
    instruction: str = ""
    camera_name: str = "camera"  # the store camera of a single-render-product folder
    up_axis: str = "Z"  # the stage's up axis (camera_params does not record it)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.fps > 0:
            raise ConfigError("must be positive", field="fps", found=self.fps)
        if self.episode_length is not None and self.episode_length < 1:
            raise ConfigError("must be >= 1", field="episode_length", found=self.episode_length)
        if self.episode_length is not None and self.markers is not None:
            raise ConfigError(
                "give at most one of episode_length or markers", field="episode_length/markers"
            )


@dataclass
class EpisodeSlice:
    start: int
    stop: int
    success: bool = False
    instruction: str = ""


@dataclass
class CameraFiles:
    """Every file of one render product: {annotator: {frame key: path}}."""

    name: str
    files: dict[str, dict[FrameKey, Path]] = field(default_factory=dict)

    def has(self, annotator: str) -> bool:
        return bool(self.files.get(annotator))

    @property
    def segmentation_kind(self) -> tuple[str, str] | None:
        for image, labels in SEGMENTATION_KINDS:
            if self.has(image):
                return image, labels
        return None

    @property
    def depth_kind(self) -> str | None:
        for name in ("distance_to_image_plane", "distance_to_camera"):
            if self.has(name):
                return name
        return None


# ----------------------------------------------------------------------- scanning


def scan_folder(folder: Path, single_name: str = "camera") -> tuple[dict[str, CameraFiles], list]:
    """Find every annotator file; returns ({camera: files}, sorted frame keys)."""
    if not folder.is_dir():
        raise FormatError("no such Replicator output folder", path=folder)
    cameras: dict[str, CameraFiles] = {}
    for path in sorted(folder.rglob("*")):
        match = _FILE.match(path.name)
        if not path.is_file() or match is None:
            continue
        anno, ext = match["anno"], match["ext"].lower()
        if ext not in ANNOTATOR_EXTENSIONS[anno]:
            continue  # e.g. a colourised depth preview PNG
        parts = list(path.relative_to(folder).parent.parts)
        if parts and parts[-1] in ANNOTATOR_EXTENSIONS:
            parts.pop()  # DIR/<rp>/rgb/… or DIR/rgb/<rp>_rgb_…
        if match["rp"]:
            parts.append(match["rp"])
        name = "_".join(parts) or single_name
        key = tuple(int(n) for n in match["num"].split("_"))
        files = cameras.setdefault(name, CameraFiles(name)).files.setdefault(anno, {})
        if key in files:
            raise FormatError(
                "two files for the same frame", path=path, field=anno, found=str(files[key])
            )
        files[key] = path
    if not any(c.has("rgb") for c in cameras.values()):
        raise FormatError(
            "no Replicator rgb files found (expected rgb_0000.png, <rp>/rgb_0000.png or rgb/<rp>_rgb_0000.png)",
            path=folder,
            field="rgb",
        )
    cameras = {n: c for n, c in cameras.items() if c.has("rgb") or len(cameras) == 1}
    return cameras, _check_frames(folder, cameras)


def _check_frames(folder: Path, cameras: dict[str, CameraFiles]) -> list[FrameKey]:
    first = next(iter(cameras.values()))
    keys = sorted(first.files["rgb"])
    for cam in cameras.values():
        if not cam.has("rgb"):
            raise FormatError(
                "render product has no rgb files", path=folder / cam.name, field="rgb"
            )
        wanted = ["rgb", "camera_params"]
        if cam.depth_kind:
            wanted.append(cam.depth_kind)
        if cam.segmentation_kind:
            wanted.extend(cam.segmentation_kind)
        for anno in wanted:
            have = cam.files.get(anno, {})
            if anno == "camera_params" and not have:
                continue  # no camera params at all: K and pose are stored as unknown
            if sorted(have) != keys:
                missing = sorted(set(keys) - set(have)) or sorted(set(have) - set(keys))
                raise FormatError(
                    "mismatched frame counts between annotators",
                    path=folder if cam.name == "camera" else folder / cam.name,
                    field=anno,
                    expected=f"{len(keys)} frames like {first.name}'s rgb",
                    found=f"{len(have)} (first odd frame: {'_'.join(map(str, missing[0]))})",
                )
    return keys


# ------------------------------------------------------------------- segmentation


def label_name(value) -> str:
    """A labels-JSON value → one class name: {"class": "cube"} → "cube", a prim path as is."""
    if isinstance(value, dict):
        if "class" in value:
            return str(value["class"])
        return ",".join(f"{k}:{v}" for k, v in sorted(value.items()))
    return str(value)


def is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_CLASSES


def read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"malformed JSON ({e})", path=path, field=what) from e


def parse_label_key(key: str, path: Path) -> tuple[str, int | tuple[int, int, int, int]]:
    """ "(33, 243, 3, 255)" → ("colour", (r, g, b, a));  "2" → ("id", 2)."""
    key = key.strip()
    if key.lstrip("-").isdigit():
        return "id", int(key)
    match = _COLOUR_KEY.match(key)
    if match is None:
        raise FormatError(
            "label key is neither an id nor an (r, g, b, a) colour",
            path=path,
            field="labels",
            found=key,
        )
    r, g, b, a = (int(v) if v is not None else 255 for v in match.groups())
    return "colour", (r, g, b, a)


def segmentation_ids(
    image: np.ndarray, labels: dict, class_ids: dict[str, int], path: Path
) -> np.ndarray:
    """A semantic/instance PNG (colourised RGBA or ids) + its labels JSON → (H, W) int32 ids."""
    parsed = [(parse_label_key(str(k), path), label_name(v)) for k, v in labels.items()]
    kinds = {kind for (kind, _), _ in parsed}
    if len(kinds) > 1:
        raise FormatError("labels mix colour and id keys", path=path, field="labels")
    colourised = kinds == {"colour"} or (not kinds and image.ndim == 3)
    if colourised:
        rgba = _as_rgba(image, path)
        codes = _pack(rgba)  # (H, W) uint32
        table = {int(_pack(np.array(c, np.uint8))): name for (_, c), name in parsed}
    else:
        codes = _id_image(image, path)
        table = {i: name for (_, i), name in parsed}
    lut_keys = np.array(sorted(table), dtype=np.int64)
    lut_ids = np.array(
        [-1 if is_background(table[k]) else class_ids[table[k]] for k in lut_keys], np.int32
    )
    flat = codes.astype(np.int64).reshape(-1)
    pos = np.searchsorted(lut_keys, flat)
    pos = np.clip(pos, 0, max(len(lut_keys) - 1, 0))
    known = (lut_keys[pos] == flat) if len(lut_keys) else np.zeros(flat.shape, bool)
    if not known.all():
        bad = int(flat[np.argmax(~known)])
        shown = tuple(int(v) for v in np.array([bad], "<u4").view(np.uint8)) if colourised else bad
        raise FormatError(
            "segmentation pixel value has no entry in the labels file",
            path=path,
            field="labels",
            found=shown,
        )
    return lut_ids[pos].reshape(codes.shape)


def _pack(rgba: np.ndarray) -> np.ndarray:
    """(…, 4) uint8 RGBA → (…) uint32 (little-endian byte order, as the annotator's uint32 view)."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    return rgba.view("<u4")[..., 0]


def _as_rgba(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2 and image.dtype == np.uint32:  # colours packed as the annotator's uint32
        return np.ascontiguousarray(image).view(np.uint8).reshape(*image.shape, 4)
    if image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8:
        return image[..., [2, 1, 0, 3]]  # OpenCV reads BGRA
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        alpha = np.full(image.shape[:2] + (1,), 255, np.uint8)
        return np.concatenate([image[..., ::-1], alpha], axis=-1)
    raise FormatError(
        "colourised segmentation must be an 8-bit RGB(A) PNG",
        path=path,
        found=f"{image.dtype} {image.shape}",
    )


def _id_image(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2 and image.dtype.kind in "ui":  # PNG: 8/16-bit; annotator data: uint32
        return image
    if image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8:
        return _pack(image[..., [2, 1, 0, 3]])  # a uint32 id image stored as its RGBA bytes
    raise FormatError(
        "id segmentation must be a single-channel integer image",
        path=path,
        found=f"{image.dtype} {image.shape}",
    )


def collect_classes(cameras: dict[str, CameraFiles]) -> list[str]:
    """Every class name in every labels file, background excluded, sorted."""
    names: set[str] = set()
    for cam in cameras.values():
        kind = cam.segmentation_kind
        if kind is None:
            continue
        for path in cam.files[kind[1]].values():
            labels = read_json(path, "labels")
            if not isinstance(labels, dict):
                raise FormatError("labels file must hold a JSON object", path=path)
            names.update(label_name(v) for v in labels.values())
    return sorted(n for n in names if not is_background(n))


# -------------------------------------------------------------- episodes and actions


def read_markers(path: Path, n_frames: int) -> list[EpisodeSlice]:
    """Episode starts, one per line: ``12`` or ``{"start": 12, "success": true, "instruction": …}``.

    A whole-file JSON list of the same entries works too. Starts must begin at 0 and
    increase; each episode runs to the next start (the last to the final frame).
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise FormatError(f"cannot read the marker file ({e})", path=path) from e
    try:
        entries = json.loads(text)
        entries = entries if isinstance(entries, list) else [entries]
    except json.JSONDecodeError:
        entries = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise FormatError(
                        f"malformed marker ({e.msg})", path=path, field=f"line {i + 1}"
                    ) from e
    marks = []
    for i, entry in enumerate(entries):
        entry = {"start": entry} if isinstance(entry, int) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("start"), int):
            raise FormatError(
                "a marker is a start frame or an object with an integer 'start'",
                path=path,
                field=f"marker[{i}]",
                found=entry,
            )
        marks.append(entry)
    starts = [m["start"] for m in marks]
    if (
        not starts
        or starts[0] != 0
        or any(b <= a for a, b in zip(starts, starts[1:], strict=False))
    ):
        raise FormatError(
            "episode starts must begin at 0 and increase",
            path=path,
            field="start",
            found=starts[:8],
        )
    if starts[-1] >= n_frames:
        raise FormatError(
            "episode start past the last frame",
            path=path,
            field="start",
            expected=f"< {n_frames}",
            found=starts[-1],
        )
    stops = starts[1:] + [n_frames]
    return [
        EpisodeSlice(a, b, bool(m.get("success", False)), str(m.get("instruction", "")))
        for a, b, m in zip(starts, stops, marks, strict=True)
    ]


@dataclass
class SideData:
    action: np.ndarray  # (N, A) float32
    state: np.ndarray  # (N, S) float32
    reward: np.ndarray  # (N,) float32
    action_names: list[str] = field(default_factory=list)


def read_side_file(path: Path, n_frames: int) -> SideData:
    """Per-frame action / state / reward from ``.npz`` or JSON lines (one object per frame)."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError) as e:
            raise FormatError(f"cannot read npz ({e})", path=path) from e
    else:
        rows = []
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise FormatError(f"cannot read the side file ({e})", path=path) from e
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise FormatError(
                    f"malformed JSON ({e.msg})", path=path, field=f"line {i + 1}"
                ) from e
        arrays = {}
        for key in ("action", "state", "reward"):
            if rows and key in rows[0]:
                try:
                    arrays[key] = np.asarray([r[key] for r in rows], dtype=np.float64)
                except (KeyError, ValueError, TypeError) as e:
                    raise FormatError(
                        "every line needs the same numeric fields", path=path, field=key
                    ) from e
        arrays["_rows"] = np.zeros(len(rows))
    pick = {
        key: next((arrays[k] for k in (key, key + "s") if k in arrays), None)
        for key in ("action", "state", "reward")
    }
    if pick["action"] is None:
        raise FormatError("side file has no per-frame actions", path=path, field="action")
    out = {}
    for key, ndim in (("action", 2), ("state", 2), ("reward", 1)):
        value = pick[key]
        if value is None:
            continue
        value = np.asarray(value, dtype=np.float32)
        if value.ndim == 1 and ndim == 2:
            value = value[:, None]
        if value.ndim != ndim or value.shape[0] != n_frames:
            raise FormatError(
                "one row per frame",
                path=path,
                field=key,
                expected=f"({n_frames}{', D' if ndim == 2 else ''})",
                found=value.shape,
            )
        if not np.all(np.isfinite(value)):
            raise FormatError("non-finite values", path=path, field=key)
        out[key] = value
    return SideData(
        action=out["action"],
        state=out.get("state", np.zeros((n_frames, 0), np.float32)),
        reward=out.get("reward", np.zeros(n_frames, np.float32)),
    )


# ------------------------------------------------------------------------- source


class ReplicatorSource:
    """A BasicWriter folder as an :class:`EpisodeSource` (``episode(i)`` plays episode i).

    Everything cheap is checked up front (layout, frame counts, every JSON file, the
    side and marker files), so a malformed folder fails before anything is written.
    """

    def __init__(
        self, config: ReplicatorImportConfig, class_ids: dict[str, int] | None = None
    ) -> None:
        self.config = cfg = config
        self.cameras, self.keys = scan_folder(cfg.folder, cfg.camera_name)
        n = len(self.keys)
        classes = collect_classes(self.cameras)
        if class_ids is None:
            class_ids = {name: i for i, name in enumerate(classes)}
        unknown = [c for c in classes if c not in class_ids]
        if unknown:
            raise StoreError(
                "cannot append: the folder has classes the store's label map lacks",
                field="segmentation_labels",
                expected=sorted(class_ids),
                found=unknown,
            )
        self.class_ids = class_ids
        self.action_bounds: tuple[list[float], list[float]] | None = None  # set when appending
        self.params = {c: self._read_params(cam) for c, cam in self.cameras.items()}
        self.sizes = {c: self._image_size(cam) for c, cam in self.cameras.items()}
        self.side = read_side_file(Path(cfg.actions), n) if cfg.actions else None
        if cfg.markers is not None:
            self.slices = read_markers(Path(cfg.markers), n)
        else:
            step = cfg.episode_length or n
            self.slices = [EpisodeSlice(a, min(a + step, n)) for a in range(0, n, step)]
        for s in self.slices:
            s.instruction = s.instruction or cfg.instruction

    @property
    def num_episodes(self) -> int:
        return len(self.slices)

    @property
    def num_frames(self) -> int:
        return len(self.keys)

    def _read_params(self, cam: CameraFiles) -> dict[FrameKey, tuple] | None:
        if not cam.has("camera_params"):
            return None
        out = {}
        for key, path in cam.files["camera_params"].items():
            params = read_json(path, "camera_params")
            if not isinstance(params, dict):
                raise FormatError("camera_params must be a JSON object", path=path)
            k, pose, size = opencv_from_replicator_params(
                params, up_axis=self.config.up_axis, source=path
            )
            out[key] = (k, pose, size, float(params.get("metersPerSceneUnit", 1.0)))
        return out

    def _image_size(self, cam: CameraFiles) -> tuple[int, int]:
        first = cam.files["rgb"][self.keys[0]]
        image = _imread(first)
        h, w = image.shape[:2]
        params = self.params[cam.name]
        if params is not None:
            for key, (_, _, size, _) in params.items():
                if tuple(size) != (w, h):
                    raise FormatError(
                        "renderProductResolution differs from the rgb image size",
                        path=cam.files["camera_params"][key],
                        field="renderProductResolution",
                        expected=[w, h],
                        found=list(size),
                    )
        return h, w

    def store_spec(self) -> StoreSpec:
        side = self.side
        if side is not None:
            low, high = self.action_bounds or (
                side.action.min(0).tolist(),
                side.action.max(0).tolist(),
            )
            names = [f"a{i}" for i in range(side.action.shape[1])]
            state_dim = side.state.shape[1]
        else:  # no actions recorded: one constant placeholder dimension
            low, high, names, state_dim = [0.0], [0.0], ["none"], 0
        return StoreSpec(
            fps=self.config.fps,
            action_low=low,
            action_high=high,
            action_names=names,
            cameras={
                c: CameraSpec(
                    *self.sizes[c], cam.depth_kind is not None, cam.segmentation_kind is not None
                )
                for c, cam in self.cameras.items()
            },
            state_dim=state_dim,
            source=f"replicator:{self.config.folder.name}",
            segmentation_labels={
                i: n for n, i in sorted(self.class_ids.items(), key=lambda x: x[1])
            },
        )

    def episode(self, seed: int) -> Generator[Frame, None, Outcome]:
        """Play episode ``seed`` (an index into the split)."""
        piece = self.slices[seed]
        for t in range(piece.start, piece.stop):
            yield self.frame(t)
        return Outcome(success=piece.success, instruction=piece.instruction)

    def frame(self, t: int) -> Frame:
        key = self.keys[t]
        cams = {name: self._camera_frame(cam, key) for name, cam in self.cameras.items()}
        side = self.side
        if side is None:
            return Frame(cams, np.zeros(1, np.float32), np.zeros(0, np.float32))
        return Frame(cams, side.action[t], side.state[t], float(side.reward[t]))

    def _camera_frame(self, cam: CameraFiles, key: FrameKey) -> CameraFrame:
        h, w = self.sizes[cam.name]
        rgb_path = cam.files["rgb"][key]
        rgb = _rgb(_imread(rgb_path), rgb_path)
        if rgb.shape[:2] != (h, w):
            raise FormatError(
                "image size changes between frames",
                path=rgb_path,
                expected=(h, w),
                found=rgb.shape[:2],
            )
        params = self.params[cam.name]
        if params is not None:
            k, pose, _, meters = params[key]
        else:
            k, pose, meters = UNKNOWN_INTRINSICS, UNKNOWN_POSE, 1.0
        depth = None
        if cam.depth_kind is not None:
            depth = self._depth(cam, key, k, meters, (h, w))
        segmentation = None
        if cam.segmentation_kind is not None:
            image_name, labels_name = cam.segmentation_kind
            path = cam.files[image_name][key]
            labels = read_json(cam.files[labels_name][key], "labels")
            segmentation = segmentation_ids(_imread(path), labels, self.class_ids, path)
            if segmentation.shape != (h, w):
                raise FormatError(
                    "segmentation size differs from rgb",
                    path=path,
                    expected=(h, w),
                    found=segmentation.shape,
                )
        return CameraFrame(
            rgb=rgb,
            depth=depth,
            segmentation=segmentation,
            intrinsics=np.asarray(k, np.float32),
            world_from_camera=np.asarray(pose, np.float32),
        )

    def _depth(self, cam: CameraFiles, key, k, meters: float, size) -> np.ndarray:
        kind = cam.depth_kind
        path = cam.files[kind][key]
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise FormatError(f"cannot read depth ({e})", path=path, field=kind) from e
        depth = np.asarray(depth)
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        if depth.shape != tuple(size) or depth.dtype.kind != "f":
            raise FormatError(
                "depth must be a float (H, W) array",
                path=path,
                field=kind,
                expected=f"float {tuple(size)}",
                found=f"{depth.dtype} {depth.shape}",
            )
        if np.isnan(depth).any():
            raise FormatError(
                "NaN depth", path=path, field=kind, found=f"{int(np.isnan(depth).sum())} NaN pixels"
            )
        depth = depth.astype(np.float64) * meters  # scene units → metres; inf stays inf
        if kind == "distance_to_camera":
            if not np.all(np.isfinite(k)):
                raise CameraError(
                    "distance_to_camera needs camera_params to convert to depth",
                    path=path,
                    field=kind,
                )
            depth = euclidean_to_plane_depth(depth, np.asarray(k, np.float64))
        return depth.astype(np.float32)


def euclidean_to_plane_depth(distance: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Distance to the camera centre (H, W) → distance to the image plane, with K."""
    h, w = distance.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (u - intrinsics[0, 2]) / intrinsics[0, 0]
    y = (v - intrinsics[1, 2]) / intrinsics[1, 1]
    return distance / np.sqrt(x * x + y * y + 1.0)


def _imread(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FormatError("cannot decode image", path=path)
    return image


def _rgb(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype != np.uint8:
        raise FormatError("rgb must be 8-bit", path=path, field="rgb", found=str(image.dtype))
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    if image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[..., 2::-1])  # BGR(A) → RGB, alpha dropped
    raise FormatError("rgb must have 1, 3 or 4 channels", path=path, field="rgb", found=image.shape)


# ------------------------------------------------------------------------- import


def import_replicator(
    config: ReplicatorImportConfig, out: str | Path, *, on_episode=None
) -> RecordStats:
    """Import a BasicWriter folder into the store at ``out`` (created, or appended to).

    A new store is written beside ``out`` and renamed into place only when complete,
    so a failure leaves nothing behind; appending commits episode by episode.
    """
    out = Path(out)
    class_ids = None
    if out.exists():
        existing = EpisodeStore.open(out)
        class_ids = {name: i for i, name in existing.spec.segmentation_labels.items()}
    source = ReplicatorSource(config, class_ids)
    if out.exists() and source.side is not None:  # keep the store's action space (no clipping)
        source.action_bounds = (existing.spec.action_low, existing.spec.action_high)
    return record_new_or_append(source, out, source.num_episodes, on_episode=on_episode)


def record_new_or_append(source, out: Path, episodes: int, *, on_episode=None) -> RecordStats:
    """Record into a new store atomically (built beside ``out``, renamed when complete),
    or append episode by episode to an existing one."""
    if out.exists():
        return record(source, out, episodes=episodes, on_episode=on_episode)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        stats = record(source, partial, episodes=episodes, on_episode=on_episode)
        os.replace(partial, out)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return stats
