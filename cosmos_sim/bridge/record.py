"""Recording: any bridge that yields Frames, streamed into an episode store.

A bridge is an :class:`EpisodeSource`: it says what it records (`store_spec`) and
plays one episode per seed as a generator of Frames whose return value is the
:class:`Outcome`. The recorder owns the store; bridges never touch it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cosmos_sim.data.episode import Frame
from cosmos_sim.data.store import EpisodeStore, StoreSpec


@dataclass
class Outcome:
    success: bool
    instruction: str = ""


class EpisodeSource(Protocol):
    def store_spec(self) -> StoreSpec: ...

    def episode(self, seed: int) -> Generator[Frame, None, Outcome]: ...


@dataclass
class RecordStats:
    episodes: int = 0
    frames: int = 0
    successes: int = 0
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def record(
    source: EpisodeSource,
    out: str | Path,
    *,
    episodes: int,
    seed: int = 0,
    on_episode: Callable[[RecordStats], None] | None = None,
    on_frame: Callable[[RecordStats], None] | None = None,
) -> RecordStats:
    """Record `episodes` episodes (seeds seed, seed+1, …) and append them to `out`.

    Each episode becomes visible only when complete; an interruption loses at most
    the episode in progress.
    """
    store = EpisodeStore.open_or_create(out, source.store_spec())
    stats = RecordStats()
    start = time.perf_counter()
    for i in range(episodes):
        with store.writer() as writer:
            play = source.episode(seed + i)
            while True:
                try:
                    frame = next(play)
                except StopIteration as stop:
                    outcome: Outcome = stop.value
                    break
                writer.add(frame)
                stats.frames += 1
                if on_frame is not None:
                    stats.seconds = time.perf_counter() - start
                    on_frame(stats)
            writer.commit(success=outcome.success, instruction=outcome.instruction)
        stats.episodes += 1
        stats.successes += int(outcome.success)
        stats.seconds = time.perf_counter() - start
        if on_episode is not None:
            on_episode(stats)
    return stats


MUJOCO_SOURCE = "mujoco:"  # a store's ``source`` for an embedded-simulator task: + its name


def source_task(source: str) -> str:
    """The task name in a store's (or a model's) ``source``, e.g. "mujoco:push" → "push"."""
    return str(source).removeprefix(MUJOCO_SOURCE)


class MujocoSource:
    """The embedded simulator as an EpisodeSource: one task, one scripted policy family.

    The policy for each episode is the task's scripted expert at ``skill``, seeded with
    the episode seed, so a (task, skill, seed) triple fixes the episode exactly. The
    episode's instruction is drawn from its seed too, unless ``instruction`` forces one
    (one of the task's ``[[instructions]]``); the store keeps it per episode.
    """

    def __init__(
        self,
        task: str | Path,
        *,
        skill: float = 1.0,
        cameras: list[str] | None = None,
        size: int | None = None,
        depth: bool = True,
        segmentation: bool = True,
        shadow_size: int | None = None,
        instruction: str | None = None,
    ) -> None:
        from cosmos_sim.bridge.mujoco_sim import MujocoSim, make_expert

        self.sim = MujocoSim(
            task,
            cameras=cameras,
            height=size,
            width=size,
            depth=depth,
            segmentation=segmentation,
            shadow_size=shadow_size,
        )
        self.skill = skill
        if instruction is not None:  # a ConfigError now, before the store is created
            self.sim.task.find_instruction(instruction)
        self.instruction = instruction
        self._make_expert = make_expert

    def store_spec(self) -> StoreSpec:
        from cosmos_sim.data.store import CameraSpec

        sim, cfg = self.sim, self.sim.config
        return StoreSpec(
            fps=float(sim.fps),
            action_low=sim.action_space.low.tolist(),
            action_high=sim.action_space.high.tolist(),
            action_names=list(sim.action_space.names),
            cameras={
                c: CameraSpec(sim.height, sim.width, cfg.depth, cfg.segmentation)
                for c in sim.cameras
            },
            state_dim=len(sim.state_names),
            state_names=list(sim.state_names),
            source=f"{MUJOCO_SOURCE}{sim.task.name}",
            segmentation_labels=dict(sim.label_map),
        )

    def episode(self, seed: int) -> Generator[Frame, None, Outcome]:
        from cosmos_sim.bridge.mujoco_sim import rollout

        policy = self._make_expert(self.sim.task, skill=self.skill, seed=seed)
        yield from rollout(self.sim, policy, seed, self.instruction)
        return Outcome(success=self.sim.success, instruction=self.sim.instruction)

    def close(self) -> None:
        self.sim.close()
