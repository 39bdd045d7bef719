"""Calibration metrics against hand computations and a scipy logistic-regression fit."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize

from assay.scoring.metrics.absent import Absent
from assay.scoring.metrics.calibration import (
    calibration_stats,
    ece_one_bin,
    expected_calibration_error,
    fit_platt,
    selective_stats,
)


def test_one_bin_ece_is_gap_between_mean_confidence_and_accuracy():
    # mean prob 0.65, accuracy 0.5.
    assert ece_one_bin([0.9, 0.8, 0.6, 0.3], [1, 0, 1, 0]) == pytest.approx(0.15)


def test_equal_mass_ece_by_hand():
    probs, correct = [0.1, 0.4, 0.6, 0.9], [0, 1, 1, 1]
    # Two bins split at (0.4 + 0.6) / 2: {0.1, 0.4} mean 0.25 vs acc 0.5; {0.6, 0.9} 0.75 vs 1.
    assert expected_calibration_error(probs, correct, num_bins=2) == pytest.approx(0.25)
    # More bins than points: one point a bin, |p - y| averaged: (.1 + .6 + .4 + .1) / 4.
    assert expected_calibration_error(probs, correct, num_bins=10) == pytest.approx(0.3)
    # Input order does not matter.
    assert expected_calibration_error(probs[::-1], correct[::-1], 2) == pytest.approx(0.25)


def test_equal_mass_ece_with_tied_probabilities_uses_one_bin():
    # All edges collapse to 0.5: every point lands in the first bin, gap |0.5 - 0.75|.
    assert expected_calibration_error([0.5] * 4, [1, 1, 1, 0], 2) == pytest.approx(0.25)


def test_selective_stats_by_hand():
    probs = np.linspace(0.95, 0.5, 10)  # already in decreasing order
    correct = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]
    running = [1, 1, 2 / 3, 3 / 4, 3 / 5, 3 / 6, 4 / 7, 4 / 8, 4 / 9, 4 / 10]
    area, acc10 = selective_stats(probs, correct)
    assert area == pytest.approx(sum(running) / 10)
    assert acc10 == pytest.approx(running[1])  # index int(0.1 * 10)


def _scipy_platt(probs, correct):
    """Unpenalized logistic regression of correct on logit(prob), fitted by scipy."""
    x = np.log(probs / (1 - probs))
    y = np.asarray(correct, dtype=float)

    def nll(w):
        z = w[0] * x + w[1]
        return np.sum(np.logaddexp(0, z) - y * z)

    return minimize(nll, x0=[1.0, 0.0], method="BFGS", options={"gtol": 1e-10}).x


def test_platt_fit_matches_scipy_optimum():
    rng = np.random.default_rng(7)
    probs = rng.uniform(0.3, 0.99, size=200)
    correct = (rng.uniform(size=200) < probs**2).astype(int)  # overconfident on purpose
    scaler = fit_platt(probs, correct)
    coef, intercept = _scipy_platt(probs, correct)
    assert scaler.coef == pytest.approx(coef, abs=1e-4)
    assert scaler.intercept == pytest.approx(intercept, abs=1e-4)
    stats = calibration_stats(probs, correct)
    assert stats.platt_coef == pytest.approx(coef, abs=1e-4)
    # Platt scaling fits the mean: the rescaled one-bin ECE is ~0 (score equation of the intercept).
    assert stats.platt_ece_1_bin == pytest.approx(0.0, abs=1e-6)
    assert stats.count == 200


def test_platt_is_absent_when_only_one_class():
    stats = calibration_stats([0.9, 0.8, 0.7], [1, 1, 1])
    assert isinstance(stats.platt_ece_10_bin, Absent)
    assert "both correct and incorrect" in stats.platt_coef.reason
    assert stats.ece_1_bin == pytest.approx(0.2)


def test_bad_inputs_name_the_entry():
    with pytest.raises(ValueError, match=r"probs\[1\]"):
        ece_one_bin([0.5, 1.5], [1, 0])
    with pytest.raises(ValueError, match=r"correct\[0\]"):
        ece_one_bin([0.5], [2])
    with pytest.raises(ValueError, match="3 entries but correct has 2"):
        ece_one_bin([0.5, 0.5, 0.5], [1, 0])


pairs = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 1)), min_size=1, max_size=40)


@given(pairs, st.randoms(use_true_random=False))
def test_ece_in_range_and_permutation_invariant(data, random):
    probs, correct = map(list, zip(*data, strict=True))
    ece = expected_calibration_error(probs, correct)
    assert 0.0 <= ece <= 1.0
    order = list(range(len(probs)))
    random.shuffle(order)
    shuffled = expected_calibration_error([probs[i] for i in order], [correct[i] for i in order])
    assert shuffled == pytest.approx(ece)
    area, acc10 = selective_stats(probs, correct)
    assert 0.0 <= area <= 1.0 and 0.0 <= acc10 <= 1.0


def test_platt_fit_on_separable_answers_stays_finite_without_overflow():
    # Every right answer is more confident than every wrong one, one at probability 1 (logit
    # clipped near 27.6): the optimum's slope is steep, and an undamped Newton step overshot
    # into overflowing exp (the demo printed "RuntimeWarning: overflow encountered in exp").
    probs = [0.94, 0.98, 1.0, 0.29, 0.74, 0.36, 0.32, 0.62, 0.92, 0.84, 0.63]
    correct = [1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = calibration_stats(probs, correct)
        scaler = fit_platt(probs, correct)
        rescaled = scaler(np.array([0.0, 0.3, 0.625, 1.0]))
    assert np.isfinite(stats.platt_coef) and stats.platt_coef > 0
    # Separable: the rescaled probabilities split the answers almost perfectly.
    assert stats.platt_ece_1_bin == pytest.approx(0.0, abs=1e-6)
    assert stats.platt_ece_10_bin == pytest.approx(0.0, abs=1e-3)
    assert rescaled[0] == 0.0 and rescaled[-1] == 1.0 and np.all(np.isfinite(rescaled))
