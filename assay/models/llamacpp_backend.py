"""GGUF models in process through llama.cpp (``llama-cpp-python``, the ``llamacpp`` extra).

Sources (see ``ModelSpec``): ``llamacpp:/path/to/file.gguf``, or ``llamacpp:bundled:<name>``
for the GGUF shipped with assay. The file is memory-mapped, so a load takes about 0.1 s; no
conversion, no torch.

Decisions worth knowing:
- The same request semantics as ``TransformersClient``: greedy decoding, or seeded sampling
  (temperature, top-p, the request's seed) through the same ``TokenSampler`` on llama.cpp's
  logits rather than llama.cpp's own sampler chain, so a request samples the same way in
  either backend and alone or in a wave; stop sequences cut
  the text, end-of-generation tokens end it; prompts are left-truncated to fit the context;
  a continuation's tokens are those that differ from the context's own tokenization (a token
  spanning the boundary, like " Paris" after "Answer:", belongs to the continuation).
- Results differ slightly from the transformers client on the same file: llama.cpp multiplies
  with the quantized weights (and quantized activations), transformers with dequantized fp32
  weights. The cache key therefore names this backend (``artifact_digest``).
- Requests run in waves of up to ``serving.batch_size`` sequences (a generation request is one
  sequence, a log-likelihood request one per choice) in one llama.cpp context whose KV cache
  is shared by all sequences. Sequences are sorted by token ids and every token position they
  have in common with their predecessor (a few-shot prefix, a question's context across its
  choices) is evaluated once and belongs to all of them; logits are computed only where a
  result needs them. A wave's prompts go through the model in one call, then its generations
  decode together, one token per sequence per call, until each stops.
- Results can differ from a sequence run alone by about as much as quantization moves them
  (tenths of a nat in a log-likelihood): llama.cpp's quantized kernels take another path once a
  call holds more tokens.
- ``serving.dtype`` does not apply (the GGUF fixes the weight types); ``serving.max_context``
  bounds one sequence (and never exceeds the model's training context).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.core.digests import digest_json, memoized_file_digest
from assay.core.records import ChoiceScore, Completion, Request, RequestKind
from assay.core.security import check_model_path
from assay.models.base import ModelSpec, ProgressCallback, library_version
from assay.models.bundled import bundled_gguf_path
from assay.models.local_requests import (
    RequestFailed,
    TokenSampler,
    check_continuation_fits,
    check_generate,
    check_loglikelihood,
    common_prefix_len,
    find_stop,
)
from assay.models.rolling import is_rolling, refusal

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
    check_model_path(str(path), source)  # before the path is looked at
    if not path.is_file():
        raise FileNotFoundError(f"model source {source!r}: no GGUF file at {path}")
    return path.resolve()


@dataclass
class _LoadedModel:
    llm: Any  # llama_cpp.Llama: the weights, the tokenizer and the GGUF metadata
    ctx: Any  # a llama_context whose KV cache all sequences of a wave share
    batch: Any  # a llama_batch with room for ``kv_cells`` tokens of ``max_sequences`` each
    lock: threading.Lock  # one wave at a time per context
    vocab: Any
    n_vocab: int
    seq_budget: int  # tokens one sequence may hold (prompt and generated)
    kv_cells: int  # tokens the shared KV cache holds, all sequences of a wave together
    max_sequences: int
    adds_bos: bool
    fallback_context_id: int  # conditions a continuation whose context has no tokens
    chat_template: str | None
    bos_text: str
    eos_text: str


_LOADED: dict[tuple[str, int, int], _LoadedModel] = {}
_LOAD_LOCK = threading.Lock()
_CLOSE_AT_EXIT = False  # whether _close_all is registered with atexit
# The shared KV cache holds at least this many tokens, so a wave has room for several long
# prompts: about 190 MB for the bundled model, 1 GB for a 7B model with grouped-query attention.
_MIN_KV_CELLS = 8192
# Logit rows one wave may ask for (each is a vocabulary of floats: 0.2 MB for 49k tokens).
_MAX_OUTPUTS = 1024


def _load(path: Path, max_context: int, max_sequences: int) -> _LoadedModel:
    key = (str(path), max_context, max_sequences)
    global _CLOSE_AT_EXIT
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(path, max_context, max_sequences)
            # Only once llama.cpp has loaded something is there anything to free at exit: a
            # failed load (llama-cpp-python missing) must leave no hook that fails at exit.
            if not _CLOSE_AT_EXIT:
                atexit.register(_close_all)
                _CLOSE_AT_EXIT = True
        return _LOADED[key]


def _close_all() -> None:
    """Free every context before its model, while the interpreter can still call llama.cpp.

    Left to garbage collection at exit, the model could go first (the context points into it),
    or llama-cpp-python's own finalizers could run after its module was torn down.
    """
    with _LOAD_LOCK:
        if not _LOADED:
            return
        llama_cpp = import_llama_cpp()
        for lm in _LOADED.values():
            with lm.lock:
                llama_cpp.llama_batch_free(lm.batch)
                llama_cpp.llama_free(lm.ctx)
                lm.llm.close()
        _LOADED.clear()


def _threads() -> int:
    """Threads from ``$ASSAY_LLAMACPP_THREADS``, else all cores.

    Every call is a batch (a wave's prompts, or one token of each of its sequences), and
    batches are compute-bound: on an idle 2-core machine two threads ran the HELM benchmark's
    wave in 13-17 s against 26-37 s for one. On a busy machine set fewer: llama.cpp's worker
    threads spin while they wait, and with the two cores shared by another process two threads
    ran two to three times slower than one.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return max(1, os.cpu_count() or 1)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def _load_uncached(path: Path, max_context: int, max_sequences: int) -> _LoadedModel:
    llama_cpp = import_llama_cpp()
    threads = _threads()
    # The Llama object's own context is only used for tokenizing; a small one will do.
    llm = llama_cpp.Llama(
        str(path), n_ctx=64, n_batch=64, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(llm.model))
    # Never attend beyond what the model was trained on.
    seq_budget = min(max_context, n_ctx_train) if n_ctx_train > 0 else max_context
    max_sequences = min(max_sequences, int(llama_cpp.llama_max_parallel_sequences()))
    kv_cells = max(seq_budget, _MIN_KV_CELLS)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = kv_cells
    params.n_batch = kv_cells  # a wave's prompts go in one call; llama.cpp splits it itself
    params.n_ubatch = min(kv_cells, 512)
    params.n_seq_max = max_sequences
    params.kv_unified = True  # one cache, so a token can belong to several sequences
    # Flash attention skips the cells a sequence does not see, which in a shared cache are most.
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    params.n_threads = threads
    params.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError(f"llama.cpp could not create a context for {path}")
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    bos, eos = llm.token_bos(), llm.token_eos()
    return _LoadedModel(
        llm=llm,
        ctx=ctx,
        batch=llama_cpp.llama_batch_init(kv_cells, 0, max_sequences),
        lock=threading.Lock(),
        vocab=vocab,
        n_vocab=int(llama_cpp.llama_vocab_n_tokens(vocab)),
        seq_budget=seq_budget,
        kv_cells=kv_cells,
        max_sequences=max_sequences,
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


@dataclass
class _Prepared:
    index: int
    request: Request
    prompt_ids: list[int]  # generation: the (truncated) prompt
    # log-likelihood: per choice, (context ids, continuation ids)
    choice_ids: list[tuple[list[int], list[int]]]


@dataclass
class _Sequence:
    """One sequence of a wave: a generation request, or one choice of a log-likelihood one."""

    item: _Prepared
    choice: int  # the choice it scores; -1 for a generation
    ids: list[int]  # tokens it puts in the KV cache before any generated ones

    @property
    def n_context(self) -> int:
        return len(self.item.choice_ids[self.choice][0]) if self.choice >= 0 else len(self.ids)

    @property
    def logit_positions(self) -> range:
        """Positions whose next-token logits the result needs, from the prompt pass."""
        return range(self.n_context - 1, len(self.ids) - (self.choice >= 0))

    @property
    def reserve(self) -> int:
        """KV cells kept free for the tokens it generates."""
        return self.item.request.max_tokens if self.choice < 0 else 0


@dataclass
class _Wave:
    sequences: list[_Sequence]
    entries: int  # distinct token positions of the sequences (shared prefixes counted once)
    outputs: int


def _waves(sequences: list[_Sequence], lm: _LoadedModel) -> list[_Wave]:
    """Sorted sequences cut into waves that fit the context's sequences, cells and outputs."""
    waves: list[_Wave] = []
    current: list[_Sequence] = []
    entries = outputs = reserve = 0
    for seq in sequences:
        shared = common_prefix_len(current[-1].ids, seq.ids) if current else 0
        new_entries = len(seq.ids) - shared
        new_outputs = len(seq.logit_positions)
        fits = (
            len(current) < lm.max_sequences
            and entries + new_entries + reserve + seq.reserve <= lm.kv_cells
            and outputs + new_outputs <= _MAX_OUTPUTS
        )
        if current and not fits:
            waves.append(_Wave(current, entries, outputs))
            current, entries, outputs, reserve = [], 0, 0, 0
            new_entries = len(seq.ids)
        current.append(seq)
        entries += new_entries
        outputs += new_outputs
        reserve += seq.reserve
    if current:
        waves.append(_Wave(current, entries, outputs))
    return waves


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

    @property
    def backend_identity(self) -> dict[str, str]:
        """Backend kind and the llama-cpp-python version (which pins its llama.cpp build)."""
        return {"kind": "llama.cpp", "llama_cpp_python": library_version("llama_cpp_python")}

    def _loaded(self) -> _LoadedModel:
        serving = self.spec.serving
        lm = _load(self.path, serving.max_context, serving.batch_size)
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
        """Run requests in waves of shared-prefix batches; results align with ``requests``."""
        if not requests:
            return []
        lm = self._loaded()
        results: list[Completion | None] = [None] * len(requests)
        sequences: list[_Sequence] = []
        pending: dict[int, int] = {}  # request index -> its sequences not yet run
        scores: dict[int, list[tuple[float, bool] | None]] = {}
        for i, request in enumerate(requests):
            try:
                item = self._prepare(lm, i, request)
            except RequestFailed as exc:
                results[i] = Completion(error=str(exc))
                continue
            if request.kind == RequestKind.GENERATE:
                own = [_Sequence(item, -1, item.prompt_ids)]
            else:
                # An empty continuation scores 0 and needs no sequence.
                scores[i] = [None if cont else (0.0, True) for _, cont in item.choice_ids]
                own = [
                    _Sequence(item, k, ctx + cont)
                    for k, (ctx, cont) in enumerate(item.choice_ids)
                    if cont
                ]
            if own:
                sequences += own
                pending[i] = len(own)
            else:
                results[i] = self._scored(item, scores[i])
        done = len(requests) - len(pending)
        latency = dict.fromkeys(pending, 0.0)
        sequences.sort(key=lambda s: (s.ids, s.item.index, s.choice))
        with lm.lock:
            for wave in _waves(sequences, lm):
                start = time.perf_counter()
                try:
                    outcome = _run_wave(lm, wave)
                    error = None
                except Exception as exc:
                    outcome, error = {}, f"{type(exc).__name__}: {exc}"
                finally:
                    llama_cpp = import_llama_cpp()
                    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(lm.ctx), True)
                # A request's latency: its share of each wave it ran in.
                per_sequence = (time.perf_counter() - start) / len(wave.sequences)
                for seq in wave.sequences:
                    i = seq.item.index
                    latency[i] += per_sequence
                    if error is not None:
                        results[i] = Completion(error=error)
                    elif seq.choice < 0:
                        results[i] = outcome[id(seq)]
                    else:
                        scores[i][seq.choice] = outcome[id(seq)]
                    pending[i] -= 1
                    if pending[i] == 0:
                        if results[i] is None:
                            results[i] = self._scored(seq.item, scores[i])
                        results[i] = dataclasses.replace(
                            results[i], latency_s=latency[i], batch_size=len(wave.sequences)
                        )
                        done += 1
                if progress is not None:
                    progress(done, len(requests))
        return [r if r is not None else Completion(error="not run") for r in results]

    @staticmethod
    def _scored(item: _Prepared, scores: list[tuple[float, bool] | None]) -> Completion:
        """A log-likelihood request's completion from its choices' (logprob, is_greedy)."""
        choices = []
        for text, (_, cont), score in zip(
            item.request.continuations, item.choice_ids, scores, strict=True
        ):
            logprob, greedy = score if score is not None else (0.0, True)
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

    # -- request preparation ------------------------------------------------------------------

    def _tokenize(self, lm: _LoadedModel, text: str) -> list[int]:
        # Special-token text is parsed as special tokens, as Hugging Face tokenizers do; a
        # chat-rendered prompt carries its own BOS, raw text gets the vocabulary's default.
        add_bos = lm.adds_bos and not self.spec.serving.chat_template
        return list(lm.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def _prepare(self, lm: _LoadedModel, index: int, request: Request) -> _Prepared:
        if is_rolling(request):
            raise RequestFailed(f"request {request.instance_id!r}: {refusal('llama.cpp')}")
        budget = lm.seq_budget
        context = self.render_prompt(request.prompt)
        if request.kind == RequestKind.GENERATE:
            check_generate(request, budget)
            ids = self._tokenize(lm, context) or [lm.fallback_context_id]
            ids = ids[-(budget - request.max_tokens) :]
            return _Prepared(index, request, ids, [])
        check_loglikelihood(request)
        context_ids = self._tokenize(lm, context)
        choices = []
        for continuation in request.continuations:
            full = self._tokenize(lm, context + continuation)
            n_ctx = common_prefix_len(context_ids, full)
            ctx, cont = full[:n_ctx] or [lm.fallback_context_id], full[n_ctx:]
            check_continuation_fits(request, len(cont), budget)
            choices.append((ctx, cont))
        longest = max(len(cont) for _, cont in choices)
        choices = [(ctx[-(budget - longest) :], cont) for ctx, cont in choices]
        return _Prepared(index, request, [], choices)


# -- waves ----------------------------------------------------------------------------------------


@dataclass
class _Generation:
    """A generation sequence being decoded."""

    slot: int  # its sequence id in the context
    seq: _Sequence
    position: int  # where its next token goes
    next_token: int = -1
    next_logprob: float = 0.0
    sampler: TokenSampler | None = None  # None: greedy
    tokens: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)


def _run_wave(lm: _LoadedModel, wave: _Wave) -> dict[int, Any]:
    """Run a wave: its prompts in one call, then its generations token by token.

    Returns, by ``id`` of each sequence, a ``Completion`` for a generation and a
    ``(logprob, is_greedy)`` pair for a scored choice.
    """
    batch = lm.batch
    n = 0
    entry_of: list[list[int]] = []  # per sequence, the batch entry of each of its positions
    for j, seq in enumerate(wave.sequences):
        shared = common_prefix_len(wave.sequences[j - 1].ids, seq.ids) if j else 0
        entries = entry_of[j - 1][:shared] if j else []
        for e in entries:  # positions in common with the previous sequence: also ours
            k = batch.n_seq_id[e]
            batch.seq_id[e][k] = j
            batch.n_seq_id[e] = k + 1
        for position in range(shared, len(seq.ids)):
            _set_entry(batch, n, seq.ids[position], position, j, False)
            entries.append(n)
            n += 1
        entry_of.append(entries)
    for j, seq in enumerate(wave.sequences):
        for position in seq.logit_positions:
            batch.logits[entry_of[j][position]] = 1
    flagged = [e for e in range(n) if batch.logits[e]]  # llama.cpp returns rows in this order
    row_of = {e: r for r, e in enumerate(flagged)}
    rows, lse, argmax = _decode(lm, n, len(flagged))

    results: dict[int, Any] = {}
    generations = []
    for j, seq in enumerate(wave.sequences):
        picked = [row_of[entry_of[j][p]] for p in seq.logit_positions]
        if seq.choice >= 0:
            targets = np.asarray(seq.item.choice_ids[seq.choice][1])
            logprob = float(np.sum(rows[picked, targets] - lse[picked]))
            results[id(seq)] = (logprob, bool(np.all(argmax[picked] == targets)))
        else:
            state = _Generation(j, seq, len(seq.ids), sampler=TokenSampler.of(seq.item.request))
            _choose(state, rows, lse, argmax, picked[0])
            generations.append(state)
    for state in _decode_generations(lm, generations):
        request = state.seq.item.request
        text = _detokenize(lm.llm, state.tokens)
        cut = find_stop(text, request.stop)
        results[id(state.seq)] = Completion(
            text=text if cut < 0 else text[:cut],
            prompt_tokens=len(state.seq.ids),
            completion_tokens=len(state.tokens),
            token_logprobs=tuple(state.logprobs),
        )
    return results


def _decode_generations(lm: _LoadedModel, generations: list[_Generation]) -> list[_Generation]:
    """Decoding of a wave's generations together (greedy or seeded sampling), one token each
    per call."""
    llama_cpp = import_llama_cpp()
    active = generations
    while active:
        step = []
        for state in active:
            token = state.next_token
            if llama_cpp.llama_vocab_is_eog(lm.vocab, token):
                continue
            state.tokens.append(token)
            state.logprobs.append(state.next_logprob)
            request = state.seq.item.request
            if len(state.tokens) >= request.max_tokens:
                continue
            if request.stop and find_stop(_detokenize(lm.llm, state.tokens), request.stop) >= 0:
                continue
            step.append(state)
        if not step:
            break
        for b, state in enumerate(step):
            _set_entry(lm.batch, b, state.tokens[-1], state.position, state.slot, True)
            state.position += 1
        rows, lse, argmax = _decode(lm, len(step), len(step))
        for b, state in enumerate(step):
            _choose(state, rows, lse, argmax, b)
        active = step
    return generations


def _set_entry(batch: Any, e: int, token: int, position: int, seq_id: int, logits: bool) -> None:
    batch.token[e] = token
    batch.pos[e] = position
    batch.n_seq_id[e] = 1
    batch.seq_id[e][0] = seq_id
    batch.logits[e] = logits


def _decode(lm: _LoadedModel, n_tokens: int, n_outputs: int) -> tuple[np.ndarray, ...]:
    """Run the first ``n_tokens`` entries of the batch: (logit rows, their log-sum-exp, argmax).

    The rows are a view of llama.cpp's buffer, valid until the next call.
    """
    llama_cpp = import_llama_cpp()
    lm.batch.n_tokens = n_tokens
    code = llama_cpp.llama_decode(lm.ctx, lm.batch)
    if code != 0:
        meaning = {1: "no room in the KV cache", 2: "aborted"}.get(code, "invalid batch or error")
        raise RuntimeError(f"llama_decode failed with code {code} ({meaning})")
    pointer = llama_cpp.llama_get_logits(lm.ctx)
    rows = np.ctypeslib.as_array(pointer, shape=(n_outputs, lm.n_vocab))
    top = rows.max(axis=1, keepdims=True)
    # Sums in float64, so long vocabularies lose no precision.
    lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1, dtype=np.float64))
    return rows, lse, rows.argmax(axis=1)


def _choose(state: _Generation, rows: np.ndarray, lse: np.ndarray, argmax, row: int) -> None:
    # Sampling draws from the row's own seeded sampler (its logits copied out of llama.cpp's
    # buffer first); the log-probability is under the model's distribution either way.
    if state.sampler is not None:
        state.next_token = state.sampler.next_token(np.array(rows[row]))
    else:
        state.next_token = int(argmax[row])
    state.next_logprob = float(rows[row, state.next_token] - lse[row])


def _detokenize(llm: Any, tokens: list[int]) -> str:
    return llm.detokenize(tokens).decode("utf-8", errors="replace")
