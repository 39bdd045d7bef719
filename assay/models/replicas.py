"""One model version served by several OpenAI-compatible replicas.

Source URI: ``openai:http://host-a:8000/v1,http://host-b:8000/v1#model-id`` — the base URLs of
the replicas, comma-separated, all serving the same model under the same id.

Requests are pulled from one shared queue by a fixed number of slots per replica
(``ASSAY_REPLICA_CONCURRENCY``, default 4), so a faster replica takes more work and no replica
ever has more requests in flight than its slots. A replica that stops answering (its calls fail
after the client's retries: connection refused, timeouts, 5xx) is taken out of this call's
rotation and the request goes to a replica that has not yet failed it; only when every replica
has failed it does the request come back with an error. Permanent errors (4xx, malformed
replies) are the request's own and are not retried elsewhere.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import replace

from assay.core.digests import digest_json
from assay.core.records import Completion, Request
from assay.models.base import ModelSpec, ProgressCallback
from assay.models.openai_backend import OpenAIClient, OpenAISource

log = logging.getLogger(__name__)

# OpenAIClient's error text when retries are exhausted or the endpoint is unreachable.
_UNREACHABLE_MARKERS = ("failed after", "connection error", "timeout (")


def is_replicated_source(source: str) -> bool:
    """Whether an ``openai:`` source lists several base URLs."""
    scheme, _, rest = source.partition(":")
    return scheme == "openai" and "," in rest.partition("#")[0]


def replica_sources(source: str) -> list[str]:
    """The single-endpoint ``openai:`` source of each replica, validated, in listed order."""
    scheme, _, rest = source.partition(":")
    urls, sep, model = rest.partition("#")
    if scheme != "openai" or not sep or not model:
        raise ValueError(
            f"replicated model source needs 'openai:URL,URL#model-id', got a source with "
            f"{'no model id' if scheme == 'openai' else f'scheme {scheme!r}'}"
        )
    parts = [u.strip() for u in urls.split(",")]
    if any(not u for u in parts):
        raise ValueError("replicated model source has an empty base URL in its list")
    sources = [f"openai:{u}#{model}" for u in parts]
    for single in sources:
        OpenAISource.parse(single)  # each must be a valid endpoint on its own
    if len({OpenAISource.parse(s).public_url for s in sources}) != len(sources):
        raise ValueError("replicated model source lists the same base URL twice")
    return sources


def _unreachable(error: str) -> bool:
    return any(marker in error for marker in _UNREACHABLE_MARKERS)


class ReplicatedOpenAIClient:
    """``ModelClient`` spreading requests over several replicas of one OpenAI endpoint."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        per_replica_concurrency: int | None = None,
        max_retries: int = 2,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 2.0,
        timeout_s: float = 120.0,
    ) -> None:
        slots = per_replica_concurrency or int(os.environ.get("ASSAY_REPLICA_CONCURRENCY", "4"))
        if slots < 1:
            raise ValueError(f"per-replica concurrency must be >= 1, got {slots}")
        self.spec = spec
        self.per_replica_concurrency = slots
        # Few, short retries per replica: another replica is the better retry.
        self.replicas = [
            OpenAIClient(
                replace(spec, source=source),
                max_concurrency=slots,
                max_retries=max_retries,
                backoff_base_s=backoff_base_s,
                backoff_max_s=backoff_max_s,
                timeout_s=timeout_s,
            )
            for source in replica_sources(spec.source)
        ]
        self._digest: str | None = None
        self._digest_lock = threading.Lock()

    def __repr__(self) -> str:
        urls = ", ".join(r.source.public_url for r in self.replicas)
        return (
            f"ReplicatedOpenAIClient(replicas=[{urls}], model={self.replicas[0].source.model!r}, "
            f"per_replica_concurrency={self.per_replica_concurrency})"
        )

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()

    def __enter__(self) -> ReplicatedOpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend_identity(self) -> dict[str, str]:
        """The replicas' backend: an OpenAI-compatible endpoint (see ``OpenAIClient``)."""
        return {"kind": "openai"}

    @property
    def artifact_digest(self) -> str:
        """Digest of the model id, the replica set and the served model's ``/models`` entry
        (from the first replica that lists it), so one replica being down at digest time does
        not change the version's identity."""
        with self._digest_lock:
            if self._digest is None:
                info = None
                for replica in self.replicas:
                    # The same package's client: its /models lookup, volatile fields removed.
                    info = replica._model_info()
                    if info is not None:
                        break
                self._digest = digest_json(
                    {
                        "backend": "openai-replicas",
                        "replicas": sorted(r.source.public_url for r in self.replicas),
                        "model": self.replicas[0].source.model,
                        "model_info": info,
                    }
                )
            return self._digest

    def complete(
        self, requests: Sequence[Request], progress: ProgressCallback | None = None
    ) -> list[Completion]:
        """Run the requests over the live replicas; results align with ``requests``."""
        total = len(requests)
        results: list[Completion | None] = [None] * total
        pending: queue.Queue[int] = queue.Queue()
        for i in range(total):
            pending.put(i)
        lock = threading.Lock()
        down: set[int] = set()
        failed_on: dict[int, set[int]] = {}
        state = {"done": 0}

        def finish(i: int, completion: Completion) -> None:
            # Called with the lock held.
            if results[i] is None:
                results[i] = completion
                state["done"] += 1
                if progress is not None:
                    progress(state["done"], total)

        def slot(r: int) -> None:
            replica = self.replicas[r]
            while True:
                with lock:
                    if state["done"] >= total or r in down:
                        return
                try:
                    i = pending.get(timeout=0.05)
                except queue.Empty:
                    continue
                completion = replica.complete([requests[i]])[0]
                with lock:
                    if completion.error is None or not _unreachable(completion.error):
                        finish(i, completion)
                        continue
                    if r not in down:
                        log.warning(
                            "replica %s unreachable; its requests go to the others",
                            replica.source.public_url,
                        )
                        down.add(r)
                    failed_on.setdefault(i, set()).add(r)
                    left = [x for x in range(len(self.replicas)) if x not in down]
                    if any(x not in failed_on[i] for x in left):
                        pending.put(i)
                    else:
                        finish(i, completion)
                    if not left:  # nobody will take the rest: report them as failed
                        while True:
                            try:
                                j = pending.get_nowait()
                            except queue.Empty:
                                break
                            finish(j, Completion(error=f"every replica failed: {completion.error}"))
                    return

        threads = [
            threading.Thread(target=slot, args=(r,), name=f"assay-replica-{r}-{s}", daemon=True)
            for r in range(len(self.replicas))
            for s in range(self.per_replica_concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [r if r is not None else Completion(error="internal: no result") for r in results]
