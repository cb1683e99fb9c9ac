"""Policy evaluation runs: every policy in a reference env (the simulator) and a candidate
env (a world model), from the same initial states, and how well the two agree.

Both envs follow the Gymnasium contract of :mod:`cosmos_sim.envs`: ``reset(seed=s)``
with the same ``s`` gives the same initial state in both; ``info["is_success"]`` says
whether the episode succeeded; a candidate may add ``info["success_probability"]``
(a world model's success head), which is scored for calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from cosmos_sim.evaluation import metrics
from cosmos_sim.evaluation.policies import Policy


@dataclass
class Rollouts:
    """What one policy did in one env over the evaluation seeds."""

    success: np.ndarray  # (N,) bool
    returns: np.ndarray  # (N,) float
    success_probability: np.ndarray | None = None  # (N,) from a world model's success head
    frames: list[dict[str, np.ndarray]] = field(
        default_factory=list
    )  # kept episodes: {cam: (T,H,W,3)}

    @property
    def success_rate(self) -> float:
        return float(self.success.mean())


def run_policy(
    env: gym.Env,
    policy: Policy,
    seeds: list[int],
    *,
    keep_frames: int = 0,
    on_episode: Callable[[], None] | None = None,
) -> Rollouts:
    """Run `policy` for one episode per seed; keep every frame of the first `keep_frames`."""
    success, returns, probs, kept = [], [], [], []
    for i, seed in enumerate(seeds):
        if hasattr(policy, "reset"):
            policy.reset(seed)
        obs, info = env.reset(seed=seed)
        total, frames = 0.0, {}
        while True:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += reward
            if i < keep_frames:
                for cam, f in info.get("frames", {}).items():
                    frames.setdefault(cam, []).append(f)
            if terminated or truncated:
                break
        success.append(bool(info.get("is_success", False)))
        returns.append(total)
        if "success_probability" in info:
            probs.append(float(info["success_probability"]))
        if i < keep_frames:
            kept.append({cam: np.concatenate(f) for cam, f in frames.items()})
        if on_episode is not None:
            on_episode()
    return Rollouts(
        success=np.array(success),
        returns=np.array(returns),
        success_probability=np.array(probs) if len(probs) == len(seeds) else None,
        frames=kept,
    )


@dataclass
class PolicyResult:
    name: str
    reference: Rollouts
    candidate: Rollouts


@dataclass
class EvaluationRun:
    task: str
    policies: list[PolicyResult]
    agreement: metrics.Agreement
    brier: float | None
    reliability: list[dict] | None
    seeds: list[int]

    def table(self) -> list[dict]:
        return [
            {
                "policy": p.name,
                "reference": p.reference.success_rate,
                "candidate": p.candidate.success_rate,
            }
            for p in self.policies
        ]

    def as_dict(self) -> dict:
        return {
            "task": self.task,
            "episodes_per_policy": len(self.seeds),
            "seeds": [self.seeds[0], self.seeds[-1]],
            "policies": self.table(),
            "agreement": self.agreement.as_dict(),
            "calibration": None
            if self.brier is None
            else {"brier": self.brier, "reliability": self.reliability},
        }


def evaluate(
    task: str,
    reference: gym.Env,
    candidate: gym.Env,
    policies: list[Policy],
    *,
    episodes: int,
    seed: int = 0,
    keep_frames: int = 1,
    n_boot: int = 1000,
    on_episode: Callable[[], None] | None = None,
) -> EvaluationRun:
    """Run each policy in both envs on seeds seed..seed+episodes-1 and compare."""
    seeds = list(range(seed, seed + episodes))
    results = []
    for policy in policies:
        ref = run_policy(reference, policy, seeds, keep_frames=keep_frames, on_episode=on_episode)
        cand = run_policy(candidate, policy, seeds, keep_frames=keep_frames, on_episode=on_episode)
        results.append(PolicyResult(policy.name, ref, cand))
    agree = metrics.agreement(
        [r.reference.success for r in results],
        [r.candidate.success for r in results],
        n_boot=n_boot,
        seed=seed,
    )
    probs = [r.candidate.success_probability for r in results]
    if all(p is not None for p in probs):
        p = np.concatenate(probs)
        outcome = np.concatenate([r.reference.success for r in results])
        brier, rel = metrics.brier(p, outcome), metrics.reliability(p, outcome)
    else:
        brier, rel = None, None
    return EvaluationRun(task, results, agree, brier, rel, seeds)
