"""Paired tests, cross-checked against scipy and hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from assay.stats import (
    adjust,
    compare,
    mcnemar_exact,
    paired_bootstrap,
    paired_permutation_test,
)


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def _scipy_exact_paired(a: np.ndarray, b: np.ndarray) -> float:
    res = scipy.stats.permutation_test(
        (a, b),
        _mean_diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf,  # enumerate every sign pattern
    )
    return float(res.pvalue)


@pytest.mark.parametrize(
    ("only_a", "only_b", "both", "neither"),
    [(7, 2, 10, 5), (0, 6, 3, 1), (5, 5, 2, 2), (30, 12, 40, 18), (1, 0, 0, 0)],
)
def test_mcnemar_matches_scipy_binomtest(only_a: int, only_b: int, both: int, neither: int):
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * neither)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * neither)
    expected = scipy.stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_p_values_match_scipy_binomtest_across_splits():
    """Every split of up to 120 discordant pairs, and some larger: the doubled smaller tail of
    Binomial(n, 1/2) is binomtest's two-sided p-value, far into the tails."""
    cases = [(k, n) for n in range(1, 121) for k in range(n + 1)]
    cases += [(k, n) for n in (500, 2000) for k in range(0, n + 1, n // 50)]
    for k, n in cases:
        a = np.array([1] * k + [0] * (n - k))
        expected = scipy.stats.binomtest(k, n, 0.5).pvalue
        assert mcnemar_exact(a, 1 - a) == pytest.approx(expected, rel=1e-9), (k, n)


def test_mcnemar_without_discordant_pairs_is_one():
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0


def test_mcnemar_rejects_non_binary_values():
    with pytest.raises(ValueError, match=r"a_correct\[1\]"):
        mcnemar_exact([1, 0.5], [1, 0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permutation_exact_matches_scipy(seed: int):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.4, 1.0, 11)
    b = rng.normal(0.0, 1.0, 11)
    # 2**11 = 2048 patterns <= n_resamples: both enumerate exactly.
    assert paired_permutation_test(a, b, 4096, seed=0) == pytest.approx(
        _scipy_exact_paired(a, b), rel=1e-12
    )


def test_permutation_exact_with_tied_differences_matches_scipy():
    # Binary scores: many differences are equal, so ties in the null distribution matter.
    a = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 1], dtype=float)
    b = np.array([0, 1, 0, 0, 0, 1, 1, 0, 1, 0], dtype=float)
    assert paired_permutation_test(a, b, 10_000, seed=3) == pytest.approx(
        _scipy_exact_paired(a, b), rel=1e-12
    )


def test_permutation_with_clusters_flips_whole_instances():
    # Rows of one instance flip together: the test equals an exact test on instance sums.
    rng = np.random.default_rng(7)
    clusters = np.repeat(np.arange(9), [1, 3, 2, 2, 4, 1, 2, 3, 2])
    a = rng.normal(0.3, 1.0, clusters.size)
    b = rng.normal(0.0, 1.0, clusters.size)
    a_sums = np.bincount(clusters, weights=a)
    b_sums = np.bincount(clusters, weights=b)
    expected = _scipy_exact_paired(a_sums, b_sums)
    got = paired_permutation_test(a, b, 10_000, seed=0, clusters=clusters.astype(str))
    assert got == pytest.approx(expected, rel=1e-12)


def test_permutation_monte_carlo_approximates_exact():
    rng = np.random.default_rng(11)
    a = rng.normal(0.5, 1.0, 15)
    b = rng.normal(0.0, 1.0, 15)
    exact = _scipy_exact_paired(a, b)  # 32768 patterns
    sampled = paired_permutation_test(a, b, 8000, seed=5)  # fewer resamples: random signs
    # Monte Carlo standard error is at most sqrt(0.25 / 8000) ~ 0.0056; allow 4 of them.
    assert sampled == pytest.approx(exact, abs=0.023)


def test_paired_bootstrap_matches_scipy_percentile_interval():
    rng = np.random.default_rng(21)
    a = rng.normal(0.2, 1.0, 400)
    b = a - rng.normal(0.1, 0.5, 400)
    ours = paired_bootstrap(a, b, 20_000, 0.9, seed=4)
    ref = scipy.stats.bootstrap(
        (a - b,), np.mean, confidence_level=0.9, method="percentile", n_resamples=20_000, rng=9
    )
    assert ours.mean_diff == pytest.approx(float(np.mean(a - b)), rel=1e-12)
    # Different random draws: the endpoints agree to Monte Carlo error (se of the mean ~0.025).
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.005)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.005)
    assert ours.n == ours.n_clusters == 400


def test_paired_bootstrap_pvalue_tracks_the_effect():
    rng = np.random.default_rng(2)
    base = rng.normal(0.0, 1.0, 300)
    noise = rng.normal(0.0, 0.3, 300)
    clear = paired_bootstrap(base + 0.5, base + noise, 2000, seed=1)
    null = paired_bootstrap(base + noise, base + noise[::-1], 2000, seed=1)
    assert clear.p_value == pytest.approx(1 / 2001)
    assert clear.ci_low > 0
    assert null.p_value > 0.05
    assert null.ci_low < 0 < null.ci_high


def test_paired_bootstrap_is_deterministic_in_its_seed():
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    first = paired_bootstrap(a, b, 500, seed=12)
    assert paired_bootstrap(a, b, 500, seed=12) == first
    assert paired_bootstrap(a, b, 500, seed=13) != first


def test_clustered_bootstrap_widens_interval_for_correlated_rows():
    # 40 instances × 10 perturbations; the difference is almost constant within an instance,
    # so the effective sample size is 40, not 400.
    rng = np.random.default_rng(5)
    per_instance = rng.normal(0.1, 1.0, 40)
    clusters = np.repeat(np.arange(40), 10)
    d = per_instance[clusters] + rng.normal(0.0, 0.05, 400)
    zeros = np.zeros_like(d)
    rows = paired_bootstrap(d, zeros, 4000, seed=3)
    clustered = paired_bootstrap(d, zeros, 4000, seed=3, clusters=clusters)
    assert clustered.n_clusters == 40 and clustered.n == 400
    assert clustered.mean_diff == pytest.approx(rows.mean_diff)
    # Standard error of a mean of 40 cluster means: sd(cluster means) / sqrt(40).
    cluster_means = d.reshape(40, 10).mean(axis=1)
    se = cluster_means.std() / np.sqrt(40)
    assert clustered.ci_high - clustered.ci_low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert (clustered.ci_high - clustered.ci_low) > 2.5 * (rows.ci_high - rows.ci_low)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1.0, 2.0], [1.0], "same length"),
        ([1.0, float("nan")], [1.0, 2.0], r"a\[1\]"),
        ([], [], "empty"),
    ],
)
def test_paired_inputs_are_validated(a: list, b: list, message: str):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, 10, seed=0)


def test_compare_chooses_mcnemar_for_binary_and_permutation_otherwise():
    rng = np.random.default_rng(8)
    a = (rng.random(60) < 0.7).astype(float)
    b = (rng.random(60) < 0.4).astype(float)
    binary = compare(a, b, model_a="m@v2", model_b="m@v1", metric="exact_match", seed=0)
    assert binary.test == "mcnemar_exact"
    only_a = int(np.sum((a == 1) & (b == 0)))
    discordant = int(np.sum(a != b))
    assert binary.p_value == pytest.approx(scipy.stats.binomtest(only_a, discordant).pvalue)
    assert binary.mean_diff == pytest.approx(a.mean() - b.mean())

    graded = compare(a * 0.9, b, model_a="x", model_b="y", metric="f1", seed=0, n_resamples=999)
    assert graded.test == "paired_permutation"

    # Binary but several rows per instance: McNemar would treat them as independent.
    clusters = np.repeat(np.arange(30), 2)
    clustered = compare(a, b, model_a="x", model_b="y", metric="em", seed=0, clusters=clusters)
    assert clustered.test == "paired_permutation"
    assert clustered.n_clusters == 30


def test_adjust_applies_holm_and_marks_significance():
    rng = np.random.default_rng(1)
    base = rng.random(80)
    results = [
        compare(
            base + shift,
            base,
            model_a=f"m{i}",
            model_b="base",
            metric="f1",
            seed=i,
            n_resamples=999,
        )
        for i, shift in enumerate([0.0, 0.002, 0.3])
    ]
    adjusted = adjust(results, method="holm", alpha=0.05)
    raw = sorted(r.p_value for r in results)
    # Hand Holm for three p-values: smallest × 3, then max(previous, middle × 2), then ...
    expected_sorted = [
        min(1, raw[0] * 3),
        max(min(1, raw[0] * 3), min(1, raw[1] * 2)),
    ]
    got_sorted = sorted(c.p_adjusted for c in adjusted)
    assert got_sorted[:2] == pytest.approx(expected_sorted)
    assert [c.significant for c in adjusted] == [c.p_adjusted < 0.05 for c in adjusted]
    assert adjusted[2].significant and not adjusted[0].significant
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(results, method="bonferonni")
