"""Evaluation runs end to end on the simulator (reference and candidate alike)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import cosmos_sim  # noqa: F401
from cosmos_sim.errors import ConfigError
from cosmos_sim.evaluation.policies import load_policy, privileged_from_state
from cosmos_sim.evaluation.policy_eval import evaluate, run_policy
from cosmos_sim.evaluation.report import write_report
from cosmos_sim.viz.rerun_log import entity_paths


def make(cameras="front"):
    return gym.make("cosmos_sim/Reach-v0", cameras=cameras, size=32)


def test_privileged_points_from_state():
    names = ("shoulder.pos", "ee.x", "ee.y", "target.x", "target.y")
    points = privileged_from_state(np.array([0.3, 0.1, 0.2, -0.1, 0.25]), names)
    np.testing.assert_allclose(points["ee"], [0.1, 0.2])
    np.testing.assert_allclose(points["target"], [-0.1, 0.25])
    assert "shoulder" not in points


def test_skill_grades_success_in_the_chunked_env():
    env = make()
    sim = env.unwrapped
    rates = {}
    for spec in ("expert@1.0", "random"):
        policy = load_policy(
            spec, task=sim.task, state_names=sim.sim.state_names, action_space=env.action_space
        )
        rates[spec] = (
            evaluate("reach", env, env, [policy], episodes=6, n_boot=10)
            .policies[0]
            .reference.success_rate
        )
    assert rates["expert@1.0"] >= 0.8 > rates["random"]


def test_simulator_agrees_with_itself(tmp_path):
    """Same seeds, same dynamics, a different camera: perfect agreement, and every artefact."""
    reference, candidate = make("front"), make("top")
    sim = reference.unwrapped
    policies = [
        load_policy(
            s, task=sim.task, state_names=sim.sim.state_names, action_space=reference.action_space
        )
        for s in ("expert@1.0", "expert@0.6", "random")
    ]
    run = evaluate("reach", reference, candidate, policies, episodes=4, n_boot=50)
    for p in run.policies:
        np.testing.assert_array_equal(p.reference.success, p.candidate.success)
    assert run.agreement.mmrv == 0.0
    paths = write_report(run, tmp_path, reference="simulator", candidate="simulator", fps=10)
    report = json.loads(paths["json"].read_text())
    assert [p["policy"] for p in report["policies"]] == ["expert@1", "expert@0.6", "random"]
    assert paths["scatter"].stat().st_size > 1000
    assert "MMRV" in paths["markdown"].read_text()
    entities = entity_paths(paths["rrd"])
    assert "/evaluation/expert_1/episode_0/reference/front" in entities
    assert "/evaluation/expert_1/episode_0/candidate/top" in entities


def test_expert_follows_each_episodes_instruction():
    """On a several-instruction task the expert goes where the reset's instruction says."""
    env = gym.make("cosmos_sim/ReachColor-v0", cameras="front", size=32)
    sim = env.unwrapped
    expert = load_policy(
        "expert@1.0", task=sim.task, state_names=sim.sim.state_names, action_space=env.action_space
    )
    seeds = list(range(1000, 1006))
    said = {env.reset(seed=s)[1]["instruction"] for s in seeds}
    assert said == set(sim.task.instruction_texts)  # both instructions among these seeds
    assert run_policy(env, expert, seeds).success.all()
    with pytest.raises(ConfigError, match="instruction"):
        expert.set_instruction("reach the green target")
