"""The promotion path under the real ``dagster-daemon``: how long from an alias move to the
evaluation run starting, and how much model time two promotions of one version cost.

A temporary Dagster home, the repository's workspace.yaml and ``dagster-daemon run``; aliases
are moved with the ``assay`` CLI; the model is an OpenAI-compatible server on loopback that
answers each completion call after ``--model-delay`` seconds, one call at a time (a stand-in
for model time on one accelerator), and counts the calls.

1. Latency: ``--rounds`` promotions, each of a new version, one after the other. For each,
   the time from the registry's event (the move) to the run's creation (the sensor's tick)
   and to the run starting (queue + launch). The reference is the sensor's interval, set by
   ``ASSAY_SENSOR_INTERVAL_S`` (the daemon also evaluates sensors at most every 5 s).
2. Two promotions of one version (``challenger`` then ``canary``): after, through the sensor,
   which gives one run; before, the behaviour the sensor had (one run per promotion, started
   at once), replayed as two concurrent ``dagster asset materialize`` runs on a fresh request
   cache. Model time is the number of completion calls times the server's delay.

    .venv/bin/python benchmarks/bench_promotion_daemon.py [--rounds 10] [--interval 5]
        [--model-delay 1.0] [--only latency|twice]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
warnings.filterwarnings("ignore")

from dagster import DagsterRunStatus  # noqa: E402
from live_deployment import BIN, Deployment, arithmetic_app, wait_for  # noqa: E402

from assay.registry import Registry  # noqa: E402
from assay.serving import asgi_in_background  # noqa: E402

SENSOR = "model_promotion_sensor"
TAG = "assay/model_version"
DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
EVALUATION = "model_outputs,instance_scores,metric_tables"


def materialize(deployed: Deployment, select: str, partition: str, wait: bool = True):
    """``dagster asset materialize`` in one process, as a deployment's CLI user runs it."""
    command = [
        *(str(BIN / "dagster"), "asset", "materialize", "-f", "definitions.py"),
        *("--select", select, "--partition", partition),
        *("--config-json", '{"execution": {"config": {"in_process": {}}}}'),
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=deployed.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if not wait:
        return process
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]
    return process


def latency(root: Path, cache: Path, base_url: str, rounds: int, interval: int) -> None:
    deployed = Deployment(root, cache, max_concurrent_runs=4)
    deployed.env["ASSAY_SENSOR_INTERVAL_S"] = str(interval)
    try:
        deployed.assay("create", "lat")
        for _ in range(rounds):
            deployed.assay("register", "lat", f"openai:{base_url}#right")
        materialize(deployed, "scenario_instances", "arithmetic")
        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)
        registry = Registry.open(deployed.env["ASSAY_REGISTRY_URL"])
        to_created, to_started = [], []
        for version in range(1, rounds + 1):
            deployed.assay("alias", "set", "lat", "champion", str(version))
            moved = registry.events()[-1]
            key = f"lat@v{version}"

            def started(key=key):
                runs = deployed.runs(**{TAG: key})
                record = runs and deployed.instance.get_run_record_by_id(runs[0].run_id)
                return record if record and record.start_time else None

            record = wait_for(started, 300, f"the run of {key} to start", deployed.log)
            to_created.append(record.create_timestamp.timestamp() - moved.ts.timestamp())
            to_started.append(record.start_time - moved.ts.timestamp())
        registry.close()
    finally:
        deployed.stop()
    print(f"sensor interval: {interval} s (ASSAY_SENSOR_INTERVAL_S); promotions: {rounds}")
    for label, values in (("run created", to_created), ("run started", to_started)):
        p50 = statistics.median(values)
        print(
            f"alias moved → {label}: p50 {p50:.2f} s, max {max(values):.2f} s "
            f"(p50 = {p50 / interval:.2f}× the interval)"
        )


def two_promotions(root: Path, cache: Path, delay: float) -> None:
    results = {}
    for mode in ("before", "after"):
        calls: list[str] = []
        with asgi_in_background(arithmetic_app(calls, delay)) as server:
            deployed = Deployment(root / mode, cache, max_concurrent_runs=4)
            try:
                deployed.assay("create", "twice")
                deployed.assay("register", "twice", f"openai:{server.base_url}#right")
                key = "twice@v1"
                materialize(deployed, "scenario_instances", "arithmetic")
                if mode == "after":
                    deployed.start()
                    deployed.dagster("sensor", "start", SENSOR)
                    for alias in ("challenger", "canary"):
                        deployed.assay("alias", "set", "twice", alias, "1")

                    def finished(deployed=deployed, key=key):
                        runs = deployed.runs(**{TAG: key})
                        return runs if runs and {r.status for r in runs} <= DONE else None

                    # Let further ticks pass, so a second run would have been requested.
                    time.sleep(12)
                    n_runs = len(wait_for(finished, 600, "the evaluation", deployed.log))
                else:
                    # What the sensor did before: the partition, then a run per promotion.
                    deployed.instance.add_dynamic_partitions("model_version", [key])
                    materialize(deployed, "registered_models", key)
                    both = [materialize(deployed, EVALUATION, f"{key}|arithmetic", wait=False)]
                    both.append(materialize(deployed, EVALUATION, f"{key}|arithmetic", wait=False))
                    n_runs = sum(p.wait(timeout=600) == 0 for p in both)
            finally:
                deployed.stop()
        results[mode] = (n_runs, len(calls))
    print(f"two promotions of one version (server delay {delay * 1000:.0f} ms per call):")
    for mode, (n_runs, n_calls) in results.items():
        print(
            f"  {mode:6}: {n_runs} run(s), {n_calls} model calls, "
            f"model time {n_calls * delay:.1f} s"
        )
    before, after = results["before"][1], results["after"][1]
    print(f"  model time after / before: {after / before:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--model-delay", type=float, default=1.0)
    parser.add_argument("--only", choices=("latency", "twice"), default=None)
    args = parser.parse_args()
    cache = REPO / ".assay" / "test-cache"
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "twice":
            with asgi_in_background(arithmetic_app()) as server:
                latency(Path(tmp) / "latency", cache, server.base_url, args.rounds, args.interval)
        if args.only != "latency":
            two_promotions(Path(tmp) / "twice", cache, args.model_delay)


if __name__ == "__main__":
    main()
