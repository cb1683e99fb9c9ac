"""EDM preconditioning, samplers, guidance and a tiny denoiser that learns a toy distribution."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from cosmos_sim.errors import ConfigError
from cosmos_sim.models.diffusion import (
    SAMPLERS,
    Denoiser,
    EDMConfig,
    WorldModelConfig,
    edm_loss,
    guided,
    karras_sigmas,
    sample,
)


@dataclass
class _Layout:
    token_frame: torch.Tensor  # (B, 1): one token, one frame per sample


@dataclass
class _Cond:
    layout: _Layout


class TinyNet(nn.Module):
    """F(c_in·x, c_noise) for single-token samples, with the DiT's call signature."""

    def __init__(self, dim: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x, c_noise, cond, cache=None, write_cache=False):
        h = torch.cat([x, c_noise[..., None].expand(-1, x.shape[1], 1)], -1)
        return self.net(h), h


def cond_for(b: int) -> _Cond:
    return _Cond(_Layout(torch.zeros(b, 1, dtype=torch.long)))


def test_edm_preconditioning_identities():
    cfg = EDMConfig(sigma_data=0.5)
    d = Denoiser(TinyNet(), cfg)
    sigma = torch.logspace(-3, 2, 50)
    c_skip, c_out, c_in, c_noise = d.precondition(sigma)
    sd2 = cfg.sigma_data**2
    # unit-variance network input: c_in²·(σ² + σ_d²) = 1
    torch.testing.assert_close(c_in**2 * (sigma**2 + sd2), torch.ones_like(sigma))
    # unit-variance training target: ((1 − c_skip)²σ_d² + c_skip²σ²) / c_out² = 1
    torch.testing.assert_close(
        ((1 - c_skip) ** 2 * sd2 + c_skip**2 * sigma**2) / c_out**2, torch.ones_like(sigma)
    )
    # λ(σ)·c_out² = 1: the weighted loss is a unit-weight loss on F
    torch.testing.assert_close(d.loss_weight(sigma) * c_out**2, torch.ones_like(sigma))
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # clean context (σ = 0) passes through unchanged
    c_skip0, c_out0, _, _ = d.precondition(torch.zeros(1))
    assert c_skip0.item() == 1.0 and c_out0.item() == 0.0


def test_karras_sigmas():
    s = karras_sigmas(4, 0.002, 80.0, 7.0)
    assert s.shape == (5,) and s[-1] == 0
    torch.testing.assert_close(s[[0, 3]], torch.tensor([80.0, 0.002]))
    assert bool((s[1:] < s[:-1]).all())


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_samplers_converge_to_the_exact_ode_solution_at_their_order(name, order):
    """Data N(μ, s²): D(x; σ) = μ + s²/(s² + σ²)(x − μ), and the ODE's exact solution is
    x(0) = μ + (x_T − μ)·s / √(s² + σ_T²). Doubling the steps divides the error by 2^order."""
    mu, s, sigma_t = 1.5, 0.3, 20.0
    exact = lambda x, sigma: mu + s**2 / (s**2 + sigma**2) * (x - mu)  # noqa: E731
    x_t = (
        torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigma_t
    )
    truth = mu + (x_t - mu) * s / (s**2 + sigma_t**2) ** 0.5
    err = []
    for steps in (64, 128):
        sigmas = karras_sigmas(steps, 0.002, sigma_t).double()
        err.append(((SAMPLERS[name](exact, x_t, sigmas) - truth).abs().max() / s).item())
    assert err[1] < (0.1 if order == 1 else 0.005), err
    assert 0.7 * 2**-order < err[1] / err[0] < 1.4 * 2**-order, err


def test_guidance_is_the_linear_extrapolation():
    c = lambda x, s: x + 1  # noqa: E731
    u = lambda x, s: x  # noqa: E731
    x = torch.zeros(3)
    assert guided(c, u, 1.0) is c
    torch.testing.assert_close(guided(c, u, 3.0)(x, 1.0), torch.full((3,), 3.0))


def test_tiny_denoiser_learns_a_two_mode_toy_distribution():
    torch.manual_seed(0)
    modes = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, -1.0, 1.0, 1.0]])
    cfg = EDMConfig(sigma_data=1.0, sigma_max=5.0)
    d = Denoiser(TinyNet(), cfg)
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    b = 256
    is_target = torch.ones(b, 1, dtype=torch.bool)
    for _ in range(600):
        x0 = modes[torch.randint(0, 2, (b,))][:, None]  # (B, 1, 4)
        sigma = (cfg.p_mean + cfg.p_std * torch.randn(b, 1)).exp()
        loss = edm_loss(d, x0, sigma, torch.randn_like(x0), is_target, cond_for(b))[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cond = cond_for(512)
    denoise = lambda x, s: d(x, s.expand(512, 1), cond)[0]  # noqa: E731
    # the default sampler: 4 Euler steps from σ_max = 5 (measured here: median distance to the
    # nearest mode 0.06, 73 % of samples within 0.3; Heun needs 8 steps, at 4 it overshoots)
    x = sample(
        denoise,
        (512, 1, 4),
        cfg,
        steps=4,
        sampler="euler",
        generator=torch.Generator().manual_seed(1),
    )
    dist = (x - modes[None]).norm(dim=-1)  # (512, 2)
    nearest = dist.min(-1)
    assert nearest.values.median() < 0.1, nearest.values.median()
    assert (nearest.values < 0.3).float().mean() > 0.65
    share = (nearest.indices == 0).float().mean().item()
    assert 0.3 < share < 0.7, share


def test_config_validation():
    with pytest.raises(ConfigError, match="sigma_min"):
        EDMConfig(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ConfigError, match="sampler"):
        WorldModelConfig(sampler="ddim")
    with pytest.raises(ConfigError, match="self_forcing"):
        WorldModelConfig(self_forcing=1.5)
    with pytest.raises(ConfigError, match="context_noise"):
        WorldModelConfig(context_noise=-0.1)
    with pytest.raises(ConfigError, match="sampler"):
        sample(lambda x, s: x, (2,), EDMConfig(), sampler="magic")


def test_self_forcing_replaces_only_the_last_context_frame():
    from cosmos_sim.models.diffusion import DiffusionWorldModel
    from cosmos_sim.models.dit import Conditioning, DiTConfig

    torch.manual_seed(0)
    m = DiffusionWorldModel(
        WorldModelConfig(
            dit=DiTConfig(latent_channels=2, dim=24, depth=1, heads=2, action_dim=1, action_chunk=2)
        )
    ).eval()
    batch = dict(latents=torch.randn(2, 4, 2, 2, 2), n_context=3, actions=torch.randn(2, 4, 2, 1))
    tb = m.token_batch(batch)
    x = m.self_forced_tokens(tb, Conditioning.from_batch(tb))
    per_frame = 4
    assert torch.equal(x[:, : 2 * per_frame], tb.tokens[:, : 2 * per_frame])
    assert torch.equal(x[:, 3 * per_frame :], tb.tokens[:, 3 * per_frame :])
    assert not torch.equal(
        x[:, 2 * per_frame : 3 * per_frame], tb.tokens[:, 2 * per_frame : 3 * per_frame]
    )
    m.train()
    m.cfg.self_forcing = 1.0
    m.cfg.context_noise = 0.1  # and noise augmentation of the context
    loss, metrics = m.training_step(batch)
    assert torch.isfinite(loss) and "loss_action" in metrics


def test_sampling_from_a_noised_start_reaches_the_oracle_target():
    """SDEdit start: x = start + σ_start·n; an oracle denoiser still lands on its target."""
    from cosmos_sim.models.diffusion import EDMConfig, sample

    target = torch.randn(2, 8, 4)
    start = target + 0.1 * torch.randn_like(target)
    out = sample(
        lambda x, s: target, target.shape, EDMConfig(), steps=3, start=start, sigma_start=1.0
    )
    torch.testing.assert_close(out, target)
    with pytest.raises(Exception, match="sigma_start"):
        sample(
            lambda x, s: target, target.shape, EDMConfig(), steps=3, start=start, sigma_start=0.0
        )
