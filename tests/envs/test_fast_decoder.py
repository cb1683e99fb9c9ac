"""The shipped fast decoder drives a shipped world model: the same latents, the same scene."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import cosmos_sim  # noqa: F401
from cosmos_sim.errors import ModelError
from cosmos_sim.models import zoo

FAST = "tokenizer-cv-4x8x8-pca-fast"
pytestmark = pytest.mark.skipif(
    FAST not in zoo.shipped_models() or "wm-diffusion-push" not in zoo.shipped_models(),
    reason="needs the shipped models",
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def test_fast_decoder_draws_the_full_decoders_frames_closely():
    full = gym.make("cosmos_sim/WorldModel-v0", model="wm-diffusion-push", precision="fp32")
    fast = gym.make(
        "cosmos_sim/WorldModel-v0", model="wm-diffusion-push", precision="fp32", decoder=FAST
    )
    assert fast.observation_space == full.observation_space
    obs = [env.reset(seed=3)[0] for env in (full, fast)]
    np.testing.assert_array_equal(obs[0]["state"], obs[1]["state"])  # decoding changes no state
    assert psnr(obs[0]["front"], obs[1]["front"]) > 25
    action = np.tile([0.5, -0.3], (full.action_space.shape[0], 1)).astype(np.float32)
    steps = [env.step(action) for env in (full, fast)]
    np.testing.assert_allclose(steps[0][0]["state"], steps[1][0]["state"], atol=1e-5)
    frames = [s[4]["frames"]["front"] for s in steps]
    assert frames[0].shape == frames[1].shape == (4, 64, 64, 3)
    assert psnr(frames[0], frames[1]) > 25  # the decoders differ by ~0.5 dB against the truth


def test_a_decoder_of_other_latents_is_refused():
    with pytest.raises(ModelError, match="not for this world model's latents"):
        gym.make(
            "cosmos_sim/WorldModel-v0", model="wm-diffusion-push", decoder="wm-diffusion-reach"
        )
