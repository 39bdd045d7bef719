"""``perturbed_instances``: every configured perturbation of each scenario's eval instances."""

from dagster import AssetExecutionContext, AssetIn, BackfillPolicy, asset

from assay.core.records import Instance
from assay.evaluate.run import perturb_eval_instances, select_instances
from assay.storage.code_versions import code_version
from assay.storage.contract import PERTURBED_INSTANCES, SCENARIO, SCENARIO_INSTANCES
from assets.common import by_key, markdown_table, partitioned_output
from assets.partitions import scenario_partitions
from resources import SuiteResource


@asset(
    partitions_def=scenario_partitions,
    ins={SCENARIO_INSTANCES: AssetIn()},
    group_name="scenarios",
    backfill_policy=BackfillPolicy.single_run(),
    kinds={"python", "parquet"},
    code_version=code_version(PERTURBED_INSTANCES),
    io_manager_key="parquet_io_manager",
    metadata={"partition_dimension": SCENARIO},
    description=(
        "Every perturbation the suite lists for a scenario, applied to each eval instance: "
        "original instance id, perturbation spec (name and parameters), family (robustness "
        "or fairness) and the perturbed input. Perturbations that left an input unchanged "
        "are dropped and counted in the metadata."
    ),
)
def perturbed_instances(context: AssetExecutionContext, scenario_instances, suite: SuiteResource):
    loaded = suite.load()
    keys = list(context.partition_keys)
    scenarios = by_key(scenario_instances, keys)
    tables, metadata = {}, {}
    for key in keys:
        config = loaded[key]
        # The same eval instances model_outputs runs (the suite's and the resource's caps).
        evaluated, _ = select_instances(
            config, Instance.from_table(scenarios[key]), suite.max_instances
        )
        perturbed = perturb_eval_instances(config, evaluated)
        tables[key] = perturbed.table()
        kept = {spec: 0 for spec in config.perturbations}
        for row in perturbed.rows:
            kept[row.perturbation] += 1
        metadata[key] = {
            "num_perturbed": len(perturbed.rows),
            "num_unchanged_dropped": sum(perturbed.unchanged.values()),
            "num_eval_instances": len(evaluated),
            "perturbations": ", ".join(config.perturbations) or "-",
            **{f"kept[{spec}]": n for spec, n in kept.items()},
            **{f"unchanged[{spec}]": n for spec, n in perturbed.unchanged.items()},
            "preview": markdown_table(tables[key], 10),
        }
        context.log.info(
            f"{key}: {len(perturbed.rows)} perturbed inputs from {len(evaluated)} instances, "
            f"{sum(perturbed.unchanged.values())} unchanged dropped"
        )
    return partitioned_output(context, tables, metadata)
