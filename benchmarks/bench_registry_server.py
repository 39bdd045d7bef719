"""``assay server`` under concurrent MLflow REST clients, against ``mlflow server`` in the same run.

32 client threads (``--clients``) each send 200 requests (``--requests``) over keep-alive HTTP:
mostly reads (get a model, the version behind an alias, search a model's versions), plus
version creation (1 in 5) and alias moves (1 in 10; each client moves its own alias to the
version it created last, so every move changes something). Both servers get exactly the same
request sequence (seeded), through MLflow's REST API, each on a fresh SQLite file; with
``--postgres`` assay server also runs on a throwaway Postgres cluster (initdb on loopback).

Printed per server: requests/s, p50/p95 latency, errors; then the checks: versions numbered
1..N without gaps or duplicates (N = creations acknowledged), and for assay every acknowledged
alias move present in the event log exactly once. The ratio is assay's requests/s over
mlflow's.

    .venv/bin/python benchmarks/bench_registry_server.py [--clients 32] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from peers import print_header

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploy.stack import PostgresServer, free_port  # noqa: E402

MODEL = "bench"


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server at {url} did not become healthy")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_assay(registry_url: str, root: Path) -> tuple[str, subprocess.Popen, str]:
    sys.path.insert(0, str(REPO))
    from assay.registry import Registry
    from assay.registry.tokens import TokenStore

    with Registry.open(registry_url) as registry:
        _, secret = TokenStore(registry).create("bench", "promoter", created_by="bench")
    port = free_port()
    log = root / "assay-server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from assay.cli import main; sys.exit(main())",
         "server", "--registry-url", registry_url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc, log)
    return url, proc, secret


def start_mlflow(root: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    log = root / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc, log)
    return url, proc


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    created: list[int] = field(default_factory=list)
    moves: list[tuple[str, int]] = field(default_factory=list)


def _client(url: str, token: str | None, worker: int, count: int, tally: Tally, barrier) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    api = f"{url}/api/2.0/mlflow"
    rng = random.Random(worker)
    mine: int | None = None
    moved = False
    moved_to: int | None = None
    alias = f"w{worker}"
    with httpx.Client(headers=headers, timeout=60) as http:
        barrier.wait()
        for i in range(count):
            roll = rng.random()
            if i == 0 or roll < 0.2:
                kind = "create"
                request = ("POST", f"{api}/model-versions/create",
                           {"name": MODEL, "source": f"hf:/w{worker}/{i}"})  # fmt: skip
            elif roll < 0.3 and mine is not None and mine != moved_to:
                kind = "alias"
                request = ("POST", f"{api}/registered-models/alias",
                           {"name": MODEL, "alias": alias, "version": str(mine)})  # fmt: skip
            elif roll < 0.55:
                kind = "get"
                request = ("GET", f"{api}/registered-models/get", {"name": MODEL})
            elif roll < 0.8 and moved:
                kind = "by-alias"
                request = ("GET", f"{api}/registered-models/alias", {"name": MODEL, "alias": alias})
            elif roll < 0.8:
                kind = "get-version"
                request = ("GET", f"{api}/model-versions/get", {"name": MODEL, "version": "1"})
            else:
                kind = "search"
                request = ("GET", f"{api}/model-versions/search",
                           {"filter": f"name = '{MODEL}'", "max_results": "20"})  # fmt: skip
            method, target, body = request
            start = time.perf_counter()
            try:
                if method == "GET":
                    response = http.get(target, params=body)
                else:
                    response = http.post(target, json=body)
            except httpx.HTTPError as exc:
                tally.errors[f"{kind}: {type(exc).__name__}"] += 1
                continue
            tally.latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                tally.errors[f"{kind}: {response.status_code}"] += 1
                continue
            if kind == "create":
                mine = int(response.json()["model_version"]["version"])
                tally.created.append(mine)
            elif kind == "alias":
                tally.moves.append((alias, int(body["version"])))
                moved, moved_to = True, int(body["version"])


def drive(url: str, token: str | None, clients: int, count: int) -> tuple[Tally, float]:
    with httpx.Client(headers={"Authorization": f"Bearer {token}"} if token else {}) as http:
        response = http.post(f"{url}/api/2.0/mlflow/registered-models/create", json={"name": MODEL})
        response.raise_for_status()
    tallies = [Tally() for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    threads = [
        threading.Thread(target=_client, args=(url, token, w, count, tallies[w], barrier))
        for w in range(clients)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    total = Tally()
    for tally in tallies:
        total.latencies += tally.latencies
        total.errors += tally.errors
        total.created += tally.created
        total.moves += tally.moves
    return total, elapsed


def report(name: str, tally: Tally, elapsed: float) -> float:
    done = len(tally.latencies)
    rate = done / elapsed
    ordered = sorted(tally.latencies)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(0.95 * (len(ordered) - 1))] * 1000
    errors = sum(tally.errors.values())
    print(
        f"{name:<22} {rate:8.1f} req/s   p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   "
        f"errors {errors}{' ' + str(dict(tally.errors)) if errors else ''}"
    )
    created = sorted(tally.created)
    gapless = created == list(range(1, len(created) + 1))
    print(f"{'':<22} versions created {len(created)}, numbered 1..N without gaps: {gapless}")
    return rate


def check_assay_history(registry_url: str, tally: Tally) -> None:
    from assay.registry import Registry

    with Registry.open(registry_url) as registry:
        events = registry.events(model=MODEL)
        numbers = [v.version for v in registry.list_versions(MODEL)]
    # Each acknowledged move pointed the client's own alias at a new version: one event each.
    logged = Counter(
        (e.payload["alias"], e.payload["after"])
        for e in events
        if e.kind.value in ("alias_set", "alias_moved")
    )
    once = logged == Counter(tally.moves) and all(n == 1 for n in logged.values())
    print(
        f"{'':<22} stored versions 1..{len(numbers)} gapless: "
        f"{numbers == list(range(1, len(numbers) + 1))}; alias moves {len(tally.moves)}, "
        f"each in the history exactly once: {once}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--postgres", action="store_true", help="also assay on Postgres")
    args = parser.parse_args()
    print_header(
        f"registry server: {args.clients} clients x {args.requests} mixed requests (MLflow REST)"
    )
    root = Path(tempfile.mkdtemp(prefix="assay-bench-server-"))
    try:
        registry_url = f"sqlite:///{root / 'assay.db'}"
        url, proc, token = start_assay(registry_url, root)
        try:
            tally, elapsed = drive(url, token, args.clients, args.requests)
        finally:
            _stop(proc)
        assay_rate = report("assay server (SQLite)", tally, elapsed)
        check_assay_history(registry_url, tally)

        if args.postgres:
            postgres = PostgresServer()
            pg_url = postgres.url()
            try:
                url, proc, token = start_assay(pg_url, root)
                try:
                    tally, elapsed = drive(url, token, args.clients, args.requests)
                finally:
                    _stop(proc)
                report("assay server (Postgres)", tally, elapsed)
                check_assay_history(pg_url, tally)
            finally:
                postgres.remove()

        mlflow_root = root / "mlflow"
        mlflow_root.mkdir()
        url, proc = start_mlflow(mlflow_root)
        try:
            tally, elapsed = drive(url, None, args.clients, args.requests)
        finally:
            _stop(proc)
        mlflow_rate = report("mlflow server (SQLite)", tally, elapsed)
        print(f"ratio assay/mlflow requests/s (SQLite): {assay_rate / mlflow_rate:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
