"""One evaluation step: a scenario's instances through an adapter and a model client.

The Dagster assets call these functions; they are just as usable from a notebook.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assay.models.base import ModelClient
from assay.records import Instance, ModelOutput
from assay.scenarios import split
from assay.suite import ScenarioConfig


def select_instances(
    config: ScenarioConfig, instances: Sequence[Instance], max_instances: int | None = None
) -> tuple[list[Instance], list[Instance]]:
    """The eval instances (the first ``max_instances`` of the eval split) and the train pool.

    ``max_instances`` caps the suite's own limit further (smoke runs, tests).
    """
    evaluated = split(instances, config.eval_split)
    if not evaluated:
        raise ValueError(f"scenario {config.key!r} has no instances in split {config.eval_split!r}")
    limits = [n for n in (config.max_instances, max_instances) if n is not None]
    if limits:
        evaluated = evaluated[: min(limits)]
    return evaluated, split(instances, config.train_split)


class ProgressLog:
    """Turns (done, total) callbacks into log lines with rate and time left, at most every
    ``every_s`` seconds (and always on completion)."""

    def __init__(self, log: Callable[[str], None], label: str, every_s: float = 10.0) -> None:
        self.log, self.label, self.every_s = log, label, every_s
        self.start = time.monotonic()
        self.last = -float("inf")

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else float("inf")
        self.log(
            f"{self.label}: {done}/{total} requests, {rate:.2f} req/s, "
            f"{elapsed:.0f}s elapsed, ~{left:.0f}s left"
        )


@dataclass(frozen=True, slots=True)
class EvaluationRun:
    """What one model × scenario evaluation produced, with its bookkeeping."""

    outputs: list[ModelOutput]
    wall_s: float

    @property
    def n_failed(self) -> int:
        return sum(not o.completion.ok for o in self.outputs)

    @property
    def n_cached(self) -> int:
        return sum(o.completion.cached for o in self.outputs)


def evaluate(
    client: ModelClient,
    config: ScenarioConfig,
    instances: Sequence[Instance],
    train: Sequence[Instance] = (),
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationRun:
    """Build the requests of every prompt variant for ``instances`` and run them."""
    requests = config.build_requests(instances, train)
    start = time.perf_counter()
    completions = client.complete(requests, progress)
    wall = time.perf_counter() - start
    if len(completions) != len(requests):
        raise RuntimeError(
            f"model client returned {len(completions)} completions for {len(requests)} requests"
        )
    outputs = [ModelOutput(r, c) for r, c in zip(requests, completions, strict=True)]
    return EvaluationRun(outputs, wall)


class TooManyFailuresError(RuntimeError):
    """More requests of a partition failed than the configured fraction allows."""


def check_failures(run: EvaluationRun, max_fraction: float, label: str) -> None:
    """Raise, naming the failed requests, when the failure fraction exceeds ``max_fraction``."""
    failed = [o for o in run.outputs if not o.completion.ok]
    if not run.outputs or len(failed) / len(run.outputs) <= max_fraction:
        return
    shown = "; ".join(
        f"{o.request.instance_id} (trial {o.request.trial}): {o.completion.error}"
        for o in failed[:10]
    )
    more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
    raise TooManyFailuresError(
        f"{label}: {len(failed)}/{len(run.outputs)} requests failed "
        f"(allowed fraction {max_fraction:g}): {shown}{more}"
    )
