"""Decoder-only tokenizer fine-tuning: a better decoder on the same latents."""

from __future__ import annotations

import pytest
import torch
from factories import synthetic_store, tiny_tokenizer

from cosmos_sim.data.clips import ClipSpec, clip_table
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError
from cosmos_sim.models import zoo
from cosmos_sim.training.tokenizer_task import export_tokenizer, tokenize_store, train_tokenizer


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny tokenizer, a 3-episode store it cached, and its decoder fine-tuned 3 steps."""
    root = tmp_path_factory.mktemp("dec")
    store = root / "s.zarr"
    synthetic_store(store, lengths=(9, 13, 9))
    tok = tiny_tokenizer(root)
    tokenize_store(store, tok)
    run = root / "run"
    train_tokenizer(
        [store], "cv", "cpu-small", run, steps=3, batch_size=2, progress=False,
        checkpoint_every=3, lr=1e-2, init_from=tok, decoder_only=True, heldout_every=3,
    )  # fmt: skip
    return store, tok, export_tokenizer(run, root / "tuned")


def test_decoder_only_keeps_every_latent_and_changes_the_decoder(tuned):
    store, tok, out = tuned
    base, new = zoo.load_model(tok), zoo.load_model(out)
    assert new.latent_hash == base.weights_hash != new.weights_hash
    assert new.config["dtype"] == base.config["dtype"]  # the encoder's exact weights
    video = torch.rand(2, 9, 3, 16, 24) * 2 - 1
    z = base.module.encode(video)
    assert torch.equal(new.module.encode(video), z)
    assert (new.module.decode(z) - base.module.decode(z)).abs().max() > 1e-4


def test_decoder_only_tokenizer_reuses_the_latent_cache(tuned):
    store, tok, out = tuned
    attrs = tokenize_store(store, out)  # the cache of `tok` is already complete
    assert attrs["weights_hash"] == zoo.load_model(tok).weights_hash
    assert list(EpisodeStore.open(store).group["latents"].group_keys()) == [attrs["weights_hash"]]


def test_heldout_every_holds_out_the_world_models_episodes(tuned):
    store = EpisodeStore.open(tuned[0])
    spec = ClipSpec(frames=9, heldout_every=3)
    assert set(clip_table([store], spec)[:, 1]) == {0, 1}
    assert set(clip_table([store], spec, "heldout")[:, 1]) == {2}
    with pytest.raises(ConfigError, match="heldout_every"):
        ClipSpec(heldout_every=1)


def test_decoder_only_needs_an_init_tokenizer(tuned, tmp_path):
    with pytest.raises(ConfigError, match="init"):
        train_tokenizer([tuned[0]], "cv", "cpu-small", tmp_path, steps=1, decoder_only=True)
    with pytest.raises(ConfigError, match="not a dv tokenizer"):
        train_tokenizer([tuned[0]], "dv", "cpu-small", tmp_path, steps=1, init_from=tuned[1])


def test_a_narrower_decoder_trains_on_the_same_latents(tuned, tmp_path):
    store, tok, _ = tuned
    base = zoo.load_model(tok)
    cfg = base.module.cfg
    train_tokenizer(
        [store], "cv", "cpu-small", tmp_path / "run", steps=2, batch_size=2, progress=False,
        checkpoint_every=2, lr=1e-2, init_from=tok, decoder_only=True,
        decoder_sizes={"dec_width": 8, "dec_width_low": 8, "dec_blocks": (1, 0)},
    )  # fmt: skip
    fast = zoo.load_model(export_tokenizer(tmp_path / "run", tmp_path / "fast"))
    assert fast.latent_hash == base.weights_hash  # world models on `tok` can decode with it
    assert fast.module.cfg.decoder_widths == (8, 8) and fast.module.cfg.dec_blocks == (1, 0)
    assert (fast.module.cfg.width, fast.module.cfg.width_low) == (cfg.width, cfg.width_low)
    n_params = lambda m: sum(p.numel() for p in m.decoder.parameters())  # noqa: E731
    assert n_params(fast.module) < n_params(base.module) / 2
    video = torch.rand(2, 9, 3, 16, 24) * 2 - 1
    z = base.module.encode(video)
    assert torch.equal(fast.module.encode(video), z)
    assert fast.module.decode(z).shape == base.module.decode(z).shape
    with pytest.raises(ConfigError, match="decoder-only"):
        train_tokenizer(
            [store], "cv", "cpu-small", tmp_path / "r2", steps=1, init_from=tok,
            decoder_sizes={"dec_width": 8},
        )  # fmt: skip
