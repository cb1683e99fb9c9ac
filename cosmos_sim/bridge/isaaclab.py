"""Isaac Lab / robomimic HDF5 demonstrations → episodes in the store.

Layout read (robomimic, and the Isaac Lab recorder which follows it)::

    data                      attrs: total, env_args (JSON: env_kwargs.control_freq → fps)
      demo_<i>                attrs: num_samples, success (Isaac Lab), seed
        actions               (N, A)
        obs/<key>             uint8 (N, H, W, 3|4)  → camera <key> rgb
                              float (N, H, W[, 1]) named <cam>_depth  → that camera's depth (metres)
                              int (N, H, W[, 1]) named <cam>_segmentation → its segmentation
                              float/int (N, D)  → state (low-dim keys concatenated, sorted)
                              (N, 3, 3) <cam>_intrinsics, (N, 4, 4) <cam>_world_from_camera
                                                → OpenCV K and pose (else stored as unknown)
        obs                   (N, D) a single observation array (Isaac Lab) → state
        states                (N, D) or nested groups (Isaac Lab) → state when obs has none
        rewards (N,), dones (N,)

Success is the demo's ``success`` attribute, else its last ``dones`` entry. h5py is
an optional extra (``pip install 'cosmos-sim[omniverse]'``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cosmos_sim.bridge.record import Outcome, RecordStats
from cosmos_sim.bridge.replicator import record_new_or_append
from cosmos_sim.data.episode import UNKNOWN_INTRINSICS, UNKNOWN_POSE, CameraFrame, Frame
from cosmos_sim.data.store import CameraSpec, EpisodeStore, StoreSpec
from cosmos_sim.errors import ConfigError, FormatError, MissingExtraError

_DEMO = re.compile(r"^demo_(\d+)$")
CAMERA_SUFFIXES = ("_depth", "_segmentation", "_intrinsics", "_world_from_camera")


def _h5py():
    try:
        import h5py
    except ImportError as e:
        raise MissingExtraError("h5py", "omniverse", "Isaac Lab import") from e
    return h5py


@dataclass
class IsaacLabImportConfig:
    path: Path
    fps: float | None = None  # default: env_args control_freq, else 30
    cameras: list[str] | None = None  # obs keys to import as cameras (default: every image key)
    state_keys: list[str] | None = None  # obs keys concatenated into state (default: low-dim ones)
    instruction: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.fps is not None and not self.fps > 0:
            raise ConfigError("must be positive", field="fps", found=self.fps)


@dataclass
class DemoLayout:
    """What one demo holds, decided from the first demo and checked on every other."""

    cameras: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (H, W)
    depth: set[str] = field(default_factory=set)
    segmentation: set[str] = field(default_factory=set)
    state_keys: list[str] = field(default_factory=list)
    state_names: list[str] = field(default_factory=list)
    state_source: str = "obs"  # "obs" keys, "obs_array", "states" or "none"


class IsaacLabSource:
    """An HDF5 demo file as an :class:`EpisodeSource` (``episode(i)`` plays the i-th demo)."""

    def __init__(self, config: IsaacLabImportConfig) -> None:
        h5py = _h5py()
        self.config = config
        path = config.path
        if not path.is_file():
            raise FormatError("no such HDF5 file", path=path)
        try:
            self.file = h5py.File(path, "r")
        except OSError as e:
            raise FormatError(f"not a readable HDF5 file ({e})", path=path) from e
        if "data" not in self.file or not isinstance(self.file["data"], h5py.Group):
            raise FormatError("no 'data' group (robomimic layout)", path=path, field="data")
        data = self.file["data"]
        demos = sorted(
            (int(m[1]), k)
            for k in data
            if (m := _DEMO.match(k)) and isinstance(data[k], h5py.Group)
        )
        if not demos:
            raise FormatError("no demo_<i> groups", path=path, field="data")
        self.demos = [name for _, name in demos]
        self.env_args = self._env_args(data)
        self.layout = self._layout(data[self.demos[0]])
        self._actions = {}
        for name in self.demos:
            self._check_demo(data[name])
        all_actions = np.concatenate(list(self._actions.values()))
        self.action_low = all_actions.min(0).tolist()
        self.action_high = all_actions.max(0).tolist()

    @property
    def num_episodes(self) -> int:
        return len(self.demos)

    # ------------------------------------------------------------------ layout
    def _env_args(self, data) -> dict:
        raw = data.attrs.get("env_args")
        if raw is None:
            return {}
        try:
            return json.loads(raw if isinstance(raw, str) else raw.decode())
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise FormatError(
                f"malformed env_args JSON ({e})", path=self.config.path, field="data.attrs.env_args"
            ) from e

    def _layout(self, demo) -> DemoLayout:
        h5py = _h5py()
        layout = DemoLayout()
        obs = demo.get("obs")
        keys = sorted(obs) if isinstance(obs, h5py.Group) else []
        for key in keys:
            ds = obs[key]
            if not isinstance(ds, h5py.Dataset):
                continue
            if ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] in (3, 4):
                if self.config.cameras is None or key in self.config.cameras:
                    layout.cameras[key] = tuple(ds.shape[1:3])
        for cam in list(layout.cameras):
            if f"{cam}_depth" in keys:
                layout.depth.add(cam)
            if f"{cam}_segmentation" in keys:
                layout.segmentation.add(cam)
        for cam in self.config.cameras or []:
            if cam not in layout.cameras:
                raise FormatError(
                    "no such camera image in obs",
                    path=self.config.path,
                    field=f"{demo.name}/obs/{cam}",
                    expected=sorted(layout.cameras) or "uint8 (N, H, W, 3) obs keys",
                )
        taken = set(layout.cameras) | {c + s for c in layout.cameras for s in CAMERA_SUFFIXES}
        low_dim = [
            k
            for k in keys
            if k not in taken
            and isinstance(obs[k], h5py.Dataset)
            and obs[k].ndim in (1, 2)
            and obs[k].dtype.kind in "fiub"
        ]
        if self.config.state_keys is not None:
            missing = [k for k in self.config.state_keys if k not in low_dim]
            if missing:
                raise FormatError(
                    "state key is not a low-dimensional obs entry",
                    path=self.config.path,
                    field=f"{demo.name}/obs/{missing[0]}",
                    expected=low_dim,
                )
            low_dim = list(self.config.state_keys)
        if low_dim:
            layout.state_source, layout.state_keys = "obs", low_dim
        elif isinstance(obs, h5py.Dataset) and obs.ndim == 2:
            layout.state_source, layout.state_keys = "obs_array", ["obs"]
        elif "states" in demo:
            layout.state_source = "states"
            layout.state_keys = _dataset_paths(demo["states"]) or ["states"]
        else:
            layout.state_source = "none"
        layout.state_names = [
            f"{key}[{i}]"
            for key, width in zip(layout.state_keys, self._state_widths(demo, layout), strict=True)
            for i in range(width)
        ]
        return layout

    def _state_parts(self, demo, layout: DemoLayout) -> list:
        if layout.state_source == "obs":
            return [demo["obs"][k] for k in layout.state_keys]
        if layout.state_source == "obs_array":
            return [demo["obs"]]
        if layout.state_source == "states":
            states = demo["states"]
            return (
                [states]
                if layout.state_keys == ["states"]
                else [states[k] for k in layout.state_keys]
            )
        return []

    def _state_widths(self, demo, layout: DemoLayout) -> list[int]:
        return [int(np.prod(p.shape[1:])) for p in self._state_parts(demo, layout)]

    def _check_demo(self, demo) -> None:
        path, where = self.config.path, demo.name.lstrip("/")
        if "actions" not in demo:
            raise FormatError("demo has no actions", path=path, field=f"{where}/actions")
        actions = np.asarray(demo["actions"], dtype=np.float32)
        if actions.ndim == 1:
            actions = actions[:, None]
        n = actions.shape[0]
        if actions.ndim != 2 or n == 0:
            raise FormatError(
                "actions must be (N, A) with N > 0",
                path=path,
                field=f"{where}/actions",
                found=actions.shape,
            )
        if not np.all(np.isfinite(actions)):
            raise FormatError("non-finite actions", path=path, field=f"{where}/actions")
        self._actions[demo.name] = actions
        parts = {
            f"{where}/obs/{c}": demo["obs"].get(c) if "obs" in demo else None
            for c in self.layout.cameras
        }
        for cam in self.layout.depth:
            parts[f"{where}/obs/{cam}_depth"] = demo["obs"].get(f"{cam}_depth")
        for cam in self.layout.segmentation:
            parts[f"{where}/obs/{cam}_segmentation"] = demo["obs"].get(f"{cam}_segmentation")
        for key, ds in parts.items():
            if ds is None:
                raise FormatError(
                    "missing in this demo (the first demo has it)", path=path, field=key
                )
            if ds.shape[0] != n:
                raise FormatError(
                    "length differs from actions",
                    path=path,
                    field=key,
                    expected=n,
                    found=ds.shape[0],
                )
        for cam, size in self.layout.cameras.items():
            if tuple(demo["obs"][cam].shape[1:3]) != size:
                raise FormatError(
                    "image size differs between demos",
                    path=path,
                    field=f"{where}/obs/{cam}",
                    expected=size,
                    found=demo["obs"][cam].shape[1:3],
                )
        widths = self._state_widths(demo, self.layout)
        if sum(widths) != len(self.layout.state_names):
            raise FormatError(
                "state width differs between demos",
                path=path,
                field=f"{where}/{self.layout.state_source}",
                expected=len(self.layout.state_names),
                found=sum(widths),
            )
        for part in self._state_parts(demo, self.layout):
            if part.shape[0] != n:
                raise FormatError(
                    "length differs from actions",
                    path=path,
                    field=part.name.lstrip("/"),
                    expected=n,
                    found=part.shape[0],
                )
        for key in ("rewards", "dones"):
            if key in demo and demo[key].shape[0] != n:
                raise FormatError(
                    "length differs from actions",
                    path=path,
                    field=f"{where}/{key}",
                    expected=n,
                    found=demo[key].shape[0],
                )

    # -------------------------------------------------------------- EpisodeSource
    def store_spec(self) -> StoreSpec:
        layout = self.layout
        control = self.env_args.get("env_kwargs", {}).get("control_freq")
        fps = self.config.fps or (float(control) if control else 30.0)
        return StoreSpec(
            fps=fps,
            action_low=self.action_low,
            action_high=self.action_high,
            action_names=[f"a{i}" for i in range(len(self.action_low))],
            cameras={
                c: CameraSpec(h, w, c in layout.depth, c in layout.segmentation)
                for c, (h, w) in layout.cameras.items()
            },
            state_dim=len(layout.state_names),
            state_names=layout.state_names,
            source=f"isaaclab:{self.env_args.get('env_name', self.config.path.stem)}",
        )

    def episode(self, seed: int) -> Generator[Frame, None, Outcome]:
        demo = self.file["data"][self.demos[seed]]
        actions = self._actions[demo.name]
        n = actions.shape[0]
        state = self._read_state(demo, n)
        rewards = (
            np.asarray(demo["rewards"], np.float32).reshape(n)
            if "rewards" in demo
            else np.zeros(n, np.float32)
        )
        cameras = {c: self._read_camera(demo, c, n) for c in self.layout.cameras}
        for t in range(n):
            cams = {
                c: CameraFrame(
                    rgb=series["rgb"][t],
                    depth=None if series["depth"] is None else series["depth"][t],
                    segmentation=None if series["seg"] is None else series["seg"][t],
                    intrinsics=series["k"][t],
                    world_from_camera=series["pose"][t],
                )
                for c, series in cameras.items()
            }
            yield Frame(cams, actions[t], state[t], float(rewards[t]))
        return Outcome(success=self._success(demo), instruction=self.config.instruction)

    def _read_state(self, demo, n: int) -> np.ndarray:
        parts = [
            np.asarray(p, np.float32).reshape(n, -1) for p in self._state_parts(demo, self.layout)
        ]
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), np.float32)

    def _read_camera(self, demo, cam: str, n: int) -> dict:
        obs = demo["obs"]
        rgb = np.asarray(obs[cam])[..., :3]
        depth = seg = None
        if cam in self.layout.depth:
            depth = np.asarray(obs[f"{cam}_depth"], np.float32).reshape(rgb.shape[:3])
            if np.isnan(depth).any():
                raise FormatError(
                    "NaN depth", path=self.config.path, field=f"{demo.name}/obs/{cam}_depth"
                )
        if cam in self.layout.segmentation:
            seg = np.asarray(obs[f"{cam}_segmentation"]).reshape(rgb.shape[:3]).astype(np.int32)
        k = self._per_frame(demo, f"{cam}_intrinsics", (3, 3), UNKNOWN_INTRINSICS, n)
        pose = self._per_frame(demo, f"{cam}_world_from_camera", (4, 4), UNKNOWN_POSE, n)
        return {"rgb": rgb, "depth": depth, "seg": seg, "k": k, "pose": pose}

    def _per_frame(self, demo, key: str, shape, unknown: np.ndarray, n: int) -> np.ndarray:
        obs = demo["obs"]
        if key in obs:
            value = np.asarray(obs[key], np.float32)
        elif key in demo.attrs:
            value = np.asarray(demo.attrs[key], np.float32)
        else:
            return np.broadcast_to(unknown, (n, *shape))
        if value.shape == shape:
            value = np.broadcast_to(value, (n, *shape))
        if value.shape != (n, *shape):
            raise FormatError(
                "wrong shape",
                path=self.config.path,
                field=f"{demo.name}/obs/{key}",
                expected=(n, *shape),
                found=value.shape,
            )
        return value

    def _success(self, demo) -> bool:
        if "success" in demo.attrs:
            return bool(np.asarray(demo.attrs["success"]).reshape(-1)[0])
        if "dones" in demo and demo["dones"].shape[0]:
            return bool(np.asarray(demo["dones"])[-1])
        return False

    def close(self) -> None:
        self.file.close()


def _dataset_paths(group, prefix: str = "") -> list[str]:
    """Every dataset under an HDF5 group, as sorted relative paths (nested Isaac Lab states)."""
    h5py = _h5py()
    out = []
    for key in sorted(group):
        item = group[key]
        name = f"{prefix}{key}"
        if isinstance(item, h5py.Group):
            out.extend(_dataset_paths(item, name + "/"))
        elif item.ndim >= 1:
            out.append(name)
    return out


def import_isaaclab(
    config: IsaacLabImportConfig, out: str | Path, *, on_episode=None
) -> RecordStats:
    """Import every demo of an HDF5 file into the store at ``out`` (created, or appended to)."""
    out = Path(out)
    source = IsaacLabSource(config)
    try:
        if out.exists():  # keep the store's action space; actions are not clipped
            existing = EpisodeStore.open(out).spec
            source.action_low, source.action_high = existing.action_low, existing.action_high
        return record_new_or_append(source, out, source.num_episodes, on_episode=on_episode)
    finally:
        source.close()
