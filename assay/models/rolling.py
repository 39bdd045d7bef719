"""Rolling log-likelihood of a whole text (``RequestKind.LOGLIKELIHOOD_ROLLING``).

A text longer than the model's context is scored over disjoint windows, cut by
lm-evaluation-harness's own functions as its ``loglikelihood_rolling`` cuts them with
``context_len=1`` (``lm_eval.utils.get_rolling_token_windows`` and ``make_disjoint_window``;
these requests come only from lm-eval's tasks, so lm-eval is installed): the first window
predicts the first ``max_len`` tokens after a prefix token (BOS, else EOS); each later window
predicts the next ``max_len`` tokens conditioned on the single token before them, and the last
window, shorter, conditions on as many earlier tokens as fill the context. Every token of the
text is predicted exactly once; the text's log-likelihood is the sum over windows.
"""

from __future__ import annotations

from collections.abc import Sequence

from assay.core.records import ChoiceScore, Completion, Request, RequestKind


def rolling_windows(
    tokens: Sequence[int], prefix_token: int, max_len: int
) -> list[tuple[list[int], list[int]]]:
    """``(context, predicted)`` token windows covering ``tokens`` (none for an empty text);
    each window's context plus its predicted tokens but the last fit ``max_len`` tokens."""
    if max_len < 1:
        raise ValueError(f"rolling windows need max_len >= 1, got {max_len}")
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    windows = get_rolling_token_windows(
        token_list=list(tokens), prefix_token=prefix_token, max_seq_len=max_len, context_len=1
    )
    return [
        (list(context), list(predicted))
        for context, predicted in map(make_disjoint_window, windows)
    ]


def rolling_completion(
    text: str, window_scores: Sequence[Sequence[tuple[float, bool]]]
) -> Completion:
    """The answer to a rolling request: one :class:`ChoiceScore` whose log-probability sums
    every predicted token's over the windows (``n_tokens`` counts them; ``is_greedy``: every
    one was the argmax); ``prompt_tokens`` is the text's token count too."""
    pairs = [pair for window in window_scores for pair in window]
    choice = ChoiceScore(
        text="",
        logprob=float(sum(lp for lp, _ in pairs)),
        n_tokens=len(pairs),
        n_chars=len(text),
        n_bytes=len(text.encode("utf-8")),
        is_greedy=all(greedy for _, greedy in pairs),
    )
    return Completion(prompt_tokens=len(pairs), choices=(choice,))


def is_rolling(request: Request) -> bool:
    return request.kind is RequestKind.LOGLIKELIHOOD_ROLLING


def refusal(backend: str) -> str:
    """The error a backend that does not compute rolling log-likelihoods gives such a request."""
    return (
        f"the {backend} backend does not compute loglikelihood_rolling requests (the "
        "log-likelihood of a whole text over rolling windows, lm-eval's perplexity tasks); "
        "run them with a transformers model (bundled:, gguf: or hf: source)"
    )
