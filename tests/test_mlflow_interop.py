"""MLflow interop against a real ``mlflow server`` on loopback (SQLite backend, local artifacts).

The server is started once for the module (it takes tens of seconds to create its tables)
and stopped at teardown; each test uses its own model names and a fresh assay registry.
"""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetMaterialization,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)

from assay.core.records import InstanceStat
from assay.integrations.mlflow import (
    AliasChange,
    MlflowRegistryWatcher,
    ModelAliases,
    alias_map_from_json,
    alias_map_to_json,
    diff_alias_maps,
    export_evaluation,
    mirror_changes,
    redact_uri,
)
from assay.registry import EventKind, Registry
from assay.scoring.summary import scorecard, scorecard_table
from assay.storage.parquet import ParquetStore
from resources import ModelsResource, RegistryResource, StorageResource, SuiteResource
from sensors.mlflow import build_mlflow_alias_sensor, build_mlflow_export_sensor, mlflow_sensors
from sensors.promotion import model_promotion_sensor

mlflow = pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'assay[mlflow]'")

# --------------------------------------------------------------------------- pure diffing


def test_diff_reports_set_moved_removed_and_recreated_models() -> None:
    old = {
        "a": ModelAliases(100, {"champion": "1", "challenger": "2", "old": "1"}),
        "gone": ModelAliases(200, {"champion": "3"}),
        "reborn": ModelAliases(300, {"champion": "2", "stale": "1"}),
    }
    new = {
        "a": ModelAliases(100, {"champion": "2", "challenger": "2", "fresh": "3"}),
        "reborn": ModelAliases(301, {"champion": "2"}),
        "newcomer": ModelAliases(400, {"prod": "1"}),
    }
    # Written out by hand from the two maps above.
    assert diff_alias_maps(old, new) == [
        AliasChange("a", "champion", "1", "2", 100),
        AliasChange("a", "fresh", None, "3", 100),
        AliasChange("a", "old", "1", None, 100),
        AliasChange("gone", "champion", "3", None, 200),
        AliasChange("newcomer", "prod", None, "1", 400),
        # Same alias, same number, but a new model: a new version, so a fresh "set".
        AliasChange("reborn", "champion", None, "2", 301),
        AliasChange("reborn", "stale", "1", None, 300),
    ]
    assert [c.kind for c in diff_alias_maps(old, new)][:3] == ["moved", "set", "removed"]
    assert diff_alias_maps(new, new) == []


def test_cursor_round_trips_and_bad_cursors_name_the_fault() -> None:
    snap = {"m": ModelAliases(5, {"champion": "1"}), "n": ModelAliases(7, {})}
    assert alias_map_from_json(alias_map_to_json(snap)) == snap
    assert alias_map_from_json(None) == {}
    with pytest.raises(ValueError, match="not valid JSON"):
        alias_map_from_json("{nope")
    with pytest.raises(ValueError, match=r"model 'm'.*created_ms"):
        alias_map_from_json(json.dumps({"m": {"created_ms": "x", "aliases": {}}}))
    with pytest.raises(ValueError, match=r"model 'm'.*aliases"):
        alias_map_from_json(json.dumps({"m": {"created_ms": 1, "aliases": {"a": 1}}}))


def test_credentials_are_redacted_and_sensors_need_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    assert redact_uri("https://alice:s3cret@mlflow.example:8443/path") == (
        "https://mlflow.example:8443/path"
    )
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert [s.name for s in mlflow_sensors()] == ["mlflow_alias_sensor", "mlflow_export_sensor"]
    # Simulates an install without the extra: mlflow cannot be uninstalled for one test.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert mlflow_sensors() == []


# --------------------------------------------------------------------------- real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def client(mlflow_uri: str):
    return mlflow.MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)


@pytest.fixture
def model_dir_run(client, tmp_path: Path) -> str:
    """A run holding a tiny model directory as artifact ``model``; returns the run id."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    found = client.get_experiment_by_name("models")
    experiment = found.experiment_id if found else client.create_experiment("models")
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(model), "model")
    return run.info.run_id


def _tick(sensor, cursor: str | None, registry_url: str):
    context = build_sensor_context(
        cursor=cursor, resources={"registry": RegistryResource(url=registry_url)}
    )
    return sensor(context), context


def _alias_events(reg: Registry, model: str, after: int = 0):
    kinds = (EventKind.ALIAS_SET, EventKind.ALIAS_MOVED, EventKind.ALIAS_REMOVED)
    return [e for e in reg.events(after_id=after, model=model) if e.kind in kinds]


def _promotion_runs(registry_url: str, tmp_path: Path) -> list:
    """One tick of assay's own model_promotion_sensor on a fresh Dagster instance."""
    storage = str(tmp_path / "storage")
    resources = {
        "registry": RegistryResource(url=registry_url),
        "storage": StorageResource(base_url=storage),
        "suite": SuiteResource(max_instances=1),
        "models": ModelsResource(cache_dir=str(tmp_path / "model-cache")),
    }
    with instance_for_test() as instance:
        context = build_sensor_context(instance=instance, cursor=None, resources=resources)
        return model_promotion_sensor(context).run_requests


def test_sensor_mirrors_alias_set_move_recreate_and_delete(
    client, mlflow_uri: str, model_dir_run: str, registry_url: str, tmp_path: Path, monkeypatch
) -> None:
    # MLflow's local artifact store is where the mirrored versions' files are.
    monkeypatch.setenv("ASSAY_MODEL_ROOTS", client.get_run(model_dir_run).info.artifact_uri)
    name = "clf"
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{model_dir_run}/model", run_id=model_dir_run)
    client.create_model_version(name, "s3://bucket/clf-v2")
    client.set_registered_model_alias(name, "champion", "1")
    sensor = build_mlflow_alias_sensor(mlflow_uri, move_gated_aliases=True)
    reg = Registry.open(registry_url)

    # First tick: the alias appears in assay, on a version with a servable local source.
    result, _ = _tick(sensor, None, registry_url)
    assert isinstance(result, SensorResult)
    cursor = result.cursor
    assert alias_map_from_json(cursor)[name].aliases == {"champion": "1"}
    champion = reg.resolve(f"{name}@champion")
    artifact_root = client.get_run(model_dir_run).info.artifact_uri
    assert champion.source == f"hf:{Path(artifact_root) / 'model'}"
    assert champion.tags["mlflow.version"] == "1"
    events = _alias_events(reg, name)
    assert [(e.kind, e.payload["alias"], e.version) for e in events] == [
        (EventKind.ALIAS_SET, "champion", 1)
    ]
    # assay's promotion sensor turns that event into one evaluation run of the version.
    runs = _promotion_runs(registry_url, tmp_path)
    assert [r.tags["assay/model_version"] for r in runs] == [f"{name}@v1"]

    # Nothing changed: no new events, same cursor.
    last = events[-1].id
    result, _ = _tick(sensor, cursor, registry_url)
    assert result.cursor == cursor and "no alias changes" in result.skip_reason.skip_message
    assert _alias_events(reg, name, last) == []

    # Move the alias to version 2, an s3 source assay cannot load: deferred, nothing written,
    # and the cursor still says "1" so the next tick tries again.
    client.set_registered_model_alias(name, "champion", "2")
    result, _ = _tick(sensor, cursor, registry_url)
    assert "deferred" in result.skip_reason.skip_message
    assert alias_map_from_json(result.cursor)[name].aliases == {"champion": "1"}
    assert _alias_events(reg, name, last) == [] and len(reg.list_versions(name)) == 1
    cursor = result.cursor

    # Naming a servable source on the MLflow version lets the retry through.
    served = "openai:http://127.0.0.1:1/v1#clf-v2"
    client.set_model_version_tag(name, "2", "assay.source", served)
    result, _ = _tick(sensor, cursor, registry_url)
    cursor = result.cursor
    moved = _alias_events(reg, name, last)
    assert [(e.kind, e.payload["before"], e.payload["after"]) for e in moved] == [
        (EventKind.ALIAS_MOVED, 1, 2)
    ]
    v2 = reg.resolve(f"{name}@champion")
    assert v2.source == served and v2.tags["mlflow.source"] == "s3://bucket/clf-v2"
    last = moved[-1].id

    # Delete and re-create between two ticks with the very same alias map: only the creation
    # time tells them apart, and the new version 2 must be registered as a new assay version.
    client.delete_registered_model(name)
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, f"runs:/{model_dir_run}/model", run_id=model_dir_run)
    client.set_registered_model_alias(name, "champion", "2")
    result, _ = _tick(sensor, cursor, registry_url)
    assert alias_map_from_json(result.cursor)[name].aliases == {"champion": "2"}
    assert (
        alias_map_from_json(result.cursor)[name].created_ms
        != alias_map_from_json(cursor)[name].created_ms
    )
    cursor = result.cursor
    reborn = reg.resolve(f"{name}@champion")
    assert reborn.version == 3 and reborn.tags["mlflow.version"] == "2"
    assert [e.kind for e in _alias_events(reg, name, last)] == [EventKind.ALIAS_MOVED]
    last = _alias_events(reg, name)[-1].id

    # Deleted for good: dropped from the cursor, the mirrored alias removed, no crash.
    client.delete_registered_model(name)
    result, _ = _tick(sensor, cursor, registry_url)
    assert name not in alias_map_from_json(result.cursor)
    assert [e.kind for e in _alias_events(reg, name, last)] == [EventKind.ALIAS_REMOVED]
    assert reg.get_model(name).aliases == {}
    assert len(reg.list_versions(name)) == 3  # history stays


def test_mlflow_writers_do_not_move_a_gated_alias_by_default(
    client, mlflow_uri: str, model_dir_run: str, registry_url: str, monkeypatch
) -> None:
    # Anyone who may write to MLflow's registry is not an assay promoter.
    monkeypatch.delenv("ASSAY_MLFLOW_SYNC_MOVES_GATED", raising=False)
    monkeypatch.setenv("ASSAY_GATED_ALIASES", "champion")
    name = "guarded"
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{model_dir_run}/model", run_id=model_dir_run)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "1")
    reg = Registry.open(registry_url)
    result, _ = _tick(build_mlflow_alias_sensor(mlflow_uri), None, registry_url)
    assert "champion" in result.skip_reason.skip_message
    assert "gated alias" in result.skip_reason.skip_message
    # The version is registered (so it can be evaluated), challenger mirrored, champion not.
    assert reg.get_model(name).aliases == {"challenger": 1}
    assert [(e.kind, e.payload["alias"]) for e in _alias_events(reg, name)] == [
        (EventKind.ALIAS_SET, "challenger")
    ]
    # The operator may let the sync ask: the next change of champion goes through the
    # promotion decision like any other request, so it waits for a verdict.
    monkeypatch.setenv("ASSAY_MLFLOW_SYNC_MOVES_GATED", "1")
    client.create_model_version(name, f"runs:/{model_dir_run}/model", run_id=model_dir_run)
    client.set_registered_model_alias(name, "champion", "2")
    result, _ = _tick(build_mlflow_alias_sensor(mlflow_uri), result.cursor, registry_url)
    assert "guarded@champion: 1 -> 2 (pending" in result.skip_reason.skip_message
    assert reg.get_model(name).aliases == {"challenger": 1}
    (waiting,) = reg.open_pending()
    assert (waiting.payload["candidate"], waiting.actor) == ("guarded@v2", "mlflow-sync")


def test_unreachable_mlflow_skips_and_keeps_the_cursor(
    registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = alias_map_to_json({"m": ModelAliases(1, {"champion": "1"})})
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    result, context = _tick(build_mlflow_alias_sensor(dead), cursor, registry_url)
    assert isinstance(result, SkipReason)
    assert "unreachable" in result.skip_message and "cursor unchanged" in result.skip_message
    assert context.cursor == cursor
    assert Registry.open(registry_url).events() == []

    for variable in ("ASSAY_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    result, context = _tick(build_mlflow_alias_sensor(), cursor, registry_url)
    assert "MLFLOW_TRACKING_URI" in result.skip_message and context.cursor == cursor


def test_export_logs_a_run_and_links_the_mirrored_model_version(
    client, mlflow_uri: str, registry_url: str, tmp_path: Path
) -> None:
    name = "exported"
    client.create_registered_model(name)
    # Tags name a servable source and serving config for artifacts assay cannot load itself.
    client.create_model_version(
        name,
        "s3://bucket/exported-v1",
        tags={
            "assay.source": "bundled:smollm2-135m-instruct",
            "assay.serving": '{"dtype": "bfloat16"}',
        },
    )
    client.set_registered_model_alias(name, "champion", "1")
    watcher = MlflowRegistryWatcher(mlflow_uri)
    snap = {k: v for k, v in watcher.snapshot().items() if k == name}
    reg = Registry.open(registry_url)
    [result] = mirror_changes(watcher.with_targets(diff_alias_maps({}, snap)), reg, move_gated=True)
    version = reg.get_version(result.key)
    assert version.source == "bundled:smollm2-135m-instruct"
    assert version.serving["dtype"] == "bfloat16"

    # acc per instance 1, 0, 1, 1 → mean 0.75; latency 0.5 on one instance only.
    stats = [
        InstanceStat(f"i{i}", "acc", v, template_id="qa@v1") for i, v in enumerate([1, 0, 1, 1])
    ] + [InstanceStat("i0", "latency_s", 0.5, family="efficiency", template_id="qa@v1")]
    card = scorecard_table(scorecard(stats, seed_key="x"))
    scores = InstanceStat.to_table(stats)
    exported = export_evaluation(
        mlflow_uri, version.key, "boolq", card, scores, version, dataset_digest="sha256:abc"
    )

    run = client.get_run(exported.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {
        "model_version": f"{name}@v1",
        "scenario": "boolq",
        "template_id": "qa@v1",
        "scoring_version": run.data.params["scoring_version"],
        "dataset_digest": "sha256:abc",
    }
    acc = next(r for r in card.to_pylist() if r["metric"] == "acc")
    assert run.data.metrics["acc.mean"] == pytest.approx(0.75)
    assert run.data.metrics["acc.ci_low"] == pytest.approx(acc["ci_low"])
    assert run.data.metrics["acc.ci_high"] == pytest.approx(acc["ci_high"])
    assert acc["ci_low"] <= 0.75 <= acc["ci_high"]
    assert run.data.metrics["latency_s.mean"] == pytest.approx(0.5)

    local = client.download_artifacts(exported.run_id, "instance_scores.parquet", str(tmp_path))
    assert pq.read_table(local).equals(scores)
    assert exported.linked_version == f"{name}/1"
    tags = client.get_model_version(name, "1").tags
    assert tags["assay.eval.boolq.run_id"] == exported.run_id


def test_export_refuses_a_bad_table_before_creating_a_run(mlflow_uri: str, client) -> None:
    reg_version = type("V", (), {"key": "m@v1", "tags": {}})()
    bad = pa.table({"metric": ["acc"], "mean": [1.0]})
    scores = InstanceStat.to_table([InstanceStat("i", "acc", 1.0)])
    with pytest.raises(ValueError, match="metric_table is missing column"):
        export_evaluation(  # type: ignore[arg-type]
            mlflow_uri, "m@v1", "boolq", bad, scores, reg_version, experiment="bad-input"
        )
    assert client.get_experiment_by_name("bad-input") is None


# --------------------------------------------------------------------------- automatic export


def _evaluation(store: ParquetStore, key: str, scenario: str, values: list[float]) -> None:
    """Store one evaluation's tables as the scoring assets write them."""
    stats = [InstanceStat(f"i{i}", "acc", v, template_id="t@v1") for i, v in enumerate(values)]
    partition = {"model_version": key, "scenario": scenario}
    store.write("instance_scores", partition, InstanceStat.to_table(stats))
    store.write("metric_tables", partition, scorecard_table(scorecard(stats, seed_key=key)))


def _materialized(instance, key: str, scenario: str) -> None:
    instance.add_dynamic_partitions("model_version", [key])
    instance.report_runless_asset_event(
        AssetMaterialization("metric_tables", partition=f"{key}|{scenario}")
    )


def _export_tick(sensor, instance, cursor, registry_url: str, storage: str):
    resources = {
        "registry": RegistryResource(url=registry_url),
        "storage": StorageResource(base_url=storage),
    }
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return sensor(context), context


def test_export_sensor_logs_each_evaluation_once(
    client, mlflow_uri: str, registry_url: str, tmp_path: Path
) -> None:
    reg = Registry.open(registry_url)
    reg.create_model("exp")
    reg.create_version("exp", "bundled:smollm2-135m-instruct")
    store = ParquetStore(str(tmp_path / "storage"))
    _evaluation(store, "exp@v1", "arithmetic", [1, 0, 1, 1])
    sensor = build_mlflow_export_sensor(mlflow_uri, experiment="export-once")
    with instance_for_test() as instance:
        _materialized(instance, "exp@v1", "arithmetic")
        _materialized(instance, "gone@v1", "arithmetic")  # not in the registry
        first, context = _export_tick(sensor, instance, None, registry_url, store.base_url)
        assert "logged 1 evaluations" in first.skip_reason.skip_message
        assert "1 not exportable" in first.skip_reason.skip_message
        last = int(context.cursor)
        # The same tick again (a lost cursor): the tagged run is found, nothing is logged.
        again, _ = _export_tick(sensor, instance, None, registry_url, store.base_url)
        assert "(1 already logged" in again.skip_reason.skip_message
        later, _ = _export_tick(sensor, instance, str(last), registry_url, store.base_url)
        assert "no evaluations after" in later.skip_message

    experiment = client.get_experiment_by_name("export-once")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.tags["assay.model_version"] == "exp@v1"
    assert run.data.tags["assay.evaluation"].startswith("exp@v1|arithmetic#")
    assert run.data.params["scenario"] == "arithmetic"
    assert run.data.metrics["acc.mean"] == pytest.approx(0.75)


def test_export_sensor_waits_out_an_mlflow_outage(registry_url: str, tmp_path: Path) -> None:
    reg = Registry.open(registry_url)
    reg.create_model("down")
    reg.create_version("down", "bundled:smollm2-135m-instruct")
    store = ParquetStore(str(tmp_path / "storage"))
    _evaluation(store, "down@v1", "arithmetic", [1, 1])
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with instance_for_test() as instance:
        _materialized(instance, "down@v1", "arithmetic")
        result, context = _export_tick(
            build_mlflow_export_sensor(dead), instance, "0", registry_url, store.base_url
        )
    message = result.skip_reason.skip_message
    assert "unreachable" in message
    assert "cursor stays at storage id 0, retried at the next tick" in message
    assert context.cursor == "0"


def test_export_carries_prompt_versions_and_dataset_digest_and_moves_past_a_refusal(
    client, mlflow_uri: str, registry_url: str, tmp_path: Path
) -> None:
    from assay.core.records import (
        Completion,
        Instance,
        ModelOutput,
        Request,
        RequestKind,
        TemplateVersion,
    )
    from assay.scenarios.synthetic import ArithmeticQA

    reg = Registry.open(registry_url)
    reg.create_model("prov")
    reg.create_version("prov", "bundled:smollm2-135m-instruct")
    store = ParquetStore(str(tmp_path / "storage"))
    data = ArithmeticQA(n_test=3, n_train=0).load()
    store.write("scenario_instances", {"scenario": "arithmetic"}, Instance.to_table(data.instances))
    terse = TemplateVersion("instructions", "terse", 2, "0" * 64)
    request = Request(
        data.instances[0].id, RequestKind.GENERATE, "2+2=", max_tokens=1, prompt_templates=(terse,)
    )
    outputs = ModelOutput.to_table([ModelOutput(request, Completion("4"))])
    partition = {"model_version": "prov@v1", "scenario": "arithmetic"}
    store.write("model_outputs", partition, outputs)
    _evaluation(store, "prov@v1", "arithmetic", [1, 0, 1])
    # A deleted experiment: MLflow refuses runs in it (400), however often it is asked.
    client.delete_experiment(client.create_experiment("refusing"))
    with instance_for_test() as instance:
        _materialized(instance, "prov@v1", "arithmetic")
        result, context = _export_tick(
            build_mlflow_export_sensor(mlflow_uri, experiment="refusing"),
            instance,
            None,
            registry_url,
            store.base_url,
        )
        # Recorded against the evaluation, and the cursor moved past it.
        assert "1 not exportable" in result.skip_reason.skip_message
        (observation,) = result.asset_events
        assert observation.partition == "prov@v1|arithmetic"
        assert "INVALID_PARAMETER_VALUE" in observation.metadata["mlflow_export"].value
        assert int(context.cursor) > 0

        result, _ = _export_tick(
            build_mlflow_export_sensor(mlflow_uri, experiment="provenance"),
            instance,
            None,
            registry_url,
            store.base_url,
        )
    assert "logged 1 evaluations" in result.skip_reason.skip_message
    experiment = client.get_experiment_by_name("provenance")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["prompt_versions"] == "prompts:/terse/2"
    assert run.data.params["dataset_digest"] == data.digest
