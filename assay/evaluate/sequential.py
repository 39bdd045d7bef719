"""Sequential evaluation: a scenario's eval instances in a fixed random order, in chunks, so a
promotion decision can stop evaluating once its criteria are decided
(``assay.compare.sequential`` decides when).

**The order.** Instance ``i`` of scenario ``s`` sorts by the SHA-256 digest of ``(s, i)``: a
pseudo-random order seeded by the scenario key alone (never by time), the same in every
process. Sorting by a per-instance digest, rather than shuffling the list with a seeded
generator, makes the order of any subset the subset of the order: the stored instances of a
partial evaluation are the first ``n`` of the full order whatever else the scenario holds, so
the judge needs only the stored rows to replay the evaluation.

**The partial evaluation of size n** is the first ``n`` instances of the order (all of their
requests: prompt variants, trials, perturbations). A partial partition says so in its
``metric_tables`` rows (``instances_evaluated`` < ``instances_total``, see
:func:`mark_extent`) and in its Dagster metadata; a full evaluation of the partition (a run
without the sequential tag) evaluates every instance, answered from the request cache for
those a sequential run already asked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from assay.core.environment import runtime_environment, with_environment
from assay.core.pinned_prices import pin_prices
from assay.core.records import Instance, ModelOutput, TokenPrices
from assay.evaluate.partition import perturbed_inputs
from assay.evaluate.registry_prompts import prompt_uses, resolve_prompts
from assay.evaluate.run import (
    EvaluationRun,
    ProgressLog,
    check_failures,
    evaluate,
    select_instances,
)
from assay.evaluate.suite import ScenarioConfig
from assay.models.base import ModelClient
from assay.registry import Registry
from assay.storage.parquet import ParquetStore

# The run tag that asks ``model_outputs`` for a sequential evaluation: the id of the pending
# decision it answers; the incumbent it is compared with rides in ``INCUMBENT_TAG``.
SEQUENTIAL_TAG = "assay/sequential"
INCUMBENT_TAG = "assay/sequential_incumbent"
# The columns a partial partition's ``metric_tables`` rows carry (absent on a full one).
EVALUATED_COLUMN, TOTAL_COLUMN, STOP_COLUMN = (
    "instances_evaluated",
    "instances_total",
    "stop_reason",
)

# The schema metadata key of a partial ``model_outputs`` table's extent.
OUTPUTS_EXTENT_KEY = b"assay.sequential"

# Metrics whose per-instance values lie in [0, 1] by construction (an indicator or a
# proportion); the anytime-valid tests need bounded observations. Others are sequentially
# testable once the suite declares their bounds (``promotion.sequential.bounds``).
UNIT_INTERVAL_METRICS = frozenset(
    {
        "exact_match",
        "quasi_exact_match",
        "prefix_exact_match",
        "quasi_prefix_exact_match",
        "f1_score",
        "bleu_1",
        "bleu_4",
        "rouge_l",
        "acc",
        "acc_norm",
        "acc_norm_tokens",
        "acc_norm_bytes",
        "acc_calibrated",
        "valid_letter",
        "failed",
    }
)


def order_key(scenario: str, instance_id: str) -> str:
    """The sort key of one instance in its scenario's sequential order."""
    return hashlib.sha256(f"assay/sequential-order\0{scenario}\0{instance_id}".encode()).hexdigest()


def instance_order(scenario: str, ids: Sequence[str]) -> list[str]:
    """``ids`` in the scenario's sequential order (see the module doc)."""
    if len(set(ids)) != len(ids):
        raise ValueError(f"scenario {scenario!r}: instance ids repeat; the order needs unique ids")
    return sorted(ids, key=lambda i: order_key(scenario, i))


def ordered_eval_instances(
    config: ScenarioConfig, every: Sequence[Instance], max_instances: int | None = None
) -> tuple[list[Instance], list[Instance]]:
    """The scenario's eval instances (``select_instances``: the same set a full evaluation
    runs) in sequential order, and the train pool."""
    evaluated, train = select_instances(config, every, max_instances)
    by_id = {i.id: i for i in evaluated}
    return [by_id[i] for i in instance_order(config.key, list(by_id))], train


def chunk_ends(total: int, chunk: int) -> list[int]:
    """The sizes of the partial evaluations a scenario of ``total`` instances passes through:
    ``chunk``, ``2·chunk``, …, ``total``."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    return [*range(chunk, total, chunk), total] if total > 0 else []


def bounds_of(metric: str, declared: dict[str, list[float]]) -> tuple[float, float] | None:
    """The range of ``metric``'s per-instance values: declared in the suite, [0, 1] for the
    built-in proportions, else None (not sequentially testable)."""
    if metric in declared:
        low, high = declared[metric]
        return float(low), float(high)
    if metric in UNIT_INTERVAL_METRICS:
        return 0.0, 1.0
    return None


@dataclass(slots=True)
class ChunkedPartition:
    """One scenario's sequential evaluation in progress: its ordered instances, the outputs
    of the first ``evaluated`` of them, and the bookkeeping of every chunk."""

    config: ScenarioConfig
    ordered: list[Instance]
    train: list[Instance]
    every: list[Instance]
    outputs: list[ModelOutput]
    evaluated: int = 0
    wall_s: float = 0.0
    stop_reason: str = ""

    @property
    def total(self) -> int:
        return len(self.ordered)

    @property
    def partial(self) -> bool:
        return self.evaluated < self.total

    def run(self) -> EvaluationRun:
        return EvaluationRun(list(self.outputs), self.wall_s)


def start_partition(
    config: ScenarioConfig,
    scenario_instances: pa.Table,
    max_instances: int | None = None,
    registry: Callable[[], Registry] | None = None,
) -> ChunkedPartition:
    """A sequential evaluation of one scenario, nothing evaluated yet; prompt references in
    the entry's layouts are resolved through ``registry`` first, as ``run_partition`` does."""
    uses = prompt_uses(config)
    if uses:
        if registry is None:
            raise ValueError(f"{uses[0].where}: {uses[0].uri!r} needs a registry to resolve")
        config = resolve_prompts(config, registry())
    every = Instance.from_table(scenario_instances)
    ordered, train = ordered_eval_instances(config, every, max_instances)
    return ChunkedPartition(config, ordered, train, every, [])


def evaluate_up_to(
    partition: ChunkedPartition,
    size: int,
    client: ModelClient,
    *,
    store: ParquetStore,
    label: str,
    max_failure_fraction: float = 0.0,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> None:
    """Evaluate the instances ``partition.evaluated`` … ``size - 1`` of the order (every
    request of each: variants, trials, perturbations), as ``run_partition`` would."""
    size = min(size, partition.total)
    if size <= partition.evaluated:
        return
    chunk = partition.ordered[partition.evaluated : size]
    perturbed, _ = perturbed_inputs(store, partition.config, partition.every, chunk, warn)
    done = evaluate(
        client,
        partition.config,
        chunk,
        partition.train,
        progress=ProgressLog(log, f"{label} [{partition.evaluated + 1}-{size}]"),
        perturbed=perturbed,
    )
    check_failures(done, max_failure_fraction, label)
    partition.outputs += done.outputs
    partition.wall_s += done.wall_s
    partition.evaluated = size


def outputs_table(
    partition: ChunkedPartition, prices: TokenPrices | None, environment: dict | None = None
) -> pa.Table:
    """The ``model_outputs`` table of what is evaluated so far (prices and environment pinned
    as ``run_partition`` pins them)."""
    table = pin_prices(ModelOutput.to_table(partition.outputs), prices)
    return with_environment(table, environment or runtime_environment())


def mark_extent(card: pa.Table, evaluated: int, total: int, stop_reason: str) -> pa.Table:
    """``card`` (a ``metric_tables`` scorecard) with the columns saying it covers the first
    ``evaluated`` of ``total`` instances and why it stopped there (a partial evaluation)."""
    rows = card.num_rows
    for name, values, kind in (
        (EVALUATED_COLUMN, [evaluated] * rows, pa.int64()),
        (TOTAL_COLUMN, [total] * rows, pa.int64()),
        (STOP_COLUMN, [stop_reason] * rows, pa.string()),
    ):
        if name in card.column_names:
            card = card.drop_columns([name])
        card = card.append_column(pa.field(name, kind), pa.array(values, kind))
    return card


def mark_outputs(
    table: pa.Table, decision: str, evaluated: int, total: int, stop_reason: str
) -> pa.Table:
    """A partial ``model_outputs`` table, with its extent in the schema metadata (kept by
    Parquet), so the scoring step marks the scorecard without another source."""
    held = dict(table.schema.metadata or {})
    extent = {
        "decision": decision,
        "evaluated": evaluated,
        "total": total,
        "stop_reason": stop_reason,
    }
    held[OUTPUTS_EXTENT_KEY] = json.dumps(extent, sort_keys=True).encode()
    return table.replace_schema_metadata(held)


def extent_of_outputs(table: pa.Table) -> Extent | None:
    """The extent a ``model_outputs`` table records (None: a full evaluation)."""
    raw = (table.schema.metadata or {}).get(OUTPUTS_EXTENT_KEY)
    if raw is None:
        return None
    extent = json.loads(raw)
    return Extent(
        int(extent["evaluated"]),
        int(extent["total"]),
        str(extent["stop_reason"]),
        str(extent.get("decision") or ""),
    )


@dataclass(frozen=True, slots=True)
class Extent:
    """How much of a scenario a stored scorecard covers."""

    evaluated: int
    total: int
    stop_reason: str
    decision: str = ""  # the pending decision it was evaluated for (model_outputs only)

    @property
    def partial(self) -> bool:
        return self.evaluated < self.total

    def sentence(self) -> str:
        return f"partial: {self.evaluated} of {self.total} instances ({self.stop_reason})"


def extent_of(card: pa.Table | None) -> Extent | None:
    """The extent a ``metric_tables`` table records: None for a full evaluation (no marks)."""
    if card is None or card.num_rows == 0 or EVALUATED_COLUMN not in card.column_names:
        return None
    return extent_of_row(card.slice(0, 1).to_pylist()[0])


def extent_of_row(row: Mapping[str, Any]) -> Extent | None:
    """The extent a scorecard's row records (every row of a scorecard records the same)."""
    if row.get(EVALUATED_COLUMN) is None or row.get(TOTAL_COLUMN) is None:
        return None
    return Extent(int(row[EVALUATED_COLUMN]), int(row[TOTAL_COLUMN]), row.get(STOP_COLUMN) or "")


def partial_versions(cards: pa.Table | None) -> set[tuple[str, str]]:
    """(model version, scenario) of every partial partition in ``cards`` (``read_all`` of
    ``metric_tables``, with its partition columns)."""
    if cards is None or EVALUATED_COLUMN not in cards.column_names:
        return set()
    out = set()
    columns = ["model_version", "scenario", EVALUATED_COLUMN, TOTAL_COLUMN]
    for row in cards.select(columns).to_pylist():
        done, total = row[EVALUATED_COLUMN], row[TOTAL_COLUMN]
        if done is not None and total is not None and done < total:
            out.add((row["model_version"], row["scenario"]))
    return out


__all__ = (
    "EVALUATED_COLUMN",
    "INCUMBENT_TAG",
    "SEQUENTIAL_TAG",
    "STOP_COLUMN",
    "TOTAL_COLUMN",
    "UNIT_INTERVAL_METRICS",
    "ChunkedPartition",
    "Extent",
    "bounds_of",
    "chunk_ends",
    "evaluate_up_to",
    "extent_of",
    "extent_of_outputs",
    "extent_of_row",
    "instance_order",
    "mark_extent",
    "mark_outputs",
    "order_key",
    "ordered_eval_instances",
    "outputs_table",
    "partial_versions",
    "start_partition",
)
