"""Local models through Hugging Face transformers: GGUF files and HF directories, on CPU or GPU.

Sources (see ``ModelSpec``): ``bundled:<name>``, ``gguf:/path/file.gguf`` and ``hf:/path/dir``.
A GGUF file is dequantized once into a plain HF directory under
``<cache_dir>/models/<gguf-sha256>/`` (dequantizing takes tens of seconds, loading the saved
directory about one), and every later load, in any process, reads that directory.

Decisions worth knowing:
- Greedy decoding unless a request asks for sampling (temperature > 0, top-p, a seed): each
  sampling row draws from its own seeded generator (``local_requests.TokenSampler``), so a
  request's result does not depend on which batch it ran in (rows are left-padded with
  position ids from the attention mask), up to float rounding.
- Generation batches keep prompts that open alike together; when a batch's prompts share enough
  leading tokens (a few-shot trial's instructions and examples), that prefix is computed once
  and its KV cache shared by the rows (see ``_prefill``). Enough is ``MIN_SHARED_PREFIX``
  tokens on a GPU; on the CPU, where a forward pass costs mostly its tokens, it is enough that
  the tokens saved, (rows - 1) x prefix, reach ``CPU_MIN_SAVED_TOKENS`` (so a 16-row batch of
  zero-shot prompts sharing only their instructions computes those once).
- A prompt longer than the context window is left-truncated (the start is dropped), as
  lm-evaluation-harness does; a request that cannot fit at all gets ``Completion.error``.
- Generated text stops at end-of-sequence (not included) or at the first stop sequence (the text
  is cut there); ``completion_tokens``/``token_logprobs`` cover the tokens generated up to and
  including the one that completed the stop sequence.
- Log-likelihood: context and continuation are tokenized together; the continuation's tokens are
  those that contain any continuation character (by offsets), so a token spanning the boundary,
  such as " Paris" after "Answer:", belongs to the continuation. The choices of one request share
  one forward pass of the prompt (its KV cache is reused for the continuations); a prompt with
  a single continuation (language-modeling windows) runs as one forward pass of prompt plus
  continuation instead, with logits computed only where continuation tokens are predicted.
- Rolling log-likelihood (``RequestKind.LOGLIKELIHOOD_ROLLING``, lm-eval's perplexity tasks):
  the raw text is tokenized as lm-eval's HFLM tokenizes it and cut into disjoint windows of
  the context budget (``min(serving.max_context, the model's positions)``; see
  ``assay.models.rolling``); each window runs as a one-choice log-likelihood (batched with
  the others) and the answer is one choice summing them.
- Placement: ``ServingConfig.device`` "auto" means CUDA when ``torch.cuda.is_available()``, else
  the CPU; ``device_map`` (e.g. "auto" over several GPUs) is handed to ``from_pretrained``.
  bfloat16/float16 on the CPU is refused, not downgraded: a downgraded run would store float32
  numbers under the half-precision version's cache keys, and half precision on the CPU is slow.
- Batch size: ``ServingConfig.batch_size`` is an upper bound. When a batch runs out of GPU memory
  it is halved and retried (down to 1), and the smaller size holds for the rest of the call's
  requests of that kind (generation and log-likelihood use memory differently, so each starts
  from the bound); each ``Completion.batch_size`` says how many requests shared its batch.
- Prompt scoring (``score_prompts``, the server's exact ``echo`` path): the text as given, with
  the BOS the tokenizer puts before raw text, one forward pass per batch of texts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from assay.core.digests import digest_json, memoized_file_digest
from assay.core.records import ChoiceScore, Completion, Request, RequestKind
from assay.models.base import ModelSpec, ProgressCallback, library_version
from assay.models.local_requests import (
    RequestFailed,
    check_continuation_fits,
    check_generate,
    check_loglikelihood,
    find_stop,
)
from assay.models.rolling import is_rolling, rolling_completion, rolling_windows
from assay.models.transformers_batching import (
    GenRow,
    LLGroup,
    LLRow,
    PromptRow,
    attention_kernels,
    generation_order,
    is_out_of_memory,
    left_pad,
    prompt_logprobs_of,
    release_cached_memory,
    shared_prefix_len,
    stop_completed,
    take_batch,
    worth_sharing,
)
from assay.models.transformers_loading import (
    DTYPES,
    LoadedModel,
    converted_model_dir,
    directory_digest,
    import_transformers,
    load_model,
    resolve_device,
    resolve_source,
)

if TYPE_CHECKING:
    from assay.models.prompt_logprobs import PromptLogprobs

log = logging.getLogger(__name__)


class TransformersClient:
    """A ``ModelClient`` running a local transformers model (``bundled:``, ``gguf:``, ``hf:``).

    Construction checks the source and the serving config (device and dtype included) but loads
    nothing; the model is loaded (and a GGUF converted) on the first call that needs it. It
    also implements ``assay.serving.PromptScorer`` (``score_prompts``).
    """

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        if spec.serving.dtype not in DTYPES:
            raise ValueError(
                f"model {spec.key!r}: serving dtype {spec.serving.dtype!r} is not one of "
                f"{', '.join(DTYPES)}"
            )
        if spec.serving.batch_size < 1 or spec.serving.max_context < 2:
            raise ValueError(
                f"model {spec.key!r}: serving batch_size must be >= 1 and max_context >= 2"
            )
        self.spec = spec
        self.cache_dir = Path(cache_dir)
        self.source = resolve_source(spec.source)
        self.device = resolve_device(spec.key, spec.serving)
        self._digest: str | None = None
        self._dir: Path | None = None

    @property
    def artifact_digest(self) -> str:
        """Digest of weights, tokenizer and chat template; memoized per file on disk.

        For a GGUF source it is the GGUF file's digest: the file embeds the tokenizer and
        the chat template, so they are covered too.
        """
        if self._digest is None:
            if self.source.kind == "gguf":
                file_digest = memoized_file_digest(self.source.path, self.cache_dir)
                self._digest = digest_json({"format": "gguf", "sha256": file_digest})
            else:
                self._digest = directory_digest(self.source.path, self.cache_dir)
        return self._digest

    @property
    def backend_identity(self) -> dict[str, str]:
        """Backend kind, the versions of the libraries that compute, and the device type."""
        return {
            "kind": "transformers",
            "transformers": library_version("transformers"),
            "torch": library_version("torch"),
            "device": self.device.partition(":")[0],
        }

    @property
    def model_dir(self) -> Path:
        """The HF directory the model loads from (a GGUF is converted on first access)."""
        if self._dir is None:
            if self.source.kind == "gguf":
                self._dir = converted_model_dir(self.source.path, self.cache_dir)
            else:
                self._dir = self.source.path
        return self._dir

    def _loaded(self) -> LoadedModel:
        serving = self.spec.serving
        loaded = load_model(self.model_dir, serving.dtype, self.device, serving.device_map)
        if serving.chat_template and not loaded.tokenizer.chat_template:
            raise ValueError(
                f"model {self.spec.key!r}: serving.chat_template is true but the tokenizer of "
                f"{self.spec.source!r} has no chat template"
            )
        return loaded

    def render_prompt(self, prompt: str) -> str:
        """The text the model is given for a prompt (chat-wrapped when the spec says so)."""
        serving = self.spec.serving
        if not serving.chat_template:
            return prompt
        messages = []
        if serving.system_prompt is not None:
            messages.append({"role": "system", "content": serving.system_prompt})
        messages.append({"role": "user", "content": prompt})
        return self._loaded().tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def complete(
        self, requests: Sequence[Request], progress: ProgressCallback | None = None
    ) -> list[Completion]:
        """Run requests in length-sorted batches; results align with ``requests``."""
        results: list[Completion | None] = [None] * len(requests)
        if not requests:
            return []
        lm = self._loaded()
        gen_rows, ll_rows, failures = self._rows(lm, requests)
        for i, message in failures.items():
            results[i] = Completion(error=message)
        done = len(failures)

        def finish(row: Any, completion: Completion, latency_s: float, size: int) -> None:
            results[row.index] = dataclasses.replace(
                completion, latency_s=latency_s, batch_size=size
            )

        def fail(row: Any, message: str) -> None:
            results[row.index] = Completion(error=message)

        def batch_done(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, len(requests))

        self._run_rows(lm, gen_rows, self._generate_batch, finish, fail, batch_done)
        self._run_rows(lm, ll_rows, self._loglikelihood_batch, finish, fail, batch_done)
        return [r if r is not None else Completion(error="not run") for r in results]

    def plan(self, requests: Sequence[Request]) -> list[int]:
        """Indices of ``requests`` in the order :meth:`complete` batches them when given all.

        A caller that hands requests over in parts (``CachedClient`` commits one chunk at a
        time) sends them in this order, so each part holds neighbours of one length sort over
        the whole set, not of a sort within the part. Requests that would fail come first.
        """
        if not requests:
            return []
        gen_rows, ll_rows, failures = self._rows(self._loaded(), requests)
        return [*failures, *(r.index for r in gen_rows), *(r.index for r in ll_rows)]

    def _rows(
        self, lm: LoadedModel, requests: Sequence[Request]
    ) -> tuple[list[GenRow], list[LLRow], dict[int, str]]:
        """Generation and log-likelihood rows in batch order, and the failures by index."""
        budget = min(self.spec.serving.max_context, lm.max_positions)
        gen_rows: list[GenRow] = []
        ll_rows: list[LLRow] = []
        failures: dict[int, str] = {}
        for i, request in enumerate(requests):
            try:
                if request.kind == RequestKind.GENERATE:
                    gen_rows.append(self._gen_row(lm, i, request, budget))
                elif is_rolling(request):
                    ll_rows.append(self._rolling_row(lm, i, request, budget))
                else:
                    ll_rows.append(self._ll_row(lm, i, request, budget))
            except RequestFailed as exc:
                failures[i] = str(exc)
        ll_rows.sort(key=lambda r: (-r.prefix_len, r.index))
        return generation_order(gen_rows), ll_rows, failures

    def score_prompts(self, texts: Sequence[str]) -> list[PromptLogprobs]:
        """Exact log-probability of every token of each text, for an OpenAI ``echo`` reply.

        Each text is scored as given (never chat-wrapped), after the BOS the tokenizer puts
        before raw text, in batches of one forward pass each. A token's value is
        ``log P(token | the tokens before it)``; the first token's is ``None`` unless a BOS
        precedes it. A text longer than the context window keeps its last tokens; those before
        the window, and the first one in it, get ``None``. ``top_logprobs`` holds the top-1
        alternative. Raises ``ValueError`` naming the text when it cannot be scored.
        """
        lm = self._loaded()
        budget = min(self.spec.serving.max_context, lm.max_positions)
        results: list[PromptLogprobs | None] = [None] * len(texts)
        rows: list[PromptRow] = []
        for i, text in enumerate(texts):
            row = self._prompt_row(lm, i, text, budget)
            if len(row.ids) < 2:  # nothing conditions the only token: no forward pass needed
                results[i] = prompt_logprobs_of(
                    row, [None] * len(row.spans), [None] * len(row.spans)
                )
            else:
                rows.append(row)

        def finish(row: PromptRow, scored: PromptLogprobs, _latency: float, _size: int) -> None:
            results[row.index] = scored

        def fail(row: PromptRow, message: str) -> None:
            raise ValueError(f"could not score text {row.index} ({len(row.ids)} tokens): {message}")

        rows.sort(key=lambda r: (-len(r.ids), r.index))
        self._run_rows(lm, rows, self._prompt_batch, finish, fail, lambda n: None)
        return [r for r in results if r is not None]

    # -- request preparation ------------------------------------------------------------------

    def _encode(self, lm: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of model-ready text and each token's character span (BOS spans nothing)."""
        tok = lm.tokenizer
        if tok.is_fast:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, spans = list(enc.input_ids), [tuple(s) for s in enc.offset_mapping]
        else:
            ids, spans = list(tok(text, add_special_tokens=False).input_ids), []
        # A chat-rendered prompt carries its own special tokens; raw text gets the tokenizer's.
        if lm.adds_bos and not self.spec.serving.chat_template:
            ids, spans = [lm.tokenizer.bos_token_id, *ids], [(0, 0), *spans]
        return ids, spans

    def _gen_row(self, lm: LoadedModel, index: int, request: Request, budget: int) -> GenRow:
        check_generate(request, budget)
        ids, _ = self._encode(lm, self.render_prompt(request.prompt))
        if not ids:
            ids = [lm.fallback_context_id]
        keep = budget - request.max_tokens
        if not request.sampled:
            return GenRow(index, ids[-keep:], request.max_tokens, request.stop)
        return GenRow(
            index,
            ids[-keep:],
            request.max_tokens,
            request.stop,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
        )

    def _ll_row(self, lm: LoadedModel, index: int, request: Request, budget: int) -> LLRow:
        check_loglikelihood(request)
        context = self.render_prompt(request.prompt)
        groups: dict[tuple[int, ...], LLGroup] = {}
        for j, continuation in enumerate(request.continuations):
            ctx_ids, cont_ids = self._split(lm, context, continuation)
            group = groups.setdefault(tuple(ctx_ids), LLGroup(ctx_ids, [], []))
            group.choice_indices.append(j)
            group.continuation_ids.append(cont_ids)
        for group in groups.values():
            longest = max(len(c) for c in group.continuation_ids)
            check_continuation_fits(request, longest, budget)
            # Every choice of a group conditions on the same (possibly truncated) context.
            group.context_ids = group.context_ids[-(budget - longest) :]
        return LLRow(index, list(groups.values()), request.continuations)

    def _rolling_row(self, lm: LoadedModel, index: int, request: Request, budget: int) -> LLRow:
        """The windows of a rolling request, tokenized as lm-eval's HFLM does: the raw text
        (never chat-wrapped) with the tokenizer's default special tokens unless it already
        starts with the prefix token (BOS, else EOS), which also conditions the first window;
        windows of ``budget`` tokens (see ``assay.models.rolling``)."""
        tok = lm.tokenizer
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if prefix is None:
            raise RequestFailed(
                f"request {request.instance_id!r}: the tokenizer has neither a BOS nor an EOS "
                "token to condition a rolling window's first token on"
            )
        text = request.prompt
        special = not text.startswith(tok.decode([prefix]))
        ids = list(tok(text, add_special_tokens=special).input_ids)
        windows = rolling_windows(ids, int(prefix), budget)
        groups = [LLGroup(list(ctx), [k], [list(pred)]) for k, (ctx, pred) in enumerate(windows)]
        return LLRow(index, groups, ("",) * len(groups), rolling_text=text)

    def _split(self, lm: LoadedModel, context: str, continuation: str) -> tuple[list, list]:
        """Context tokens and continuation tokens of ``context + continuation``."""
        ids, spans = self._encode(lm, context + continuation)
        if spans:
            # Context tokens: the leading tokens lying wholly inside the context text.
            n_ctx = 0
            while n_ctx < len(ids) and spans[n_ctx][1] <= len(context):
                n_ctx += 1
            ctx_ids, cont_ids = ids[:n_ctx], ids[n_ctx:]
        else:
            ctx_ids, _ = self._encode(lm, context)
            if ids[: len(ctx_ids)] == ctx_ids:
                cont_ids = ids[len(ctx_ids) :]
            else:  # the boundary merged into one token: fall back to separate encodings
                cont_ids = list(lm.tokenizer(continuation, add_special_tokens=False).input_ids)
        if not ctx_ids:
            ctx_ids = [lm.fallback_context_id]
        return ctx_ids, cont_ids

    def _prompt_row(self, lm: LoadedModel, index: int, text: str, budget: int) -> PromptRow:
        tok = lm.tokenizer
        if tok.is_fast:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, spans = list(enc.input_ids), [(int(a), int(b)) for a, b in enc.offset_mapping]
        else:
            # No offsets from a slow tokenizer: each token spans what it adds to the decoded
            # prefix (quadratic, but slow tokenizers are rare in transformers 5).
            ids = list(tok(text, add_special_tokens=False).input_ids)
            ends = [len(tok.decode(ids[: k + 1])) for k in range(len(ids))]
            spans = list(zip([0, *ends[:-1]], ends, strict=True))
        hidden = [tok.bos_token_id] if lm.adds_bos and ids else []
        full = hidden + ids
        dropped = max(0, len(full) - budget)
        return PromptRow(
            index=index,
            text=text,
            ids=full[dropped:],
            spans=spans,
            n_hidden=max(0, len(hidden) - dropped),
            n_dropped=max(0, dropped - len(hidden)),
        )

    # -- batches --------------------------------------------------------------------------------

    def _run_rows(self, lm, rows, runner, finish, fail, batch_done) -> None:
        """Run ``rows`` in batches whose weight (requests, or choices) stays within a limit.

        The limit starts at ``serving.batch_size``. A batch that runs out of accelerator memory
        is retried with the limit halved (the smaller limit holds for the rest of the rows);
        a single row that still does not fit fails with the error.
        """
        limit = self.spec.serving.batch_size
        start = 0
        while start < len(rows):
            batch = take_batch(rows, start, limit)
            weight = sum(row.weight for row in batch)
            outcome = self._run_batch(lm, batch, runner, limit, finish, fail)
            if outcome is not None:  # out of memory
                shrunk = min(limit, weight) // 2
                release_cached_memory()
                if shrunk >= 1:
                    log.warning(
                        "model %s: out of memory on a batch of %d; retrying with at most %d",
                        self.spec.key,
                        weight,
                        shrunk,
                    )
                    limit = shrunk
                    continue
                for row in batch:
                    fail(row, f"out of memory even at batch size 1: {outcome}")
            start += len(batch)
            batch_done(len(batch))

    def _run_batch(self, lm, batch, runner, limit, finish, fail) -> str | None:
        """Run one batch; returns the message of an out-of-memory error instead of results.

        Any other failure of the whole batch runs its rows alone, so one bad row stays alone.
        """
        start = time.perf_counter()
        try:
            outputs = runner(lm, batch, limit)
        except Exception as exc:
            if is_out_of_memory(exc):
                return f"{type(exc).__name__}: {exc}"
            if len(batch) == 1:
                fail(batch[0], f"{type(exc).__name__}: {exc}")
                return None
            for row in batch:
                if self._run_batch(lm, [row], runner, limit, finish, fail) is not None:
                    fail(row, f"out of memory running alone after the batch failed: {exc}")
            return None
        per_row = (time.perf_counter() - start) / len(batch)
        for row, output in zip(batch, outputs, strict=True):
            finish(row, output, per_row, len(batch))
        return None

    def _forward(self, lm: LoadedModel, ids, mask, positions, cache, logits_to_keep: int = 0):
        """One forward pass; ``cache`` None runs without a KV cache (none kept or built)."""
        cache_args = {} if cache is None else {lm.cache_kwarg: cache}
        with attention_kernels(lm):
            return lm.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=cache is not None,
                logits_to_keep=logits_to_keep,
                **cache_args,
            )

    @torch.inference_mode()
    def _generate_batch(self, lm: LoadedModel, rows: list[GenRow], _limit: int) -> list:
        """Decode ``rows`` together; finished rows leave the batch (and its cache).

        Greedy rows take the argmax; sampling rows draw from their own seeded sampler (see
        ``TokenSampler``). A token's log-probability is under the model's distribution
        (before temperature and top-p), as OpenAI-compatible servers report it.
        """
        out, mask, positions = self._prefill(lm, [r.prompt_ids for r in rows])
        tokens: list[list[int]] = [[] for _ in rows]
        logprobs: list[list[float]] = [[] for _ in rows]
        samplers = [r.sampler() for r in rows]
        active = list(range(len(rows)))  # the row of ``rows`` behind each batch row
        for _ in range(max(r.max_new for r in rows)):
            logits = out.logits[:, -1, :].float()
            chosen = logits.argmax(-1)
            for b, i in enumerate(active):
                sampler = samplers[i]
                if sampler is not None:
                    chosen[b] = sampler.next_token(logits[b].cpu().numpy())
            chosen_lp = (logits.gather(-1, chosen[:, None])[:, 0] - logits.logsumexp(-1)).tolist()
            keep = []
            for b, token in enumerate(chosen.tolist()):
                i = active[b]
                if token in lm.eos_ids:
                    continue
                tokens[i].append(token)
                logprobs[i].append(chosen_lp[b])
                if len(tokens[i]) < rows[i].max_new and not stop_completed(
                    lm.tokenizer, tokens[i], rows[i].stop
                ):
                    keep.append(b)
            if not keep:
                break
            cache = out[lm.cache_kwarg]
            step = chosen[:, None].to(lm.device)
            if len(keep) < len(active):
                # Rows that finished stop costing compute: drop them from the batch and cache.
                # (A CPU index serves cache layers on any device, as under a device_map.)
                cache.batch_select_indices(torch.tensor(keep))
                index = torch.tensor(keep, device=lm.device)
                step, mask, positions = step[index], mask[index], positions[index]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            positions = positions[:, -1:] + 1
            out = self._forward(lm, step, mask, positions, cache)
        completions = []
        for b, row in enumerate(rows):
            text = lm.tokenizer.decode(tokens[b])
            cut = find_stop(text, row.stop)
            completions.append(
                Completion(
                    text=text if cut < 0 else text[:cut],
                    prompt_tokens=len(row.prompt_ids),
                    completion_tokens=len(tokens[b]),
                    token_logprobs=tuple(logprobs[b]),
                )
            )
        return completions

    def _prefill(
        self, lm: LoadedModel, prompts: list[list[int]]
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Forward the prompts of a generation batch: (output, attention mask, position ids).

        When the prompts share a long token prefix (a few-shot trial's instructions and
        examples), the prefix runs once at batch 1 and its KV cache is repeated per row; the
        rows' own suffixes then run left-padded after it. Pad columns sit between the prefix
        and a row's suffix, masked out, and each row's positions continue from the prefix, so
        every row computes what it would alone. Otherwise the whole prompts run left-padded.
        """
        transformers = import_transformers()
        cache = transformers.DynamicCache(config=lm.model.config)
        shared = shared_prefix_len(prompts) if len(prompts) > 1 else 0
        # Sliding-window layers keep only the window, so a repeated prefix cache could not line
        # up with the full-length mask; such models run whole prompts.
        plain = all(type(layer) is transformers.cache_utils.DynamicLayer for layer in cache.layers)
        if not worth_sharing(shared, len(prompts), lm.device) or not plain:
            ids, mask, positions = left_pad(prompts, lm.pad_id, lm.device)
            return self._forward(lm, ids, mask, positions, cache, logits_to_keep=1), mask, positions
        prefix = torch.tensor([prompts[0][:shared]], device=lm.device)
        prefix_positions = torch.arange(shared, device=lm.device)[None, :]
        prefix_mask = torch.ones_like(prefix)
        cache = self._forward(lm, prefix, prefix_mask, prefix_positions, cache, logits_to_keep=1)[
            lm.cache_kwarg
        ]
        cache.batch_repeat_interleave(len(prompts))
        ids, suffix_mask, suffix_positions = left_pad(
            [p[shared:] for p in prompts], lm.pad_id, lm.device
        )
        mask = torch.cat([prefix_mask.expand(len(prompts), -1), suffix_mask], dim=1)
        positions = suffix_positions + shared
        return self._forward(lm, ids, mask, positions, cache, logits_to_keep=1), mask, positions

    @torch.inference_mode()
    def _loglikelihood_batch(self, lm: LoadedModel, rows: list[LLRow], limit: int) -> list:
        """Score all choices of ``rows``, at most ``limit`` choices per forward pass.

        A context with several choices is computed once (see ``_score_shared``); a context
        with one choice (a language-modeling window, or a choice whose first token merged
        with the context's end differently from its siblings') runs whole with its choice
        (see ``_score_whole``): sharing saves nothing there and would cost a second pass.
        """
        groups = [g for row in rows for g in row.groups]
        # Per (group, choice): list of (logprob, is_argmax) for each continuation token.
        scored: dict[tuple[int, int], list[tuple[float, bool]]] = {}
        shared: list[tuple[int, LLGroup]] = []
        whole: list[tuple[int, list[int]]] = []  # (group, its one continuation)
        for g, group in enumerate(groups):
            if len(group.continuation_ids) > 1:
                shared.append((g, group))
            elif group.continuation_ids[0]:
                whole.append((g, group.continuation_ids[0]))
            else:
                scored[g, 0] = []  # an empty continuation: log-likelihood 0, nothing to run
        if shared:
            self._score_shared(lm, shared, limit, scored)
        for start in range(0, len(whole), limit):
            self._score_whole(lm, groups, whole[start : start + limit], scored)

        completions = []
        offset = 0
        for row in rows:
            if row.rolling_text is not None:
                windows = [scored[offset + k, 0] for k in range(len(row.groups))]
                completions.append(rolling_completion(row.rolling_text, windows))
                offset += len(row.groups)
                continue
            choices: list[ChoiceScore | None] = [None] * row.n_choices
            for group in row.groups:
                for k, j in enumerate(group.choice_indices):
                    pairs = scored[offset, k]
                    text = row.continuations[j]
                    choices[j] = ChoiceScore(
                        text=text,
                        logprob=float(sum(p for p, _ in pairs)),
                        n_tokens=len(pairs),
                        n_chars=len(text),
                        n_bytes=len(text.encode("utf-8")),
                        is_greedy=all(greedy for _, greedy in pairs),
                    )
                offset += 1
            completions.append(
                Completion(
                    prompt_tokens=max(len(g.context_ids) for g in row.groups),
                    choices=tuple(c for c in choices if c is not None),
                )
            )
        return completions

    def _score_shared(
        self,
        lm: LoadedModel,
        groups: list[tuple[int, LLGroup]],
        limit: int,
        scored: dict[tuple[int, int], list[tuple[float, bool]]],
    ) -> None:
        """Score groups of several choices: one forward of the contexts, one of the rest.

        The contexts are left-padded so they all end at the same position; their KV cache is
        then repeated per choice and the choices' remaining tokens run on top of it, at most
        ``limit`` choices per forward pass. The first token of every choice is scored from the
        context pass, so single-token choices cost nothing beyond it.
        """
        transformers = import_transformers()
        ids, mask, positions = left_pad([g.context_ids for _, g in groups], lm.pad_id, lm.device)
        cache = transformers.DynamicCache(config=lm.model.config)
        out = self._forward(lm, ids, mask, positions, cache, logits_to_keep=1)
        first_logits = out.logits[:, -1, :].float()
        first_lps = (first_logits - first_logits.logsumexp(-1, keepdim=True)).cpu()
        first_argmax = first_logits.argmax(-1).tolist()
        prefix_cache = out[lm.cache_kwarg]

        tails: list[tuple[int, int, int, list[int]]] = []  # (group, batch row, choice, tokens)
        for b, (g, group) in enumerate(groups):
            for k, cont in enumerate(group.continuation_ids):
                if not cont:
                    scored[g, k] = []
                    continue
                scored[g, k] = [(float(first_lps[b, cont[0]]), first_argmax[b] == cont[0])]
                if len(cont) > 1:
                    tails.append((g, b, k, cont))
        for start in range(0, len(tails), limit):
            part = tails[start : start + limit]
            self._score_tails(lm, part, prefix_cache, mask, positions[:, -1], scored)

    def _score_whole(
        self,
        lm: LoadedModel,
        groups: list[LLGroup],
        part: list[tuple[int, list[int]]],
        scored: dict[tuple[int, int], list[tuple[float, bool]]],
    ) -> None:
        """Score one-choice groups with one forward pass of context + continuation each.

        Rows are left-padded, so every continuation's tokens are predicted in the last
        columns; the continuation's last token is not fed (nothing it predicts is scored), and
        logits are computed only for the columns that predict continuation tokens.
        """
        seqs = [groups[g].context_ids + cont[:-1] for g, cont in part]
        ids, mask, positions = left_pad(seqs, lm.pad_id, lm.device)
        keep = max(len(cont) for _, cont in part)
        logits = self._forward(lm, ids, mask, positions, None, logits_to_keep=keep).logits.float()
        # Targets right-aligned like the rows; unused columns point at token 0 and are dropped.
        targets = torch.zeros((len(part), keep), dtype=torch.long)
        for r, (_, cont) in enumerate(part):
            targets[r, keep - len(cont) :] = torch.tensor(cont)
        targets = targets.to(logits.device)
        lps = (logits.gather(-1, targets[..., None])[..., 0] - logits.logsumexp(-1)).tolist()
        greedy = (logits.argmax(-1) == targets).tolist()
        for r, (g, cont) in enumerate(part):
            first = keep - len(cont)
            scored[g, 0] = list(zip(lps[r][first:], greedy[r][first:], strict=True))

    def _score_tails(self, lm, part, prefix_cache, prefix_mask, last_positions, scored) -> None:
        """Score continuation tokens after the first, on a copy of the contexts' KV cache."""
        transformers = import_transformers()
        select = [b for _, b, _, _ in part]
        cache = transformers.DynamicCache(config=lm.model.config)
        for layer_idx, layer in enumerate(prefix_cache.layers):
            # Layers may sit on different GPUs under a device_map.
            index = torch.tensor(select, device=layer.keys.device)
            cache.update(
                layer.keys.index_select(0, index), layer.values.index_select(0, index), layer_idx
            )
        width = max(len(cont) - 1 for *_, cont in part)
        ids = torch.full((len(part), width), lm.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((len(part), width), dtype=torch.long)
        for r, (*_, cont) in enumerate(part):
            ids[r, : len(cont) - 1] = torch.tensor(cont[:-1])
            tail_mask[r, : len(cont) - 1] = 1
        index = torch.tensor(select, device=prefix_mask.device)
        mask = torch.cat([prefix_mask.index_select(0, index), tail_mask.to(prefix_mask.device)], 1)
        positions = (
            last_positions.index_select(0, index)[:, None]
            + 1
            + torch.arange(width, device=last_positions.device)
        )
        logits = self._forward(lm, ids.to(lm.device), mask, positions, cache).logits.float()
        lse = logits.logsumexp(-1)
        argmax = logits.argmax(-1)
        for r, (g, _, k, cont) in enumerate(part):
            targets = torch.tensor(cont[1:], device=logits.device)
            steps = torch.arange(len(targets), device=logits.device)
            lps = (logits[r, steps, targets] - lse[r, steps]).tolist()
            greedy = (argmax[r, steps] == targets).tolist()
            scored[g, k].extend(zip(lps, greedy, strict=True))

    @torch.inference_mode()
    def _prompt_batch(self, lm: LoadedModel, rows: list[PromptRow], _limit: int) -> list:
        """Per-token log-probabilities of several texts from one forward pass."""
        ids, mask, positions = left_pad([r.ids for r in rows], lm.pad_id, lm.device)
        with attention_kernels(lm):
            logits = lm.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
            ).logits
        width = ids.shape[1]
        out = []
        for b, row in enumerate(rows):
            # Column c predicts the token at column c + 1; the row occupies the last columns.
            first = width - len(row.ids)
            row_logits = logits[b, first : width - 1].float()
            lse = row_logits.logsumexp(-1)
            targets = ids[b, first + 1 :].to(row_logits.device)
            values = (row_logits.gather(-1, targets[:, None])[:, 0] - lse).tolist()
            best_logit, best_id = row_logits.max(-1)
            best_lp = best_logit - lse
            tops = [
                {lm.tokenizer.decode([t]): lp}
                for t, lp in zip(best_id.tolist(), best_lp.tolist(), strict=True)
            ]
            # values[k] scores ids[k + 1]. Unscored: the tokens before the window and, unless a
            # BOS leads the window, the window's first token.
            n_none = row.n_dropped + (0 if row.n_hidden else 1)
            out.append(prompt_logprobs_of(row, [None] * n_none + values, [None] * n_none + tops))
        return out
