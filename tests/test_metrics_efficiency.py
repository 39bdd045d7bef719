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
        # A cache hit keeps the latency measured when its answer was computed.
        _c(9.0, 400, 40, cached=True),
        _c(5.0, 999, 999, error="timeout"),  # failed: only counted as an error
    ]
    stats = efficiency_stats(rows, TokenPrices(prompt_per_1k=0.5, completion_per_1k=2.0))
    assert (stats.requests, stats.errors, stats.cached) == (5, 1, 1)
    assert stats.latency_mean_s == pytest.approx(16 / 4)
    # Linear interpolation: position 0.5 * 3 = 1.5 between 2.0 and 4.0.
    assert stats.latency_p50_s == pytest.approx(3.0)
    # Position 0.95 * 3 = 2.85 between 4.0 and 9.0.
    assert stats.latency_p95_s == pytest.approx(4.0 + 0.85 * 5.0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (1000, 100)
    assert stats.prompt_tokens_mean == pytest.approx(250)
    assert stats.tokens_per_second == pytest.approx(100 / 16)
    assert stats.batch_size_mean == pytest.approx(11 / 4)
    assert stats.estimated_cost == pytest.approx(1000 / 1000 * 0.5 + 100 / 1000 * 2.0)
    assert stats.model_time_s == pytest.approx(16.0)
    assert stats.run_model_time_s == pytest.approx(7.0)  # the hit's 9 s were spent before


def test_all_cached_keeps_measured_figures_and_spends_no_model_time():
    computed = [_c(0.5, 10, 5, batch=2), _c(1.5, 20, 15, batch=2)]
    replayed = [_c(c.latency_s, c.prompt_tokens, c.completion_tokens, 2, True) for c in computed]
    first, again = efficiency_stats(computed), efficiency_stats(replayed)
    for name in ("latency_mean_s", "latency_p95_s", "tokens_per_second", "batch_size_mean"):
        assert getattr(again, name) == getattr(first, name)
    assert (first.cached, again.cached) == (0, 2)
    assert (first.run_model_time_s, again.run_model_time_s) == (2.0, 0.0)
    assert again.tokens_per_second == pytest.approx(20 / 2.0)


def test_missing_prices_and_no_success_are_absent_not_zero():
    stats = efficiency_stats([_c(0.0, 10, 5, cached=True)])
    assert isinstance(stats.estimated_cost, Absent)
    assert "no token prices" in stats.estimated_cost.reason
    assert isinstance(stats.tokens_per_second, Absent)  # the latencies sum to zero
    assert stats.completion_tokens == 5
    failed = efficiency_stats([_c(1.0, 10, 5, error="boom")])
    assert isinstance(failed.latency_mean_s, Absent)
    assert failed.run_model_time_s == 0.0


def test_negative_inputs_rejected():
    with pytest.raises(ValueError, match="completion 0"):
        efficiency_stats([_c(-1.0, 1, 1)])
    with pytest.raises(ValueError, match="negative"):
        TokenPrices(-1.0, 1.0)
