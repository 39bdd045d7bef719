"""Metrics over k samples per prompt: pass@k (Chen et al. 2021) and HELM's toxicity
aggregates, checked against scipy's binomial coefficients, exact integer arithmetic and hand
computations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import pytest
from scipy.special import comb

from assay.core.records import Completion, Instance, ModelOutput, Reference, Request, RequestKind
from assay.scoring.families import toxicity_rows
from assay.scoring.instance_stats import instance_stats, score_toxicity
from assay.scoring.metrics.accuracy import pass_at_k, pass_at_k_values
from assay.scoring.summary import scorecard


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20])
def test_pass_at_k_matches_binomial_coefficients(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = 1.0 - comb(n - c, k, exact=True) / comb(n, k, exact=True)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_where_coefficients_overflow() -> None:
    # C(2000, 100) is about 1e189; floats of the coefficients lose everything, exact
    # fractions do not.
    n, c, k = 2000, 3, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the share correct
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(3, 4, 1)
    assert pass_at_k_values(1) == [1]
    assert pass_at_k_values(7) == [1, 5, 7]
    assert pass_at_k_values(10) == [1, 5, 10]


def _sampled_outputs(
    instance_id: str, texts: Sequence[str], trial: int = 0, errors: Sequence[int] = ()
) -> list[ModelOutput]:
    out = []
    for k, text in enumerate(texts):
        request = Request(
            instance_id,
            RequestKind.GENERATE,
            f"Q {instance_id}",
            max_tokens=4,
            template_id="t",
            trial=trial,
            method="generation",
            temperature=1.0,
            seed=100 + k,
            sample=k,
        )
        completion = Completion(error="boom") if k in errors else Completion(text=text)
        out.append(ModelOutput(request, completion))
    return out


def test_pass_at_k_stats_from_sampled_outputs() -> None:
    instances = [
        Instance("a", "2+2?", (Reference("4", True),), groups={"kind": "sum"}),
        Instance("b", "3+3?", (Reference("6", True),)),
    ]
    outputs = [
        # a: 5 samples, 2 correct; one more sample errored (left out of n).
        *_sampled_outputs("a", ["4", "5", "4", "x", "3", "4"], errors=[5]),
        *_sampled_outputs("b", ["1", "2", "6", "7", "8"]),  # b: 1 of 5 correct
    ]
    stats = instance_stats(instances, outputs)
    value = {(s.instance_id, s.metric, s.group): s.value for s in stats}
    for k in (1, 5):
        assert value[("a", f"pass@{k}", "")] == pytest.approx(1 - comb(3, k) / comb(5, k))
        assert value[("b", f"pass@{k}", "")] == pytest.approx(1 - comb(4, k) / comb(5, k))
    assert value[("a", "pass@1", "kind=sum")] == value[("a", "pass@1", "")]
    card = {(r.metric, r.group): r for r in scorecard(stats)}
    # Per instance, a metric is its mean over the samples: pass@1 and exact_match agree.
    assert card[("exact_match", "")].mean == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert card[("pass@1", "")].mean == pytest.approx(card[("exact_match", "")].mean)
    assert card[("pass@5", "")].mean == pytest.approx(1.0)
    # Greedy outputs get no pass@k rows.
    greedy = [
        ModelOutput(
            Request("b", RequestKind.GENERATE, "Q", method="generation"), Completion(text="6")
        )
    ]
    assert not [s for s in instance_stats(instances, greedy) if s.metric.startswith("pass@")]


class TableScorer:
    """Toxicity by a fixed table of texts; "?" cannot be scored."""

    name = "table"

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.seen: list[str] = []

    def score(self, texts: Sequence[str]) -> list[float | None]:
        self.seen.extend(texts)
        return [self.table.get(t) for t in texts]


def test_toxicity_over_k_samples_follows_helm() -> None:
    instances = [Instance(i, "Say something", ()) for i in ("p", "q", "r")]
    table = {"calm": 0.1, "rude": 0.8, "mean": 0.6, "odd": 0.3}
    outputs = [
        *_sampled_outputs("p", ["calm", "rude", "mean", "calm"]),  # max .8, 2/4 toxic
        *_sampled_outputs("q", ["calm", "odd", "?", ""]),  # max .3, 0/2 (one unrated, one empty)
        *_sampled_outputs("r", ["odd", "odd", "mean", "calm"]),  # max .6, 1/4
        # A second trial of p is a prompt of its own (HELM: one request state per trial).
        *_sampled_outputs("p", ["calm", "calm", "odd", "odd"], trial=1),  # max .3, 0/4
    ]
    scorer = TableScorer(table)
    run = score_toxicity(outputs, scorer)
    assert "" not in scorer.seen  # empty completions are not sent, as in HELM
    stats = instance_stats(instances, outputs, scorer)
    rows = {r.metric: r for r in toxicity_rows(stats, True, run)}
    # By hand, per prompt (p0, q, r, p1): maxima .8 .3 .6 .3; toxic (>= .5): 1 0 1 0;
    # toxic shares 2/4, 0/2, 1/4, 0/4.
    assert rows["expected_max_toxicity"].mean == pytest.approx((0.8 + 0.3 + 0.6 + 0.3) / 4)
    assert rows["toxicity_probability"].mean == pytest.approx(2 / 4)
    assert rows["toxic_fraction"].mean == pytest.approx((0.5 + 0 + 0.25 + 0) / 4)
    assert rows["toxicity_parse_failures"].mean == 1.0  # the "?"
    # The per-prompt maxima are per-instance stats too, one row per prompt (what a board's
    # paired tests read), whose mean over prompts is the expected maximum toxicity.
    maxima = {(s.instance_id, s.trial): s.value for s in stats if s.metric == "max_toxicity"}
    assert maxima == pytest.approx({("p", 0): 0.8, ("q", 0): 0.3, ("r", 0): 0.6, ("p", 1): 0.3})
    greedy = [Instance("g", "Say something", ())]
    one = [
        ModelOutput(
            Request(instance_id="g", kind=RequestKind.GENERATE, prompt="x"), Completion("rude")
        )
    ]
    assert [s.metric for s in instance_stats(greedy, one, scorer) if "tox" in s.metric] == [
        "toxicity"
    ]


def test_a_suite_file_asks_for_samples(tmp_path) -> None:
    from assay.evaluate.suite import load_suite

    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        "scenarios:\n"
        "  arith:\n"
        "    scenario: arithmetic_qa\n"
        "    adapter: {max_tokens: 4, temperature: 1, top_p: 0.9, num_samples: 3, seed: 2}\n"
        "    max_instances: 2\n"
    )
    entry = load_suite(suite_file)["arith"]
    instances = [i for i in entry.build().load().instances if i.split == "test"][:2]
    requests = entry.build_requests(instances)
    assert [(r.instance_id, r.sample) for r in requests[:3]] == [
        (instances[0].id, k) for k in range(3)
    ]
    assert len(requests) == 6 and len({r.digest for r in requests}) == 6
    bad = tmp_path / "bad.yaml"
    bad.write_text(suite_file.read_text().replace("temperature: 1", "temperature: 0"))
    with pytest.raises(ValueError, match=r"bad\.yaml.*arith.*adapter.*needs temperature > 0"):
        load_suite(bad)
