"""Sequence packing: layout round trips, capacity, and identical per-clip loss packed vs alone."""

from __future__ import annotations

import pytest
import torch

from cosmos_sim.conditioning.multiview import fold_views
from cosmos_sim.data.packing import (
    Clip,
    clip_tokens,
    pack,
    pack_clips,
    pad_to_longest,
    patchify,
    plan_rows,
    unpack,
    unpatchify,
)
from cosmos_sim.models.diffusion import (
    DiffusionWorldModel,
    EDMConfig,
    WorldModelConfig,
    edm_loss,
    per_clip,
)
from cosmos_sim.models.dit import Conditioning, DiTConfig


def mixed_clips(seed: int = 0, fixed_noise: bool = False) -> list[Clip]:
    """Different lengths, resolutions, a 2-camera clip folded into time, instructions."""
    g = torch.Generator().manual_seed(seed)
    clips = []
    for t, hw, views, words in (
        (3, 4, 1, [5, 9]),
        (2, 2, 1, []),
        (4, 4, 1, [7]),
        (2, 4, 2, [11, 12, 13]),
    ):
        lat = torch.randn(1, views, t, 4, hw, hw, generator=g)
        folded = fold_views(lat[0:1].reshape(1, views, t, 4, hw, hw))
        n = t * views
        clips.append(
            Clip(
                latents=folded.x[0],
                n_context=views,  # the first instant (all its views) is context
                actions=torch.randn(n, 2, 3, generator=g),
                rays=torch.randn(n, 6, hw, hw, generator=g),
                time=folded.time,
                view=folded.view,
                instruction_ids=torch.tensor(words, dtype=torch.long),
                sigma=torch.rand(n, generator=g) * 2 + 0.1 if fixed_noise else None,
                noise=torch.randn(n, 4, hw, hw, generator=g) if fixed_noise else None,
            )
        )
    return clips


def test_patchify_round_trip():
    x = torch.randn(3, 4, 6, 8)
    tok = patchify(x, 2)
    assert tok.shape == (3 * 3 * 4, 16)
    assert torch.equal(unpatchify(tok, 3, 3, 4, 2), x)


def test_plan_rows_respects_capacity_and_keeps_every_clip():
    counts = [40, 10, 30, 25, 5, 64, 12]
    rows = plan_rows(counts, 64)
    assert sorted(i for r in rows for i in r) == list(range(len(counts)))
    assert all(sum(counts[i] for i in r) <= 64 for r in rows)
    assert len(rows) == 3  # 186 tokens need ≥ 3 rows of 64
    with pytest.raises(ValueError, match="seq_len"):
        plan_rows([65], 64)


def test_pack_unpack_round_trip_and_layout():
    clips = mixed_clips()
    tb = pack(clips, 1, seq_len=96)
    assert tb.tokens.shape[1] == 96
    for clip, out in zip(clips, unpack(tb.tokens, tb), strict=True):
        assert torch.equal(out, clip.latents)
    real = tb.layout.token_doc >= 0
    assert int(real.sum()) == sum(clip_tokens(c, 1) for c in clips)
    # positions restart per document: every document has a token at time 0, row 0, column 0
    pos = tb.layout.token_positions()
    for s in tb.segments:
        assert pos[s.row, s.token_start].tolist() == [0, 0, 0]


def test_packed_loss_equals_each_clip_alone():
    torch.manual_seed(0)
    cfg = WorldModelConfig(
        dit=DiTConfig(
            latent_channels=4,
            dim=48,
            depth=2,
            heads=2,
            action_dim=3,
            action_chunk=2,
            text_vocab=64,
            rays=True,
        ),
        edm=EDMConfig(),
    )
    m = DiffusionWorldModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.1)
    clips = mixed_clips(fixed_noise=True)

    def losses(tb):
        per_frame, _ = edm_loss(
            m.denoiser, tb.tokens, tb.sigma, tb.noise, tb.is_target, Conditioning.from_batch(tb)
        )
        return per_clip(per_frame, tb)

    alone = torch.cat([losses(pack_clips([c], 1, [[0]])) for c in clips])
    packed = losses(pack(clips, 1, seq_len=96))
    padded = losses(pad_to_longest(clips, 1))
    assert (alone > 0).all()
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-6)


def test_training_step_on_a_packed_batch():
    torch.manual_seed(0)
    cfg = WorldModelConfig(
        dit=DiTConfig(
            latent_channels=4,
            dim=24,
            depth=1,
            heads=2,
            action_dim=3,
            action_chunk=2,
            text_vocab=64,
            rays=True,
        )
    )
    m = DiffusionWorldModel(cfg).train()
    loss, metrics = m.training_step({"packed": pack(mixed_clips(), 1, seq_len=96)})
    loss.backward()
    assert torch.isfinite(loss) and metrics["loss_action"] > 0
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_packed_batches_stream_every_clip_once_with_full_rows():
    from cosmos_sim.data.packing import packed_batches

    clips = [c for seed in range(6) for c in mixed_clips(seed)]  # 24 clips
    batches = list(packed_batches(clips, 1, seq_len=128, rows_per_batch=2, lookahead=2))
    n_out = sum(len(tb.segments) for tb in batches)
    assert n_out == len(clips)
    assert all(tb.tokens.shape == (2, 128, 4) for tb in batches[:-1])
    pad = sum(tb.n_pad_tokens for tb in batches[:-1]) / sum(
        tb.tokens.shape[0] * 96 for tb in batches[:-1]
    )
    assert pad < 0.05, pad
    originals = sorted(float(c.latents.sum()) for c in clips)
    unpacked = sorted(float(x.sum()) for tb in batches for x in unpack(tb.tokens, tb))
    assert originals == pytest.approx(unpacked, rel=1e-5, abs=1e-5)
