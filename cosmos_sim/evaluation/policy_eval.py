"""Policy evaluation runs: every policy in a reference env (the simulator) and a candidate
env (a world model), from the same initial states, and how well the two agree.

Either env may be a vector env with one sub-env per episode (the world model's natively
batched env runs every episode of a policy in one batch). Both follow the Gymnasium contract of :mod:`cosmos_sim.envs`: ``reset(seed=s)``
with the same ``s`` gives the same initial state in both; ``info["is_success"]`` says
whether the episode succeeded; a candidate may add ``info["success_probability"]``
(a world model's success head), which is scored for calibration.
"""

from __future__ import annotations

import copy
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


def tell_instruction(policy: Policy, text: str | None) -> None:
    """Give the episode's instruction (from the env's reset info) to a policy that takes one."""
    if text is not None and hasattr(policy, "set_instruction"):
        policy.set_instruction(str(text))


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
        tell_instruction(policy, info.get("instruction"))
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


def run_policy_vec(
    env: gym.vector.VectorEnv,
    policy: Policy,
    seeds: list[int],
    *,
    keep_frames: int = 0,
    on_episode: Callable[[], None] | None = None,
) -> Rollouts:
    """`run_policy` for a vector env with one sub-env per seed: every episode in one batch.

    Each sub-env gets its own copy of the policy (policies may keep per-episode state).
    """
    if env.num_envs != len(seeds):
        raise ValueError(f"need one sub-env per seed: {env.num_envs=} {len(seeds)=}")
    policies = [copy.deepcopy(policy) for _ in seeds]
    for p, seed in zip(policies, seeds, strict=True):
        if hasattr(p, "reset"):
            p.reset(seed)
    obs, info = env.reset(seed=list(seeds))
    if "instruction" in info:
        for p, text in zip(policies, info["instruction"], strict=True):
            tell_instruction(p, text)
    n = len(seeds)
    done = np.zeros(n, bool)
    success, returns, probs = np.zeros(n, bool), np.zeros(n), np.full(n, np.nan)
    frames: list[dict[str, list]] = [{} for _ in range(min(keep_frames, n))]
    while not done.all():
        actions = np.stack([policies[i]({k: v[i] for k, v in obs.items()}) for i in range(n)])
        obs, reward, terminated, truncated, info = env.step(actions)
        live = ~done
        returns += np.where(live, reward, 0.0)
        for i, kept in enumerate(frames):
            if live[i]:
                for cam, f in info.get("frames", {}).items():
                    kept.setdefault(cam, []).append(f[i])
        ended = (terminated | truncated) & live
        success[ended] = np.asarray(info.get("is_success", np.zeros(n, bool)))[ended]
        if "success_probability" in info:
            probs[ended] = np.asarray(info["success_probability"])[ended]
        done |= ended
        for _ in range(int(ended.sum())):
            if on_episode is not None:
                on_episode()
    return Rollouts(
        success=success,
        returns=returns,
        success_probability=None if np.isnan(probs).any() else probs,
        frames=[{cam: np.concatenate(f) for cam, f in kept.items()} for kept in frames],
    )


def rollouts(env, policy: Policy, seeds: list[int], **kwargs) -> Rollouts:
    """One episode per seed, batched when `env` is a vector env."""
    if isinstance(env, gym.vector.VectorEnv):
        return run_policy_vec(env, policy, seeds, **kwargs)
    return run_policy(env, policy, seeds, **kwargs)


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
        ref = rollouts(reference, policy, seeds, keep_frames=keep_frames, on_episode=on_episode)
        cand = rollouts(candidate, policy, seeds, keep_frames=keep_frames, on_episode=on_episode)
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
