"""Policy evaluation in the world model vs the simulator: do the rankings agree?

For each task with a shipped world model: ≥ 8 policies (scripted experts of graded skill
and random; on an instruction task also the expert told the other instruction, which
must fail in both), the same initial states in both envs, per-policy success rates, Pearson r,
Spearman ρ and MMRV with bootstrap intervals, and the calibration of the model's
success probability (Brier). The simulator against itself (a different camera) is the
baseline every figure is read against: it must give r = 1, MMRV = 0.

Targets: Pearson ≥ 0.97, Spearman ≥ 0.95, MMRV ≤ 0.03 per task.
"""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym

import cosmos_sim  # noqa: F401  (registers the envs)
from benchmarks.common import print_table, write_result
from cosmos_sim.envs.registration import sim_env_id
from cosmos_sim.evaluation.policies import ExpertPolicy, load_policy
from cosmos_sim.evaluation.policy_eval import evaluate
from cosmos_sim.evaluation.report import write_report
from cosmos_sim.models.zoo import shipped_models

POLICIES = [
    "expert@1.0",
    "expert@0.9",
    "expert@0.8",
    "expert@0.7",
    "expert@0.6",
    "expert@0.5",
    "expert@0.3",
    "random",
]
MODELS = {
    "reach": "wm-diffusion-reach",
    "push": "wm-diffusion-push",
    "reach-color": "wm-diffusion-reach-color",  # instruction-conditioned
}
EPISODES = 48
SEED = 10_000
TARGETS = {"pearson": 0.97, "spearman": 0.95, "mmrv": 0.03}


class OtherInstruction(ExpertPolicy):
    """The skill-1 expert told the *other* instruction than the episode's: it reaches the
    wrong target, which fails in the simulator — and must in an instruction world model."""

    def __init__(self, task, state_names, chunk: int) -> None:
        super().__init__(task, state_names, 1.0, chunk)
        self.name = "expert@1 (other instruction)"

    def set_instruction(self, text: str) -> None:
        others = [i.text for i in self.task.instructions if i.text != text]
        super().set_instruction(others[0])


def make_policies(sim, action_space) -> list:
    """POLICIES, plus the wrong-instruction expert for a task with several instructions."""
    policies = [
        load_policy(p, task=sim.task, state_names=sim.sim.state_names, action_space=action_space)
        for p in POLICIES
    ]
    if len(sim.task.instructions) > 1:
        policies.append(OtherInstruction(sim.task, sim.sim.state_names, action_space.shape[0]))
    return policies


def run_task(task: str, model: str, episodes: int = EPISODES) -> dict:
    env_id = sim_env_id(task)
    # One sub-env per episode: every episode of a policy in one batched forward pass.
    candidate = gym.make_vec("cosmos_sim/WorldModel-v0", num_envs=episodes, model=model)
    camera, size = candidate.camera, candidate.sim.height
    reference = gym.make(env_id, cameras=camera, size=size)
    policies = make_policies(reference.unwrapped, reference.action_space)
    sim = reference.unwrapped
    t0 = time.perf_counter()
    run = evaluate(task, reference, candidate, policies, episodes=episodes, seed=SEED)
    seconds = time.perf_counter() - t0
    write_report(
        run,
        Path("out/bench/policy_eval") / task,
        reference="simulator",
        candidate=model,
        fps=sim.sim.fps,
    )
    result = run.as_dict() | {"model": model, "seconds": seconds}
    a = run.agreement
    result["meets_targets"] = {
        "pearson": a.pearson >= TARGETS["pearson"],
        "spearman": a.spearman >= TARGETS["spearman"],
        "mmrv": a.mmrv <= TARGETS["mmrv"],
    }
    return result


def baseline(task: str, episodes: int) -> dict:
    """The simulator against itself from another camera: what perfect agreement looks like."""
    ref = gym.make(sim_env_id(task), cameras="front", size=32)
    cand = gym.make(sim_env_id(task), cameras="top", size=32)
    policies = make_policies(ref.unwrapped, ref.action_space)
    run = evaluate(
        task, ref, cand, policies, episodes=episodes, seed=SEED, keep_frames=0, n_boot=200
    )
    return run.as_dict()


def main() -> dict:
    available = set(shipped_models())
    results, rows = {"targets": TARGETS, "policies": POLICIES, "episodes_per_policy": EPISODES}, []
    for task, model in MODELS.items():
        if model not in available:
            results[task] = {"model": model, "status": "not shipped yet"}
            rows.append([task, model, "-", "-", "-", "-", "not shipped"])
            continue
        r = run_task(task, model)
        base = baseline(task, EPISODES)
        results[task] = r | {"baseline_sim_vs_sim": base["agreement"]}
        a = r["agreement"]
        rows.append(
            [
                task,
                model,
                a["pearson"],
                a["spearman"],
                a["mmrv"],
                r["calibration"]["brier"] if r["calibration"] else "-",
                "yes" if all(r["meets_targets"].values()) else "no",
            ]
        )
        rows.append(
            [
                task,
                "simulator (baseline)",
                base["agreement"]["pearson"],
                base["agreement"]["spearman"],
                base["agreement"]["mmrv"],
                "-",
                "-",
            ]
        )
    print_table(
        "policy ranking agreement with the simulator",
        ["task", "candidate", "Pearson r", "Spearman ρ", "MMRV", "Brier", "meets targets"],
        rows,
    )
    print(f"wrote {write_result('policy_eval', results)}")
    return results


if __name__ == "__main__":
    main()
