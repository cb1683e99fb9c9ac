"""LoRA adapters on a real (tiny) diffusion world model: identity at init, exact merge,
only adapters train, the adapter directory round-trips and refuses a base it does not fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cosmos_sim.errors import ConfigError, ModelError
from cosmos_sim.models import zoo
from cosmos_sim.models.diffusion import DiffusionWorldModel, WorldModelConfig
from cosmos_sim.models.dit import Conditioning, DiTConfig
from cosmos_sim.models.lora import (
    LoRALinear,
    add_lora,
    load_lora,
    lora_state_dict,
    merge_lora,
    save_lora,
)


def tiny_model(dim: int = 32, seed: int = 0) -> DiffusionWorldModel:
    """A DiT world model whose adaLN gates are not zero, so every block changes the output."""
    torch.manual_seed(seed)
    dit = DiTConfig(latent_channels=4, dim=dim, depth=2, heads=2, action_dim=2)
    model = DiffusionWorldModel(WorldModelConfig(dit=dit)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def denoised(model: DiffusionWorldModel, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 3, 4, 4, 4, generator=g)  # (B, T, C, h, w)
    tb = model.token_batch({"latents": latents, "n_context": 1})
    sigma = torch.full(tb.layout.frame_doc.shape, 0.7)
    with torch.no_grad():
        return model.denoiser(tb.tokens, sigma, Conditioning.from_batch(tb))[0]


def randomize_adapters(model: nn.Module) -> None:
    with torch.no_grad():
        for t in lora_state_dict(model).values():
            t.copy_(0.1 * torch.randn_like(t))


def test_lora_linear_is_the_base_at_init_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(12, 20)
    x = torch.randn(5, 12)
    expected = base(x)
    layer = LoRALinear(base, rank=4, alpha=8.0)
    assert layer.weight is base.weight and layer.scaling == 2.0
    assert not layer.lora_B.any() and layer.lora_A.abs().sum() > 0
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    with torch.no_grad():
        layer.lora_B.normal_()
    update = 2.0 * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected + update, rtol=1e-5, atol=1e-5)
    merged = layer.merged()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), layer(x), rtol=1e-5, atol=1e-5)


def test_add_lora_wraps_the_dit_blocks_and_only_adapters_train():
    model = tiny_model()
    before = denoised(model)
    n_base = sum(p.numel() for p in model.parameters())
    names = add_lora(model, rank=4)
    assert len(names) == 2 * 4  # depth 2 × (attn.qkv, attn.proj, mlp.0, mlp.2)
    assert all(".blocks." in n for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert set(lora_state_dict(model)) == trainable
    n_adapter = sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert n_adapter == sum(p.numel() for p in model.parameters()) - n_base
    assert n_adapter < 0.1 * n_base
    torch.testing.assert_close(denoised(model), before, rtol=0, atol=0)  # B = 0: the base model
    loss = denoised_with_grad(model).pow(2).mean()
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def denoised_with_grad(model: DiffusionWorldModel) -> torch.Tensor:
    latents = torch.randn(1, 2, 4, 4, 4)
    tb = model.token_batch({"latents": latents, "n_context": 1})
    sigma = torch.full(tb.layout.frame_doc.shape, 0.7)
    return model.denoiser(tb.tokens, sigma, Conditioning.from_batch(tb))[0]


def test_merge_gives_the_unmerged_outputs():
    model = tiny_model()
    base_out = denoised(model)
    add_lora(model, rank=4, alpha=8.0)
    randomize_adapters(model)
    adapted = denoised(model)
    assert (adapted - base_out).abs().max() > 1e-3  # the adapters do change the model
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert not lora_state_dict(model)
    torch.testing.assert_close(denoised(model), adapted, rtol=1e-4, atol=1e-5)
    assert set(model.state_dict()) == set(tiny_model().state_dict())  # plain keys again


def test_bad_targets_and_double_wrapping_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ConfigError, match="matches no nn.Linear"):
        add_lora(model, targets=("*blocks.*.attention.nope",))
    with pytest.raises(ConfigError, match="lora_rank"):
        add_lora(model, rank=0)
    add_lora(model, rank=2)
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        add_lora(model, rank=2)


def test_adapter_directory_round_trips_and_refuses_another_base(tmp_path):
    model = tiny_model()
    add_lora(model, rank=4, alpha=4.0, dropout=0.1)
    randomize_adapters(model)
    expected = denoised(model.eval())
    path = save_lora(model, tmp_path / "adapter", base_model="tiny", base_weights_hash="abc123")
    meta = zoo.read_config(path)
    assert meta["kind"] == "lora" and meta["config"]["rank"] == 4
    assert meta["base_weights_hash"] == "abc123" and meta["config"]["dropout"] == 0.1
    weights = (path / "weights.safetensors").stat().st_size
    assert weights < 0.2 * 4 * sum(p.numel() for p in tiny_model().parameters())

    fresh = tiny_model()  # the same base weights (same seed)
    names = load_lora(fresh, path, base_weights_hash="abc123")
    assert len(names) == 8
    torch.testing.assert_close(denoised(fresh.eval()), expected, rtol=0, atol=0)
    for key, t in lora_state_dict(model).items():
        torch.testing.assert_close(lora_state_dict(fresh)[key], t, rtol=0, atol=0)

    with pytest.raises(ModelError, match="trained on another base model") as e:
        load_lora(tiny_model(), path / "weights.safetensors", base_weights_hash="fff000")
    assert "\n" not in str(e.value) and "config.toml: base_weights_hash" in str(e.value)
    other = tiny_model(dim=48)
    with pytest.raises(ModelError, match="does not fit the base model") as e:
        load_lora(other, path)
    msg = str(e.value)
    assert "\n" not in msg and "weights.safetensors" in msg and "blocks.0.attn.qkv.lora_A" in msg
    assert "expected [4, 48], found [4, 32]" in msg
    assert not any(isinstance(m, LoRALinear) for m in other.modules())  # left untouched
    deeper = DiffusionWorldModel(
        WorldModelConfig(dit=DiTConfig(latent_channels=4, dim=32, depth=3, heads=2, action_dim=2))
    )
    with pytest.raises(ModelError, match="adapter lacks a layer") as e:
        load_lora(deeper, path)
    assert "blocks.2.attn.qkv.lora_A" in str(e.value)
    with pytest.raises(ModelError, match="not a LoRA adapter directory"):
        load_lora(tiny_model(), tmp_path / "nowhere")


def test_load_lora_checks_a_saved_base_models_hash(tmp_path):
    model = tiny_model()
    base_dir = zoo.save_model(tmp_path / "base", "tiny", {}, model.state_dict(), dtype="fp32")
    base = zoo.LoadedModel(model, "tiny", {}, base_dir, None, zoo.weights_hash(base_dir))
    add_lora(model, rank=2)
    path = save_lora(model, tmp_path / "a", base_model="base", base_weights_hash=base.weights_hash)
    again = zoo.LoadedModel(tiny_model(), "tiny", {}, base_dir, None, base.weights_hash)
    assert len(load_lora(again, path)) == 8
    changed = zoo.LoadedModel(tiny_model(seed=3), "tiny", {}, base_dir, None, "0" * 16)
    with pytest.raises(ModelError, match=r"another base model \(base\)"):
        load_lora(changed, path)
