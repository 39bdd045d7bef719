"""From an alias move to the re-evaluation run: how long the promotion sensor's tick takes and
how long the launched run takes to start its first step, on SQLite and local storage.

Each round moves ``champion`` to another version, evaluates ``model_promotion_sensor`` once
(read events after the cursor, record ``registered_models``, build the range run request),
then executes the requested run in process and reads from its event log when the first
step started. Versions share one artifact and serving config, so after the first round the
request cache answers the evaluation itself; its time is another benchmark's subject. The daemon
evaluates the sensor every ``minimum_interval_seconds`` (30 s), so a deployment adds up to
that interval on top of these figures.

It also prints the run's wall time split by step (``model_outputs``: prompts, model and the
request cache; ``scores``: every metric family) for the first round, whose requests reach the
model, and for the cached rounds: what overlapping one scenario's scoring with the next one's
model work could save at most.

    .venv/bin/python benchmarks/bench_promotion.py [--rounds 10] [--max-instances 1]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dagster import (  # noqa: E402
    AssetSelection,
    DagsterEventType,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from assay.registry import Registry  # noqa: E402
from assets import all_assets  # noqa: E402
from assets.partitions import scenario_partitions  # noqa: E402
from resources import (  # noqa: E402
    ModelsResource,
    SuiteResource,
    assay_resources,
)
from sensors.promotion import EVALUATION_ASSETS, model_promotion_sensor  # noqa: E402

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start to its success, by step key."""
    started, seconds = {}, {}
    for event in instance.all_logs(run_id):
        kind = event.dagster_event.event_type if event.dagster_event else None
        if kind == DagsterEventType.STEP_START:
            started[event.step_key] = event.timestamp
        elif kind == DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = event.timestamp - started[event.step_key]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--max-instances", type=int, default=1, help="eval instances a scenario")
    args = parser.parse_args()
    cache = Path(__file__).resolve().parent.parent / ".assay" / "test-cache"
    with tempfile.TemporaryDirectory() as tmp, instance_for_test() as instance:
        url = f"sqlite:///{tmp}/registry.db"
        registry = Registry.open(url)
        registry.create_model("bench")
        for _ in range(args.rounds + 1):
            registry.create_version("bench", "bundled:smollm2-135m-instruct")
        resources = assay_resources(
            storage_url=f"{tmp}/storage",
            registry_url=url,
            suite=SuiteResource(max_instances=args.max_instances),
            models=ModelsResource(cache_dir=str(cache)),
        )

        def tick(cursor):
            context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            result = model_promotion_sensor(context)
            assert isinstance(result, SensorResult)
            for request in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
            return result

        cursor = tick(None).cursor  # registers the versions as partitions (not timed)
        for scenario in scenario_partitions.get_partition_keys():  # the suite's data (not timed)
            materialize(
                all_assets,
                selection=AssetSelection.assets("scenario_instances", "perturbed_instances"),
                partition_key=scenario,
                instance=instance,
                resources=resources,
                run_config=QUIET,
            )
        ticks, starts, walls = [], [], []
        for version in range(1, args.rounds + 1):
            registry.set_alias("bench", "champion", version)
            moved = time.perf_counter()
            result = tick(cursor)
            ticked = time.perf_counter()
            cursor = result.cursor
            (request,) = result.run_requests
            launched = time.time()
            begun = time.perf_counter()
            done = materialize(
                all_assets,
                selection=EVALUATION_ASSETS,
                instance=instance,
                resources=resources,
                tags=request.tags,
                run_config=QUIET,
            )
            first_step = min(
                e.timestamp
                for e in instance.all_logs(done.run_id, of_type=DagsterEventType.STEP_START)
            )
            walls.append((time.perf_counter() - begun, _step_seconds(instance, done.run_id)))
            ticks.append(ticked - moved)
            starts.append(first_step - launched)
    print(f"rounds: {args.rounds}")
    print(
        f"sensor tick after an alias move: median {statistics.median(ticks) * 1000:.1f} ms, "
        f"max {max(ticks) * 1000:.1f} ms"
    )
    print(
        f"run launch to first step:        median {statistics.median(starts) * 1000:.1f} ms, "
        f"max {max(starts) * 1000:.1f} ms"
    )
    for label, rounds in (("first round (model)", walls[:1]), ("cached rounds", walls[1:])):
        if rounds:
            wall = statistics.median(w for w, _ in rounds)
            steps = {k: statistics.median(s[k] for _, s in rounds) for k in rounds[0][1]}
            split = ", ".join(f"{k} {v:.2f} s ({v / wall:.1%})" for k, v in steps.items())
            print(f"run wall time, {label}: median {wall:.2f} s; steps: {split}")
    total = statistics.median(ticks) + statistics.median(starts)
    print(
        f"alias move → evaluation running: median {total:.2f} s "
        "(plus up to the sensor's 30 s interval under the daemon)"
    )


if __name__ == "__main__":
    main()
