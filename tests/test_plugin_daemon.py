"""The example plugin under the real ``dagster-daemon``: its scorer scores a suite entry in the
run a promotion launches; then the plugin is upgraded (a newer copy of the distribution put
ahead of the installed one on the deployment's ``PYTHONPATH``, as a reinstall would), the
webserver the UI talks to marks exactly the tables it feeds stale, and a rescoring backfill
launched through that webserver's GraphQL (what "Materialize → Launch backfill" sends) is run
by the daemon without one model call.

The model is the arithmetic server of ``live_deployment`` (its ``right`` model computes each
answer), so every reference that the plugin can score is answered correctly.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from dagster import AssetKey, DagsterRunStatus
from live_deployment import BIN, REPO, TERMINAL, Deployment, arithmetic_app, deployment, wait_for

from assay.registry import Registry
from assay.serving import asgi_in_background
from assay.storage.parquet import ParquetStore
from deploy.stack import free_port
from sensors.promotion import MODEL_VERSION_TAG

SENSOR = "model_promotion_sensor"
PLUGIN_DIR = REPO / "examples" / "assay-example-plugin"
SUITE = """
scenarios:
  arithmetic:
    scenario: arithmetic_qa
    args: {n_test: 8, n_train: 0}
    adapter: {method: generation, max_tokens: 4, stop: ["\\n"]}
    max_instances: 8
    scorer: numeric_tolerance
    scorer_args: {rel_tol: 0.001}
"""
PARTITION = "p@v1|arithmetic"
STALE_QUERY = """
query Stale($keys: [AssetKeyInput!], $partition: String) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    staleStatus(partition: $partition)
    staleCauses(partition: $partition) { category reason }
  }
}
"""
BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


def _upgraded_copy(into: Path, version: str) -> Path:
    """The example plugin's package and a ``.dist-info`` declaring ``version`` with the same
    entry points: what ``pip install`` of a newer release leaves in site-packages."""
    shutil.copytree(
        PLUGIN_DIR / "assay_example_plugin",
        into / "assay_example_plugin",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    info = into / f"assay_example_plugin-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: assay-example-plugin\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(
        (PLUGIN_DIR / "assay_example_plugin.egg-info" / "entry_points.txt").read_text()
    )
    listed = sorted(p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file())
    (info / "RECORD").write_text("".join(f"{path},,\n" for path in listed))
    return into


@contextmanager
def _webserver(deployed: Deployment) -> Iterator[str]:
    port = free_port()
    command = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1"]
    with (deployed.root / "webserver.log").open("w") as out:
        process = subprocess.Popen(
            [*command, "-p", str(port)],
            cwd=REPO,
            env=deployed.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/graphql"
    try:

        def answering() -> bool | None:
            try:
                return httpx.post(url, json={"query": "{ version }"}, timeout=5).is_success
            except httpx.TransportError:
                return None

        wait_for(answering, 120, "the Dagster webserver", deployed.root / "webserver.log")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _graphql(url: str, query: str, variables: dict) -> dict:
    answer = httpx.post(url, json={"query": query, "variables": variables}, timeout=60)
    assert answer.is_success, answer.text[-3000:]
    body = answer.json()
    assert "errors" not in body, body
    return body["data"]


def _code_stale(url: str) -> set[str]:
    """The assets of the evaluated partitions that the UI marks stale for a code change."""
    stale = set()
    for partition, assets in [
        ("arithmetic", ["scenario_instances", "perturbed_instances"]),
        (PARTITION, ["model_outputs", "instance_scores", "metric_tables"]),
    ]:
        keys = [{"path": [asset]} for asset in assets]
        found = _graphql(url, STALE_QUERY, {"keys": keys, "partition": partition})
        assert len(found["assetNodes"]) == len(assets)
        stale |= {
            node["assetKey"]["path"][-1]
            for node in found["assetNodes"]
            if any(cause["category"] == "CODE" for cause in node["staleCauses"])
        }
    return stale


def _code_version(deployed: Deployment, asset: str) -> str | None:
    record = deployed.instance.get_latest_materialization_event(AssetKey(asset))
    assert record is not None, asset
    return record.asset_materialization.tags.get("dagster/code_version")


def test_a_plugin_scores_a_promotion_under_the_daemon_and_its_upgrade_rescores_with_no_model_call(
    tmp_path, model_cache_dir
):
    calls: list[str] = []
    with (
        asgi_in_background(arithmetic_app(calls)) as server,
        deployment(tmp_path, model_cache_dir, max_concurrent_runs=1) as deployed,
    ):
        Path(deployed.env["ASSAY_SUITE"]).write_text(SUITE)
        deployed.assay("create", "p")
        deployed.assay("register", "p", f"openai:{server.base_url}#right")
        materialized = deployed.run(
            *(str(BIN / "dagster"), "asset", "materialize", "-f", "definitions.py"),
            *("--select", "scenario_instances", "--partition", "arithmetic"),
        )
        assert materialized.returncode == 0, materialized.stderr[-3000:]

        registry = Registry.open(deployed.env["ASSAY_REGISTRY_URL"])
        last = registry.events()[-1].id
        registry.close()
        deployed.start()
        deployed.dagster("sensor", "cursor", SENSOR, "--set", str(last))
        deployed.dagster("sensor", "start", SENSOR)
        deployed.assay("alias", "set", "p", "candidate", "1")

        def finished():
            runs = deployed.runs(**{MODEL_VERSION_TAG: "p@v1"})
            return runs if runs and {r.status for r in runs} <= TERMINAL else None

        (run,) = wait_for(finished, 420, "the promotion's run to finish", deployed.log)
        assert run.status is DagsterRunStatus.SUCCESS

        # The plugin scored the run: the hand computation is the reference numbers.
        store = ParquetStore(deployed.env["ASSAY_STORAGE_URL"])
        where = {"model_version": "p@v1", "scenario": "arithmetic"}
        instances = store.read("scenario_instances", {"scenario": "arithmetic"}).to_pylist()
        golds = {i["id"]: float(i["references"][0]) for i in instances}
        assert len(golds) == 8
        scorable = {key for key, gold in golds.items() if gold != 0}
        stats = [
            s
            for s in store.read("instance_scores", where).to_pylist()
            if s["metric"] == "within_tolerance" and not s["perturbation"]
        ]
        assert {s["instance_id"] for s in stats} == scorable
        assert all(s["value"] == 1.0 for s in stats)  # the `right` model answers each one
        card = {
            (r["metric"], r["group"]): r
            for r in store.read("metric_tables", where).to_pylist()
            if not r["perturbation"]
        }
        assert card[("within_tolerance", "")]["mean"] == 1.0
        (failures,) = [r for (m, _), r in card.items() if m == "scorer_failures"]
        assert failures["mean"] == (len(golds) - len(scorable)) / len(golds)
        model_calls = len(calls)
        assert model_calls > 0
        before = {a: _code_version(deployed, a) for a in ("instance_scores", "model_outputs")}

        # The upgrade: a newer release ahead of the installed one, code location reloaded.
        deployed.stop()
        upgraded = _upgraded_copy(tmp_path / "site", "0.2.0")
        deployed.env["PYTHONPATH"] = f"{upgraded}:{deployed.env['PYTHONPATH']}"
        deployed.start()
        with _webserver(deployed) as graphql:
            # Exactly the tables the plugin feeds (a scenario and a scorer) are stale by code.
            # The plugin gives a scenario and a scorer: exactly the tables they feed.
            assert _code_stale(graphql) == {
                "scenario_instances",
                "instance_scores",
                "metric_tables",
            }

            params = {
                "partitionNames": [PARTITION],
                "assetSelection": [{"path": ["instance_scores"]}, {"path": ["metric_tables"]}],
                "title": "rescore after a plugin upgrade",
            }
            launched = _graphql(graphql, BACKFILL, {"params": params})["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched

            def backfilled():
                runs = deployed.runs(**{"dagster/backfill": launched["backfillId"]})
                return runs if runs and {r.status for r in runs} <= TERMINAL else None

            runs = wait_for(backfilled, 300, "the rescoring backfill to finish", deployed.log)
            assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
            assert not {"instance_scores", "metric_tables"} & _code_stale(graphql)

        assert len(calls) == model_calls  # rescoring read the stored outputs only
        assert _code_version(deployed, "model_outputs") == before["model_outputs"]
        assert _code_version(deployed, "instance_scores") != before["instance_scores"]
        rescored = [
            r
            for r in store.read("metric_tables", where).to_pylist()
            if r["metric"] == "scorer_failures"
        ]
        assert [re.search(r"\d+\.\d+\.\d+", r["group"])[0] for r in rescored] == ["0.2.0"]
