"""What recording a token's last use costs ``assay server``'s authentication.

Concurrent threads (``--threads``) each authenticate ``--calls`` times with one of a few tokens
against a fresh SQLite registry file, three ways, in the same run:

- reference: no last-use stamp at all (the code before tokens recorded it);
- shipped: the stamp written at most once a minute per token (``LAST_USED_RESOLUTION``);
- every call: a stamp written on every authentication (resolution 0).

Printed: authentications/s and p95 latency of each, and each one's rate over the reference.

    .venv/bin/python benchmarks/bench_token_auth.py [--threads 8] [--calls 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from assay.registry import Registry  # noqa: E402
from assay.registry import tokens as tokens_module  # noqa: E402
from assay.registry.tokens import TokenStore  # noqa: E402

TOKENS = 4


def measure(threads: int, calls: int, mode: str) -> tuple[float, float]:
    """(authentications per second, p95 latency in ms) for one way of stamping."""
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry.open(f"sqlite:///{Path(tmp) / 'registry.db'}")
        store = TokenStore(registry)
        secrets = [
            store.create(f"client-{i}", "reader", created_by="bench")[1] for i in range(TOKENS)
        ]
        saved = tokens_module.LAST_USED_RESOLUTION, TokenStore._touch
        if mode == "every call":
            tokens_module.LAST_USED_RESOLUTION = timedelta(0)
        elif mode == "reference":
            TokenStore._touch = lambda self, row: None  # type: ignore[method-assign]
        latencies: list[float] = []
        lock = threading.Lock()

        def client(index: int) -> None:
            mine = []
            for _ in range(calls):
                start = time.perf_counter()
                assert store.authenticate(secrets[index % TOKENS]) is not None
                mine.append(time.perf_counter() - start)
            with lock:
                latencies.extend(mine)

        try:
            workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
            began = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            wall = time.perf_counter() - began
        finally:
            tokens_module.LAST_USED_RESOLUTION, TokenStore._touch = saved
            registry.close()
        p95 = statistics.quantiles(latencies, n=20)[-1] * 1000
        return len(latencies) / wall, p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(f"{args.threads} threads x {args.calls} authentications, {TOKENS} tokens, SQLite file")
    results = {
        mode: measure(args.threads, args.calls, mode)
        for mode in ("reference", "shipped", "every call")
    }
    reference = results["reference"][0]
    print(f"{'stamp':<12} {'auth/s':>9} {'p95 ms':>8} {'vs reference':>13}")
    for mode, (rate, p95) in results.items():
        print(f"{mode:<12} {rate:>9.1f} {p95:>8.2f} {rate / reference:>12.2f}x")


if __name__ == "__main__":
    main()
