"""Reading results as of a day, for the ``rankings`` of a past day.

A store of V versions × S scenarios whose scoring tables were written K times (one per day,
as nightly re-evaluations would) is read three ways: the latest tables (``read_all``, the
reference), the tables as they stood at the end of one past day (``read_all_as_of``), and
a backfill of every day, each read sharing one cache of stored copies. Prints each time and
its ratio to the reference measured in this run, and the history's size against the latest
tables' size.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_rankings_as_of.py [--versions 10 ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from assay.compare.standings import StoredResults
from assay.core.records import InstanceStat, MetricSummary
from assay.scoring.summary import scorecard_table
from assay.storage.parquet import ParquetStore

START = datetime(2026, 11, 1, 12, tzinfo=UTC)


def _fill(store_root: Path, versions: int, scenarios: int, instances: int, days: int):
    now = [START]
    store = ParquetStore(str(store_root), clock=lambda: now[0])
    rng = np.random.default_rng(0)
    for day in range(days):
        now[0] = START + timedelta(days=day)
        for v in range(versions):
            for s in range(scenarios):
                partition = {"model_version": f"m@v{v + 1}", "scenario": f"s{s:02d}"}
                right = rng.random(instances) < 0.5
                stats = [
                    InstanceStat(f"i{i:05d}", "exact_match", float(ok))
                    for i, ok in enumerate(right)
                ]
                card = [
                    MetricSummary("exact_match", "accuracy", "", "", right.mean(), instances, 0, 1)
                ]
                store.write("instance_scores", partition, InstanceStat.to_table(stats))
                store.write("metric_tables", partition, scorecard_table(card))
    return store


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--scenarios", type=int, default=5)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "storage"
        store = _fill(root, args.versions, args.scenarios, args.instances, args.days)
        day_keys = [(START + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(args.days)]
        latest = _timed(lambda: StoredResults.read(store))
        past = _timed(lambda: StoredResults.of_day(store, day_keys[args.days // 2]))
        copies: dict = {}
        backfill = _timed(lambda: [StoredResults.of_day(store, d, copies) for d in day_keys])
        history, current = _size(root / "_history"), _size(root) - _size(root / "_history")
    print(
        f"{args.versions} versions × {args.scenarios} scenarios × {args.instances} instances, "
        f"each written on {args.days} days"
    )
    print(f"latest tables (reference)     {latest:8.3f} s")
    print(f"as of one past day            {past:8.3f} s  ({past / latest:.2f}× the reference)")
    print(
        f"backfill of {args.days} days (one cache) {backfill:8.3f} s  "
        f"({backfill / latest:.2f}× the reference, {backfill / args.days / latest:.2f}× per day)"
    )
    print(
        f"history on disk {history / 1e6:.2f} MB vs latest tables {current / 1e6:.2f} MB "
        f"({history / max(current, 1):.1f}×)"
    )


if __name__ == "__main__":
    main()
