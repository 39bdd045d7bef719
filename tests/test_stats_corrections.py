"""Multiple-comparison corrections against a hand-worked Holm example and scipy's BH."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from assay.stats import benjamini_hochberg, holm


def test_holm_hand_example():
    # m = 4. Sorted: 0.005 (index 3), 0.01 (0), 0.03 (2), 0.04 (1).
    # Scaled by 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running maximum: 0.02, 0.03, 0.06, 0.06.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_ties():
    # Sorted 0.2, 0.2, 0.5 scaled by 3, 2, 1 → 0.6, 0.4, 0.5 → running max 0.6, 0.6, 0.6.
    np.testing.assert_allclose(holm([0.5, 0.2, 0.2]), [0.6, 0.6, 0.6])
    np.testing.assert_allclose(holm([0.4, 0.9]), [0.8, 0.9])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_benjamini_hochberg_matches_scipy(seed: int):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.random(20), rng.random(5) * 0.01, [0.03, 0.03]])
    rng.shuffle(p)
    expected = scipy.stats.false_discovery_control(p, method="bh")
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12)


def test_corrections_accept_empty_and_reject_bad_pvalues():
    assert holm([]).size == 0
    assert benjamini_hochberg([]).size == 0
    with pytest.raises(ValueError, match="index 1"):
        holm([0.1, 1.5])
    with pytest.raises(ValueError, match="index 0"):
        benjamini_hochberg([float("nan")])
