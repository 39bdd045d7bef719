"""``scenario_instances``: the normalized instances of each scenario in the suite."""

from collections import Counter

from dagster import AssetExecutionContext, BackfillPolicy, asset

from assay.core.records import Instance
from assay.storage.code_versions import code_version
from assay.storage.contract import SCENARIO, SCENARIO_INSTANCES
from assets.common import markdown_table, partitioned_output
from assets.partitions import scenario_partitions
from resources import SuiteResource


@asset(
    partitions_def=scenario_partitions,
    group_name="scenarios",
    backfill_policy=BackfillPolicy.single_run(),
    kinds={"python", "parquet"},
    code_version=code_version(SCENARIO_INSTANCES),
    io_manager_key="parquet_io_manager",
    metadata={"partition_dimension": SCENARIO},
    description=(
        "Normalized instances of one scenario (id, split, input, references with correct "
        "flags, group tags), with the dataset digest and revision."
    ),
)
def scenario_instances(context: AssetExecutionContext, suite: SuiteResource):
    loaded = suite.load()
    tables, metadata = {}, {}
    for key in context.partition_keys:
        config = loaded[key]
        data = config.build().load()
        if not data.instances:
            raise ValueError(f"scenario {key!r} ({config.scenario}) produced no instances")
        tables[key] = Instance.to_table(data.instances)
        splits = Counter(i.split for i in data.instances)
        context.log.info(f"{key}: {len(data.instances)} instances {dict(splits)}")
        metadata[key] = {
            "scenario": config.scenario,
            "dataset_digest": data.digest,
            "dataset_revision": data.revision,
            "num_instances": len(data.instances),
            **{f"split_{name}": count for name, count in sorted(splits.items())},
            "preview": markdown_table(tables[key].select(["id", "split", "input"]), 10),
        }
    return partitioned_output(context, tables, metadata)
