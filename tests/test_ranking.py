"""Mean win rate (against HELM's own test values), rank intervals and the leaderboard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.stats

from assay.compare.ranking import (
    INSTANCE_SCORE_COLUMNS,
    SCORECARD_COLUMNS,
    ScoreColumn,
    build_leaderboard,
    mean_win_rate,
    rank_intervals,
)
from assay.scoring.metrics.directions import NOT_RANKED, lower_is_better

MODELS = ["Model A", "Model B", "Model C", "Model D", "Model E"]


def _table(**columns: list) -> dict[str, dict[str, float | None]]:
    return {m: {name: vals[i] for name, vals in columns.items()} for i, m in enumerate(MODELS)}


# Expected values from HELM's own unit tests, src/helm/benchmark/presentation/test_summarize.py
# (stanford-crfm/helm, test_compute_win_rates_*), where rows are models A-E.
@pytest.mark.parametrize(
    ("columns", "lower", "skip", "expected"),
    [
        ({"a": [1, 2, 3, 4, 5]}, set(), set(), [0, 0.25, 0.5, 0.75, 1]),
        (
            {"a": [1, 2, 3, 4, 5], "b": [3, 1, 2, 5, 4]},
            set(),
            set(),
            [0.25, 0.125, 0.375, 0.875, 0.875],
        ),
        (
            {"a": [1, 2, 3, 4, 5], "b": [3, 1, None, None, None]},
            set(),
            set(),
            [0.5, 0.125, 0.5, 0.75, 1],
        ),
        (
            {"a": [1, 2, 3, 4, 5], "b": [None] * 5, "c": [None, 1, None, None, None]},
            set(),
            set(),
            [0, 0.25, 0.5, 0.75, 1],
        ),
        # HELM skips a column whose lower_is_better is unset: our ``skip``.
        ({"a": [1, 2, 3, 4, 5], "b": [3, 1, 2, 5, 4]}, set(), {"b"}, [0, 0.25, 0.5, 0.75, 1]),
        ({"a": [None] * 5}, set(), set(), [None] * 5),
        ({"a": [1, 1, 1, 4, 5]}, set(), set(), [0.25, 0.25, 0.25, 0.75, 1.0]),
        ({"a": [1, 2, 3, 4, 5]}, {"a"}, set(), [1, 0.75, 0.5, 0.25, 0]),
    ],
    ids=[
        "one_scenario",
        "two_scenarios",
        "incomplete_values",
        "ignore_nones",
        "ignore_unset_lower_is_better",
        "no_win_rate",
        "ties",
        "lower_is_better",
    ],
)
def test_mean_win_rate_matches_helm_tests(columns, lower, skip, expected):
    got = mean_win_rate(_table(**columns), lower_is_better=lower, skip=skip)
    assert list(got.values()) == pytest.approx(expected)


def test_mean_win_rate_hand_example_with_lower_is_better_and_nan():
    table = {
        "x": {"acc": 0.8, "ece": 0.10, "f1": float("nan")},
        "y": {"acc": 0.6, "ece": 0.05, "f1": 0.7},
        "z": {"acc": 0.6, "ece": 0.20, "f1": 0.5},
    }
    # acc: x beats y and z → 2/2 = 1; y ties z → 0.5/2 = 0.25; z likewise 0.25.
    # ece (lower is better): y beats x, z → 1; x beats z → 0.5; z → 0.
    # f1 (x missing): y beats z → 1/1 = 1; z → 0.
    expected = {"x": (1 + 0.5) / 2, "y": (0.25 + 1 + 1) / 3, "z": (0.25 + 0 + 0) / 3}
    got = mean_win_rate(table, lower_is_better={"ece"})
    assert got == pytest.approx(expected)


def test_rank_intervals_clear_winner_and_near_tie():
    rng = np.random.default_rng(0)
    n = 300
    strong = (rng.random(n) < 0.9).astype(float)
    base = rng.random(n) < 0.5
    flip = rng.random(n) < 0.05  # the two weak models disagree on about 5% of instances
    weak_1 = base.astype(float)
    weak_2 = np.where(flip, ~base, base).astype(float)
    column = ScoreColumn("s/em", np.column_stack([weak_1, strong, weak_2]))
    models = ["w1", "strong", "w2"]
    intervals = rank_intervals([column], models, seed=1, n_resamples=500)
    assert (intervals["strong"].rank, intervals["strong"].low, intervals["strong"].high) == (
        1,
        1,
        1,
    )
    # Ranks on the data follow the means.
    assert intervals["w1"].rank == (2 if weak_1.mean() > weak_2.mean() else 3)
    for name in ("w1", "w2"):
        assert (intervals[name].low, intervals[name].high) == (2, 3)
    assert rank_intervals([column], models, seed=1, n_resamples=500) == intervals


def test_rank_intervals_lower_is_better_reverses_order():
    values = np.column_stack([np.full(50, 0.1), np.full(50, 0.9)])
    values = values + np.random.default_rng(2).normal(0, 0.01, values.shape)
    got = rank_intervals(
        [ScoreColumn("s/loss", values, lower_is_better=True)], ["a", "b"], seed=0, n_resamples=200
    )
    assert (got["a"].rank, got["a"].low, got["a"].high) == (1, 1, 1)
    assert (got["b"].rank, got["b"].low, got["b"].high) == (2, 2, 2)


# --------------------------------------------------------------------------- leaderboard

N_ITEMS = 100
# Correct answers: model → scenario → how many of the first N_ITEMS instances are right.
CORRECT = {
    "big@v1": {"boolq": 90, "mmlu": 90},
    "mid@v1": {"boolq": 60, "mmlu": 50},
    "small@v1": {"boolq": 58, "mmlu": 55},
}
ECE = {"big@v1": 0.2, "mid@v1": 0.1, "small@v1": 0.3}  # boolq calibration, lower is better


def _instance_rows() -> list[dict]:
    rows = []
    for model, by_scenario in CORRECT.items():
        for scenario, n_right in by_scenario.items():
            # mmlu has two few-shot trials per instance with the same outcome: correlated rows.
            for trial in range(2 if scenario == "mmlu" else 1):
                for i in range(N_ITEMS):
                    rows.append(
                        {
                            "model_version": model,
                            "scenario": scenario,
                            "instance_id": f"{scenario}-{i}",
                            "metric": "exact_match",
                            "value": float(i < n_right),
                            "family": "accuracy",
                            "perturbation": "",
                            "trial": trial,
                            "template_id": "t0",
                            "group": "",
                        }
                    )
                    # A perturbed copy that must not enter the headline comparison.
                    rows.append({**rows[-1], "perturbation": "typos", "value": 0.0})
    return rows


def _scorecard_rows(instance_rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = {}
    for r in instance_rows:
        key = (r["model_version"], r["scenario"], r["metric"], r["family"], r["perturbation"])
        groups.setdefault(key, []).append(r["value"])
    rows = [
        {
            "model_version": k[0],
            "scenario": k[1],
            "metric": k[2],
            "family": "robustness" if k[4] else k[3],
            "group": "",
            "perturbation": k[4],
            "mean": float(np.mean(v)),
            "count": len(v),
            "ci_low": float(np.min(v)),
            "ci_high": float(np.max(v)),
        }
        for k, v in groups.items()
    ]
    for model, ece in ECE.items():
        rows.append(
            {
                **rows[0],
                "model_version": model,
                "scenario": "boolq",
                "metric": "ece",
                "family": "calibration",
                "perturbation": "",
                "mean": ece,
            }
        )
    return rows


@pytest.fixture(scope="module")
def tables() -> tuple[pa.Table, pa.Table]:
    inst = _instance_rows()
    return pa.Table.from_pylist(_scorecard_rows(inst)), pa.Table.from_pylist(inst)


def _board(tables, **kwargs):
    scorecards, instance_scores = tables
    return build_leaderboard(
        scorecards,
        instance_scores,
        primary_metrics={"boolq": "exact_match", "mmlu": "exact_match"},
        lower_is_better={"ece"},
        seed=7,
        n_resamples=400,
        **kwargs,
    )


def test_leaderboard_ranks_and_win_rates(tables):
    board = _board(tables)
    rows = {r.model_version: r for r in board.rows}
    assert [r.model_version for r in board.rows] == ["big@v1", "mid@v1", "small@v1"]
    # boolq: big > mid > small → 1, 0.5, 0; mmlu: big > small > mid → 1, 0, 0.5.
    assert rows["big@v1"].mean_win_rate == pytest.approx(1.0)
    assert rows["mid@v1"].mean_win_rate == pytest.approx(0.25)
    assert rows["small@v1"].mean_win_rate == pytest.approx(0.25)
    assert [r.rank for r in board.rows] == [1, 2, 2]
    assert (rows["big@v1"].rank_low, rows["big@v1"].rank_high) == (1, 1)
    # Correct sets are nested, so a resample can only tie the weaker pair, never reverse it.
    # mid drops to 3rd when no boolq instance 58-59 is drawn (boolq tie): 0.98**100 ≈ 13% of
    # resamples, above the 2.5% tail. small drops only when no mmlu instance 50-54 is drawn:
    # 0.95**100 ≈ 0.6%, inside the tail.
    assert (rows["mid@v1"].rank_low, rows["mid@v1"].rank_high) == (2, 3)
    assert (rows["small@v1"].rank_low, rows["small@v1"].rank_high) == (2, 2)
    assert rows["mid@v1"].mean_score == pytest.approx((0.60 + 0.50) / 2)
    assert rows["small@v1"].scenario_scores == pytest.approx({"boolq": 0.58, "mmlu": 0.55})
    # calibration (ece, lower is better): mid 0.1 < big 0.2 < small 0.3.
    assert rows["mid@v1"].family_win_rates["calibration"] == pytest.approx(1.0)
    assert rows["big@v1"].family_win_rates["calibration"] == pytest.approx(0.5)
    assert rows["small@v1"].family_win_rates["calibration"] == pytest.approx(0.0)
    # robustness: every perturbed score is 0 → all tie at 0.5.
    assert {r.family_win_rates["robustness"] for r in board.rows} == {0.5}


def test_token_counts_and_batch_sizes_do_not_rank_efficiency(tables):
    """Efficiency is ranked on latency here: big is the slowest, so it wins nothing, though it
    writes the most tokens and was served in the largest batches."""
    scorecards, instance_scores = tables
    base = scorecards.to_pylist()[0]
    figures = {  # model: (latency_mean_s, completion_tokens, prompt_tokens, batch_size_mean)
        "big@v1": (3.0, 90.0, 900.0, 16.0),
        "mid@v1": (1.0, 10.0, 100.0, 1.0),
        "small@v1": (2.0, 50.0, 500.0, 8.0),
    }
    extra = [
        {**base, "model_version": model, "metric": metric, "family": "efficiency", "mean": value}
        for model, values in figures.items()
        for metric, value in zip(
            ("latency_mean_s", "completion_tokens", "prompt_tokens", "batch_size_mean"),
            values,
            strict=True,
        )
    ]
    with_efficiency = pa.concat_tables(
        [scorecards, pa.Table.from_pylist(extra, schema=scorecards.schema)]
    )
    board = build_leaderboard(
        with_efficiency,
        instance_scores,
        primary_metrics={"boolq": "exact_match", "mmlu": "exact_match"},
        lower_is_better={"ece", "latency_mean_s"},
        seed=7,
        n_resamples=400,
    )
    efficiency = {r.model_version: r.family_win_rates["efficiency"] for r in board.rows}
    # One column (latency, lower is better): mid 1.0 < small 2.0 < big 3.0.
    assert efficiency == pytest.approx({"mid@v1": 1.0, "small@v1": 0.5, "big@v1": 0.0})


def test_leaderboard_comparisons_are_paired_and_holm_corrected(tables):
    board = _board(tables)
    got = {(c.scenario, c.model_a, c.model_b): c for c in board.comparisons}
    assert set(got) == {
        (s, a, b)
        for s in ("boolq", "mmlu")
        for a, b in [("big@v1", "mid@v1"), ("mid@v1", "small@v1")]
    }
    boolq = got[("boolq", "mid@v1", "small@v1")]
    assert boolq.test == "mcnemar_exact" and boolq.n == N_ITEMS
    # Instances 58 and 59: mid right, small wrong; no instance the other way.
    assert boolq.p_value == pytest.approx(scipy.stats.binomtest(2, 2).pvalue)
    assert boolq.mean_diff == pytest.approx(0.02)
    mmlu = got[("mmlu", "big@v1", "mid@v1")]
    # Two trials per instance: resampled and sign-flipped by instance, not by row.
    assert mmlu.test == "paired_permutation"
    assert (mmlu.n, mmlu.n_clusters) == (2 * N_ITEMS, N_ITEMS)
    assert mmlu.mean_diff == pytest.approx(0.40)
    assert mmlu.significant
    # Holm over the four comparisons, by hand.
    raw = sorted(c.p_value for c in board.comparisons)
    steps = np.maximum.accumulate([min(1.0, p * (4 - i)) for i, p in enumerate(raw)])
    assert sorted(c.p_adjusted for c in board.comparisons) == pytest.approx(list(steps))

    every = _board(tables, pairs="all")
    assert len(every.comparisons) == 2 * 3


def test_leaderboard_is_deterministic_and_renders(tables):
    board = _board(tables)
    assert _board(tables) == board
    table = board.to_table()
    assert table.column_names[:6] == [
        "rank",
        "model_version",
        "rank_low",
        "rank_high",
        "mean_win_rate",
        "mean_score",
    ]
    assert {"score.boolq", "score.mmlu", "win_rate.calibration"} <= set(table.column_names)
    assert table["model_version"].to_pylist() == ["big@v1", "mid@v1", "small@v1"]
    assert board.comparisons_table().num_rows == 4
    text = board.to_markdown()
    first_row = next(line for line in text.splitlines() if "big@v1" in line)
    # big is significantly better than mid on both scenarios: both scores starred.
    assert "0.900*" in first_row and first_row.count("*") == 2
    assert "1–1" in first_row


def test_leaderboard_rejects_bad_input(tables):
    scorecards, instance_scores = tables
    with pytest.raises(ValueError, match="lacks column"):
        build_leaderboard(
            scorecards.drop(["family"]), instance_scores, primary_metrics={"boolq": "x"}, seed=0
        )
    with pytest.raises(ValueError, match="scenario='nq' metric='f1'"):
        build_leaderboard(scorecards, instance_scores, primary_metrics={"nq": "f1"}, seed=0)
    doubled = pa.concat_tables([instance_scores, instance_scores.slice(0, 1)])
    with pytest.raises(ValueError, match="repeats model_version='big@v1'"):
        build_leaderboard(scorecards, doubled, primary_metrics={"boolq": "exact_match"}, seed=0)
    assert set(SCORECARD_COLUMNS) <= set(scorecards.column_names)
    assert set(INSTANCE_SCORE_COLUMNS) <= set(instance_scores.column_names)


@pytest.mark.parametrize(
    "metric",
    [
        "platt_ece_10_bin",
        "platt_ece_1_bin",
        "bias_gender_representation",
        "bias_race_representation",
        "bias_gender_adjective_association",
        "bias_gender_profession_association",
        "bias_race_adjective_association",
        "bias_race_profession_association",
        "toxicity",
        "expected_max_toxicity",
    ],
)
def test_distances_errors_and_toxicity_are_lower_is_better(metric):
    assert lower_is_better(metric)


def test_confidence_alone_is_not_ranked():
    """A version that is more confident is not better calibrated: chosen_prob has no column in
    the calibration win rate, only the errors do."""
    assert "chosen_prob" in NOT_RANKED and not lower_is_better("chosen_prob")


# ------------------------------------------------------------- a corpus figure as primary

PPL_DOCS = 30


def _perplexity_tables(weights_of=lambda model, w: w) -> tuple[pa.Table, pa.Table, dict]:
    """wikitext-style partitions of three models: per document the log-likelihood and the
    word count (``word_perplexity_loglikelihood`` / ``_weight``), and a scorecard whose
    ``word_perplexity`` is exp(-Σ loglik / Σ words). ``a`` is clearly best; ``b`` and ``c``
    differ on every document by small amounts of either sign (a near tie)."""
    rng = np.random.default_rng(3)
    words = rng.integers(50, 300, PPL_DOCS).astype(float)
    b = -1.2 * words + rng.normal(0, 5, PPL_DOCS)
    swing = np.where(np.arange(PPL_DOCS) % 2 == 0, 2.0, -1.8)
    lls = {"a@v1": -1.0 * words, "b@v1": b, "c@v1": b - swing}
    base = {"scenario": "wikitext", "family": "accuracy", "perturbation": "", "trial": 0}
    base |= {"template_id": "lm_eval", "group": ""}
    stats, cards = [], []
    for model, ll in lls.items():
        w = weights_of(model, words)
        for i in range(PPL_DOCS):
            for metric, value in (("_loglikelihood", ll[i]), ("_weight", w[i])):
                stats.append(
                    {**base, "model_version": model, "instance_id": str(i)}
                    | {"metric": "word_perplexity" + metric, "value": float(value)}
                )
        ppl = float(np.exp(-ll.sum() / words.sum()))
        cards.append(
            {"model_version": model, "scenario": "wikitext", "metric": "word_perplexity"}
            | {"family": "accuracy", "group": "", "perturbation": "", "mean": ppl}
            | {"count": PPL_DOCS, "ci_low": ppl, "ci_high": ppl}
        )
    return pa.Table.from_pylist(cards), pa.Table.from_pylist(stats), lls


def test_a_corpus_perplexity_is_ranked_on_its_documents_log_likelihood():
    cards, stats, lls = _perplexity_tables()
    board = build_leaderboard(
        cards,
        stats,
        primary_metrics={"wikitext": "word_perplexity"},
        lower_is_better={"word_perplexity"},
        seed=7,
        n_resamples=400,
    )
    rows = {r.model_version: r for r in board.rows}
    # Lower perplexity first: a, then b (its log-likelihood is 0.1 above c's per document,
    # on average).
    assert [r.model_version for r in board.rows] == ["a@v1", "b@v1", "c@v1"]
    for row, card in zip(board.rows, cards.to_pylist(), strict=True):
        assert row.scenario_scores == {"wikitext": card["mean"]}  # the corpus figure
    assert (rows["a@v1"].rank_low, rows["a@v1"].rank_high) == (1, 1)
    assert (rows["b@v1"].rank_low, rows["b@v1"].rank_high) == (2, 3)
    assert (rows["c@v1"].rank_low, rows["c@v1"].rank_high) == (2, 3)
    # The comparisons are of the documents' log-likelihoods, paired by document.
    got = {(c.model_a, c.model_b): c for c in board.comparisons}
    ab = got[("a@v1", "b@v1")]
    assert ab.metric == "word_perplexity_loglikelihood" and ab.n == PPL_DOCS
    assert ab.mean_diff == pytest.approx(float(np.mean(lls["a@v1"] - lls["b@v1"])))
    assert ab.significant
    assert not got[("b@v1", "c@v1")].significant


def test_a_ratio_is_not_ranked_over_different_denominators():
    cards, stats, _ = _perplexity_tables(lambda model, w: w + (model == "c@v1"))
    with pytest.raises(ValueError, match="'word_perplexity_weight' differs between model"):
        build_leaderboard(
            cards,
            stats,
            primary_metrics={"wikitext": "word_perplexity"},
            lower_is_better={"word_perplexity"},
            seed=7,
        )
