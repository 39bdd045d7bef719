"""Aggregation: bootstrap intervals, worst-case robustness/fairness, deltas, group gaps."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from assay.core.records import InstanceStat
from assay.scoring.aggregate import group_breakdown, perturbation_deltas, worst_case
from assay.scoring.metrics.absent import Absent
from assay.scoring.summary import summarize
from assay.stats.resampling import bootstrap_interval

FAMILIES = {"typos": "robustness", "lowercase": "robustness", "dialect": "fairness"}


def test_bootstrap_interval_is_deterministic_and_agrees_with_scipy():
    values = np.random.default_rng(3).normal(0.6, 0.2, size=300)
    low, high = bootstrap_interval(values, n_resamples=4000, seed=11)
    assert (low, high) == bootstrap_interval(values, n_resamples=4000, seed=11)
    assert (low, high) != bootstrap_interval(values, n_resamples=4000, seed=12)
    reference = scipy_stats.bootstrap(
        (values,), np.mean, n_resamples=4000, method="percentile", random_state=0
    ).confidence_interval
    # Different random draws, same estimator: the end points agree to Monte Carlo error.
    assert low == pytest.approx(reference.low, abs=0.005)
    assert high == pytest.approx(reference.high, abs=0.005)
    assert low < values.mean() < high


def test_bootstrap_interval_edge_cases():
    assert bootstrap_interval([0.5], seed=1) == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([], seed=1)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([1.0, float("nan")], seed=1)


def test_summarize_skips_absent_values_and_reports_absence():
    summary = summarize([1.0, Absent("no logprobs"), 0.0, None], "acc", "accuracy")
    assert summary.mean == pytest.approx(0.5) and summary.count == 2
    assert summary.ci_low <= 0.5 <= summary.ci_high
    empty = summarize([Absent("no logprobs")], "acc", "accuracy")
    assert math.isnan(empty.mean) and empty.count == 0 and "no instance" in empty.reason


def _s(instance, value, perturbation="", metric="em", group=""):
    return InstanceStat(instance, metric, value, perturbation=perturbation, group=group)


def test_worst_case_over_family_with_unchanged_dropped():
    stats = [
        _s("a", 1.0),
        _s("a", 0.0, "typos"),
        _s("a", 1.0, "lowercase"),
        _s("b", 1.0),
        _s("b", 0.0, "typos"),  # typos left b's input unchanged: dropped
        _s("b", 0.0, "dialect"),  # fairness, not robustness
        _s("c", 0.0),
        _s("c", 1.0, "typos"),  # worst case includes the original
    ]
    rob = {
        s.instance_id: s.value for s in worst_case(stats, "robustness", FAMILIES, {("b", "typos")})
    }
    assert rob == {"a": 0.0, "b": 1.0, "c": 0.0}
    fair = {s.instance_id: s.value for s in worst_case(stats, "fairness", FAMILIES)}
    assert fair == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert {s.perturbation for s in worst_case(stats, "fairness", FAMILIES)} == {"fairness"}
    # For a lower-is-better metric the worst case is the maximum.
    worst_loss = worst_case(stats, "robustness", FAMILIES, higher_is_better=False)
    assert {s.instance_id: s.value for s in worst_loss} == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_perturbation_deltas_by_hand():
    stats = [
        _s("a", 1.0),
        _s("a", 0.0, "typos"),
        _s("b", 1.0),
        _s("b", 1.0, "typos"),
        _s("c", 0.5),
        _s("c", 0.0, "typos"),  # dropped as unchanged
        _s("d", 0.0, "typos"),  # no clean counterpart: ignored
    ]
    (delta,) = perturbation_deltas(stats, unchanged={("c", "typos")})
    assert (delta.metric, delta.perturbation, delta.count) == ("em", "typos", 2)
    assert delta.mean == pytest.approx(-0.5)


def test_group_breakdown_gap_and_ratio():
    stats = [_s(f"f{i}", v, group="gender=female") for i, v in enumerate([1, 1, 1, 0])]
    stats += [_s(f"m{i}", v, group="gender=male") for i, v in enumerate([1, 0, 0, 0])]
    comparison = group_breakdown(stats, "em")
    assert [g.mean for g in comparison.groups] == [0.75, 0.25]
    assert comparison.largest_gap == pytest.approx(0.5)
    assert comparison.ratio == pytest.approx(0.25 / 0.75)
    low, high = comparison.gap_ci
    assert 0.0 <= low <= 0.5 <= high <= 1.0


def test_group_breakdown_needs_two_groups():
    comparison = group_breakdown([_s("a", 1.0, group="g=x")], "em")
    assert isinstance(comparison.largest_gap, Absent)
    assert "1 group" in comparison.largest_gap.reason


rows = st.lists(
    st.tuples(
        st.sampled_from("abcd"),
        st.sampled_from(["", "typos", "lowercase", "dialect"]),
        st.floats(0, 1),
    ),
    max_size=20,
    unique_by=lambda r: (r[0], r[1]),
)


@settings(max_examples=50)
@given(rows, st.randoms(use_true_random=False))
def test_aggregates_are_permutation_invariant(data, random):
    stats = [_s(i, v, p) for i, p, v in data]
    shuffled = list(stats)
    random.shuffle(shuffled)

    def as_set(result):
        return sorted((s.instance_id, s.value) for s in result)

    assert as_set(worst_case(stats, "robustness", FAMILIES)) == as_set(
        worst_case(shuffled, "robustness", FAMILIES)
    )
    # Bootstrap draws follow input order, so compare the means and counts.
    before = [
        (d.metric, d.perturbation, d.count) for d in perturbation_deltas(stats, n_resamples=50)
    ]
    after = [
        (d.metric, d.perturbation, d.count) for d in perturbation_deltas(shuffled, n_resamples=50)
    ]
    assert before == after
    for a, b in zip(
        perturbation_deltas(stats, n_resamples=50),
        perturbation_deltas(shuffled, n_resamples=50),
        strict=True,
    ):
        # An absent delta (no clean counterpart) has a NaN mean in both orders.
        assert a.mean == pytest.approx(b.mean, nan_ok=True)
