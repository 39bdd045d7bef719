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


def _agrapa(mu_prev: float, var_prev: float, m: float) -> float:
    """The aGRAPA bet of the paper, written out: (muhat - m) / (sigma2 + (muhat - m)^2)."""
    return (mu_prev - m) / (var_prev + (mu_prev - m) ** 2)


# Running estimates for x = 1, 1, 0 on [0, 1], by hand:
#   before obs 1: muhat_0 = 1/2, sigma2_0 = 1/4
#   before obs 2: muhat_1 = (1/2 + 1)/2 = 3/4, sigma2_1 = (1/4 + (1 - 3/4)^2)/2 = 0.15625
#   before obs 3: muhat_2 = (1/2 + 2)/3 = 5/6, sigma2_2 = (1/4 + 1/16 + (1 - 5/6)^2)/3
ESTIMATES = [(0.5, 0.25), (0.75, 0.15625), (5 / 6, (0.25 + 0.0625 + (1 / 6) ** 2) / 3)]


def test_pvalues_by_hand_three_observations():
    # Threshold 0.1: the 'above' bettor's bets 0.4/0.41 = 0.976, 0.65/0.57875 = 1.123,
    # 0.7333/0.6512 = 1.126, all under the cap c/m = 0.5/0.1 = 5; factors 1 + lam (y - 0.1).
    lams = [_agrapa(mu, var, 0.1) for mu, var in ESTIMATES]
    assert lams == pytest.approx([0.97561, 1.12311, 1.12611], abs=1e-5)
    k1 = 1 + lams[0] * 0.9  # 1.878
    k2 = k1 * (1 + lams[1] * 0.9)  # 3.776
    k3 = k2 * (1 - lams[2] * 0.1)  # 3.351
    res = sequential_test([1.0, 1.0, 0.0], 0.1, lower=0.0, upper=1.0, alpha=0.1)
    assert res.n == 3
    assert res.mean == pytest.approx(2 / 3)
    assert res.p_above == pytest.approx(1 / max(k1, k2, k3), rel=1e-12)
    assert res.p_above == pytest.approx(0.2648, abs=1e-4)
    # The running mean stays above 0.1: the 'below' bettor never bets, its capital stays 1.
    assert res.p_below == 1.0
    p_above, p_below = running_pvalues([1.0, 1.0, 0.0], 0.1, lower=0.0, upper=1.0)
    np.testing.assert_allclose(p_above, [1 / k1, 1 / k2, 1 / k2], rtol=1e-12)
    np.testing.assert_allclose(p_below, [1.0, 1.0, 1.0])

    # Threshold 0.5: no bet at first (muhat_0 = m), then 0.25/0.21875 = 1.143 and
    # 0.3333/0.2245 = 1.485, both capped at c/m = 1: capital 1, 1.5, 1.5 * 0.5.
    res = sequential_test([1.0, 1.0, 0.0], 0.5, lower=0.0, upper=1.0, alpha=0.1)
    assert res.p_above == pytest.approx(1 / 1.5)
    # Mirrored (y -> 1 - y, m -> 1 - m) and stretched onto [-1, 1]: x = -1, -1, 1 against 0.8
    # swaps the sides, so its p_below is the p_above above.
    mirror = sequential_test([-1.0, -1.0, 1.0], 0.8, lower=-1.0, upper=1.0, alpha=0.1)
    assert mirror.p_below == pytest.approx(1 / k2, rel=1e-12)
    assert mirror.p_above == 1.0


def test_confidence_sequence_by_hand():
    # x = 1, 1 on [0, 1], alpha 0.1, PrPl bets: m is excluded when K+(m) >= 2/alpha = 20.
    lam1 = _prpl(0.25, 1, 0.1)  # 5.880
    lam2 = _prpl(0.15625, 2, 0.1)  # 4.177
    assert (lam1, lam2) == pytest.approx((5.8801, 4.1775), abs=1e-4)
    # t = 1: K+(m) <= 1 + lam1 = 6.88 < 20 for every m: nothing excluded.
    # t = 2: for m >= 0.5/lam2 = 0.1197 both bets are capped at 0.5/m, so
    #   K+(m) = (1 + 0.5 (1 - m)/m)^2 = 20  <=>  m = 1 / (1 + 2 (sqrt(20) - 1)) = 0.125878,
    # and K+ only grows below it (at m = 0.1: (1 + 0.5 * 0.9 / 0.1) * (1 + lam2 * 0.9) = 26.2).
    assert (1 + 0.5 * 0.9 / 0.1) * (1 + lam2 * 0.9) > 20
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
