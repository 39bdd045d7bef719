"""The shared bootstrap engine: joint resampling, clusters, missing values."""

from __future__ import annotations

import numpy as np
import pytest

from assay.stats import bootstrap_means
from assay.stats.resampling import resample_counts


def test_each_resample_draws_every_cluster_slot_once():
    counts = resample_counts(np.random.default_rng(0), 50, 37)
    assert counts.shape == (50, 37)
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(50, 37.0))
    # Multinomial(37, 1/37 each): every cluster is drawn once on average.
    assert counts.mean() == pytest.approx(1.0)


def test_columns_are_resampled_jointly():
    # The same draw for every column: the difference of resampled means is the resampled
    # mean of the differences.
    rng = np.random.default_rng(3)
    a, b = rng.random(200), rng.random(200)
    both = bootstrap_means(np.column_stack([a, b]), n_resamples=300, seed=9)
    diff = bootstrap_means(a - b, n_resamples=300, seed=9)
    np.testing.assert_allclose(both[:, 0] - both[:, 1], diff[:, 0], atol=1e-12)


def test_cluster_resampling_keeps_rows_of_an_instance_together():
    # Each cluster's rows all hold the cluster's label value, so every resampled mean is a
    # weighted mean of whole clusters: with 2 clusters of sizes 1 and 3 holding 0 and 1, the
    # possible means are 0 (both draws cluster 0), 1 (both cluster 1) and 3/4 (one of each).
    values = np.array([0.0, 1.0, 1.0, 1.0])
    samples = bootstrap_means(values, n_resamples=400, seed=1, clusters=["x", "y", "y", "y"])
    assert set(np.round(samples[:, 0], 12)) == {0.0, 0.75, 1.0}


def test_missing_values_are_left_out_of_their_column_only():
    values = np.array([[1.0, 2.0], [np.nan, 4.0], [3.0, 6.0]])
    samples = bootstrap_means(values, n_resamples=2000, seed=0)
    # Column 0 only ever averages 1 and 3; column 1 averages all three rows.
    assert np.nanmin(samples[:, 0]) >= 1.0 and np.nanmax(samples[:, 0]) <= 3.0
    assert np.isnan(samples[:, 0]).any()  # some resamples drew only the missing row
    assert not np.isnan(samples[:, 1]).any()
    assert np.nanmean(samples[:, 1]) == pytest.approx(4.0, abs=0.1)


def test_seed_determines_the_draws_and_inputs_are_checked():
    rng = np.random.default_rng(0)
    values = rng.random((30, 3))
    first = bootstrap_means(values, n_resamples=50, seed=4)
    np.testing.assert_array_equal(first, bootstrap_means(values, n_resamples=50, seed=4))
    assert not np.array_equal(first, bootstrap_means(values, n_resamples=50, seed=5))
    with pytest.raises(ValueError, match="one label per row"):
        bootstrap_means(values, n_resamples=5, seed=0, clusters=[1, 2])
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_means(values, n_resamples=0, seed=0)


@pytest.mark.parametrize(
    "values, clusters",
    [
        # a correct/incorrect metric's paired differences, one row per instance
        (np.random.default_rng(1).integers(-1, 2, 300).astype(float), None),
        # several rows per instance (trials), a missing value: counts differ per cluster
        (
            np.where(
                np.random.default_rng(2).random(240) < 0.05,
                np.nan,
                np.random.default_rng(3).integers(0, 2, 240).astype(float),
            ),
            np.repeat(np.arange(80), 3),
        ),
        # whole numbers past int8 and int16
        (np.random.default_rng(4).integers(-40_000, 40_000, 150).astype(float), None),
        # fractions: the counted product itself
        (np.random.default_rng(5).random(120), None),
        # negative zeros: left to the matrix product, whose sign of zero is its own
        (np.full(50, -0.0), None),
    ],
)
def test_one_column_is_the_counted_bootstrap(values, clusters):
    # The definition: each resample's counts of every cluster times the clusters' sums and
    # row counts, with the draws of resample_counts from the same seed (chunked as the
    # library chunks them: 1,000,000 cells a product).
    from assay.stats.resampling import collapse

    n_resamples, seed = 2_500, 17
    collapsed = collapse(values, clusters)
    m = collapsed.n_clusters
    rng = np.random.default_rng(seed)
    chunk = max(2, 1_000_000 // m)
    expected = []
    for start in range(0, n_resamples, chunk):
        counts = resample_counts(rng, min(chunk, n_resamples - start), m)
        totals, sizes = counts @ collapsed.sums, counts @ collapsed.counts
        with np.errstate(invalid="ignore", divide="ignore"):
            expected.append(np.where(sizes > 0, totals / sizes, np.nan))
    found = bootstrap_means(values, n_resamples=n_resamples, seed=seed, clusters=clusters)
    if np.all(np.isnan(values) | (values == np.trunc(values))):
        # Whole numbers add up exactly in any order: the same bits.
        assert found.tobytes() == np.concatenate(expected).tobytes()
    else:  # a matrix product's rounding depends on its shape
        np.testing.assert_allclose(found, np.concatenate(expected), rtol=1e-12)
