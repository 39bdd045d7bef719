"""Asset checks: the regression gate on ``metric_tables``, per model version × scenario.

The check is blocking, so a run that evaluates a candidate stops before anything downstream
when the candidate regresses against the champion. It is partitioned like the asset (Dagster
1.13 supports partitioned checks), so the UI shows one verdict per ``model_version|scenario``;
in a range run (a promotion re-evaluating a version across the suite in one step) it gates
every partition of the range and reports them together. Each verdict is also written to the
registry as the version tag ``gate.<scenario>``, which the registry consults before moving
the ``champion`` alias.
"""

from dagster import AssetCheckExecutionContext, AssetCheckResult, Config, MetadataValue, asset_check

from assay.compare.gate import GateConfig, gate_partition
from assay.storage.contract import METRIC_TABLES
from assets.common import evaluation_keys, model_version_of, scenario_of
from assets.partitions import evaluation_partitions
from resources import RegistryResource, StorageResource, SuiteResource


class RegressionGateConfig(Config):
    """Run config of the gate; the gated metrics are each scenario's primary metric."""

    champion_alias: str = "champion"
    margin: float = 0.0
    alpha: float = 0.05


@asset_check(
    asset=METRIC_TABLES,
    blocking=True,
    partitions_def=evaluation_partitions,
    description=(
        "The candidate is not significantly worse than the champion on the scenario's primary "
        "metric (paired, instance-clustered test, Holm-corrected; see assay.compare.gate)."
    ),
)
def regression_gate(
    context: AssetCheckExecutionContext,
    config: RegressionGateConfig,
    storage: StorageResource,
    registry: RegistryResource,
    suite: SuiteResource,
) -> AssetCheckResult:
    gate_config = GateConfig.from_suite(
        suite.load(),
        champion_alias=config.champion_alias,
        margin=config.margin,
        alpha=config.alpha,
    )
    store, reg = storage.store(), registry.open()
    results = [
        gate_partition(
            store,
            reg,
            gate_config,
            candidate=model_version_of(key),
            scenario=scenario_of(key),
            actor=f"dagster:{context.run.run_id}",
        )
        for key in evaluation_keys(context)
    ]
    failed = [r for r in results if not r.passed]
    for result in results:
        log = context.log.warning if not result.passed else context.log.info
        log(f"regression gate {result.candidate}|{result.scenario}: {result.reason}")
    metadata: dict[str, object] = {
        "champion": results[0].champion or "-",
        "reason": (failed or results)[0].reason,
        "num_partitions": len(results),
        "num_failed": len(failed),
        "report": MetadataValue.md("\n\n".join(r.to_markdown() for r in results)),
    }
    if len(results) == 1:
        for c in results[0].comparisons:
            metadata[f"{c.metric}.diff"] = MetadataValue.float(c.diff)
            metadata[f"{c.metric}.p_adjusted"] = MetadataValue.float(c.p_adjusted)
    summary = "; ".join(f"{r.scenario}: {r.reason}" for r in failed) or results[0].reason
    return AssetCheckResult(passed=not failed, metadata=metadata, description=summary)


all_checks = [regression_gate]
regression_gate_check = regression_gate
