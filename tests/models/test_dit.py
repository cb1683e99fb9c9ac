"""DiT world model: shapes, adaLN-Zero init, block-causality, KV cache, action conditioning."""

from __future__ import annotations

import pytest
import torch

from cosmos_sim.data.packing import Clip, pack_clips
from cosmos_sim.errors import ActionError, ConfigError
from cosmos_sim.models import dit as dit_module
from cosmos_sim.models.diffusion import DiffusionWorldModel, EDMConfig, WorldModelConfig
from cosmos_sim.models.dit import Conditioning, DiT, DiTConfig, FrameSpread, frame_index, preset


def tiny_cfg(**kw) -> DiTConfig:
    base = dict(latent_channels=4, dim=48, depth=2, heads=2, action_dim=3, text_vocab=64, rays=True)
    return DiTConfig(**{**base, **kw})


def tiny_model(seed: int = 0, randomise: bool = True, **kw) -> DiffusionWorldModel:
    torch.manual_seed(seed)
    m = DiffusionWorldModel(WorldModelConfig(dit=tiny_cfg(**kw), edm=EDMConfig(sigma_max=10.0)))
    if randomise:  # zero-init makes every block the identity: break that to test the wiring
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.1)
    return m.eval()


def grid_batch(b=2, t=3, hw=4, n_context=2, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        latents=torch.randn(b, t, 4, hw, hw, generator=g),
        n_context=n_context,
        actions=torch.randn(b, t, 4, 3, generator=g),
        rays=torch.randn(b, t, 6, hw, hw, generator=g),
        instruction_ids=torch.tensor([[5, 6, 0], [7, 0, 0]])[:b],
    )


def test_shapes_and_param_count():
    m = tiny_model()
    tb = m.token_batch(grid_batch())
    out, hidden = m.dit(tb.tokens, torch.zeros(tb.is_context.shape), Conditioning.from_batch(tb))
    assert out.shape == (2, 3 * 16, 4) and hidden.shape == (2, 3 * 16, 48)
    n = sum(p.numel() for p in DiT(preset("cpu-small")).parameters())
    assert 2e6 < n < 10e6, n


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="heads"):
        DiTConfig(dim=50, heads=4)
    with pytest.raises(ConfigError, match="preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="attention"):
        DiTConfig(attention="magic")


def test_adaln_zero_blocks_are_identity_at_init():
    m = tiny_model(randomise=False)
    tb = m.token_batch(grid_batch())
    cond = Conditioning.from_batch(tb)
    x = torch.randn_like(tb.tokens)
    sigma = torch.full(tb.is_context.shape, 1.3)
    out, _ = m.dit(x, sigma.log() / 4, cond)
    assert torch.equal(out, torch.zeros_like(out))  # zero output projection
    # every block is exactly the identity: hidden = embedded input
    h0 = m.dit.x_embed(x)
    lay = tb.layout
    h0 = h0 + m.dit.row_embed[lay.token_hw[..., 0]] + m.dit.col_embed[lay.token_hw[..., 1]]
    h0 = h0 + m.dit.view_embed(lay.frame_view.gather(1, lay.token_frame))
    _, hidden = m.dit(x, sigma.log() / 4, cond)
    torch.testing.assert_close(hidden, h0, rtol=0, atol=0)
    # so the denoiser returns c_skip·x
    d, _ = m.denoiser(x, sigma, cond)
    c_skip = 0.5**2 / (1.3**2 + 0.5**2)
    torch.testing.assert_close(d, c_skip * x)


def test_block_causal_future_frames_never_change_the_past():
    m = tiny_model()
    batch = grid_batch(t=4)
    tb = m.token_batch(batch)
    cond = Conditioning.from_batch(tb)
    sigma = torch.full(tb.is_context.shape, 0.7)
    out, _ = m.denoiser(tb.tokens, sigma, cond)
    per_frame = 16
    for t in range(3):
        x2 = tb.tokens.clone()
        x2[:, (t + 1) * per_frame :] += torch.randn_like(x2[:, (t + 1) * per_frame :])
        out2, _ = m.denoiser(x2, sigma, cond)
        assert torch.equal(out2[:, : (t + 1) * per_frame], out[:, : (t + 1) * per_frame])
        assert (out2[:, (t + 1) * per_frame :] - out[:, (t + 1) * per_frame :]).abs().max() > 1e-3


def test_kv_cached_sampling_equals_uncached_over_two_env_steps():
    m = tiny_model()
    batch = grid_batch(t=4, n_context=2)
    full = m.token_batch(batch)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(full.tokens.shape, generator=g)

    def sub(lo: int, hi: int, n_ctx: int):
        part = {k: batch[k][:, lo:hi] for k in ("latents", "actions", "rays")}
        time = torch.arange(lo, hi).expand(2, -1)
        return m.token_batch(
            dict(part, n_context=n_ctx, time=time, instruction_ids=batch["instruction_ids"])
        )

    # uncached: step 1 generates frame 2 from frames 0-1; step 2 frame 3 from 0-1 + generated 2
    step1 = sub(0, 3, 2)
    gen1 = m.generate(step1, noise=noise[:, : 3 * 16])
    step2 = sub(0, 4, 3)
    step2.tokens = torch.cat([gen1, full.tokens[:, 48:]], 1)
    gen2 = m.generate(step2, noise=noise)
    # cached: prefill once, sample against the cache, append each generated frame
    cache, next_action = m.prefill(sub(0, 2, 2))
    assert next_action.shape == (2, 4, 3)
    f2 = sub(2, 3, 0)
    c1 = m.generate(f2, cache=cache, noise=noise[:, 32:48])
    f2.tokens = c1
    m.prefill(f2, cache)
    c2 = m.generate(sub(3, 4, 0), cache=cache, noise=noise[:, 48:64])
    assert len(cache) == 3 * 16
    torch.testing.assert_close(c1, gen1[:, 32:48], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2, gen2[:, 48:64], atol=1e-5, rtol=1e-5)


class GatheredFrames(FrameSpread):
    """The per-token gather for every layout (what packed rows use)."""

    def __init__(self, token_frame: torch.Tensor, n_frames: int) -> None:
        super().__init__(token_frame, n_frames)
        self.groups, self.index = (1, token_frame.shape[1]), frame_index(token_frame, n_frames)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_frames_broadcast_equals_the_per_token_gather(monkeypatch, dtype):
    m = tiny_model()
    tb = m.token_batch(grid_batch(t=3))  # every row: 3 frames of 16 contiguous tokens
    cond = Conditioning.from_batch(tb)
    assert FrameSpread(tb.layout.token_frame, 3).index is None  # broadcast, no gather
    clips = [Clip(torch.randn(t, 4, hw, hw), 1) for t, hw in ((3, 4), (2, 2))]
    lay = pack_clips(clips, 1, [[0, 1]]).layout  # frames of 16 and 4 tokens: gathered
    assert FrameSpread(lay.token_frame, lay.frame_doc.shape[1]).index is not None
    sigma = torch.rand(tb.is_context.shape)
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        out, hidden = m.dit(tb.tokens, sigma, cond)
        monkeypatch.setattr(dit_module, "FrameSpread", GatheredFrames)
        out_g, hidden_g = m.dit(tb.tokens, sigma, cond)
    assert out.shape == (2, 48, 4) and hidden.shape == (2, 48, 48)
    assert torch.equal(out, out_g) and torch.equal(hidden, hidden_g)  # bit for bit


def test_packed_documents_do_not_see_each_other():
    m = tiny_model()
    g = torch.Generator().manual_seed(0)
    clips = [Clip(torch.randn(t, 4, hw, hw, generator=g), 1) for t, hw in ((3, 4), (2, 2))]
    tb = pack_clips(clips, 1, [[0, 1]])
    cond = Conditioning.from_batch(tb)
    sigma = torch.full(tb.is_context.shape, 0.5)
    out, _ = m.denoiser(tb.tokens, sigma, cond)
    x2 = tb.tokens.clone()
    x2[:, 48:] += 1.0  # the second document only
    out2, _ = m.denoiser(x2, sigma, cond)
    assert torch.equal(out[:, :48], out2[:, :48])


def test_action_conditioning_learns_a_toy_dynamics():
    """next frame = context frame + mean(action chunk): after training, actions steer the output."""
    torch.manual_seed(0)
    cfg = WorldModelConfig(
        dit=DiTConfig(latent_channels=2, dim=32, depth=2, heads=2, action_dim=1, action_chunk=2),
        edm=EDMConfig(sigma_max=5.0, sigma_data=1.0),
        p_drop_action=0.0,
    )
    m = DiffusionWorldModel(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)

    def toy(b):
        a = torch.randn(b, 2, 2, 1)
        x0 = torch.randn(b, 1, 2, 2, 2) * 0.5
        x1 = x0 + a[:, 1].mean((1, 2))[:, None, None, None, None]
        return dict(latents=torch.cat([x0, x1], 1), n_context=1, actions=a)

    m.eval()
    probe = toy(64)
    before = m.training_step(probe)[1]["loss_diffusion"]
    m.train()
    for _ in range(150):
        loss, _ = m.training_step(toy(32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    after = m.training_step(probe)[1]["loss_diffusion"]
    assert after < 0.5 * before, (before, after)
    # the same context, two action chunks: the sampled next frames follow the actions
    ctx = torch.zeros(8, 1, 2, 2, 2)
    outs = []
    for value in (-1.0, 1.0):
        acts = torch.full((8, 2, 2, 1), value)
        tb = m.token_batch(dict(latents=torch.cat([ctx, ctx], 1), n_context=1, actions=acts))
        gen = m.generate(tb, generator=torch.Generator().manual_seed(0))
        outs.append(gen[:, 4:].mean())
    assert outs[0] < -0.5 and outs[1] > 0.5, outs


def test_instruction_cross_attention_and_its_guidance_drop():
    from dataclasses import replace

    from cosmos_sim.models.dit import hash_instruction

    ids = hash_instruction("Push the block LEFT.", 64)
    assert ids.tolist() == hash_instruction("push the block left", 64).tolist()
    assert ids.min() >= 2 and ids.max() < 64
    m = tiny_model()
    batch = grid_batch()
    tb = m.token_batch(batch)
    sigma = torch.full(tb.is_context.shape, 0.5)
    cond = Conditioning.from_batch(tb)
    out, _ = m.denoiser(tb.tokens, sigma, cond)
    other = m.token_batch(dict(batch, instruction_ids=torch.tensor([[9, 3, 0], [4, 0, 0]])))
    out_other, _ = m.denoiser(tb.tokens, sigma, Conditioning.from_batch(other))
    assert (out - out_other).abs().max() > 1e-4  # the instruction reaches the output
    # dropping the instruction (guidance) == no instruction at all (only the null word)
    dropped, _ = m.denoiser(tb.tokens, sigma, m.unconditional(cond))
    none, _ = m.denoiser(tb.tokens, sigma, replace(m.unconditional(cond), instruction_ids=None))
    torch.testing.assert_close(dropped, none, atol=1e-5, rtol=1e-5)


def test_cache_keeps_a_sliding_window_of_frames():
    m = tiny_model()
    batch = grid_batch(t=3, n_context=3)
    cache, _ = m.prefill(m.token_batch(batch))
    assert len(cache) == 3 * 16
    cache.keep_last(2)
    assert len(cache) == 2 * 16 and sorted(set(cache.block[0].tolist())) == [1, 2]
    assert all(k.shape[2] == 32 for k in cache.k)
    nxt = {k: batch[k][:, :1] for k in ("latents", "actions", "rays")}
    target = m.token_batch(
        dict(nxt, n_context=0, time=torch.full((2, 1), 3), instruction_ids=batch["instruction_ids"])
    )
    out = m.generate(target, cache=cache)
    assert out.shape == (2, 16, 4) and torch.isfinite(out).all()


def test_too_many_views_or_too_large_a_grid_is_a_clear_error():
    m = tiny_model(max_views=2, max_grid=4)
    batch = grid_batch()
    m.training_step(batch)  # 4×4 latents, one view: fine
    with pytest.raises(ConfigError, match="max_views"):
        m.training_step(dict(batch, view=torch.full((2, 3), 2)))
    big = dict(latents=torch.randn(1, 2, 4, 8, 8), n_context=1)
    with pytest.raises(ConfigError, match="max_grid"):
        m.training_step(big)


def test_bf16_autocast_training_step_and_saved_config_round_trip():
    m = tiny_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = m.train().training_step(grid_batch())
    loss.backward()
    assert torch.isfinite(loss)
    cfg = WorldModelConfig(**m.cfg.to_dict())
    assert cfg == m.cfg and isinstance(cfg.dit, DiTConfig)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_latent_rollout_equals_uncached_generation(guidance):
    """Guided too: the unconditional branch's context is encoded without the instruction."""
    from cosmos_sim.models.diffusion import LatentRollout

    m = tiny_model(rays=False)
    g = torch.Generator().manual_seed(3)
    lat = torch.randn(2, 2, 4, 4, 4, generator=g)
    acts = torch.randn(2, 2, 4, 3, generator=g)
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    noise = torch.randn(2, 2, 16, 4, generator=g)
    roll = LatentRollout(m, lat, window=8, instruction_ids=ids, guidance=guidance)
    frames = [roll.step(acts[:, k], noise=noise[:, k])[0] for k in range(2)]
    assert frames[0].shape == (2, 4, 4, 4) and roll.next_action.shape == (2, 4, 3)
    # uncached: the whole clip each time, generated frames fed back as context
    seq = lat
    for k in range(2):
        n = seq.shape[1]
        full_actions = torch.cat([torch.zeros(2, n, 4, 3), acts[:, k : k + 1]], 1)
        batch = dict(
            latents=torch.cat([seq, torch.zeros(2, 1, 4, 4, 4)], 1),
            n_context=n,
            actions=full_actions,
            instruction_ids=ids,
        )
        tb = m.token_batch(batch)
        full_noise = torch.cat([torch.zeros(2, n * 16, 4), noise[:, k]], 1)
        out = m.generate(tb, noise=full_noise, guidance=guidance)
        nxt = (
            out[:, n * 16 :].reshape(2, 4, 4, 4).permute(0, 3, 1, 2)
        )  # tokens (h, w, C) → (C, h, w)
        torch.testing.assert_close(frames[k], nxt, atol=1e-5, rtol=1e-5)
        seq = torch.cat([seq, nxt[:, None]], 1)
    with pytest.raises(ActionError, match="actions"):
        roll.step(torch.zeros(2, 4, 2))


def test_end_to_end_with_the_tokenizer_latent_layout():
    """Video (1 + 4k frames) → tokenizer latents + action chunks → a training step → a
    rollout step → decoded frames: the shapes line up with the tokenizer's contract."""
    from cosmos_sim.conditioning.actions import chunk_actions
    from cosmos_sim.models.diffusion import LatentRollout
    from cosmos_sim.models.tokenizer import TokenizerConfig, VideoTokenizer

    torch.manual_seed(0)
    tok = VideoTokenizer(
        TokenizerConfig(width=16, width_low=32, enc_blocks=(1, 1), dec_blocks=(1, 1))
    ).eval()
    video = torch.rand(2, 9, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = tok.encode(video)  # (2, 3, 16, 4, 4)
    actions = torch.stack([chunk_actions(torch.randn(9, 3)) for _ in range(2)])  # (2, 3, 4, 3)
    cfg = WorldModelConfig(dit=DiTConfig(dim=48, depth=1, heads=2, action_dim=3))
    m = DiffusionWorldModel(cfg)
    loss, _ = m.training_step(dict(latents=latents, n_context=2, actions=actions))
    loss.backward()
    roll = LatentRollout(m.eval(), latents[:, :2])
    frame, _ = roll.step(actions[:, 2])
    with torch.no_grad():
        decoded = tok.decode(torch.cat([latents[:, :2], frame[:, None]], 1))
    assert frame.shape == (2, 16, 4, 4) and decoded.shape == (2, 9, 3, 32, 32)


def test_guidance_can_drop_actions_or_instruction_separately():
    m = tiny_model()
    tb = m.token_batch(grid_batch())
    cond = Conditioning.from_batch(tb)
    only_actions = m.unconditional(cond, ("actions",))
    assert not only_actions.has_action.any() and torch.equal(
        only_actions.instruction_doc, cond.instruction_doc
    )
    only_text = m.unconditional(cond, ("instruction",))
    assert torch.equal(only_text.has_action, cond.has_action)
    assert (only_text.instruction_doc >= 0).sum() == 2  # the null word of each clip
    noise = torch.randn_like(tb.tokens)
    plain = m.generate(tb, noise=noise)
    assert torch.equal(m.generate(tb, noise=noise, guidance=1.0, guide=("actions",)), plain)
    guided_a = m.generate(tb, noise=noise, guidance=3.0, guide=("actions",))
    guided_i = m.generate(tb, noise=noise, guidance=3.0, guide=("instruction",))
    assert not torch.equal(guided_a, plain) and not torch.equal(guided_a, guided_i)
