"""Promotion decisions under the real ``dagster-daemon``: the time from a ``champion`` request
to its decision, for a version already evaluated and for one not evaluated yet.

A temporary Dagster home, the repository's workspace.yaml and ``dagster-daemon run``; aliases
are moved with the ``assay`` CLI; the model is an OpenAI-compatible server on loopback (the
tests' ``right`` model: every version answers alike, so every decision approves). The suite
is the tests' one-scenario suite with a ``promotion:`` block (an absolute threshold and the
primary metric's non-inferiority margin).

Each round:

1. reference: an ungated alias (``canary``) moved to a new version, to its evaluation run's
   end: what evaluating the version costs through the sensor, with no decision;
2. already evaluated: ``champion`` asked for that version: judged on its stored evaluation at
   the next tick, no run (the daemon evaluates sensors at most every 5 s);
3. not yet evaluated: ``champion`` asked for a version never evaluated: pending, evaluated,
   judged and moved.

Medians over ``--rounds`` rounds, with the load average beside them.

    .venv/bin/python benchmarks/bench_gate_daemon.py [--rounds 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
warnings.filterwarnings("ignore")

from bench_promotion_daemon import DONE, SENSOR, TAG, materialize  # noqa: E402
from live_deployment import GATED_SUITE, Deployment, arithmetic_app, wait_for  # noqa: E402

from assay.serving import asgi_in_background  # noqa: E402


def _timed_champion(deployed: Deployment, version: int) -> float:
    started = time.monotonic()
    asked = deployed.assay("alias", "set", "g", "champion", str(version))
    assert asked.stdout.startswith("pending:"), asked.stdout
    wait_for(lambda: deployed.champion("g") == version or None, 600, f"g@v{version}", deployed.log)
    return time.monotonic() - started


def run(root: Path, cache: Path, base_url: str, rounds: int) -> dict[str, list[float]]:
    deployed = Deployment(root, cache, max_concurrent_runs=2)
    for variable in ("ASSAY_GATED_ALIASES", "ASSAY_GATED_STAGES", "ASSAY_GATED_PROMPT_ALIASES"):
        deployed.env.pop(variable, None)  # the defaults: champion and Production gated
    (root / "suite.yaml").write_text(GATED_SUITE)
    figures: dict[str, list[float]] = {"reference": [], "evaluated": [], "not evaluated": []}
    try:
        deployed.assay("create", "g")
        for _ in range(1 + 2 * rounds):
            deployed.assay("register", "g", f"openai:{base_url}#right")
        materialize(deployed, "scenario_instances", "arithmetic")
        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)
        _timed_champion(deployed, 1)  # the first holder, not measured
        for r in range(rounds):
            evaluated, fresh = 2 + 2 * r, 3 + 2 * r
            started = time.monotonic()
            deployed.assay("alias", "set", "g", "canary", str(evaluated))

            def finished(key=f"g@v{evaluated}"):
                runs = deployed.runs(**{TAG: key})
                return runs if runs and {x.status for x in runs} <= DONE else None

            wait_for(finished, 600, f"g@v{evaluated}'s evaluation", deployed.log)
            figures["reference"].append(time.monotonic() - started)
            figures["evaluated"].append(_timed_champion(deployed, evaluated))
            figures["not evaluated"].append(_timed_champion(deployed, fresh))
    finally:
        deployed.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cache = REPO / ".assay" / "test-cache"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, asgi_in_background(arithmetic_app()) as server:
        figures = run(Path(tmp) / "gate", cache, server.base_url, args.rounds)
    load_after = os.getloadavg()[0]
    medians = {label: statistics.median(values) for label, values in figures.items()}
    print(
        f"champion request → decision under the daemon, medians of {args.rounds} rounds "
        f"(load average {load_before:.1f} before, {load_after:.1f} after):"
    )
    print(f"  reference, ungated alias → its evaluation run done: {medians['reference']:.1f} s")
    print(f"  already evaluated → moved: {medians['evaluated']:.1f} s")
    print(
        f"  not yet evaluated → evaluated, judged, moved: {medians['not evaluated']:.1f} s "
        f"({medians['not evaluated'] / medians['reference']:.2f}× the reference)"
    )
    for label, values in figures.items():
        print(f"  {label}: " + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
