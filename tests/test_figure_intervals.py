"""Instance-bootstrap intervals of partition-level figures (ECE, bias scores, toxicity
aggregates, latency p95, cost), each compared with a bootstrap written out here with numpy
on the same seed and resample indices, and with scipy.stats.bootstrap where it applies."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as scipy_stats

from assay.core.digests import seed_from
from assay.core.records import (
    Completion,
    Instance,
    InstanceStat,
    ModelOutput,
    Reference,
    Request,
    RequestKind,
    TokenPrices,
)
from assay.scoring.families import (
    bbq_rows,
    calibration_rows,
    efficiency_rows,
    text_bias_rows,
    toxicity_rows,
)
from assay.scoring.instance_stats import ToxicityRun
from assay.scoring.intervals import (
    ONE_INSTANCE,
    PROVISIONAL,
    bootstrap_figures,
    provisional_intervals,
)
from assay.scoring.metrics.absent import Absent
from assay.scoring.metrics.bias import (
    adjectives,
    association_batch,
    association_counts,
    demographic_representation,
    gender_words,
    professions,
    race_names,
    stereotypical_association,
)
from assay.scoring.metrics.calibration import expected_calibration_error
from assay.scoring.summary import scorecard, scorecard_table

B = 1000


def numpy_resamples(labels: list[str], seed: int) -> list[np.ndarray]:
    """Row indices of each resample: instances (sorted labels) drawn with replacement by
    ``default_rng(seed).integers``, each bringing all of its rows."""
    names = sorted(set(labels))
    draws = np.random.default_rng(seed).integers(0, len(names), (B, len(names)), dtype=np.int32)
    rows_of = [np.flatnonzero(np.array(labels) == name) for name in names]
    return [np.concatenate([rows_of[j] for j in draw]) for draw in draws]


def interval(values: list[float]) -> tuple[float, float]:
    low, high = np.nanquantile(np.array(values, dtype=float), [0.025, 0.975])
    return float(low), float(high)


def check(row, expected: tuple[float, float]) -> None:
    assert row.ci_note == ""
    assert (row.ci_low, row.ci_high) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert row.ci_low <= row.mean <= row.ci_high


def test_ece_interval_resamples_instances_with_all_their_trials() -> None:
    rng = random.Random(3)
    stats = []
    for i in range(40):
        for trial in range(2):  # two trials per instance travel together
            p = rng.uniform(0.3, 1.0)
            stats.append(InstanceStat(f"i{i:02d}", "chosen_prob", p, "calibration", trial=trial))
            ok = float(rng.random() < p - 0.1)
            stats.append(InstanceStat(f"i{i:02d}", "acc", ok, "accuracy", trial=trial))
    rows = {r.metric: r for r in calibration_rows(stats, "part-1")}
    keys = sorted({(s.instance_id, s.trial) for s in stats})
    prob = {(s.instance_id, s.trial): s.value for s in stats if s.metric == "chosen_prob"}
    acc = {(s.instance_id, s.trial): s.value for s in stats if s.metric == "acc"}
    p = np.array([prob[k] for k in keys])
    y = np.array([int(acc[k]) for k in keys])
    resamples = numpy_resamples([k[0] for k in keys], seed_from("part-1", "calibration"))
    ece = [expected_calibration_error(p[r], y[r], 10) for r in resamples]
    check(rows["ece_10_bin"], interval(ece))
    assert rows["ece_10_bin"].ci_high > rows["ece_10_bin"].ci_low


def test_latency_p95_and_cost_intervals() -> None:
    rng = random.Random(5)
    outputs = []
    for i in range(30):
        for k in range(3):  # three requests per instance
            request = Request(f"q{i:02d}", RequestKind.GENERATE, f"p{i}-{k}", max_tokens=8)
            completion = Completion(
                text="x",
                prompt_tokens=rng.randint(10, 60),
                completion_tokens=rng.randint(1, 8),
                latency_s=rng.expovariate(4.0),
            )
            outputs.append(ModelOutput(request, completion))
    prices = TokenPrices(prompt_per_1k=0.5, completion_per_1k=1.5)
    rows = {r.metric: r for r in efficiency_rows(outputs, prices, "part-2")}
    labels = [o.request.instance_id for o in outputs]
    latency = np.array([o.completion.latency_s for o in outputs])
    cost = np.array(
        [
            o.completion.prompt_tokens / 1000 * 0.5 + o.completion.completion_tokens / 1000 * 1.5
            for o in outputs
        ]
    )
    resamples = numpy_resamples(labels, seed_from("part-2", "efficiency"))
    check(rows["latency_p95_s"], interval([np.percentile(latency[r], 95) for r in resamples]))
    check(rows["estimated_cost"], interval([cost[r].sum() for r in resamples]))
    check(rows["latency_mean_s"], interval([latency[r].mean() for r in resamples]))


def _toxic_outputs(scores: dict[str, list[float]]) -> tuple[list[InstanceStat], ToxicityRun]:
    stats = [
        InstanceStat(instance, "toxicity", value, "toxicity")
        for instance, values in scores.items()
        for value in values
    ]
    run = ToxicityRun("table", {}, sum(map(len, scores.values())))
    return stats, run


def test_toxicity_intervals_match_numpy_and_scipy() -> None:
    rng = np.random.default_rng(11)
    scores = {f"t{i:02d}": list(rng.beta(1, 4, size=4)) for i in range(50)}  # k = 4 samples
    stats, run = _toxic_outputs(scores)
    rows = {r.metric: r for r in toxicity_rows(stats, True, run, "part-3")}
    names = sorted(scores)
    maxima = np.array([max(scores[n]) for n in names])
    fractions = np.array([np.mean(np.array(scores[n]) >= 0.5) for n in names])
    resamples = numpy_resamples(names, seed_from("part-3", "tox"))
    check(rows["expected_max_toxicity"], interval([maxima[r].mean() for r in resamples]))
    check(rows["toxic_fraction"], interval([fractions[r].mean() for r in resamples]))
    check(rows["toxicity_probability"], interval([(maxima[r] >= 0.5).mean() for r in resamples]))
    # A mean over prompts: scipy's percentile bootstrap (its own draws) lands close by.
    ref = scipy_stats.bootstrap(
        (maxima,), np.mean, n_resamples=B, method="percentile", random_state=0
    ).confidence_interval
    row = rows["expected_max_toxicity"]
    assert row.ci_low == pytest.approx(ref.low, abs=0.02)
    assert row.ci_high == pytest.approx(ref.high, abs=0.02)
    # The parse-failure count says why it has no interval.
    [failures] = [r for r in toxicity_rows(stats, True, run) if r.metric.endswith("failures")]
    assert math.isnan(failures.ci_low) and "count" in failures.ci_note


def test_text_bias_interval_recomputes_the_figure_on_resampled_texts() -> None:
    rng = random.Random(2)
    words = [
        "he",
        "she",
        "him",
        "her",
        "his",
        "man",
        "woman",
        "men",
        "women",
        "the",
        "a",
        "of",
        "and",
        "it",
        "we",
    ]
    outputs = []
    for i in range(25):
        for k in range(2):
            text = " ".join(rng.choice(words) for _ in range(12))
            request = Request(f"b{i:02d}", RequestKind.GENERATE, f"p{i}-{k}", method="generation")
            outputs.append(ModelOutput(request, Completion(text=text)))
    rows = {r.metric: r for r in text_bias_rows(outputs, "part-4")}
    texts = [o.completion.text for o in outputs]
    resamples = numpy_resamples(
        [o.request.instance_id for o in outputs], seed_from("part-4", "bias")
    )
    values = [demographic_representation([texts[j] for j in r], gender_words()) for r in resamples]
    check(rows["bias_gender_representation"], interval(values))


def test_text_bias_association_interval_recomputes_the_figure_on_resampled_texts() -> None:
    # Few of the hundreds of professions occur: the bootstrap counts only those (the others
    # can never co-occur in a resample); the interval is the one over all of them.
    rng = random.Random(3)
    words = ["he", "she", "man", "woman", "doctor", "nurse", "teacher", "the", "a", "of"]
    outputs = []
    for i in range(25):
        text = " ".join(rng.choice(words) for _ in range(10))
        request = Request(f"c{i:02d}", RequestKind.GENERATE, f"q{i}", method="generation")
        outputs.append(ModelOutput(request, Completion(text=text)))
    rows = {r.metric: r for r in text_bias_rows(outputs, "part-5")}
    texts = [o.completion.text for o in outputs]
    resamples = numpy_resamples(
        [o.request.instance_id for o in outputs], seed_from("part-5", "bias")
    )
    row = rows["bias_gender_profession_association"]
    assert row.mean == pytest.approx(
        stereotypical_association(texts, gender_words(), professions()), rel=1e-12
    )
    values = []
    for r in resamples:
        value = stereotypical_association([texts[j] for j in r], gender_words(), professions())
        values.append(math.nan if isinstance(value, Absent) else value)
    check(row, interval(values))


def test_text_bias_rows_equal_the_dense_bootstrap_to_the_bit() -> None:
    # The bootstrap over every target column (the computation before live targets), written
    # out here: the same rows, every float identical.
    rng = random.Random(4)
    words = ["he", "she", "man", "woman", "doctor", "nurse", "curious", "chen", "the", "of"]
    outputs = []
    for i in range(30):
        text = " ".join(rng.choice(words) for _ in range(8))
        request = Request(f"d{i:02d}", RequestKind.GENERATE, f"r{i}", method="generation")
        outputs.append(ModelOutput(request, Completion(text=text)))
    texts = [o.completion.text for o in outputs]
    figures = [
        ("bias_gender_adjective_association", gender_words(), adjectives()),
        ("bias_gender_profession_association", gender_words(), professions()),
        ("bias_race_adjective_association", race_names(), adjectives()),
        ("bias_race_profession_association", race_names(), professions()),
    ]
    counts = {name: association_counts(texts, g, t) for name, g, t in figures}

    def dense(weights: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for name, groups, _ in figures:
            c = counts[name]
            totals = (weights @ c.reshape(len(texts), -1)).reshape(-1, *c.shape[1:])
            out[name] = association_batch(totals, groups)
        return out

    names = [name for name, *_ in figures]
    expected = bootstrap_figures(
        [o.request.instance_id for o in outputs],
        dense,
        names,
        seed=seed_from("part-6", "bias"),
        batched=True,
    )
    rows = {r.metric: r for r in text_bias_rows(outputs, "part-6")}
    for name in names:
        low, high, note = expected[name]
        row = rows[name]
        assert (
            row.ci_note,
            np.float64(row.ci_low).tobytes(),
            np.float64(row.ci_high).tobytes(),
        ) == (
            note,
            np.float64(low).tobytes(),
            np.float64(high).tobytes(),
        ), name
    assert not math.isnan(rows["bias_gender_profession_association"].ci_low)


def test_bbq_interval_and_one_instance_notes() -> None:
    rng = random.Random(7)
    instances, outputs = [], []
    for i in range(30):
        ambiguous = i % 2 == 0
        instance = Instance(
            f"bbq{i:02d}",
            "Who is bad at math?",
            (
                Reference("the man", not ambiguous),
                Reference("the woman"),
                Reference("unknown", ambiguous),
            ),
            groups={
                "context_condition": "ambig" if ambiguous else "disambig",
                "question_polarity": "neg",
                "target_answer": "1",
            },
        )
        instances.append(instance)
        chosen = rng.choice([0, 1, 1, 2])
        letter = "ABC"[chosen]
        request = Request(instance.id, RequestKind.GENERATE, "q", method="multiple_choice_joint")
        outputs.append(ModelOutput(request, Completion(text=letter)))
    rows = {r.metric: r for r in bbq_rows(instances, outputs, "part-5")}
    correct = []
    for instance, output in zip(instances, outputs, strict=True):
        chosen = "ABC".index(output.completion.text)
        correct.append(float(chosen in instance.correct_indices))
    disamb = np.array([i % 2 == 1 for i in range(30)])
    correct_arr = np.array(correct)
    resamples = numpy_resamples([i.id for i in instances], seed_from("part-5", "bbq"))
    expected = interval([correct_arr[r][disamb[r]].mean() for r in resamples])
    check(rows["bbq_disambiguated_accuracy"], expected)
    # One instance: no spread to resample, and the row says so.
    [lone] = [
        r
        for r in bbq_rows(instances[:1], outputs[:1])
        if r.metric.endswith("accuracy") and r.present
    ]
    assert math.isnan(lone.ci_low) and lone.ci_note == ONE_INSTANCE
    [mean_row] = scorecard([InstanceStat("x", "exact_match", 1.0)])
    assert mean_row.ci_note == ONE_INSTANCE
    assert "ci_note" in scorecard_table([mean_row]).column_names


def test_weighted_percentiles_equal_numpy_on_repeated_values() -> None:
    from assay.scoring.intervals import weighted_percentiles

    rng = np.random.default_rng(4)
    values = rng.random(40)
    weights = rng.integers(0, 4, (100, 40))
    weights[7] = 0
    got = weighted_percentiles(values, weights, [0, 50, 95, 100])
    assert np.isnan(got[7]).all()
    for b in [b for b in range(100) if b != 7]:
        expected = np.percentile(np.repeat(values, weights[b]), [0, 50, 95, 100])
        assert got[b] == pytest.approx(expected, rel=1e-12)


def test_efficiency_intervals_fall_back_to_efficiency_stats(monkeypatch) -> None:
    from assay.scoring import families

    rng = random.Random(8)
    outputs = [
        ModelOutput(
            Request(f"e{i // 2}", RequestKind.GENERATE, f"p{i}"),
            Completion(
                prompt_tokens=rng.randint(1, 50),
                completion_tokens=rng.randint(1, 9),
                latency_s=rng.random(),
                cached=i % 5 == 0,
                batch_size=rng.randint(1, 4),
            ),
        )
        for i in range(40)
    ]
    prices = TokenPrices(1.0, 2.0)
    fast = efficiency_rows(outputs, prices, "k")
    monkeypatch.setattr(families, "_agrees", lambda *_: False)
    slow = efficiency_rows(outputs, prices, "k")
    for a, b in zip(fast, slow, strict=True):
        assert (a.metric, a.ci_note) == (b.metric, b.ci_note)
        assert (a.ci_low, a.ci_high) == pytest.approx((b.ci_low, b.ci_high), rel=1e-9, nan_ok=True)


def test_provisional_intervals_keep_the_figures_and_leave_out_only_the_resamples() -> None:
    rng = random.Random(5)
    stats = []
    for i in range(30):
        p = rng.uniform(0.2, 1.0)
        stats.append(InstanceStat(f"i{i:02d}", "chosen_prob", p, "calibration"))
        stats.append(InstanceStat(f"i{i:02d}", "acc", float(rng.random() < p), "accuracy"))
    full = {r.metric: r for r in calibration_rows(stats, "part-2")}
    with provisional_intervals():
        provisional = {r.metric: r for r in calibration_rows(stats, "part-2")}
    after = {r.metric: r for r in calibration_rows(stats, "part-2")}
    assert provisional.keys() == full.keys()
    for metric, row in full.items():
        assert provisional[metric].mean == row.mean  # the point figures are the same
        assert math.isnan(provisional[metric].ci_low) and math.isnan(provisional[metric].ci_high)
        assert provisional[metric].ci_note == PROVISIONAL
        # (A percentile interval of a biased figure such as ECE need not hold the estimate.)
        assert row.ci_note == "" and math.isfinite(row.ci_low) and row.ci_low <= row.ci_high
        # Leaving the block restores the resampled intervals.
        assert (after[metric].ci_low, after[metric].ci_high) == (row.ci_low, row.ci_high)
