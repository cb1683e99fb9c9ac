"""The Replicator Writer's core: annotator dicts in, committed episodes in the store out.

Pure Python (numpy only): the Kit adapter (:mod:`cosmos_sim.bridge.omniverse.kit`)
hands every Replicator frame to :meth:`CosmosSimWriterCore.write` as the plain dict
Replicator passes to ``Writer.write``. Per render product it reads:

    rgb                       (H, W, 4) uint8 RGBA (or (H, W, 3))     → rgb
    distance_to_image_plane   (H, W) float32 scene units, inf = sky   → depth × metersPerSceneUnit
    semantic_segmentation     {"data": (H, W) uint32 ids | (H, W, 4) uint8 colours,
                               "info": {"idToLabels": {id | "(r, g, b, a)": {"class": name}}}}
    camera_params             {"cameraViewTransform", "cameraProjection", "renderProductResolution",
                               "metersPerSceneUnit", "cameraModel", …}  → K, world_from_camera

in any of Replicator's three ``data_structure`` layouts::

    legacy         data["rgb"] (one render product) or data["rgb-<rp>"] (several)
    "annotator"    data["annotators"]["rgb"]["<rp>"]
    "renderProduct" data["renderProducts"]["<rp>"]["rgb"]

The robot's action, state and reward for the frame come from ``step_callback()``
(or the last :meth:`set_step`). Frames stream into the store through the store's
episode writer: an episode becomes visible only at :meth:`end_episode`, so a crash
(even SIGKILL) loses at most the episode in progress. Segmentation ids are mapped to
stable per-store ids by class name; new classes extend the store's label map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cosmos_sim.bridge.replicator import is_background, label_name, segmentation_ids
from cosmos_sim.conditioning.cameras import opencv_from_replicator_params
from cosmos_sim.data.episode import UNKNOWN_INTRINSICS, UNKNOWN_POSE, CameraFrame, Frame
from cosmos_sim.data.store import CameraSpec, EpisodeStore, EpisodeWriter, StoreSpec
from cosmos_sim.errors import ConfigError, FormatError

ANNOTATORS = ("rgb", "distance_to_image_plane", "semantic_segmentation", "camera_params")
StepData = dict  # {"action": (A,), "state": (S,), "reward": float}


@dataclass
class WriterConfig:
    """What the writer records; image sizes come from the first frame."""

    out: Path
    fps: float
    action_low: Sequence[float]
    action_high: Sequence[float]
    action_names: Sequence[str] = ()
    state_names: Sequence[str] = ()
    state_dim: int | None = None  # default: len(state_names)
    cameras: dict[str, str] | None = None  # render product → store camera (default: rp name)
    depth: bool = True
    segmentation: bool = True
    classes: Sequence[str] = ()  # known class names, ids in this order (more are added as seen)
    instruction: str = ""
    up_axis: str = "Z"
    source: str = "omniverse:replicator"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.state_dim is None:
            self.state_dim = len(self.state_names)
        if len(self.action_low) != len(self.action_high) or not len(self.action_low):
            raise ConfigError(
                "one low and one high bound per action dimension",
                field="action_low/action_high",
                found=(len(self.action_low), len(self.action_high)),
            )


@dataclass
class _Pending:
    action: np.ndarray | None = None
    state: np.ndarray | None = None
    reward: float = 0.0
    extra: dict = field(default_factory=dict)


class CosmosSimWriterCore:
    """Turns Replicator frames + robot steps into committed episodes (see module docstring)."""

    def __init__(
        self, config: WriterConfig, step_callback: Callable[[], StepData] | None = None
    ) -> None:
        self.config = config
        self.step_callback = step_callback
        self.store: EpisodeStore | None = None
        self._writer: EpisodeWriter | None = None
        self._pending = _Pending()
        self._class_ids: dict[str, int] = {n: i for i, n in enumerate(config.classes)}
        self.frames_in_episode = 0
        self.episodes_written = 0
        if config.out.exists():  # append: reuse the store's label ids
            self.store = EpisodeStore.open(config.out, writable=True)
            labels = self.store.spec.segmentation_labels
            self._class_ids = {n: i for i, n in labels.items()}
            for name in config.classes:
                self._class_id(name)

    # ------------------------------------------------------------------ robot side
    def set_step(self, action, state=None, reward: float = 0.0) -> None:
        """The action taken after the next rendered frame, the robot state, the reward."""
        self._pending = _Pending(
            np.asarray(action, np.float32),
            None if state is None else np.asarray(state, np.float32),
            float(reward),
        )

    def _step(self) -> _Pending:
        if self.step_callback is not None:
            got = self.step_callback()
            if isinstance(got, tuple):
                got = dict(zip(("action", "state", "reward"), got, strict=False))
            self.set_step(got["action"], got.get("state"), got.get("reward", 0.0))
        pending = self._pending
        if pending.action is None:
            raise ConfigError(
                "no action for this frame: pass step_callback or call set_step() before each frame",
                field="action",
            )
        if pending.state is None:
            pending.state = np.zeros(self.config.state_dim, np.float32)
        return pending

    # ---------------------------------------------------------------- frames in
    def write(self, data: dict) -> None:
        """One Replicator frame (all render products) → one Frame appended to the episode."""
        per_rp = split_render_products(data)
        if not per_rp:
            raise FormatError("frame holds no known annotator", field="data", found=sorted(data))
        names = self.config.cameras or {rp: _camera_name(rp) for rp in per_rp}
        missing = sorted(set(names) - set(per_rp))
        if missing:
            raise FormatError(
                "render product missing from the frame",
                field="data",
                expected=sorted(names),
                found=sorted(per_rp),
            )
        cams = {names[rp]: self._camera_frame(names[rp], per_rp[rp]) for rp in names}
        step = self._step()
        frame = Frame(cams, step.action, step.state, step.reward)
        if self._writer is None:
            if self.store is None:
                self.store = EpisodeStore.create(self.config.out, self._spec(frame))
            self._writer = self.store.writer(flush_every=8)
        self._writer.add(frame)
        self._pending = _Pending()
        self.frames_in_episode += 1

    def end_episode(self, success: bool, instruction: str | None = None) -> int:
        """Commit the episode in progress (the only point where it becomes visible)."""
        if self._writer is None or self.frames_in_episode == 0:
            raise ConfigError("no frames written since the last episode", field="end_episode")
        index = self._writer.commit(
            success=success,
            instruction=self.config.instruction if instruction is None else instruction,
        )
        self.frames_in_episode = 0
        self.episodes_written += 1
        return index

    def discard_episode(self) -> None:
        if self._writer is not None:
            self._writer.discard()
        self.frames_in_episode = 0

    def close(self) -> None:
        """Drop an uncommitted episode; committed ones are already safe."""
        self.discard_episode()
        self._writer = None

    # ---------------------------------------------------------------- conversion
    def _camera_frame(self, where: str, annotators: dict) -> CameraFrame:
        if "rgb" not in annotators:
            raise FormatError("render product has no rgb annotator", field=f"{where}.rgb")
        rgb = np.asarray(_payload(annotators["rgb"]))
        if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
            raise FormatError(
                "rgb must be (H, W, 4) uint8 RGBA",
                field=f"{where}.rgb",
                found=f"{rgb.dtype} {rgb.shape}",
            )
        h, w = rgb.shape[:2]
        k, pose, meters = UNKNOWN_INTRINSICS, UNKNOWN_POSE, 1.0
        if "camera_params" in annotators:
            params = annotators["camera_params"]
            params = params if "cameraViewTransform" in params else _payload(params)
            k, pose, size = opencv_from_replicator_params(
                params, up_axis=self.config.up_axis, source=where
            )
            meters = float(np.asarray(params.get("metersPerSceneUnit", 1.0)))
            if tuple(size) != (w, h):
                raise FormatError(
                    "renderProductResolution differs from the rgb size",
                    field=f"{where}.camera_params",
                    expected=[w, h],
                    found=list(size),
                )
        depth = None
        if self.config.depth:
            depth = self._depth(annotators, where, meters, (h, w))
        segmentation = None
        if self.config.segmentation:
            segmentation = self._segmentation(annotators, where, (h, w))
        return CameraFrame(
            rgb=np.ascontiguousarray(rgb[..., :3]),
            depth=depth,
            segmentation=segmentation,
            intrinsics=np.asarray(k, np.float32),
            world_from_camera=np.asarray(pose, np.float32),
        )

    def _depth(self, annotators: dict, where: str, meters: float, size) -> np.ndarray:
        if "distance_to_image_plane" not in annotators:
            raise FormatError(
                "depth is on but the frame has no distance_to_image_plane",
                field=f"{where}.distance_to_image_plane",
            )
        depth = np.asarray(_payload(annotators["distance_to_image_plane"]))
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        if depth.shape != size or depth.dtype.kind != "f":
            raise FormatError(
                "distance_to_image_plane must be (H, W) float",
                field=f"{where}.distance_to_image_plane",
                expected=size,
                found=f"{depth.dtype} {depth.shape}",
            )
        if np.isnan(depth).any():
            raise FormatError("NaN depth", field=f"{where}.distance_to_image_plane")
        return (depth.astype(np.float64) * meters).astype(np.float32)

    def _segmentation(self, annotators: dict, where: str, size) -> np.ndarray:
        value = annotators.get("semantic_segmentation")
        if not isinstance(value, dict) or "data" not in value:
            raise FormatError(
                "segmentation is on but the frame has no semantic_segmentation {data, info}",
                field=f"{where}.semantic_segmentation",
            )
        labels = (value.get("info") or {}).get("idToLabels", value.get("idToLabels"))
        if not isinstance(labels, dict):
            raise FormatError(
                "semantic_segmentation lacks info.idToLabels",
                field=f"{where}.semantic_segmentation.info",
            )
        for name in labels.values():
            if not is_background(label_name(name)):
                self._class_id(label_name(name))
        image = np.asarray(value["data"])
        if image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8:
            image = image[..., [2, 1, 0, 3]]  # segmentation_ids reads colours as OpenCV BGRA
        ids = segmentation_ids(image, labels, self._class_ids, f"{where}.semantic_segmentation")
        if ids.shape != size:
            raise FormatError(
                "segmentation size differs from rgb",
                field=f"{where}.semantic_segmentation",
                expected=size,
                found=ids.shape,
            )
        return ids

    def _class_id(self, name: str) -> int:
        if name not in self._class_ids:
            self._class_ids[name] = len(self._class_ids)
            if self.store is not None:
                self.store.add_segmentation_labels({self._class_ids[name]: name})
        return self._class_ids[name]

    def _spec(self, frame: Frame) -> StoreSpec:
        cfg = self.config
        return StoreSpec(
            fps=cfg.fps,
            action_low=[float(v) for v in cfg.action_low],
            action_high=[float(v) for v in cfg.action_high],
            action_names=list(cfg.action_names),
            cameras={
                name: CameraSpec(*cf.rgb.shape[:2], cfg.depth, cfg.segmentation)
                for name, cf in frame.cameras.items()
            },
            state_dim=int(cfg.state_dim),
            state_names=list(cfg.state_names),
            source=cfg.source,
            segmentation_labels={i: n for n, i in self._class_ids.items()},
        )


def _payload(value):
    """Annotator outputs come bare or as {"data": array, "info": {...}}; warp/torch → numpy."""
    value = value["data"] if isinstance(value, dict) and "data" in value else value
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.cpu().numpy() if hasattr(value, "cpu") else value.numpy()
    return value


def _annotator_of(key: str) -> str | None:
    """'rgb', 'rgb_0ab3…' (an annotator with init params) → 'rgb'; unknown → None."""
    for name in sorted(ANNOTATORS, key=len, reverse=True):
        if key == name or key.startswith(name + "_"):
            return name
    return None


def _camera_name(render_product: str) -> str:
    """'/Render/RenderProduct_front' → 'RenderProduct_front'; store names have no slashes."""
    return render_product.rstrip("/").rsplit("/", 1)[-1] or "camera"


def split_render_products(data: dict) -> dict[str, dict]:
    """Any of Replicator's data layouts → {render product: {annotator: value}}."""
    if "renderProducts" in data:
        return {
            rp: {_annotator_of(a): v for a, v in annos.items() if _annotator_of(a)}
            for rp, annos in data["renderProducts"].items()
        }
    if "annotators" in data:
        out: dict[str, dict] = {}
        for key, per_rp in data["annotators"].items():
            anno = _annotator_of(key)
            if anno is not None:
                for rp, value in per_rp.items():
                    out.setdefault(rp, {})[anno] = value
        return out
    rp_names = [k[3:] for k in data if k.startswith("rp_")]
    single = rp_names[0] if len(rp_names) == 1 else "camera"
    out = {}
    for key, value in data.items():
        base, _, rp = key.rpartition("-") if "-" in key else (key, "", single)
        anno = _annotator_of(base)
        if anno is not None:
            out.setdefault(rp, {})[anno] = value
    return out
