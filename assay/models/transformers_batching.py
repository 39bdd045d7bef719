"""How the transformers client cuts requests into batches: rows per request kind, the
batch order, shared prompt prefixes, left padding, stop sequences and out-of-memory handling."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from assay.models.local_requests import TokenSampler, find_stop
from assay.models.transformers_loading import LoadedModel

if TYPE_CHECKING:
    from assay.models.prompt_logprobs import PromptLogprobs

# A generation batch whose prompts share at least this many leading tokens computes them once;
# below it the extra forward pass costs more than the repeated prefix. Rows opening with this
# many equal tokens are also kept in one batch (see ``generation_order``).
MIN_SHARED_PREFIX = 32
# On the CPU a forward pass costs about its tokens plus a fixed part (every weight is read once)
# worth some 40 token positions of a batch, so a shared prefix pays off as soon as the tokens it
# saves, (rows - 1) x prefix length, reach this many: a 16-row batch sharing 12 tokens of
# instructions gains, a 2-row batch sharing 32 tokens does not (measured with the bundled
# model, benchmarks/bench_adapters.py). Not measured on a GPU, where tokens are cheap against
# the fixed part: the length rule above stays there.
CPU_MIN_SAVED_TOKENS = 48


@dataclass
class GenRow:
    index: int  # position in the caller's request list
    prompt_ids: list[int]
    max_new: int
    stop: tuple[str, ...]
    # Sampling (temperature 0: greedy). The row's own generator makes its draws independent
    # of the batch it runs in.
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    @property
    def weight(self) -> int:
        return 1

    def sampler(self) -> TokenSampler | None:
        """A fresh sampler for this row, or ``None`` when it decodes greedily."""
        if self.temperature <= 0:
            return None
        return TokenSampler(self.temperature, self.top_p, self.seed)


@dataclass
class LLGroup:
    """Continuations of one request that share the same context tokens."""

    context_ids: list[int]
    choice_indices: list[int]
    continuation_ids: list[list[int]]


@dataclass
class LLRow:
    index: int
    groups: list[LLGroup]
    continuations: tuple[str, ...]
    # A rolling request (the whole text scored over windows, ``assay.models.rolling``): its
    # text; each group is one window with one continuation, the window's predicted tokens.
    rolling_text: str | None = None

    @property
    def n_choices(self) -> int:
        return len(self.continuations)

    @property
    def weight(self) -> int:
        return len(self.groups) if self.rolling_text is not None else self.n_choices

    @property
    def prefix_len(self) -> int:
        return max((len(g.context_ids) for g in self.groups), default=0)


@dataclass
class PromptRow:
    """A text to score token by token; ``ids`` are what the model sees (BOS, truncation)."""

    index: int
    text: str
    ids: list[int]
    spans: list[tuple[int, int]]  # character span of each listed token of ``text``
    n_hidden: int  # leading ids not listed as tokens (the BOS)
    n_dropped: int  # listed tokens before the context window, left unscored

    @property
    def weight(self) -> int:
        return 1


def left_pad(
    sequences: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids left-padded to one width, with the attention mask and position ids, so every
    row ends at the last column (where the next token is predicted)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (the typed one, or a RuntimeError saying so)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def prompt_logprobs_of(row: PromptRow, values: list, tops: list) -> PromptLogprobs:
    from assay.models.prompt_logprobs import PromptLogprobs

    if len(values) != len(row.spans):  # a bookkeeping slip would misalign every offset
        raise RuntimeError(
            f"scored {len(values)} tokens of text {row.index}, expected {len(row.spans)}"
        )
    return PromptLogprobs(
        tokens=tuple(row.text[a:b] for a, b in row.spans),
        text_offset=tuple(a for a, _ in row.spans),
        token_logprobs=tuple(values),
        top_logprobs=tuple(tops),
    )


def generation_order(rows: list[GenRow]) -> list[GenRow]:
    """Generation rows in batch order: longest first, so padding within a batch stays small and
    memory trouble shows early, except that rows whose prompts open with the same
    ``MIN_SHARED_PREFIX`` tokens (one few-shot trial, one template) stay together, so their
    batches can compute the shared prefix once. Groups come in the order of their longest row.
    """
    groups: dict[tuple[int, ...], list[GenRow]] = {}
    for row in sorted(rows, key=lambda r: (-len(r.prompt_ids), r.index)):
        groups.setdefault(tuple(row.prompt_ids[:MIN_SHARED_PREFIX]), []).append(row)
    return [row for group in groups.values() for row in group]


def worth_sharing(shared: int, n_rows: int, device: torch.device) -> bool:
    """Whether computing ``shared`` leading tokens once for ``n_rows`` prompts saves time."""
    if shared < 1:
        return False
    if device.type == "cpu":
        return (n_rows - 1) * shared >= CPU_MIN_SAVED_TOKENS
    return shared >= MIN_SHARED_PREFIX


def shared_prefix_len(prompts: list[list[int]]) -> int:
    """Length of the token prefix common to all prompts, leaving every prompt one token of its
    own (the last prompt token's logits start each row's generation)."""
    first = prompts[0]
    limit = min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def take_batch(rows: list, start: int, limit: int) -> list:
    """Consecutive rows from ``start`` whose weights together fit ``limit`` (at least one)."""
    batch = [rows[start]]
    weight = rows[start].weight
    for row in rows[start + 1 :]:
        if weight + row.weight > limit:
            break
        batch.append(row)
        weight += row.weight
    return batch


def attention_kernels(lm: LoadedModel) -> contextlib.AbstractContextManager:
    """The attention kernels a forward pass may use: on CUDA, every fused kernel but cuDNN's.

    cuDNN's kernel (PyTorch's first choice for half precision on recent GPUs) builds a plan for
    each new sequence length, about 1.4 ms of CPU time per layer call on an H200 with torch
    2.11; decoding changes the length at every step, which made bfloat16 generation six times
    slower than float32 there (``benchmarks/bench_gpu.py``).
    """
    if lm.device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    )


def release_cached_memory() -> None:
    # Blocks freed by the failed batch go back to the device, so the smaller retry can use them.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stop_completed(tokenizer: Any, tokens: list[int], stops: Sequence[str]) -> bool:
    """Whether the text of ``tokens`` contains a stop sequence, decoding little per step.

    Called after each new token, so a stop sequence that appears now ends in the newest
    tokens. Decoding only a tail long enough to hold the longest stop sequence (a character
    can take up to four byte tokens, plus one token of slack for a leading space a tokenizer
    drops when decoding) is enough to rule it out; only when the tail contains a stop is the
    whole text decoded to confirm, so the result is that of the full decode.
    """
    stops = [s for s in stops if s]
    if not stops:
        return False
    window = 4 * max(len(s) for s in stops) + 2
    if len(tokens) > window:
        tail = tokenizer.decode(tokens[-window:])
        if not any(s in tail for s in stops):
            return False
    return find_stop(tokenizer.decode(tokens), stops) >= 0
