"""A promotion criterion and the per-partition regression check on a corpus figure (an
lm-eval perplexity: exp(-Σ log-likelihood / Σ words), with no per-instance value): tested,
not judged on the two estimates alone, by a paired bootstrap of the perplexity itself over the
documents both versions have, both parts of a document resampled together
(``assay.compare.corpus_figures``)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assay.compare.decision import judge_promotion
from assay.core.records import InstanceStat
from assay.evaluate.suite import parse_suite
from assay.scoring.summary import ratio_rows, scorecard_table
from assay.storage.parquet import ParquetStore

REPO = Path(__file__).resolve().parent.parent
PROSE = REPO / "tests" / "fixtures" / "lm_eval_rolling" / "prose.jsonl"
N_DOCS = 40
LL, WEIGHT = "word_perplexity_loglikelihood", "word_perplexity_weight"

pytest.importorskip("lm_eval")


def _suite(margin: float, mode: str = "require_non_inferiority", **promotion_settings):
    entry = {
        "scenario": "lm_eval",
        "args": {"task": "wikitext", "data_files": {"test": str(PROSE)}},
        "primary_metric": "word_perplexity",
    }
    promotion = {"mode": mode, "margin": margin, "n_resamples": 2000, **promotion_settings}
    return parse_suite({"scenarios": {"prose": entry}, "promotion": promotion}, "s.yaml", REPO)


def _write(store: ParquetStore, version: str, ll: np.ndarray, words: np.ndarray) -> None:
    stats = [
        InstanceStat(str(i), metric, float(value))
        for i in range(N_DOCS)
        for metric, value in ((LL, ll[i]), (WEIGHT, words[i]))
    ]
    card = ratio_rows(
        stats, {"word_perplexity": (LL, WEIGHT)}, version, transforms={"word_perplexity": "exp_neg"}
    )
    card = [replace(row, lower_is_better=True) for row in card]
    where = {"model_version": version, "scenario": "prose"}
    store.write("instance_scores", where, InstanceStat.to_table(stats))
    store.write("metric_tables", where, scorecard_table(card))


def _documents() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    words = rng.integers(40, 400, N_DOCS).astype(float)
    return words, -1.2 * words + rng.normal(0, 8, N_DOCS)


def _perplexity(ll: np.ndarray, words: np.ndarray) -> float:
    return math.exp(-ll.sum() / words.sum())


def _bootstrap_interval(a, b, words, alpha=0.05, n=20_000, seed=5) -> tuple[float, float]:
    """The percentile interval of ppl(candidate) − ppl(incumbent), documents resampled: an
    independent draw (another seed, ten times the resamples)."""
    draws = np.random.default_rng(seed).integers(0, len(words), size=(n, len(words)))
    w = words[draws].sum(axis=1)
    diff = np.exp(-a[draws].sum(axis=1) / w) - np.exp(-b[draws].sum(axis=1) / w)
    low, high = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def test_a_worse_perplexity_is_refused_by_a_test(tmp_path: Path) -> None:
    words, incumbent = _documents()
    candidate = incumbent - 0.08 * words  # 0.08 nats per word worse on every document
    store = ParquetStore(str(tmp_path / "storage"))
    _write(store, "m@v1", incumbent, words)
    _write(store, "m@v2", candidate, words)
    decision = judge_promotion(store, _suite(margin=0.1), "m@v2", "m@v1")
    (result,) = [r for r in decision.criteria if r.kind == "relative"]
    expected = _perplexity(candidate, words) - _perplexity(incumbent, words)
    assert expected > 0.1  # worse by more than the margin (higher perplexity)
    assert result.metric == "word_perplexity" and result.n == N_DOCS
    assert result.estimate == pytest.approx(expected)
    low, high = _bootstrap_interval(candidate, incumbent, words)
    assert result.ci_low == pytest.approx(low, rel=0.05)
    assert result.ci_high == pytest.approx(high, rel=0.05)
    assert result.outcome == "fail" and result.p_value is not None and result.p_value > 0.5
    assert "ratio of sums" in result.note and not decision.approved


def test_an_equal_perplexity_is_shown_non_inferior(tmp_path: Path) -> None:
    words, incumbent = _documents()
    noise = np.random.default_rng(2).normal(0, 2, N_DOCS)
    candidate = incumbent + noise - noise.mean()  # the same corpus log-likelihood
    store = ParquetStore(str(tmp_path / "storage"))
    _write(store, "m@v1", incumbent, words)
    _write(store, "m@v2", candidate, words)
    decision = judge_promotion(store, _suite(margin=0.1), "m@v2", "m@v1")
    (result,) = [r for r in decision.criteria if r.kind == "relative"]
    assert abs(result.estimate) < 0.01
    assert result.ci_high < 0.1 and result.p_value < 0.01
    assert result.outcome == "pass" and decision.approved
    # Under block_regressions the same pair is no confident regression.
    blocked = judge_promotion(store, _suite(0.1, "block_regressions"), "m@v2", "m@v1")
    assert blocked.approved


def test_other_word_counts_fall_back_to_the_estimates(tmp_path: Path) -> None:
    words, incumbent = _documents()
    store = ParquetStore(str(tmp_path / "storage"))
    _write(store, "m@v1", incumbent, words)
    _write(store, "m@v2", incumbent, words + 1)  # not the same documents' counts
    decision = judge_promotion(store, _suite(margin=0.1), "m@v2", "m@v1")
    (result,) = [r for r in decision.criteria if r.kind == "relative"]
    assert result.p_value is None and "untested" in result.note


def test_a_sequential_decision_holds_a_corpus_figure_to_the_full_set(tmp_path: Path) -> None:
    from assay.compare.sequential import judge_sequential

    words, incumbent = _documents()
    store = ParquetStore(str(tmp_path / "storage"))
    _write(store, "m@v1", incumbent, words)
    _write(store, "m@v2", incumbent - 0.08 * words, words)
    suite = _suite(margin=0.1, sequential={"chunk": 10})
    replayed = judge_sequential(store, suite, "m@v2", "m@v1")
    # Not stopped at the first chunk on an untested estimate: evaluated to the full set,
    # then tested on the ratio.
    assert replayed.scenarios["prose"].evaluated == N_DOCS
    (result,) = [r for r in replayed.decision.criteria if r.kind == "relative"]
    assert result.n == N_DOCS and result.p_value is not None
    assert "ratio of sums" in result.note and not replayed.decision.approved


# ------------------------------------------------------------ the per-partition regression check


@pytest.fixture
def gated(tmp_path: Path):
    """A store and a registry whose ``champion`` is m@v1; the check gates m@v2 on the suite's
    primary metric, word_perplexity, a corpus figure."""
    from assay.registry import Registry

    reg = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", gated_aliases=[])
    reg.create_model("m")
    for _ in range(2):
        reg.create_version("m", "bundled:smollm2-135m-instruct")
    reg.set_alias("m", "champion", 1)
    yield ParquetStore(str(tmp_path / "storage")), reg
    reg.close()


def _gate(store: ParquetStore, reg, margin: float = 0.0):
    from assay.compare.gate import GateConfig, gate_partition

    config = GateConfig.from_suite(_suite(margin=0.1), margin=margin)
    result = gate_partition(store, reg, config, candidate="m@v2", scenario="prose")
    return result, reg.get_version("m@v2").tags.get("gate.prose")


def test_the_regression_check_blocks_a_worse_perplexity(gated) -> None:
    store, reg = gated
    words, incumbent = _documents()
    candidate = incumbent - 0.08 * words
    _write(store, "m@v1", incumbent, words)
    _write(store, "m@v2", candidate, words)
    result, tag = _gate(store, reg)
    (c,) = result.comparisons
    assert c.metric == "word_perplexity" and c.lower_is_better
    assert c.n == c.n_clusters == N_DOCS and c.unpaired_rows == 0
    assert c.test == "paired_ratio_bootstrap"
    assert c.candidate_mean == pytest.approx(_perplexity(candidate, words))
    assert c.champion_mean == pytest.approx(_perplexity(incumbent, words))
    assert c.diff == pytest.approx(c.candidate_mean - c.champion_mean) and c.diff > 0
    # The interval of ppl(candidate) − ppl(champion) in perplexity units, as an independent
    # bootstrap (another seed, ten times the resamples) gives it.
    low, high = _bootstrap_interval(candidate, incumbent, words)
    assert c.ci_low == pytest.approx(low, rel=0.05)
    assert c.ci_high == pytest.approx(high, rel=0.05)
    assert c.regressed and c.p_adjusted < 0.05
    assert not result.passed and tag == "failed"
    assert "word_perplexity" in result.reason


def test_the_regression_check_passes_an_equal_or_better_perplexity(gated) -> None:
    store, reg = gated
    words, incumbent = _documents()
    noise = np.random.default_rng(2).normal(0, 2, N_DOCS)
    _write(store, "m@v1", incumbent, words)
    _write(store, "m@v2", incumbent + noise - noise.mean(), words)  # the same log-likelihood
    result, tag = _gate(store, reg)
    (c,) = result.comparisons
    assert abs(c.diff) < 0.01 and c.ci_low < 0 < c.ci_high and not c.regressed
    assert result.passed and tag == "passed"
    _write(store, "m@v2", incumbent + 0.08 * words, words)  # clearly better
    result, tag = _gate(store, reg)
    (c,) = result.comparisons
    assert c.diff < 0 and c.ci_high < 0 and not c.regressed
    assert result.passed and tag == "passed"


def test_the_regression_check_tolerates_a_loss_within_the_margin(gated) -> None:
    store, reg = gated
    words, incumbent = _documents()
    candidate = incumbent - 0.01 * words
    _write(store, "m@v1", incumbent, words)
    _write(store, "m@v2", candidate, words)
    loss = _perplexity(candidate, words) - _perplexity(incumbent, words)
    assert 0 < loss < 0.5
    worse, _ = _gate(store, reg, margin=0.0)
    tolerated, tag = _gate(store, reg, margin=0.5)  # in perplexity units
    assert not worse.passed and worse.comparisons[0].regressed
    assert tolerated.passed and tag == "passed"


def test_the_regression_check_fails_a_corpus_figure_it_cannot_test(gated) -> None:
    store, reg = gated
    words, incumbent = _documents()
    _write(store, "m@v1", incumbent, words)
    _write(store, "m@v2", incumbent, words + 1)  # not the same documents' counts
    result, tag = _gate(store, reg)
    assert not result.passed and tag == "failed" and not result.comparisons
    assert "corpus figure 'word_perplexity'" in result.reason
    assert "equal denominators" in result.reason
