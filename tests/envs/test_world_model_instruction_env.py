"""WorldModel-v0 driving an instruction world model: a tiny model trained 2 steps on a tiny
recorded reach-color store (tests/factories.py), against ``cosmos_sim/ReachColor-v0`` —
the episode's instruction from the reset seed or ``options``, in every info, reaching the
generated frames, per sub-env in the vector env — and the clear errors."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from factories import randomise_dit, recorded_store, tiny_tokenizer, tiny_world_model
from gymnasium.utils.env_checker import check_env

import cosmos_sim  # noqa: F401  (registers the envs)
from cosmos_sim.bridge.tasks import find_task
from cosmos_sim.errors import ConfigError, ModelError
from cosmos_sim.evaluation.policies import ExpertPolicy
from cosmos_sim.evaluation.policy_eval import run_policy

SIZE = 16
WM = "cosmos_sim/WorldModel-v0"
RED, BLUE = "reach the red target", "reach the blue target"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> SimpleNamespace:
    """An instruction model trained 2 steps on 3 recorded reach-color episodes, and a copy
    with random DiT weights (2 steps leave adaLN-Zero's gates ~1e-4: the instruction then
    moves a frame by ~1e-6, below one uint8 level)."""
    root = tmp_path_factory.mktemp("wm-instruction-env")
    tok = tiny_tokenizer(root)
    store = recorded_store(root / "reach-color.zarr", "reach-color", ["front"], SIZE, tok, 3)
    trained = tiny_world_model(store, tok, root / "instruction", "instruction")
    randomised = randomise_dit(shutil.copytree(trained, root / "randomised"), std=0.3)
    return SimpleNamespace(root=root, trained=trained, randomised=randomised)


def make(path, **kwargs):
    return gym.make(WM, model=str(path), sampler_steps=1, **kwargs)


def test_the_model_imitates_reach_color_and_its_instruction_draw(models):
    env = make(models.trained)
    sim = gym.make("cosmos_sim/ReachColor-v0", size=SIZE)
    assert env.observation_space == sim.observation_space
    assert env.action_space == sim.action_space
    drawn = set()
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        sim_obs, sim_info = sim.reset(seed=seed)
        assert info["instruction"] == sim_info["instruction"]  # the same draw from the seed
        drawn.add(info["instruction"])
        for key in ("front", "state"):
            np.testing.assert_array_equal(obs[key], sim_obs[key])  # the same real first frame
    assert drawn == {RED, BLUE}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert info["instruction"] == sim_info["instruction"] and isinstance(info["instruction"], str)
    assert info["frames"]["front"].shape == (4, SIZE, SIZE, 3) and np.isfinite(reward)
    assert 0.0 <= info["success_probability"] <= 1.0
    env.close()
    sim.close()


def test_options_force_the_instruction_as_in_the_simulator_env(models):
    env = make(models.trained)
    sim = gym.make("cosmos_sim/ReachColor-v0", size=SIZE)
    drawn = env.reset(seed=2)[1]["instruction"]
    other = BLUE if drawn == RED else RED
    obs, info = env.reset(seed=2, options={"instruction": other})
    sim_obs, sim_info = sim.reset(seed=2, options={"instruction": other})
    assert info["instruction"] == sim_info["instruction"] == other
    np.testing.assert_array_equal(obs["state"], sim_obs["state"])  # the seed's layout
    assert env.step(env.action_space.sample())[4]["instruction"] == other
    assert env.reset(seed=2)[1]["instruction"] == drawn  # forced for that episode only
    with pytest.raises(ConfigError, match="instruction.*did you mean 'reach the red target'"):
        env.reset(seed=2, options={"instruction": "reach the rde target"})
    env.close()
    sim.close()


def test_the_instruction_reaches_the_generated_frames(models):
    """Same seed, same sampler noise: only the instruction differs."""
    env = make(models.randomised)
    actions = np.random.default_rng(0).uniform(-1, 1, (3, *env.action_space.shape))

    def frames(text: str) -> np.ndarray:
        env.reset(seed=4, options={"instruction": text})
        out = [env.step(a.astype(np.float32))[4]["frames"]["front"] for a in actions]
        return np.stack(out)  # (steps, chunk, H, W, 3)

    red = frames(RED)
    np.testing.assert_array_equal(frames(RED), red)
    assert np.abs(frames(BLUE).astype(int) - red).max() >= 2
    env.close()


def test_env_checker_passes(models):
    env = make(models.trained)
    check_env(env.unwrapped)
    env.close()


def test_vector_env_conditions_each_sub_env_on_its_own_instruction(models):
    envs = gym.make_vec(WM, num_envs=2, model=str(models.randomised), sampler_steps=1)
    actions = np.random.default_rng(1).uniform(-1, 1, (2, *envs.action_space.shape))

    def run(instructions):
        obs, info = envs.reset(seed=[7, 7], options={"instruction": instructions})
        assert list(info["instruction"]) == instructions
        out = []
        for a in actions.astype(np.float32):
            obs, reward, terminated, truncated, info = envs.step(a)
            assert list(info["instruction"]) == instructions and reward.shape == (2,)
            out.append(info["frames"]["front"])
        return np.stack(out, 1)  # (B, steps, chunk, H, W, 3)

    mixed, same = run([RED, BLUE]), run([RED, RED])
    np.testing.assert_array_equal(mixed[0], same[0])  # sub-env 0 saw the same instruction
    assert not np.array_equal(mixed[1], same[1])  # sub-env 1's instruction changed its frames
    sim = gym.make("cosmos_sim/ReachColor-v0", size=SIZE)
    _, info = envs.reset(seed=[0, 1])  # drawn per sub-env from its seed, as the simulator's
    assert list(info["instruction"]) == [sim.reset(seed=s)[1]["instruction"] for s in (0, 1)]
    assert len(set(info["instruction"])) == 2  # seeds 0 and 1 draw different instructions
    with pytest.raises(ConfigError, match="instruction: one instruction per sub-env"):
        envs.reset(seed=0, options={"instruction": [RED]})
    envs.close()
    sim.close()


def test_guidance_reads_the_context_without_the_instruction(models):
    env = make(models.trained, guidance=2.0)
    env.reset(seed=0)
    rollout = env.unwrapped.vec.rollout
    assert rollout._uncond is not None and len(rollout._uncond) == len(rollout._cache)
    obs, *_ = env.step(env.action_space.sample())
    assert len(rollout._uncond) == len(rollout._cache) and np.isfinite(obs["state"]).all()
    env.close()


def test_policy_evaluation_tells_the_expert_the_instruction(models):
    env = make(models.trained)
    task = find_task("reach-color")
    policy = ExpertPolicy(task, env.unwrapped.sim.state_names, skill=1.0, chunk=4)
    run_policy(env, policy, [3])
    instruction = env.unwrapped.vec._instructions[0]
    assert policy.region == {i.text: i.success.region for i in task.instructions}[instruction]
    env.close()


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (('task = "mujoco:reach-color"', 'task = "mujoco:reach"'), "task: an instruction world"),
        (("instruction = true", "instruction = false"), "instruction: an instruction model"),
    ],
)
def test_a_mismatched_instruction_model_is_a_clear_error(models, edit, field):
    path = models.root / f"edited-{edit[1].split()[0]}"
    shutil.copytree(models.trained, path)
    config = path / "config.toml"
    assert edit[0] in config.read_text()
    config.write_text(config.read_text().replace(*edit))
    with pytest.raises(ModelError, match=f"config.toml: {field}"):
        make(path)


def test_the_success_head_reads_the_instruction_and_stage_2_fits_it(models, tmp_path):
    """The success head takes the episode's instruction (the same state can succeed under
    one and fail under the other), and stage 2 (`train state-heads`) fits it with the
    store's instructions plus every state relabelled under the other instruction by its
    rule (the experts never end at the wrong target): a recorded successful final state
    scores > 0.5 under its own instruction and < 0.5 under the other."""
    import torch

    from cosmos_sim.data.store import EpisodeStore
    from cosmos_sim.models import zoo
    from cosmos_sim.training.state_heads import refine_exported

    model_dir = shutil.copytree(models.trained, tmp_path / "wm")
    store_path = models.root / "reach-color.zarr"
    refine_exported(model_dir, [store_path], steps=300, unroll=2)
    loaded = zoo.load_model(model_dir)
    model, stats = loaded.module, loaded.stats
    store = EpisodeStore.open(store_path)
    reached = [e for e in range(len(store)) if store.read_episode(e).reward[-1] > 0.5]
    assert reached, "the tiny store has a successful expert episode"
    for e in reached:
        final = store.read_episode(e).state[-1]
        state = torch.from_numpy(
            ((final - stats["state_mean"]) / np.asarray(stats["state_std"])).astype(np.float32)
        )[None]
        own = store.instructions[e]
        other = BLUE if own == RED else RED
        p_own, _ = model.read_state(state, model.hash_instructions([own]))
        p_other, _ = model.read_state(state, model.hash_instructions([other]))
        assert p_own.item() > 0.5 > p_other.item()
    with pytest.raises(ConfigError, match="instruction"):
        model.read_state(state)  # an instruction model's success head needs it
