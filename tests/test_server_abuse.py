"""``assay server`` under hostile readers: a request that must not freeze the server, and reads
that stay bounded whatever the filters.

The freezing case runs ``assay server`` as its own process (a frozen server holds the GIL and
ignores SIGTERM, so it must not share the test's process) and is killed at the end.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, event

from assay.registry import Registry
from assay.registry.tokens import TokenStore
from assay.server import create_app
from assay.server.search import like_matches
from deploy.stack import free_port


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``assay server`` in a process of its own over a registry with one long source path."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry.open(url) as registry:
        registry.create_model("m")
        registry.create_version("m", "hf:/" + "a" * 300)
        secret = TokenStore(registry).create("rita", "reader", (), created_by="setup")[1]
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from assay.cli import main; sys.exit(main(sys.argv[1:]))",
            "server",
            "--registry-url",
            url,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("assay server did not start")
            time.sleep(0.2)
        yield base, secret
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # a frozen server would not heed SIGTERM
        process.wait(timeout=10)


@pytest.mark.parametrize(
    "filter_",
    [
        "source_path LIKE '" + "%" * 40 + "!'",
        "source_path LIKE '" + "%a" * 60 + "%!'",
        "source_path ILIKE '" + "%_" * 60 + "%!'",
        "name LIKE '" + "%m" * 60 + "%!'",
    ],
)
def test_a_backtracking_filter_does_not_freeze_the_server(server_process, filter_):
    base, secret = server_process
    answer: list[httpx.Response | BaseException] = []

    def hostile() -> None:
        try:
            answer.append(
                httpx.get(
                    f"{base}/api/2.0/mlflow/model-versions/search",
                    params={"filter": filter_},
                    headers={"Authorization": f"Bearer {secret}"},
                    timeout=60,
                )
            )
        except BaseException as exc:  # reported below
            answer.append(exc)

    attacker = threading.Thread(target=hostile, daemon=True)
    attacker.start()
    # Meanwhile another client is served: a frozen server would let these time out.
    for _ in range(5):
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    attacker.join(timeout=30)
    assert answer and isinstance(answer[0], httpx.Response), answer
    assert answer[0].status_code == 200
    assert answer[0].json().get("model_versions", []) == []


def test_an_overlong_like_pattern_or_filter_is_refused(server_process):
    base, secret = server_process
    headers = {"Authorization": f"Bearer {secret}"}
    search = f"{base}/api/2.0/mlflow/model-versions/search"
    long_like = httpx.get(search, params={"filter": f"name LIKE '{'a' * 300}'"}, headers=headers)
    assert long_like.status_code == 400
    assert "LIKE pattern for 'name' has 300 characters" in long_like.json()["message"]
    long_filter = httpx.get(search, params={"filter": f"name = '{'a' * 17_000}'"}, headers=headers)
    assert long_filter.status_code == 400
    assert "characters, over" in long_filter.json()["message"]


def _like_by_regex(pattern: str, value: str, fold: bool) -> bool:
    """The reference: SQL LIKE as a backtracking regex (fine for short inputs)."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if fold else 0)
    return re.fullmatch(regex, value, flags) is not None


def test_like_matching_agrees_with_the_regex_reference():
    alphabet = "ab%_"
    values = ["", "a", "b", "ab", "ba", "aab", "abab", "bbaa", "a%b", "AbA", "_"]
    checked = 0
    for length in range(6):
        for letters in itertools.product(alphabet, repeat=length):
            pattern = "".join(letters)
            for value in values:
                for fold in (False, True):
                    expected = _like_by_regex(pattern, value, fold)
                    assert like_matches(pattern, value, fold=fold) == expected, (pattern, value)
                    checked += 1
    assert checked > 25_000


# -- the event log's reads -----------------------------------------------------------------------


def test_event_filters_and_limit_run_in_the_database(tmp_path: Path):
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.create_model("m")
    registry.create_version("m", "hf:/w")
    for i in range(60):
        registry.set_tag("m", "k", str(i), version=1)
    registry.set_alias("m", "champion", 1)
    registry.set_alias("m", "challenger", 1)
    secret = TokenStore(registry).create("rita", "reader", (), created_by="setup")[1]
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    app = create_app(registry)
    from starlette.testclient import TestClient

    event.listen(Engine, "before_cursor_execute", record)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            headers = {"Authorization": f"Bearer {secret}"}
            got = client.get(
                "/api/assay/v1/events", params={"kind": "alias_set", "limit": 1}, headers=headers
            ).json()
            over = client.get("/api/assay/v1/events", params={"limit": 5000}, headers=headers)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        registry.close()
    assert [e["payload"].get("alias") for e in got["events"]] == ["champion"]
    reads = [s for s in statements if "FROM events" in s and "SELECT" in s]
    assert reads and all("LIMIT" in s for s in reads)
    assert any("events.kind =" in s for s in reads)
    assert over.status_code == 400 and "at most 1000" in over.json()["message"]
