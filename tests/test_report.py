"""The offline HTML report shows the leaderboard, comparisons and scorecards faithfully."""

import math
from datetime import UTC, datetime

import pyarrow as pa

from assay.compare.ranking import Leaderboard, LeaderboardRow
from assay.report import render_dashboard
from assay.stats.paired import Comparison


def _board() -> Leaderboard:
    rows = (
        LeaderboardRow("m@v2", 1, 1, 2, 0.75, 0.61, {"qa": 0.61}, {"accuracy": 0.75}),
        LeaderboardRow("m@v1", 2, 1, 2, 0.25, 0.40, {"qa": 0.40}, {"accuracy": 0.25}),
    )
    comparison = Comparison(
        "m@v2",
        "m@v1",
        "exact_match",
        50,
        0.21,
        0.08,
        0.33,
        0.001,
        0.002,
        "mcnemar_exact",
        True,
        scenario="qa",
    )
    return Leaderboard(rows, (comparison,), {"qa": "exact_match"}, ("accuracy",))


def _cards() -> pa.Table:
    rows = [
        ("m@v1", "qa", "exact_match", "accuracy", 0.40, 0.30, 0.50, ""),
        ("m@v2", "qa", "exact_match", "accuracy", 0.61, 0.52, 0.70, ""),
        ("m@v1", "qa", "toxic_fraction", "toxicity", math.nan, math.nan, math.nan, "no <scorer>"),
    ]
    names = ["model_version", "scenario", "metric", "family", "mean", "ci_low", "ci_high"]
    columns = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    columns["reason"] = [r[7] for r in rows]
    columns["group"] = ["", "", ""]
    columns["perturbation"] = ["", "", ""]
    return pa.table(columns)


def test_dashboard_renders_board_comparisons_and_scorecards():
    page = render_dashboard(
        _board(), _cards(), None, day="2026-11-28", generated_at=datetime(2026, 11, 28, tzinfo=UTC)
    )
    assert "leaderboard as of 2026-11-28" in page
    assert page.index("m@v2") < page.index("m@v1")  # ranked order
    assert "1–2" in page  # rank interval
    assert '<span class="sig">+0.210</span>' in page  # the significant difference stands out
    assert "[+0.080, +0.330]" in page
    assert "0.610 [0.520, 0.700]" in page  # scorecard mean with its interval
    assert "absent: no &lt;scorer&gt;" in page  # reasons shown, and escaped
    assert "No earlier leaderboards" in page
