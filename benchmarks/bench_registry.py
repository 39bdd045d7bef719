"""Registry write throughput on SQLite: versions created per second by 1 writer process and
by N concurrent writer processes on the same file (default 8), measured in the same run.

Only the writing is timed: every process imports, opens the store and waits at a barrier
first. Each version is its own transaction (BEGIN IMMEDIATE, one version row and one event,
commit), so the figure is bounded by SQLite's serialized commits; the ratio shows what
concurrent writers cost or gain against a single one.

    .venv/bin/python benchmarks/bench_registry.py [--versions 200] [--writers 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path


def _writer(url: str, worker: int, count: int, barrier, results) -> None:
    from assay.registry import Registry

    with Registry.open(url) as registry:
        barrier.wait()
        start = time.monotonic()
        for i in range(count):
            registry.create_version("bench", f"hf:/w{worker}/{i}")
        results.put((start, time.monotonic()))


def measure(writers: int, per_writer: int, directory: Path) -> float:
    """Versions per second with ``writers`` processes each creating ``per_writer`` versions."""
    from assay.registry import Registry

    url = f"sqlite:///{directory / f'bench-{writers}.db'}"
    with Registry.open(url) as registry:
        registry.create_model("bench")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(writers), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(url, w, per_writer, barrier, results))
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    spans = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"a writer process failed with exit code {proc.exitcode}")
    with Registry.open(url) as registry:
        numbers = [v.version for v in registry.list_versions("bench")]
    total = writers * per_writer
    assert numbers == list(range(1, total + 1)), "versions are not 1..N without gaps"
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=200, help="versions per writer")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        single = measure(1, args.versions, Path(tmp))
        many = measure(args.writers, args.versions, Path(tmp))
    print(f"1 writer:           {single:8.1f} versions/s ({args.versions} versions)")
    print(
        f"{args.writers} writers:          {many:8.1f} versions/s "
        f"({args.writers * args.versions} versions)"
    )
    print(f"ratio {args.writers} writers / 1 writer: {many / single:.2f}")


if __name__ == "__main__":
    main()
