"""The demo evaluation: register two versions of the bundled model, evaluate them across the
default suite as partitioned Dagster assets, and print the leaderboard.

Run it with ``make demo``. It is safe to run twice: registrations are idempotent and the
request cache answers every request that already ran.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent
HOME = ROOT / ".assay"
os.environ.setdefault("DAGSTER_HOME", str(HOME / "dagster"))
Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)

from dagster import AssetSelection, DagsterInstance, materialize  # noqa: E402

from assay.registry import Registry, default_registry_url  # noqa: E402
from assets import all_assets  # noqa: E402
from assets.partitions import evaluation_partitions, model_version_partitions  # noqa: E402
from definitions import defs  # noqa: E402

MODEL = "smollm2-135m-instruct"
SOURCE = "bundled:smollm2-135m-instruct"
# Two versions that really differ: the raw prompt, and the model's own chat template.
VERSIONS = [
    ({"chat_template": False}, "raw prompt, no chat template"),
    ({"chat_template": True}, "prompt wrapped in the model's chat template"),
]


def register_versions(registry: Registry) -> list[str]:
    registry.get_or_create_model(MODEL, description="SmolLM2-135M-Instruct, bundled GGUF")
    keys = []
    for serving, description in VERSIONS:
        version = registry.find_version(MODEL, SOURCE, serving)
        if version is None:
            version = registry.create_version(
                MODEL, SOURCE, serving=serving, description=description
            )
        keys.append(version.key)
    return keys


def run(selection: AssetSelection, partition_key: str, instance: DagsterInstance) -> None:
    started = time.perf_counter()
    result = materialize(
        all_assets,
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=defs.resources,
    )
    if not result.success:
        sys.exit(f"materialization of {partition_key} failed; see the Dagster UI (make ui)")
    print(f"  {partition_key}: done in {time.perf_counter() - started:.1f}s", flush=True)


def main() -> None:
    registry = Registry.open(default_registry_url())
    keys = register_versions(registry)
    print(f"registered model versions: {', '.join(keys)}")

    instance = DagsterInstance.get()
    instance.add_dynamic_partitions(model_version_partitions.name, keys)
    scenarios = evaluation_partitions.get_partitions_def_for_dimension("scenario")

    print("materializing registered_models")
    for key in keys:
        run(AssetSelection.assets("registered_models"), key, instance)
    print("materializing scenario_instances")
    for scenario in scenarios.get_partition_keys():
        run(AssetSelection.assets("scenario_instances"), scenario, instance)
    print("materializing model_outputs → instance_scores, metric_tables")
    evaluation = AssetSelection.assets("model_outputs", "instance_scores", "metric_tables")
    for key in keys:
        for scenario in scenarios.get_partition_keys():
            run(evaluation, f"{key}|{scenario}", instance)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    print("materializing rankings")
    run(AssetSelection.assets("rankings"), today, instance)

    record = instance.get_latest_materialization_event(
        AssetSelection.assets("rankings").resolve(all_assets).pop()
    )
    board = record.asset_materialization.metadata["leaderboard"].value if record else ""
    print(f"\nLeaderboard as of {today}\n\n{board}\n")
    print(f"Parquet tables:   {HOME / 'storage'}")
    print(f"Registry:         {default_registry_url()}")
    print(f"Dagster home:     {os.environ['DAGSTER_HOME']}")
    print("Next: `make ui` and open http://127.0.0.1:3000 to see the asset graph, partitions")
    print("and materializations; `assay registry history` lists the registry's event log.")


if __name__ == "__main__":
    main()
