"""Content-addressed request cache: reruns and backfills never pay for a model call twice.

Cache-key policy: a key names everything that determines a completion, so a hit is an answer
this exact computation produced, and any change to one of its inputs is a miss. The key is
the SHA-256 of:

- **the model artifact** (``ModelClient.artifact_digest``): the weights, the tokenizer and the
  chat template for local models (a GGUF file embeds all three); for an HTTP endpoint the
  credential-free URL, the model id and the endpoint's ``/models`` entry;
- **the backend** (``backend_identity``): its kind (transformers, llama.cpp, openai, ...) and
  the exact versions of the libraries that compute the answer (transformers and torch,
  llama-cpp-python), plus the device type a local model runs on (float results differ between
  a CPU and a GPU). An HTTP endpoint does not report its server software through the OpenAI
  API: upgrading the server behind one URL is not seen; register a new version then;
- **the serving config** (``ServingConfig.to_dict``): chat template, system prompt, dtype,
  batch bound, context window, placement;
- **the request** (``Request.digest``): kind, prompt, continuations and every decoding
  parameter: max tokens, stop sequences, and for a sampled request temperature, top-p, the
  seed and the sample index, so each sample of a request is an entry of its own. A greedy
  request's digest leaves the sampling fields out (they do not change a greedy answer).

Bookkeeping (instance id, trial, template id, perturbation) is not in the key: two requests
that show the model the same thing share one answer. Changing the policy changes every key;
old entries then simply stop matching and are recomputed once.

Entries live in one SQL table through SQLAlchemy: a SQLite file by default (WAL, busy
timeout, so several processes share it), Postgres by URL. On Postgres a pooled connection is
checked before use, and a lookup or write that loses the server (a restart, a failover) is
tried again for about 15 s before the run fails with :class:`RequestCacheUnavailable`; both
are idempotent, so a retried write cannot store anything twice.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from assay.core.digests import digest_json
from assay.core.records import ChoiceScore, Completion, Request
from assay.models.base import (
    BatchPlanner,
    ModelClient,
    ProgressCallback,
    ServingConfig,
    backend_identity,
)

# Bumped when the stored JSON changes shape; entries of another version read as misses.
_FORMAT = 1
_SQLITE_BUSY_TIMEOUT_MS = 60_000
# SQLite caps bound parameters per statement; lookups go in slices this long.
_LOOKUP_SLICE = 500
# Pauses between tries of an operation that lost its Postgres server (about 15 s in all).
_RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)

T = TypeVar("T")


class RequestCacheUnavailable(RuntimeError):
    """The cache's database stayed unreachable; the message names it (without a password)."""


_metadata = sa.MetaData()
_entries = sa.Table(
    "request_cache",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("completion", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


def cache_key(
    artifact_digest: str,
    serving: ServingConfig,
    request: Request,
    backend: Mapping[str, str] | None = None,
) -> str:
    """The content address of one request's completion (the policy is in the module doc).

    ``backend`` is the client's ``backend_identity``; ``None`` (a client that states none, such
    as a test double) keys by artifact, serving config and request alone.
    """
    parts: list[Any] = [artifact_digest, serving.to_dict(), request.digest]
    if backend is not None:
        parts.append(dict(backend))
    return digest_json(parts)


def completion_to_json(completion: Completion) -> str:
    """Serialize a completion (the ``cached`` flag is not stored; it is set on read)."""
    data = asdict(completion)
    data.pop("cached")
    return json.dumps({"format": _FORMAT, **data}, sort_keys=True)


def completion_from_json(text: str) -> Completion | None:
    """Rebuild a stored completion marked ``cached=True``; ``None`` for another format."""
    data: dict[str, Any] = json.loads(text)
    if data.pop("format", None) != _FORMAT:
        return None
    return Completion(
        text=data["text"],
        prompt_tokens=data["prompt_tokens"],
        completion_tokens=data["completion_tokens"],
        token_logprobs=tuple(data["token_logprobs"]),
        choices=tuple(ChoiceScore(**c) for c in data["choices"]),
        latency_s=data["latency_s"],
        batch_size=data["batch_size"],
        cached=True,
        error=data["error"],
    )


def _engine_url(url: str) -> str:
    """A SQLAlchemy URL; a bare filesystem path means a SQLite file there."""
    if "://" in url:
        return url
    path = Path(url).expanduser()
    return f"sqlite:///{path.resolve()}"


class RequestCache:
    """Completions by cache key in a SQL table (``sqlite:///...``, ``postgresql://...`` or a path).

    The URL may hold a password; it is never echoed in errors or logs by this class.
    """

    def __init__(self, url: str) -> None:
        engine_url = sa.make_url(_engine_url(url))
        self._dialect = engine_url.get_backend_name()
        if self._dialect == "sqlite" and engine_url.database not in (None, "", ":memory:"):
            Path(engine_url.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = (
            {"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000} if self._dialect == "sqlite" else {}
        )
        self._where = engine_url.render_as_string(hide_password=True)
        # A server restart leaves dead connections in the pool: each is checked on checkout.
        self._engine = sa.create_engine(
            engine_url, connect_args=connect_args, pool_pre_ping=self._dialect != "sqlite"
        )
        if self._dialect == "sqlite":
            sa.event.listen(self._engine, "connect", _configure_sqlite)
        self.reconnects = 0  # tries repeated after an operation lost the server
        self._reconnecting(lambda: _metadata.create_all(self._engine))

    def _reconnecting(self, operation: Callable[[], T]) -> T:
        """Run an idempotent ``operation``, again while the Postgres server is unreachable."""
        delays = iter(_RECONNECT_DELAYS_S)
        while True:
            try:
                return operation()
            except sa.exc.OperationalError as exc:
                if self._dialect != "postgresql":
                    raise  # SQLite: its busy timeout has already waited for the lock
                delay = next(delays, None)
                if delay is None:
                    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc)
                    raise RequestCacheUnavailable(
                        f"request cache {self._where} unavailable "
                        f"({len(_RECONNECT_DELAYS_S) + 1} tries over "
                        f"{sum(_RECONNECT_DELAYS_S):.0f} s): {reason}"
                    ) from None
                self.reconnects += 1
                time.sleep(delay)

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """The cached completions among ``keys`` (absent keys are simply missing)."""
        wanted = list(dict.fromkeys(keys))

        def lookup() -> dict[str, Completion]:
            found: dict[str, Completion] = {}
            with self._engine.connect() as conn:
                for start in range(0, len(wanted), _LOOKUP_SLICE):
                    part = wanted[start : start + _LOOKUP_SLICE]
                    query = sa.select(_entries.c.key, _entries.c.completion)
                    for key, text in conn.execute(query.where(_entries.c.key.in_(part))):
                        completion = completion_from_json(text)
                        if completion is not None:
                            found[key] = completion
            return found

        return self._reconnecting(lookup)

    def put_many(self, entries: Mapping[str, Completion]) -> int:
        """Store completions in one transaction (all or none); errors are refused.

        A key already present keeps its entry: it names the same computation, so whichever
        process stored it first is as good as this one. Returns the number of entries given.
        """
        errored = [k for k, c in entries.items() if c.error is not None]
        if errored:
            raise ValueError(f"errored completions are not cached (key {errored[0]})")
        if not entries:
            return 0
        rows = [{"key": k, "completion": completion_to_json(c)} for k, c in entries.items()]
        insert = self._insert_ignoring_duplicates()

        def write() -> None:
            with self._engine.begin() as conn:
                conn.execute(insert, rows)

        self._reconnecting(write)
        return len(rows)

    def __len__(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_entries)).scalar())

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def _insert_ignoring_duplicates(self) -> sa.Insert:
        if self._dialect == "sqlite":
            return sqlite.insert(_entries).on_conflict_do_nothing(index_elements=["key"])
        if self._dialect == "postgresql":
            return postgresql.insert(_entries).on_conflict_do_nothing(index_elements=["key"])
        raise ValueError(
            f"request cache supports SQLite and PostgreSQL URLs, not {self._dialect!r}"
        )


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; the busy timeout makes a second writer wait for
    # the lock instead of failing. A write transaction starts with its INSERT (no read
    # first), so waiting on the lock cannot deadlock.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class CachedClient:
    """A ``ModelClient`` that answers from the cache and sends only misses to ``client``.

    Misses go to the wrapped client in chunks of ``chunk_size`` requests, and each chunk's
    results are committed in one transaction as soon as it finishes: a run killed halfway
    keeps every finished chunk, and its rerun computes only the rest. Errored completions are
    returned but not stored, so a rerun retries them. A client that plans its batches
    (:class:`~assay.models.base.BatchPlanner`) plans once over all the misses, and the chunks
    follow that plan: batches are formed over the whole call (one length sort over every
    miss), not within each chunk.
    """

    def __init__(
        self,
        client: ModelClient,
        cache: RequestCache,
        serving: ServingConfig,
        chunk_size: int = 64,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.client = client
        self.cache = cache
        self.serving = serving
        self.chunk_size = chunk_size

    @property
    def artifact_digest(self) -> str:
        return self.client.artifact_digest

    @property
    def backend_identity(self) -> dict[str, str] | None:
        return backend_identity(self.client)

    def complete(
        self, requests: Sequence[Request], progress: ProgressCallback | None = None
    ) -> list[Completion]:
        """Completions for ``requests`` in order; hits are marked ``cached=True``."""
        digest = self.client.artifact_digest
        backend = backend_identity(self.client)
        keys = [cache_key(digest, self.serving, r, backend) for r in requests]
        known: dict[str, Completion] = self.cache.get_many(keys)
        # Identical requests in one call are computed once.
        todo: dict[str, Request] = {}
        for key, request in zip(keys, requests, strict=True):
            if key not in known and key not in todo:
                todo[key] = request
        total = len(requests)
        occurrences = Counter(keys)
        done = total - sum(occurrences[k] for k in todo)
        if progress is not None and done:
            progress(done, total)
        pending = list(todo.items())
        if isinstance(self.client, BatchPlanner) and len(pending) > 1:
            order = self.client.plan([r for _, r in pending])
            if sorted(order) != list(range(len(pending))):
                raise RuntimeError(
                    f"model client planned {len(order)} indices that are not a permutation "
                    f"of its {len(pending)} requests"
                )
            pending = [pending[i] for i in order]
        for start in range(0, len(pending), self.chunk_size):
            chunk = pending[start : start + self.chunk_size]

            def inner(n: int, _of: int, base: int = done) -> None:
                # The wrapped client counts within its chunk; report against the whole call.
                if progress is not None:
                    progress(min(base + n, total), total)

            results = self.client.complete([r for _, r in chunk], progress=inner)
            if len(results) != len(chunk):
                raise RuntimeError(
                    f"model client returned {len(results)} completions for {len(chunk)} requests"
                )
            fresh = {key: c for (key, _), c in zip(chunk, results, strict=True)}
            self.cache.put_many({k: c for k, c in fresh.items() if c.error is None})
            known.update(fresh)
            done += sum(occurrences[k] for k, _ in chunk)
            if progress is not None:
                progress(done, total)
        return [known[k] for k in keys]
