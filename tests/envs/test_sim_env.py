"""The simulator Gymnasium envs: contract, determinism, wrappers, clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import cosmos_sim  # noqa: F401  (registers the envs)
from cosmos_sim.envs.wrappers import ChunkedAction
from cosmos_sim.errors import ActionError

SIM_IDS = [
    env_id
    for env_id in gym.registry
    if env_id.startswith("cosmos_sim/") and "WorldModel" not in env_id
]


def test_envs_are_registered():
    assert {"cosmos_sim/Reach-v0", "cosmos_sim/Push-v0"} <= set(SIM_IDS)


@pytest.mark.parametrize("env_id", SIM_IDS)
def test_check_env_passes(env_id):
    env = gym.make(env_id, size=32)
    check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", SIM_IDS)
def test_spaces_and_one_episode(env_id):
    env = gym.make(env_id, cameras="front,top", size=32)
    obs, info = env.reset(seed=3)
    assert set(obs) == {"front", "top", "state"}
    assert obs["front"].shape == (32, 32, 3) and obs["front"].dtype == np.uint8
    chunk, a = env.action_space.shape
    assert chunk == 4
    steps = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert info["frames"]["top"].shape == (4, 32, 32, 3)
        if terminated or truncated:
            break
    assert truncated and steps == env.spec.max_episode_steps
    assert isinstance(info["is_success"], bool)


def test_reset_with_a_seed_is_reproducible():
    env = gym.make("cosmos_sim/Push-v0", size=32)
    actions = (
        np.random.default_rng(0).uniform(-1, 1, (3, *env.action_space.shape)).astype(np.float32)
    )

    def run(seed):
        obs, _ = env.reset(seed=seed)
        out = [obs["front"]]
        for a in actions:
            obs, *_ = env.step(a)
            out.append(obs["front"])
        return np.stack(out)

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.zeros((3, 2), np.float32), "wrong action chunk shape"),
        (np.full((4, 2), np.nan, np.float32), "non-finite action"),
        (np.full((4, 2), 1.5, np.float32), "outside the action space"),
    ],
)
def test_bad_actions_are_refused(action, message):
    env = gym.make("cosmos_sim/Reach-v0", size=32, disable_env_checker=True)
    env.reset(seed=0)
    with pytest.raises(ActionError, match=message):
        env.step(action)


def test_step_after_the_end_needs_a_reset():
    env = gym.make("cosmos_sim/Reach-v0", size=32, max_episode_steps=None).unwrapped
    env.reset(seed=0)
    done = False
    while not done:
        *_, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape, np.float32))
        done = terminated or truncated
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(env.action_space.shape, np.float32))


def test_gymnasium_wrappers_work(tmp_path):
    env = gym.make("cosmos_sim/Reach-v0", size=32, render_mode="rgb_array")
    env = gym.wrappers.RecordVideo(
        env, str(tmp_path), episode_trigger=lambda e: True, disable_logger=True
    )
    env = gym.wrappers.FlattenObservation(ChunkedAction(env))
    assert env.action_space.shape == (2,)
    obs, _ = env.reset(seed=0)
    assert obs.ndim == 1
    for _ in range(10):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated
    env.close()
    assert list(tmp_path.glob("*.mp4"))
