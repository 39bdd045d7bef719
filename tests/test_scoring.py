"""Per-instance stats and scorecard rows of the seven families, on hand-written outputs.

No model runs here: requests come from the real adapters, completions are written by hand,
and every expected value is worked out in the test from the definitions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.adapters import AdapterSpec, Method, build_requests
from assay.core.records import (
    ChoiceScore,
    Completion,
    Instance,
    MetricSummary,
    ModelOutput,
    Reference,
    TokenPrices,
)
from assay.scoring.families import NO_TOXICITY_SCORER
from assay.scoring.instance_stats import instance_stats
from assay.scoring.scorecard import FAMILIES, score_partition
from assay.scoring.summary import scorecard_table

MC = AdapterSpec(method=Method.MULTIPLE_CHOICE_SEPARATE)
GEN = AdapterSpec(method=Method.GENERATION, max_tokens=8)


def _stored(outputs: list[ModelOutput]) -> list[ModelOutput]:
    # Scores must be recomputable from the stored Parquet table alone.
    return ModelOutput.from_table(ModelOutput.to_table(outputs))


def _card(card: list[MetricSummary]) -> dict[tuple[str, str, str, str], MetricSummary]:
    return {(r.metric, r.family, r.group, r.perturbation): r for r in card}


def _choices(logprobs, texts, tokens=None, chars=None, nbytes=None) -> tuple[ChoiceScore, ...]:
    n = len(texts)
    tokens, chars = tokens or [1] * n, chars or [len(t) for t in texts]
    nbytes = nbytes or [len(t.encode()) for t in texts]
    return tuple(
        ChoiceScore(t, lp, n_tokens=k, n_chars=c, n_bytes=b)
        for t, lp, k, c, b in zip(texts, logprobs, tokens, chars, nbytes, strict=True)
    )


def _mc_instance(i: int, groups: dict[str, str] | None = None) -> Instance:
    return Instance(
        f"q{i}", f"Question {i}?", (Reference("yes", True), Reference("no")), groups=groups or {}
    )


def _mc_outputs(
    instances: list[Instance], picks: dict[tuple[str, str], int], perturbation: str = ""
) -> list[ModelOutput]:
    """Outputs whose choice ``picks[(id, perturbation)]`` has logprob -1, the other -2."""
    out = []
    for request in build_requests(MC, instances, perturbation=perturbation):
        key = (request.instance_id, perturbation)
        if key not in picks:
            continue
        lps = [-1.0 if j == picks[key] else -2.0 for j in range(2)]
        out.append(ModelOutput(request, Completion(choices=_choices(lps, [" yes", " no"]))))
    return out


def test_generation_accuracy_metrics_and_overlap_for_long_references() -> None:
    short = Instance("s", "Capital of France?", (Reference("Paris", True),))
    long = Instance("l", "Describe.", (Reference("the cat sat on the mat", True),))
    requests = build_requests(GEN, [short, long])
    texts = {"s": "paris.", "l": "the cat sat"}
    outputs = [ModelOutput(r, Completion(text=texts[r.instance_id])) for r in requests]
    stats = {(s.instance_id, s.metric): s.value for s in instance_stats([short, long], outputs)}
    # "paris." vs "Paris": not equal, not a prefix as typed; equal after lowercasing and
    # dropping punctuation, so the quasi variants match; one shared token of one each: F1 1.
    assert stats[("s", "exact_match")] == 0.0
    assert stats[("s", "quasi_exact_match")] == 1.0
    assert stats[("s", "prefix_exact_match")] == 0.0
    assert stats[("s", "quasi_prefix_exact_match")] == 1.0
    assert stats[("s", "f1_score")] == 1.0
    assert ("s", "rouge_l") not in stats  # a one-word answer is matched, not overlapped
    # Long reference (6 words). F1 over article-free token sets: {cat, sat} vs
    # {cat, sat, on, mat}: P = 1, R = 1/2, F1 = 2/3.
    assert stats[("l", "f1_score")] == pytest.approx(2 / 3)
    # ROUGE-L: LCS 3 of 3 predicted and 6 reference tokens: P = 1, R = 1/2, F = 2/3.
    assert stats[("l", "rouge_l")] == pytest.approx(2 / 3)
    # BLEU-1: unigram precision 3/3 times brevity penalty exp(1 - 6/3).
    assert stats[("l", "bleu_1")] == pytest.approx(math.exp(-1))
    # BLEU-4 on its own: a 3-token prediction has no 4-gram, so no match.
    assert stats[("l", "bleu_4")] == pytest.approx(0.0)


def test_multiple_choice_normalizations_and_chosen_prob() -> None:
    item = Instance("m", "Pick.", (Reference("yes", True), Reference("nooooo")))
    request = build_requests(MC, [item])[0]
    # Correct choice: logprob -2 over 1 token, 4 chars, 20 bytes; wrong: -3 over 4/7/7.
    choices = _choices([-2.0, -3.0], [" yes", " nooooo"], [1, 4], [4, 7], [20, 7])
    stats = {
        s.metric: s
        for s in instance_stats(
            [item], _stored([ModelOutput(request, Completion(choices=choices))])
        )
    }
    assert stats["acc"].value == 1.0  # -2 > -3
    assert stats["acc_norm"].value == 0.0  # by chars: -2/4 = -0.5 < -3/7 = -0.43
    assert stats["acc_norm_tokens"].value == 0.0  # -2/1 < -3/4
    assert stats["acc_norm_bytes"].value == 1.0  # -2/20 = -0.1 > -3/7
    # Softmax over the two choices at the chosen one: 1 / (1 + e^(-3 - -2)).
    assert stats["chosen_prob"].value == pytest.approx(1 / (1 + math.exp(-1)))
    assert stats["chosen_prob"].family == "calibration"


def test_robustness_and_fairness_worst_cases_and_deltas() -> None:
    items = [_mc_instance(0), _mc_instance(1)]
    # Originals both right; typos breaks q0 only; lowercase ran on q0 only (it left q1 as
    # it was, so perturbed_instances dropped it); dialect breaks q0.
    outputs = _mc_outputs(items, {("q0", ""): 0, ("q1", ""): 0})
    outputs += _mc_outputs(items, {("q0", "typos"): 1, ("q1", "typos"): 0}, "typos")
    outputs += _mc_outputs(items, {("q0", "lowercase"): 0}, "lowercase")
    outputs += _mc_outputs(items, {("q0", "dialect"): 1}, "dialect")
    scored = score_partition(items, _stored(outputs), seed_key="t")
    per = {(s.instance_id, s.metric, s.family, s.perturbation): s.value for s in scored.stats}
    # Perturbed accuracy rows carry the perturbation's family.
    assert per[("q0", "acc", "robustness", "typos")] == 0.0
    assert per[("q0", "acc", "fairness", "dialect")] == 0.0
    # Worst case per instance over original + family perturbations.
    assert per[("q0", "acc", "robustness", "robustness")] == 0.0  # min(1, 0, 1)
    assert per[("q1", "acc", "robustness", "robustness")] == 1.0  # min(1, 1)
    assert per[("q0", "acc", "fairness", "fairness")] == 0.0  # min(1, 0)
    assert per[("q1", "acc", "fairness", "fairness")] == 1.0  # original only
    card = _card(scored.card)
    assert card[("acc", "robustness", "", "robustness")].mean == pytest.approx(0.5)
    assert card[("acc", "fairness", "", "fairness")].mean == pytest.approx(0.5)
    # Deltas (perturbed − clean) over the instances each perturbation changed.
    assert card[("acc_delta", "robustness", "", "typos")].mean == pytest.approx((-1 + 0) / 2)
    assert card[("acc_delta", "robustness", "", "lowercase")].mean == pytest.approx(0.0)
    assert card[("acc_delta", "robustness", "", "lowercase")].count == 1
    assert card[("acc_delta", "fairness", "", "dialect")].mean == pytest.approx(-1.0)
    # The clean accuracy row is untouched by the perturbed rows.
    assert card[("acc", "accuracy", "", "")].mean == 1.0


def test_missing_perturbation_family_is_absent_with_reason() -> None:
    items = [_mc_instance(0), _mc_instance(1)]
    scored = score_partition(items, _mc_outputs(items, {("q0", ""): 0, ("q1", ""): 1}))
    card = _card(scored.card)
    for family in ("robustness", "fairness"):
        row = card[(f"{family}_worst_case", family, "", "")]
        assert math.isnan(row.mean) and "no " + family in row.reason
        assert not any(s.family == family and s.perturbation for s in scored.stats)


def test_group_breakdown_gap_and_ratio() -> None:
    genders = ["female", "female", "male", "male"]
    items = [_mc_instance(i, {"gender": g}) for i, g in enumerate(genders)]
    # female: right, right; male: right, wrong → means 1.0 and 0.5.
    picks = {("q0", ""): 0, ("q1", ""): 0, ("q2", ""): 0, ("q3", ""): 1}
    scored = score_partition(items, _mc_outputs(items, picks), seed_key="g")
    card = _card(scored.card)
    assert card[("acc", "accuracy", "gender=female", "")].mean == 1.0
    assert card[("acc", "accuracy", "gender=male", "")].mean == 0.5
    gap = card[("acc_group_gap", "fairness", "gender", "")]
    ratio = card[("acc_group_ratio", "fairness", "gender", "")]
    assert gap.mean == pytest.approx(1.0 - 0.5)
    assert ratio.mean == pytest.approx(0.5 / 1.0)
    assert gap.ci_low <= gap.mean <= gap.ci_high
    # The ungrouped row still counts each instance once.
    assert card[("acc", "accuracy", "", "")].count == 4


def test_no_group_tags_is_absent() -> None:
    items = [_mc_instance(0), _mc_instance(1)]
    card = _card(score_partition(items, _mc_outputs(items, {("q0", ""): 0, ("q1", ""): 0})).card)
    row = card[("group_gap", "fairness", "", "")]
    assert math.isnan(row.mean) and "group tags" in row.reason


def test_calibration_rows_from_chosen_prob_and_correctness() -> None:
    items = [_mc_instance(i) for i in range(4)]
    logprobs = {"q0": [-1.0, -3.0], "q1": [-1.0, -1.5], "q2": [-2.5, -1.0], "q3": [-1.2, -1.0]}
    outputs = [
        ModelOutput(r, Completion(choices=_choices(logprobs[r.instance_id], [" yes", " no"])))
        for r in build_requests(MC, items)
    ]
    card = _card(score_partition(items, outputs).card)
    # Two choices: chosen prob = sigmoid(|difference|); correct when "yes" wins.
    probs = np.array([1 / (1 + math.exp(-d)) for d in (2.0, 0.5, 1.5, 0.2)])
    correct = np.array([1, 1, 0, 0])
    assert card[("ece_1_bin", "calibration", "", "")].mean == pytest.approx(
        abs(probs.mean() - correct.mean())
    )
    # Four answers in ten equal-mass bins: one answer per bin, ECE = mean |p - y|.
    assert card[("ece_10_bin", "calibration", "", "")].mean == pytest.approx(
        np.abs(probs - correct).mean()
    )
    # Most confident first: q0 (0.88, right), q2 (0.82, wrong), q1 (0.62, right), q3 (0.55,
    # wrong); running accuracies 1, 1/2, 2/3, 2/4; area = their mean; @10% = the first.
    assert card[("selective_coverage_acc_area", "calibration", "", "")].mean == pytest.approx(
        (1 + 1 / 2 + 2 / 3 + 2 / 4) / 4
    )
    assert card[("selective_acc@10", "calibration", "", "")].mean == 1.0
    assert card[("platt_ece_1_bin", "calibration", "", "")].count == 4


def test_calibration_is_absent_for_generation() -> None:
    item = Instance("s", "2+2?", (Reference("4", True),))
    outputs = [ModelOutput(r, Completion(text="4")) for r in build_requests(GEN, [item])]
    row = _card(score_partition([item], outputs).card)[("ece_10_bin", "calibration", "", "")]
    assert math.isnan(row.mean) and "log-likelihoods" in row.reason


def test_bias_of_generated_text() -> None:
    items = [Instance(f"g{i}", f"Tell me about person {i}.", ()) for i in range(3)]
    texts = {"g0": "She is a nurse.", "g1": "He is a doctor.", "g2": "He is a nurse."}
    outputs = [
        ModelOutput(r, Completion(text=texts[r.instance_id])) for r in build_requests(GEN, items)
    ]
    card = _card(score_partition(items, outputs).card)
    # Gender words: she ×1, he ×2; each list has 20 words, so the size-normalized
    # distribution is (1/3, 2/3) and its distance to uniform (|1/3-1/2| + |2/3-1/2|)/2 = 1/6.
    assert card[("bias_gender_representation", "bias", "", "")].mean == pytest.approx(1 / 6)
    # Professions: nurse co-occurs with female once and male once (even: 0), doctor with
    # male only ((1/2 + 1/2)/2 = 1/2); mean over co-occurring targets = 1/4.
    row = card[("bias_gender_profession_association", "bias", "", "")]
    assert row.mean == pytest.approx(0.25) and row.count == 3
    # No surname occurs: absent, with the reason, never 0.
    race = card[("bias_race_representation", "bias", "", "")]
    assert math.isnan(race.mean) and "no word" in race.reason
    # No reference to match: no accuracy row, and an absent row saying why.
    assert not any(s.family == "accuracy" for s in score_partition(items, outputs).stats)
    assert card[("accuracy", "accuracy", "", "")].reason


def test_bbq_scores_for_bbq_shaped_instances() -> None:
    def bbq(i: int, condition: str, polarity: str, label: int) -> Instance:
        refs = ("Grandpa", "The boy", "Can't be determined")
        return Instance(
            f"b{i}",
            "Who forgot?",
            tuple(Reference(t, j == label) for j, t in enumerate(refs)),
            groups={
                "context_condition": condition,
                "question_polarity": polarity,
                "target_answer": "0",
            },
        )

    items = [bbq(0, "disambig", "neg", 0), bbq(1, "disambig", "nonneg", 1)]
    items += [bbq(2, "ambig", "neg", 2), bbq(3, "ambig", "nonneg", 2)]
    picks = {"b0": 0, "b1": 0, "b2": 0, "b3": 2}
    outputs = []
    for r in build_requests(MC, items):
        lps = [-1.0 if j == picks[r.instance_id] else -3.0 for j in range(3)]
        outputs.append(ModelOutput(r, Completion(choices=_choices(lps, list(r.continuations)))))
    card = _card(score_partition(items, outputs).card)
    # Disambiguated: b0 picks the target on a negative question (biased, right); b1 picks
    # the target on a non-negative one (not biased, wrong): s_DIS = 2*1/2 - 1 = 0, acc 1/2.
    assert card[("bbq_disambiguated_bias", "bias", "", "")].mean == pytest.approx(0.0)
    assert card[("bbq_disambiguated_accuracy", "bias", "", "")].mean == pytest.approx(0.5)
    # Ambiguous: b2 picks the target on a negative question (biased, wrong), b3 "unknown"
    # (right): accuracy 1/2, bias among non-unknown 2*1/1 - 1 = 1, s_AMB = (1 - 1/2) * 1.
    assert card[("bbq_ambiguous_accuracy", "bias", "", "")].mean == pytest.approx(0.5)
    assert card[("bbq_ambiguous_bias", "bias", "", "")].mean == pytest.approx(0.5)


class KeywordToxicity:
    """Stands in for a toxicity classifier: no classifier weights can be downloaded here."""

    name = "keyword-test-scorer"

    def score(self, texts):
        return [0.9 if "idiot" in t else (None if not t.strip() else 0.1) for t in texts]


def test_toxicity_with_a_scorer_and_absent_without() -> None:
    items = [Instance(f"p{i}", f"Prompt {i}", ()) for i in range(3)]
    texts = {"p0": "you idiot", "p1": "hello there", "p2": " "}
    outputs = [
        ModelOutput(r, Completion(text=texts[r.instance_id])) for r in build_requests(GEN, items)
    ]
    scored = score_partition(items, outputs, toxicity=KeywordToxicity())
    per = {s.instance_id: s.value for s in scored.stats if s.metric == "toxicity"}
    assert per == {"p0": 0.9, "p1": 0.1}  # the unscorable blank text has no row, not a 0
    card = _card(scored.card)
    # Scored texts 0.9 and 0.1: half reach 0.5; one completion per prompt, so the expected
    # maximum is the mean (0.9 + 0.1) / 2 and the probability equals the fraction.
    assert card[("toxic_fraction", "toxicity", "", "")].mean == pytest.approx(0.5)
    assert card[("expected_max_toxicity", "toxicity", "", "")].mean == pytest.approx(0.5)
    assert card[("toxicity_probability", "toxicity", "", "")].mean == pytest.approx(0.5)
    assert card[("toxic_fraction", "toxicity", "", "")].count == 2

    plain = _card(score_partition(items, outputs).card)
    for metric in ("toxicity", "toxic_fraction", "expected_max_toxicity"):
        row = plain[(metric, "toxicity", "", "")]
        assert math.isnan(row.mean) and row.reason == NO_TOXICITY_SCORER


def test_efficiency_figures_and_cost_from_prices() -> None:
    items = [Instance(f"e{i}", f"Q{i}", (Reference("x", True),)) for i in range(5)]
    requests = build_requests(GEN, items)
    latencies = [0.1, 0.2, 0.3, 0.4, 9.0]
    outputs = [
        ModelOutput(
            r,
            Completion(
                text="x",
                prompt_tokens=10 * (i + 1),
                completion_tokens=i + 1,
                latency_s=latencies[i],
                batch_size=2 if i < 2 else 4,
                cached=i == 4,  # answered by the cache: measured when it was computed
            ),
        )
        for i, r in enumerate(requests)
    ]
    card = _card(score_partition(items, outputs, prices=TokenPrices(1.0, 2.0)).card)
    # The cache hit keeps the 9 s measured when its answer was computed.
    measured = np.array(latencies)
    assert card[("latency_mean_s", "efficiency", "", "")].mean == pytest.approx(measured.mean())
    assert card[("latency_p50_s", "efficiency", "", "")].mean == pytest.approx(0.3)
    # Linear interpolation: position 0.95 * 4 = 3.8 between 0.4 and 9.0.
    assert card[("latency_p95_s", "efficiency", "", "")].mean == pytest.approx(0.4 + 0.8 * 8.6)
    assert card[("tokens_per_s", "efficiency", "", "")].mean == pytest.approx(
        (1 + 2 + 3 + 4 + 5) / measured.sum()
    )
    assert card[("batch_size_mean", "efficiency", "", "")].mean == pytest.approx(16 / 5)
    assert card[("cached_requests", "efficiency", "", "")].mean == 1
    assert card[("run_model_time_s", "efficiency", "", "")].mean == pytest.approx(1.0)
    # All five count toward cost: 150 prompt tokens at 1/1k, 15 completion tokens at 2/1k.
    assert card[("estimated_cost", "efficiency", "", "")].mean == pytest.approx(
        150 / 1000 * 1.0 + 15 / 1000 * 2.0
    )
    unpriced = _card(score_partition(items, outputs).card)[("estimated_cost", "efficiency", "", "")]
    assert math.isnan(unpriced.mean) and "price" in unpriced.reason


def test_every_family_has_a_row_and_absent_rows_are_nan_never_zero() -> None:
    items = [_mc_instance(0), _mc_instance(1)]
    scored = score_partition(items, _mc_outputs(items, {("q0", ""): 0, ("q1", ""): 1}))
    table = scorecard_table(scored.card)
    assert set(table["family"].to_pylist()) == set(FAMILIES)
    for row in table.to_pylist():
        if row["reason"]:
            assert math.isnan(row["mean"]) and row["count"] == 0, row
        else:
            assert math.isfinite(row["mean"]), row
    # Ungrouped, unperturbed metric names are unique: rankings key headline rows on them.
    names = [r.metric for r in scored.card if not r.group and not r.perturbation]
    assert len(names) == len(set(names))
    headline = scored.headline()
    assert "acc" in headline and "estimated_cost" not in headline
    assert all(math.isfinite(v) for v in headline.values())


def test_worst_case_covers_only_the_layouts_perturbations_ran_with() -> None:
    item = _mc_instance(0)
    base = AdapterSpec(method=Method.MULTIPLE_CHOICE_SEPARATE, variant="base")
    variant = AdapterSpec(method=Method.MULTIPLE_CHOICE_SEPARATE, variant="instructed")
    right = _choices([-1.0, -2.0], [" yes", " no"])
    wrong = _choices([-2.0, -1.0], [" yes", " no"])
    outputs = [ModelOutput(r, Completion(choices=right)) for r in build_requests(base, [item])]
    outputs += [ModelOutput(r, Completion(choices=right)) for r in build_requests(variant, [item])]
    outputs += [
        ModelOutput(r, Completion(choices=wrong))
        for r in build_requests(base, [item], perturbation="typos")
    ]
    scored = score_partition([item], outputs)
    worst = [s for s in scored.stats if s.perturbation == "robustness" and s.metric == "acc"]
    # One row, for the base layout, at the typo's 0; the variant (no perturbed run) adds none.
    assert [(s.template_id, s.value) for s in worst] == [(base.template_id, 0.0)]
    assert _card(scored.card)[("acc", "robustness", "", "robustness")].mean == 0.0
    # The clean score averages both layouts of the instance: still 1.
    assert _card(scored.card)[("acc", "accuracy", "", "")].mean == 1.0


def test_prices_pinned_in_outputs_read_back_and_disagreeing_rows_are_refused() -> None:
    import pyarrow as pa

    from assay.core.pinned_prices import pin_prices, pinned_prices

    table = pa.table({"instance_id": ["a", "b"]})
    assert pinned_prices(table).pinned is False  # written before prices were pinned
    pinned = pinned_prices(pin_prices(table, TokenPrices(0.25, 1.0)))
    assert pinned.pinned and pinned.prices == TokenPrices(0.25, 1.0)
    unpriced = pinned_prices(pin_prices(table, None))
    assert unpriced.pinned and unpriced.prices is None
    mixed = table.append_column("price_prompt_per_1k", pa.array([0.25, 0.5]))
    mixed = mixed.append_column("price_completion_per_1k", pa.array([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"m@v1 × s.*price_prompt_per_1k"):
        pinned_prices(mixed, "m@v1 × s")
