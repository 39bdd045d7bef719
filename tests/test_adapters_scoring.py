"""Per-instance stats of the adapter methods, from requests the adapters really build.

Model completions are written by hand (no model runs here); expected values are worked out
in the comments.
"""

from __future__ import annotations

import math

from assay.adapters import AdapterSpec, Method, build_requests
from assay.core.records import ChoiceScore, Completion, Instance, ModelOutput, Reference
from assay.scoring.instance_stats import instance_stats


def _stats(instances, outputs) -> dict[tuple[str, str], float]:
    # Round-trip through the stored table: metrics must be recomputable from Parquet alone.
    stored = ModelOutput.from_table(ModelOutput.to_table(outputs))
    return {(s.instance_id, s.metric): s.value for s in instance_stats(instances, stored)}


def _choices(logprobs: list[float], texts: list[str]) -> tuple[ChoiceScore, ...]:
    return tuple(
        ChoiceScore(t, lp, n_tokens=1, n_chars=len(t), n_bytes=len(t.encode()))
        for t, lp in zip(texts, logprobs, strict=True)
    )


def test_joint_scores_the_generated_letter() -> None:
    items = [
        Instance(f"q{i}", "Which?", (Reference("x"), Reference("y", True), Reference("z")))
        for i in range(4)
    ]
    requests = build_requests(AdapterSpec(method=Method.MULTIPLE_CHOICE_JOINT), items)
    texts = [" B", "C.", " (B)", "Because"]  # right, wrong, right, no letter
    outputs = [ModelOutput(r, Completion(text=t)) for r, t in zip(requests, texts, strict=True)]
    stats = _stats(items, outputs)
    assert [stats[(f"q{i}", "exact_match")] for i in range(4)] == [1.0, 0.0, 1.0, 0.0]
    assert [stats[(f"q{i}", "valid_letter")] for i in range(4)] == [1.0, 1.0, 1.0, 0.0]


def test_calibrated_subtracts_the_unconditioned_log_likelihood() -> None:
    item = Instance("q", "Which?", (Reference("red"), Reference("green", True)))
    main, prior = build_requests(AdapterSpec(method=Method.MULTIPLE_CHOICE_CALIBRATED), [item])
    texts = [" red", " green"]
    # Conditioned: red -1.0, green -2.0 → plain argmax picks red (wrong).
    # Prior:       red -0.5, green -2.5 → calibrated scores -0.5 and +0.5 → green (right).
    outputs = [
        ModelOutput(main, Completion(choices=_choices([-1.0, -2.0], texts))),
        ModelOutput(prior, Completion(choices=_choices([-0.5, -2.5], texts))),
    ]
    stats = _stats([item], outputs)
    assert stats[("q", "acc")] == 0.0
    assert stats[("q", "acc_calibrated")] == 1.0
    # The unconditioned row adds no accuracy stats of its own (one value per instance).
    assert sum(1 for key in stats if key[1] == "acc_calibrated") == 1


def test_language_modeling_perplexity_and_bits_per_byte_per_document() -> None:
    doc = Instance("d", "x" * 15, ())
    spec = AdapterSpec(method=Method.LANGUAGE_MODELING, lm_window_chars=10, lm_context_chars=10)
    first, second = build_requests(spec, [doc])
    outputs = [
        ModelOutput(first, Completion(choices=(ChoiceScore("x" * 10, -3.0, 2, 10, 10),))),
        ModelOutput(second, Completion(choices=(ChoiceScore("x" * 5, -1.5, 1, 5, 5),))),
    ]
    stats = _stats([doc], outputs)
    # Total log-likelihood -4.5 nats over 3 tokens and 15 bytes:
    # perplexity = exp(4.5 / 3) = e^1.5; bits per byte = 4.5 / (15 · ln 2).
    assert math.isclose(stats[("d", "logprob")], -4.5)
    assert math.isclose(stats[("d", "perplexity")], math.exp(1.5))
    assert math.isclose(stats[("d", "bits_per_byte")], 4.5 / (15 * math.log(2)))


def test_language_modeling_document_with_a_failed_window_gets_no_score() -> None:
    doc = Instance("d", "x" * 15, ())
    spec = AdapterSpec(method=Method.LANGUAGE_MODELING, lm_window_chars=10)
    first, second = build_requests(spec, [doc])
    outputs = [
        ModelOutput(first, Completion(choices=(ChoiceScore("x" * 10, -3.0, 2, 10, 10),))),
        ModelOutput(second, Completion(error="timeout")),
    ]
    stats = _stats([doc], outputs)
    assert ("d", "perplexity") not in stats
    assert stats[("d", "failed")] == 1.0
