"""Tasks as data: ``envs/<name>/task.toml`` + ``scene.xml``, loaded and validated.

Layout of a task folder (the repo's top-level ``envs/``; ``cosmos_sim/_tasks/`` in a wheel)::

    envs/
      common/settings.xml   shared physics / rendering / actuator settings (MJCF include)
      common/arm.xml        floor, table, cameras and the 2-DoF arm (MJCF include)
      reach/scene.xml       the MJCF scene
      reach/task.toml       everything else about the task (documented in that file)

Every problem in a task.toml raises :class:`~cosmos_sim.errors.TaskError` naming the
file, the field, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cosmos_sim
from cosmos_sim.errors import TaskError

TASK_FILE = "task.toml"
TASK_KINDS = ("reach", "push", "cameranav")  # each kind has a reset sampler and a scripted expert


@dataclass(frozen=True)
class ActionSpec:
    """A Box action space: one name, low and high per dimension."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    @property
    def dim(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class SuccessRule:
    """Success when site ``point`` is within ``radius`` metres of site ``region``.

    ``axes`` picks the compared coordinates ("xy" = on the table plane, "xyz" = in 3-D);
    ``when`` = "end" judges the last step of the episode, "any" any step.
    """

    point: str
    region: str
    radius: float
    axes: str = "xy"
    when: str = "end"


@dataclass(frozen=True)
class Task:
    """One task folder, validated. See ``envs/reach/task.toml`` for every field's meaning."""

    name: str
    folder: Path
    kind: str
    instruction: str
    episode_length: int
    fps: float
    max_speed: float
    action: ActionSpec
    cameras: tuple[str, ...]
    size: int
    shadow_size: int
    success: SuccessRule
    objects: dict[str, int]
    reset: dict[str, Any] = field(default_factory=dict)
    expert: dict[str, Any] = field(default_factory=dict)
    camera: dict[str, Any] = field(default_factory=dict)  # [camera]: camera actions (cameranav)

    @property
    def scene_path(self) -> Path:
        return self.folder / "scene.xml"

    @property
    def toml_path(self) -> Path:
        return self.folder / TASK_FILE

    def __post_init__(self) -> None:
        path = self.toml_path
        if self.kind not in TASK_KINDS:
            raise TaskError(
                "unknown task kind",
                path=path,
                field="kind",
                expected=" or ".join(TASK_KINDS),
                found=self.kind,
            )
        for name, value in (("episode_length", self.episode_length), ("render.size", self.size)):
            if value < 1:
                raise TaskError(
                    "must be a positive integer",
                    path=path,
                    field=name,
                    expected=">= 1",
                    found=value,
                )
        if not self.fps > 0:
            raise TaskError(
                "control rate must be positive",
                path=path,
                field="control.fps",
                expected="> 0",
                found=self.fps,
            )
        if not self.max_speed > 0:
            raise TaskError(
                "must be positive",
                path=path,
                field="control.max_speed",
                expected="> 0 m/s",
                found=self.max_speed,
            )
        if self.shadow_size < 0:
            raise TaskError(
                "must be >= 0 (0 = no shadows)",
                path=path,
                field="render.shadow_size",
                found=self.shadow_size,
            )
        a = self.action
        if not (len(a.names) == len(a.low) == len(a.high)) or not a.names:
            raise TaskError(
                "names, low and high must have the same non-zero length",
                path=path,
                field="action",
                expected="equal lengths",
                found=(len(a.names), len(a.low), len(a.high)),
            )
        if any(lo >= hi for lo, hi in zip(a.low, a.high, strict=True)):
            raise TaskError(
                "every low must be below its high", path=path, field="action.low", found=list(a.low)
            )
        if not self.cameras:
            raise TaskError(
                "at least one camera is needed", path=path, field="render.cameras", found=[]
            )
        s = self.success
        if s.axes not in ("xy", "xyz"):
            raise TaskError(
                "unknown axes",
                path=path,
                field="success.axes",
                expected="'xy' or 'xyz'",
                found=s.axes,
            )
        if s.when not in ("end", "any"):
            raise TaskError(
                "unknown rule",
                path=path,
                field="success.when",
                expected="'end' or 'any'",
                found=s.when,
            )
        if not s.radius > 0:
            raise TaskError(
                "must be positive",
                path=path,
                field="success.radius",
                expected="> 0 m",
                found=s.radius,
            )
        ids = list(self.objects.values())
        if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
            raise TaskError(
                "object ids must be distinct and >= 0",
                path=path,
                field="objects",
                found=self.objects,
            )
        if not self.scene_path.is_file():
            raise TaskError("scene file not found", path=self.scene_path, field="scene.xml")


# ------------------------------------------------------------------------ loading


class _Table:
    """Typed access to a TOML table, raising TaskError with the dotted field name."""

    def __init__(self, data: dict, path: Path, prefix: str = "") -> None:
        self.data, self.path, self.prefix = data, path, prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise TaskError(
                    "missing field",
                    path=self.path,
                    field=self._name(key),
                    expected=_type_name(kind),
                    found="nothing",
                )
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            ok = False
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise TaskError(
                "wrong type",
                path=self.path,
                field=self._name(key),
                expected=_type_name(kind),
                found=f"{type(value).__name__} {value!r}",
            )
        return value

    def number(self, key: str, default: Any = ...) -> float:
        return float(self.get(key, (int, float), default))

    def numbers(self, key: str, default: Any = ...) -> tuple[float, ...]:
        values = self.get(key, list, default)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise TaskError(
                "wrong type",
                path=self.path,
                field=self._name(key),
                expected="a list of numbers",
                found=values,
            )
        return tuple(float(v) for v in values)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(key, list, default)
        if not all(isinstance(v, str) for v in values):
            raise TaskError(
                "wrong type",
                path=self.path,
                field=self._name(key),
                expected="a list of strings",
                found=values,
            )
        return tuple(values)

    def table(self, key: str, default: Any = ...) -> _Table:
        return _Table(self.get(key, dict, default), self.path, f"{self._name(key)}.")


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "table",
        bool: "boolean",
    }
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def load_task(folder: str | Path) -> Task:
    """Load and validate ``folder/task.toml`` (the scene is checked when a simulator opens it)."""
    folder = Path(folder)
    path = folder / TASK_FILE
    if not path.is_file():
        raise TaskError("task.toml not found", path=path, field=TASK_FILE)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"not valid TOML: {e}", path=path, field=TASK_FILE) from e
    top = _Table(data, path)
    control, action, render = top.table("control"), top.table("action"), top.table("render")
    success, objects = top.table("success"), top.table("objects")
    object_ids = {name: int(objects.get(name, int)) for name in objects.data}
    return Task(
        name=top.get("name", str, folder.name),
        folder=folder,
        kind=top.get("kind", str),
        instruction=top.get("instruction", str),
        episode_length=top.get("episode_length", int),
        fps=control.number("fps"),
        max_speed=control.number("max_speed"),
        action=ActionSpec(action.strings("names"), action.numbers("low"), action.numbers("high")),
        cameras=render.strings("cameras"),
        size=render.get("size", int),
        shadow_size=render.get("shadow_size", int, 0),
        success=SuccessRule(
            point=success.get("point", str),
            region=success.get("region", str),
            radius=success.number("radius"),
            axes=success.get("axes", str, "xy"),
            when=success.get("when", str, "end"),
        ),
        objects=object_ids,
        reset=top.get("reset", dict, {}),
        expert=top.get("expert", dict, {}),
        camera=top.get("camera", dict, {}),
    )


def tasks_root() -> Path:
    """The folder holding the task folders: the wheel's ``cosmos_sim/_tasks`` or the repo's ``envs/``."""
    package = Path(cosmos_sim.__file__).parent
    for root in (package / "_tasks", package.parent / "envs"):
        if root.is_dir() and any(root.glob(f"*/{TASK_FILE}")):
            return root
    raise TaskError(
        "no task folders found (neither cosmos_sim/_tasks nor envs/ beside the package)",
        path=package,
    )


def known_tasks() -> list[str]:
    """Names of the task folders that hold a task.toml."""
    try:
        root = tasks_root()
    except TaskError:
        return []
    return sorted(p.name for p in root.iterdir() if (p / TASK_FILE).is_file())


def find_task(name_or_path: str | Path) -> Task:
    """A task by name (``"reach"``) or by folder path (``"envs/reach"``, ``"my/task"``)."""
    candidate = Path(name_or_path)
    if candidate.is_dir() and (candidate / TASK_FILE).is_file():
        return load_task(candidate)
    name = str(name_or_path)
    known = known_tasks()
    if name in known:
        return load_task(tasks_root() / name)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise TaskError(
        f"unknown task '{name}'{hint}",
        field="task",
        expected="one of " + ", ".join(known) + " or a folder with task.toml",
        found=name,
    )
