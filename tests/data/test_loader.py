"""Clip windows and the resumable loader, on tiny real stores from the shared factories."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import synthetic_store

from cosmos_sim.data.clips import ClipSpec, clip_table, split_episodes
from cosmos_sim.data.loader import ClipLoader
from cosmos_sim.errors import ConfigError, StoreError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("loader") / "s.zarr"
    synthetic_store(path, lengths=(9, 13, 11, 20, 7, 15, 12, 10))
    return path


def take(loader: ClipLoader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def same(a: list[dict], b: list[dict]) -> bool:
    return all(
        torch.equal(x["video"], y["video"]) and torch.equal(x["clip"], y["clip"])
        for x, y in zip(a, b, strict=True)
    )


def test_clip_content_matches_the_store_rows(store):
    spec = ClipSpec(frames=5, stride=2, heldout_fraction=0.0)
    batch = take(ClipLoader([store], spec, batch_size=6, seed=3), 1)[0]
    assert batch["video"].shape == (6, 5, 3, 16, 24) and batch["video"].dtype == torch.uint8
    for (s, e, start, cam), video in zip(batch["clip"].tolist(), batch["video"], strict=True):
        assert s == 0
        t = start + 2 * np.arange(5)
        # factories.synthetic_frame writes (episode * 31 + t * 7 + camera) % 256 in every pixel
        expected = (e * 31 + t * 7 + cam) % 256
        assert video[:, 0, 0, 0].tolist() == expected.tolist()


def test_same_seed_same_batches_other_seed_different(store):
    spec = ClipSpec(frames=5)
    a = take(ClipLoader([store], spec, 4, seed=1), 5)
    b = take(ClipLoader([store], spec, 4, seed=1), 5)
    c = take(ClipLoader([store], spec, 4, seed=2), 5)
    assert same(a, b) and not same(a, c)


@pytest.mark.parametrize("workers", [0, 1])
def test_state_dict_restores_the_exact_position(store, workers):
    spec = ClipSpec(frames=5)
    full = ClipLoader([store], spec, 4, seed=7, num_workers=workers)
    epoch = full.batches_per_epoch
    reference = take(full, epoch + 3)  # crosses an epoch boundary
    first = ClipLoader([store], spec, 4, seed=7, num_workers=workers)
    it = iter(first)
    for _ in range(epoch - 1):
        next(it)
    state = first.state_dict()  # workers have prefetched further; the state must not care
    resumed = ClipLoader([store], spec, 4, seed=7, num_workers=workers)
    resumed.load_state_dict(state)
    assert same(take(resumed, 4), reference[epoch - 1 :])


def test_split_is_by_episode_and_stable(store):
    spec = ClipSpec(frames=5, heldout_fraction=0.3)
    from cosmos_sim.data.store import EpisodeStore

    s = EpisodeStore.open(store)
    train, held = clip_table([s], spec, "train"), clip_table([s], spec, "heldout")
    assert set(train[:, 1]).isdisjoint(held[:, 1]) and len(held)
    assert set(train[:, 1]) | set(held[:, 1]) == set(range(len(s)))
    assert (
        split_episodes(100, 0.3)[1][:5] == split_episodes(120, 0.3)[1][:5]
    )  # adding episodes keeps splits


def test_ranks_see_disjoint_clips(store):
    spec = ClipSpec(frames=5, window_step=2)
    r0 = ClipLoader([store], spec, 3, rank=0, world_size=2)
    r1 = ClipLoader([store], spec, 3, rank=1, world_size=2)
    rows0 = {tuple(r) for b in take(r0, r0.batches_per_epoch) for r in b["clip"].tolist()}
    rows1 = {tuple(r) for b in take(r1, r1.batches_per_epoch) for r in b["clip"].tolist()}
    assert rows0 and rows1 and rows0.isdisjoint(rows1)


def test_bad_input_is_a_clear_error(store):
    with pytest.raises(StoreError, match="no such camera"):
        ClipLoader([store], ClipSpec(frames=5, cameras=("wrist",)), 2)
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        ClipSpec(frames=8)
    with pytest.raises(StoreError, match="shorter than a clip"):
        ClipLoader([store], ClipSpec(frames=41), 2)
    with pytest.raises(ConfigError, match="batch_size"):
        ClipLoader([store], ClipSpec(frames=5), 10_000)
