"""TorchScript policies: state-only and pixel (``camera`` attribute) modules, real and tiny."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import cosmos_sim  # noqa: F401
from cosmos_sim.errors import CameraError, ConfigError, CosmosSimError
from cosmos_sim.evaluation.policies import load_policy
from cosmos_sim.evaluation.policy_eval import evaluate, run_policy


class StateGain(torch.nn.Module):
    """(S,) state → (4, 2): ee → target, proportional, held for the chunk."""

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        step = (state[6:8] - state[4:6]) * 5.0
        return step.clamp(-1.0, 1.0).expand(4, 2)


class MeanColour(torch.nn.Module):
    """(3, H, W) image → (4, 2) from the image's mean red and green: tells what it saw."""

    def __init__(self, camera: str = "front") -> None:
        super().__init__()
        self.camera = camera

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        c, h, w = image.shape  # fails unless (3, H, W): no batch axis
        rg = image[:2].mean((1, 2))  # (2,) in [0, 1]
        return rg.expand(4, 2).contiguous()


class ImageAndState(torch.nn.Module):
    """(image, state) → (4, 2): the image's mean plus the ee's x, to check both arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.camera = "front"

    def forward(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return (image.mean() + state[4]).clamp(-1.0, 1.0).expand(4, 2).contiguous()


class WrongShape(MeanColour):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image[0, :3, :3]


class NaNOut(MeanColour):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.full((4, 2), float("nan"))


def save(module: torch.nn.Module, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.pt"
    torch.jit.script(module).save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def env():
    env = gym.make("cosmos_sim/Reach-v0", cameras="front", size=32)
    yield env
    env.close()


def load(spec: str, env):
    sim = env.unwrapped
    return load_policy(
        spec, task=sim.task, state_names=sim.sim.state_names, action_space=env.action_space
    )


def test_state_module_reads_the_state_as_before(tmp_path, env):
    policy = load(save(StateGain(), tmp_path, "gain"), env)
    state = np.zeros(8, np.float32)
    state[6:8] = [0.01, -0.02]
    action = policy({"state": state, "front": np.zeros((32, 32, 3), np.uint8)})
    assert action.shape == (4, 2) and action.dtype == np.float32
    np.testing.assert_allclose(action[0], [0.05, -0.1], atol=1e-6)
    rollouts = run_policy(env, policy, [0, 1, 2, 3])
    assert rollouts.success.mean() >= 0.75  # a proportional controller reaches


def test_pixel_module_gets_the_camera_image_channels_first_in_0_1(tmp_path, env):
    policy = load(save(MeanColour(), tmp_path, "colour"), env)
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 255  # red everywhere
    image[:16, :, 1] = 51  # green 0.2 in the top half → mean 0.1
    action = policy({"front": image, "state": np.zeros(8, np.float32)})
    np.testing.assert_allclose(action[0], [1.0, 0.1], atol=1e-6)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(
        policy(obs)[0], obs["front"][..., :2].reshape(-1, 2).mean(0) / 255.0, atol=1e-5
    )


def test_pixel_module_may_read_the_state_too(tmp_path, env):
    policy = load(save(ImageAndState(), tmp_path, "both"), env)
    state = np.zeros(8, np.float32)
    state[4] = -0.5
    image = np.full((32, 32, 3), 51, np.uint8)  # 0.2
    np.testing.assert_allclose(policy({"front": image, "state": state}), -0.3, atol=1e-6)


def test_a_camera_missing_from_the_observation_is_one_line(tmp_path, env):
    policy = load(save(MeanColour("top"), tmp_path, "top"), env)
    with pytest.raises(CameraError) as e:
        policy({"front": np.zeros((32, 32, 3), np.uint8), "state": np.zeros(8, np.float32)})
    text = str(e.value)
    assert "\n" not in text
    assert "camera" in text and "top" in text and "['front']" in text


@pytest.mark.parametrize(
    ("module", "words"),
    [(WrongShape(), "wrong shape"), (NaNOut(), "non-finite")],
)
def test_wrong_shape_or_nan_output_is_one_line(tmp_path, env, module, words):
    policy = load(save(module, tmp_path, type(module).__name__), env)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ConfigError) as e:
        policy(obs)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_forward_that_fails_on_the_image_is_one_line(tmp_path, env):
    class Linear(MeanColour):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(64 * 64 * 3, 8)  # expects 64×64, the env gives 32×32

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.fc(image.flatten()).reshape(4, 2)

    policy = load(save(Linear(), tmp_path, "linear"), env)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ConfigError) as e:
        policy(obs)
    text = str(e.value)
    assert "\n" not in text and "forward failed" in text and "(3, 32, 32)" in text


def test_a_non_string_camera_attribute_is_refused(tmp_path, env):
    class BadCamera(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.camera = 3

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return image

    with pytest.raises(CosmosSimError, match="camera name"):
        load(save(BadCamera(), tmp_path, "bad"), env)


class TinyCNN(torch.nn.Module):
    """A pixel policy as a user would write one: conv → linear → tanh, batch-of-one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.camera = "front"
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 8)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(image[None] - 0.5))  # (1, 4, 8, 8)
        return torch.tanh(self.fc(x.flatten(1))).reshape(4, 2)


def test_a_cnn_pixel_policy_runs_through_evaluate(tmp_path, env):
    torch.manual_seed(0)
    policy = load(save(TinyCNN(), tmp_path, "cnn"), env)
    run = evaluate("reach", env, env, [policy], episodes=2, n_boot=10)
    assert run.policies[0].name == "cnn"
    a, b = run.policies[0].reference, run.policies[0].candidate
    np.testing.assert_array_equal(a.returns, b.returns)  # same seeds, deterministic policy
