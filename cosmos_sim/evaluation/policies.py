"""Policies for evaluation runs. One protocol: ``policy(obs) -> action chunk``.

``obs`` is the env observation (a dict with one image per camera and ``state``); the
result has the env's action shape ``(chunk, A)``. A policy may have ``reset(seed)``,
called at the start of every episode with the episode's seed.

Policy specs (``cosmos-sim evaluate --policies``):

===================  ==================================================================
``expert@0.7``        the task's scripted expert at skill 0.7 (1 = expert, 0 = random)
``random``            uniform random actions
``pkg.mod:make``      a user callable (or a factory taking ``(action_space)``)
``policy.zip``        a stable-baselines3 model (``rl`` extra)
``policy.pt``         a TorchScript module → action chunk ``(chunk, A)`` (see below)
===================  ==================================================================

A TorchScript policy reads the state, or a camera image when the module has a ``camera``
attribute (a ``str``, kept by ``torch.jit.script``); the number of ``forward`` arguments
says whether it reads the state too:

=========================  ==============================================================
module                     ``forward`` arguments (one observation, no batch axis)
=========================  ==============================================================
no ``camera`` attribute    ``state`` (S,) float32
``camera = "front"``       ``image`` (3, H, W) float32 in [0, 1]: the observation's uint8
                           (H, W, 3) image of that camera, channels first, divided by 255
``camera`` + 2 arguments   ``image`` as above, then ``state`` (S,) float32
=========================  ==============================================================

A camera missing from the observation, a failing ``forward``, an output of the wrong
size or a non-finite output is a one-line error naming the policy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np

from cosmos_sim.bridge.experts import KINDS, ScriptedPolicy
from cosmos_sim.bridge.tasks import Task
from cosmos_sim.errors import CameraError, ConfigError, MissingExtraError


class Policy(Protocol):
    name: str

    def __call__(self, obs: dict) -> np.ndarray: ...


def privileged_from_state(state: np.ndarray, state_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Rebuild the expert's named points (``ee``, ``target``, ``block`` …) from the state vector."""
    points: dict[str, list[float]] = {}
    for value, name in zip(state, state_names, strict=True):
        body, _, axis = name.partition(".")
        if axis in ("x", "y"):
            points.setdefault(body, [0.0, 0.0])["xy".index(axis)] = float(value)
    return {k: np.array(v, np.float32) for k, v in points.items()}


class ExpertPolicy:
    """The scripted expert, planning a whole chunk from the state at its start.

    Within a chunk the expert cannot see new observations, so it imagines its own
    end effector moving by each commanded velocity (``ee += a · max_speed / fps``) and
    plans the next action from there: open-loop for one chunk, closed-loop across chunks.
    """

    def __init__(self, task: Task, state_names: tuple[str, ...], skill: float, chunk: int) -> None:
        self.name = f"expert@{skill:g}"
        self.task, self.state_names, self.chunk = task, state_names, chunk
        self.expert = ScriptedPolicy(KINDS[task.kind](task), task.action, skill=skill)
        self.step_length = task.max_speed / task.fps
        self.region: str | None = None  # the instructed target / goal (several-instruction tasks)

    def set_instruction(self, text: str) -> None:
        """Follow ``text``: its rule's region becomes the expert's target (or goal)."""
        rules = {i.text: i.success.region for i in self.task.instructions}
        if text not in rules:
            raise ConfigError(
                "instruction not in the task", field="instruction", expected=list(rules), found=text
            )
        self.region = rules[text]

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset(seed)

    def __call__(self, obs: dict) -> np.ndarray:
        points = privileged_from_state(np.asarray(obs["state"]), self.state_names)
        if self.region in points:  # the instructed one, under the name the expert reads
            points["goal" if self.task.kind == "push" else "target"] = points[self.region]
        actions = []
        for _ in range(self.chunk):
            a = self.expert(points)
            actions.append(a)
            points["ee"] = points["ee"] + a * self.step_length
        return np.stack(actions).astype(np.float32)


class RandomPolicy:
    def __init__(self, action_space: gym.spaces.Box) -> None:
        self.name = "random"
        self.space = action_space

    def reset(self, seed: int | None = None) -> None:
        self.space.seed(seed)

    def __call__(self, obs: dict) -> np.ndarray:
        return self.space.sample()


class CallablePolicy:
    """Wraps a user callable; checks every action it returns."""

    def __init__(
        self, name: str, fn: Callable[[dict], np.ndarray], action_space: gym.spaces.Box
    ) -> None:
        self.name, self.fn, self.space = name, fn, action_space

    def reset(self, seed: int | None = None) -> None:
        if hasattr(self.fn, "reset"):
            self.fn.reset(seed)

    def __call__(self, obs: dict) -> np.ndarray:
        action = np.asarray(self.fn(obs), dtype=np.float32)
        if action.shape != self.space.shape:
            action = action.reshape(-1)
            if action.size != int(np.prod(self.space.shape)):
                raise ConfigError(
                    "policy returned an action of the wrong shape",
                    field=f"policy {self.name}",
                    expected=self.space.shape,
                    found=action.shape,
                )
            action = action.reshape(self.space.shape)
        if not np.isfinite(action).all():
            raise ConfigError(
                "policy returned a non-finite action",
                field=f"policy {self.name}",
                found=action.tolist(),
            )
        return action


def _load_sb3(path: Path, action_space: gym.spaces.Box) -> Callable:
    try:
        import stable_baselines3 as sb3
    except ImportError as e:
        raise MissingExtraError("stable-baselines3", "rl", "a stable-baselines3 policy") from e
    for algo in ("PPO", "SAC", "TD3", "A2C", "DDPG"):
        try:
            model = getattr(sb3, algo).load(str(path), device="cpu")
            break
        except (ValueError, KeyError, RuntimeError):
            continue
    else:
        raise ConfigError("not a stable-baselines3 model zip", field="policy", found=str(path))
    return lambda obs: model.predict(obs, deterministic=True)[0]


def _load_torchscript(path: Path) -> Callable:
    """The module as ``obs -> action chunk``; reads the image of its ``camera`` if it has one."""
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        raise ConfigError(f"not a TorchScript file ({e})", field="policy", found=str(path)) from e
    module.eval()
    camera = getattr(module, "camera", None)
    if camera is not None and not isinstance(camera, str):
        raise ConfigError(
            "a TorchScript policy's camera attribute must be a camera name",
            path=path,
            field="camera",
            expected="str",
            found=type(camera).__name__,
        )
    n_args = len(module.forward.schema.arguments) - 1  # without self
    if n_args not in ((1,) if camera is None else (1, 2)):
        raise ConfigError(
            "a TorchScript policy's forward takes the wrong number of arguments",
            path=path,
            field="forward",
            expected="(state)" if camera is None else "(image) or (image, state)",
            found=f"{n_args} arguments",
        )

    def inputs(obs: dict) -> list:
        state = (
            torch.as_tensor(np.asarray(obs["state"]), dtype=torch.float32)
            if "state" in obs
            else None
        )
        if camera is None:
            return [state]
        if camera not in obs:
            raise CameraError(
                "the policy reads a camera the observation lacks",
                path=path,
                field="camera",
                expected=camera,
                found=sorted(k for k in obs if k != "state"),
            )
        image = torch.from_numpy(np.ascontiguousarray(obs[camera]))  # (H, W, 3) uint8
        image = image.permute(2, 0, 1).float() / 255.0  # (3, H, W) in [0, 1]
        return [image] if n_args == 1 else [image, state]

    def act(obs: dict) -> np.ndarray:
        args = inputs(obs)
        if any(a is None for a in args):
            raise ConfigError(
                "the policy reads the state, the observation has none",
                path=path,
                field="state",
                found=sorted(obs),
            )
        try:
            with torch.no_grad():
                out = module(*args)
        except RuntimeError as e:  # TorchScript's message is a multi-line traceback
            last = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
            shapes = [tuple(a.shape) for a in args]
            raise ConfigError(
                f"the policy's forward failed on inputs of shape {shapes} ({last})",
                path=path,
                field="forward",
            ) from e
        if not isinstance(out, torch.Tensor):
            raise ConfigError(
                "the policy's forward must return one tensor",
                path=path,
                field="forward",
                expected="Tensor (chunk, A)",
                found=type(out).__name__,
            )
        return out.numpy()

    return act


def load_policy(
    spec: str, *, task: Task, state_names: tuple[str, ...], action_space: gym.spaces.Box
) -> Policy:
    """Build a policy from its spec (see the module docstring)."""
    chunk = action_space.shape[0]
    if spec == "random":
        return RandomPolicy(action_space)
    if spec.startswith("expert"):
        _, _, level = spec.partition("@")
        try:
            skill = float(level) if level else 1.0
        except ValueError as e:
            raise ConfigError(
                "bad expert skill", field="policy", expected="expert@<0..1>", found=spec
            ) from e
        if task.kind == "cameranav":
            from cosmos_sim.envs.camera_nav_env import CameraNavExpert

            expert = CameraNavExpert(task, state_names, skill, chunk)
            expert.name = f"expert@{skill:g}"
            return expert
        return ExpertPolicy(task, state_names, skill, chunk)
    path = Path(spec)
    if path.suffix == ".zip":
        if not path.is_file():
            raise ConfigError("no such policy file", field="policy", found=spec)
        return CallablePolicy(path.stem, _load_sb3(path, action_space), action_space)
    if path.suffix in (".pt", ".ts", ".torchscript"):
        if not path.is_file():
            raise ConfigError("no such policy file", field="policy", found=spec)
        return CallablePolicy(path.stem, _load_torchscript(path), action_space)
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ConfigError(
            "unknown policy",
            field="policy",
            expected="expert@<skill>, random, module:callable, *.zip or *.pt",
            found=spec,
        )
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import the policy ({e})", field="policy", found=spec) from e
    if (
        isinstance(obj, type)
        or getattr(obj, "__code__", None)
        and obj.__code__.co_varnames[:1] == ("action_space",)
    ):
        obj = obj(action_space)  # a factory
    return CallablePolicy(spec, obj, action_space)


def parse_policies(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]
