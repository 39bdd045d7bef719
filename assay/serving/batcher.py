"""Gathers requests arriving close together into one ``ModelClient.complete`` call.

A local model answers a batch of 16 in little more than the time of one, so a server in
front of it should not call it once per HTTP request. One worker thread owns the model: it
waits for the first job, keeps collecting for ``window_s`` (or until ``max_batch``), then runs
the lot. Requests that arrive while the model is busy queue up and form the next batch, so
under load batches fill by themselves and the window only costs latency when idle.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from assay.core.records import Completion, Request
from assay.models.base import ModelClient
from assay.models.prompt_logprobs import PromptLogprobs, PromptScorer

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    # A Request for ``complete``, or a text for the client's ``score_prompts`` (when offered).
    work: Request | str
    future: Future = field(default_factory=Future)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """How the batcher has grouped work so far."""

    calls: int  # complete() calls made
    requests: int  # requests answered
    largest: int  # the biggest batch


class RequestBatcher:
    """Runs ``client.complete`` on one thread over batches of concurrently submitted requests."""

    def __init__(self, client: ModelClient, window_s: float = 0.01, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.client = client
        self.window_s = window_s
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._calls = 0
        self._requests = 0
        self._largest = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="assay-batcher", daemon=True)
        self._thread.start()

    def submit(self, requests: Sequence[Request]) -> list[Future[Completion]]:
        """Queue requests; each future resolves to its completion."""
        return self._enqueue(list(requests))

    def submit_prompt_scores(self, texts: Sequence[str]) -> list[Future[PromptLogprobs]]:
        """Queue texts for per-token scoring; needs a client that is a ``PromptScorer``."""
        if not isinstance(self.client, PromptScorer):
            raise TypeError(f"{type(self.client).__name__} does not offer score_prompts()")
        return self._enqueue(list(texts))

    def _enqueue(self, work: list[Request] | list[str]) -> list[Future]:
        if self._closed:
            raise RuntimeError("the request batcher is closed")
        jobs = [_Job(w) for w in work]
        for job in jobs:
            self._queue.put(job)
        return [job.future for job in jobs]

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        """Blocking convenience: submit and wait."""
        return [f.result() for f in self.submit(requests)]

    @property
    def stats(self) -> BatchStats:
        return BatchStats(self._calls, self._requests, self._largest)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop after the batch in progress; queued jobs still waiting are cancelled."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = self._collect(batch)
            self._execute(batch)
            if stop:
                break
        # Jobs left behind a close never run; say so rather than leave callers waiting.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.set_exception(RuntimeError("the request batcher was closed"))

    def _collect(self, batch: list[_Job]) -> bool:
        """Add jobs arriving within the window; True when a close was requested."""
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    job = self._queue.get(timeout=remaining)
                else:
                    job = self._queue.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            batch.append(job)
        return False

    def _execute(self, batch: list[_Job]) -> None:
        # A caller that gave up (an HTTP client that disconnected) cancelled its future;
        # skip its work rather than spend the model on it.
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        requests = [job for job in batch if isinstance(job.work, Request)]
        texts = [job for job in batch if isinstance(job.work, str)]
        if requests:
            self._run_group(requests, lambda work: self.client.complete(work))
        if texts:
            scorer = self.client
            assert isinstance(scorer, PromptScorer)  # checked at submit
            self._run_group(texts, lambda work: scorer.score_prompts(work))
        self._calls += 1
        self._requests += len(batch)
        self._largest = max(self._largest, len(batch))

    def _run_group(self, jobs: list[_Job], call: Callable[[list[Any]], list[Any]]) -> None:
        try:
            results = call([job.work for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(
                    f"model client returned {len(results)} results for {len(jobs)} inputs"
                )
        except Exception as exc:  # one failing call must not kill the server's only worker
            log.exception("model client failed on a batch of %d", len(jobs))
            for job in jobs:
                job.future.set_exception(exc)
            return
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)
