"""The llama.cpp client: source resolution, and agreement with the transformers client.

Model-backed tests run the bundled GGUF through both backends and skip when
``llama-cpp-python`` is not installed (it is the optional ``llamacpp`` extra and compiles
llama.cpp from source). The two backends compute on the same Q4_1 weights differently:
transformers on dequantized fp32 weights, llama.cpp with quantized matrix products (its
Q4_1 kernels also round activations to 8 bits). Measured on the bundled model over the first
40 facts_mc items (160 choices): |delta log-likelihood| mean 0.34 nats, 95th percentile 0.79,
max 1.04 (3% of the value on average, at most 16%); the argmax choice agreed on 39 of 40.
The bounds below leave about 50% headroom over those figures; a real scoring mistake (an
off-by-one position, a wrong token) moves log-likelihoods by several nats.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assay.core.records import Request, RequestKind
from assay.evaluate.suite import load_suite
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.factory import build_client
from assay.models.llamacpp_backend import LlamaCppClient, import_llama_cpp, resolve_gguf

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP,
    reason="llama-cpp-python is not installed (optional extra 'llamacpp'; "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python)',
)
# nats; see the module docstring for the measured differences.
MAX_ABS_DELTA = 1.5
MAX_MEAN_ABS_DELTA = 0.5
LLAMACPP_SOURCE = "llamacpp:" + BUNDLED_SOURCE


def test_source_resolution_and_factory(tmp_path: Path, monkeypatch) -> None:
    roots = os.pathsep.join([str(tmp_path), str(bundled_gguf_path().parent)])
    monkeypatch.setenv("ASSAY_MODEL_ROOTS", roots)
    assert resolve_gguf(LLAMACPP_SOURCE) == bundled_gguf_path()
    assert resolve_gguf(f"llamacpp:{bundled_gguf_path()}") == bundled_gguf_path()
    with pytest.raises(FileNotFoundError, match="no GGUF file at"):
        resolve_gguf(f"llamacpp:{tmp_path / 'absent.gguf'}")
    with pytest.raises(ValueError, match=r"not a llama\.cpp source"):
        resolve_gguf("llamacpp:")
    # Building the client loads nothing, so it works without llama-cpp-python too.
    client = build_client(ModelSpec("m@v1", LLAMACPP_SOURCE), tmp_path)
    assert isinstance(client, LlamaCppClient)


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ImportError, match="llama-cpp-python"):
        import_llama_cpp()


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory):
    cache = Path(__file__).resolve().parent.parent / ".assay" / "test-cache"
    serving = ServingConfig(batch_size=8)
    llama = build_client(ModelSpec("lc@v1", LLAMACPP_SOURCE, serving), cache)
    transformers = build_client(ModelSpec("tf@v1", BUNDLED_SOURCE, serving), cache)
    return llama, transformers


def _facts_requests(n: int) -> list[Request]:
    config = load_suite()["facts-mc"]
    instances = config.build().load().instances
    return config.build_requests([i for i in instances if i.split == "test"][:n])


@needs_llama_cpp
def test_choice_loglikelihoods_match_transformers(clients) -> None:
    llama, transformers = clients
    requests = _facts_requests(8)
    ours, theirs = llama.complete(requests), transformers.complete(requests)
    assert all(c.ok for c in ours), [c.error for c in ours]
    agree, deltas = 0, []
    for request, a, b in zip(requests, ours, theirs, strict=True):
        assert [c.text for c in a.choices] == list(request.continuations)
        # Same tokenization: token counts per choice are identical.
        assert [c.n_tokens for c in a.choices] == [c.n_tokens for c in b.choices]
        for x, y in zip(a.choices, b.choices, strict=True):
            assert x.logprob < 0
            deltas.append(abs(x.logprob - y.logprob))
            assert deltas[-1] <= MAX_ABS_DELTA, (request.instance_id, x, y)
        best = [max(range(len(c.choices)), key=lambda k: c.choices[k].logprob) for c in (a, b)]
        agree += best[0] == best[1]
    assert sum(deltas) / len(deltas) <= MAX_MEAN_ABS_DELTA
    assert agree >= len(requests) - 1


@needs_llama_cpp
def test_greedy_generation_matches_transformers(clients) -> None:
    llama, transformers = clients
    config = load_suite()["arithmetic"]
    instances = config.build().load().instances
    test = [i for i in instances if i.split == "test"][:4]
    train = [i for i in instances if i.split == "train"]
    requests = config.build_requests(test, train)
    ours, theirs = llama.complete(requests), transformers.complete(requests)
    assert all(c.ok for c in ours), [c.error for c in ours]
    for request, completion in zip(requests, ours, strict=True):
        assert 1 <= completion.completion_tokens <= request.max_tokens
        assert "\n" not in completion.text  # the stop sequence cut it
        assert len(completion.token_logprobs) == completion.completion_tokens
    same = sum(a.text == b.text for a, b in zip(ours, theirs, strict=True))
    # Near-ties between two tokens may flip under quantized arithmetic; most must agree.
    assert same >= len(requests) - 1, [(a.text, b.text) for a, b in zip(ours, theirs, strict=True)]


@needs_llama_cpp
def test_results_do_not_depend_on_what_ran_before(clients) -> None:
    llama, _ = clients
    requests = _facts_requests(4)
    gen = Request("g", RequestKind.GENERATE, "Question: Name a colour.\nAnswer:", max_tokens=3)
    alone = llama.complete([requests[2]])[0]
    # A different order and a generation in between move the reused KV prefix around.
    mixed = llama.complete([gen, requests[3], requests[2], requests[0]])
    for x, y in zip(alone.choices, mixed[2].choices, strict=True):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-3)
    assert mixed[0].ok and mixed[0].completion_tokens >= 1


@needs_llama_cpp
def test_request_errors_stay_with_their_request(clients) -> None:
    llama, _ = clients
    good = _facts_requests(1)[0]
    too_long = Request("long", RequestKind.GENERATE, "Hi", max_tokens=10**6)
    no_choices = Request("empty", RequestKind.LOGLIKELIHOOD, "Hi")
    out = llama.complete([too_long, good, no_choices])
    assert "max_tokens=1000000" in out[0].error
    assert "needs continuations" in out[2].error
    assert out[1].ok and len(out[1].choices) == len(good.continuations)


@needs_llama_cpp
def test_artifact_digest_names_the_backend(clients, tmp_path) -> None:
    llama, transformers = clients
    # Same file, different arithmetic: the two backends must not share cache entries.
    assert llama.artifact_digest != transformers.artifact_digest
    assert llama.artifact_digest == LlamaCppClient(llama.spec, tmp_path).artifact_digest


@needs_llama_cpp
def test_wave_size_does_not_change_results() -> None:
    cache = Path(__file__).resolve().parent.parent / ".assay" / "test-cache"
    # One sequence per wave against waves of many: prefixes shared across sequences, several
    # sequences per call and generations decoded together must not change what each computes.
    alone = build_client(ModelSpec("lc1@v1", LLAMACPP_SOURCE, ServingConfig(batch_size=1)), cache)
    wide = build_client(ModelSpec("lc16@v1", LLAMACPP_SOURCE, ServingConfig(batch_size=16)), cache)
    scored = _facts_requests(5)  # 20 choice sequences: two waves of 16 and 4
    config = load_suite()["arithmetic"]
    instances = config.build().load().instances
    test = [i for i in instances if i.split == "test"][:4]
    generated = config.build_requests(test, [i for i in instances if i.split == "train"])
    a, b = alone.complete(scored + generated), wide.complete(scored + generated)
    assert all(c.ok for c in a + b), [c.error for c in a + b]
    assert {c.batch_size for c in a} == {1}
    assert max(c.batch_size for c in b) == 16
    deltas = []
    for x, y in zip(a[: len(scored)], b[: len(scored)], strict=True):
        for cx, cy in zip(x.choices, y.choices, strict=True):
            assert cx.n_tokens == cy.n_tokens
            deltas.append(abs(cx.logprob - cy.logprob))
    # llama.cpp's quantized kernels take another path once a call holds more tokens, which moves
    # log-likelihoods by as much as quantization does (measured: up to 0.39 nats, and the wider
    # call was the closer to the transformers client); a wrong mask or position moves them by
    # several nats.
    assert max(deltas) <= 0.6 and sum(deltas) / len(deltas) <= MAX_MEAN_ABS_DELTA
    same = sum(x.text == y.text for x, y in zip(a[len(scored) :], b[len(scored) :], strict=True))
    assert same >= len(generated) - 1


@needs_llama_cpp
def test_progress_counts_every_request(clients) -> None:
    llama, _ = clients
    seen: list[tuple[int, int]] = []
    # Only an empty continuation: scored 0 without running a sequence, still counted as done.
    empty = Request("e", RequestKind.LOGLIKELIHOOD, "Hi", continuations=("",))
    out = llama.complete([empty, *_facts_requests(2)], progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert (out[0].choices[0].logprob, out[0].choices[0].n_tokens) == (0.0, 0)


def test_without_the_package_a_process_exits_cleanly(tmp_path: Path) -> None:
    """A failed load leaves no exit hook behind: no traceback when the interpreter exits."""
    script = f"""
import sys
sys.modules["llama_cpp"] = None  # as if llama-cpp-python were not installed
from pathlib import Path
from assay.models.base import ModelSpec
from assay.models.factory import build_client
from assay.core.records import Request, RequestKind
client = build_client(ModelSpec("lc@v1", {LLAMACPP_SOURCE!r}), Path({str(tmp_path)!r}))
for _ in range(2):
    try:
        client.complete([Request("q", RequestKind.GENERATE, "Hi", max_tokens=1)])
    except ImportError as exc:
        print("refused:", "llama-cpp-python" in str(exc))
"""
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["refused: True", "refused: True"]
    assert done.stderr == ""
