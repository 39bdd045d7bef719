"""The local transformers client, on the real bundled SmolLM2-135M-Instruct.

The GGUF is converted once into ``<repo>/.assay/test-cache`` (git-ignored) and reused by later
runs; the model is loaded once per process. Prompts are few and short to keep CPU time low.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from assay.core.records import Request, RequestKind
from assay.models import transformers_batching as batching
from assay.models import transformers_loading as loading
from assay.models.base import ModelClient, ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.cache import CachedClient, RequestCache
from assay.models.factory import build_client
from assay.models.transformers_backend import TransformersClient
from assay.models.transformers_loading import converted_model_dir, directory_digest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_cache_dir() -> Path:
    """Persistent cache dir holding the converted bundled model (converted on first use)."""
    cache_dir = REPO / ".assay" / "test-cache"
    converted_model_dir(bundled_gguf_path(), cache_dir)
    return cache_dir


def make_client(cache_dir: Path, **serving: object) -> TransformersClient:
    spec = ModelSpec("smollm2-135m-instruct@v1", BUNDLED_SOURCE, ServingConfig(**serving))
    return TransformersClient(spec, cache_dir)


def gen(instance_id: str, prompt: str, max_tokens: int = 8, stop: tuple[str, ...] = ()):
    return Request(instance_id, RequestKind.GENERATE, prompt, max_tokens=max_tokens, stop=stop)


def ll(instance_id: str, prompt: str, *continuations: str) -> Request:
    return Request(instance_id, RequestKind.LOGLIKELIHOOD, prompt, continuations=continuations)


def reference_loglikelihood(client: TransformersClient, context: str, continuation: str):
    """Unbatched log P(continuation | context): one plain forward pass, no cache, no padding.

    The continuation tokens are the tail of the joint encoding beyond the context's own
    encoding (the examples below are chosen so that this split is unambiguous).
    """
    lm = loading.load_model(client.model_dir, "float32")
    ctx = lm.tokenizer(context, add_special_tokens=False).input_ids
    whole = lm.tokenizer(context + continuation, add_special_tokens=False).input_ids
    assert whole[: len(ctx)] == ctx, "example must split cleanly at the context boundary"
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([whole])).logits[0].float()
    logprobs = logits.log_softmax(-1)
    total, greedy = 0.0, True
    for pos in range(len(ctx), len(whole)):
        total += float(logprobs[pos - 1, whole[pos]])
        greedy &= int(logits[pos - 1].argmax()) == whole[pos]
    return total, len(whole) - len(ctx), greedy


def test_client_satisfies_the_protocol(model_cache_dir: Path) -> None:
    client = build_client(ModelSpec("m@v1", BUNDLED_SOURCE, ServingConfig()), model_cache_dir)
    assert isinstance(client, TransformersClient)
    assert isinstance(client, ModelClient)


def test_generation_max_tokens_and_stop_sequences(model_cache_dir: Path) -> None:
    client = make_client(model_cache_dir, batch_size=4)
    free, stopped = client.complete(
        [gen("free", "1, 2, 3, 4,", max_tokens=6), gen("stop", "1, 2, 3, 4,", 6, stop=(",",))]
    )
    assert free.ok and stopped.ok
    # Counting numbers do not end: all 6 tokens are generated, each with a logprob.
    assert free.completion_tokens == 6
    assert len(free.token_logprobs) == 6
    assert all(lp <= 0.0 for lp in free.token_logprobs)
    assert free.prompt_tokens > 0
    # The stopped text is the free text cut before its first ",", and generation ended there.
    cut = free.text.index(",")
    assert stopped.text == free.text[:cut]
    assert "," not in stopped.text
    assert stopped.completion_tokens < 6
    assert stopped.token_logprobs == free.token_logprobs[: stopped.completion_tokens]


def test_batched_greedy_equals_unbatched(model_cache_dir: Path) -> None:
    requests = [
        gen("a", "The capital of France is", 6),
        gen("b", "Once upon a time, in a small village by the sea,", 6),
        gen("c", "def add(a, b):", 6, stop=("\n\n",)),
        gen("d", "Water boils at", 6),
        gen("e", "Red, green and", 6),
    ]
    batched = make_client(model_cache_dir, batch_size=4).complete(requests)
    alone_client = make_client(model_cache_dir, batch_size=1)
    for request, together in zip(requests, batched, strict=True):
        [alone] = alone_client.complete([request])
        assert together.text == alone.text, request.instance_id
        assert together.completion_tokens == alone.completion_tokens
        assert together.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)
        assert alone.batch_size == 1
    # Five requests in batches of at most four: one batch of four and one of one.
    assert sorted(c.batch_size for c in batched) == [1, 4, 4, 4, 4]


def test_loglikelihood_matches_unbatched_reference(model_cache_dir: Path) -> None:
    client = make_client(model_cache_dir, batch_size=8)
    requests = [
        ll("q1", "The capital of France is", " Paris", " London", " Rome"),
        ll("q2", "Question: What color is the sky?\nAnswer:", " blue", " a shade of green"),
        ll("q3", "I like to drink", " coffee", " café au lait"),
    ]
    results = client.complete(requests)
    for request, completion in zip(requests, results, strict=True):
        assert completion.ok
        assert [c.text for c in completion.choices] == list(request.continuations)
        for choice in completion.choices:
            logprob, n_tokens, greedy = reference_loglikelihood(client, request.prompt, choice.text)
            assert choice.logprob == pytest.approx(logprob, abs=1e-4), choice.text
            assert choice.n_tokens == n_tokens
            assert choice.is_greedy == greedy
            assert choice.n_chars == len(choice.text)
    # Hand counts: " café au lait" has 13 characters, and "é" takes two bytes in UTF-8.
    cafe = results[2].choices[1]
    assert (cafe.n_chars, cafe.n_bytes) == (13, 14)
    # Several requests were packed into one batch.
    assert {c.batch_size for c in results} == {3}


def test_loglikelihood_space_boundary(model_cache_dir: Path) -> None:
    """A trailing space in the prompt joins the continuation's first token (" Paris")."""
    client = make_client(model_cache_dir)
    spaced, plain = client.complete(
        [
            ll("s", "The capital of France is ", "Paris"),
            ll("p", "The capital of France is", " Paris"),
        ]
    )
    assert spaced.choices[0].n_tokens == plain.choices[0].n_tokens == 1
    assert spaced.choices[0].logprob == pytest.approx(plain.choices[0].logprob, abs=1e-5)
    # Character counts stay those of the continuation as given.
    assert (spaced.choices[0].n_chars, plain.choices[0].n_chars) == (5, 6)


def test_chat_template_changes_prompt_and_outputs(model_cache_dir: Path) -> None:
    raw = make_client(model_cache_dir)
    chat = make_client(model_cache_dir, chat_template=True)
    custom = make_client(model_cache_dir, chat_template=True, system_prompt="Answer tersely.")
    question = "What is the capital of France?"
    assert raw.render_prompt(question) == question
    rendered = chat.render_prompt(question)
    assert f"<|im_start|>user\n{question}<|im_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    assert "You are a helpful AI assistant" in rendered  # the template's own default
    rendered_custom = custom.render_prompt(question)
    assert "<|im_start|>system\nAnswer tersely.<|im_end|>" in rendered_custom
    assert "You are a helpful AI assistant" not in rendered_custom

    lm = loading.load_model(chat.model_dir, "float32")
    requests = [gen("g", question, 8), ll("l", question, " Paris")]
    raw_gen, raw_ll = raw.complete(requests)
    chat_gen, chat_ll = chat.complete(requests)
    assert raw_gen.prompt_tokens == len(lm.tokenizer(question).input_ids)
    assert chat_gen.prompt_tokens == len(lm.tokenizer(rendered).input_ids)
    assert chat_ll.prompt_tokens == chat_gen.prompt_tokens
    assert chat_gen.text != raw_gen.text
    # The continuation is scored right after the assistant turn opens.
    logprob, _, _ = reference_loglikelihood(chat, rendered, " Paris")
    assert chat_ll.choices[0].logprob == pytest.approx(logprob, abs=1e-4)
    assert chat_ll.choices[0].logprob != pytest.approx(raw_ll.choices[0].logprob, abs=1e-3)


def test_hf_directory_source_loads_the_converted_model(model_cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("ASSAY_MODEL_ROOTS", str(model_cache_dir))
    bundled = make_client(model_cache_dir)
    spec = ModelSpec("converted@v1", f"hf:{bundled.model_dir}", ServingConfig())
    hf = build_client(spec, model_cache_dir)
    assert hf.model_dir == bundled.model_dir
    request = [gen("a", "The capital of France is", 5)]
    assert hf.complete(request)[0].text == bundled.complete(request)[0].text
    # Both digests are stable hex strings; the GGUF one covers the file it came from.
    assert len(hf.artifact_digest) == len(bundled.artifact_digest) == 64
    assert hf.artifact_digest == build_client(spec, model_cache_dir).artifact_digest


def test_per_request_errors_and_left_truncation(model_cache_dir: Path) -> None:
    client = make_client(model_cache_dir, max_context=16)
    long_prompt = "one two three four five six seven eight nine ten eleven twelve thirteen"
    results = client.complete(
        [
            gen("fits", long_prompt, max_tokens=4),
            gen("too-many-tokens", "Hi", max_tokens=16),
            gen("zero-tokens", "Hi", max_tokens=0),
            ll("no-choices", "Hi"),
            ll("huge-choice", "Hi", " word" * 20),
        ]
    )
    fits, too_many, zero, no_choices, huge = results
    assert fits.ok
    assert fits.prompt_tokens == 16 - 4  # left-truncated to leave room for 4 new tokens
    assert "too-many-tokens" in too_many.error and "max_tokens=16" in too_many.error
    assert "zero-tokens" in zero.error
    assert "no-choices" in no_choices.error
    assert "huge-choice" in huge.error


def test_progress_is_reported_per_batch(model_cache_dir: Path) -> None:
    client = make_client(model_cache_dir, batch_size=2)
    calls: list[tuple[int, int]] = []
    client.complete(
        [gen("a", "Hi", 2), gen("b", "Hello", 2), gen("c", "Hey", 2), ll("d", "Hi", " there")],
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(2, 4), (3, 4), (4, 4)]


def test_bad_sources_fail_with_clear_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ASSAY_MODEL_ROOTS", str(tmp_path))
    with pytest.raises(ValueError, match="'ftp://x'"):
        build_client(ModelSpec("m@v1", "ftp://x"), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf"):
        build_client(ModelSpec("m@v1", f"gguf:{tmp_path}/missing.gguf"), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        build_client(ModelSpec("m@v1", f"hf:{tmp_path}"), tmp_path)
    with pytest.raises(ValueError, match="unknown bundled model 'nope'"):
        build_client(ModelSpec("m@v1", "bundled:nope"), tmp_path)
    with pytest.raises(ValueError, match="float8"):
        build_client(ModelSpec("m@v1", BUNDLED_SOURCE, ServingConfig(dtype="float8")), tmp_path)


def test_failed_conversion_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    # The real conversion takes ~25 s; a stand-in that writes part of a model and then dies
    # exercises the same temp-dir-and-rename path.
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"not really a gguf")

    def half_convert(_path: Path, out_dir: Path) -> None:
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(loading, "_convert_gguf", half_convert)
    with pytest.raises(OSError, match="disk full"):
        converted_model_dir(gguf, tmp_path / "cache")
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir()] == []

    def full_convert(_path: Path, out_dir: Path) -> None:
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(loading, "_convert_gguf", full_convert)
    target = converted_model_dir(gguf, tmp_path / "cache")
    assert target.parent == models
    assert (target / "config.json").is_file()
    assert [p.name for p in models.iterdir()] == [target.name]


def test_directory_digest_tracks_model_files_only(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "tokenizer.json").write_text("{}")
    (model / "chat_template.jinja").write_text("{{ messages }}")
    (model / "merges.txt").write_text("a b")
    (model / "README.md").write_text("hello")
    (model / "LICENSE").write_text("terms")
    cache = tmp_path / "cache"
    first = directory_digest(model, cache)
    (model / "README.md").write_text("a different readme")
    (model / "LICENSE").write_text("other terms")
    assert directory_digest(model, cache) == first
    (model / "chat_template.jinja").write_text("{{ messages }} changed")
    second = directory_digest(model, cache)
    assert second != first
    (model / "merges.txt").write_text("a b\nb c")  # BPE merges are tokenizer content
    assert directory_digest(model, cache) != second


def reference_token_logprobs(client: TransformersClient, ids: list[int]):
    """Unbatched log P(ids[i] | ids[:i]) for i >= 1, and the argmax token and its log-prob."""
    lm = loading.load_model(client.model_dir, "float32")
    with torch.inference_mode():
        logprobs = lm.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    values = [float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids))]
    best = [
        (int(logprobs[i - 1].argmax()), float(logprobs[i - 1].max())) for i in range(1, len(ids))
    ]
    return values, best


def test_score_prompts_gives_exact_per_token_logprobs(model_cache_dir: Path) -> None:
    client = make_client(model_cache_dir, batch_size=2)
    lm = loading.load_model(client.model_dir, "float32")
    texts = [
        "The capital of France is Paris.",
        "Hi",
        "Question: What color is the sky?\nAnswer: blue",
        "",
    ]
    scored = client.score_prompts(texts)
    assert len(scored) == len(texts)
    for text, result in zip(texts, scored, strict=True):
        ids = lm.tokenizer(text).input_ids  # this tokenizer adds no BOS to raw text
        assert "".join(result.tokens) == text
        assert len(result.tokens) == len(result.text_offset) == len(ids)
        for token, offset in zip(result.tokens, result.text_offset, strict=True):
            assert text[offset : offset + len(token)] == token
        if not ids:
            assert result.token_logprobs == () and result.top_logprobs == ()
            continue
        assert result.token_logprobs[0] is None and result.top_logprobs[0] is None
        values, best = reference_token_logprobs(client, ids)
        assert list(result.token_logprobs[1:]) == pytest.approx(values, abs=1e-4)
        for top, (best_id, best_lp) in zip(result.top_logprobs[1:], best, strict=True):
            [(token, value)] = top.items()
            assert token == lm.tokenizer.decode([best_id])
            assert value == pytest.approx(best_lp, abs=1e-4)


def test_score_prompts_left_truncates_long_texts(model_cache_dir: Path) -> None:
    client = make_client(model_cache_dir, max_context=6)
    lm = loading.load_model(client.model_dir, "float32")
    text = "one two three four five six seven eight nine ten"
    ids = lm.tokenizer(text).input_ids
    assert len(ids) == 10  # one token per word
    [result] = client.score_prompts([text])
    # Tokens 0-3 lie before the 6-token window and token 4 opens it: none of them is scored.
    assert result.token_logprobs[:5] == (None,) * 5
    values, _ = reference_token_logprobs(client, ids[4:])
    assert list(result.token_logprobs[5:]) == pytest.approx(values, abs=1e-4)
    assert "".join(result.tokens) == text


def test_late_stop_in_a_batch_with_a_longer_row(model_cache_dir: Path) -> None:
    """A one-character stop met after more tokens than the stop check's decode tail covers;
    the stopped row leaves the batch while the other keeps generating."""
    prompt = "1, 2, 3, 4,"
    [alone] = make_client(model_cache_dir, batch_size=1).complete([gen("free", prompt, 16)])
    assert "9" in alone.text  # counting on reaches 9 within 16 tokens
    free, stopped = make_client(model_cache_dir, batch_size=2).complete(
        [gen("free", prompt, 16), gen("stop", prompt, 16, stop=("9",))]
    )
    assert free.batch_size == stopped.batch_size == 2
    assert free.text == alone.text
    assert free.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)
    assert stopped.text == alone.text[: alone.text.index("9")]
    # " 5, 6, 7, 8, 9" takes more than the 6 tokens decoded per step for a 1-character stop.
    assert 6 < stopped.completion_tokens < free.completion_tokens
    assert stopped.token_logprobs == pytest.approx(
        alone.token_logprobs[: stopped.completion_tokens], abs=1e-4
    )


FEW_SHOT = (
    "Answer each question with one word.\n\n"
    "Question: What colour is the sky on a clear day?\nAnswer: blue\n\n"
    "Question: Which animal says moo?\nAnswer: cow\n\n"
    "Question: What do bees make?\nAnswer: honey\n\n"
    "Question: What is frozen water called?\nAnswer: ice\n\n"
)


def record_forward_shapes(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of the token ids of every model forward pass the client makes (the real pass
    still runs; the wrapper only records), to tell which prefill path a batch took."""
    shapes: list[tuple[int, ...]] = []
    real = TransformersClient._forward

    def recording(self, lm, ids, *args, **kwargs):
        shapes.append(tuple(ids.shape))
        return real(self, lm, ids, *args, **kwargs)

    monkeypatch.setattr(TransformersClient, "_forward", recording)
    return shapes


def assert_batched_equals_alone(cache_dir: Path, requests: list, batched: list) -> None:
    alone_client = make_client(cache_dir, batch_size=1)
    for request, together in zip(requests, batched, strict=True):
        [alone] = alone_client.complete([request])
        assert together.ok and alone.ok, request.instance_id
        assert together.text == alone.text, request.instance_id
        assert together.completion_tokens == alone.completion_tokens, request.instance_id
        assert together.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)


def test_shared_prefix_batch_equals_one_at_a_time(model_cache_dir: Path, monkeypatch) -> None:
    """Rows sharing a long few-shot prefix, with suffixes of different lengths (so pads sit
    between the prefix and the shorter suffixes), two identical prompts, different limits and a
    stop sequence (so rows leave the batch at different steps)."""
    requests = [
        gen("short", FEW_SHOT + "Question: Fish?\nAnswer:", 6),
        gen(
            "long",
            FEW_SHOT + "Question: Which large grey animal with a trunk lives in Africa?\nAnswer:",
            8,
        ),
        gen("stop", FEW_SHOT + "Question: What falls from clouds?\nAnswer:", 8, stop=("\n",)),
        gen("same", FEW_SHOT + "Question: What falls from clouds?\nAnswer:", 3),
    ]
    client = make_client(model_cache_dir, batch_size=4)
    lm = loading.load_model(client.model_dir, "float32")
    encoded = [lm.tokenizer(r.prompt).input_ids for r in requests]
    shared = next(
        n for n in range(len(encoded[0])) if len({tuple(ids[: n + 1]) for ids in encoded}) > 1
    )
    assert shared >= 40  # well above the length from which the prefix is computed once
    assert len({len(ids) for ids in encoded}) == 3  # suffixes of three different lengths

    shapes = record_forward_shapes(monkeypatch)
    batched = client.complete(requests)
    # The shared prefix ran once at batch 1, then the four suffixes together after it.
    assert shapes[0] == (1, shared)
    assert shapes[1][0] == 4 and shapes[1][1] == max(len(ids) for ids in encoded) - shared
    assert all(c.batch_size == 4 for c in batched)
    monkeypatch.undo()
    assert_batched_equals_alone(model_cache_dir, requests, batched)
    # The stop row ended at its stop sequence, before its limit.
    assert "\n" not in batched[2].text


def test_batch_without_shared_prefix_equals_one_at_a_time(
    model_cache_dir: Path, monkeypatch
) -> None:
    requests = [
        gen("a", FEW_SHOT + "Question: Where do fish live?\nAnswer:", 5),
        gen("b", "A list of fruit: apple, banana, " + FEW_SHOT, 5),
        gen("c", "Numbers: 1, 2, 3, 4,", 5),
    ]
    client = make_client(model_cache_dir, batch_size=4)
    shapes = record_forward_shapes(monkeypatch)
    batched = client.complete(requests)
    # No common prefix: the whole prompts ran together in the first pass.
    assert shapes[0][0] == 3
    monkeypatch.undo()
    assert_batched_equals_alone(model_cache_dir, requests, batched)


def test_rows_of_one_few_shot_trial_share_batches(model_cache_dir: Path, monkeypatch) -> None:
    """Two trials' prompts whose lengths interleave: longest-first order alone would pair rows of
    different trials, but each batch of two holds one trial and computes its prefix once."""
    other = FEW_SHOT.replace("Answer each question with one word.", "Reply in a single word.")
    requests = [
        gen("t1-long", FEW_SHOT + "Question: What do cows drink every day?\nAnswer:", 3),
        gen("t2-long", other + "Question: What do cows drink?\nAnswer:", 3),
        gen("t1-short", FEW_SHOT + "Question: Cows drink?\nAnswer:", 3),
        gen("t2-short", other + "Question: Cows?\nAnswer:", 3),
    ]
    client = make_client(model_cache_dir, batch_size=2)
    lm = loading.load_model(client.model_dir, "float32")
    lengths = [len(lm.tokenizer(r.prompt).input_ids) for r in requests]
    assert lengths[0] > lengths[1] > lengths[2] > lengths[3]

    shapes = record_forward_shapes(monkeypatch)
    batched = client.complete(requests)
    # Each batch opened with its trial's shared prefix at batch 1 (decode steps are one column
    # wide); mixed batches would share nothing, as the two instructions differ from the start.
    prefix_passes = [s for s in shapes if s[0] == 1 and s[1] >= batching.MIN_SHARED_PREFIX]
    assert len(prefix_passes) == 2
    assert all(c.batch_size == 2 for c in batched)
    monkeypatch.undo()
    assert_batched_equals_alone(model_cache_dir, requests, batched)


def test_single_continuations_run_whole_and_match_the_reference(
    model_cache_dir: Path, monkeypatch
) -> None:
    """Requests with one continuation each (language-modeling windows) run as one forward pass
    of prompt plus continuation, in the same batch as a request whose choices share a prompt."""
    singles = [
        ll("w1", "Once upon a time, in a small village by the sea,", " there lived a fisherman"),
        ll("w2", "The capital of France is", " Paris"),  # a single-token continuation
        ll("w3", "Red, green and", " blue are the colours of light"),
    ]
    requests = [*singles, ll("mc", "The sky is", " blue", " a shade of green"), ll("e", "Hi", "")]
    client = make_client(model_cache_dir, batch_size=8)
    shapes = record_forward_shapes(monkeypatch)
    results = client.complete(requests)
    monkeypatch.undo()
    # The choices' prompt and their tails (two passes of one row), then the three single
    # continuations together; each fed without its last token, which predicts nothing scored.
    lm = loading.load_model(client.model_dir, "float32")
    whole = max(len(lm.tokenizer(r.prompt + r.continuations[0]).input_ids) for r in singles)
    assert [s[0] for s in shapes] == [1, 1, 3]
    assert shapes[2][1] == whole - 1
    assert {c.batch_size for c in results} == {5}
    for request, completion in zip(requests[:4], results[:4], strict=True):
        assert completion.ok
        for choice in completion.choices:
            logprob, n_tokens, greedy = reference_loglikelihood(client, request.prompt, choice.text)
            assert choice.logprob == pytest.approx(logprob, abs=1e-4), choice.text
            assert (choice.n_tokens, choice.is_greedy) == (n_tokens, greedy), choice.text
    # An empty continuation has nothing to predict: probability one, no forward pass.
    [empty] = results[4].choices
    assert (empty.logprob, empty.n_tokens, empty.is_greedy) == (0.0, 0, True)


def test_cpu_shares_a_short_prefix_only_across_enough_rows(
    model_cache_dir: Path, monkeypatch
) -> None:
    """On the CPU a prefix pass pays off by the tokens it saves: eight rows opening with a short
    instruction compute it once; two rows opening alike run whole."""
    head = "Answer with one word.\nQuestion: "
    questions = [
        "Fish?",
        "What do cows drink?",
        "Where do birds live?",
        "Sky colour?",
        "What is ice?",
        "Bees make?",
        "Which animal barks?",
        "Opposite of hot?",
    ]
    requests = [gen(f"q{i}", f"{head}{q}\nAnswer:", 3) for i, q in enumerate(questions)]
    client = make_client(model_cache_dir, batch_size=8, device="cpu")
    lm = loading.load_model(client.model_dir, "float32")
    encoded = [lm.tokenizer(r.prompt).input_ids for r in requests]
    shared = next(
        n for n in range(len(encoded[0])) if len({tuple(ids[: n + 1]) for ids in encoded}) > 1
    )
    # Too short for the length rule and for two rows, enough for eight.
    assert shared < batching.MIN_SHARED_PREFIX
    assert shared < batching.CPU_MIN_SAVED_TOKENS <= 7 * shared

    shapes = record_forward_shapes(monkeypatch)
    batched = client.complete(requests)
    assert shapes[0] == (1, shared)
    assert shapes[1][0] == 8
    shapes.clear()
    client.complete(requests[:2])
    assert shapes[0][0] == 2
    monkeypatch.undo()
    assert_batched_equals_alone(model_cache_dir, requests, batched)


class RecordingClient:
    """The real client, recording what a caller hands it (plans and calls)."""

    def __init__(self, client: TransformersClient) -> None:
        self.client = client
        self.plans: list[list[Request]] = []
        self.calls: list[list[Request]] = []

    @property
    def artifact_digest(self) -> str:
        return self.client.artifact_digest

    @property
    def backend_identity(self) -> dict[str, str]:
        return self.client.backend_identity  # the same computation: the same cache keys

    def plan(self, requests):
        self.plans.append(list(requests))
        return self.client.plan(requests)

    def complete(self, requests, progress=None):
        self.calls.append(list(requests))
        return self.client.complete(requests, progress)


def test_cached_client_plans_one_length_sort_over_all_misses(model_cache_dir, tmp_path):
    client = make_client(model_cache_dir, batch_size=4, device="cpu")
    word_counts = (3, 40, 7, 25, 1, 33, 12, 18, 5, 29, 2, 21)
    requests = [
        gen(f"i{k}", " ".join(["river"] * n), max_tokens=2) for k, n in enumerate(word_counts)
    ]
    cache = RequestCache(f"sqlite:///{tmp_path / 'cache.db'}")
    CachedClient(client, cache, client.spec.serving).complete(requests[:2])  # two hits
    recording = RecordingClient(client)
    cached = CachedClient(recording, cache, client.spec.serving, chunk_size=4)

    out = cached.complete(requests)

    assert recording.plans == [requests[2:]]  # one plan, over every miss and nothing else
    assert [len(call) for call in recording.calls] == [4, 4, 2]
    sent = [len(r.prompt.split()) for call in recording.calls for r in call]
    assert sent == sorted(word_counts[2:], reverse=True)  # longest first across all chunks
    assert [c.cached for c in out] == [True, True] + [False] * 10
    assert [c.text for c in out] == [c.text for c in client.complete(requests)]
    cache.close()


def test_plan_is_the_order_complete_runs_and_failures_come_first(model_cache_dir):
    client = make_client(model_cache_dir, device="cpu")
    requests = [
        gen("short", "Hi", 1),
        gen("bad", "x", max_tokens=0),
        ll("choice", "A much longer prompt about rivers and bridges", " yes", " no"),
        gen("long", "A much longer prompt about rivers, hills and bridges", 1),
    ]
    assert client.plan(requests) == [1, 3, 0, 2]
    assert client.plan([]) == []


@pytest.mark.parametrize("scheme", ["gguf", "hf", "llamacpp"])
def test_local_sources_outside_the_model_roots_are_refused_alike(tmp_path, monkeypatch, scheme):
    # A registry writer must not learn which files exist on the daemon's host, nor have a
    # readable file digested: inside or outside the roots, existing or not, one answer.
    from assay.models.llamacpp_backend import resolve_gguf
    from assay.models.transformers_loading import resolve_source

    resolve = resolve_gguf if scheme == "llamacpp" else resolve_source
    root = tmp_path / "models"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    monkeypatch.setenv("ASSAY_MODEL_ROOTS", str(root))
    messages = []
    for path in ("/etc/passwd", "/etc/no-such-file", f"{root}/escape/passwd", f"{root}/../x"):
        with pytest.raises(ValueError, match="outside the allowed roots") as caught:
            resolve(f"{scheme}:{path}")
        messages.append(str(caught.value).replace(path, "PATH"))
    assert len(set(messages)) == 1 and "ASSAY_MODEL_ROOTS" in messages[0]
    # Inside the roots the path is looked at as before.
    with pytest.raises(FileNotFoundError):
        resolve(f"{scheme}:{root}/absent")
