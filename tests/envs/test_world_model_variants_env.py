"""WorldModel-v0 driving camera-control and multi-view world models: tiny models trained 2
steps on tiny real stores (tests/factories.py), then the env against the simulator env it
imitates — spaces, exact camera control, rays, reproducibility — and the clear errors."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from factories import drive_beside_sim, tiny_world_model, variant_stores
from gymnasium.utils.env_checker import check_env

import cosmos_sim  # noqa: F401  (registers the envs)
from cosmos_sim.bridge.camera_motion import ORBIT_STATE_NAMES
from cosmos_sim.bridge.experts import ScriptedPolicy
from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.conditioning.rays import clip_plucker_rays, scale_intrinsics
from cosmos_sim.envs.world_model_camera import CameraNavControl
from cosmos_sim.errors import CameraError, ConfigError, ModelError

SIZE = 32
WM = "cosmos_sim/WorldModel-v0"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> SimpleNamespace:
    """A camera-control model (cameranav, orbit), a multi-view model (push, front + side) and
    an instruction model on a single-instruction task (cameranav: not drivable), each trained
    2 steps and exported."""
    root = tmp_path_factory.mktemp("wm-variants-env")
    data = variant_stores(root, SIZE)
    return SimpleNamespace(
        root=root,
        camera=tiny_world_model(data.nav, data.tok, root / "camera", "camera"),
        multiview=tiny_world_model(data.push, data.tok, root / "multiview", "multiview"),
        instruction=tiny_world_model(data.nav, data.tok, root / "instruction", "instruction"),
    )


def make(path, **kwargs):
    return gym.make(WM, model=str(path), sampler_steps=1, **kwargs)


def _orbit(env, obs) -> np.ndarray:
    """The ``orbit.*`` entries of the observed state."""
    names = env.unwrapped.sim.state_names
    return obs["state"][[names.index(n) for n in ORBIT_STATE_NAMES]]


@pytest.mark.parametrize("arm", ["expert", "policy"])
def test_camera_model_has_camera_nav_spaces_and_exact_camera_control(models, arm):
    env = make(models.camera, arm=arm)
    nav = gym.make("cosmos_sim/CameraNav-v0", size=SIZE, arm=arm)
    assert env.action_space == nav.action_space
    assert env.action_space.shape == (4, 3 if arm == "expert" else 5)
    assert env.observation_space == nav.observation_space
    check_env(env.unwrapped)
    obs, info = env.reset(seed=3)
    nav_obs, nav_info = nav.reset(seed=3)
    np.testing.assert_array_equal(obs["orbit"], nav_obs["orbit"])  # the same real first frame
    np.testing.assert_array_equal(obs["state"], nav_obs["state"])
    assert info["goal_distance"] == pytest.approx(nav_info["goal_distance"], abs=1e-6)
    actions = np.random.default_rng(0).uniform(-1, 1, (5, *env.action_space.shape))
    for a in actions.astype(np.float32):
        obs, reward, terminated, truncated, info = env.step(a)
        nav_obs, *_ = nav.step(a)
        # the camera moves only by its actions: the commanded orbit pose, bit for bit
        np.testing.assert_array_equal(_orbit(env, obs), _orbit(nav, nav_obs))
        assert info["frames"]["orbit"].shape == (4, SIZE, SIZE, 3)
        assert 0.0 <= info["success_probability"] <= 1.0 and isinstance(info["is_success"], bool)
        assert info["next_action"].shape == env.action_space.shape
        assert 0.0 <= info["goal_distance"] <= np.pi and np.isfinite(reward)
        assert not terminated  # cameranav judges success at the end
    assert not np.array_equal(_orbit(env, obs), _orbit(env, env.reset(seed=3)[0]))  # it moved
    env.close()
    nav.close()


def test_camera_rays_are_the_commanded_cameras_relative_to_the_window(models):
    """Every step re-prefills the context window with rays relative to its first frame, from
    the poses the simulator's camera takes under the same camera actions."""
    env = make(models.camera, arm="policy")
    vec = env.unwrapped.vec
    seen, prefill = [], vec.wm.model.prefill

    def recording_prefill(*args, **kwargs):  # the rays the model is prefilled with
        seen.append(kwargs["rays"].clone())
        return prefill(*args, **kwargs)

    vec.wm.model.prefill = recording_prefill
    nav = gym.make("cosmos_sim/CameraNav-v0", size=SIZE, arm="policy").unwrapped
    env.reset(seed=5)
    nav.reset(seed=5)
    actions = np.random.default_rng(1).uniform(-1, 1, (5, 4, 5)).astype(np.float32)
    poses, _ = drive_beside_sim(env, nav, actions)
    context = vec.wm.context_frames
    assert len(seen) == 1 + len(actions) and seen[-1].shape == (1, context, 6, 4, 4)
    k = scale_intrinsics(torch.from_numpy(nav.sim.intrinsics("orbit")), (SIZE, SIZE), 4, 4)
    for step, rays in enumerate(seen):
        window = np.stack(poses[max(0, step + 1 - context) : step + 1])  # the window's cameras
        expected = clip_plucker_rays(k.expand(len(window), 3, 3), window, 4, 4)
        torch.testing.assert_close(rays[0], expected, atol=1e-4, rtol=1e-4)
        assert rays[0, 0, 3:].abs().max() < 1e-6  # the window's first camera is the reference
    env.close()
    nav.close()


def test_arm_expert_plans_from_the_state_as_the_simulators_arm_expert():
    sim = MujocoSim("cameranav", size=SIZE, depth=False, segmentation=False)
    control = CameraNavControl(sim, chunk=4, num_envs=1)
    frame = sim.reset(seed=2)
    control.reset([sim.kind.orbit], [2])
    chunk = control.step(np.zeros((1, 4, 3), np.float32), frame.state[None])
    assert chunk.shape == (1, 4, 5) and np.abs(chunk[0, :, 3:]).max() > 0.1
    sim_expert = ScriptedPolicy(sim.kind.arm, sim.kind.arm_action, skill=1.0)
    sim_expert.reset(2)
    np.testing.assert_allclose(chunk[0, 0, 3:], sim_expert(sim.policy_obs()), atol=1e-5)
    sim.close()


def test_multiview_model_generates_every_view_and_observes_any(models):
    env = make(models.multiview)
    sim = gym.make("cosmos_sim/Push-v0", size=SIZE, cameras=["front", "side"])
    assert env.observation_space == sim.observation_space
    assert env.action_space == sim.action_space
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=4)
    sim_obs, _ = sim.reset(seed=4)
    for key in ("front", "side", "state"):
        np.testing.assert_array_equal(obs[key], sim_obs[key])
    obs, *_, info = env.step(env.action_space.sample())
    assert set(info["frames"]) == {"front", "side"}
    assert not np.array_equal(obs["front"], obs["side"])
    side = make(models.multiview, cameras="side")
    assert set(side.observation_space) == {"side", "state"}
    assert side.unwrapped.vec.generated == ["front", "side"]  # both views still generated
    obs, _ = side.reset(seed=4)
    np.testing.assert_array_equal(obs["side"], sim_obs["side"])
    obs, *_, info = side.step(np.zeros(side.action_space.shape, np.float32))
    assert set(obs) == {"side", "state"} and set(info["frames"]) == {"side"}
    for e in (env, sim, side):
        e.close()


@pytest.mark.parametrize("variant", ["camera", "multiview"])
def test_vector_env_steps_and_reset_seed_is_reproducible(models, variant):
    envs = gym.make_vec(WM, num_envs=3, model=str(getattr(models, variant)), sampler_steps=1)
    actions = np.random.default_rng(2).uniform(-1, 1, (2, *envs.action_space.shape))
    actions = actions.astype(np.float32)

    def run(seeds):
        obs, _ = envs.reset(seed=seeds)
        out = [obs]
        for a in actions:
            obs, reward, terminated, truncated, info = envs.step(a)
            assert reward.shape == terminated.shape == truncated.shape == (3,)
            out.append(obs)
        return {k: np.stack([o[k] for o in out]) for k in out[0]}

    first, again = run([1, 2, 3]), run([1, 2, 3])
    for key, value in first.items():
        assert value.shape[:2] == (3, 3)
        np.testing.assert_array_equal(value, again[key])
    assert not np.array_equal(first[envs.camera][0, 0], first[envs.camera][0, 1])  # sub-envs
    envs.close()


@pytest.fixture(scope="module")
def undrivable(models) -> str:
    """The camera model relabelled as a variant no env drives."""
    path = models.root / "dance"
    shutil.copytree(models.camera, path)
    config = path / "config.toml"
    config.write_text(config.read_text().replace('variant = "camera"', 'variant = "dance"'))
    return str(path)


@pytest.mark.parametrize(
    ("model", "kwargs", "error", "message"),
    [
        ("instruction", {}, ModelError, "task: an instruction world model is driven on a task"),
        ("undrivable", {}, ModelError, "variant: WorldModel-v0 cannot drive this world-model"),
        ("camera", {"cameras": "front"}, CameraError, "one camera at a time"),
        ("camera", {"task": "push"}, ModelError, "trained on another task"),
        ("camera", {"arm": "scripted"}, ConfigError, "unknown arm mode"),
        ("camera", {"chunk": 8}, ModelError, "another chunk"),
        ("multiview", {"cameras": "front,top"}, CameraError, "does not generate these cameras"),
        ("multiview", {"arm": "policy"}, ConfigError, "arm= is for camera-control"),
    ],
)
def test_what_the_env_cannot_drive_is_a_clear_error(
    models, undrivable, model, kwargs, error, message
):
    path = undrivable if model == "undrivable" else getattr(models, model)
    with pytest.raises(error, match=message):
        gym.make(WM, model=str(path), **kwargs)
