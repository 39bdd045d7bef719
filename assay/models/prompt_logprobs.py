"""Per-token log-probabilities of a whole prompt, for ``/v1/completions`` with ``echo=true``.

``ModelClient`` only scores continuations given a prompt, but an OpenAI ``echo`` reply lists
every prompt token with its log-probability and character offset. Two ways to answer it:

- exact: the wrapped client also implements ``PromptScorer.score_prompts`` (real tokens, real
  top-1 alternatives, one forward pass per batch of texts; ``TransformersClient`` does); the
  server prefers this;
- through ``complete``: the text is cut into word pieces (each piece is its leading whitespace
  plus the following non-space run) and piece ``k`` is scored as the continuation of pieces
  ``0..k-1`` with one ``LOGLIKELIHOOD`` request. The first piece has no context and, as in
  OpenAI's replies, gets ``None``. A piece's value is then exactly what the client reports for
  ``log P(piece | text before it)``, so a client scoring ``prompt + continuation`` whose
  boundary falls between pieces (the usual ``"Answer:" + " B"``) gets the same number over
  HTTP as in process. The "tokens" are pieces, not model tokens, and the cost is one request
  per piece (the prefixes grow, so about quadratic in the prompt length): fine for short
  multiple-choice prompts, slow for long documents. ``top_logprobs`` holds the piece itself
  when the client marks it greedy and is empty otherwise (the argmax is not known).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from assay.core.records import Completion, Request, RequestKind

_PIECE = re.compile(r"\s*\S+|\s+$")


@dataclass(frozen=True, slots=True)
class PromptLogprobs:
    """OpenAI's ``logprobs`` object for an echoed text (values are natural logs)."""

    tokens: tuple[str, ...]
    text_offset: tuple[int, ...]
    token_logprobs: tuple[float | None, ...]
    top_logprobs: tuple[dict[str, float] | None, ...]

    def to_openai(self) -> dict[str, object]:
        return {
            "tokens": list(self.tokens),
            "text_offset": list(self.text_offset),
            "token_logprobs": list(self.token_logprobs),
            "top_logprobs": list(self.top_logprobs),
        }


@runtime_checkable
class PromptScorer(Protocol):
    """Optional extra a ``ModelClient`` may offer: exact per-token scores of whole texts."""

    def score_prompts(self, texts: Sequence[str]) -> list[PromptLogprobs]:
        """Per-token log-probabilities of each text (``None`` where nothing precedes a token
        in the model's input, as for the first token when the tokenizer adds no BOS)."""
        ...


def split_pieces(text: str) -> list[tuple[int, str]]:
    """``(offset, piece)`` for each word piece of ``text``; the pieces concatenate to it."""
    return [(m.start(), m.group()) for m in _PIECE.finditer(text)]


def piece_requests(text: str) -> list[Request]:
    """One log-likelihood request per piece after the first (see the module docstring)."""
    return [
        Request(
            instance_id=f"echo-piece-{offset}",
            kind=RequestKind.LOGLIKELIHOOD,
            prompt=text[:offset],
            continuations=(piece,),
        )
        for offset, piece in split_pieces(text)[1:]
    ]


def assemble_pieces(text: str, completions: Sequence[Completion]) -> PromptLogprobs:
    """Build the echo reply from ``piece_requests(text)``'s completions, in order.

    Raises ``ValueError`` with the client's message when a piece could not be scored.
    """
    pieces = split_pieces(text)
    if len(completions) != max(len(pieces) - 1, 0):
        raise ValueError(f"expected {len(pieces) - 1} piece scores, got {len(completions)}")
    values: list[float | None] = [None] if pieces else []
    tops: list[dict[str, float] | None] = [None] if pieces else []
    for (offset, piece), completion in zip(pieces[1:], completions, strict=True):
        if completion.error is not None or len(completion.choices) != 1:
            reason = completion.error or "no score returned"
            raise ValueError(f"could not score the prompt at character {offset}: {reason}")
        choice = completion.choices[0]
        values.append(choice.logprob)
        tops.append({piece: choice.logprob} if choice.is_greedy else {})
    return PromptLogprobs(
        tokens=tuple(p for _, p in pieces),
        text_offset=tuple(o for o, _ in pieces),
        token_logprobs=tuple(values),
        top_logprobs=tuple(tops),
    )
