"""Shared fixtures: a persistent model conversion cache, temp registries and stores."""

from __future__ import annotations

import contextlib
import importlib
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from deploy.stack import PostgresServer, free_port, pg_bindir

if TYPE_CHECKING:
    from assay.core.http_server import ConnectionLimits
    from assay.registry import Registry

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch (OpenMP) thread per process. The suite runs model servers, daemons and workers
# beside the test process on a 2-core machine, and OpenMP threads spin while they wait for
# each other: with two threads per process, one busy neighbour made a small matrix product
# 17x slower (16 ms instead of 0.9 ms). Read when torch is first imported, which is later;
# child processes inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests of other features use `champion` and `Production` as ordinary names; a gated target
# needs a verdict to move (assay.registry.gating). The gate's own tests name their gated
# targets (tests/test_promotion_gate.py, the daemon's gate flows, the demo).
os.environ.setdefault("ASSAY_GATED_ALIASES", "")
os.environ.setdefault("ASSAY_GATED_STAGES", "")
os.environ.setdefault("ASSAY_GATED_PROMPT_ALIASES", "")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_cache_dir() -> Path:
    """Where the bundled GGUF is converted once; kept across runs (git-ignored)."""
    path = REPO / ".assay" / "test-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    """An OpenAI-compatible server on loopback whose answers are known (``live_deployment``'s
    ``arithmetic_app``: ``#right`` computes the sums, ``#wrong`` never does)."""
    from live_deployment import arithmetic_app

    from assay.serving import asgi_in_background

    with asgi_in_background(arithmetic_app()) as running:
        yield running.base_url


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_server() -> PostgresServer:
    """A throwaway cluster (deploy/stack.py), or a skip naming what this machine lacks."""
    if pg_bindir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
    return PostgresServer()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback for the whole session: its ``postgres``
    database's SQLAlchemy URL."""
    server = _postgres_server()
    try:
        yield server.url()
    finally:
        server.remove()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A cluster of the test's own, which it may stop and start again."""
    server = _postgres_server()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_database(postgres_url: str) -> str:
    """A new, empty database on the session's cluster: its SQLAlchemy URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    server = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


# --------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback (SQLite backend, local artifacts), once a session:
    it takes tens of seconds to create its tables."""
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'assay[mlflow]'")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {
        **os.environ,
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # Webhooks to the tests' receivers on loopback (tests/test_webhooks.py), each
        # delivery tried once, and the webhook list read afresh for every event.
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_WEBHOOK_CACHE_TTL": "0",
    }
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # table creation is slow on a loaded machine
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 240 s")
            time.sleep(0.5)
        yield uri
    finally:
        # The server forks workers into its own session: stop the whole group it leads.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# --------------------------------------------------------------------------- assay server

# One token per role; gina writes only to the model "granted".
REGISTRY_PRINCIPALS = (
    ("rita", "reader", ()),
    ("walt", "writer", ()),
    ("pat", "promoter", ()),
    ("gina", "writer", ("granted",)),
    ("ada", "admin", ()),
)


@dataclass
class RegistryServer:
    """``assay server`` running on loopback over a fresh SQLite registry."""

    url: str
    registry: Registry
    tokens: dict[str, str]  # principal → secret
    port: int


@pytest.fixture
def start_registry_server(tmp_path: Path) -> Iterator[Callable[..., RegistryServer]]:
    """Starts ``assay server`` on a background thread (the app and the uvicorn settings the
    command uses), each over a registry of its own with a token per principal; keyword
    arguments go to ``create_app`` and ``connection_limits`` to the connection guard. All are
    stopped when the test ends."""
    from assay.core.http_server import asgi_in_background
    from assay.registry import Registry
    from assay.registry.tokens import TokenStore
    from assay.server import create_app

    with contextlib.ExitStack() as stack:

        def start(connection_limits: ConnectionLimits | None = None, **options) -> RegistryServer:
            path = tmp_path / f"registry-{len(started)}.db"
            registry = stack.enter_context(Registry.open(f"sqlite:///{path}"))
            store = TokenStore(registry)
            tokens = {
                principal: store.create(principal, role, grants, created_by="setup")[1]
                for principal, role, grants in REGISTRY_PRINCIPALS
            }
            app = create_app(registry, **options)
            running = stack.enter_context(
                asgi_in_background(app, connection_limits=connection_limits)
            )
            server = RegistryServer(running.url, registry, tokens, running.port)
            started.append(server)
            return server

        started: list[RegistryServer] = []
        yield start


@pytest.fixture
def registry_server(start_registry_server: Callable[..., RegistryServer]) -> RegistryServer:
    """``assay server`` with its default settings (see ``start_registry_server``)."""
    return start_registry_server()


# --------------------------------------------------------------------------- plugins


@dataclass
class FakePlugins:
    """Writes real (tiny) installed distributions: modules plus a dist-info declaring entry
    points, on a folder put first on ``sys.path``, so ``importlib.metadata`` finds them as it
    finds any installed package."""

    root: Path
    monkeypatch: pytest.MonkeyPatch

    def install(
        self,
        dist: str,
        modules: dict[str, str],
        entry_points: dict[str, dict[str, str]],
        version: str = "1.0",
    ) -> Path:
        importlib.invalidate_caches()
        for name, source in modules.items():
            path = self.root / (name.replace(".", "/") + ".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
            self.monkeypatch.delitem(sys.modules, name, raising=False)
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = []
        for group, entries in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{name} = {value}" for name, value in entries.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        return info


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePlugins:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return FakePlugins(root, monkeypatch)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files that start a Dagster deployment (``live_deployment.deployment``: a daemon, its
    runs) take minutes each; ``make test``'s workers get them first (``--dist loadfile`` deals
    files out in collection order), so that short files, not one of them, end the run."""
    items.sort(
        key=lambda item: (
            getattr(item, "module", None) is None or not hasattr(item.module, "deployment")
        )
    )
