"""Anytime-valid sequential tests: hand-computed capital, error rates and coverage by simulation.

The simulations are seeded and vectorized over replicates (``running_pvalues`` takes a batch).
Expected values come from hand computation of the betting formulas of Waudby-Smith & Ramdas
(2024), from the binomial law (Clopper-Pearson via scipy) or from the simulated truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.stats import (
    ABOVE,
    BELOW,
    UNDECIDED,
    running_pvalues,
    sequential_test,
    sequential_verdicts,
)


def _prpl(var_prev: float, t: int, alpha: float) -> float:
    """The PrPl bet of the paper, written out: sqrt(2 log(2/a) / (sigma2_{t-1} t log(1+t)))."""
    return math.sqrt(2 * math.log(2 / alpha) / (var_prev * t * math.log(1 + t)))


def test_capital_by_hand_three_observations():
    # x = 1, 1, 0 on [0, 1], threshold 0.1, alpha 0.1 (log(2/alpha) = log 20).
    # Running estimates: muhat_1 = (1/2 + 1)/2 = 0.75, sigma2_1 = (1/4 + 0.25^2)/2 = 0.15625;
    # muhat_2 = (1/2 + 2)/3 = 5/6, sigma2_2 = (1/4 + 0.0625 + (1/6)^2)/3 = 0.1134259...
    lam1 = _prpl(0.25, 1, 0.1)  # 5.880...
    lam2 = _prpl(0.15625, 2, 0.1)  # 4.177...
    lam3 = _prpl((0.25 + 0.0625 + (1 / 6) ** 2) / 3, 3, 0.1)  # 3.563...
    assert lam1 > 5 > lam2 > lam3  # only the first bet hits the cap c/mu = 0.5/0.1 = 5
    # 'Above' bettor at mu = 0.1: factors 1 + 5*0.9 = 5.5, 1 + lam2*0.9, 1 - lam3*0.1.
    k1 = 5.5
    k2 = k1 * (1 + lam2 * 0.9)  # 26.18
    k3 = k2 * (1 - lam3 * 0.1)  # 16.85
    assert k3 < k2
    # 'Below' bettor: cap 0.5/0.9, factors 1 - 0.5, 1 - 0.5, 1 + 0.5/9: never above 1.
    res = sequential_test([1.0, 1.0, 0.0], 0.1, lower=0.0, upper=1.0, alpha=0.1)
    assert res.n == 3
    assert res.mean == pytest.approx(2 / 3)
    assert res.p_above == pytest.approx(1 / max(k1, k2, k3), rel=1e-12)
    assert res.p_above == pytest.approx(0.0382, abs=1e-4)
    assert res.p_below == 1.0

    p_above, p_below = running_pvalues([1.0, 1.0, 0.0], 0.1, lower=0.0, upper=1.0, alpha=0.1)
    np.testing.assert_allclose(p_above, [1 / k1, 1 / k2, 1 / k2], rtol=1e-12)
    np.testing.assert_allclose(p_below, [1.0, 1.0, 1.0])


def test_confidence_sequence_by_hand():
    # x = 1, 1 on [0, 1], alpha 0.1: m is excluded when K+(m) >= 2/alpha = 20.
    # t = 1: K+(m) <= 1 + lam1 = 6.88 < 20 for every m: nothing excluded.
    # t = 2: for m >= 0.5/lam2 = 0.1197 both bets are capped at 0.5/m, so
    #   K+(m) = (1 + 0.5 (1 - m)/m)^2 = 20  <=>  m = 1 / (1 + 2 (sqrt(20) - 1)) = 0.125878,
    # and K+ only grows below it (checked at m = 0.1: 5.5 * (1 + lam2 * 0.9) = 26.2 >= 20).
    # On the 2001-point grid (step 1/2000) the last excluded point is floor(0.125878*2000)/2000.
    # The 'below' bettor never wins on y = 1 >= m: the upper end stays at 1.
    edge = 1 / (1 + 2 * (math.sqrt(20) - 1))
    res = sequential_test([1.0, 1.0], 0.5, lower=0.0, upper=1.0, alpha=0.1)
    np.testing.assert_allclose(res.cs_low, [0.0, math.floor(edge * 2000) / 2000])
    np.testing.assert_allclose(res.cs_high, [1.0, 1.0])
    assert res.low == pytest.approx(0.1255)
    # The same on [-1, 1] (observations 1, 1 rescale to y = 1): the bounds map affinely.
    wide = sequential_test([1.0, 1.0], 0.0, lower=-1.0, upper=1.0, alpha=0.1)
    np.testing.assert_allclose(wide.cs_low, [-1.0, -1 + 2 * math.floor(edge * 2000) / 2000])


def test_empty_input():
    res = sequential_test([], -0.05, lower=-1.0, upper=1.0, alpha=0.05)
    assert res.n == 0
    assert math.isnan(res.mean)
    assert (res.p_above, res.p_below) == (1.0, 1.0)
    assert res.cs_low.size == 0 and res.cs_high.size == 0
    assert (res.low, res.high) == (-1.0, 1.0)
    assert sequential_verdicts([res], 0.05) == [UNDECIDED]
    assert sequential_verdicts([], 0.05) == []


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        ([0.0, 0.5, 1.2], {}, r"x\[2\] = 1\.2 lies outside \[lower, upper\] = \[0\.0, 1\.0\]"),
        ([0.0, -0.1], {}, r"x\[1\] = -0\.1 lies outside"),
        ([0.0, float("nan")], {}, r"x\[1\] is nan"),
        ([0.0, float("inf")], {}, r"x\[1\] is inf"),
        ([0.5], {"lower": 1.0, "upper": 1.0}, "lower must be below upper"),
        ([0.5], {"lower": 1.0, "upper": 0.0}, "lower must be below upper"),
        ([0.5], {"alpha": 0.0}, r"alpha must lie in \(0, 1\)"),
        ([0.5], {"alpha": 1.0}, r"alpha must lie in \(0, 1\)"),
        ([0.5], {"threshold": 1.5}, "threshold 1.5 lies outside"),
        ([[0.5]], {}, "must be 1-d"),
    ],
)
def test_bad_input_errors(x, kwargs, match):
    args = {"threshold": 0.5, "lower": 0.0, "upper": 1.0, "alpha": 0.05} | kwargs
    threshold = args.pop("threshold")
    with pytest.raises(ValueError, match=match):
        sequential_test(x, threshold, **args)


def test_verdicts_bad_alpha():
    res = sequential_test([0.5], 0.5, lower=0.0, upper=1.0, alpha=0.05)
    with pytest.raises(ValueError, match="alpha"):
        sequential_verdicts([res], 1.5)


def test_clear_cases_decide_both_ways():
    rng = np.random.default_rng(7)
    high = sequential_test(rng.uniform(0.6, 1.0, 200), 0.5, lower=0.0, upper=1.0, alpha=0.05)
    low = sequential_test(rng.uniform(0.0, 0.4, 200), 0.5, lower=0.0, upper=1.0, alpha=0.05)
    near = sequential_test(rng.uniform(0.3, 0.7, 20), 0.5, lower=0.0, upper=1.0, alpha=0.05)
    assert sequential_verdicts([high, low, near], 0.05) == [ABOVE, BELOW, UNDECIDED]
    assert high.low > 0.5 and low.high < 0.5
