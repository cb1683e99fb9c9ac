"""The episode store: one zarr v3 group holding many episodes on one time axis.

Layout (schema version 1)::

    STORE.zarr/
      zarr.json                      attrs: schema_version, fps, source, action_space
                                     {low, high, names}, state_names, cameras {name: {height,
                                     width, depth, segmentation}}, segmentation_labels {id: name}
      episode_ends         (E,)      int64   cumulative frame counts; written LAST per episode
      episode_success      (E,)      bool
      episode_instruction  (E,)      str
      action               (T, A)    float32  action taken after observing frame t
      state                (T, S)    float32
      reward               (T,)      float32
      cameras/<name>/rgb                (T, H, W, 3) uint8
      cameras/<name>/depth              (T, H, W)    float32  metres to the image plane
      cameras/<name>/segmentation       (T, H, W)    int32    object id, -1 background
      cameras/<name>/intrinsics         (T, 3, 3)    float32  OpenCV K (NaN = unknown)
      cameras/<name>/world_from_camera  (T, 4, 4)    float32  OpenCV (NaN = unknown)

Crash safety: frames are appended first, per-episode fields next, and ``episode_ends``
last. zarr writes every chunk and metadata file atomically (temporary file + rename),
so a process killed at any instant leaves a store whose committed episodes are intact;
anything past ``episode_ends[-1]`` is an invisible partial episode, trimmed by the next
writer. ``episode_ends`` is created with fill value -1, so an entry whose resize landed
but whose value did not reads as -1 and is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zarr

from cosmos_sim.data.episode import CameraFrame, CameraSeries, Episode, Frame
from cosmos_sim.errors import StoreError

SCHEMA_VERSION = 1
IMAGE_CHUNK = 32  # frames per chunk for per-camera arrays
VECTOR_CHUNK = 4096  # frames per chunk for action / state / reward
EPISODE_CHUNK = 4096

# name -> (dtype, per-frame shape given the camera spec)
CAMERA_FIELDS = ("rgb", "depth", "segmentation", "intrinsics", "world_from_camera")
IMAGE_FIELDS = ("rgb", "depth", "segmentation")


@dataclass
class CameraSpec:
    height: int
    width: int
    depth: bool = True
    segmentation: bool = True

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise StoreError(
                "camera size must be positive",
                field="height/width",
                found=(self.height, self.width),
            )

    def frame_shape(self, name: str) -> tuple[int, ...]:
        return {
            "rgb": (self.height, self.width, 3),
            "depth": (self.height, self.width),
            "segmentation": (self.height, self.width),
            "intrinsics": (3, 3),
            "world_from_camera": (4, 4),
        }[name]

    def fields(self) -> list[str]:
        return [
            f
            for f in CAMERA_FIELDS
            if not (f == "depth" and not self.depth)
            and not (f == "segmentation" and not self.segmentation)
        ]


FIELD_DTYPES = {
    "rgb": np.dtype(np.uint8),
    "depth": np.dtype(np.float32),
    "segmentation": np.dtype(np.int32),
    "intrinsics": np.dtype(np.float32),
    "world_from_camera": np.dtype(np.float32),
    "action": np.dtype(np.float32),
    "state": np.dtype(np.float32),
    "reward": np.dtype(np.float32),
}


@dataclass
class StoreSpec:
    """What a store holds; fixed when the store is created, checked on every append."""

    fps: float
    action_low: list[float]
    action_high: list[float]
    cameras: dict[str, CameraSpec]
    state_dim: int
    source: str = "unknown"
    action_names: list[str] = field(default_factory=list)
    state_names: list[str] = field(default_factory=list)
    segmentation_labels: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise StoreError("fps must be positive", field="fps", found=self.fps)
        if len(self.action_low) != len(self.action_high) or not self.action_low:
            raise StoreError(
                "action bounds need one low and one high per dimension",
                field="action_space",
                found=(len(self.action_low), len(self.action_high)),
            )
        if self.action_names and len(self.action_names) != len(self.action_low):
            raise StoreError(
                "one name per action dimension",
                field="action_space.names",
                expected=len(self.action_low),
                found=len(self.action_names),
            )
        if self.state_names and len(self.state_names) != self.state_dim:
            raise StoreError(
                "one name per state dimension",
                field="state_names",
                expected=self.state_dim,
                found=len(self.state_names),
            )

    @property
    def action_dim(self) -> int:
        return len(self.action_low)

    def to_attrs(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "fps": float(self.fps),
            "source": self.source,
            "action_space": {
                "low": [float(v) for v in self.action_low],
                "high": [float(v) for v in self.action_high],
                "names": list(self.action_names),
            },
            "state_dim": int(self.state_dim),
            "state_names": list(self.state_names),
            "cameras": {name: asdict(spec) for name, spec in self.cameras.items()},
            "segmentation_labels": {str(k): v for k, v in self.segmentation_labels.items()},
        }

    @classmethod
    def from_attrs(cls, attrs: dict, path: str | Path) -> StoreSpec:
        def need(key: str):
            if key not in attrs:
                raise StoreError("missing store attribute", path=path, field=f"attrs.{key}")
            return attrs[key]

        space = need("action_space")
        try:
            cameras = {name: CameraSpec(**spec) for name, spec in need("cameras").items()}
            return cls(
                fps=float(need("fps")),
                action_low=list(space["low"]),
                action_high=list(space["high"]),
                action_names=list(space.get("names", [])),
                cameras=cameras,
                state_dim=int(need("state_dim")),
                state_names=list(attrs.get("state_names", [])),
                source=str(attrs.get("source", "unknown")),
                segmentation_labels={
                    int(k): v for k, v in attrs.get("segmentation_labels", {}).items()
                },
            )
        except StoreError as e:
            raise StoreError(
                e.message, path=path, field=f"attrs.{e.field}", expected=e.expected, found=e.found
            ) from e
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"malformed store attributes ({e})", path=path, field="attrs") from e

    def check_compatible(self, other: StoreSpec, path: str | Path) -> None:
        """Refuse to append episodes recorded differently from what the store holds."""
        checks = [
            ("fps", self.fps, other.fps),
            ("action_space.low", self.action_low, other.action_low),
            ("action_space.high", self.action_high, other.action_high),
            ("state_dim", self.state_dim, other.state_dim),
            ("cameras", sorted(self.cameras), sorted(other.cameras)),
        ]
        checks += [
            (f"cameras.{n}", asdict(self.cameras[n]), asdict(other.cameras[n]))
            for n in self.cameras
            if n in other.cameras
        ]
        for name, have, want in checks:
            if have != want:
                raise StoreError(
                    "cannot append: the new episodes differ from the store",
                    path=path,
                    field=name,
                    expected=have,
                    found=want,
                )


class EpisodeStore:
    """Open with :meth:`open` (validates) or :meth:`create`; append with :meth:`writer`."""

    def __init__(self, path: Path, group: zarr.Group, spec: StoreSpec, writable: bool) -> None:
        self.path = path
        self.group = group
        self.spec = spec
        self.writable = writable
        self._arrays: dict[str, zarr.Array] = {}
        self._ends = np.zeros(0, dtype=np.int64)
        self._validate()

    # ---------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | Path, spec: StoreSpec, *, overwrite: bool = False) -> EpisodeStore:
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError("store already exists (use append, or --overwrite)", path=path)
        group = zarr.open_group(path, mode="w")
        group.attrs.update(spec.to_attrs())
        n_act, n_state = spec.action_dim, spec.state_dim
        _new(group, "episode_ends", (0,), "int64", EPISODE_CHUNK, fill_value=-1)
        _new(group, "episode_success", (0,), "bool", EPISODE_CHUNK)
        _new(group, "episode_instruction", (0,), str, EPISODE_CHUNK)
        _new(group, "action", (0, n_act), "float32", VECTOR_CHUNK)
        _new(group, "state", (0, n_state), "float32", VECTOR_CHUNK)
        _new(group, "reward", (0,), "float32", VECTOR_CHUNK)
        for name, cam in spec.cameras.items():
            sub = group.require_group(f"cameras/{name}")
            for f in cam.fields():
                _new(sub, f, (0, *cam.frame_shape(f)), FIELD_DTYPES[f], IMAGE_CHUNK)
        return cls(path, group, spec, writable=True)

    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False) -> EpisodeStore:
        path = Path(path)
        if not path.exists():
            raise StoreError("no such store", path=path)
        if not (path / "zarr.json").is_file():
            raise StoreError("not a zarr v3 store (no zarr.json)", path=path)
        try:
            group = zarr.open_group(path, mode="r+" if writable else "r")
        except Exception as e:  # zarr raises many types for unreadable metadata
            raise StoreError(
                f"cannot read zarr metadata ({type(e).__name__}: {e})", path=path
            ) from e
        attrs = dict(group.attrs)
        if "schema_version" not in attrs:
            raise StoreError("not an episode store", path=path, field="attrs.schema_version")
        if attrs["schema_version"] != SCHEMA_VERSION:
            raise StoreError(
                "unknown schema version",
                path=path,
                field="attrs.schema_version",
                expected=SCHEMA_VERSION,
                found=attrs["schema_version"],
            )
        return cls(path, group, StoreSpec.from_attrs(attrs, path), writable)

    @classmethod
    def open_or_create(cls, path: str | Path, spec: StoreSpec) -> EpisodeStore:
        """Append to an existing store (after checking the spec matches) or create one."""
        path = Path(path)
        if not path.exists():
            return cls.create(path, spec)
        store = cls.open(path, writable=True)
        store.spec.check_compatible(spec, path)
        return store

    # ------------------------------------------------------------- validation
    def _array(self, key: str) -> zarr.Array:
        if key not in self._arrays:
            try:
                node = self.group[key]
            except KeyError as e:
                raise StoreError("missing array", path=self.path, field=key) from e
            except Exception as e:
                raise StoreError(
                    f"unreadable array ({type(e).__name__}: {e})", path=self.path, field=key
                ) from e
            if not isinstance(node, zarr.Array):
                raise StoreError("expected an array, found a group", path=self.path, field=key)
            self._arrays[key] = node
        return self._arrays[key]

    def _check(self, key: str, dtype, frame_shape: tuple[int, ...], min_len: int) -> None:
        arr = self._array(key)
        if dtype is not None and arr.dtype != dtype:
            raise StoreError(
                "wrong dtype", path=self.path, field=key, expected=dtype, found=arr.dtype
            )
        if tuple(arr.shape[1:]) != tuple(frame_shape):
            raise StoreError(
                "wrong shape",
                path=self.path,
                field=key,
                expected=("T", *frame_shape),
                found=arr.shape,
            )
        if arr.shape[0] < min_len:
            raise StoreError(
                "length mismatch: shorter than episode_ends says",
                path=self.path,
                field=key,
                expected=f">= {min_len} frames",
                found=arr.shape[0],
            )

    def _validate(self) -> None:
        ends_arr = self._array("episode_ends")
        if ends_arr.dtype != np.int64 or ends_arr.ndim != 1:
            raise StoreError(
                "wrong dtype/shape",
                path=self.path,
                field="episode_ends",
                expected="int64 (E,)",
                found=f"{ends_arr.dtype} {ends_arr.shape}",
            )
        ends = np.asarray(ends_arr[:], dtype=np.int64)
        # An entry of -1 at the tail is an append that a crash interrupted: not committed.
        committed = len(ends)
        while committed and ends[committed - 1] == -1:
            committed -= 1
        ends = ends[:committed]
        steps = np.diff(np.concatenate([[0], ends]))
        if (steps <= 0).any():
            bad = int(np.argmax(steps <= 0))
            raise StoreError(
                "episode_ends must be strictly increasing",
                path=self.path,
                field=f"episode_ends[{bad}]",
                found=ends[max(bad - 1, 0) : bad + 1].tolist(),
            )
        self._ends = ends
        n_frames, n_eps = self.num_frames, len(ends)
        spec = self.spec
        self._check("episode_success", np.bool_, (), n_eps)
        self._check("episode_instruction", None, (), n_eps)
        self._check("action", FIELD_DTYPES["action"], (spec.action_dim,), n_frames)
        self._check("state", FIELD_DTYPES["state"], (spec.state_dim,), n_frames)
        self._check("reward", FIELD_DTYPES["reward"], (), n_frames)
        for name, cam in spec.cameras.items():
            for f in cam.fields():
                self._check(f"cameras/{name}/{f}", FIELD_DTYPES[f], cam.frame_shape(f), n_frames)

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._ends)

    @property
    def num_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def cameras(self) -> list[str]:
        return list(self.spec.cameras)

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def has_partial_episode(self) -> bool:
        """True when a crashed recording left frames past the last committed episode."""
        return self._array("action").shape[0] > self.num_frames

    def episode_bounds(self, index: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= index < n:
            raise StoreError(
                "no such episode",
                path=self.path,
                field="episode",
                expected=f"0..{n - 1}",
                found=index,
            )
        index %= n
        start = int(self._ends[index - 1]) if index else 0
        return start, int(self._ends[index])

    def episode_length(self, index: int) -> int:
        start, end = self.episode_bounds(index)
        return end - start

    @property
    def success(self) -> np.ndarray:
        return np.asarray(self._array("episode_success")[: len(self)], dtype=bool)

    @property
    def instructions(self) -> list[str]:
        return [str(s) for s in self._array("episode_instruction")[: len(self)]]

    def check_cameras(self, cameras: Sequence[str] | None) -> list[str]:
        """The cameras asked for (all when None), or a StoreError naming one the store lacks."""
        if cameras is None:
            return self.cameras
        for c in cameras:
            if c not in self.spec.cameras:
                raise StoreError(
                    "store has no such camera",
                    path=self.path,
                    field="camera",
                    expected=self.cameras,
                    found=c,
                )
        return list(cameras)

    def _read(self, key: str, sel) -> np.ndarray:
        try:
            return np.asarray(self._array(key)[sel])
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(
                f"corrupt data ({type(e).__name__}: {e})", path=self.path, field=key
            ) from e

    def read_window(
        self,
        episode: int,
        start: int,
        length: int,
        *,
        cameras: Sequence[str] | None = None,
        stride: int = 1,
        fields: Iterable[str] = ("rgb",),
    ) -> dict:
        """Read `length` frames of one episode from `start`, every `stride`-th frame.

        Only the requested chunks are read. Returns ``{"rgb": {cam: (T,H,W,3)}, ...,
        "action": (T,A), "state": (T,S), "reward": (T,)}`` for the fields asked for.
        """
        ep_start, ep_end = self.episode_bounds(episode)
        last = start + (length - 1) * stride
        if start < 0 or length < 1 or stride < 1 or ep_start + last >= ep_end:
            raise StoreError(
                "window outside the episode",
                path=self.path,
                field=f"episode[{episode}]",
                expected=f"start + (length-1)*stride < {ep_end - ep_start}",
                found=f"start={start} length={length} stride={stride}",
            )
        sel = slice(ep_start + start, ep_start + last + 1, stride)
        out: dict = {}
        for f in fields:
            if f in CAMERA_FIELDS:
                out[f] = {}
                for cam in self.check_cameras(cameras):
                    if f not in self.spec.cameras[cam].fields():
                        raise StoreError(
                            "camera has no such field", path=self.path, field=f"cameras/{cam}/{f}"
                        )
                    out[f][cam] = self._read(f"cameras/{cam}/{f}", sel)
            elif f in ("action", "state", "reward"):
                out[f] = self._read(f, sel)
            else:
                raise StoreError(
                    "unknown field",
                    path=self.path,
                    field=f,
                    expected=list(CAMERA_FIELDS) + ["action", "state", "reward"],
                )
        return out

    def read_episode(self, index: int, cameras: Sequence[str] | None = None) -> Episode:
        start, end = self.episode_bounds(index)
        cams = self.check_cameras(cameras)
        all_fields = ("action", "state", "reward", *CAMERA_FIELDS)
        fields = [
            f
            for f in all_fields
            if f not in CAMERA_FIELDS or any(f in self.spec.cameras[c].fields() for c in cams)
        ]
        w = self.read_window(index, 0, end - start, cameras=cams, fields=fields)
        series = {
            c: CameraSeries(
                rgb=w["rgb"][c],
                depth=w.get("depth", {}).get(c),
                segmentation=w.get("segmentation", {}).get(c),
                intrinsics=w["intrinsics"][c],
                world_from_camera=w["world_from_camera"][c],
            )
            for c in cams
        }
        index %= len(self)
        return Episode(
            cameras=series,
            action=w["action"],
            state=w["state"],
            reward=w["reward"],
            success=bool(self._read("episode_success", index)),
            instruction=str(self._read("episode_instruction", index)),
        )

    def episodes(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self.read_episode(i)

    # ---------------------------------------------------------------- writing
    def add_segmentation_labels(self, labels: dict[int, str]) -> None:
        """Extend the segmentation label map (new object ids seen while recording)."""
        if not self.writable:
            raise StoreError("store opened read-only", path=self.path)
        for i, name in labels.items():
            known = self.spec.segmentation_labels.get(int(i))
            if known is not None and known != name:
                raise StoreError(
                    "segmentation id already names another object",
                    path=self.path,
                    field=f"segmentation_labels[{i}]",
                    expected=known,
                    found=name,
                )
        self.spec.segmentation_labels.update({int(i): n for i, n in labels.items()})
        self.group.attrs["segmentation_labels"] = {
            str(k): v for k, v in self.spec.segmentation_labels.items()
        }

    def writer(self, *, flush_every: int = IMAGE_CHUNK) -> EpisodeWriter:
        if not self.writable:
            raise StoreError("store opened read-only", path=self.path)
        return EpisodeWriter(self, flush_every)

    def append_episode(self, episode: Episode) -> None:
        with self.writer() as w:
            for frame in episode.frames():
                w.add(frame)
            w.commit(success=episode.success, instruction=episode.instruction)

    def _trim_to_committed(self) -> None:
        """Drop what a crashed writer left past the last committed episode."""
        n_frames, n_eps = self.num_frames, len(self)
        for key in self._time_arrays():
            arr = self._array(key)
            if arr.shape[0] != n_frames:
                arr.resize((n_frames, *arr.shape[1:]))
        for key in ("episode_success", "episode_instruction", "episode_ends"):
            arr = self._array(key)
            if arr.shape[0] != n_eps:
                arr.resize((n_eps,))

    def _time_arrays(self) -> list[str]:
        keys = ["action", "state", "reward"]
        for name, cam in self.spec.cameras.items():
            keys += [f"cameras/{name}/{f}" for f in cam.fields()]
        return keys


class EpisodeWriter:
    """Streams one episode at a time into a store; nothing is visible until `commit`.

    Use as a context manager: leaving the block without `commit` (an exception, a
    Ctrl-C) discards the episode in progress and leaves the store as it was.
    """

    def __init__(self, store: EpisodeStore, flush_every: int) -> None:
        self.store = store
        self.flush_every = max(1, flush_every)
        self._buffer: list[Frame] = []
        self._written = 0
        # Chunks are compressed and written on one background thread, so that the
        # simulator renders the next frames meanwhile; `commit` waits for them first.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episode-writer")
        self._pending: Future | None = None
        store._trim_to_committed()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._written or self._buffer:
            self.discard()
        self._io.shutdown(wait=True)

    def _wait(self) -> None:
        """Block until the background write is done; re-raise its error here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def add(self, frame: Frame) -> None:
        self._check_frame(frame)
        self._buffer.append(frame)
        if len(self._buffer) >= self.flush_every:
            self._flush()

    def _check_frame(self, frame: Frame) -> None:
        spec, path = self.store.spec, self.store.path
        t = self._written + len(self._buffer)
        if set(frame.cameras) != set(spec.cameras):
            raise StoreError(
                "frame cameras differ from the store",
                path=path,
                field=f"frame[{t}].cameras",
                expected=sorted(spec.cameras),
                found=sorted(frame.cameras),
            )
        checks = [
            ("action", frame.action, (spec.action_dim,)),
            ("state", frame.state, (spec.state_dim,)),
        ]
        for name, cam in spec.cameras.items():
            cf = frame.cameras[name]
            checks += [
                (f"cameras/{name}/{f}", getattr(cf, f), cam.frame_shape(f)) for f in cam.fields()
            ]
        for key, value, shape in checks:
            found = None if value is None else np.shape(value)
            if found != shape:
                raise StoreError(
                    "wrong shape", path=path, field=f"frame[{t}].{key}", expected=shape, found=found
                )
        if not np.isfinite(frame.action).all():
            raise StoreError(
                "non-finite action",
                path=path,
                field=f"frame[{t}].action",
                found=frame.action.tolist(),
            )

    def _flush(self) -> None:
        if not self._buffer:
            return
        frames, self._buffer = self._buffer, []
        self._wait()  # keep writes in order and at most one batch in flight
        self._pending = self._io.submit(self._write, frames)
        self._written += len(frames)

    def _write(self, frames: list[Frame]) -> None:
        store = self.store

        def stack(values, key):
            return np.ascontiguousarray(
                np.stack(values), dtype=FIELD_DTYPES[key.rsplit("/", 1)[-1]]
            )

        store._array("action").append(stack([f.action for f in frames], "action"))
        store._array("state").append(stack([f.state for f in frames], "state"))
        store._array("reward").append(stack([f.reward for f in frames], "reward"))
        for name, cam in store.spec.cameras.items():
            for f in cam.fields():
                key = f"cameras/{name}/{f}"
                store._array(key).append(
                    stack([getattr(fr.cameras[name], f) for fr in frames], key)
                )

    def commit(self, *, success: bool, instruction: str = "") -> int:
        """Make the episode visible; returns its index."""
        self._flush()
        self._wait()
        if self._written == 0:
            raise StoreError("cannot commit an empty episode", path=self.store.path)
        store = self.store
        store._array("episode_success").append(np.array([bool(success)]))
        store._array("episode_instruction").append(np.array([instruction], dtype=object))
        new_end = store.num_frames + self._written
        store._array("episode_ends").append(np.array([new_end], dtype=np.int64))  # the commit point
        store._ends = np.append(store._ends, np.int64(new_end))
        self._written = 0
        return len(store) - 1

    def discard(self) -> None:
        self._buffer = []
        self._written = 0
        try:
            self._wait()
        except Exception:  # noqa: BLE001  the episode is being thrown away anyway
            pass
        self.store._trim_to_committed()


def _new(group: zarr.Group, name: str, shape, dtype, chunk_len: int, fill_value=None) -> zarr.Array:
    chunks = (chunk_len, *shape[1:])
    kwargs = {} if fill_value is None else {"fill_value": fill_value}
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, **kwargs)


def frame_from_window(window: dict, t: int) -> Frame:
    """Rebuild one Frame from a `read_window` result (used when copying between stores)."""
    cams = {}
    for cam in window.get("rgb", {}):
        cams[cam] = CameraFrame(
            **{f: window[f][cam][t] for f in CAMERA_FIELDS if f in window and cam in window[f]}
        )
    return Frame(cams, window["action"][t], window["state"][t], float(window["reward"][t]))


def describe(store: EpisodeStore) -> dict:
    """A JSON-able summary of a store (what `cosmos-sim info` prints)."""
    lengths = np.diff(np.concatenate([[0], store.episode_ends]))
    actions = (
        store._read("action", slice(0, store.num_frames))
        if store.num_frames
        else np.zeros((0, store.spec.action_dim))
    )
    return {
        "path": str(store.path),
        "source": store.spec.source,
        "fps": store.spec.fps,
        "episodes": len(store),
        "frames": store.num_frames,
        "episode_length": {
            "min": int(lengths.min()) if len(lengths) else 0,
            "mean": float(lengths.mean()) if len(lengths) else 0.0,
            "max": int(lengths.max()) if len(lengths) else 0,
        },
        "success_rate": float(store.success.mean()) if len(store) else float("nan"),
        "cameras": {
            name: {f: list(cam.frame_shape(f)) for f in cam.fields()}
            for name, cam in store.spec.cameras.items()
        },
        "action": {
            "names": store.spec.action_names,
            "mean": actions.mean(0).tolist() if len(actions) else [],
            "std": actions.std(0).tolist() if len(actions) else [],
            "min": actions.min(0).tolist() if len(actions) else [],
            "max": actions.max(0).tolist() if len(actions) else [],
        },
        "partial_episode": store.has_partial_episode,
        "instructions": sorted(set(store.instructions)),
    }


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2)
