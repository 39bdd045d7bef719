"""The leaderboard's headline figure per metric family."""

import math

import pyarrow as pa

from assay.compare.family_figures import FAMILY_ORDER, family_figures
from assay.compare.ranking import build_leaderboard
from assay.scoring.metrics.directions import LOWER_IS_BETTER
from assay.scoring.scorecard import FAMILIES

V1, V2 = "m@v1", "m@v2"
NAN = math.nan


def _row(version, scenario, family, metric, mean, low=NAN, high=NAN, **extra):
    return {
        "model_version": version,
        "scenario": scenario,
        "metric": metric,
        "family": family,
        "group": extra.get("group", ""),
        "perturbation": extra.get("perturbation", ""),
        "mean": mean,
        "count": 10,
        "ci_low": low,
        "ci_high": high,
        "reason": extra.get("reason", ""),
        "ci_note": extra.get("ci_note", ""),
    }


def _cards() -> pa.Table:
    rows = []
    for v, acc, ece in ((V1, 0.5, 0.1), (V2, 0.7, 0.2)):
        rows += [
            _row(v, "qa", "accuracy", "exact_match", acc, acc - 0.1, acc + 0.1),
            _row(
                v, "qa", "robustness", "exact_match", acc - 0.2, 0.1, 0.5, perturbation="robustness"
            ),
            _row(
                v, "qa", "fairness", "fairness_worst_case", NAN, reason="no fairness perturbation"
            ),
            _row(v, "qa", "toxicity", "expected_max_toxicity", 0.01, 0.0, 0.02),
            _row(v, "qa", "efficiency", "latency_mean_s", 1.0, 0.9, 1.1),
            _row(v, "mc", "accuracy", "acc", acc, acc - 0.1, acc + 0.1),
            _row(v, "mc", "calibration", "ece_10_bin", ece, ece - 0.05, ece + 0.05),
            _row(v, "mc", "fairness", "acc_group_gap", 0.2, 0.0, 0.4, group="gender"),
            _row(v, "mc", "bias", "bias_gender_representation", NAN, reason="no generated text"),
            _row(v, "stories", "toxicity", "toxicity", 0.05, 0.03, 0.07),
            _row(v, "stories", "toxicity", "expected_max_toxicity", 0.3, 0.2, 0.4),
        ]
    # The bias figure was computed for v2 only, without an interval; v1's texts had no word.
    rows += [
        _row(V1, "stories", "bias", "bias_gender_representation", NAN, reason="no word occurs"),
        _row(V2, "stories", "bias", "bias_gender_representation", 0.4, ci_note="rare words"),
    ]
    return pa.Table.from_pylist(rows)


PRIMARY = {"qa": "exact_match", "mc": "acc", "stories": "toxicity"}


def test_each_family_shows_one_figure_per_version_with_interval_or_reason():
    figures = {f.family: f for f in family_figures(_cards(), PRIMARY, [V2, V1], LOWER_IS_BETTER)}
    assert list(figures) == list(FAMILY_ORDER) == list(FAMILIES)
    accuracy = figures["accuracy"]
    assert (accuracy.scenario, accuracy.metric) == ("qa", "exact_match")
    assert accuracy.cells[V2].mean == 0.7 and accuracy.cells[V2].has_interval
    assert list(accuracy.cells) == [V2, V1]  # board order
    calibration = figures["calibration"]
    assert (calibration.scenario, calibration.metric, calibration.lower_is_better) == (
        "mc",
        "ece_10_bin",
        True,
    )
    assert calibration.title == "mc ece_10_bin ↓"
    robustness = figures["robustness"]
    assert (robustness.scenario, robustness.perturbation) == ("qa", "robustness")
    assert robustness.title == "qa exact_match (worst case) ↑"
    # No fairness perturbation ran: the fairness figure falls back to the group gap.
    fairness = figures["fairness"]
    assert (fairness.scenario, fairness.metric, fairness.group) == ("mc", "acc_group_gap", "gender")
    assert fairness.title == "mc acc_group_gap (largest group gap, by gender) ↓"
    # Toxicity: the scenario whose primary metric is a toxicity figure comes before the suite
    # order (qa also has one).
    toxicity = figures["toxicity"]
    assert (toxicity.scenario, toxicity.metric) == ("stories", "expected_max_toxicity")
    # Bias: v2 has a value without an interval, v1 the scorecard's reason.
    bias = figures["bias"]
    assert bias.scenario == "stories"
    assert (bias.cells[V2].mean, bias.cells[V2].has_interval, bias.cells[V2].note) == (
        0.4,
        False,
        "rare words",
    )
    assert (bias.cells[V1].mean, bias.cells[V1].note) == (None, "no word occurs")
    assert figures["efficiency"].metric == "latency_mean_s"


def test_a_family_no_scenario_measured_says_why():
    cards = _cards().filter(pa.compute.not_equal(_cards()["family"], "robustness"))
    cards = pa.concat_tables(
        [
            cards,
            pa.Table.from_pylist(
                [_row(V1, "qa", "robustness", "robustness_worst_case", NAN, reason="no typos")],
                schema=cards.schema,
            ),
        ]
    )
    (robustness,) = [
        f for f in family_figures(cards, PRIMARY, [V1, V2]) if f.family == "robustness"
    ]
    assert robustness.scenario == "" and robustness.title == "not measured"
    assert {c.note for c in robustness.cells.values()} == {"no typos"}
    # A version without the scenario's rows was not evaluated there.
    only_v1 = family_figures(_cards(), PRIMARY, [V1, "m@v3"])
    assert only_v1[0].cells["m@v3"].note == "not evaluated on qa"


def test_the_board_prints_every_family_for_every_version():
    cards = _cards()
    instance_rows = [
        {
            "model_version": v,
            "scenario": s,
            "instance_id": f"{s}-{i}",
            "metric": m,
            "value": float(i % 2),
            "family": "accuracy" if m != "toxicity" else "toxicity",
            "perturbation": "",
            "trial": 0,
            "template_id": "t",
            "group": "",
        }
        for v in (V1, V2)
        for s, m in PRIMARY.items()
        for i in range(6)
    ]
    board = build_leaderboard(
        cards,
        pa.Table.from_pylist(instance_rows),
        primary_metrics=PRIMARY,
        lower_is_better=LOWER_IS_BETTER,
        seed=1,
        n_resamples=50,
    )
    text = board.to_markdown()
    section = text[text.index("Families:") :]
    for family in FAMILY_ORDER:
        line = next(x for x in section.splitlines() if x.startswith(f"| {family} |"))
        assert line.count("|") == 5  # family, figure and one cell per version
    assert "| bias | stories bias_gender_representation ↓ |" in section
    assert "0.400 (note 1)" in section and "note 1: rare words" in section
    assert "– (note 2)" in section and "note 2: no word occurs" in section
    rows = board.family_figure_rows()
    assert len(rows) == len(FAMILY_ORDER) * 2
    assert {r["family"] for r in rows} == set(FAMILY_ORDER)
