"""ActionWorldModel inference with an instruction: the KV-cached prefill / next_frame /
append condition every frame on the instruction exactly as a training clip does (the whole
clip recomputed, context included), and guidance drops it from the context too."""

from __future__ import annotations

import pytest
import torch

from cosmos_sim.errors import ConfigError
from cosmos_sim.models.diffusion import EDMConfig, WorldModelConfig
from cosmos_sim.models.dit import DiTConfig, hash_instruction
from cosmos_sim.models.world_model import ActionWorldModel, ActionWorldModelConfig, ProbeConfig
from cosmos_sim.training.world_model_variants import instruction_ids, pad_ids

B, C, HW, A, S, CHUNK = 2, 4, 4, 2, 3, 4
TEXTS = ["reach the red target", "push the block to the left"]


def tiny_model(text_vocab: int = 64) -> ActionWorldModel:
    """Random weights: adaLN-Zero's zero gates would make every control a no-op."""
    torch.manual_seed(0)
    dit = DiTConfig(
        latent_channels=C,
        dim=48,
        depth=2,
        heads=2,
        action_dim=A,
        action_chunk=CHUNK,
        state_dim=S,
        text_vocab=text_vocab,
    )
    probe = ProbeConfig(channels=C, height=HW, width=HW, state_dim=S, hidden=16)
    cfg = ActionWorldModelConfig(WorldModelConfig(dit=dit, edm=EDMConfig(sigma_max=10.0)), probe)
    m = ActionWorldModel(cfg)
    with torch.no_grad():
        for p in m.wm.parameters():
            p.normal_(0, 0.1)
    return m.eval()


def data(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        context=torch.randn(B, 2, C, HW, HW, generator=g),  # (B, T, C, h, w)
        states=torch.randn(B, 4, S, generator=g),  # context and two new frames
        chunks=torch.randn(B, 2, CHUNK, A, generator=g),  # into each new frame
        noise=torch.randn(B, 2, HW * HW, C, generator=g),  # (B, N, P) per new frame
    )


def uncached(m: ActionWorldModel, seq, states, chunk, ids, noise, guidance) -> torch.Tensor:
    """The next frame as training computes it: the whole clip (context + target) in one
    batch through ``token_batch``, the context recomputed at every denoising step."""
    b, n = seq.shape[:2]
    actions = torch.cat([torch.zeros(b, n, CHUNK, A), chunk[:, None]], 1)
    batch = dict(
        latents=torch.cat([seq, torch.zeros(b, 1, C, HW, HW)], 1),
        n_context=n,
        actions=actions,
        state=states[:, : n + 1],
        instruction_ids=ids,
    )
    tb = m.wm.token_batch(batch)
    full_noise = torch.cat([torch.zeros(b, n * HW * HW, C), noise], 1)
    out = m.wm.generate(tb, noise=full_noise, guidance=guidance, steps=2)
    return out[:, n * HW * HW :].reshape(b, HW, HW, C).permute(0, 3, 1, 2)[:, None]


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_cached_rollout_with_an_instruction_is_the_training_computation(guidance):
    m, d = tiny_model(), data()
    ids = m.hash_instructions(TEXTS)  # (B, L)
    cache, _ = m.prefill(d["context"], states=d["states"][:, :2], instruction_ids=ids)
    plain = None
    if guidance != 1.0:  # guidance's branch: the context without the instruction
        plain, _ = m.prefill(d["context"], states=d["states"][:, :2])
    seq = d["context"]
    for k in range(2):  # two steps: the appended frame is context for the second
        time, state = seq.shape[1], d["states"][:, seq.shape[1]]
        gen = torch.Generator().manual_seed(k)
        noise = torch.randn(B, HW * HW, C, generator=torch.Generator().manual_seed(k))
        args = (d["chunks"][:, k], time, (C, HW, HW))
        kwargs = dict(steps=2, guidance=guidance, state=state, instruction_ids=ids)
        z = m.next_frame(
            cache, *args, generator=gen, uncond_cache=plain, **kwargs
        )  # (B, 1, C, h, w)
        expected = uncached(m, seq, d["states"], d["chunks"][:, k], ids, noise, guidance)
        torch.testing.assert_close(z, expected, atol=1e-4, rtol=1e-4)
        if plain is not None:  # the instructed context in both branches is not training's
            gen = torch.Generator().manual_seed(k)
            shared = m.next_frame(cache, *args, generator=gen, uncond_cache=cache, **kwargs)
            assert (shared - expected).abs().max() > 1e-3
        m.append(cache, z, time, state[:, None], instruction_ids=ids)
        if plain is not None:
            m.append(plain, z, time, state[:, None])
        seq = torch.cat([seq, z], 1)


def test_the_instruction_reaches_the_cache_and_the_frame():
    m, d = tiny_model(), data()
    kwargs = dict(steps=2, state=d["states"][:, 2])

    def frame(context_ids, frame_ids):
        cache, _ = m.prefill(d["context"], states=d["states"][:, :2], instruction_ids=context_ids)
        gen = torch.Generator().manual_seed(0)
        z = m.next_frame(
            cache,
            d["chunks"][:, 0],
            2,
            (C, HW, HW),
            generator=gen,
            instruction_ids=frame_ids,
            **kwargs,
        )
        return z

    red, other = m.hash_instructions(TEXTS), m.hash_instructions(TEXTS[::-1])
    base = frame(red, red)
    torch.testing.assert_close(frame(red, red), base, atol=0, rtol=0)  # deterministic
    assert (frame(other, other) - base).abs().max() > 1e-3
    assert (frame(None, red) - base).abs().max() > 1e-3  # the cached context read it too


def test_hash_instructions_are_the_training_ids_and_checked():
    m = tiny_model()
    ids = m.hash_instructions([*TEXTS, ""])
    training = pad_ids([instruction_ids(t, 64) for t in [*TEXTS, ""]])
    torch.testing.assert_close(ids, training, atol=0, rtol=0)
    assert ids[0, :4].tolist() == hash_instruction(TEXTS[0], 64).tolist()
    d = data()
    with pytest.raises(ConfigError, match="instruction_ids.*vocabulary"):
        m.prefill(d["context"], states=d["states"][:, :2], instruction_ids=ids[:2] + 64)
    with pytest.raises(ConfigError, match="instruction_ids.*one row"):
        m.prefill(d["context"], states=d["states"][:, :2], instruction_ids=ids)
    cache, _ = m.prefill(d["context"], states=d["states"][:, :2], instruction_ids=ids[:2])
    with pytest.raises(ConfigError, match="uncond_cache"):  # guidance needs the plain context
        m.next_frame(
            cache,
            d["chunks"][:, 0],
            2,
            (C, HW, HW),
            guidance=2.0,
            state=d["states"][:, 2],
            instruction_ids=ids[:2],
        )
    blind = tiny_model(text_vocab=0)
    with pytest.raises(ConfigError, match="text_vocab"):
        blind.hash_instructions(TEXTS)
    with pytest.raises(ConfigError, match="instruction_ids.*reads no instruction"):
        blind.prefill(d["context"], states=d["states"][:, :2], instruction_ids=ids[:2])


def test_state_dynamics_predicts_changes_in_units_of_its_delta_scale():
    """``delta_scale`` multiplies each dimension's predicted change: a dimension whose scale
    is 10× moves 10× as far for the same net, per control step and per chunk; the scale
    comes from the config and a wrong one is refused by name."""
    from cosmos_sim.models.heads import StateDynamics

    torch.manual_seed(0)
    plain = StateDynamics(3, 4, 2, hidden=16, substeps=True)
    torch.nn.init.normal_(plain.net[-1].weight)  # the last layer starts at zero
    scaled = StateDynamics(3, 4, 2, hidden=16, substeps=True, delta_scale=[1.0, 10.0, 0.1])
    scaled.load_state_dict(plain.state_dict())  # the scale is not a weight: same keys
    s0, chunk = torch.randn(5, 3), torch.randn(5, 4, 2)
    with torch.no_grad():
        step = plain.net(torch.cat([s0, chunk[:, 0]], -1))
        first = scaled(s0, chunk, frames=True)[:, 0]
    torch.testing.assert_close(first - s0, step * torch.tensor([1.0, 10.0, 0.1]))
    with pytest.raises(ConfigError, match="delta scale"):
        StateDynamics(3, 4, 2, delta_scale=[1.0, 2.0])
    with pytest.raises(ConfigError, match="delta scale"):
        StateDynamics(3, 4, 2, delta_scale=[1.0, 0.0, 1.0])
    cfg = ActionWorldModelConfig(
        wm=WorldModelConfig(dit=DiTConfig(dim=32, depth=1, heads=2, action_dim=2)),
        probe=ProbeConfig(state_dim=3),
        dynamics_hidden=16,
        dynamics_substeps=True,
        dynamics_delta_scale=[1.0, 10.0, 0.1],
    )
    again = ActionWorldModelConfig(**cfg.to_dict())
    model = ActionWorldModel(again)
    assert model.dynamics.delta_scale.tolist() == pytest.approx([1.0, 10.0, 0.1])
    assert "dynamics.delta_scale" not in model.state_dict()
