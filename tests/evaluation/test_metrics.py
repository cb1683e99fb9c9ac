import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosmos_sim.evaluation.metrics import agreement, brier, mmrv, pearson, reliability, spearman

rates = st.lists(st.floats(0, 1), min_size=2, max_size=12)


def test_perfect_agreement():
    r = np.array([0.1, 0.4, 0.5, 0.9])
    assert pearson(r, r) == pytest.approx(1.0)
    assert spearman(r, 2 * r + 0.1) == pytest.approx(1.0)
    assert mmrv(r, r) == 0.0


def test_mmrv_counts_the_largest_violated_gap():
    real = np.array([0.9, 0.5, 0.1])
    # The candidate swaps the first two policies: each of them suffers a 0.4 violation.
    cand = np.array([0.5, 0.6, 0.0])
    assert mmrv(real, cand) == pytest.approx((0.4 + 0.4 + 0.0) / 3)
    # Fully reversed: every policy's worst violation is its largest gap.
    assert mmrv(real, real[::-1]) == pytest.approx((0.8 + 0.4 + 0.8) / 3)


def test_spearman_handles_ties():
    assert spearman([0, 0, 1, 1], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@given(rates)
def test_mmrv_is_zero_for_any_order_preserving_map(r):
    r = np.array(r)
    assert mmrv(r, 2 * r) == 0.0  # exact in floating point, so order is kept
    assert 0.0 <= mmrv(r, -r) <= 1.0


def test_bootstrap_intervals_contain_the_estimate():
    rng = np.random.default_rng(0)
    p = np.array([0.1, 0.3, 0.6, 0.9])
    ref = [rng.random(50) < q for q in p]
    cand = [rng.random(50) < q for q in p]
    a = agreement(ref, cand, n_boot=200)
    assert a.pearson_ci[0] <= a.pearson <= a.pearson_ci[1] + 1e-9
    assert a.mmrv_ci[0] <= a.mmrv + 1e-9
    assert a.pearson > 0.8


def test_brier_and_reliability():
    p = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.5])
    o = np.array([0, 0, 1, 1, 0, 1])
    assert brier(p, o) == pytest.approx(2 * 0.25 / 6)
    bins = reliability(p, o, bins=2)
    assert sum(b["count"] for b in bins) == 6
