"""A rescoring backfill in process: partitions/min of the Dagster step against the library alone.

A metric change re-materializes ``instance_scores`` and ``metric_tables`` for every stored
``model_outputs`` partition without calling a model. This builds ``--versions`` ×
``--scenarios`` partitions (generation entries of ``arithmetic_qa``, ``--instances`` each):
the bundled model answers one version's partitions, and the other versions get copies of
those outputs (scoring reads only stored outputs, so the copies score like real ones). Then,
in the same run:

- **library alone** (the reference): read each partition's outputs, score, write both tables;
- **Dagster step**: one range run of ``instance_scores,metric_tables`` through
  ``materialize()`` on a SQLite instance (the in-process executor): inputs through the Parquet
  IO manager, one materialization per partition with its metadata.

Printed: seconds, partitions/min and the overhead per partition ((step − reference) / N).
``--profile`` prints the last measured step's top functions by cumulative time (with
``--postgres``: the Postgres instance with batched events, the deployment's setting).

    .venv/bin/python benchmarks/bench_rescoring.py [--versions 20] [--scenarios 10]
        [--instances 8] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from peers import print_header

REPO = Path(__file__).resolve().parent.parent
# Appended: a PYTHONPATH naming another checkout (to measure its code) comes first.
sys.path.append(str(REPO))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_deploy import suite_yaml  # noqa: E402  (the same synthetic suite)
from dagster import AssetSelection, instance_for_test, materialize  # noqa: E402

from assay.registry import Registry  # noqa: E402
from assay.storage.parquet import ParquetStore  # noqa: E402

MODEL = "bench"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def library_rescore(store: ParquetStore, scorer, versions, scenarios) -> float:
    """The backfill's work without Dagster: read, score (``SuiteScorer``, as the asset does)
    and write every partition."""
    start = time.perf_counter()
    instances = {s: store.read("scenario_instances", {"scenario": s}) for s in scenarios}
    for version in versions:
        for scenario in scenarios:
            dims = {"model_version": version, "scenario": scenario}
            outputs = store.read("model_outputs", dims)
            scored = scorer.score(
                version, scenario, instances[scenario], outputs, seed_key=f"{version}|{scenario}"
            )
            store.write("bench_instance_scores", dims, scored.stats_table)
            store.write("bench_metric_tables", dims, scored.card_table)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--postgres", action="store_true", help="also on a Postgres instance")
    parser.add_argument("--batch", type=int, default=100, help="DAGSTER_EVENT_BATCH_SIZE")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the last step measured (Postgres, events batched, with --postgres)",
    )
    args = parser.parse_args()
    n = args.versions * args.scenarios
    print_header(f"rescoring backfill in process: {args.versions} x {args.scenarios} = {n}")
    root = Path(tempfile.mkdtemp(prefix="assay-bench-rescoring-"))
    try:
        (root / "suite.yaml").write_text(suite_yaml(args.scenarios, args.instances))
        # The scenario partitions come from the suite when the assets are defined.
        os.environ["ASSAY_SUITE"] = str(root / "suite.yaml")
        from assets import all_assets
        from resources import ModelsResource, SuiteResource, assay_resources

        registry_url = f"sqlite:///{root / 'registry.db'}"
        registry = Registry.open(registry_url)
        registry.create_model(MODEL)
        versions = [
            registry.create_version(MODEL, "bundled:smollm2-135m-instruct").key
            for _ in range(args.versions)
        ]
        scenarios = [f"s{i:02d}" for i in range(args.scenarios)]
        store = ParquetStore(str(root / "storage"))
        resources = assay_resources(
            storage_url=str(root / "storage"),
            registry_url=registry_url,
            suite=SuiteResource(path=str(root / "suite.yaml")),
            models=ModelsResource(
                cache_dir=str(REPO / ".assay" / "test-cache"),
                request_cache_url=f"sqlite:///{root / 'requests.db'}",
            ),
        )

        def run(instance, select: str, first: str, last: str) -> float:
            start = time.perf_counter()
            done = materialize(
                all_assets,
                selection=AssetSelection.assets(*select.split(",")),
                tags={RANGE_START: first, RANGE_END: last},
                instance=instance,
                resources=resources,
            )
            assert done.success
            return time.perf_counter() - start

        first, last = f"{versions[0]}|{scenarios[0]}", f"{versions[-1]}|{scenarios[-1]}"
        with instance_for_test() as instance:
            instance.add_dynamic_partitions("model_version", versions)
            run(instance, "registered_models", versions[0], versions[-1])
            run(instance, "scenario_instances", scenarios[0], scenarios[-1])
            run(instance, "model_outputs", first, f"{versions[0]}|{scenarios[-1]}")
        for scenario in scenarios:  # the other versions: copies of the first one's outputs
            table = store.read(
                "model_outputs", {"model_version": versions[0], "scenario": scenario}
            )
            for version in versions[1:]:
                store.write(
                    "model_outputs", {"model_version": version, "scenario": scenario}, table
                )

        from assay.scoring.partition import SuiteScorer

        models = resources["models"]
        scorer = SuiteScorer(resources["suite"].load(), resources["registry"].open, models.client)
        reference = library_rescore(store, scorer, versions, scenarios)
        rows = [("library alone (reference)", reference)]
        postgres = None
        setups: list[tuple[str, dict | None, str]] = [("SQLite instance", None, "0")]
        if args.postgres:
            from deploy.stack import PostgresServer

            postgres = PostgresServer()
            # psycopg2 named: dagster-postgres's NOTIFY fails under psycopg 3 (deploy/dagster.yaml)
            url = postgres.url(driver=False).replace("postgresql://", "postgresql+psycopg2://")
            storage = {"postgres": {"postgres_url": url}}
            setups += [
                ("Postgres instance", storage, "0"),
                ("Postgres, events batched", storage, str(args.batch)),
            ]
        profile = cProfile.Profile() if args.profile else None
        try:
            for i, (name, storage, batch) in enumerate(setups):
                profiled = profile is not None and i == len(setups) - 1
                # Read when each event is stored: Dagster writes a range's materializations
                # in batches of this size (0: one by one).
                os.environ["DAGSTER_EVENT_BATCH_SIZE"] = batch
                overrides = {"storage": storage} if storage else None
                with instance_for_test(overrides=overrides) as instance:
                    instance.add_dynamic_partitions("model_version", versions)
                    if profiled:
                        profile.enable()
                    rows.append((name, run(instance, "instance_scores,metric_tables", first, last)))
                    if profiled:
                        profile.disable()
                    if storage:
                        instance.wipe()
        finally:
            os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
            if postgres is not None:
                postgres.remove()
        print(
            f"{'path':30s} {'seconds':>8s} {'partitions/min':>15s} {'overhead ms/partition':>22s}"
        )
        for name, seconds in rows:
            overhead = (seconds - reference) / n * 1000
            print(f"{name:30s} {seconds:8.1f} {n / seconds * 60:15.0f} {overhead:22.1f}")
        for name, seconds in rows[1:]:
            print(f"ratio {name} / library alone: {seconds / reference:.2f}x")
        if profile:
            stats = pstats.Stats(profile)
            stats.sort_stats("cumulative").print_stats(60)
            stats.sort_stats("tottime").print_stats(25)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
