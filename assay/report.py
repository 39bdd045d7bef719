"""A static, offline HTML report: the leaderboard, its paired comparisons, every headline
scorecard with intervals, and how the leaders moved over time. One self-contained file."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa

from assay.compare.ranking import Leaderboard

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
span.text { display: block; text-align: left; white-space: nowrap; }
thead th { background: #f6f8fa; }
.sig { font-weight: 600; color: #0a7b34; } .muted { color: #656d76; }
"""


def _num(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _leaderboard(board: Leaderboard) -> str:
    scenarios = list(board.primary_metrics)
    headers = ["#", "model version", "rank interval", "mean win rate", "mean score"]
    headers += [f"{s} ({board.primary_metrics[s]})" for s in scenarios]
    headers += [f"{f} win rate" for f in board.families]
    rows = []
    for r in board.rows:
        rows.append(
            [
                str(r.rank),
                f'<span class="text">{html.escape(r.model_version)}</span>',
                f"{r.rank_low}–{r.rank_high}",
                _num(r.mean_win_rate),
                _num(r.mean_score),
                *(_num(r.scenario_scores.get(s)) for s in scenarios),
                *(_num(r.family_win_rates.get(f)) for f in board.families),
            ]
        )
    return _table(headers, rows)


def _comparisons(board: Leaderboard) -> str:
    if not board.comparisons:
        return '<p class="muted">Fewer than two model versions: nothing to compare.</p>'
    rows = []
    for c in board.comparisons:
        mark = ' class="sig"' if c.significant else ""
        rows.append(
            [
                html.escape(f"{c.scenario} ({c.metric})"),
                html.escape(f"{c.model_a} vs {c.model_b}"),
                f"<span{mark}>{c.mean_diff:+.3f}</span>",
                f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}]",
                f"{c.p_value:.3g}",
                f"{c.p_adjusted:.3g}",
                html.escape(c.test),
                "yes" if c.significant else "no",
            ]
        )
    headers = ["scenario", "comparison", "difference", "95% CI", "p", "p (Holm)", "test"]
    return _table([*headers, "significant"], rows)


def _scorecards(scorecards: pa.Table) -> str:
    """Headline (ungrouped, unperturbed) metrics per scenario: one row per metric, one column
    per model version, each cell ``mean [low, high]``."""
    rows = [r for r in scorecards.to_pylist() if not r["group"] and not r["perturbation"]]
    parts = []
    for scenario in sorted({r["scenario"] for r in rows}):
        cells = [r for r in rows if r["scenario"] == scenario]
        versions = sorted({r["model_version"] for r in cells})
        metrics = sorted({(r["family"], r["metric"]) for r in cells})
        lookup = {(r["model_version"], r["family"], r["metric"]): r for r in cells}
        body = []
        for family, metric in metrics:
            line = [html.escape(family), html.escape(metric)]
            for version in versions:
                r = lookup.get((version, family, metric))
                if r is None:
                    line.append("–")
                elif r["reason"]:
                    line.append(f'<span class="muted">absent: {html.escape(r["reason"])}</span>')
                elif r["ci_low"] is None or math.isnan(r["ci_low"]):
                    line.append(_num(r["mean"]))
                else:
                    line.append(f"{_num(r['mean'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]")
            body.append(line)
        parts.append(f"<h3>{html.escape(scenario)}</h3>")
        parts.append(_table(["family", "metric", *versions], body))
    return "".join(parts)


def _history(history: pa.Table | None) -> str:
    if history is None or history.num_rows == 0:
        return '<p class="muted">No earlier leaderboards.</p>'
    rows = sorted(history.to_pylist(), key=lambda r: (r["day"], r["rank"]))
    body = [
        [
            html.escape(r["day"]),
            str(r["rank"]),
            html.escape(r["model_version"]),
            _num(r["mean_win_rate"]),
            _num(r["mean_score"]),
        ]
        for r in rows
    ]
    return _table(["day", "rank", "model version", "mean win rate", "mean score"], body)


def render_dashboard(
    board: Leaderboard,
    scorecards: pa.Table,
    history: pa.Table | None,
    *,
    day: str,
    generated_at: datetime,
) -> str:
    """The whole report as one HTML document."""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in board.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>assay · leaderboard {html.escape(day)}</title>
<style>{_CSS}</style></head><body>
<h1>assay leaderboard as of {html.escape(day)}</h1>
<p class="muted">Generated {generated_at:%Y-%m-%d %H:%M} UTC. Ranked by mean win rate over
each scenario's primary metric; rank intervals from a joint bootstrap over instances.</p>
{_leaderboard(board)}
{f"<ul>{notes}</ul>" if notes else ""}
<h2>Paired comparisons</h2>
<p class="muted">Paired tests on shared instances (McNemar for binary metrics, a
sign-flip permutation test otherwise), Holm-corrected across the board.</p>
{_comparisons(board)}
<h2>Scorecards</h2>
<p class="muted">Mean and bootstrap 95% interval of every headline metric; metrics that could
not be computed say why.</p>
{_scorecards(scorecards)}
<h2>History</h2>
{_history(history)}
</body></html>
"""
