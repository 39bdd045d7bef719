"""One model version × scenario partition through the model: what the ``model_outputs``
asset calls. Plain Python, usable from a notebook with a store and a client."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from assay.core.digests import digest_json
from assay.core.environment import runtime_environment, with_environment
from assay.core.pinned_prices import pin_prices
from assay.core.records import Instance, ModelOutput, TokenPrices
from assay.evaluate.registry_prompts import prompt_uses, resolve_prompts
from assay.evaluate.run import (
    EvaluationRun,
    ProgressLog,
    check_failures,
    evaluate,
    perturb_eval_instances,
    perturbed_from_table,
    select_instances,
)
from assay.evaluate.suite import ScenarioConfig
from assay.models.base import ModelClient
from assay.perturbations import PerturbedInstance
from assay.registry import Registry
from assay.storage.contract import PERTURBED_INSTANCES, SCENARIO
from assay.storage.parquet import ParquetStore


def perturbed_inputs(
    store: ParquetStore,
    config: ScenarioConfig,
    every: Sequence[Instance],
    evaluated: Sequence[Instance],
    warn: Callable[[str], None],
) -> tuple[list[PerturbedInstance], str]:
    """The scenario's perturbed inputs and where they came from.

    Read from the stored ``perturbed_instances`` partition when there is one. Without it
    (a run that selected only the evaluation assets) they are derived here with the same
    deterministic function the asset runs, so the outputs are the same either way.
    """
    if not config.perturbations:
        return [], "none"
    partition = {SCENARIO: config.key}
    if store.exists(PERTURBED_INSTANCES, partition):
        table = store.read(PERTURBED_INSTANCES, partition)
        return perturbed_from_table(table, every), PERTURBED_INSTANCES
    warn(
        f"{PERTURBED_INSTANCES} has no partition {config.key!r}; perturbing its inputs inline "
        f"(materialize {PERTURBED_INSTANCES} to see them in the UI)"
    )
    return perturb_eval_instances(config, evaluated).rows, "inline"


@dataclass(frozen=True, slots=True)
class PartitionOutputs:
    """One partition's ``model_outputs`` table and how it was produced."""

    label: str
    table: pa.Table
    run: EvaluationRun
    perturbed_from: str  # "perturbed_instances", "inline" or "none"
    template_id: str
    prompt_templates: tuple[str, ...] = ()  # "prompts:/name/N" the layouts were resolved from
    environment: dict[str, Any] | None = None  # the process that called the model

    def figures(self) -> dict[str, Any]:
        """Counts, rates and digests for the UI and the logs."""
        run, n = self.run, len(self.run.outputs)
        return {
            "num_requests": n,
            "num_perturbed_requests": sum(bool(o.request.perturbation) for o in run.outputs),
            "perturbed_inputs_from": self.perturbed_from,
            "num_failed": run.n_failed,
            "num_cached": run.n_cached,
            "wall_s": round(run.wall_s, 3),
            "requests_per_s": round(n / run.wall_s, 3) if run.wall_s > 0 else None,
            "template_id": self.template_id,
            "prompts_digest": digest_json([o.request.prompt_digest for o in run.outputs]),
            "prompt_templates": ", ".join(self.prompt_templates) or "none",
            "environment": self.environment or {},
        }

    def summary(self) -> str:
        f = self.figures()
        return (
            f"{self.label}: {f['num_requests']} requests ({f['num_perturbed_requests']} "
            f"perturbed), {f['num_cached']} cached, {f['num_failed']} failed, "
            f"{self.run.wall_s:.1f}s"
        )


def run_partition(
    client: ModelClient,
    config: ScenarioConfig,
    scenario_instances: pa.Table,
    *,
    store: ParquetStore,
    label: str,
    max_instances: int | None = None,
    max_failure_fraction: float = 0.0,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    prices: TokenPrices | None = None,
    registry: Callable[[], Registry] | None = None,
) -> PartitionOutputs:
    """Select the eval instances, add their perturbed inputs, run every request through
    ``client`` and refuse the partition when too many requests failed.

    ``prices`` (the version's prices in the registry now) are pinned on every row, so the
    cost scored from this partition stays what it was when the evaluation ran.

    Prompt-registry references in the entry's layouts are resolved first, through
    ``registry`` (opened only when the entry has references), so the partition uses the
    versions their aliases point at now.
    """
    uses = prompt_uses(config)
    if uses:
        if registry is None:
            raise ValueError(f"{uses[0].where}: {uses[0].uri!r} needs a registry to resolve")
        config = resolve_prompts(config, registry())
        for versions in config.prompt_templates.values():
            for v in versions:
                log(f"{label}: {v.field} from {v.uri} (sha256 {v.digest[:12]})")
    every = Instance.from_table(scenario_instances)
    instances, train = select_instances(config, every, max_instances)
    perturbed, source = perturbed_inputs(store, config, every, instances, warn)
    run = evaluate(
        client, config, instances, train, progress=ProgressLog(log, label), perturbed=perturbed
    )
    check_failures(run, max_failure_fraction, label)
    environment = runtime_environment()
    table = with_environment(pin_prices(ModelOutput.to_table(run.outputs), prices), environment)
    templates = sorted({v.uri for vs in config.prompt_templates.values() for v in vs})
    return PartitionOutputs(
        label, table, run, source, config.adapter.template_id, tuple(templates), environment
    )
