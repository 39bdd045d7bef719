"""Custom-file loading speed and memory: instances per second and peak memory, 100k JSONL rows.

Reference measured in the same run: a bare loop that only ``json.loads`` every line (the floor
any JSONL loader pays). The ratio says what the column mapping, validation and ``Instance``
records cost on top. Peak memory is traced (tracemalloc) and compared with the file size,
since streaming should hold the instances, not copies of the file.

Run: ``.venv/bin/python benchmarks/bench_loading.py [--rows 100000]``
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from assay.scenarios import get_scenario

COLUMNS = {
    "id": "id",
    "input": "question",
    "choices": "choices",
    "answer_index": "label",
    "groups": ["dialect"],
}


def write_file(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            choices = [str(a + b + d) for d in (-1, 0, 1, 2)]
            rng.shuffle(choices)
            row = {
                "id": f"r{i}",
                "question": f"What is {a} + {b}?",
                "choices": choices,
                "label": choices.index(str(a + b)),
                "dialect": rng.choice(["us", "uk", "in"]),
            }
            f.write(json.dumps(row) + "\n")


def json_floor(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        for line in f:
            json.loads(line)
            count += 1
    return count


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "custom.jsonl"
        write_file(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        scenario = get_scenario("custom_file", path=str(path), columns=COLUMNS)

        floor_s, _ = timed(lambda: json_floor(path))
        load_s, data = timed(scenario.load)
        assert len(data.instances) == args.rows

        del data
        tracemalloc.start()
        kept = scenario.load()
        held, peak = tracemalloc.get_traced_memory()  # held: the loaded instances themselves
        tracemalloc.stop()
        del kept

    print(f"rows: {args.rows}   file: {size_mb:.1f} MiB")
    print(f"json.loads floor:  {args.rows / floor_s:>10,.0f} rows/s   ({floor_s:.2f} s)")
    print(f"custom_file load:  {args.rows / load_s:>10,.0f} instances/s   ({load_s:.2f} s)")
    print(f"ratio load/floor time: {load_s / floor_s:.2f}x")
    print(f"peak traced memory: {peak / 2**20:.1f} MiB ({peak / 2**20 / size_mb:.2f}x file size)")
    print(
        f"held by the instances after load: {held / 2**20:.1f} MiB (peak/held {peak / held:.2f}x)"
    )


if __name__ == "__main__":
    main()
