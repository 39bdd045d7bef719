"""What the sandbox costs the code-execution scorer.

Short programs (the HumanEval slice of the tests: prompt, canonical solution and tests, each
program passing) run ``--programs`` times, two ways, in the same run and with the same
number of programs at once (``--workers``, default one per CPU, as the scorer runs them):

- sandboxed: ``assay.scoring.code_execution.execute``, bubblewrap with its namespaces,
  limits and output caps (``assay.core.sandbox``);
- reference: the same interpreter in a plain subprocess (``python -I -S -c program``), no
  sandbox.

Printed: programs/s of each (median of ``--rounds``), and the sandbox's time per program
over the reference's, with the load average beside them.

    .venv/bin/python benchmarks/bench_sandbox.py [--programs 100] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from assay.core.sandbox import DEFAULT_PYTHON, Limits, Sandbox  # noqa: E402
from assay.scoring.code_execution import execute  # noqa: E402

SLICE = REPO / "tests" / "fixtures" / "scenarios" / "humaneval_test.jsonl"


def programs(count: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in SLICE.read_text().splitlines()]
    jobs = [
        (row["prompt"] + row["canonical_solution"], f"{row['test']}\n\ncheck({row['entry_point']})")
        for row in rows
    ]
    return [jobs[i % len(jobs)] for i in range(count)]


def sandboxed(sandbox: Sandbox) -> Callable[[tuple[str, str]], bool]:
    def run(job: tuple[str, str]) -> bool:
        return execute(*job, sandbox=sandbox).passed

    return run


def plain(job: tuple[str, str]) -> bool:
    program, tests = job
    done = subprocess.run(
        [DEFAULT_PYTHON, "-I", "-S", "-c", f"{program}\n\n{tests}\n"],
        capture_output=True,
        timeout=10,
    )
    return done.returncode == 0


def rate(
    run: Callable[[tuple[str, str]], bool], jobs: list[tuple[str, str]], workers: int
) -> float:
    """Programs per second; every program must pass."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        passed = list(pool.map(run, jobs))
    elapsed = time.perf_counter() - started
    if not all(passed):
        raise SystemExit(f"{passed.count(False)} of {len(jobs)} programs failed")
    return len(jobs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    sandbox = Sandbox(limits=Limits(timeout_s=10.0))
    sandbox.check()  # refuses, with the reason, where bubblewrap cannot run
    jobs = programs(args.programs)
    rate(sandboxed(sandbox), jobs[:4], args.workers)  # warm the page cache
    boxed, bare = [], []
    for _ in range(args.rounds):
        boxed.append(rate(sandboxed(sandbox), jobs, args.workers))
        bare.append(rate(plain, jobs, args.workers))
    box, ref = statistics.median(boxed), statistics.median(bare)
    print(
        f"{args.programs} short programs (HumanEval slice, passing), {args.workers} at once, "
        f"median of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    for label, value in (("sandboxed (bubblewrap)", box), ("reference (plain subprocess)", ref)):
        each = 1000 / value * args.workers
        print(f"{label + ':':30s}{value:6.1f} programs/s {each:6.1f} ms each (wall)")
    print(f"sandbox cost: {ref / box:.2f}x the time per program of a plain subprocess")
    rounds = [", ".join(f"{r:.1f}" for r in series) for series in (boxed, bare)]
    print(f"rounds (programs/s), sandboxed: {rounds[0]}; plain: {rounds[1]}")


if __name__ == "__main__":
    main()
