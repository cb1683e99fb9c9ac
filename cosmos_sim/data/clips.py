"""Clip windows over episode stores: which (store, episode, start, camera) a sample is.

A *clip* is ``frames`` frames of one camera of one episode, taken every ``stride``-th
frame. Tokenizer clips have ``frames = 1 + 4k`` (the causal layout: the first frame on
its own, then groups of 4). Episodes are split into train / held-out *by episode*, with
a seeded hash, so the split of an episode never changes when episodes are added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError, StoreError


@dataclass(frozen=True)
class ClipSpec:
    """What one sample is: ``frames`` frames every ``stride``-th, of the chosen cameras."""

    frames: int = 9
    stride: int = 1
    cameras: tuple[str, ...] | None = None  # None = every camera of each store
    window_step: int = 1  # start positions are every window_step-th frame
    heldout_fraction: float = 0.1
    split_seed: int = 0
    heldout_every: int = 0  # > 0: hold out episodes e % k == k - 1 instead (the WM split)
    causal_layout: bool = True  # require frames == 1 + 4k

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ConfigError("must be ≥ 1", field="frames", found=self.frames)
        if self.causal_layout and (self.frames - 1) % 4:
            raise ConfigError(
                "clip length must be 1 + 4k frames for the causal tokenizer",
                field="frames",
                expected="1, 5, 9, 13, 17, ...",
                found=self.frames,
            )
        if self.stride < 1 or self.window_step < 1:
            raise ConfigError(
                "must be ≥ 1", field="stride/window_step", found=(self.stride, self.window_step)
            )
        if self.heldout_every < 0 or self.heldout_every == 1:
            raise ConfigError(
                "must be 0 (hash split) or ≥ 2", field="heldout_every", found=self.heldout_every
            )
        if not 0 <= self.heldout_fraction < 1:
            raise ConfigError(
                "must be in [0, 1)", field="heldout_fraction", found=self.heldout_fraction
            )

    @property
    def span(self) -> int:
        """Frames of the episode a clip covers."""
        return (self.frames - 1) * self.stride + 1


def is_heldout(episode: int, fraction: float, seed: int = 0) -> bool:
    """Seeded, stable per-episode split: hash(seed, episode) < fraction."""
    if fraction <= 0:
        return False
    h = hashlib.sha256(f"{seed}:{episode}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64 < fraction


def split_episodes(n: int, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, held-out) episode indices; at least one held out when fraction > 0 and n ≥ 2."""
    held = [e for e in range(n) if is_heldout(e, fraction, seed)]
    if fraction > 0 and not held and n >= 2:
        held = [n - 1]
    if len(held) == n and n:
        held = held[1:]
    train = [e for e in range(n) if e not in set(held)]
    return train, held


def store_cameras(store: EpisodeStore, spec: ClipSpec) -> list[str]:
    if spec.cameras is None:
        return store.cameras
    missing = [c for c in spec.cameras if c not in store.cameras]
    if missing:
        raise StoreError(
            "store has no such camera",
            path=store.path,
            field="camera",
            expected=store.cameras,
            found=missing[0],
        )
    return list(spec.cameras)


def clip_table(stores: Sequence[EpisodeStore], spec: ClipSpec, split: str = "train") -> np.ndarray:
    """Every clip of the split as rows (store, episode, start, camera index): (N, 4) int64."""
    if split not in ("train", "heldout", "all"):
        raise ConfigError(
            "unknown split", field="split", expected="train, heldout or all", found=split
        )
    rows = []
    for s, store in enumerate(stores):
        n_cams = len(store_cameras(store, spec))
        if spec.heldout_every:
            k = spec.heldout_every
            held = [e for e in range(len(store)) if e % k == k - 1]
            train = [e for e in range(len(store)) if e % k != k - 1]
        else:
            train, held = split_episodes(len(store), spec.heldout_fraction, spec.split_seed)
        episodes = {"train": train, "heldout": held, "all": sorted(train + held)}[split]
        for e in episodes:
            starts = np.arange(0, store.episode_length(e) - spec.span + 1, spec.window_step)
            for c in range(n_cams):
                rows.append(
                    np.stack(
                        [
                            np.full_like(starts, s),
                            np.full_like(starts, e),
                            starts,
                            np.full_like(starts, c),
                        ],
                        1,
                    )
                )
    table = np.concatenate(rows) if rows else np.zeros((0, 4), np.int64)
    if len(table) == 0:
        paths = ", ".join(str(Path(st.path)) for st in stores)
        raise StoreError(
            f"no {split} clips: every episode is shorter than a clip",
            path=paths,
            field="frames",
            expected=f"episodes of ≥ {spec.span} frames",
            found=[st.episode_length(e) for st in stores for e in range(len(st))][:8],
        )
    return table.astype(np.int64)


def read_clip(
    store: EpisodeStore, spec: ClipSpec, episode: int, start: int, camera: str
) -> np.ndarray:
    """One clip as (T, 3, H, W) uint8."""
    w = store.read_window(episode, int(start), spec.frames, cameras=[camera], stride=spec.stride)
    return np.ascontiguousarray(w["rgb"][camera].transpose(0, 3, 1, 2))
