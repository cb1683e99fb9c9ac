"""Action normalisation, statistics files, chunking per latent frame, and refusals."""

import json

import numpy as np
import pytest
import torch

from cosmos_sim.conditioning.actions import (
    ActionStats,
    check_actions,
    chunk_actions,
    n_latent_frames,
)
from cosmos_sim.errors import ActionError


def test_stats_normalise_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    actions = rng.normal([1.0, -2.0, 0.0], [0.5, 3.0, 1e-9], size=(500, 3)).astype(np.float32)
    stats = ActionStats.from_actions(actions)
    z = stats.normalize(actions)
    np.testing.assert_allclose(z[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(0), 1, atol=1e-4)
    assert np.all(np.isfinite(z))  # a (near-)constant dimension does not blow up
    np.testing.assert_allclose(stats.denormalize(z), actions, rtol=1e-5, atol=1e-5)
    path = tmp_path / "stats.json"
    stats.save(path)
    assert set(json.loads(path.read_text())) == {"action_mean", "action_std", "count"}
    loaded = ActionStats.load(path)
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.std, stats.std)
    t = torch.from_numpy(actions[:4])
    torch.testing.assert_close(loaded.normalize(t), torch.from_numpy(z[:4]))


def test_corrupt_stats_file_is_a_clear_error(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text('{"action_mean": [0, 0], "action_std": [1]}')
    with pytest.raises(ActionError, match="stats.json: action_std"):
        ActionStats.load(path)
    path.write_text("not json")
    with pytest.raises(ActionError, match="cannot read"):
        ActionStats.load(path)


def test_chunks_follow_the_causal_latent_layout():
    actions = np.arange(9 * 2, dtype=np.float32).reshape(9, 2)  # 1 + 4·2 frames
    chunks = chunk_actions(actions, chunk=4)
    assert chunks.shape == (3, 4, 2)
    assert np.all(chunks[0] == 0)  # nothing leads into latent frame 0
    np.testing.assert_array_equal(chunks[1], actions[0:4])  # a0..a3 lead into frames 1-4
    np.testing.assert_array_equal(chunks[2], actions[4:8])
    assert torch.equal(chunk_actions(torch.from_numpy(actions)), torch.from_numpy(chunks))
    assert n_latent_frames(9) == 3 and n_latent_frames(1) == 1


def test_wrong_shapes_and_non_finite_values_are_refused():
    with pytest.raises(
        ActionError, match=r"actions: wrong action shape \(expected \(\.\.\., 3\), found \(4, 2\)\)"
    ):
        check_actions(np.zeros((4, 2)), 3, "actions")
    with pytest.raises(ActionError, match=r"expected \(\.\.\., 4, 3\)"):
        check_actions(torch.zeros(2, 5, 2, 3), 3, chunk=4)
    with pytest.raises(ActionError, match="non-finite"):
        check_actions(np.array([[0.0, np.nan, 1.0]]), 3)
    with pytest.raises(ActionError, match=r"1 \+ 4k"):
        chunk_actions(np.zeros((8, 2)))
    stats = ActionStats(np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(ActionError, match="found \\(2, 4\\)"):
        stats.normalize(np.zeros((2, 4)))


def test_world_model_refuses_actions_of_the_wrong_dimension():
    from cosmos_sim.models.diffusion import DiffusionWorldModel, WorldModelConfig
    from cosmos_sim.models.dit import DiTConfig

    m = DiffusionWorldModel(
        WorldModelConfig(dit=DiTConfig(latent_channels=2, dim=24, depth=1, heads=2, action_dim=3))
    )
    batch = dict(latents=torch.zeros(1, 2, 2, 2, 2), n_context=1, actions=torch.zeros(1, 2, 4, 2))
    with pytest.raises(ActionError, match="actions"):
        m.training_step(batch)
    batch["actions"] = torch.full((1, 2, 4, 3), float("inf"))
    with pytest.raises(ActionError, match="non-finite"):
        m.training_step(batch)


def test_stats_from_a_store(tmp_path):
    from factories import synthetic_store

    store = synthetic_store(tmp_path / "s.zarr", lengths=(9, 13))
    stats = ActionStats.from_store(store)
    # synthetic actions are episode + t / 100 in every dimension
    values = np.concatenate([np.arange(9) / 100, 1 + np.arange(13) / 100])
    np.testing.assert_allclose(stats.mean, np.full(3, values.mean()), rtol=1e-5)
    np.testing.assert_allclose(stats.std, np.full(3, values.std()), rtol=1e-4)
    assert stats.count == 22
