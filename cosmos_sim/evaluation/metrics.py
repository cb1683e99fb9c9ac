"""Agreement between a world model's and the simulator's policy rankings, and calibration.

* Pearson r and Spearman ρ between per-policy success rates.
* MMRV, mean maximum rank violation (Li et al. 2024, "Evaluating Real-World Robot
  Manipulation Policies in Simulation" / SIMPLER): for each policy, the largest true
  success gap to a policy that the candidate orders the other way; averaged.
* Bootstrap confidence intervals, resampling episodes within each policy.
* Brier score and reliability bins for predicted success probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties given their average rank."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_ranks(x), _ranks(y))


def mmrv(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean maximum rank violation of `candidate` success rates against `reference` ones."""
    r, c = np.asarray(reference, float), np.asarray(candidate, float)
    gap = np.abs(r[:, None] - r[None, :])  # (N, N) true success gaps
    violated = (c[:, None] < c[None, :]) != (r[:, None] < r[None, :])
    return float((gap * violated).max(axis=1).mean()) if len(r) else float("nan")


@dataclass
class Agreement:
    pearson: float
    spearman: float
    mmrv: float
    pearson_ci: tuple[float, float]
    spearman_ci: tuple[float, float]
    mmrv_ci: tuple[float, float]

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def agreement(
    reference_outcomes: list[np.ndarray],
    candidate_outcomes: list[np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Agreement:
    """Agreement of per-policy success rates, with percentile bootstrap intervals.

    Each list holds one array of 0/1 episode outcomes per policy; the same episode
    index is the same initial state in both, so episodes are resampled in pairs.
    """
    ref = np.array([np.mean(o) for o in reference_outcomes])
    cand = np.array([np.mean(o) for o in candidate_outcomes])
    rng = np.random.default_rng(seed)
    samples = {"pearson": [], "spearman": [], "mmrv": []}
    for _ in range(n_boot):
        r_b, c_b = [], []
        for r_o, c_o in zip(reference_outcomes, candidate_outcomes, strict=True):
            idx = rng.integers(0, len(r_o), len(r_o))
            r_b.append(np.mean(np.asarray(r_o)[idx]))
            c_b.append(np.mean(np.asarray(c_o)[idx]))
        samples["pearson"].append(pearson(r_b, c_b))
        samples["spearman"].append(spearman(r_b, c_b))
        samples["mmrv"].append(mmrv(r_b, c_b))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def ci(values: list[float]) -> tuple[float, float]:
        v = np.asarray(values)
        v = v[np.isfinite(v)]
        return (
            (float(np.percentile(v, lo)), float(np.percentile(v, hi)))
            if len(v)
            else (float("nan"),) * 2
        )

    return Agreement(
        pearson=pearson(ref, cand),
        spearman=spearman(ref, cand),
        mmrv=mmrv(ref, cand),
        pearson_ci=ci(samples["pearson"]),
        spearman_ci=ci(samples["spearman"]),
        mmrv_ci=ci(samples["mmrv"]),
    )


def brier(probabilities: np.ndarray, outcomes: np.ndarray) -> float:
    p, o = np.asarray(probabilities, float), np.asarray(outcomes, float)
    return float(np.mean((p - o) ** 2))


def reliability(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10) -> list[dict]:
    """Per probability bin: mean predicted probability, observed frequency, count."""
    p, o = np.asarray(probabilities, float), np.asarray(outcomes, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    return [
        {
            "bin": [float(edges[b]), float(edges[b + 1])],
            "predicted": float(p[which == b].mean()),
            "observed": float(o[which == b].mean()),
            "count": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]
