"""The deployment of deploy/ on one machine, nothing simulated (``make test-deploy``).

PostgreSQL, Redis, an S3 API server (moto), two ``assay serve`` replicas, two Celery workers,
``dagster-daemon`` and ``dagster-webserver`` run as real processes on loopback
(deploy/stack.py). A version is registered and promoted with the ``assay`` CLI; the daemon's
sensor launches the evaluation, the Celery workers execute it against the replicas, the
tables land in S3, the registry records the evaluation, the leaderboard refreshes, and the
webserver's GraphQL shows the run and the lineage. The fault tests break one part of that
deployment in the middle of a run.

Slow (minutes): marked ``deploy``, excluded from ``make test``, run by ``make test-deploy``.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from assay.report import EXPLORER_DIR
from deploy.stack import BUCKET, LocalDeployment, ServiceError, missing_parts

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parent.parent
# The evaluation graph's steps: model_outputs, then one multi-asset step for both score tables.
EVALUATION_STEPS = {"model_outputs", "scores"}
ARITHMETIC_N = 40
FACTS_N = 12

# Two scenarios (a generation and a multiple-choice one, so both request kinds cross the
# replicas), few instances. The arithmetic one has enough requests for a run to be caught
# mid-step by the fault tests.
SUITE = f"""
scenarios:
  arithmetic:
    scenario: arithmetic_qa
    args: {{n_test: {ARITHMETIC_N}, n_train: 0}}
    adapter: {{method: generation, max_tokens: 3}}
    max_instances: {ARITHMETIC_N}
  facts-mc:
    scenario: facts_mc
    adapter: {{method: multiple_choice_separate}}
    max_instances: {FACTS_N}
"""
SCENARIOS = ["arithmetic", "facts-mc"]

# Run retries of the deployment (deploy/dagster.yaml): a failed run is relaunched this often.
MAX_RUN_RETRIES = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())["run_retries"][
    "max_retries"
]
RUNS_QUERY = """
query Runs($tag: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $tag, value: $value}]}) {
    ... on Runs { results { runId status startTime endTime tags { key value } } }
  }
}
"""
RUN_LOGS_QUERY = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    ... on EventConnection { events { __typename ... on MessageEvent { message stepKey } } }
  }
}
"""
LINEAGE_QUERY = """
query Lineage {
  assetNodes { assetKey { path } dependencyKeys { path } }
}
"""
ALL_RUNS_QUERY = """
query { runsOrError { ... on Runs { results { runId status tags { key value } } } } }
"""
MATERIALIZATIONS_QUERY = """
query Materializations($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 50) { runId partition } }
  }
}
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, model_cache_dir) -> LocalDeployment:
    missing = missing_parts()
    if missing:
        pytest.skip("the deployment needs " + "; ".join(missing))
    from assay.models.bundled import bundled_gguf_path
    from assay.models.transformers_backend import converted_model_dir

    converted_model_dir(bundled_gguf_path(), model_cache_dir)  # once, before two replicas race
    stack = LocalDeployment(
        root=tmp_path_factory.mktemp("deployment"),
        suite_yaml=SUITE,
        model_cache=model_cache_dir,
        # A killed worker's step goes back to the queue after this long (see deploy/README).
        visibility_timeout_s=30,
    )
    with stack:
        # The scenarios' instances, once: the evaluation runs read them (through the workers).
        for scenario in SCENARIOS:
            stack.dagster(
                *("asset", "materialize", "-f", "definitions.py"),
                *("--select", "scenario_instances,perturbed_instances", "--partition", scenario),
            )
        stack.dagster("sensor", "start", "-w", "workspace.yaml", "--start-all")
        yield stack


def _promote(stack: LocalDeployment, model: str, alias: str, *, max_context: int = 2048):
    """Register a version of ``model`` served by the replicas and point ``alias`` at it.

    A ``max_context`` of its own makes the version's requests new to the request cache.
    """
    serving = json.dumps({"max_context": max_context})
    out = stack.assay(
        *("registry", "register", "--create-model", model, stack.model_source()),
        *("--serving", serving),
    )
    key = out.strip().splitlines()[-1]
    stack.assay("registry", "alias", "set", model, alias, key.rsplit("@v", 1)[1])
    return key


def _runs(stack: LocalDeployment, tag: str, value: str) -> list[dict]:
    data = stack.graphql(RUNS_QUERY, {"tag": tag, "value": value})
    return data["runsOrError"]["results"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def _wait_for_run(stack: LocalDeployment, key: str, timeout_s: float = 600) -> dict:
    """The promotion run of ``key``, once it has ended (the last one, after retries: a
    failed run with retries left is not the end, since run retries relaunch it a few seconds
    after run monitoring fails it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            runs = _runs(stack, "assay/model_version", key)
        except (OSError, ServiceError):  # the webserver's database restarting under it
            time.sleep(3)
            continue
        ended = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        active = [r for r in runs if r not in ended]
        newest = runs[0] if runs else None  # newest first
        retried = (
            newest is not None
            and newest["status"] == "FAILURE"
            and (int(_tags(newest).get("dagster/retry_number", 0)) < MAX_RUN_RETRIES)
        )
        if ended and not active and not retried:
            return newest
        time.sleep(3)
    raise AssertionError(f"no finished run for {key} within {timeout_s} s\n{stack.logs()}")


def _s3_table(stack: LocalDeployment, key: str):
    body = stack.s3_client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body))


def _partition_key(asset: str, version: str, scenario: str) -> str:
    return f"assay/{asset}/model_version={version}/scenario={scenario}/part.parquet"


def _wait(what: str, check, stack: LocalDeployment, timeout_s: float = 240, every_s: float = 3):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"{what} within {timeout_s} s\n{stack.logs()}")


def test_promotion_runs_on_the_workers_and_lands_in_s3(deployment):
    stack = deployment
    key = _promote(stack, "smollm2", "challenger")

    run = _wait_for_run(stack, key)
    assert run["status"] == "SUCCESS", stack.logs()

    # Every evaluation step ran in a Celery worker (the executor's engine events say which).
    events = stack.graphql(RUN_LOGS_QUERY, {"runId": run["runId"]})["logsForRun"]["events"]
    steps = {e["stepKey"] for e in events if e.get("stepKey")}
    in_worker = {e["stepKey"] for e in events if "in celery worker" in (e.get("message") or "")}
    assert steps >= EVALUATION_STEPS
    assert in_worker == steps
    handled = [s for s in stack.services if s.startswith("worker")]
    assert any("execute_plan" in stack.services[w].tail(200000) for w in handled)

    # The tables are in S3, one object per partition, and read back complete; each names the
    # worker process that ran the model (the solo pool runs a step in the worker itself).
    from assay.core.environment import environment_of

    worker_pids = {stack.services[w].process.pid for w in handled}
    for scenario in SCENARIOS:
        outputs = _s3_table(stack, _partition_key("model_outputs", key, scenario))
        assert environment_of(outputs)["pid"] in worker_pids
        expected_rows = ARITHMETIC_N if scenario == "arithmetic" else FACTS_N
        assert outputs.num_rows == expected_rows
        assert outputs["error"].null_count == outputs.num_rows  # every request answered
        scorecard = _s3_table(stack, _partition_key("metric_tables", key, scenario))
        assert scorecard.num_rows > 0
    # Both replicas served requests.
    for i in range(stack.replicas):
        assert "POST /v1/completions" in stack.services[f"replica{i}"].tail(10**7)

    # The recorder sensor writes the evaluation into the registry (on Postgres).
    from assay.registry import Registry

    registry = Registry.open(stack.pg_url("assay"))
    recorded = _wait(
        "evaluations recorded in the registry",
        lambda: (
            {
                e.payload.get("scenario")
                for e in registry.events(model="smollm2")
                if e.kind.value == "evaluation_recorded" and e.key == key
            }
            >= set(SCENARIOS)
            or None
        ),
        stack,
    )
    assert recorded

    # The rankings sensor rebuilds today's leaderboard from the tables in S3.
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    _wait(
        "today's leaderboard in S3",
        lambda: any(k.startswith("assay/rankings/") and today in k for k in stack.s3_keys()),
        stack,
    )
    # The explorer is written to the same object storage.
    stack.dagster("asset", "materialize", "-f", "definitions.py", "--select", "dashboard")
    page = stack.s3_client().get_object(Bucket=BUCKET, Key=f"assay/{EXPLORER_DIR}/index.html")
    assert key in page["Body"].read().decode()

    # The webserver shows the lineage and which run materialized each partition.
    nodes = stack.graphql(LINEAGE_QUERY)["assetNodes"]
    deps = {
        tuple(n["assetKey"]["path"]): {tuple(d["path"]) for d in n["dependencyKeys"]} for n in nodes
    }
    assert ("model_outputs",) in deps[("instance_scores",)]
    assert ("model_outputs",) in deps[("metric_tables",)] or ("instance_scores",) in deps[
        ("metric_tables",)
    ]
    materialized = stack.graphql(MATERIALIZATIONS_QUERY, {"path": ["metric_tables"]})
    partitions = {
        m["partition"]
        for m in materialized["assetOrError"]["assetMaterializations"]
        if m["runId"] == run["runId"]
    }
    assert partitions == {f"{key}|{s}" for s in SCENARIOS}


# --------------------------------------------------------------------------- faults


def _posts(stack: LocalDeployment) -> int:
    """Model calls the replicas have answered so far (their access logs)."""
    return sum(
        stack.services[f"replica{i}"].tail(10**8).count('"POST /v1/completions')
        for i in range(stack.replicas)
    )


def _started(step: str) -> str:
    # Dagster's step-start line in the worker's log (the executor's own "Executing steps"
    # event reaches the log only with the task's result, when the step has ended).
    return f'STEP_START - Started execution of step "{step}"'


def _worker_running(stack: LocalDeployment, step: str, before: dict[str, int]) -> str | None:
    """The worker that started ``step`` since ``before`` (its log's count of such starts)."""
    for name in [n for n in stack.services if n.startswith("worker")]:
        log = stack.services[name].tail(10**8)
        if log.count(_started(step)) > before.get(name, 0):
            return name
    return None


def _step_starts(stack: LocalDeployment, step: str) -> dict[str, int]:
    return {
        n: s.tail(10**8).count(_started(step))
        for n, s in stack.services.items()
        if n.startswith("worker")
    }


def _texts(stack: LocalDeployment, key: str, scenario: str) -> list:
    table = _s3_table(stack, _partition_key("model_outputs", key, scenario))
    rows = sorted(
        table.to_pylist(),
        key=lambda r: (r["instance_id"], r["trial"], r["perturbation"] or "", r["part"] or ""),
    )
    # The text, or the continuations' log-likelihoods, with the error.
    return [
        (r["instance_id"], (r["text"], [c["logprob"] for c in r["choices"] or []]), r["error"])
        for r in rows
    ]


def _same_outputs(got: list, expected: list) -> bool:
    """Equal texts; log-likelihoods equal up to float noise (batches differ between runs)."""
    assert len(got) == len(expected)
    for (gid, (gtext, glogp), _), (eid, (etext, elogp), _) in zip(got, expected, strict=True):
        assert (gid, gtext) == (eid, etext)
        assert glogp == pytest.approx(elogp, abs=1e-3)
    return True


def test_a_worker_killed_mid_model_outputs_is_replaced_and_nothing_is_recomputed(deployment):
    stack = deployment
    baseline_posts = _posts(stack)
    starts = _step_starts(stack, "model_outputs")
    key = _promote(stack, "smollm2", "candidate", max_context=2049)

    victim = _wait(
        "model_outputs started in a worker",
        lambda: _worker_running(stack, "model_outputs", starts),
        stack,
    )
    # Let the first scenario's requests finish (one committed chunk of the request cache),
    # and catch the step in the second one's.
    _wait(
        "the first scenario's requests answered",
        lambda: _posts(stack) - baseline_posts >= ARITHMETIC_N + 3,
        stack,
        every_s=0.2,
    )
    # ... then kill the worker running the step, and its step with it (the solo pool).
    stack.services[victim].signal(signal.SIGKILL)
    stack.services[victim].process.wait(10)
    # Nothing of this version is in S3 yet: a partition is written only when the step ends.
    assert not [k for k in stack.s3_keys("assay/model_outputs/") if key in k]
    # A supervisor restarts the worker; the step's message comes back after the visibility
    # timeout and runs again on a worker.
    stack.start_worker(int(victim.removeprefix("worker")))

    run = _wait_for_run(stack, key)
    assert run["status"] == "SUCCESS", stack.logs()
    arithmetic = _s3_table(stack, _partition_key("model_outputs", key, "arithmetic"))
    assert arithmetic.num_rows == ARITHMETIC_N
    # The requests answered before the kill came from the request cache, not the model.
    assert all(arithmetic["cached"].to_pylist())
    facts = _texts(stack, key, "facts-mc")
    assert len(facts) == FACTS_N and all(error is None for _, _, error in facts)
    # The same completions as the undisturbed promotion of the same model.
    first = [k for k in stack.s3_keys("assay/model_outputs/") if "smollm2@v1/" in k]
    assert first
    assert _same_outputs(
        _texts(stack, key, "arithmetic"), _texts(stack, "smollm2@v1", "arithmetic")
    )


def test_a_replica_killed_mid_run_hands_its_requests_to_the_other(deployment):
    stack = deployment
    baseline = [
        stack.services[f"replica{i}"].tail(10**8).count('"POST /v1/completions') for i in (0, 1)
    ]
    key = _promote(stack, "smollm2", "canary", max_context=2050)
    _wait(
        "both replicas serving this run",
        lambda: all(
            stack.services[f"replica{i}"].tail(10**8).count('"POST /v1/completions')
            > baseline[i] + 2
            for i in (0, 1)
        ),
        stack,
    )
    stack.services["replica1"].signal(signal.SIGKILL)
    try:
        run = _wait_for_run(stack, key)
    finally:
        stack.start_replica(1)
    assert run["status"] == "SUCCESS", stack.logs()
    for scenario in SCENARIOS:
        got = _texts(stack, key, scenario)
        assert all(error is None for _, _, error in got)
        # Equal to the undisturbed promotion of the same model (greedy decoding).
        assert _same_outputs(got, _texts(stack, "smollm2@v1", scenario))


def test_the_daemon_killed_mid_tick_loses_no_promotion_and_launches_none_twice(deployment):
    stack = deployment
    daemon = stack.services["daemon"]
    ticks = daemon.tail(10**8).count("Checking for new runs for sensor: model_promotion_sensor")
    # Two promotions (same serving as the first version: the request cache answers them).
    keys = [_promote(stack, "smollm2", alias) for alias in ("blue", "green")]
    _wait(
        "the promotion sensor's next tick",
        lambda: (
            daemon.tail(10**8).count("Checking for new runs for sensor: model_promotion_sensor")
            > ticks
        ),
        stack,
        timeout_s=120,
    )
    daemon.signal(signal.SIGKILL)  # mid-tick: the tick reads the registry and the suite
    daemon.process.wait(10)
    stack.start_daemon()
    for key in keys:
        run = _wait_for_run(stack, key)
        assert run["status"] == "SUCCESS", stack.logs()
    time.sleep(35)  # one more tick: a replayed event would launch a second run now
    for key in keys:
        # One run launched by the sensor per promotion; a run the kill caught (launched just
        # before it) is failed by run monitoring and relaunched by run retries as its child.
        runs = _runs(stack, "assay/model_version", key)
        assert len([r for r in runs if "dagster/parent_run_id" not in _tags(r)]) == 1, runs


def _pool_slots_of_ended_runs(stack: LocalDeployment) -> list[str]:
    """Runs that have ended but still hold a slot of a pool (``model-inference``)."""
    import psycopg

    with psycopg.connect(stack.pg_url("dagster", driver=False)) as conn:
        holders = {
            run_id
            for (run_id,) in conn.execute(
                "SELECT run_id FROM concurrency_slots WHERE run_id IS NOT NULL"
            )
        }
    ended = {r["runId"] for r in stack.graphql(ALL_RUNS_QUERY)["runsOrError"]["results"]}
    ended -= {r["runId"] for r in _active_runs(stack)}
    return sorted(holders & ended)


def _active_runs(stack: LocalDeployment) -> list[dict]:
    runs = stack.graphql(ALL_RUNS_QUERY)["runsOrError"]["results"]
    return [r for r in runs if r["status"] not in ("SUCCESS", "FAILURE", "CANCELED")]


def test_a_run_killed_with_the_daemon_is_failed_by_monitoring_and_retried(deployment):
    """The daemon's code server runs each run in a process of its own: killing the daemon's
    process group (a lost machine or container) kills the run in the middle of a step. The
    restarted daemon's run monitoring finds the process gone and fails the run, run retries
    relaunch it, and the pool slot the dead run held is given back."""
    stack = deployment
    # The model step watched below must be this test's run's, not an earlier test's.
    _wait("no run of an earlier test still active", lambda: not _active_runs(stack), stack)
    starts = _step_starts(stack, "model_outputs")
    key = _promote(stack, "smollm2", "orphaned", max_context=2054)
    _wait("model_outputs started", lambda: _worker_running(stack, "model_outputs", starts), stack)
    (killed,) = _runs(stack, "assay/model_version", key)
    assert killed["status"] == "STARTED"
    tags = _tags(killed)
    assert tags["assay/run_worker_host"] == socket.gethostname()

    daemon = stack.services["daemon"]
    daemon.signal(signal.SIGKILL)  # the daemon, its code server and the run's process
    daemon.process.wait(10)
    stack.start_daemon()

    def retried() -> dict | None:
        runs = _runs(stack, "assay/model_version", key)
        done = [r for r in runs if r["status"] == "SUCCESS"]
        return done[0] if done else None

    retry = _wait("the killed run failed and retried", retried, stack, timeout_s=600)
    (first,) = [
        r for r in _runs(stack, "assay/model_version", key) if r["runId"] == killed["runId"]
    ]
    assert first["status"] == "FAILURE"
    events = stack.graphql(RUN_LOGS_QUERY, {"runId": first["runId"]})["logsForRun"]["events"]
    verdicts = [
        e["message"] for e in events if "Detected run worker status" in (e.get("message") or "")
    ]
    assert verdicts and "has exited" in verdicts[0], verdicts
    assert _tags(retry)["dagster/parent_run_id"] == first["runId"]
    for scenario in SCENARIOS:
        got = _texts(stack, key, scenario)
        assert _same_outputs(got, _texts(stack, "smollm2@v1", scenario))
    # The slot the dead run's model step held goes back to the pool (a minute after it ended).
    _wait("no pool slot held by an ended run", lambda: not _pool_slots_of_ended_runs(stack), stack)


def test_postgres_restarted_during_a_run_is_recovered_from_and_writes_nothing_half(deployment):
    """The request cache rides the restart out (it checks pooled connections and tries again);
    should any other part fail the run instead, run retries relaunch it. Either way the
    version ends evaluated, with every partition whole."""
    stack = deployment
    starts = _step_starts(stack, "model_outputs")
    key = _promote(stack, "smollm2", "pg-restart", max_context=2051)
    _wait("model_outputs started", lambda: _worker_running(stack, "model_outputs", starts), stack)
    stack.stop_postgres()
    time.sleep(5)
    stack.start_postgres()

    def evaluated() -> bool:
        try:
            runs = _runs(stack, "assay/model_version", key)
        except (OSError, ServiceError):  # the webserver's database restarting under it
            return False
        return any(r["status"] == "SUCCESS" for r in runs)

    _wait("the version evaluated", evaluated, stack, timeout_s=600)
    for scenario in SCENARIOS:
        table = _s3_table(stack, _partition_key("model_outputs", key, scenario))
        assert table.num_rows == (ARITHMETIC_N if scenario == "arithmetic" else FACTS_N)
        assert _same_outputs(_texts(stack, key, scenario), _texts(stack, "smollm2@v1", scenario))
        assert _s3_table(stack, _partition_key("metric_tables", key, scenario)).num_rows > 0
    # The deployment still works: the daemon and the workers survived the restart.
    assert stack.services["daemon"].alive()
    assert all(stack.services[f"worker{i}"].alive() for i in range(stack.workers))


def test_an_s3_outage_of_30_s_mid_run_is_ridden_out_and_nothing_is_partial(deployment):
    stack = deployment
    # Earlier faults may leave a retried run going: this run is told apart by its own reads.
    key = _promote(stack, "smollm2", "s3-outage", max_context=2052)
    _wait(
        "the run's model_outputs step reading its inputs",
        lambda: (
            f'registered_models/model_version={key}/part.parquet HTTP/1.1" 200'
            in "".join(
                line
                for line in stack.services["s3"].tail(10**8).splitlines(True)
                if '"GET ' in line
            )
        ),
        stack,
        every_s=0.5,
    )
    # Frozen, the server accepts connections and never answers, as a hung object store does.
    # The run reads each scenario's inputs and writes each step's tables there meanwhile.
    frozen_at = time.time()
    stack.services["s3"].signal(signal.SIGSTOP)
    try:
        time.sleep(30)
    finally:
        stack.services["s3"].signal(signal.SIGCONT)
        thawed_at = time.time()
    run = _wait_for_run(stack, key)
    assert run["status"] == "SUCCESS", stack.logs()
    # The run was under way for the whole outage.
    assert run["startTime"] < frozen_at and run["endTime"] > thawed_at
    written = [
        line
        for line in stack.services["s3"].tail(10**8).splitlines()
        if '"PUT ' in line and f"model_version={key}" in line.replace("%40", "@")
    ]
    assert written, stack.services["s3"].tail()
    for scenario in SCENARIOS:
        table = _s3_table(stack, _partition_key("model_outputs", key, scenario))
        assert table.num_rows == (ARITHMETIC_N if scenario == "arithmetic" else FACTS_N)
        assert _same_outputs(_texts(stack, key, scenario), _texts(stack, "smollm2@v1", scenario))
        assert _s3_table(stack, _partition_key("metric_tables", key, scenario)).num_rows > 0


def test_scenario_shaped_runs_evaluate_a_version_s_scenarios_side_by_side(deployment):
    stack = deployment
    # The daemon (and the code server it starts, where sensors and runs begin) reads the shape.
    stack.services["daemon"].stop()
    stack.env["ASSAY_EVALUATION_RUNS"] = "scenario"
    try:
        stack.start_daemon()
        key = _promote(stack, "smollm2", "side-by-side", max_context=2053)
        _wait_for_run(stack, key)
        runs = _runs(stack, "assay/model_version", key)
        tags = [{t["key"]: t["value"] for t in run["tags"]} for run in runs]
        assert sorted(t["assay/partitions"] for t in tags) == [f"{key}|{s}" for s in SCENARIOS]
        assert all(run["status"] == "SUCCESS" for run in runs), stack.logs()
        # The scenarios' runs overlapped in time, each with its steps in the Celery workers.
        (a_start, a_end), (b_start, b_end) = [(r["startTime"], r["endTime"]) for r in runs]
        assert a_start < b_end and b_start < a_end
        for run in runs:
            events = stack.graphql(RUN_LOGS_QUERY, {"runId": run["runId"]})["logsForRun"]
            messages = [
                e for e in events["events"] if "in celery worker" in (e.get("message") or "")
            ]
            assert {e["stepKey"] for e in messages} >= EVALUATION_STEPS
        for scenario in SCENARIOS:
            assert _same_outputs(
                _texts(stack, key, scenario), _texts(stack, "smollm2@v1", scenario)
            )
            assert _s3_table(stack, _partition_key("metric_tables", key, scenario)).num_rows > 0
    finally:
        stack.services["daemon"].stop()
        stack.env.pop("ASSAY_EVALUATION_RUNS")
        stack.start_daemon()


def test_after_every_fault_every_run_has_ended_and_given_back_its_pool_slots(deployment):
    """Last: whatever the faults above left behind, no run stays in flight and no ended run
    keeps a slot of the ``model-inference`` pool (either would block later evaluations)."""
    stack = deployment
    _wait("every run ended", lambda: not _active_runs(stack), stack, timeout_s=600, every_s=5)
    _wait("no pool slot held by an ended run", lambda: not _pool_slots_of_ended_runs(stack), stack)
