"""Tasks as data: ``envs/<name>/task.toml`` + ``scene.xml``, loaded and validated.

Layout of a task folder (the repo's top-level ``envs/``; ``cosmos_sim/_tasks/`` in a wheel)::

    envs/
      common/settings.xml   shared physics / rendering / actuator settings (MJCF include)
      common/arm.xml        floor, table, cameras and the 2-DoF arm (MJCF include)
      reach/scene.xml       the MJCF scene
      reach/task.toml       everything else about the task (documented in that file)

A task has one ``instruction`` and one ``[success]`` rule, or several instructions, each
implying its own rule (``envs/reach-color/task.toml``)::

    [success]                       # shared by every instruction: radius, axes, when
    point = "ee"                    # default point (and region) of the entries below
    radius = 0.04

    [[instructions]]
    text = "reach the red target"
    region = "target_red"           # this instruction succeeds when ee reaches target_red

    [[instructions]]
    text = "reach the blue target"
    region = "target_blue"

Each episode draws its instruction from its seed (or is given one: ``MujocoSim.reset``,
``cosmos-sim record --instruction``) and is judged by that instruction's rule.

Every problem in a task.toml raises :class:`~cosmos_sim.errors.TaskError` naming the
file, the field, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cosmos_sim
from cosmos_sim.errors import ConfigError, TaskError

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


INSTRUCTION_FIELDS = ("text", "point", "region")  # the keys of an [[instructions]] entry


@dataclass(frozen=True)
class Instruction:
    """One instruction and the success rule it implies.

    ``fields`` names where the rule's point and region were set in task.toml (e.g.
    ``instructions[1].region`` or ``success.point``), for error messages.
    """

    text: str
    success: SuccessRule
    fields: tuple[str, str] = ("success.point", "success.region")


@dataclass(frozen=True)
class Task:
    """One task folder, validated. See ``envs/reach/task.toml`` for every field's meaning.

    ``instructions`` holds every instruction with its rule; ``instruction`` and ``success``
    are the first one's (the only one's, for a task with a single instruction).
    """

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
    instructions: tuple[Instruction, ...] = ()  # () = the single (instruction, success)

    @property
    def scene_path(self) -> Path:
        return self.folder / "scene.xml"

    @property
    def toml_path(self) -> Path:
        return self.folder / TASK_FILE

    @property
    def instruction_texts(self) -> tuple[str, ...]:
        return tuple(i.text for i in self.instructions)

    def find_instruction(self, text: str) -> Instruction:
        """The instruction with this exact text, or a ConfigError listing the task's ones."""
        for instruction in self.instructions:
            if instruction.text == text:
                return instruction
        close = difflib.get_close_matches(text, self.instruction_texts, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"task '{self.name}' has no instruction '{text}'{hint}",
            field="instruction",
            expected=" or ".join(repr(t) for t in self.instruction_texts),
            found=repr(text),
        )

    def check_sites(self, sites: Collection[str], roles: tuple[str, ...]) -> None:
        """Every rule's ``roles`` ("point", "region") must name one of the scene's ``sites``."""
        for instruction in self.instructions:
            for role in roles:
                name = getattr(instruction.success, role)
                if name in sites:
                    continue
                close = difflib.get_close_matches(name, list(sites), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise TaskError(
                    f"scene has no site named '{name}' (task.toml names it){hint}",
                    path=self.scene_path,
                    field=instruction.fields[("point", "region").index(role)],
                    expected="one of " + ", ".join(sorted(sites)),
                    found=name,
                )

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
        _check_rule(self.success, path)
        if not self.instructions:  # a single-instruction task: the top-level pair
            object.__setattr__(self, "instructions", (Instruction(self.instruction, self.success),))
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


def _check_rule(rule: SuccessRule, path: Path) -> None:
    """The [success] fields every instruction shares."""
    if rule.axes not in ("xy", "xyz"):
        raise TaskError(
            "unknown axes",
            path=path,
            field="success.axes",
            expected="'xy' or 'xyz'",
            found=rule.axes,
        )
    if rule.when not in ("end", "any"):
        raise TaskError(
            "unknown rule",
            path=path,
            field="success.when",
            expected="'end' or 'any'",
            found=rule.when,
        )
    if not rule.radius > 0:
        raise TaskError(
            "must be positive",
            path=path,
            field="success.radius",
            expected="> 0 m",
            found=rule.radius,
        )


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
    objects = top.table("objects")
    object_ids = {name: int(objects.get(name, int)) for name in objects.data}
    instructions = _instructions(top)
    return Task(
        name=top.get("name", str, folder.name),
        folder=folder,
        kind=top.get("kind", str),
        instruction=instructions[0].text,
        episode_length=top.get("episode_length", int),
        fps=control.number("fps"),
        max_speed=control.number("max_speed"),
        action=ActionSpec(action.strings("names"), action.numbers("low"), action.numbers("high")),
        cameras=render.strings("cameras"),
        size=render.get("size", int),
        shadow_size=render.get("shadow_size", int, 0),
        success=instructions[0].success,
        objects=object_ids,
        reset=top.get("reset", dict, {}),
        expert=top.get("expert", dict, {}),
        camera=top.get("camera", dict, {}),
        instructions=instructions,
    )


def _instructions(top: _Table) -> tuple[Instruction, ...]:
    """``instruction`` + ``[success]``, or ``[[instructions]]`` entries over ``[success]`` defaults."""
    success, path = top.table("success"), top.path
    shared = dict(
        radius=success.number("radius"),
        axes=success.get("axes", str, "xy"),
        when=success.get("when", str, "end"),
    )
    if "instructions" not in top.data:
        rule = SuccessRule(success.get("point", str), success.get("region", str), **shared)
        return (Instruction(top.get("instruction", str), rule),)
    if "instruction" in top.data:
        raise TaskError(
            "give either one `instruction` or [[instructions]] entries, not both",
            path=path,
            field="instruction",
            expected="no top-level instruction beside [[instructions]]",
            found=top.data["instruction"],
        )
    entries = top.get("instructions", list)
    if not entries:
        raise TaskError(
            "at least one instruction is needed",
            path=path,
            field="instructions",
            expected="[[instructions]] tables with text (+ point, region)",
            found="an empty list",
        )
    defaults = {key: success.get(key, str, None) for key in ("point", "region")}
    seen: dict[str, int] = {}
    out = []
    for i, entry in enumerate(entries):
        name = f"instructions[{i}]"
        if not isinstance(entry, dict):
            raise TaskError(
                "wrong type", path=path, field=name, expected="a table", found=repr(entry)
            )
        for key in entry:
            if key not in INSTRUCTION_FIELDS:
                close = difflib.get_close_matches(key, INSTRUCTION_FIELDS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise TaskError(
                    f"unknown field{hint}",
                    path=path,
                    field=f"{name}.{key}",
                    expected=" or ".join(INSTRUCTION_FIELDS),
                    found=key,
                )
        table = _Table(entry, path, f"{name}.")
        text = table.get("text", str)
        if not text.strip():
            raise TaskError("must not be empty", path=path, field=f"{name}.text", found=repr(text))
        if text in seen:
            raise TaskError(
                "duplicate instruction",
                path=path,
                field=f"{name}.text",
                expected="distinct texts",
                found=f"{text!r}, as instructions[{seen[text]}]",
            )
        seen[text] = i
        sites, fields = {}, []
        for key in ("point", "region"):
            if key in entry:
                sites[key] = table.get(key, str)
                fields.append(f"{name}.{key}")
            elif defaults[key] is not None:
                sites[key] = defaults[key]
                fields.append(f"success.{key}")
            else:
                raise TaskError(
                    "missing field",
                    path=path,
                    field=f"{name}.{key}",
                    expected=f"a site name (here or as the default [success] {key})",
                    found="nothing",
                )
        out.append(Instruction(text, SuccessRule(**sites, **shared), (fields[0], fields[1])))
    return tuple(out)


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
