"""Request checks, text helpers and the token sampler shared by the in-process backends
(transformers, llama.cpp)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


class TokenSampler:
    """Seeded sampling of one sequence's next tokens: temperature, then nucleus (top-p).

    Each step draws one uniform number from the sequence's own generator (NumPy's PCG64
    seeded with the request's seed) and picks the token where the cumulative probability
    (tokens by descending probability, ties by id) first exceeds it. The draws do not depend
    on other sequences, so a request samples the same text alone or in any batch: a batched
    row's logits differ from its lone run only by float rounding, which can change a token
    only when a draw lands within that rounding of a boundary between two tokens.
    Probabilities are computed in float64.
    """

    def __init__(self, temperature: float, top_p: float, seed: int) -> None:
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(
                f"sampling needs temperature > 0 and top_p in (0, 1], got {temperature} and {top_p}"
            )
        self.temperature = temperature
        self.top_p = top_p
        self.rng = np.random.Generator(np.random.PCG64(seed))

    @classmethod
    def of(cls, request: Request) -> TokenSampler | None:
        """A fresh sampler for a request, or ``None`` when it decodes greedily."""
        if not request.sampled:
            return None
        return cls(request.temperature, request.top_p, request.seed)

    def next_token(self, logits: np.ndarray) -> int:
        """A token drawn from one sequence's next-token ``logits`` (1-D)."""
        scaled = np.asarray(logits, dtype=np.float64) / self.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        sorted_probs = probs[order]
        cumulative = np.cumsum(sorted_probs)
        if self.top_p < 1:
            # The nucleus: the smallest top set whose mass reaches top_p (at least one token);
            # a token is kept while the mass before it is still below top_p.
            keep = max(1, int(np.count_nonzero(cumulative - sorted_probs < self.top_p)))
            cumulative = cumulative[:keep]
        u = self.rng.random() * cumulative[-1]
        pick = int(np.searchsorted(cumulative, u, side="right"))
        return int(order[min(pick, len(cumulative) - 1)])
