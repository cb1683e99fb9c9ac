"""CameraNav-v0: camera-only action chunks, the internal arm, the camera expert, errors.

The Gymnasium contract itself (check_env, one episode) is covered by test_sim_env.py,
which is parametrised over every registered simulator env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import cosmos_sim  # noqa: F401  (registers the envs)
from cosmos_sim.conditioning.cameras import orbit_pose
from cosmos_sim.envs.camera_nav_env import CameraNavExpert
from cosmos_sim.errors import ConfigError

ENV_ID = "cosmos_sim/CameraNav-v0"


def test_spaces_and_action_layouts():
    env = gym.make(ENV_ID, size=16)
    assert env.action_space.shape == (4, 3) and env.action_space.dtype == np.float32
    assert set(env.observation_space) == {"orbit", "state"}
    assert env.observation_space["state"].shape == (17,)
    assert env.spec.max_episode_steps == 16
    both = gym.make(ENV_ID, size=16, arm="policy")
    assert both.action_space.shape == (4, 5)
    env.close()
    both.close()


def test_camera_actions_move_the_view_and_the_arm_moves_by_itself():
    env = gym.make(ENV_ID, size=32).unwrapped
    obs, _ = env.reset(seed=2)
    state0 = dict(zip(env.sim.state_names, obs["state"], strict=True))
    still = np.zeros((4, 3), np.float32)
    obs1, *_ = env.step(still)
    state1 = dict(zip(env.sim.state_names, obs1["state"], strict=True))
    assert state1["orbit.azimuth"] == state0["orbit.azimuth"]
    assert abs(state1["ee.x"] - state0["ee.x"]) + abs(state1["ee.y"] - state0["ee.y"]) > 0.01
    turn = np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (4, 1))
    obs2, _, _, _, info = env.step(turn)
    state2 = dict(zip(env.sim.state_names, obs2["state"], strict=True))
    assert (state2["orbit.azimuth"] - state1["orbit.azimuth"]) % 360 == pytest.approx(32.0)
    pose = orbit_pose(
        state2["orbit.azimuth"],
        state2["orbit.elevation"],
        state2["orbit.distance"],
        env.sim.kind.motion.pivot,
    )
    np.testing.assert_allclose(env.sim.world_from_camera("orbit"), pose, atol=1e-4)
    assert info["frames"]["orbit"].shape == (4, 32, 32, 3)
    assert not np.array_equal(obs2["orbit"], obs1["orbit"])
    env.close()


def test_reset_with_a_seed_is_reproducible():
    env = gym.make(ENV_ID, size=16)
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 4, 3)).astype(np.float32)

    def run(seed):
        obs, _ = env.reset(seed=seed)
        out = [obs["orbit"]]
        for a in actions:
            obs, *_ = env.step(a)
            out.append(obs["orbit"])
        return np.stack(out), obs["state"]

    (frames, state), (again, state_again) = run(5), run(5)
    np.testing.assert_array_equal(frames, again)
    np.testing.assert_array_equal(state, state_again)
    assert not np.array_equal(run(6)[0], frames)
    env.close()


def test_camera_expert_succeeds_and_random_camera_does_not():
    env = gym.make(ENV_ID, size=16)

    def success(policy, seeds):
        out = []
        for seed in seeds:
            policy.reset(seed)
            obs, info = env.reset(seed=seed)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy(obs))
                done = terminated or truncated
            out.append(info["is_success"])
        return out

    assert all(success(CameraNavExpert.for_env(env, 1.0), range(3)))
    assert sum(success(CameraNavExpert.for_env(env, 0.0), range(3))) <= 1
    env.close()


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="arm"):
        gym.make(ENV_ID, size=16, arm="scripted")
    with pytest.raises(ConfigError, match="camera-nav task"):
        gym.make(ENV_ID, task="push", size=16)
    env = gym.make("cosmos_sim/Push-v0", size=16)
    with pytest.raises(ConfigError, match="orbit pose"):
        CameraNavExpert(env.unwrapped.task, env.unwrapped.sim.state_names, 1.0, 4)
    env.close()


def test_example_runs():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "cameranav_env.py"
    spec = importlib.util.spec_from_file_location("cameranav_env_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rates = module.main(["--episodes", "2", "--size", "16", "--skills", "1.0,0.0"])
    assert rates[1.0] == 1.0 and rates[0.0] < 1.0
