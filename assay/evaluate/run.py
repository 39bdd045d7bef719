"""One evaluation step: a scenario's instances through an adapter and a model client.

The Dagster assets call these functions; they are just as usable from a notebook.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pyarrow as pa

from assay.core.records import Instance, ModelOutput, Request
from assay.evaluate.suite import ScenarioConfig
from assay.models.base import ModelClient
from assay.perturbations import PerturbedInstance, perturb_instances
from assay.scenarios import split

# One row of ``perturbed_instances``: the original id, the perturbation spec and its family,
# and the perturbed input. References and group tags are the original's (read them from
# ``scenario_instances``), so they are not repeated here.
PERTURBED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("perturbation", pa.string()),
        ("family", pa.string()),
        ("input", pa.string()),
    ]
)


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


@dataclass(frozen=True, slots=True)
class Perturbed:
    """The perturbations of a scenario's eval instances, with what was left out."""

    rows: list[PerturbedInstance]
    unchanged: dict[str, int]  # spec → instances it left as they were (dropped)

    def table(self) -> pa.Table:
        return perturbed_table(self.rows)


def perturb_eval_instances(config: ScenarioConfig, instances: Sequence[Instance]) -> Perturbed:
    """Every configured perturbation of every eval instance; unchanged ones dropped, counted."""
    perturbations = config.build_perturbations()
    rows = perturb_instances(instances, perturbations)
    kept = Counter(row.perturbation for row in rows)
    unchanged = {p.spec: len(instances) - kept[p.spec] for p in perturbations}
    return Perturbed(rows, unchanged)


def perturbed_table(rows: Sequence[PerturbedInstance]) -> pa.Table:
    """The ``perturbed_instances`` table of ``rows``."""
    return pa.table(
        {
            "id": [r.original_id for r in rows],
            "perturbation": [r.perturbation for r in rows],
            "family": [r.family for r in rows],
            "input": [r.input for r in rows],
        },
        schema=PERTURBED_SCHEMA,
    )


def perturbed_from_table(table: pa.Table, instances: Sequence[Instance]) -> list[PerturbedInstance]:
    """Rebuild perturbed instances, joining each row to its original by id."""
    missing = [c for c in PERTURBED_SCHEMA.names if c not in table.column_names]
    if missing:
        raise ValueError(f"perturbed_instances table lacks column(s) {', '.join(missing)}")
    by_id = {i.id: i for i in instances}
    out = []
    for index, row in enumerate(table.select(PERTURBED_SCHEMA.names).to_pylist()):
        original = by_id.get(row["id"])
        if original is None:
            raise ValueError(
                f"perturbed_instances row {index}: id {row['id']!r} is not an instance of the "
                "scenario (re-materialize perturbed_instances after scenario_instances)"
            )
        out.append(PerturbedInstance(original, row["perturbation"], row["family"], row["input"]))
    return out


def perturbed_requests(
    config: ScenarioConfig,
    perturbed: Sequence[PerturbedInstance],
    train: Sequence[Instance] = (),
    evaluated: Sequence[Instance] | None = None,
) -> list[Request]:
    """Base-adapter requests for the perturbed inputs, in the suite's perturbation order.

    Only perturbations the suite still lists run, and only of instances in ``evaluated``
    (when given), so a smaller ``max_instances`` also trims the perturbed requests.
    Few-shot examples stay unperturbed, as in HELM: only the evaluated input changes.
    """
    keep = None if evaluated is None else {i.id for i in evaluated}
    requests: list[Request] = []
    for spec in config.perturbations:
        rows = [
            replace(p.instance, input=p.input)
            for p in perturbed
            if p.perturbation == spec and (keep is None or p.original_id in keep)
        ]
        if rows:
            requests.extend(config.build_perturbed_requests(rows, train, spec))
    return requests


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
    perturbed: Sequence[PerturbedInstance] = (),
) -> EvaluationRun:
    """Build the requests of every prompt variant for ``instances`` and run them.

    ``perturbed`` adds the base adapter's requests for each perturbed input (see
    :func:`perturbed_requests`); their rows carry ``perturbation=<spec>``.
    """
    check_templating(client, config)
    requests = config.build_requests(instances, train)
    requests += perturbed_requests(config, perturbed, train, instances)
    start = time.perf_counter()
    completions = client.complete(requests, progress)
    wall = time.perf_counter() - start
    if len(completions) != len(requests):
        raise RuntimeError(
            f"model client returned {len(completions)} completions for {len(requests)} requests"
        )
    outputs = [ModelOutput(r, c) for r, c in zip(requests, completions, strict=True)]
    return EvaluationRun(outputs, wall)


def check_templating(client: ModelClient, config: ScenarioConfig) -> None:
    """Refuse an entry whose prompts are already chat-templated (an lm-eval entry with
    ``apply_chat_template``) on a version served with ``chat_template: true``, which would wrap
    every prompt in its template a second time; before any request is sent."""
    serving = getattr(client, "serving", None) or getattr(
        getattr(client, "spec", None), "serving", None
    )
    if serving is None or not serving.chat_template:
        return
    if config.scenario == "lm_eval" and config.args.get("apply_chat_template"):
        raise ValueError(
            f"scenario {config.key!r}: args.apply_chat_template renders lm-eval's prompts with "
            "a chat template, and this model version is served with chat_template: true, which "
            "would wrap each of them in its template again; evaluate the entry on a version "
            "registered with --serving chat_template=false (the same weights)"
        )


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
