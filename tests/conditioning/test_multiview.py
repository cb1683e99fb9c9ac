"""Multi-view folding into time and its round trip."""

import pytest
import torch

from cosmos_sim.conditioning.multiview import fold_views, unfold_views
from cosmos_sim.errors import ConfigError


def test_fold_is_time_major_with_indices():
    x = torch.arange(2 * 3 * 4).reshape(1, 2, 3, 4).float()  # (B, V, T, D)
    f = fold_views(x)
    assert f.x.shape == (1, 6, 4)
    assert f.time.tolist() == [0, 0, 1, 1, 2, 2] and f.view.tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.equal(f.x[0, 1], x[0, 1, 0])  # t0 v1
    assert torch.equal(f.x[0, 2], x[0, 0, 1])  # t1 v0


def test_unfold_inverts_fold():
    x = torch.randn(2, 3, 5, 4, 2, 2)
    assert torch.equal(unfold_views(fold_views(x).x, 3), x)
    with pytest.raises(ConfigError, match="n_views"):
        unfold_views(torch.randn(1, 5, 2), 2)


def test_views_of_one_instant_see_each_other_but_not_the_future():
    """Folded views share a causal block: view 0 at t sees view 1 at t, nothing at t + 1."""
    from cosmos_sim.data.packing import Clip, pack_clips
    from cosmos_sim.models.diffusion import DiffusionWorldModel, WorldModelConfig
    from cosmos_sim.models.dit import Conditioning, DiTConfig

    torch.manual_seed(0)
    m = DiffusionWorldModel(
        WorldModelConfig(dit=DiTConfig(latent_channels=2, dim=24, depth=2, heads=2))
    ).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.1)
    f = fold_views(torch.randn(1, 2, 3, 2, 2, 2))  # 2 views × 3 times
    tb = pack_clips([Clip(f.x[0], 2, time=f.time, view=f.view)], 1, [[0]])
    sigma = torch.full(tb.is_context.shape, 0.5)
    out, _ = m.denoiser(tb.tokens, sigma, Conditioning.from_batch(tb))
    per = 4  # tokens per folded frame
    x2 = tb.tokens.clone()
    x2[:, per : 2 * per] += 1  # view 1 at time 0
    out2, _ = m.denoiser(x2, sigma, Conditioning.from_batch(tb))
    assert not torch.equal(out2[:, :per], out[:, :per])  # view 0 at time 0 sees it
    x3 = tb.tokens.clone()
    x3[:, 2 * per :] += 1  # everything from time 1 on
    out3, _ = m.denoiser(x3, sigma, Conditioning.from_batch(tb))
    assert torch.equal(out3[:, : 2 * per], out[:, : 2 * per])
