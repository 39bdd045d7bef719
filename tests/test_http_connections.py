"""Slow and idle clients against both servers (``assay server`` and ``assay serve``).

Each test runs the real server on loopback with the uvicorn settings its command uses
(``assay.core.http_server``) and plays the attacker with raw sockets: connections that send
nothing, half a request head or half a body, a head that never ends, and a flood of such
sockets against a process with a small open-file limit (the commands themselves, in a process
of their own).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from assay.core.http_server import ConnectionLimits
from assay.core.records import Completion, Request
from assay.models.base import ModelSpec
from assay.serving import serving_in_background
from assay.serving.policy import ServerAccess, ServerLimits
from deploy.stack import free_port

REPO = Path(__file__).resolve().parent.parent
FLOOD = 300
OPEN_FILES = 256  # the commands' open-file limit in the flood test


class PausingClient:
    """A model that answers "ok" to everything after ``pause_s``."""

    def __init__(self, pause_s: float = 0.0) -> None:
        self.spec = ModelSpec("pausing@v1", "pausing:x")
        self.pause_s = pause_s

    @property
    def artifact_digest(self) -> str:
        return "pausing"

    def complete(self, requests: Sequence[Request], progress=None) -> list[Completion]:
        time.sleep(self.pause_s)
        return [Completion(text="ok", prompt_tokens=1, completion_tokens=1) for _ in requests]


@dataclass
class Target:
    """A running server: its port, a GET path that answers 200 and a POST path that reads a
    JSON body (with the headers it needs)."""

    port: int
    get: str
    post: str
    headers: dict[str, str]


@pytest.fixture(params=["assay server", "assay serve"])
def quick(request, start_registry_server: Callable) -> Iterator[Target]:
    """Either server with a one-second request timeout."""
    limits = ConnectionLimits(request_timeout_s=1.0)
    if request.param == "assay server":
        server = start_registry_server(connection_limits=limits)
        auth = {"Authorization": f"Bearer {server.tokens['walt']}"}
        yield Target(server.port, "/health", "/api/2.0/mlflow/registered-models/create", auth)
        return
    with serving_in_background(
        PausingClient(), connection_limits=limits, limits=ServerLimits(), access=ServerAccess()
    ) as running:
        yield Target(running.port, "/v1/models", "/v1/completions", {})


def _closed_by_server(sock: socket.socket, within_s: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading what it sent), or None if it did not."""
    start = time.monotonic()
    sock.settimeout(within_s)
    try:
        while sock.recv(65_536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_silent_and_half_sent_requests_are_closed_after_the_timeout(quick: Target):
    port = quick.port
    silent = socket.create_connection(("127.0.0.1", port))
    half_head = socket.create_connection(("127.0.0.1", port))
    half_head.sendall(f"GET {quick.get} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
    half_body = socket.create_connection(("127.0.0.1", port))
    head = [f"POST {quick.post} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in quick.headers.items()]
    head += ["Content-Length: 100", "", '{"name": ']
    half_body.sendall("\r\n".join(head).encode())
    try:
        for sock in (silent, half_head, half_body):
            waited = _closed_by_server(sock, within_s=10)
            assert waited is not None and waited < 5, "the server kept a stalled connection"
    finally:
        for sock in (silent, half_head, half_body):
            sock.close()
    assert httpx.get(f"http://127.0.0.1:{port}{quick.get}", timeout=10).status_code == 200


def test_a_request_answered_after_the_timeout_is_not_cut():
    # The timeout bounds how long a request takes to arrive, not how long the model thinks.
    limits = ConnectionLimits(request_timeout_s=0.5)
    with serving_in_background(PausingClient(pause_s=1.5), connection_limits=limits) as running:
        response = httpx.post(
            f"{running.base_url}/completions", json={"prompt": "hi", "max_tokens": 1}, timeout=30
        )
    assert response.status_code == 200 and response.json()["choices"][0]["text"] == "ok"


def test_over_the_cap_with_every_connection_answered_a_newcomer_gets_503():
    limits = ConnectionLimits(max_connections=2)
    with (
        serving_in_background(PausingClient(pause_s=2), connection_limits=limits) as running,
        ThreadPoolExecutor(2) as pool,
    ):
        url = f"{running.base_url}/completions"
        body = {"prompt": "hi", "max_tokens": 1}
        busy = [pool.submit(httpx.post, url, json=body, timeout=30) for _ in range(2)]
        time.sleep(0.5)  # both are with the model now
        assert httpx.post(url, json=body, timeout=30).status_code == 503
        assert [f.result().status_code for f in busy] == [200, 200]
        assert httpx.post(url, json=body, timeout=30).status_code == 200  # room again


def test_a_request_head_over_the_limit_is_refused(quick: Target):
    # A head that never ends, sent as a client would stream it: 4 KB at a time up to 40 KB.
    lines = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 90) for i in range(400))
    chunks = [lines[i : i + 4096] for i in range(0, len(lines), 4096)] + [b"\r\n"]
    answer = b""
    with socket.create_connection(("127.0.0.1", quick.port)) as sock:
        sock.sendall(f"GET {quick.get} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        for chunk in chunks:
            sock.sendall(chunk)
            if select.select([sock], [], [], 0.05)[0]:
                break  # answered: stop sending into a connection being closed
        sock.settimeout(10)
        answer = sock.recv(100)
    assert answer.startswith(b"HTTP/1.1 400 "), answer


# -- a flood against the commands ------------------------------------------------------------

_LAUNCH = (
    "import resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({OPEN_FILES}, {OPEN_FILES}))\n"
    "from assay.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@contextlib.contextmanager
def _command(args: list[str], env: dict[str, str], log: Path, ready: str) -> Iterator[None]:
    """``assay <args>`` in a process of its own with ``OPEN_FILES`` open files at most, until
    ``ready`` (a URL) answers; stopped at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready, timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"no answer from {ready}: {log.read_text()}"
                time.sleep(0.2)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _flood(port: int, path: str) -> list[socket.socket]:
    """``FLOOD`` connections: half send nothing, half half a request head; all are held."""
    sockets = []
    for i in range(FLOOD):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            if i % 2:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
        except OSError:
            pass  # dropped by the server: still an attempt
        sockets.append(sock)
    return sockets


def _still_open(sockets: list[socket.socket]) -> int:
    count = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                count += 1
        except BlockingIOError:
            count += 1  # nothing to read and not closed
        except OSError:
            pass
    return count


@pytest.mark.parametrize("command", ["assay server", "assay serve"])
def test_a_flood_of_idle_sockets_does_not_stop_a_real_request(command, tmp_path: Path):
    from assay.registry import Registry
    from assay.registry.tokens import TokenStore

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if command == "assay server":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        with Registry.open(url) as registry:
            secret = TokenStore(registry).create("rita", "reader", (), created_by="setup")[1]
        args = ["server", "--registry-url", url, "--port", str(port)]
        env = {"ASSAY_SERVER_MAX_CONNECTIONS": "100"}  # below the open-file limit's own cap
        path, real = "/health", ("/api/assay/v1/whoami", {"Authorization": f"Bearer {secret}"})
    else:
        source = "openai:http://127.0.0.1:9/v1#m"  # never called: /v1/models answers offline
        args = ["serve", source, "--port", str(port), "--cache-dir", str(tmp_path)]
        args += ["--max-connections", "100"]
        env = {}
        path, real = "/v1/models", ("/v1/models", {})

    with _command(args, env, tmp_path / "server.log", f"{base}{path}"):
        sockets = _flood(port, path)
        try:
            time.sleep(1)  # let the server take them all in
            # A real client is answered at once, while the flood is still held.
            answered = httpx.get(f"{base}{path}", timeout=5)
            assert answered.status_code == 200
            real_path, headers = real
            assert httpx.get(f"{base}{real_path}", headers=headers, timeout=5).status_code == 200
            # The server held no more of the flood than its cap (--max-connections or the env).
            deadline = time.monotonic() + 10
            while (held := _still_open(sockets)) > 100 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert held <= 100
        finally:
            for sock in sockets:
                sock.close()
