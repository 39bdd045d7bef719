"""Asset checks: the regression gate on ``metric_tables``, per model version × scenario.

The gate gates promotions, not evaluations. The check is not blocking and a failed verdict has
severity WARN: evaluating a version (a promotion, the nightly re-evaluation of alias holders,
a backfill, the champion itself) never fails the run because the version trails the champion.
The verdict stays visible per ``model_version|scenario`` partition in the UI; in a range run
(a promotion re-evaluating a version across the suite in one step) one evaluation is reported
per partition of the range. Each verdict is also written to the registry as the version tag
``gate.<scenario>``, for users to read. It does not decide promotions: a gated alias
(``champion`` by default, ``$ASSAY_GATED_ALIASES``) moves only through a promotion decision on
the whole suite's declared criteria (``assay.registry.gating``, ``sensors.gate``).
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    Config,
    MetadataValue,
    Output,
    asset_check,
)

from assay.compare.gate import GateConfig, GateResult, gate_partition
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
    blocking=False,
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
) -> Iterator[AssetCheckResult | AssetCheckEvaluation | Output]:
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
    for result in results:
        log = context.log.warning if not result.passed else context.log.info
        log(f"regression gate {result.candidate}|{result.scenario}: {result.reason}")
    if context.op_execution_context.has_partition_key:  # a run of one partition
        (result,) = results
        yield AssetCheckResult(
            passed=result.passed,
            severity=AssetCheckSeverity.WARN,
            metadata=_metadata(result),
            description=result.reason,
        )
        return
    # A range run has no single partition for an AssetCheckResult to name (Dagster would
    # record it unpartitioned): report each partition's verdict as its own evaluation, then
    # close the check's output.
    for key, result in zip(evaluation_keys(context), results, strict=True):
        yield AssetCheckEvaluation(
            asset_key=AssetKey(METRIC_TABLES),
            check_name="regression_gate",
            passed=result.passed,
            metadata=_metadata(result),
            severity=AssetCheckSeverity.WARN,
            description=result.reason,
            blocking=False,
            partition=str(key),
        )
    (output,) = context.op_execution_context.selected_output_names
    yield Output(None, output_name=output)


def _metadata(result: GateResult) -> dict[str, object]:
    metadata: dict[str, object] = {
        "champion": result.champion or "-",
        "reason": result.reason,
        "report": MetadataValue.md(result.to_markdown()),
    }
    for c in result.comparisons:
        metadata[f"{c.metric}.diff"] = MetadataValue.float(c.diff)
        metadata[f"{c.metric}.p_adjusted"] = MetadataValue.float(c.p_adjusted)
    return metadata


all_checks = [regression_gate]
regression_gate_check = regression_gate
