"""``rankings`` for a day at platform scale: the DuckDB read, a batch of scenarios at a time
(``leaderboard_of_day``), against the in-memory read of every partition (``StoredResults.of_day``
+ ``leaderboard_as_of``, the code before it) on the same store in the same run.

For each size V versions × S scenarios × N instances a synthetic store is written through the
real writer (``ParquetStore.write``, history kept) over three days: each version is evaluated on
the day it is registered (a third of them per day), and 5% of the first day's partitions are
re-evaluated on the last day. Each instance-scores partition holds the primary metric, a second
metric and a perturbed copy of the primary (3 × N rows); each metric table 3 rows.

Each board is computed in a fresh child process (so its peak resident memory, ``ru_maxrss``, is
its own): the last day's board and the middle day's (a past day: history selection) by the code
of this tree and by the reference, the code of commit ``--reference`` (default: main before this
change, extracted with ``git archive``); their boards' digests must match. Printed per size: the
read time, the whole board's time and peak memory of each, the ratios, and a child that only
imports and opens the registry (the memory floor). Then the growth exponents (log-log slope
against V × S partitions, least squares over the sizes) and the extrapolation to 1,000 × 100
against the issue's aims (≤ 60 s, ≤ 2 GB).

``read s`` of the DuckDB board is summed over the threads that read (``ASSAY_RANKINGS_THREADS``,
default the CPU count), so it may exceed its share of the board's wall time.

Figures depend on the machine's load (the project's machines are shared): compare the ratios
within one run, not absolute numbers across runs.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_rankings_scale.py \\
        [--sizes 60x10,125x20,250x40] [--instances 200] [--reference COMMIT] [--new-only]
        [--reference-query]

``--reference-query`` also times the reference commit's own ``leaderboard_of_day`` (where it
has one), so a change to the DuckDB read is measured against the read before it.

``--new-only`` skips the reference, for sizes it cannot hold (``--sizes 1000x10``: its win
rates compare 1,000 × 1,000 versions for 1,000 resamples at once, several GB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
# The reference child runs the code of another commit (--reference), extracted here.
sys.path.insert(0, os.environ.get("ASSAY_BENCH_CODE") or str(REPO))

from assay.core.records import InstanceStat, MetricSummary  # noqa: E402
from assay.scoring.summary import scorecard_table  # noqa: E402
from assay.storage.parquet import ParquetStore  # noqa: E402

START = datetime(2026, 11, 1, 6, tzinfo=UTC)
DAYS = 3
AIM_SECONDS, AIM_BYTES = 60.0, 2e9
TARGET = (1000, 100)
REFERENCE = "1ef5e15"  # main before the DuckDB read and the chunked win rates


def _day(index: int) -> str:
    return (START + timedelta(days=index)).strftime("%Y-%m-%d")


def build(root: Path, versions: int, scenarios: int, instances: int) -> float:
    """Write the store and the registry under ``root``; returns the seconds it took."""
    from assay.registry import Registry

    began = time.perf_counter()
    now = [START]
    registry = Registry.open(f"sqlite:///{root / 'registry.db'}", clock=lambda: now[0])
    registry.create_model("m")
    store = ParquetStore(str(root / "storage"), clock=lambda: now[0])
    rng = np.random.default_rng(0)
    ids = pa.array([f"i{i:05d}" for i in range(instances)])
    n = instances

    def write(version: str, scenario: str, skill: float) -> None:
        right = (rng.random(n) < skill).astype(np.float64)
        ece = rng.random(n)
        typo = (rng.random(n) < skill * 0.9).astype(np.float64)
        table = pa.table(
            {
                "instance_id": pa.concat_arrays([ids, ids, ids]),
                "metric": ["acc"] * n + ["ece"] * n + ["acc"] * n,
                "value": np.concatenate([right, ece, typo]),
                "family": ["accuracy"] * n + ["calibration"] * n + ["robustness"] * n,
                "perturbation": [""] * (2 * n) + ["typo"] * n,
                "trial": np.zeros(3 * n, np.int32),
                "template_id": [""] * (3 * n),
                "group": [""] * (3 * n),
                "note": [""] * (3 * n),
            },
            schema=InstanceStat.SCHEMA,
        )
        card = [
            MetricSummary("acc", "accuracy", "", "", right.mean(), n, 0.0, 1.0),
            MetricSummary("ece", "calibration", "", "", ece.mean(), n, 0.0, 1.0),
            MetricSummary("acc", "robustness", "", "typo", typo.mean(), n, 0.0, 1.0),
        ]
        where = {"model_version": version, "scenario": scenario}
        store.write("instance_scores", where, table)
        store.write("metric_tables", where, scorecard_table(card))

    skills = rng.uniform(0.3, 0.8, versions)
    for v in range(versions):
        day = v * DAYS // versions
        now[0] = START + timedelta(days=day, minutes=v)
        registry.create_version("m", f"hf:/m/{v}")
        for s in range(scenarios):
            write(f"m@v{v + 1}", f"s{s:02d}", skills[v])
    now[0] = START + timedelta(days=DAYS - 1, hours=12)
    first_day = [v for v in range(versions) if v * DAYS // versions == 0]
    for k in range(max(1, len(first_day) * scenarios // 20)):
        v, s = first_day[k % len(first_day)], (k // len(first_day)) % scenarios
        write(f"m@v{v + 1}", f"s{s:02d}", skills[v])
    registry.close()
    return time.perf_counter() - began


def child(args: argparse.Namespace) -> None:
    """One board in this process; prints its figures as JSON."""
    from assay.compare import standings
    from assay.evaluate.suite import parse_suite
    from assay.registry import Registry

    root = Path(args.root)
    registry = Registry.open(f"sqlite:///{root / 'registry.db'}")
    store = ParquetStore(str(root / "storage"))
    scenarios = {
        f"s{s:02d}": {"scenario": "facts_mc", "primary_metric": "acc"}
        for s in range(args.scenarios)
    }
    suite = parse_suite({"scenarios": scenarios}, "bench.yaml")
    read_s = 0.0
    began = time.perf_counter()
    if args.child == "old":
        results = standings.StoredResults.of_day(store, args.day)
        read_s = time.perf_counter() - began
        board, _ = standings.leaderboard_as_of(args.day, results, registry, suite)
    elif args.child == "new":
        from assay.storage.query import TablesAsOf

        reads = [TablesAsOf.read, TablesAsOf._files]

        def timed(fn):
            def run(*a, **k):
                nonlocal read_s
                start = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    read_s += time.perf_counter() - start

            return run

        TablesAsOf.read, TablesAsOf._files = (timed(f) for f in reads)
        board, _ = standings.leaderboard_of_day(args.day, store, registry, suite)
    else:  # the floor: imports and the registry, no board
        board = None
    total = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    digest = "" if board is None else hashlib.sha256(repr(board).encode()).hexdigest()
    print(json.dumps({"read_s": read_s, "total_s": total, "peak": peak, "digest": digest}))


def run_child(which: str, root: Path, scenarios: int, day: str, code: Path | None = None) -> dict:
    command = [sys.executable, __file__, "--child", which, "--root", str(root)]
    command += ["--scenarios", str(scenarios), "--day", day]
    env = dict(os.environ, ASSAY_BENCH_CODE=str(code)) if code else None
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="60x10,125x20,250x40")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument(
        "--reference",
        default=REFERENCE,
        help="git commit whose code computes the reference board (default: the last one "
        "before the DuckDB read)",
    )
    parser.add_argument(
        "--new-only",
        action="store_true",
        help="skip the reference (at 1,000 versions it needs several GB of memory)",
    )
    parser.add_argument(
        "--reference-query",
        action="store_true",
        help="also time the reference's own DuckDB read (its leaderboard_of_day), when it has one",
    )
    parser.add_argument("--child", choices=["old", "new", "floor"])
    parser.add_argument("--root")
    parser.add_argument("--scenarios", type=int)
    parser.add_argument("--day")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        reference.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.reference, "assay"], cwd=REPO, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(reference)], input=archive.stdout, check=True)
        print(f"reference: the code of commit {args.reference} (today's read and board)")
        for versions, scenarios in sizes:
            root = Path(tmp) / f"{versions}x{scenarios}"
            root.mkdir()
            built = build(root, versions, scenarios, args.instances)
            last, past = _day(DAYS - 1), _day(1)
            fig = {
                "size": (versions, scenarios),
                "built_s": built,
                "floor": run_child("floor", root, scenarios, last),
                "new": run_child("new", root, scenarios, last),
                "past": run_child("new", root, scenarios, past),
            }
            if not args.new_only:
                fig["old"] = run_child("old", root, scenarios, last, reference)
                fig["past_old"] = run_child("old", root, scenarios, past, reference)
            if args.reference_query:
                fig["ref_query"] = run_child("new", root, scenarios, last, reference)
                fig["past_ref_query"] = run_child("new", root, scenarios, past, reference)
            disk = sum(p.stat().st_size for p in (root / "storage").rglob("*") if p.is_file())
            fig["disk_mb"] = disk / 1e6
            rows.append(fig)
            report(fig, args.instances)
    summary(rows)


def report(fig: dict, instances: int) -> None:
    (versions, scenarios), new, floor = fig["size"], fig["new"], fig["floor"]
    old, past_old = fig.get("old"), fig.get("past_old")
    pairs = [(k, "new") for k in ("old", "ref_query") if k in fig]
    pairs += [(k, "past") for k in ("past_old", "past_ref_query") if k in fig]
    same = (
        all(fig[a]["digest"] == fig[b]["digest"] for a, b in pairs) if pairs else "(no reference)"
    )
    print(
        f"\n{versions} versions × {scenarios} scenarios × {instances} instances "
        f"({versions * scenarios} partitions, {fig['disk_mb']:.0f} MB on disk with history; "
        f"built in {fig['built_s']:.0f} s); boards identical: {same}"
    )
    print(f"  {'':28} {'read s':>8} {'board s':>8} {'peak MB':>8} {'above floor':>12}")
    for name, f in (
        ("today's read (reference)", old),
        ("DuckDB (reference)", fig.get("ref_query")),
        ("DuckDB, batched", new),
        ("DuckDB, a past day", fig["past"]),
        ("DuckDB (ref.), a past day", fig.get("past_ref_query")),
        ("today's read, a past day", past_old),
    ):
        if f is None:
            continue
        print(
            f"  {name:28} {f['read_s']:8.2f} {f['total_s']:8.2f} {f['peak'] / 1e6:8.0f} "
            f"{(f['peak'] - floor['peak']) / 1e6:12.0f}"
        )
    ref = fig.get("ref_query")
    if ref is not None:
        print(
            f"  new / reference DuckDB: read {new['read_s'] / ref['read_s']:.2f}×, board "
            f"{new['total_s'] / ref['total_s']:.2f}×, peak {new['peak'] / ref['peak']:.2f}× "
            f"(above the floor: "
            f"{(new['peak'] - floor['peak']) / max(ref['peak'] - floor['peak'], 1):.2f}×); "
            f"a past day: board {fig['past']['total_s'] / fig['past_ref_query']['total_s']:.2f}×"
        )
    if old is None:
        return
    print(
        f"  new / reference: read {new['read_s'] / old['read_s']:.2f}×, board "
        f"{new['total_s'] / old['total_s']:.2f}×, peak {new['peak'] / old['peak']:.2f}× "
        f"(above the {floor['peak'] / 1e6:.0f} MB floor: "
        f"{(new['peak'] - floor['peak']) / max(old['peak'] - floor['peak'], 1):.2f}×)"
    )


def summary(rows: list[dict]) -> None:
    if len(rows) < 2:
        return
    cells = [v * s for v, s in (r["size"] for r in rows)]
    target = TARGET[0] * TARGET[1]
    print(
        f"\ngrowth exponents against partitions (V × S), {len(rows)} sizes; at {TARGET[0]} × "
        f"{TARGET[1]} (extrapolated along that slope from the largest size):"
    )
    for key, name in (
        ("old", "today's read"),
        ("ref_query", "DuckDB (reference)"),
        ("new", "DuckDB, batched"),
    ):
        if key not in rows[0]:
            continue
        for what in ("read_s", "total_s", "peak"):
            if what == "peak":
                ys = [max(r[key]["peak"] - r["floor"]["peak"], 1) for r in rows]
            else:
                ys = [max(r[key][what], 1e-6) for r in rows]
            k = slope(cells, ys)
            at = ys[-1] * (target / cells[-1]) ** k
            if what == "peak":
                at += rows[-1]["floor"]["peak"]
                aim = f"aim ≤ 2 GB: {'met' if at <= AIM_BYTES else 'missed'}"
                shown = f"{at / 1e9:7.2f} GB"
            else:
                aim = f"aim ≤ 60 s: {'met' if at <= AIM_SECONDS else 'missed'}"
                aim = aim if what == "total_s" else ""
                shown = f"{at:7.1f} s "
            label = {"read_s": "read", "total_s": "board", "peak": "peak memory"}[what]
            print(f"  {name:22} {label:12} exponent {k:5.2f}   → {shown}  {aim}")


if __name__ == "__main__":
    main()
