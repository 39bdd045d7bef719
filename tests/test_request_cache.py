"""The content-addressed request cache and the caching client wrapper."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from assay.core.records import ChoiceScore, Completion, Request, RequestKind
from assay.models.base import ModelClient, ModelSpec, ProgressCallback, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.cache import CachedClient, RequestCache, RequestCacheUnavailable, cache_key
from assay.models.transformers_backend import TransformersClient

REPO = Path(__file__).resolve().parents[1]


class EchoClient:
    """A stand-in model for the cache-logic tests, which are about bookkeeping, not inference.

    It echoes prompts, records what it was asked, fails requests whose prompt starts with
    "bad", and can raise on its n-th call to simulate a run killed halfway.
    """

    def __init__(self, digest: str = "a" * 64, raise_on_call: int | None = None) -> None:
        self._digest = digest
        self.raise_on_call = raise_on_call
        self.seen: list[str] = []
        self.calls = 0

    @property
    def artifact_digest(self) -> str:
        return self._digest

    def complete(
        self, requests: Sequence[Request], progress: ProgressCallback | None = None
    ) -> list[Completion]:
        self.calls += 1
        if self.calls == self.raise_on_call:
            raise RuntimeError("worker killed")
        self.seen.extend(r.prompt for r in requests)
        return [
            Completion(error="boom")
            if r.prompt.startswith("bad")
            else Completion(
                text=f"echo:{r.prompt}",
                prompt_tokens=len(r.prompt),
                token_logprobs=(-0.5, -1.25),
                choices=(ChoiceScore("x", -2.5, 1, 1, 1, True),),
                latency_s=0.01,
                batch_size=len(requests),
            )
            for r in requests
        ]


def req(prompt: str, instance_id: str = "i") -> Request:
    return Request(instance_id, RequestKind.GENERATE, prompt, max_tokens=4)


@pytest.fixture(params=["sqlite", "postgres"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The cache's two stores: a SQLite file, and a database on a real PostgreSQL server."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_database")
    return f"sqlite:///{tmp_path / 'cache.db'}"


@pytest.fixture
def cache(cache_url: str) -> RequestCache:
    return RequestCache(cache_url)


def test_hits_come_from_the_cache_without_a_model_call(cache: RequestCache) -> None:
    serving = ServingConfig()
    first_model = EchoClient()
    cached = CachedClient(first_model, cache, serving)
    assert isinstance(cached, ModelClient)
    first = cached.complete([req("p1"), req("p2")])
    assert [c.cached for c in first] == [False, False]
    assert first_model.seen == ["p1", "p2"]

    second_model = EchoClient()
    again = CachedClient(second_model, cache, serving).complete([req("p2"), req("p3"), req("p1")])
    assert second_model.seen == ["p3"]
    assert [c.cached for c in again] == [True, False, True]
    # A hit returns the stored completion field for field, only flagged as cached.
    assert again[0].text == "echo:p2"
    assert again[0].token_logprobs == (-0.5, -1.25)
    assert again[0].choices == (ChoiceScore("x", -2.5, 1, 1, 1, True),)
    assert again[2].text == "echo:p1"


def test_key_covers_model_serving_and_request_content(cache: RequestCache) -> None:
    CachedClient(EchoClient(), cache, ServingConfig()).complete([req("p")])

    other_serving = EchoClient()
    CachedClient(other_serving, cache, ServingConfig(chat_template=True)).complete([req("p")])
    assert other_serving.seen == ["p"]

    other_model = EchoClient(digest="b" * 64)
    CachedClient(other_model, cache, ServingConfig()).complete([req("p")])
    assert other_model.seen == ["p"]

    # Bookkeeping fields (instance id, trial) are not part of what the model sees.
    same = EchoClient()
    [hit] = CachedClient(same, cache, ServingConfig()).complete([req("p", instance_id="other")])
    assert hit.cached and same.seen == []
    assert cache_key("a" * 64, ServingConfig(), req("p")) != cache_key(
        "a" * 64, ServingConfig(), req("p ")
    )


def test_errors_are_returned_but_not_cached(cache: RequestCache) -> None:
    model = EchoClient()
    client = CachedClient(model, cache, ServingConfig())
    first = client.complete([req("bad one"), req("good")])
    assert first[0].error == "boom" and first[1].ok
    second = client.complete([req("bad one"), req("good")])
    assert model.seen == ["bad one", "good", "bad one"]
    assert not second[0].cached and second[1].cached
    with pytest.raises(ValueError, match="errored completions are not cached"):
        cache.put_many({"k": Completion(error="boom")})


def test_duplicate_requests_in_one_call_are_computed_once(cache: RequestCache) -> None:
    model = EchoClient()
    progress: list[tuple[int, int]] = []
    out = CachedClient(model, cache, ServingConfig()).complete(
        [req("x"), req("y"), req("x")], progress=lambda d, t: progress.append((d, t))
    )
    assert model.seen == ["x", "y"]
    assert [c.text for c in out] == ["echo:x", "echo:y", "echo:x"]
    assert progress[-1] == (3, 3)


def test_killed_run_resumes_without_recomputing_finished_chunks(cache: RequestCache) -> None:
    requests = [req(f"p{i}") for i in range(6)]
    dying = EchoClient(raise_on_call=2)  # the second chunk dies
    with pytest.raises(RuntimeError, match="worker killed"):
        CachedClient(dying, cache, ServingConfig(), chunk_size=2).complete(requests)
    assert dying.seen == ["p0", "p1"]
    assert len(cache) == 2  # the first chunk was committed before the crash

    resumed = EchoClient()
    out = CachedClient(resumed, cache, ServingConfig(), chunk_size=2).complete(requests)
    assert resumed.seen == ["p2", "p3", "p4", "p5"]
    assert [c.cached for c in out] == [True, True, False, False, False, False]
    assert [c.text for c in out] == [f"echo:p{i}" for i in range(6)]


_WRITER = textwrap.dedent(
    """
    import sys
    from assay.models.cache import RequestCache
    from assay.core.records import Completion

    url, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = RequestCache(url)
    # Many small transactions, so the two writers contend for the lock again and again.
    for i in range(start, stop, 3):
        cache.put_many({f"key{j}": Completion(text=f"v{j}") for j in range(i, min(i + 3, stop))})
    print("ok")
    """
)


def test_two_processes_write_concurrently(cache_url: str) -> None:
    url = cache_url
    RequestCache(url)  # create the schema once, as a first run would
    # Overlapping ranges: keys 100..199 are written by both processes.
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, str(lo), str(hi)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lo, hi in [(0, 200), (100, 300)]
    ]
    for writer in writers:
        stdout, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr
        assert stdout.strip() == "ok"
    cache = RequestCache(url)
    assert len(cache) == 300
    found = cache.get_many(f"key{j}" for j in range(300))
    assert all(found[f"key{j}"].text == f"v{j}" for j in range(300))


def test_connections_the_server_dropped_are_replaced_before_use(postgres_database: str) -> None:
    import psycopg

    cache = RequestCache(postgres_database)
    cache.put_many({"before": Completion(text="a")})  # leaves a connection in the pool
    # The server ends every session of the cache's database, as a restart would.
    server = postgres_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(server, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert ended >= 1
    cache.put_many({"after": Completion(text="b")})
    assert {k: c.text for k, c in cache.get_many(["before", "after"]).items()} == {
        "before": "a",
        "after": "b",
    }
    assert cache.reconnects == 0  # the pool's check replaced the connection: nothing failed


def test_a_write_rides_out_a_server_restart(postgres_server) -> None:
    cache = RequestCache(postgres_server.url())
    cache.put_many({"before": Completion(text="a")})
    postgres_server.stop()
    restart = threading.Timer(2.0, postgres_server.start)
    restart.start()
    try:
        # Tried while the server is down, again until it is back; stored once.
        cache.put_many({"during": Completion(text="b"), "before": Completion(text="a")})
    finally:
        restart.join()
    assert cache.reconnects >= 1
    assert len(cache) == 2
    assert cache.get_many(["during"])["during"].text == "b"


def test_a_server_that_stays_down_is_a_clear_error_without_the_password(
    postgres_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("assay.models.cache._RECONNECT_DELAYS_S", (0.1, 0.2))
    # The server trusts loopback, so the password is accepted and must never be shown.
    url = postgres_server.url().replace("assay@", "assay:s3cret-pw@")
    cache = RequestCache(url)
    postgres_server.stop()
    with pytest.raises(RequestCacheUnavailable) as caught:
        cache.put_many({"k": Completion(text="t")})
    message = str(caught.value)
    assert message.startswith("request cache postgresql+psycopg://assay:***@127.0.0.1:")
    assert "(3 tries over 0 s)" in message and "s3cret-pw" not in message
    assert caught.value.__cause__ is None and cache.reconnects == 2
    postgres_server.start()
    assert cache.get_many(["k"]) == {}  # nothing was half-written


def test_bare_path_means_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "cache.db"
    cache = RequestCache(str(path))
    cache.put_many({"k": Completion(text="t")})
    assert path.is_file()
    assert RequestCache(str(path)).get_many(["k", "missing"])["k"].text == "t"


def test_real_model_rerun_is_served_from_the_cache(tmp_path: Path) -> None:
    # Same persistent converted-model directory as tests/test_transformers_backend.py.
    serving = ServingConfig(batch_size=4)
    model = TransformersClient(
        ModelSpec("smollm2-135m-instruct@v1", BUNDLED_SOURCE, serving),
        REPO / ".assay" / "test-cache",
    )
    cache = RequestCache(f"sqlite:///{tmp_path / 'cache.db'}")
    requests = [
        Request("g", RequestKind.GENERATE, "The capital of France is", max_tokens=4),
        Request("l", RequestKind.LOGLIKELIHOOD, "2 + 2 =", continuations=(" 4", " 5")),
    ]
    first = CachedClient(model, cache, serving).complete(requests)
    second = CachedClient(model, cache, serving).complete(requests)
    assert [c.cached for c in first] == [False, False]
    assert [c.cached for c in second] == [True, True]
    assert second[0].text == first[0].text
    assert second[0].token_logprobs == first[0].token_logprobs
    assert second[1].choices == first[1].choices
