"""Request checks and text helpers shared by the in-process backends (transformers, llama.cpp)."""

from __future__ import annotations

from collections.abc import Sequence

from assay.core.records import Request


class RequestFailed(Exception):
    """A request that cannot run (too long, malformed); becomes ``Completion.error``."""


def check_generate(request: Request, budget: int) -> None:
    """Refuse a generate request whose ``max_tokens`` leaves no room in ``budget`` tokens."""
    if request.max_tokens < 1:
        raise RequestFailed(
            f"request {request.instance_id!r}: a generate request needs max_tokens >= 1, "
            f"got {request.max_tokens}"
        )
    if request.max_tokens >= budget:
        raise RequestFailed(
            f"request {request.instance_id!r}: max_tokens={request.max_tokens} leaves no room "
            f"for the prompt in a context of {budget} tokens"
        )


def check_loglikelihood(request: Request) -> None:
    """Refuse a log-likelihood request without continuations."""
    if not request.continuations:
        raise RequestFailed(
            f"request {request.instance_id!r}: a loglikelihood request needs continuations"
        )


def check_continuation_fits(request: Request, n_tokens: int, budget: int) -> None:
    """Refuse a continuation of ``n_tokens`` that leaves no room for context in ``budget``."""
    if n_tokens >= budget:
        raise RequestFailed(
            f"request {request.instance_id!r}: a continuation of {n_tokens} tokens does "
            f"not fit a context of {budget} tokens"
        )


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop sequence in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
