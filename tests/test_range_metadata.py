"""A partition-range run (a promotion, a nightly run, a single-run backfill) leaves each
partition's own metadata on its materialization, as a run of that partition alone would:
path, request counts and digests, headline metrics, scorecard and explorer link.

Two versions of the bundled model that really differ (raw prompt vs chat template) are
evaluated on one scenario in one range run, through ``materialize()`` with Dagster's range
tags; each partition's materialization in the instance is then checked against that
partition's stored files.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow.compute as pc
import pytest
from dagster import AssetKey, AssetRecordsFilter, AssetSelection, instance_for_test, materialize

from assay.registry import Registry
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import ModelsResource, SuiteResource, assay_resources

MODEL = "smollm2-135m-instruct"
SCENARIO = "arithmetic"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@pytest.fixture(scope="module")
def ranged(tmp_path_factory, model_cache_dir) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("range")
    registry_url = f"sqlite:///{tmp / 'registry.db'}"
    with Registry.open(registry_url) as registry:
        registry.create_model(MODEL)
        keys = [
            registry.create_version(
                MODEL, "bundled:smollm2-135m-instruct", serving={"chat_template": chat}
            ).key
            for chat in (False, True)
        ]
    storage_url = str(tmp / "storage")
    resources = assay_resources(
        storage_url=storage_url,
        registry_url=registry_url,
        suite=SuiteResource(max_instances=2),
        models=ModelsResource(
            cache_dir=str(model_cache_dir), request_cache_url=f"sqlite:///{tmp / 'requests.db'}"
        ),
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("model_version", keys)

        def run(selection: AssetSelection, start: str, end: str | None = None) -> None:
            tags = {RANGE_START: start, RANGE_END: end} if end else None
            done = materialize(
                all_assets,
                selection=selection,
                partition_key=None if end else start,
                tags=tags,
                instance=instance,
                resources=resources,
            )
            assert done.success

        run(AssetSelection.assets("registered_models"), keys[0], keys[1])
        run(AssetSelection.assets("scenario_instances"), SCENARIO)
        evaluation = AssetSelection.assets("model_outputs", "instance_scores", "metric_tables")
        run(evaluation, f"{keys[0]}|{SCENARIO}", f"{keys[1]}|{SCENARIO}")
        yield {"instance": instance, "keys": keys, "store": ParquetStore(storage_url)}


def _metadata(instance, asset: str, partition: str) -> dict[str, Any]:
    """The partition's latest materialization's metadata, as plain values."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"no materialization of {asset} {partition}"
    materialization = records[0].asset_materialization
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def test_each_version_partition_shows_its_own_registry_entry(ranged) -> None:
    for chat, key in zip((False, True), ranged["keys"], strict=True):
        shown = _metadata(ranged["instance"], "registered_models", key)
        assert shown["serving"]["chat_template"] is chat
        assert shown["path"] == ranged["store"].path("registered_models", {"model_version": key})
        assert shown["num_partitions"] == 2


def test_each_evaluation_partition_shows_its_own_outputs(ranged) -> None:
    store, firsts = ranged["store"], []
    for key in ranged["keys"]:
        where = {"model_version": key, "scenario": SCENARIO}
        shown = _metadata(ranged["instance"], "model_outputs", f"{key}|{SCENARIO}")
        assert shown["path"] == store.path("model_outputs", where)
        outputs = store.read("model_outputs", where)
        assert shown["num_requests"] == outputs.num_rows
        # The preview lists this partition's completions (markdown escapes '|' and newlines).
        first = outputs["text"][0].as_py().replace("|", "\\|").replace("\n", "\\n")[:60]
        assert first in shown["preview"]
        assert shown["num_partitions"] == 2
        firsts.append(first)
    # The raw prompt and the chat template give different completions, so each preview above
    # was its own partition's, not one copied onto both.
    assert firsts[0] != firsts[1]


def test_each_scoring_partition_shows_its_own_headline_and_link(ranged) -> None:
    store, latencies = ranged["store"], []
    for key in ranged["keys"]:
        where = {"model_version": key, "scenario": SCENARIO}
        shown = _metadata(ranged["instance"], "metric_tables", f"{key}|{SCENARIO}")
        assert shown["path"] == store.path("metric_tables", where)
        card = store.read("metric_tables", where)
        card = card.filter(pc.and_(pc.equal(card["group"], ""), pc.equal(card["perturbation"], "")))
        means = {r["metric"]: r["mean"] for r in card.to_pylist() if not math.isnan(r["mean"])}
        headline = {k: v for k, v in shown.items() if k in means}
        assert {"exact_match", "latency_s"} <= headline.keys()
        for metric, value in headline.items():
            assert value == pytest.approx(means[metric], rel=1e-12), (key, metric)
        assert str(shown["explorer"]).endswith(".html") and SCENARIO in str(shown["explorer"])
        assert "exact_match" in shown["scorecard"]
        latencies.append(shown["latency_s"])
    assert latencies[0] != latencies[1]
    # instance_scores carries its own file per partition too.
    paths = {
        _metadata(ranged["instance"], "instance_scores", f"{key}|{SCENARIO}")["path"]
        for key in ranged["keys"]
    }
    assert len(paths) == 2
