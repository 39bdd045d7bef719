"""Efficiency of serving a scenario: latency, token counts, throughput and estimated cost.

Latency, throughput and batch size describe the model as measured when each answer was
computed. A cache hit keeps the latency and batch size measured when its answer was made
(the request cache stores them), so a rerun answered by the cache reports the same figures
as the run that computed them; ``cached`` says how many answers came from the cache, and
``run_model_time_s`` is this run's own model time (0 when every answer was cached).
Failed requests are left out of everything except ``errors``. Cost needs per-1k-token
prices; without them it is Absent, never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from assay.core.records import Completion, TokenPrices
from assay.scoring.metrics.absent import Absent


@dataclass(frozen=True, slots=True)
class EfficiencyStats:
    """Efficiency figures for a set of completions."""

    requests: int
    errors: int
    cached: int  # successful answers that came from the request cache
    latency_mean_s: float | Absent
    latency_p50_s: float | Absent
    latency_p95_s: float | Absent
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_mean: float | Absent
    completion_tokens_mean: float | Absent
    tokens_per_second: float | Absent  # completion tokens / seconds of measured model time
    batch_size_mean: float | Absent
    estimated_cost: float | Absent
    model_time_s: float  # measured model time of every successful answer, cached or not
    run_model_time_s: float  # model time spent by this run (answers not from the cache)


def efficiency_stats(
    completions: Sequence[Completion], prices: TokenPrices | None = None
) -> EfficiencyStats:
    """Summarize ``completions``; percentiles use numpy's linear interpolation."""
    for i, c in enumerate(completions):
        if c.latency_s < 0 or c.prompt_tokens < 0 or c.completion_tokens < 0:
            raise ValueError(f"completion {i} has a negative latency or token count")
    ok = [c for c in completions if c.ok]
    errors = len(completions) - len(ok)

    no_ok = Absent("no successful completions")
    latencies = np.array([c.latency_s for c in ok], dtype=np.float64)
    prompt_tokens = sum(c.prompt_tokens for c in ok)
    completion_tokens = sum(c.completion_tokens for c in ok)
    model_seconds = float(latencies.sum()) if latencies.size else 0.0

    throughput: float | Absent = no_ok
    if latencies.size:
        throughput = (
            completion_tokens / model_seconds
            if model_seconds > 0
            else Absent("recorded latencies sum to zero")
        )
    cost: float | Absent = Absent("no token prices configured for this model")
    if prices is not None:
        cost = (
            prompt_tokens / 1000.0 * prices.prompt_per_1k
            + completion_tokens / 1000.0 * prices.completion_per_1k
        )

    return EfficiencyStats(
        requests=len(completions),
        errors=errors,
        cached=sum(c.cached for c in ok),
        latency_mean_s=float(latencies.mean()) if latencies.size else no_ok,
        latency_p50_s=float(np.percentile(latencies, 50)) if latencies.size else no_ok,
        latency_p95_s=float(np.percentile(latencies, 95)) if latencies.size else no_ok,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_tokens_mean=prompt_tokens / len(ok) if ok else no_ok,
        completion_tokens_mean=completion_tokens / len(ok) if ok else no_ok,
        tokens_per_second=throughput,
        batch_size_mean=float(np.mean([c.batch_size for c in ok])) if ok else no_ok,
        estimated_cost=cost,
        model_time_s=model_seconds,
        run_model_time_s=float(sum(c.latency_s for c in ok if not c.cached)),
    )
