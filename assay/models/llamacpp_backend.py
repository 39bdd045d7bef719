"""GGUF models in process through llama.cpp (``llama-cpp-python``, the ``llamacpp`` extra).

Sources (see ``ModelSpec``): ``llamacpp:/path/to/file.gguf``, or ``llamacpp:bundled:<name>``
for the GGUF shipped with assay. The file is memory-mapped, so a load takes about 0.1 s; no
conversion, no torch.

Decisions worth knowing:
- The same request semantics as ``TransformersClient``: greedy decoding, stop sequences cut
  the text, end-of-generation tokens end it; prompts are left-truncated to fit the context;
  a continuation's tokens are those that differ from the context's own tokenization (a token
  spanning the boundary, like " Paris" after "Answer:", belongs to the continuation).
- Results differ slightly from the transformers client on the same file: llama.cpp multiplies
  with the quantized weights (and quantized activations), transformers with dequantized fp32
  weights. The cache key therefore names this backend (``artifact_digest``).
- One sequence at a time, but no prompt is evaluated twice: requests run in lexicographic
  order of their token ids and the KV cache keeps the longest common prefix with the previous
  sequence, so shared few-shot prefixes, and a question's context across its choices, are
  evaluated once. With ``logits_all`` the logits of every evaluated position stay available,
  which is what log-likelihood scoring reads.
- ``serving.dtype`` and ``serving.batch_size`` do not apply (the GGUF fixes the weight types;
  sequences run one by one); ``serving.max_context`` sets the context size.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.digests import digest_json, memoized_file_digest
from assay.models.base import ModelSpec, ProgressCallback
from assay.models.bundled import bundled_gguf_path
from assay.records import ChoiceScore, Completion, Request, RequestKind

SCHEME = "llamacpp"
THREADS_ENV = "ASSAY_LLAMACPP_THREADS"
_INSTALL_HINT = (
    "pip install 'assay[llamacpp]' (or: CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install "
    "llama-cpp-python)"
)


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or an ImportError that says how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise ImportError(
            f"the llama.cpp backend needs the package 'llama-cpp-python', which is not "
            f"importable ({exc}); install it with: {_INSTALL_HINT}"
        ) from exc
    return llama_cpp


def resolve_gguf(source: str) -> Path:
    """The GGUF file of a ``llamacpp:`` source URI."""
    scheme, sep, rest = source.partition(":")
    if scheme != SCHEME or not sep or not rest:
        raise ValueError(
            f"model source {source!r} is not a llama.cpp source "
            f"(expected '{SCHEME}:/path/file.gguf' or '{SCHEME}:bundled:<name>')"
        )
    if rest.startswith("bundled:"):
        return bundled_gguf_path(rest.removeprefix("bundled:"))
    path = Path(rest).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model source {source!r}: no GGUF file at {path}")
    return path.resolve()


@dataclass
class _LoadedModel:
    llm: Any  # llama_cpp.Llama
    lock: threading.Lock  # a llama.cpp context runs one sequence at a time
    vocab: Any
    n_ctx: int
    adds_bos: bool
    fallback_context_id: int  # conditions a continuation whose context has no tokens
    chat_template: str | None
    bos_text: str
    eos_text: str


_LOADED: dict[tuple[str, int], _LoadedModel] = {}
_LOAD_LOCK = threading.Lock()


def _load(path: Path, max_context: int) -> _LoadedModel:
    key = (str(path), max_context)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(path, max_context)
        return _LOADED[key]


def _threads() -> int:
    """Threads from ``$ASSAY_LLAMACPP_THREADS``, else half the cores.

    Half is llama-cpp-python's own default for generation. More is not better on a busy
    machine: llama.cpp's worker threads spin while they wait, and with two cores shared by
    other processes two threads ran several times slower than one.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return max(1, (os.cpu_count() or 2) // 2)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def _load_uncached(path: Path, max_context: int) -> _LoadedModel:
    llama_cpp = import_llama_cpp()
    threads = _threads()

    def load(n_ctx: int) -> Any:
        return llama_cpp.Llama(
            str(path),
            n_ctx=n_ctx,
            n_batch=min(n_ctx, 512),
            n_ubatch=min(n_ctx, 512),
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=True,
            verbose=False,
        )

    llm = load(max_context)
    n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(llm.model))
    if 0 < n_ctx_train < max_context:
        # Never attend beyond what the model was trained on (loading again takes ~0.1 s).
        llm.close()
        llm = load(n_ctx_train)
    n_ctx = llm.n_ctx()
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    bos, eos = llm.token_bos(), llm.token_eos()
    return _LoadedModel(
        llm=llm,
        lock=threading.Lock(),
        vocab=vocab,
        n_ctx=n_ctx,
        adds_bos=bool(llama_cpp.llama_vocab_get_add_bos(vocab)) and bos >= 0,
        fallback_context_id=bos if bos >= 0 else eos,
        chat_template=llm.metadata.get("tokenizer.chat_template"),
        bos_text=_token_text(llm, bos),
        eos_text=_token_text(llm, eos),
    )


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")


class _RequestFailed(Exception):
    """A request that cannot run (too long, malformed); becomes ``Completion.error``."""


@dataclass
class _Prepared:
    index: int
    request: Request
    key: tuple[int, ...]  # token ids the request starts with; requests run sorted by it
    prompt_ids: list[int]  # generation: the (truncated) prompt
    # log-likelihood: per choice, (context ids, continuation ids)
    choice_ids: list[tuple[list[int], list[int]]]


class LlamaCppClient:
    """A ``ModelClient`` running a GGUF file in process with llama.cpp.

    Construction checks the source and the serving config and imports nothing heavy; the
    model is loaded on the first call that needs it.
    """

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        if spec.serving.max_context < 2:
            raise ValueError(f"model {spec.key!r}: serving max_context must be >= 2")
        self.spec = spec
        self.cache_dir = Path(cache_dir)  # digest sidecars; GGUF files load as they are
        self.path = resolve_gguf(spec.source)
        self._digest: str | None = None

    @property
    def artifact_digest(self) -> str:
        """Digest of the GGUF file (weights, tokenizer and chat template) and of the backend."""
        if self._digest is None:
            self._digest = digest_json(
                {
                    "format": "gguf",
                    "sha256": memoized_file_digest(self.path, self.cache_dir),
                    "backend": "llama.cpp",
                }
            )
        return self._digest

    def _loaded(self) -> _LoadedModel:
        lm = _load(self.path, self.spec.serving.max_context)
        if self.spec.serving.chat_template and not lm.chat_template:
            raise ValueError(
                f"model {self.spec.key!r}: serving.chat_template is true but {self.path} "
                "has no chat template"
            )
        return lm

    def render_prompt(self, prompt: str) -> str:
        """The text the model is given for a prompt (chat-wrapped when the spec says so)."""
        serving = self.spec.serving
        if not serving.chat_template:
            return prompt
        lm = self._loaded()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        messages = []
        if serving.system_prompt is not None:
            messages.append({"role": "system", "content": serving.system_prompt})
        messages.append({"role": "user", "content": prompt})
        formatter = Jinja2ChatFormatter(lm.chat_template, lm.eos_text, lm.bos_text)
        return formatter(messages=messages).prompt

    def complete(
        self, requests: Sequence[Request], progress: ProgressCallback | None = None
    ) -> list[Completion]:
        """Run requests in shared-prefix order, one sequence at a time; results align."""
        if not requests:
            return []
        lm = self._loaded()
        results: list[Completion | None] = [None] * len(requests)
        prepared: list[_Prepared] = []
        for i, request in enumerate(requests):
            try:
                prepared.append(self._prepare(lm, i, request))
            except _RequestFailed as exc:
                results[i] = Completion(error=str(exc))
        done = len(requests) - len(prepared)
        prepared.sort(key=lambda p: (p.key, p.index))
        with lm.lock:
            for item in prepared:
                start = time.perf_counter()
                try:
                    if item.request.kind == RequestKind.GENERATE:
                        completion = self._generate(lm, item)
                    else:
                        completion = self._score(lm, item)
                except Exception as exc:
                    lm.llm.reset()  # the KV cache may hold a half-evaluated sequence
                    completion = Completion(error=f"{type(exc).__name__}: {exc}")
                results[item.index] = _timed(completion, time.perf_counter() - start)
                done += 1
                if progress is not None:
                    progress(done, len(requests))
        return [r if r is not None else Completion(error="not run") for r in results]

    # -- request preparation ------------------------------------------------------------------

    def _tokenize(self, lm: _LoadedModel, text: str) -> list[int]:
        # Special-token text is parsed as special tokens, as Hugging Face tokenizers do; a
        # chat-rendered prompt carries its own BOS, raw text gets the vocabulary's default.
        add_bos = lm.adds_bos and not self.spec.serving.chat_template
        return list(lm.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def _prepare(self, lm: _LoadedModel, index: int, request: Request) -> _Prepared:
        budget = lm.n_ctx
        context = self.render_prompt(request.prompt)
        if request.kind == RequestKind.GENERATE:
            if request.max_tokens < 1:
                raise _RequestFailed(
                    f"request {request.instance_id!r}: a generate request needs max_tokens >= 1, "
                    f"got {request.max_tokens}"
                )
            if request.max_tokens >= budget:
                raise _RequestFailed(
                    f"request {request.instance_id!r}: max_tokens={request.max_tokens} leaves no "
                    f"room for the prompt in a context of {budget} tokens"
                )
            ids = self._tokenize(lm, context) or [lm.fallback_context_id]
            ids = ids[-(budget - request.max_tokens) :]
            return _Prepared(index, request, tuple(ids), ids, [])
        if not request.continuations:
            raise _RequestFailed(
                f"request {request.instance_id!r}: a loglikelihood request needs continuations"
            )
        context_ids = self._tokenize(lm, context)
        choices = []
        for continuation in request.continuations:
            full = self._tokenize(lm, context + continuation)
            n_ctx = _common_prefix(context_ids, full)
            ctx, cont = full[:n_ctx] or [lm.fallback_context_id], full[n_ctx:]
            if len(cont) >= budget:
                raise _RequestFailed(
                    f"request {request.instance_id!r}: a continuation of {len(cont)} tokens does "
                    f"not fit a context of {budget} tokens"
                )
            choices.append((ctx, cont))
        longest = max(len(cont) for _, cont in choices)
        choices = [(ctx[-(budget - longest) :], cont) for ctx, cont in choices]
        return _Prepared(index, request, tuple(choices[0][0]), [], choices)

    # -- evaluation -----------------------------------------------------------------------------

    def _evaluate(self, lm: _LoadedModel, ids: list[int]) -> None:
        """Make the KV cache hold exactly ``ids``, evaluating only what is not already there.

        Afterwards ``llm.scores[p]`` holds the logits after position ``p`` for every
        ``p < len(ids)``: rows of the kept prefix were computed on the same tokens before.
        """
        llm = lm.llm
        keep = min(llm.n_tokens, len(ids))
        if keep:
            current = llm.input_ids[:keep]
            differ = np.flatnonzero(current != np.asarray(ids[:keep], dtype=current.dtype))
            keep = int(differ[0]) if differ.size else keep
        llm.n_tokens = keep  # eval() drops the KV cache beyond n_tokens first
        if keep < len(ids):
            llm.eval(ids[keep:])

    def _generate(self, lm: _LoadedModel, item: _Prepared) -> Completion:
        llama_cpp = import_llama_cpp()
        llm, request = lm.llm, item.request
        self._evaluate(lm, item.prompt_ids)
        tokens: list[int] = []
        logprobs: list[float] = []
        while len(tokens) < request.max_tokens:
            logits = llm.scores[llm.n_tokens - 1]
            token = int(np.argmax(logits))
            if llama_cpp.llama_vocab_is_eog(lm.vocab, token):
                break
            tokens.append(token)
            logprobs.append(float(logits[token] - _logsumexp(logits)))
            if request.stop and _find_stop(_decode(llm, tokens), request.stop) >= 0:
                break
            if len(tokens) < request.max_tokens:
                llm.eval([token])
        text = _decode(llm, tokens)
        cut = _find_stop(text, request.stop)
        return Completion(
            text=text if cut < 0 else text[:cut],
            prompt_tokens=len(item.prompt_ids),
            completion_tokens=len(tokens),
            token_logprobs=tuple(logprobs),
        )

    def _score(self, lm: _LoadedModel, item: _Prepared) -> Completion:
        llm = lm.llm
        choices = []
        for text, (ctx, cont) in zip(item.request.continuations, item.choice_ids, strict=True):
            logprob, greedy = 0.0, True
            if cont:
                self._evaluate(lm, ctx + cont)
                rows = llm.scores[len(ctx) - 1 : len(ctx) + len(cont) - 1]
                targets = np.asarray(cont)
                picked = rows[np.arange(len(cont)), targets]
                logprob = float(np.sum(picked - _logsumexp(rows)))
                greedy = bool(np.all(rows.argmax(-1) == targets))
            choices.append(
                ChoiceScore(
                    text=text,
                    logprob=logprob,
                    n_tokens=len(cont),
                    n_chars=len(text),
                    n_bytes=len(text.encode("utf-8")),
                    is_greedy=greedy,
                )
            )
        return Completion(
            prompt_tokens=max(len(ctx) for ctx, _ in item.choice_ids), choices=tuple(choices)
        )


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    """Log-sum-exp over the last axis, in float64 so long vocabularies lose no precision."""
    values = logits.astype(np.float64)
    top = values.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=-1, keepdims=True))).squeeze(-1)


def _decode(llm: Any, tokens: list[int]) -> str:
    return llm.detokenize(tokens).decode("utf-8", errors="replace")


def _find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop sequence in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def _timed(completion: Completion, latency_s: float) -> Completion:
    return dataclasses.replace(completion, latency_s=latency_s, batch_size=1)
