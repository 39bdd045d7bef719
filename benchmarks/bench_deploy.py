"""The deployment of deploy/ on this machine (deploy/stack.py): what Postgres + Celery cost and
what more workers and replicas buy.

1. Rescoring backfill (a metric change: ``instance_scores``/``metric_tables`` rebuilt from
   stored ``model_outputs``, zero model calls) over versions × scenarios partitions, as one
   range run through the ``dagster`` CLI:
   - Postgres instance + Celery executor (2 workers), storage in S3 (moto);
   - the embedded default: a SQLite instance and the in-process executor, same S3 storage,
     same registry;
   - reference: the same scoring done by the library alone (read, score, write each
     partition) in this process, so "Dagster overhead per partition" is (run − reference) / N.
2. A promotion (model_outputs + scores over the suite, requests not cached) with 1 vs 2
   Celery workers and 1 vs 2 model replicas, as one range run (``ASSAY_EVALUATION_RUNS``
   ``version``) and as one run per scenario launched together (``scenario``).

Figures depend on the machine's load (the project's machines are shared): compare the ratios
within one run, not absolute numbers across runs.

    .venv/bin/python benchmarks/bench_deploy.py [--versions 50 --scenarios 10] [--skip-promotion]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from deploy.stack import LocalDeployment, missing_parts  # noqa: E402

MODEL = "bench"


def suite_yaml(scenarios: int, instances: int) -> str:
    lines = ["scenarios:"]
    for i in range(scenarios):
        lines += [
            f"  s{i:02d}:",
            "    scenario: arithmetic_qa",
            f"    args: {{n_test: {instances + i}, n_train: 0}}",
            "    adapter: {method: generation, max_tokens: 3}",
            f"    max_instances: {instances}",
        ]
    return "\n".join(lines) + "\n"


def materialize(stack: LocalDeployment, select: str, first: str, last: str, **env: str) -> float:
    """One range run through the CLI; returns its wall time in seconds."""
    saved = dict(stack.env)
    stack.env.update(env)
    try:
        start = time.perf_counter()
        stack.dagster(
            *("asset", "materialize", "-f", "definitions.py", "--select", select),
            *("--partition-range", f"{first}...{last}"),
        )
        return time.perf_counter() - start
    finally:
        stack.env = saved


def library_rescore(stack: LocalDeployment, versions: list[str], scenarios: list[str]) -> float:
    """The backfill's work without Dagster: read, score and write every partition."""
    from assay.core.records import Instance, InstanceStat, ModelOutput
    from assay.registry import Registry
    from assay.scoring.scorecard import score_partition
    from assay.scoring.summary import scorecard_table
    from assay.storage.parquet import ParquetStore

    os.environ.update({k: v for k, v in stack.env.items() if k.startswith("AWS_")})
    store = ParquetStore(stack.env["ASSAY_STORAGE_URL"])
    registry = Registry.open(stack.env["ASSAY_REGISTRY_URL"])
    start = time.perf_counter()
    instances = {
        s: Instance.from_table(store.read("scenario_instances", {"scenario": s})) for s in scenarios
    }
    for version in versions:
        prices = registry.get_version(version).prices.token_prices()
        for scenario in scenarios:
            dims = {"model_version": version, "scenario": scenario}
            outputs = ModelOutput.from_table(store.read("model_outputs", dims))
            scored = score_partition(
                instances[scenario],
                outputs,
                prices=prices,
                toxicity=None,
                seed_key=f"{version}|{scenario}",
            )
            store.write("bench_instance_scores", dims, InstanceStat.to_table(scored.stats))
            store.write("bench_metric_tables", dims, scorecard_table(scored.card))
    return time.perf_counter() - start


def last_run_seconds(env: dict[str, str]) -> float:
    """RUN_START to RUN_SUCCESS of the newest run on the instance ``env`` names (the CLI's
    own start-up and code loading left out)."""
    return last_run_times(env)[0]


def last_run_times(env: dict[str, str]) -> tuple[float, float]:
    """The newest run's RUN_START..RUN_SUCCESS and its steps' first STEP_START..last
    STEP_SUCCESS, in seconds: the second leaves out what a run costs once however many
    partitions it holds (the executor starting, a Celery worker taking the step and loading
    the code location)."""
    from dagster import DagsterEventType, DagsterInstance

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with DagsterInstance.get() as instance:
            run = instance.get_runs(limit=1)[0]
            stats = instance.get_run_stats(run.run_id)
            starts = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
            ends = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_SUCCESS)
            step = max(e.timestamp for e in ends) - min(e.timestamp for e in starts)
            return float(stats.end_time - stats.start_time), float(step)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def add_partitions(env: dict[str, str], versions: list[str]) -> None:
    from dagster import DagsterInstance

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("model_version", versions)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def rescoring(stack: LocalDeployment, n_versions: int, n_scenarios: int) -> None:
    from assay.registry import Registry

    scenarios = [f"s{i:02d}" for i in range(n_scenarios)]
    registry = Registry.open(stack.pg_url("assay"))
    registry.create_model(MODEL)
    # Every version is the same served model: after the first, the request cache answers.
    versions = [registry.create_version(MODEL, stack.model_source()).key for _ in range(n_versions)]
    add_partitions(stack.env, versions)
    n = n_versions * n_scenarios
    print(f"setup: {n_versions} versions x {n_scenarios} scenarios = {n} partitions", flush=True)
    materialize(stack, "scenario_instances,perturbed_instances", scenarios[0], scenarios[-1])
    materialize(stack, "registered_models", versions[0], versions[-1])
    first, last = f"{versions[0]}|{scenarios[0]}", f"{versions[-1]}|{scenarios[-1]}"
    materialize(stack, "model_outputs", first, last)

    celery = materialize(stack, "instance_scores,metric_tables", first, last)
    celery_run, celery_step = last_run_times(stack.env)
    # The embedded default on the same storage and registry: a SQLite instance, in process.
    home = Path(tempfile.mkdtemp(prefix="bench-deploy-home-"))
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    default_env = {"DAGSTER_HOME": str(home), "ASSAY_EXECUTOR": "in_process"}
    add_partitions({**stack.env, **default_env}, versions)
    default = materialize(stack, "instance_scores,metric_tables", first, last, **default_env)
    default_run, default_step = last_run_times({**stack.env, **default_env})
    reference = library_rescore(stack, versions, scenarios)

    print(f"\nrescoring backfill, {n} partitions, 0 model calls (one range run via the CLI)")
    print("  CLI = the `dagster asset materialize` command; run = RUN_START..RUN_SUCCESS;")
    print("  step = STEP_START..STEP_SUCCESS (the run less what it costs once)")
    head = f"{'setup':32s} {'CLI s':>7s} {'run s':>7s} {'step s':>7s} {'partitions/min':>15s}"
    print(f"{head} {'(step)':>7s} {'overhead ms/partition (run - reference)':>40s}")
    rate = n / reference * 60
    print(
        f"{'library alone (reference)':32s} {reference:7.1f} {reference:7.1f} {reference:7.1f} "
        f"{rate:15.0f} {rate:7.0f} {0.0:40.1f}"
    )
    for name, wall, run, step in [
        ("SQLite + in-process (default)", default, default_run, default_step),
        ("Postgres + Celery (2 workers)", celery, celery_run, celery_step),
    ]:
        overhead = (run - reference) / n * 1000
        print(
            f"{name:32s} {wall:7.1f} {run:7.1f} {step:7.1f} {n / run * 60:15.0f} "
            f"{n / step * 60:7.0f} {overhead:40.1f}"
        )
    print(f"ratio Postgres+Celery / default: {celery_run / default_run:.2f}x run time")


def promotion(stack: LocalDeployment, replicas: int, salt: int) -> float:
    """The version shape: one range run over the suite; its run time."""
    key = new_version(stack, replicas, salt)
    materialize(stack, "model_outputs,instance_scores,metric_tables", f"{key}|s00", f"{key}|s01")
    return last_run_seconds(stack.env)


def new_version(stack: LocalDeployment, replicas: int, salt: int) -> str:
    """A registered version whose requests are not cached yet (a serving setting of its own)."""
    from assay.registry import Registry

    registry = Registry.open(stack.pg_url("assay"))
    if MODEL not in {m.name for m in registry.list_models()}:
        registry.create_model(MODEL)
    serving = {"max_context": 2048 + salt}
    key = registry.create_version(MODEL, stack.model_source(replicas), serving=serving).key
    add_partitions(stack.env, [key])
    materialize(stack, "registered_models", key, key)
    return key


def promotion_by_scenario(stack: LocalDeployment, replicas: int, salt: int) -> float:
    """The scenario shape: one run per scenario, launched together; first start to last end."""
    import subprocess

    from dagster import DagsterInstance

    key = new_version(stack, replicas, salt)
    select = "model_outputs,instance_scores,metric_tables"
    command = [str(REPO / ".venv" / "bin" / "dagster"), "asset", "materialize"]
    command += ["-f", "definitions.py", "--select", select, "--partition"]
    runs = [
        subprocess.Popen(
            [*command, f"{key}|{scenario}"],
            cwd=REPO,
            env=stack.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for scenario in ("s00", "s01")
    ]
    for run in runs:
        _, err = run.communicate(timeout=1800)
        if run.returncode != 0:
            raise RuntimeError(err.decode()[-3000:])
    saved = dict(os.environ)
    os.environ.update(stack.env)
    try:
        with DagsterInstance.get() as instance:
            stats = [instance.get_run_stats(r.run_id) for r in instance.get_runs(limit=2)]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return float(max(s.end_time for s in stats) - min(s.start_time for s in stats))


def promotions(stack: LocalDeployment) -> None:
    materialize(stack, "scenario_instances,perturbed_instances", "s00", "s01")
    promotion(stack, 2, 0)  # warm-up: the workers import the code location once (not reported)
    rows = []
    cases = [(2, 2, "scenario"), (2, 2, "version"), (2, 1, "scenario"), (1, 2, "scenario")]
    for salt, (workers, replicas, shape) in enumerate(cases, start=1):
        # Stop the second worker for the one-worker case.
        if workers == 1 and stack.services["worker1"].alive():
            stack.services["worker1"].stop()
        run = promotion_by_scenario if shape == "scenario" else promotion
        rows.append((workers, replicas, shape, run(stack, replicas, salt)))
    print("\npromotion (model_outputs + scores, 2 scenarios, uncached requests)")
    print(f"{'celery workers':>15s} {'replicas':>9s} {'runs':>9s} {'wall s':>8s}")
    for workers, replicas, shape, wall in rows:
        print(f"{workers:15d} {replicas:9d} {shape:>9s} {wall:8.1f}")
    base = rows[0][3]
    print(
        f"one range run / one run per scenario: {rows[1][3] / base:.2f}x; "
        f"1 replica / 2 replicas: {rows[2][3] / base:.2f}x; "
        f"1 worker / 2 workers: {rows[3][3] / base:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--promotion-instances", type=int, default=24)
    parser.add_argument("--skip-promotion", action="store_true")
    parser.add_argument("--skip-rescoring", action="store_true")
    args = parser.parse_args()
    missing = missing_parts()
    if missing:
        sys.exit("bench_deploy needs " + "; ".join(missing))
    cache = REPO / ".assay" / "test-cache"
    if not args.skip_rescoring:
        with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
            stack = LocalDeployment(
                root=Path(tmp),
                suite_yaml=suite_yaml(args.scenarios, 1),
                model_cache=cache,
                daemon=False,
                webserver=False,
            )
            with stack:
                rescoring(stack, args.versions, args.scenarios)
    if not args.skip_promotion:
        with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
            stack = LocalDeployment(
                root=Path(tmp),
                suite_yaml=suite_yaml(2, args.promotion_instances),
                model_cache=cache,
                daemon=False,
                webserver=False,
            )
            with stack:
                promotions(stack)
    print("\n(one machine, shared with other jobs: compare ratios within this run)")


if __name__ == "__main__":
    main()
