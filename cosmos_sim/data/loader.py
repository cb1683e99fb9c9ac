"""Deterministic, resumable clip loader over one or more episode stores.

Batch ``k`` of the run is a pure function of (seed, rank, world_size, k): epoch
``e = k // batches_per_epoch`` shuffles the clip table with ``default_rng([seed, e])``,
each rank takes every ``world_size``-th clip, and batch ``k`` is the next ``batch_size``
of them. So the loader's whole position is the number of batches consumed —
``state_dict()`` returns it and ``load_state_dict()`` restores it exactly, however many
batches worker processes had prefetched.

A batch is ``{"video": (B, T, 3, H, W) uint8, "clip": (B, 4) int64}`` with the clip
rows (store, episode, start, camera index); cameras are separate batch items.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cosmos_sim.data.clips import ClipSpec, clip_table, read_clip, store_cameras
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError, StoreError


class _Batches(Dataset):
    """Map-style dataset: item k is the k-th batch of the (infinite) schedule."""

    def __init__(self, paths, spec, table, batch_size, seed, rank, world_size, shuffle) -> None:
        self.paths, self.spec, self.table = list(paths), spec, table
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.per_rank = len(table) // world_size
        self.batches_per_epoch = max(1, self.per_rank // batch_size)
        self._stores: list[EpisodeStore] | None = None
        self._order: tuple[int, np.ndarray] | None = None

    def stores(self) -> list[EpisodeStore]:
        if self._stores is None:  # opened lazily: once per worker process
            self._stores = [EpisodeStore.open(p) for p in self.paths]
        return self._stores

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            n = len(self.table)
            perm = (
                np.random.default_rng([self.seed, epoch]).permutation(n)
                if self.shuffle
                else np.arange(n)
            )
            self._order = (epoch, perm[self.rank :: self.world_size][: self.per_rank])
        return self._order[1]

    def rows(self, k: int) -> np.ndarray:
        epoch, b = divmod(k, self.batches_per_epoch)
        idx = self.order(epoch)[b * self.batch_size : (b + 1) * self.batch_size]
        return self.table[idx]

    def __len__(self) -> int:  # the schedule is infinite; DataLoader never asks with a sampler
        return 2**62

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rows = self.rows(k)
        stores = self.stores()
        clips = []
        for s, e, start, c in rows:
            store = stores[s]
            camera = store_cameras(store, self.spec)[c]
            clips.append(read_clip(store, self.spec, int(e), int(start), camera))
        return {"video": torch.from_numpy(np.stack(clips)), "clip": torch.from_numpy(rows.copy())}


class ClipLoader:
    """Seeded clip batches from episode stores; resumable via ``state_dict()``."""

    def __init__(
        self,
        stores: Sequence[str | Path],
        spec: ClipSpec,
        batch_size: int,
        *,
        split: str = "train",
        seed: int = 0,
        num_workers: int = 0,
        prefetch_factor: int = 4,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError("must be ≥ 1", field="batch_size", found=batch_size)
        if not stores:
            raise ConfigError(
                "no stores given", field="data", expected="one or more STORE.zarr paths"
            )
        self.paths = [Path(p) for p in stores]
        opened = [EpisodeStore.open(p) for p in self.paths]
        shapes = {
            (o.spec.cameras[c].height, o.spec.cameras[c].width)
            for o in opened
            for c in store_cameras(o, spec)
        }
        if len(shapes) > 1:
            raise StoreError(
                "cameras of different image sizes cannot share a batch",
                path=", ".join(map(str, self.paths)),
                field="image size",
                found=sorted(shapes),
            )
        self.image_size = next(iter(shapes))
        self.spec, self.split = spec, split
        self.table = clip_table(opened, spec, split)
        if len(self.table) // world_size < batch_size:
            raise ConfigError(
                f"only {len(self.table)} {split} clips for {world_size} process(es)",
                field="batch_size",
                expected=f"≤ {len(self.table) // world_size}",
                found=batch_size,
            )
        self.dataset = _Batches(
            self.paths, spec, self.table, batch_size, seed, rank, world_size, shuffle
        )
        self.batch_size, self.seed = batch_size, seed
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.consumed = 0  # batches handed to the caller

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset.batches_per_epoch

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "seed": self.seed, "clips": len(self.table)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("clips", len(self.table)) != len(self.table):
            raise ConfigError(
                "the data changed since the checkpoint",
                field="clips",
                expected=state["clips"],
                found=len(self.table),
            )
        self.consumed = int(state["consumed"])

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        """Batch ``k`` of the schedule, read in this process."""
        return self.dataset[k]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Infinite: batches from the current position on, across epochs."""
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=itertools.count(self.consumed),
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
        for batch in loader:
            self.consumed += 1
            yield batch
