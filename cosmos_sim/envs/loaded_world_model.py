"""A world-model directory loaded for inference, and what WorldModel-v0 can drive of it.

config.toml's top-level fields (``export_world_model``) say how to condition the model;
models exported before the variants have none and are action models::

    variant         action | camera | multiview | instruction     (default action)
    cameras         its cameras; a multi-view model's view order
    views           V, the views generated jointly each step     (default 1)
    rays            takes Plücker rays (camera control)           (default false)
    ray_reference   the rays' reference camera: "first-context-frame"
    instruction     reads the episode's instruction              (default false)
    action_names    the store's action names (camera ones first on cameranav)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_sim.bridge.camera_motion import CAMERA_ACTION_NAMES
from cosmos_sim.bridge.record import source_task
from cosmos_sim.bridge.tasks import find_task, known_tasks
from cosmos_sim.conditioning.actions import ActionStats
from cosmos_sim.errors import CameraError, ModelError
from cosmos_sim.models import zoo

DRIVABLE = ("action", "camera", "multiview", "instruction")  # the variants WorldModel-v0 drives
RAY_REFERENCE = "first-context-frame"  # the only reference the camera rollout builds


@dataclass
class LoadedWorldModel:
    """A world model, its tokenizer and the statistics it was trained with."""

    model: torch.nn.Module
    tokenizer: torch.nn.Module
    task: str
    cameras: list[str]
    action_stats: ActionStats
    state_mean: np.ndarray
    state_std: np.ndarray
    name: str
    context_frames: int
    image_size: tuple[int, int]
    path: Path | None = None
    variant: str = "action"
    views: int = 1
    rays: bool = False
    ray_reference: str | None = None
    instruction: bool = False
    action_names: list[str] | None = None

    @classmethod
    def load(cls, model: str, device: str = "cpu", decoder: str | None = None) -> LoadedWorldModel:
        """``decoder``: decode with this tokenizer instead of the model's own (same latents;
        e.g. ``tokenizer-cv-4x8x8-pca-fast``, ~6× cheaper to decode, see its card)."""
        loaded = zoo.load_model(model, device)
        if loaded.kind != "world-model-diffusion":
            raise ModelError(
                "not a diffusion world model", path=loaded.path, field="kind", found=loaded.kind
            )
        meta = loaded.config
        tok = zoo.load_tokenizer_of(loaded, device, decoder)
        stats = loaded.stats or {}
        if "action_mean" not in stats or "state_mean" not in stats:
            raise ModelError("missing normalisation statistics", path=loaded.path / "stats.json")
        recipe_frames = int(meta.get("context_frames", 3))  # latent frames of context in training
        cameras = list(meta["cameras"])
        variant = str(meta.get("variant", "action"))
        views = meta.get("views", 1)
        if views != (len(cameras) if variant == "multiview" else 1):
            raise ModelError(
                "views does not match the cameras",
                path=loaded.path / "config.toml",
                field="views",
                expected=len(cameras) if variant == "multiview" else 1,
                found=views,
            )
        return cls(
            model=loaded.module,
            tokenizer=tok.module,
            task=source_task(meta["task"]),
            cameras=cameras,
            action_stats=ActionStats(
                np.asarray(stats["action_mean"], np.float32),
                np.asarray(stats["action_std"], np.float32),
            ),
            state_mean=np.asarray(stats["state_mean"], np.float32),
            state_std=np.asarray(stats["state_std"], np.float32),
            name=loaded.path.name,
            context_frames=recipe_frames,
            image_size=tuple(meta["image_size"]),
            path=loaded.path,
            variant=variant,
            views=int(views),
            rays=bool(meta.get("rays", False)),
            ray_reference=meta.get("ray_reference"),
            instruction=bool(meta.get("instruction", False)),
            action_names=meta.get("action_names"),
        )


def check_drivable(wm: LoadedWorldModel) -> None:
    """A clear error for a model WorldModel-v0 cannot drive (as what it was trained for)."""
    config = None if wm.path is None else wm.path / "config.toml"
    if wm.variant == "instruction" or wm.instruction:
        check_instruction_model(wm, config)
    if wm.variant not in DRIVABLE:
        raise ModelError(
            "WorldModel-v0 cannot drive this world-model variant",
            path=config,
            field="variant",
            expected=list(DRIVABLE),
            found=wm.variant,
        )
    if wm.variant != "camera" and wm.rays:
        raise ModelError(
            "the model takes camera rays but is not a camera-control model",
            path=config,
            field="rays",
            expected=False,
            found=True,
        )
    if wm.variant == "camera":
        if not wm.rays or wm.ray_reference != RAY_REFERENCE:
            raise ModelError(
                "a camera-control model takes rays relative to its first context frame",
                path=config,
                field="ray_reference",
                expected=RAY_REFERENCE,
                found=wm.ray_reference,
            )
        names = list(wm.action_names or [])
        if names[: len(CAMERA_ACTION_NAMES)] != list(CAMERA_ACTION_NAMES):
            raise ModelError(
                "a camera-control model is driven as CameraNav-v0: its actions start with the "
                "camera's",
                path=config,
                field="action_names",
                expected=f"{list(CAMERA_ACTION_NAMES)} + the arm's",
                found=names,
            )


def instruction_tasks() -> list[str]:
    """The known tasks with several instructions (task.toml ``[[instructions]]``)."""
    return [name for name in known_tasks() if len(find_task(name).instructions) > 1]


def check_instruction_model(wm: LoadedWorldModel, config: Path | None) -> None:
    """An instruction model reads the episode's instruction (its DiT has a text vocabulary)
    and is driven on a task whose episodes each draw one of several instructions."""
    vocab = int(getattr(wm.model, "text_vocab", 0))
    if wm.variant != "instruction" or not wm.instruction or not vocab:
        raise ModelError(
            "an instruction model is the instruction variant and reads an instruction "
            "(a DiT with text_vocab > 0)",
            path=config,
            field="instruction" if wm.variant == "instruction" else "variant",
            expected='variant = "instruction", instruction = true, text_vocab > 0',
            found=f"variant = {wm.variant!r}, instruction = {wm.instruction}, text_vocab = {vocab}",
        )
    if len(find_task(wm.task).instructions) < 2:
        raise ModelError(
            "an instruction world model is driven on a task with several instructions "
            "(task.toml [[instructions]], one drawn per episode), not the one it was trained on",
            path=config,
            field="task",
            expected=f"one of {instruction_tasks()}",
            found=wm.task,
        )


def observed_cameras(wm: LoadedWorldModel, cameras: str | list[str] | None) -> list[str]:
    """The cameras the env observes: one of the model's, or (multiview) a subset of its views."""
    cams = [c.strip() for c in cameras.split(",")] if isinstance(cameras, str) else cameras
    if wm.variant == "multiview":
        cams = list(cams or wm.cameras)
        unknown = [c for c in cams if c not in wm.cameras]
        if unknown or not cams or len(set(cams)) != len(cams):
            raise CameraError(
                "the model does not generate these cameras",
                field="cameras",
                expected=f"distinct views of {wm.cameras}",
                found=cams,
            )
        return cams
    cams = list(cams or wm.cameras[:1])
    if len(cams) != 1 or cams[0] not in wm.cameras:
        raise CameraError(
            "this world model generates one camera at a time",
            field="cameras",
            expected=f"one of {wm.cameras}",
            found=cams,
        )
    return cams
