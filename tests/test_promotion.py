"""Promotion → re-evaluation: registry events drive the sensor, one run evaluates the whole
suite, rankings update and the registry records the evaluation."""

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest
from dagster import (
    AssetSelection,
    DagsterInstance,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from assay.cli import main as assay_main
from assay.evaluate.suite import load_suite
from assay.registry import EventKind, Registry
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import (
    ModelsResource,
    RegistryResource,
    SuiteResource,
    assay_resources,
)
from sensors.evaluations import evaluation_recorder_sensor
from sensors.promotion import (
    EVALUATION_ASSETS,
    EVALUATION_KEYS,
    RANGE_END,
    RANGE_START,
    model_promotion_sensor,
)

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def setup(tmp_path, model_cache_dir):
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry.open(registry_url)
    registry.create_model(MODEL)
    registry.create_version(MODEL, "bundled:smollm2-135m-instruct", serving={"chat_template": True})
    storage = str(tmp_path / "storage")
    resources = assay_resources(
        storage_url=storage,
        registry_url=registry_url,
        suite=SuiteResource(max_instances=1),
        models=ModelsResource(
            cache_dir=str(model_cache_dir),
            request_cache_url=f"sqlite:///{tmp_path / 'requests.db'}",
        ),
    )
    with instance_for_test() as instance:
        yield {
            "registry": registry,
            "registry_url": registry_url,
            "resources": resources,
            "instance": instance,
            "storage": storage,
        }


def tick(setup, cursor):
    """One sensor evaluation, applied to the instance the way the daemon applies it."""
    instance: DagsterInstance = setup["instance"]
    context = build_sensor_context(instance=instance, cursor=cursor, resources=setup["resources"])
    result = model_promotion_sensor(context)
    if isinstance(result, SensorResult):
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
    return result


def test_promotion_launches_one_run_for_the_whole_suite(setup):
    registry, instance = setup["registry"], setup["instance"]
    scenarios = load_suite().keys
    assert len(scenarios) > 1

    first = tick(setup, None)
    assert isinstance(first, SensorResult)
    assert first.run_requests == []  # a new version is not yet a promotion
    assert instance.get_dynamic_partitions("model_version") == [f"{MODEL}@v1"]
    cursor = first.cursor

    registry.set_alias(MODEL, "champion", 1)
    second = tick(setup, cursor)
    assert isinstance(second, SensorResult)
    assert len(second.run_requests) == 1  # N scenarios, one run
    request: RunRequest = second.run_requests[0]
    assert request.tags[RANGE_START] == f"{MODEL}@v1|{scenarios[0]}"
    assert request.tags[RANGE_END] == f"{MODEL}@v1|{scenarios[-1]}"
    assert set(request.asset_selection) == set(EVALUATION_KEYS)
    # The same events give the same run key, so a repeated tick launches nothing new.
    assert tick(setup, cursor).run_requests[0].run_key == request.run_key
    assert isinstance(tick(setup, second.cursor), SkipReason)

    # The suite's scenarios are materialized once when the suite is deployed (a backfill).
    for scenario in scenarios:
        materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key=scenario,
            instance=instance,
            resources=setup["resources"],
        )
    runs_before = len(instance.get_run_records())
    result = materialize(
        all_assets,
        selection=EVALUATION_ASSETS,
        instance=instance,
        resources=setup["resources"],
        tags=request.tags,
    )
    assert result.success
    store = ParquetStore(setup["storage"])
    evaluated = {p["scenario"] for p in store.partitions("metric_tables")}
    assert evaluated == set(scenarios)
    assert len(instance.get_run_records()) == runs_before + 1

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    ranked = materialize(
        all_assets,
        selection=AssetSelection.assets("rankings"),
        partition_key=today,
        instance=instance,
        resources=setup["resources"],
    )
    assert ranked.success
    board = store.read("rankings", {"day": today})
    assert board["model_version"].to_pylist() == [f"{MODEL}@v1"]
    reported = materialize(
        all_assets,
        selection=AssetSelection.assets("dashboard"),
        instance=instance,
        resources=setup["resources"],
    )
    assert reported.success
    page = (Path(setup["storage"]) / "explorer" / "index.html").read_text()
    assert f"{MODEL}@v1" in page and f"Leaderboard {today}" in page
    link = reported.asset_materializations_for_node("dashboard")[0].metadata["explorer"]
    assert Path(link.value) == Path(setup["storage"]).resolve() / "explorer" / "index.html"

    context = build_sensor_context(instance=instance, resources=setup["resources"])
    evaluation_recorder_sensor(context)
    recorded = [e for e in registry.events() if e.kind is EventKind.EVALUATION_RECORDED]
    assert {e.payload["scenario"] for e in recorded} == set(scenarios)
    version = registry.get_version(f"{MODEL}@v1")
    arithmetic = store.read(
        "metric_tables", {"model_version": f"{MODEL}@v1", "scenario": "arithmetic"}
    )
    exact = arithmetic.filter(pc.equal(arithmetic["metric"], "exact_match"))["mean"][0].as_py()
    assert float(version.tags["eval.arithmetic.exact_match"]) == exact


def test_history_shows_the_move_and_the_evaluation(setup, capsys):
    registry = setup["registry"]
    registry.create_version(
        MODEL, "bundled:smollm2-135m-instruct", serving={"chat_template": False}
    )
    registry.set_alias(MODEL, "champion", 1)
    registry.set_alias(MODEL, "champion", 2)
    registry.record_evaluation(f"{MODEL}@v2", "arithmetic", {"exact_match": 0.25}, run_id="r1")
    assert assay_main(["registry", "history", "--registry-url", setup["registry_url"]]) == 0
    out = capsys.readouterr().out
    assert "alias_moved" in out and "evaluation_recorded" in out


def test_stage_change_to_production_is_a_promotion(setup):
    first = tick(setup, None)
    setup["registry"].transition_stage(MODEL, 1, "Production")
    result = tick(setup, first.cursor)
    assert len(result.run_requests) == 1
    assert result.run_requests[0].tags["assay/model_version"] == f"{MODEL}@v1"


def test_unreachable_registry_skips_and_keeps_the_cursor(setup):
    resources = dict(setup["resources"])
    # Nothing listens on port 9: the connection is refused at once.
    url = "postgresql+psycopg://assay:s3cret-pw@127.0.0.1:9/registry"
    resources["registry"] = RegistryResource(url=url)
    context = build_sensor_context(instance=setup["instance"], cursor="7", resources=resources)
    result = model_promotion_sensor(context)
    assert isinstance(result, SkipReason)
    assert "unreachable" in result.skip_message
    assert "s3cret-pw" not in result.skip_message
    assert context.cursor == "7"


def test_events_per_tick_are_capped(setup, monkeypatch):
    monkeypatch.setenv("ASSAY_SENSOR_MAX_EVENTS", "1")
    first = tick(setup, None)
    assert first.cursor == "1"  # model_created only; version_created waits for the next tick
    second = tick(setup, first.cursor)
    assert second.cursor == "2"
    assert setup["instance"].get_dynamic_partitions("model_version") == [f"{MODEL}@v1"]


def test_scenario_shaped_runs_cover_the_suite_one_partition_each(setup, monkeypatch):
    monkeypatch.setenv("ASSAY_EVALUATION_RUNS", "scenario")
    first = tick(setup, None)
    setup["registry"].set_alias(MODEL, "champion", 1)
    result = tick(setup, first.cursor)
    scenarios = load_suite().keys
    assert [r.partition_key for r in result.run_requests] == [
        f"{MODEL}@v1|{scenario}" for scenario in scenarios
    ]
    for request in result.run_requests:
        assert RANGE_START not in request.tags and RANGE_END not in request.tags
        assert request.tags["assay/model_version"] == f"{MODEL}@v1"
        assert request.tags["assay/partitions"] == request.partition_key
        assert set(request.asset_selection) == set(EVALUATION_KEYS)
    assert len({r.run_key for r in result.run_requests}) == len(scenarios)


def test_an_unknown_run_shape_is_named(setup, monkeypatch):
    first = tick(setup, None)
    setup["registry"].set_alias(MODEL, "champion", 1)
    monkeypatch.setenv("ASSAY_EVALUATION_RUNS", "per-gpu")
    # The tick fails before it handles an event: no refusal is written, nothing is launched.
    events = len(setup["registry"].events())
    with pytest.raises(ValueError, match="ASSAY_EVALUATION_RUNS='per-gpu'"):
        tick(setup, first.cursor)
    assert len(setup["registry"].events()) == events
