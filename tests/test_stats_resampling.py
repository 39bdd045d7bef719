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
