"""Device placement, precision and the out-of-memory batch halving of the transformers client.

This machine has no GPU: the CUDA paths (a model on ``cuda``, half precision on a GPU,
``device_map="auto"`` over several GPUs) cannot run here. What runs is the CPU placement,
``auto`` resolving to the CPU, ``device_map="cpu"`` through accelerate, every refusal of a
bad device or dtype, and the batch halving with the out-of-memory error injected.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from assay.core.records import Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.transformers_backend import TransformersClient
from assay.models.transformers_loading import converted_model_dir

REPO = Path(__file__).resolve().parents[1]
KEY = "smollm2-135m-instruct@v1"
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    """The persistent cache holding the converted bundled model (converted on first use)."""
    path = REPO / ".assay" / "test-cache"
    converted_model_dir(bundled_gguf_path(), path)
    return path


def spec(**serving: object) -> ModelSpec:
    return ModelSpec(KEY, BUNDLED_SOURCE, ServingConfig(**serving))


def gen(instance_id: str, prompt: str, max_tokens: int = 4) -> Request:
    return Request(instance_id, RequestKind.GENERATE, prompt, max_tokens=max_tokens)


PROMPTS = [
    gen("a", "The capital of France is"),
    gen("b", "Once upon a time, in a small village by the sea,"),
    gen("c", "1, 2, 3,"),
    gen("d", "Water boils at"),
    gen("e", "Red, green and"),
]


# -- device and precision ---------------------------------------------------------------------


def test_cpu_and_auto_devices_run_and_agree(cache_dir: Path) -> None:
    cpu = TransformersClient(spec(device="cpu"), cache_dir)
    auto = TransformersClient(spec(), cache_dir)
    assert cpu.device == "cpu"
    assert auto.device == ("cuda" if HAS_CUDA else "cpu")
    requests = PROMPTS[:2]
    on_cpu = cpu.complete(requests)
    on_auto = auto.complete(requests)
    assert all(c.ok for c in on_cpu + on_auto)
    assert [c.text for c in on_cpu] == [c.text for c in on_auto]
    for a, b in zip(on_cpu, on_auto, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-3)


def test_device_map_loads_through_accelerate(cache_dir: Path) -> None:
    plain = TransformersClient(spec(device="cpu"), cache_dir)
    mapped = TransformersClient(spec(device_map="cpu"), cache_dir)
    request = [gen("a", "The capital of France is", 5)]
    got, expected = mapped.complete(request)[0], plain.complete(request)[0]
    assert got.ok and got.text == expected.text
    assert got.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-4)


@pytest.mark.parametrize("device", ["gpu", "tpu:0", "cuda:x", ""])
def test_unknown_device_is_refused_naming_the_version(cache_dir: Path, device: str) -> None:
    with pytest.raises(ValueError) as caught:
        TransformersClient(spec(device=device), cache_dir)
    message = str(caught.value)
    assert KEY in message and repr(device) in message
    assert "expected 'auto', 'cpu'" in message


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_device_without_cuda_is_refused(cache_dir: Path) -> None:
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available") as caught:
            TransformersClient(spec(device=device), cache_dir)
        assert KEY in str(caught.value) and repr(device) in str(caught.value)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_on_cpu_is_refused(cache_dir: Path, dtype: str) -> None:
    with pytest.raises(ValueError, match="needs a GPU") as caught:
        TransformersClient(spec(device="cpu", dtype=dtype), cache_dir)
    message = str(caught.value)
    assert KEY in message and f"dtype={dtype!r}" in message and "device='cpu'" in message
    if not HAS_CUDA:  # "auto" lands on the CPU here, so it is refused the same way
        with pytest.raises(ValueError, match="needs a GPU"):
            TransformersClient(spec(dtype=dtype), cache_dir)


def test_device_map_with_an_explicit_device_is_refused(cache_dir: Path) -> None:
    with pytest.raises(ValueError, match="device must stay 'auto'") as caught:
        TransformersClient(spec(device="cpu", device_map="auto"), cache_dir)
    assert KEY in str(caught.value)


def test_placement_keys_leave_default_serving_dicts_unchanged() -> None:
    # The five keys written before placement existed; cache keys digest this dict.
    legacy = {"chat_template", "system_prompt", "dtype", "batch_size", "max_context"}
    assert set(ServingConfig().to_dict()) == legacy
    placed = ServingConfig(device="cuda:1", device_map=None)
    assert placed.to_dict()["device"] == "cuda:1"
    assert ServingConfig.from_dict(placed.to_dict()) == placed
    mapped = ServingConfig(device_map="auto")
    assert set(mapped.to_dict()) == legacy | {"device_map"}
    assert ServingConfig.from_dict(mapped.to_dict()) == mapped


# -- batch halving on out-of-memory -----------------------------------------------------------
#
# No GPU exists here, so a GPU running out of memory is simulated: the client's forward pass
# raises the real exception type (or a RuntimeError worded as CUDA words it) whenever a batch
# has more rows than the "GPU" can hold. Everything else is the real model.


class TightMemoryClient(TransformersClient):
    """Raises an out-of-memory error for forward passes over more than ``capacity`` rows."""

    capacity = 2
    error: type[Exception] | None = None
    message = "CUDA out of memory. Tried to allocate 2.00 GiB"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.raised: list[int] = []  # batch rows of each refused forward pass

    def _forward(self, lm, ids, mask, positions, cache, logits_to_keep: int = 0):
        if ids.shape[0] > self.capacity:
            self.raised.append(int(ids.shape[0]))
            raise (self.error or torch.OutOfMemoryError)(self.message)
        return super()._forward(lm, ids, mask, positions, cache, logits_to_keep)


def test_out_of_memory_halves_the_batch_and_keeps_it_small(cache_dir: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="assay.models.transformers_backend")
    tight = TightMemoryClient(spec(batch_size=8), cache_dir)
    got = tight.complete(PROMPTS)
    # Five rows fit the bound of 8 but not the memory: halved to 2 once, then batches 2, 2, 1.
    assert tight.raised == [5]
    assert sorted(c.batch_size for c in got) == [1, 2, 2, 2, 2]
    assert "out of memory on a batch of 5; retrying with at most 2" in caplog.text
    # Batching does not change greedy results, so the unconstrained run is the reference.
    roomy = TransformersClient(spec(batch_size=8), cache_dir).complete(PROMPTS)
    for small, reference in zip(got, roomy, strict=True):
        assert small.ok and small.text == reference.text
        assert small.token_logprobs == pytest.approx(reference.token_logprobs, abs=1e-4)
    # The smaller size holds for the rest of a call; the next call starts from the bound.
    tight.complete(PROMPTS[:3])
    assert tight.raised == [5, 3]


def test_out_of_memory_runtime_error_message_also_halves(cache_dir: Path) -> None:
    tight = TightMemoryClient(spec(batch_size=4), cache_dir)
    tight.error = RuntimeError
    tight.message = "CUDA error: out of memory"
    got = tight.complete(PROMPTS[:4])
    assert tight.raised == [4]
    assert all(c.ok and c.batch_size == 2 for c in got)


def test_out_of_memory_halves_loglikelihood_batches(cache_dir: Path) -> None:
    requests = [
        Request("q1", RequestKind.LOGLIKELIHOOD, "The capital of France is", (" Paris", " Rome")),
        Request("q2", RequestKind.LOGLIKELIHOOD, "The sky is", (" blue", " a shade of green")),
        Request("q3", RequestKind.LOGLIKELIHOOD, "I like to drink", (" tea", " hot coffee")),
    ]
    tight = TightMemoryClient(spec(batch_size=8), cache_dir)
    got = tight.complete(requests)
    # Six choices (three contexts) refused; the bound halves to 3 choices, one request each.
    assert tight.raised == [3]
    assert [c.batch_size for c in got] == [1, 1, 1]
    expected = TransformersClient(spec(batch_size=8), cache_dir).complete(requests)
    for small, reference in zip(got, expected, strict=True):
        assert [c.text for c in small.choices] == [c.text for c in reference.choices]
        for a, b in zip(small.choices, reference.choices, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert (a.n_tokens, a.is_greedy) == (b.n_tokens, b.is_greedy)


def test_out_of_memory_at_batch_size_one_fails_the_request(cache_dir: Path) -> None:
    tight = TightMemoryClient(spec(batch_size=2), cache_dir)
    tight.capacity = 0
    got = tight.complete(PROMPTS[:2])
    assert tight.raised == [2, 1, 1]
    for completion in got:
        assert completion.error is not None
        assert "out of memory even at batch size 1" in completion.error


def test_other_batch_errors_run_rows_alone_without_halving(cache_dir: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="assay.models.transformers_backend")
    tight = TightMemoryClient(spec(batch_size=8), cache_dir)
    tight.error = RuntimeError
    tight.message = "shape mismatch in a bad batch"
    got = tight.complete(PROMPTS)
    assert tight.raised == [5]
    assert all(c.ok and c.batch_size == 1 for c in got)
    assert "out of memory" not in caplog.text
