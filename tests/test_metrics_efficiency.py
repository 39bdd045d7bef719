"""Efficiency figures by hand."""

import pytest

from assay.core.records import Completion, TokenPrices
from assay.scoring.metrics.absent import Absent
from assay.scoring.metrics.efficiency import efficiency_stats


def _c(latency, prompt, completion, batch=1, cached=False, error=None):
    return Completion(
        text="x",
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_s=latency,
        batch_size=batch,
        cached=cached,
        error=error,
    )


def test_efficiency_by_hand():
    rows = [
        _c(1.0, 100, 10, batch=2),
        _c(2.0, 200, 20, batch=4),
        _c(4.0, 300, 30, batch=4),
        _c(9.0, 400, 40, cached=True),  # no model time: out of latency and throughput
        _c(5.0, 999, 999, error="timeout"),  # failed: only counted as an error
    ]
    stats = efficiency_stats(rows, TokenPrices(prompt_per_1k=0.5, completion_per_1k=2.0))
    assert (stats.requests, stats.errors, stats.cached) == (5, 1, 1)
    assert stats.latency_mean_s == pytest.approx(7 / 3)
    assert stats.latency_p50_s == pytest.approx(2.0)
    # Linear interpolation: position 0.95 * 2 = 1.9 between 2.0 and 4.0.
    assert stats.latency_p95_s == pytest.approx(2.0 + 0.9 * 2.0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (1000, 100)
    assert stats.prompt_tokens_mean == pytest.approx(250)
    assert stats.tokens_per_second == pytest.approx(60 / 7)
    assert stats.batch_size_mean == pytest.approx(10 / 3)
    assert stats.estimated_cost == pytest.approx(1000 / 1000 * 0.5 + 100 / 1000 * 2.0)


def test_missing_prices_and_all_cached_are_absent_not_zero():
    stats = efficiency_stats([_c(0.0, 10, 5, cached=True)])
    assert isinstance(stats.estimated_cost, Absent)
    assert "no token prices" in stats.estimated_cost.reason
    assert isinstance(stats.latency_mean_s, Absent)
    assert isinstance(stats.tokens_per_second, Absent)
    assert stats.completion_tokens == 5


def test_negative_inputs_rejected():
    with pytest.raises(ValueError, match="completion 0"):
        efficiency_stats([_c(-1.0, 1, 1)])
    with pytest.raises(ValueError, match="negative"):
        TokenPrices(-1.0, 1.0)
