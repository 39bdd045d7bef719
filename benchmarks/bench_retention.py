"""Retention on a synthetic store: files on disk, compaction time, and the rankings of a past
day and of the last day before and after two thirds of the versions are compacted.

The store is ``bench_rankings_scale``'s (the real writer, history kept, three days of
evaluations); compaction (``assay.storage.retention.compact_version``) folds the versions
registered on the first two days, as if archived and retired, in a copy of the store. Each
board is computed in a fresh child process by both readers (the DuckDB query,
``leaderboard_of_day``, and the in-memory read, ``leaderboard_as_of``), on the store as
written and on the compacted copy in turn (so both see the same load), three times each;
printed: the median time and peak memory of each, their ratio, and whether every board's
digest is the same (it must be). Compare ratios within one run: the machines are shared.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_retention.py [--size 60x10] [--instances 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rankings_scale as scale

from assay.storage.parquet import ParquetStore
from assay.storage.retention import compact_version


def _files(root: Path) -> tuple[int, int]:
    count = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            count += 1
            size += os.path.getsize(os.path.join(folder, name))
    return count, size


def _boards(roots: list[Path], scenarios: int, runs: int) -> list[dict[tuple[str, str], dict]]:
    """Each board on each store, the stores taking turns."""
    found: list[dict[tuple[str, str], dict]] = [{} for _ in roots]
    for day in (scale._day(1), scale._day(scale.DAYS - 1)):
        for which in ("new", "old"):
            figures: list[list[dict]] = [[] for _ in roots]
            for _ in range(runs):
                for i, root in enumerate(roots):
                    figures[i].append(scale.run_child(which, root, scenarios, day))
            for i, runs_of in enumerate(figures):
                digests = {f["digest"] for f in runs_of}
                assert len(digests) == 1, f"{which} {day}: boards differ between runs"
                found[i][(day, which)] = {
                    "s": statistics.median(f["total_s"] for f in runs_of),
                    "peak": statistics.median(f["peak"] for f in runs_of),
                    "digest": digests.pop(),
                }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="60x10")
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    versions, scenarios = (int(x) for x in args.size.split("x"))
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        built = scale.build(root, versions, scenarios, args.instances)
        storage = root / "storage"
        files, size = _files(storage)
        print(
            f"store {versions} versions × {scenarios} scenarios × {args.instances} instances: "
            f"{files} files, {size / 1e6:.1f} MB (written in {built:.1f} s)"
        )
        copy = Path(tmp) / "compacted"
        copy.mkdir()
        shutil.copytree(storage, copy / "storage")
        (copy / "registry.db").symlink_to(root / "registry.db")
        retired = [f"m@v{v + 1}" for v in range(versions) if v * scale.DAYS // versions < 2]
        store = ParquetStore(str(copy / "storage"))
        began = time.perf_counter()
        removed = sum(compact_version(store, key).files_removed for key in retired)
        took = time.perf_counter() - began
        after_files, after_size = _files(copy / "storage")
        print(
            f"compacted {len(retired)} versions: {removed} files folded in {took:.1f} s "
            f"({took / len(retired) * 1000:.0f} ms a version); now {after_files} files "
            f"({after_files / files:.2f}×), {after_size / 1e6:.1f} MB ({after_size / size:.2f}×)"
        )
        before, after = _boards([root, copy], scenarios, args.runs)
        print(f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'board':<26}{'before s':>9}{'after s':>9}{'ratio':>7}{'peak MB':>16}  same")
        for (day, which), old in before.items():
            new = after[(day, which)]
            reader = "query" if which == "new" else "in memory"
            print(
                f"{day + ' ' + reader:<26}{old['s']:>9.2f}{new['s']:>9.2f}"
                f"{new['s'] / old['s']:>7.2f}"
                f"{old['peak'] / 1e6:>8.0f}→{new['peak'] / 1e6:<7.0f}"
                f"  {'yes' if new['digest'] == old['digest'] else 'NO'}"
            )
        if any(after[k]["digest"] != v["digest"] for k, v in before.items()):
            sys.exit("a board changed after compaction")


if __name__ == "__main__":
    main()
