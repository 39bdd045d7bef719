"""Efficiency of serving a scenario: latency, token counts, throughput and estimated cost.

Cache hits did not run the model, so their latencies are left out of the latency and
throughput figures (they still count toward tokens and cost, which describe the workload).
Failed requests are left out of everything except ``errors``. Cost needs per-1k-token prices;
without them it is Absent, never 0.
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
    cached: int
    latency_mean_s: float | Absent
    latency_p50_s: float | Absent
    latency_p95_s: float | Absent
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_mean: float | Absent
    completion_tokens_mean: float | Absent
    tokens_per_second: float | Absent  # completion tokens / seconds of model time
    batch_size_mean: float | Absent
    estimated_cost: float | Absent


def efficiency_stats(
    completions: Sequence[Completion], prices: TokenPrices | None = None
) -> EfficiencyStats:
    """Summarize ``completions``; percentiles use numpy's linear interpolation."""
    ok = [c for c in completions if c.ok]
    errors = len(completions) - len(ok)
    live = [c for c in ok if not c.cached]
    for i, c in enumerate(completions):
        if c.latency_s < 0 or c.prompt_tokens < 0 or c.completion_tokens < 0:
            raise ValueError(f"completion {i} has a negative latency or token count")

    no_ok = Absent("no successful completions")
    no_live = Absent("no completions ran the model (all cached or failed)")
    latencies = np.array([c.latency_s for c in live], dtype=np.float64)
    prompt_tokens = sum(c.prompt_tokens for c in ok)
    completion_tokens = sum(c.completion_tokens for c in ok)
    live_seconds = float(latencies.sum()) if latencies.size else 0.0

    throughput: float | Absent = no_live
    if latencies.size:
        throughput = (
            sum(c.completion_tokens for c in live) / live_seconds
            if live_seconds > 0
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
        latency_mean_s=float(latencies.mean()) if latencies.size else no_live,
        latency_p50_s=float(np.percentile(latencies, 50)) if latencies.size else no_live,
        latency_p95_s=float(np.percentile(latencies, 95)) if latencies.size else no_live,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_tokens_mean=prompt_tokens / len(ok) if ok else no_ok,
        completion_tokens_mean=completion_tokens / len(ok) if ok else no_ok,
        tokens_per_second=throughput,
        batch_size_mean=float(np.mean([c.batch_size for c in live])) if live else no_live,
        estimated_cost=cost,
    )
