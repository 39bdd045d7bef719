"""The promotion sensor and the nightly schedule under the real ``dagster-daemon``.

Aliases are moved with the ``assay`` CLI, sensors and schedules are started with the
``dagster`` CLI, and what ran is read from the Dagster instance and the registry. The model is
an OpenAI-compatible server on loopback whose answers are known (``right`` computes the
arithmetic, ``wrong`` never does), except for the demo, which runs the bundled model.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from dagster import AssetSelection, DagsterEventType, DagsterRunStatus, materialize
from live_deployment import (
    BIN,
    REPO,
    TINY_SUITE,
    Deployment,
    arithmetic_app,
    deployment,
    wait_for,
)

from assay.registry import EventKind, Registry
from assay.serving import asgi_in_background
from assay.storage.parquet import ParquetStore
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.promotion import MODEL_VERSION_TAG

SENSOR = "model_promotion_sensor"
GATE_VARIABLES = ("ASSAY_GATED_ALIASES", "ASSAY_GATED_STAGES", "ASSAY_GATED_PROMPT_ALIASES")
GATED_SUITE = (
    TINY_SUITE
    + """
promotion:
  margin: 0.1
  criteria:
    - {scenario: arithmetic, metric: exact_match, at_least: 0.5}
"""
)
SCHEDULE = "nightly_alias_reevaluation"
EXPORT_SENSOR = "mlflow_export_sensor"
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    with asgi_in_background(arithmetic_app()) as running:
        yield running.base_url


@pytest.fixture(scope="module")
def queued(tmp_path_factory, model_cache_dir) -> Iterator[Deployment]:
    """A daemon whose runs stay queued (max_concurrent_runs 0): what the sensor requested is
    visible, nothing spends model time, and a queued run is an active one."""
    root = tmp_path_factory.mktemp("queued")
    with deployment(root, model_cache_dir, max_concurrent_runs=0) as deployed:
        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)
        yield deployed


def _registry(deployed: Deployment) -> Registry:
    return Registry.open(deployed.env["ASSAY_REGISTRY_URL"])


def _handled_all_events(deployed: Deployment) -> bool:
    registry = _registry(deployed)
    try:
        last = registry.events()[-1].id
    finally:
        registry.close()
    # The sensor's own promotion_refused events come after the cursor; they need no handling.
    return deployed.sensor_cursor(SENSOR) >= last or None


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

    registry = _registry(queued)
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
    wait_for(lambda: _handled_all_events(queued), 120, "the sensor to pass both moves", queued.log)
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
    wait_for(lambda: _handled_all_events(queued), 120, "the sensor to pass the stage move")
    assert len(queued.runs(**{MODEL_VERSION_TAG: "twice@v1"})) == 1
    reasons = [t.skip_reason or "" for t in queued.ticks(SENSOR)]
    assert any(f"run {run.run_id} already evaluates twice@v1" in r for r in reasons), reasons


def test_nightly_reevaluation_of_a_trailing_holder_succeeds(
    tmp_path, model_cache_dir, model_server, monkeypatch
):
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=2) as deployed:
        deployed.env["ASSAY_REEVALUATION_CRON"] = "* * * * *"
        deployed.assay("create", "n")
        deployed.assay("register", "n", f"openai:{model_server}#wrong")  # v1 trails
        deployed.assay("register", "n", f"openai:{model_server}#right")  # v2, the champion
        deployed.assay("alias", "set", "n", "champion", "2")
        deployed.assay("alias", "set", "n", "challenger", "1")

        # What the promotion sensor would have done, and the champion's evaluation, in
        # process on the same instance (ASSAY_SUITE names the same single scenario).
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
        from assets import all_assets
        from assets.checks import all_checks

        resources = assay_resources(
            storage_url=deployed.env["ASSAY_STORAGE_URL"],
            registry_url=deployed.env["ASSAY_REGISTRY_URL"],
            suite=SuiteResource(path=deployed.env["ASSAY_SUITE"]),
            models=ModelsResource(cache_dir=deployed.env["ASSAY_HOME"] + "/cache"),
        )
        instance = deployed.instance
        instance.add_dynamic_partitions("model_version", ["n@v1", "n@v2"])
        for selection, key in [
            ("registered_models", "n@v1"),
            ("registered_models", "n@v2"),
            ("scenario_instances", "arithmetic"),
        ]:
            assert materialize(
                all_assets,
                selection=AssetSelection.assets(selection),
                partition_key=key,
                instance=instance,
                resources=resources,
            ).success
        assert materialize(
            [*all_assets, *all_checks],
            selection=AssetSelection.assets("model_outputs", "instance_scores", "metric_tables"),
            partition_key="n@v2|arithmetic",
            instance=instance,
            resources=resources,
        ).success

        deployed.start()
        deployed.dagster("schedule", "start", SCHEDULE)

        def finished():
            runs = deployed.runs(**{"assay/reason": "nightly re-evaluation"})
            return runs if len(runs) == 2 and {r.status for r in runs} <= TERMINAL else None

        runs = wait_for(finished, 420, "both nightly runs to finish", deployed.log)
        assert {r.tags[MODEL_VERSION_TAG] for r in runs} == {"n@v1", "n@v2"}
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}

        (trailing,) = [r for r in runs if r.tags[MODEL_VERSION_TAG] == "n@v1"]
        verdicts = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(
                trailing.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
            )
        ]
        assert [(v.partition, v.passed, v.severity.value) for v in verdicts] == [
            ("n@v1|arithmetic", False, "WARN")
        ]
        # The per-partition verdict is on the version for users to read (promotion decisions,
        # tested below, decide whether champion may move).
        registry = _registry(deployed)
        assert registry.get_version("n@v1").tags["gate.arithmetic"] == "failed"
        registry.close()


def test_the_demo_then_the_sensor_launches_nothing_twice(tmp_path, model_cache_dir):
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=0) as deployed:
        for variable in GATE_VARIABLES:  # the demo runs as a user's would: champion gated
            deployed.env.pop(variable, None)
        demo = deployed.run(sys.executable, str(REPO / "demo.py"), timeout_s=900)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        before = {r.run_id for r in deployed.runs()}
        evaluated = {r.tags.get(MODEL_VERSION_TAG) for r in deployed.runs()} - {None}
        assert evaluated == {"smollm2-135m-instruct@v1", "smollm2-135m-instruct@v2"}

        deployed.start()
        deployed.dagster("sensor", "start", "--start-all")  # as a user turns them on in the UI
        wait_for(lambda: _handled_all_events(deployed), 120, "the sensor's tick", deployed.log)
        for sensor in ("rankings_refresh_sensor", "evaluation_recorder_sensor"):
            wait_for(lambda s=sensor: deployed.ticks(s), 60, f"a tick of {sensor}", deployed.log)
        assert {r.run_id for r in deployed.runs()} == before
        for sensor in (SENSOR, "rankings_refresh_sensor"):
            assert all(not t.run_ids for t in deployed.ticks(sensor)), sensor


def test_a_name_registered_before_the_rule_is_refused_not_wedging(
    queued, model_server, monkeypatch
):
    # Rows written before registration and parsing shared one name rule: "le:gacy" was
    # accepted then and cannot be parsed now. The sensor refuses its events and moves on.
    for module in ("versions", "aliases"):  # where models, versions and aliases are written
        monkeypatch.setattr(f"assay.registry.{module}.check_name", lambda value, *_, **__: value)
    registry = _registry(queued)
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
    registry = _registry(queued)
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
    registry = _registry(queued)
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
        deployed.dagster("sensor", "cursor", EXPORT_SENSOR, "--delete")
        wait_for(
            lambda: (
                any(
                    "1 already logged" in (t.skip_reason or "")
                    for t in deployed.ticks(EXPORT_SENSOR)
                )
                or None
            ),
            120,
            "a tick after the cursor was deleted",
            deployed.log,
        )
        assert len(exported_runs()) == 1


def test_a_prompt_alias_moved_with_the_cli_reevaluates_its_entries(
    tmp_path, model_cache_dir, model_server, monkeypatch
):
    """A prompt promotion under the daemon: the run it launches resolves the moved alias."""
    first, second = "Answer with digits only.", "Reply with the number alone."
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=1) as deployed:
        suite = tmp_path / "suite.yaml"
        suite.write_text(
            TINY_SUITE.replace(
                "adapter: {method: generation,",
                'adapter: {method: generation, instructions: "prompts:/terse@production",',
            )
        )

        def prompts(*args: str) -> None:
            done = deployed.run(str(BIN / "assay"), "prompts", *args)
            assert done.returncode == 0, done.stderr

        prompts("create", "terse")
        prompts("register", "terse", "--template", first)
        prompts("register", "terse", "--template", second)
        prompts("alias", "terse", "production", "1")
        deployed.assay("create", "p")
        deployed.assay("register", "p", f"openai:{model_server}#right")
        deployed.assay("alias", "set", "p", "champion", "1")

        # The suite's instances, in process on the same instance (as the nightly test does).
        monkeypatch.setenv("ASSAY_SUITE", str(suite))
        from assets import all_assets

        resources = assay_resources(
            storage_url=deployed.env["ASSAY_STORAGE_URL"],
            registry_url=deployed.env["ASSAY_REGISTRY_URL"],
            suite=SuiteResource(path=str(suite)),
            models=ModelsResource(cache_dir=deployed.env["ASSAY_HOME"] + "/cache"),
        )
        assert materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key="arithmetic",
            instance=deployed.instance,
            resources=resources,
        ).success

        # The events so far stand for what was evaluated before: the sensor starts after them.
        registry = _registry(deployed)
        last = registry.events()[-1].id
        registry.close()
        deployed.start()
        deployed.dagster("sensor", "cursor", SENSOR, "--set", str(last))
        deployed.dagster("sensor", "start", SENSOR)
        prompts("alias", "terse", "production", "2")

        def finished():
            runs = deployed.runs(**{MODEL_VERSION_TAG: "p@v1"})
            return runs if runs and {r.status for r in runs} <= TERMINAL else None

        (run,) = wait_for(finished, 420, "the prompt promotion's run to finish", deployed.log)
        assert run.status is DagsterRunStatus.SUCCESS
        assert "prompt alias terse@production" in run.tags["assay/reason"]
        outputs = ParquetStore(deployed.env["ASSAY_STORAGE_URL"]).read(
            "model_outputs", {"model_version": "p@v1", "scenario": "arithmetic"}
        )
        assert outputs.num_rows == 8
        assert all(p.startswith(second) for p in outputs["prompt"].to_pylist())
        recorded = {
            (t["name"], t["version"]) for ts in outputs["prompt_templates"].to_pylist() for t in ts
        }
        assert recorded == {("terse", 2)}


def _champion(deployed: Deployment, model: str) -> int | None:
    registry = _registry(deployed)
    try:
        return registry.get_model(model).aliases.get("champion")
    finally:
        registry.close()


def _verdict(deployed: Deployment, candidate: str) -> object | None:
    registry = _registry(deployed)
    try:
        found = [
            e
            for e in registry.decisions(model=candidate.split("@")[0])
            if e.kind in (EventKind.GATE_APPROVED, EventKind.GATE_REFUSED)
            and e.payload.get("candidate") == candidate
        ]
    finally:
        registry.close()
    return found[-1] if found else None


def test_promotion_decisions_under_the_daemon(tmp_path, model_cache_dir, model_server, monkeypatch):
    """pending → approved and pending → refused with the real daemon, sensor and runs; prints
    the time from a champion request to its decision (a figure, not an assertion)."""
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=2) as deployed:
        for variable in GATE_VARIABLES:
            deployed.env.pop(variable, None)  # the defaults: champion and Production gated
        (deployed.root / "suite.yaml").write_text(GATED_SUITE)
        deployed.assay("create", "g")
        for answer in ("right", "wrong", "right"):
            deployed.assay("register", "g", f"openai:{model_server}#{answer}")
        # The suite's data, as `make demo` or a backfill would have materialized it.
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
        from assets import all_assets

        assert materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key="arithmetic",
            instance=deployed.instance,
            resources=assay_resources(
                storage_url=deployed.env["ASSAY_STORAGE_URL"],
                registry_url=deployed.env["ASSAY_REGISTRY_URL"],
                suite=SuiteResource(path=deployed.env["ASSAY_SUITE"]),
            ),
        ).success
        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)
        figures = {}

        # The first holder, not evaluated yet: pending at once, then evaluated and approved.
        started = time.monotonic()
        asked = deployed.assay("alias", "set", "g", "champion", "1")
        assert asked.stdout.startswith("pending:"), asked.stdout
        wait_for(lambda: _champion(deployed, "g") == 1 or None, 300, "g@v1 approved", deployed.log)
        figures["not yet evaluated, approved"] = time.monotonic() - started

        # A version evaluated beforehand (through an ungated alias): decided without a run.
        deployed.assay("alias", "set", "g", "challenger", "3")
        wait_for(
            lambda: _finished(deployed.runs(**{MODEL_VERSION_TAG: "g@v3"})),
            300,
            "g@v3's evaluation",
            deployed.log,
        )
        runs_before = len(deployed.runs())
        started = time.monotonic()
        asked = deployed.assay("alias", "set", "g", "champion", "3")
        assert asked.stdout.startswith("pending:"), asked.stdout
        wait_for(lambda: _champion(deployed, "g") == 3 or None, 120, "g@v3 approved", deployed.log)
        figures["already evaluated, approved"] = time.monotonic() - started
        assert len(deployed.runs()) == runs_before  # judged on the stored evaluation

        # A regressing version: pending, evaluated, refused with its reasons; champion stays.
        started = time.monotonic()
        asked = deployed.assay("alias", "set", "g", "champion", "2")
        assert asked.stdout.startswith("pending:"), asked.stdout
        refused = wait_for(lambda: _verdict(deployed, "g@v2"), 300, "g@v2's verdict", deployed.log)
        figures["not yet evaluated, refused"] = time.monotonic() - started
        assert refused.kind is EventKind.GATE_REFUSED
        assert refused.payload["incumbent"] == "g@v3"
        assert _champion(deployed, "g") == 3
        failed = {c["kind"] for c in refused.payload["criteria"] if c["outcome"] == "fail"}
        assert failed == {"absolute", "relative"}

        # Asked again on the same suite and code: refused at once, with the numbers.
        again = deployed.assay("alias", "set", "g", "champion", "2", ok=False)
        assert again.returncode == 1 and again.stderr.startswith("refused:")
        assert "arithmetic exact_match" in again.stderr and "estimate -1" in again.stderr
        history = deployed.assay("history", "--model", "g").stdout
        assert "gate_pending" in history and "gate_refused" in history
        assert "arithmetic exact_match vs incumbent" in history

    print("\ntime from a champion request to its decision under the daemon (1 s sensor ticks):")
    for label, seconds in figures.items():
        print(f"  {label}: {seconds:.1f} s")


def test_a_prompt_promotion_decided_under_the_daemon(
    tmp_path, model_cache_dir, model_server, monkeypatch
):
    """A gated prompt alias under the daemon: the candidate layout and the one the alias held
    are tried on the champion (prompt_trials runs), a regressing layout is refused with its
    numbers and an equal one approved, moved and re-evaluated from the request cache."""
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=2) as deployed:
        for env in (deployed.env, None):
            if env is None:
                monkeypatch.setenv("ASSAY_GATED_PROMPT_ALIASES", "production")
            else:
                env["ASSAY_GATED_PROMPT_ALIASES"] = "production"
        (deployed.root / "suite.yaml").write_text(
            GATED_SUITE.replace(
                "adapter: {method: generation,",
                "adapter: {method: generation, input_template: prompts:/layout@production,",
            )
        )
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
        registry = _registry(deployed)
        registry.create_prompt("layout")
        # ``right`` answers the last question of its prompt: v2 adds one whose answer (2000)
        # no instance has; v3 only a label.
        for text in ("{{ input }}", "{{ input }} What is 1000 + 1000?", "Q: {{ input }}"):
            registry.create_prompt_version("layout", text, ["input"])
        registry.request_prompt_alias("layout", "production", 1, force=True, reason="setup")
        registry.create_model("p")
        registry.create_version("p", f"openai:{model_server}#right")
        registry.set_alias("p", "champion", 1)
        last = registry.events()[-1].id
        from assets import all_assets

        assert materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key="arithmetic",
            instance=deployed.instance,
            resources=assay_resources(
                storage_url=deployed.env["ASSAY_STORAGE_URL"],
                registry_url=deployed.env["ASSAY_REGISTRY_URL"],
                suite=SuiteResource(path=deployed.env["ASSAY_SUITE"]),
            ),
        ).success
        deployed.start()
        deployed.dagster("sensor", "cursor", SENSOR, "--set", str(last))
        deployed.dagster("sensor", "start", SENSOR)
        store = ParquetStore(deployed.env["ASSAY_STORAGE_URL"])
        champion = {"model_version": "p@v1", "scenario": "arithmetic"}

        def verdict(candidate: str):
            found = [
                e
                for e in registry.decisions(prompt="layout")
                if e.kind in (EventKind.GATE_APPROVED, EventKind.GATE_REFUSED)
                and e.payload.get("candidate") == candidate
            ]
            return found[-1] if found else None

        assert registry.request_prompt_alias("layout", "production", 2).outcome.value == "pending"
        refused = wait_for(lambda: verdict("layout@v2"), 300, "layout@v2's verdict", deployed.log)
        assert refused.kind is EventKind.GATE_REFUSED, refused.payload["summary"]
        by_kind = {c["kind"]: c for c in refused.payload["criteria"]}
        assert by_kind["relative"]["estimate"] == -1.0  # 0 of 8 answered against 8 of 8
        assert by_kind["absolute"]["estimate"] == 0.0
        trials = deployed.runs(**{"assay/prompt_trial": "layout@v2"})
        assert [r.status for r in trials] == [DagsterRunStatus.SUCCESS]
        assert trials[0].tags["assay/trial_model_version"] == "p@v1"
        assert registry.get_prompt("prompts:/layout@production").version == 1
        assert not store.exists("model_outputs", champion)  # trials never write there

        assert registry.request_prompt_alias("layout", "production", 3).outcome.value == "pending"
        approved = wait_for(lambda: verdict("layout@v3"), 300, "layout@v3's verdict", deployed.log)
        assert approved.kind is EventKind.GATE_APPROVED, approved.payload["summary"]
        assert registry.get_prompt("prompts:/layout@production").version == 3
        # The move re-evaluates the champion; the candidate's trial cached its answers.
        (run,) = wait_for(
            lambda: _finished(deployed.runs(**{MODEL_VERSION_TAG: "p@v1"})),
            300,
            "the champion's re-evaluation",
            deployed.log,
        )
        assert run.status is DagsterRunStatus.SUCCESS
        outputs = store.read("model_outputs", champion)
        assert outputs.num_rows == 8 and all(outputs["cached"].to_pylist())
        assert all("Q: What is" in p for p in outputs["prompt"].to_pylist())
        registry.close()


def _finished(runs: list) -> list | None:
    return runs if runs and all(r.status in TERMINAL for r in runs) else None
