"""The promotion sensor and the MLflow export sensor under the real ``dagster-daemon``.

Aliases are moved with the ``assay`` CLI (or over HTTP with MLflow's client), sensors are
started with the ``dagster`` CLI, and what ran is read from the Dagster instance and the
registry. The model is an OpenAI-compatible server on loopback whose answers are known
(``right`` computes the arithmetic, ``wrong`` never does). The nightly schedule, prompt
promotions and promotion decisions have their own files (``test_daemon_*.py``), so that the
suite's workers share them out.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from dagster import AssetSelection, DagsterRunStatus, materialize
from live_deployment import (
    BIN,
    PROMOTION_SENSOR,
    REPO,
    Deployment,
    deployment,
    wait_for,
)

from assay.registry import EventKind
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.promotion import MODEL_VERSION_TAG

SENSOR = PROMOTION_SENSOR
EXPORT_SENSOR = "mlflow_export_sensor"


@pytest.fixture(scope="module")
def queued(tmp_path_factory, model_cache_dir) -> Iterator[Deployment]:
    """A daemon whose runs stay queued (max_concurrent_runs 0): what the sensor requested is
    visible, nothing spends model time, and a queued run is an active one."""
    root = tmp_path_factory.mktemp("queued")
    with deployment(root, model_cache_dir, max_concurrent_runs=0) as deployed:
        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)
        yield deployed


def _submitted(runs: list) -> list | None:
    """``runs`` once none of them is still waiting to be submitted to the queue."""
    return (
        runs if runs and all(r.status is not DagsterRunStatus.NOT_STARTED for r in runs) else None
    )


def test_a_bad_registration_does_not_stop_a_later_promotion(queued, model_server):
    # A name that would not parse back is refused at registration, with the rule.
    refused = queued.assay("create", "a:b", ok=False)
    assert refused.returncode != 0 and "model name 'a:b'" in refused.stderr

    # A version whose source cannot be resolved, promoted; then a good one.
    queued.assay("create", "broken")
    queued.assay("register", "broken", "hf:/does/not/exist")
    queued.assay("alias", "set", "broken", "champion", "1")
    queued.assay("create", "good")
    queued.assay("register", "good", f"openai:{model_server}#right")
    queued.assay("alias", "set", "good", "champion", "1")

    runs = wait_for(
        lambda: queued.runs(**{MODEL_VERSION_TAG: "good@v1"}),
        120,
        "the promotion of good@v1 to launch a run",
        queued.log,
    )
    assert len(runs) == 1
    assert queued.runs(**{MODEL_VERSION_TAG: "broken@v1"}) == []
    assert "good@v1" in queued.instance.get_dynamic_partitions("model_version")
    assert "broken@v1" not in queued.instance.get_dynamic_partitions("model_version")

    registry = queued.registry()
    refusals = [e for e in registry.events() if e.kind is EventKind.PROMOTION_REFUSED]
    registry.close()
    # Both events about broken@v1 (its creation and its promotion) are refused with the reason.
    assert {(e.key, e.payload["event_kind"]) for e in refusals} == {
        ("broken@v1", "version_created"),
        ("broken@v1", "alias_set"),
    }
    # /does/not/exist lies outside the model roots: refused before the path is looked at.
    assert all("outside the allowed roots" in e.payload["reason"] for e in refusals)
    history = queued.assay("history", "--model", "broken").stdout
    assert "promotion_refused" in history and "outside the allowed roots" in history
    assert not [t for t in queued.ticks(SENSOR) if t.status.value == "FAILURE"]


def test_promotions_of_one_version_share_one_run(queued, model_server):
    queued.assay("create", "twice")
    queued.assay("register", "twice", f"openai:{model_server}#right")
    queued.assay("alias", "set", "twice", "challenger", "1")
    queued.assay("alias", "set", "twice", "canary", "1")
    wait_for(
        lambda: queued.sensor_caught_up(SENSOR), 120, "the sensor to pass both moves", queued.log
    )
    # The daemon stores the tick's cursor before it submits the tick's run to the queue.
    runs = wait_for(
        lambda: _submitted(queued.runs(**{MODEL_VERSION_TAG: "twice@v1"})),
        60,
        "the run to be queued",
        queued.log,
    )
    (run,) = runs
    assert run.status is DagsterRunStatus.QUEUED

    # Promoted again while its run is still queued: joins that run, and the tick says so.
    queued.assay("stage", "twice", "1", "Staging")
    wait_for(lambda: queued.sensor_caught_up(SENSOR), 120, "the sensor to pass the stage move")
    assert len(queued.runs(**{MODEL_VERSION_TAG: "twice@v1"})) == 1
    reasons = [t.skip_reason or "" for t in queued.ticks(SENSOR)]
    assert any(f"run {run.run_id} already evaluates twice@v1" in r for r in reasons), reasons


def test_a_name_registered_before_the_rule_is_refused_not_wedging(
    queued, model_server, monkeypatch
):
    # Rows written before registration and parsing shared one name rule: "le:gacy" was
    # accepted then and cannot be parsed now. The sensor refuses its events and moves on.
    for module in ("versions", "aliases"):  # where models, versions and aliases are written
        monkeypatch.setattr(f"assay.registry.{module}.check_name", lambda value, *_, **__: value)
    registry = queued.registry()
    registry.create_model("le:gacy")
    registry.create_version("le:gacy", f"openai:{model_server}#right")
    registry.set_alias("le:gacy", "champion", 1)
    registry.close()
    monkeypatch.undo()

    queued.assay("create", "after")
    queued.assay("register", "after", f"openai:{model_server}#right")
    queued.assay("alias", "set", "after", "champion", "1")
    wait_for(
        lambda: queued.runs(**{MODEL_VERSION_TAG: "after@v1"}),
        120,
        "the promotion after the unparseable one",
        queued.log,
    )
    registry = queued.registry()
    refused = [e for e in registry.events() if e.kind is EventKind.PROMOTION_REFUSED]
    registry.close()
    assert {e.payload["event_kind"] for e in refused if e.model == "le:gacy"} == {
        "version_created",
        "alias_set",
    }
    assert queued.runs(**{MODEL_VERSION_TAG: "le:gacy@v1"}) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _assay_server(deployed: Deployment) -> Iterator[str]:
    """``assay server`` as its own process over the deployment's registry, on loopback."""
    port = _free_port()
    log = (deployed.root / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "assay"), "server", "--port", str(port)],
        cwd=REPO,
        env=deployed.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool | None:
        assert proc.poll() is None, (deployed.root / "server.log").read_text()
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code < 500 or None
        except httpx.HTTPError:
            return None

    try:
        wait_for(answers, 60, "assay server to answer", deployed.root / "server.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _token(deployed: Deployment, principal: str, role: str) -> str:
    done = deployed.run(str(BIN / "assay"), "tokens", "create", principal, "--role", role)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[1].strip()


def test_an_alias_moved_over_http_launches_an_evaluation_run(queued, model_server, monkeypatch):
    """MlflowClient → ``assay server`` → registry → the promotion sensor in the daemon → run."""
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    writer, promoter = _token(queued, "wendy", "writer"), _token(queued, "paul", "promoter")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with _assay_server(queued) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", writer)
        client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
        client.create_registered_model("over-http")
        client.create_model_version("over-http", f"openai:{model_server}#right")
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", promoter)
        client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
        client.set_registered_model_alias("over-http", "champion", "1")

    runs = wait_for(
        lambda: _submitted(queued.runs(**{MODEL_VERSION_TAG: "over-http@v1"})),
        120,
        "the promotion over HTTP to queue a run",
        queued.log,
    )
    (run,) = runs
    assert "champion" in run.tags["assay/reason"]
    assert run.tags["dagster/asset_partition_range_start"] == "over-http@v1|arithmetic"
    registry = queued.registry()
    moved = [e for e in registry.events(model="over-http") if e.kind is EventKind.ALIAS_SET]
    registry.close()
    assert [e.actor for e in moved] == ["paul"]  # the token's principal, not the OS user


def test_each_evaluation_reaches_mlflow_once_under_the_daemon(
    tmp_path, model_cache_dir, model_server, mlflow_uri, monkeypatch
):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=0) as deployed:
        # A tracking URI in the environment turns the export sensor on by default.
        deployed.env["ASSAY_MLFLOW_TRACKING_URI"] = mlflow_uri
        # Its own model name: the MLflow server is the session's, and other tests export too.
        deployed.assay("create", "exported-by-daemon")
        deployed.assay("register", "exported-by-daemon", f"openai:{model_server}#right")

        # The evaluation, in process on the same instance (as the nightly test does).
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
        from assets import all_assets

        resources = assay_resources(
            storage_url=deployed.env["ASSAY_STORAGE_URL"],
            registry_url=deployed.env["ASSAY_REGISTRY_URL"],
            suite=SuiteResource(path=deployed.env["ASSAY_SUITE"]),
            models=ModelsResource(cache_dir=deployed.env["ASSAY_HOME"] + "/cache"),
        )
        instance = deployed.instance
        instance.add_dynamic_partitions("model_version", ["exported-by-daemon@v1"])
        for selection, key in [
            ("registered_models", "exported-by-daemon@v1"),
            ("scenario_instances", "arithmetic"),
            (
                ["model_outputs", "instance_scores", "metric_tables"],
                "exported-by-daemon@v1|arithmetic",
            ),
        ]:
            names = [selection] if isinstance(selection, str) else selection
            assert materialize(
                all_assets,
                selection=AssetSelection.assets(*names),
                partition_key=key,
                instance=instance,
                resources=resources,
            ).success

        deployed.start()
        client = mlflow.MlflowClient(tracking_uri=mlflow_uri)

        def exported_runs() -> list:
            experiment = client.get_experiment_by_name("assay-evaluations")
            if experiment is None:
                return []
            return client.search_runs(
                [experiment.experiment_id],
                filter_string="tags.`assay.model_version` = 'exported-by-daemon@v1'",
            )

        def ended() -> list | None:
            runs = exported_runs()
            return runs if runs and all(r.info.status != "RUNNING" for r in runs) else None

        (run,) = wait_for(ended, 180, "the evaluation to reach MLflow", deployed.log)
        assert run.info.status == "FINISHED"
        assert run.data.params["scenario"] == "arithmetic"
        assert run.data.metrics["exact_match.mean"] == pytest.approx(1.0)  # `right` is right

        # The cursor lost: the next tick finds the run by its tag and logs nothing twice.
        # A tick already under way when the cursor is deleted stores its own cursor back as
        # it ends, so the delete is repeated until a tick has run without one.
        def relogged() -> bool | None:
            return (
                any(
                    "1 already logged" in (t.skip_reason or "")
                    for t in deployed.ticks(EXPORT_SENSOR)
                )
                or None
            )

        for attempt in range(4):
            deployed.dagster("sensor", "cursor", EXPORT_SENSOR, "--delete")
            try:
                wait_for(relogged, 30, "a tick after the cursor was deleted", deployed.log)
                break
            except AssertionError:
                if attempt == 3:
                    raise
        assert len(exported_runs()) == 1
