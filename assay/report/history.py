"""The history page: scores over days and alias moves."""

from __future__ import annotations

from assay.report.data import alias_holders, alias_moves, end_of
from assay.report.decisions import decision_rows
from assay.report.links import day_page
from assay.report.render import _Context, _finite
from assay.report.results import table_digest
from assay.report.writing import inputs_digest

# What the page and its exports show of each day's board.
_HISTORY_COLUMNS = (
    "model_version",
    "rank",
    "rank_low",
    "rank_high",
    "mean_win_rate",
    "mean_score",
)


def _day_end(day: str) -> str:
    """Where a day's board sits on a time axis: its end, since it holds that whole day."""
    return f"{day} 23:59:59"


def _history(ctx: _Context) -> None:
    """The history page and its exports, unless their inputs are the last build's: every
    day's board, the registry's alias and gate events, the board's order."""
    data = ctx.data
    inputs = inputs_digest(
        "history",
        data.days(),
        data.day,
        table_digest(data.rankings),
        table_digest(data.board.to_table()),
        alias_moves(data.events),
        decision_rows(data.events),
        ctx.versions,
        ctx.scenarios,
    )
    with ctx.site.unit("history", inputs) as fresh:
        if fresh:
            _history_page(ctx)


def _history_page(ctx: _Context) -> None:
    data = ctx.data
    days = data.days()
    per_day = {
        d: {r["model_version"]: r for r in data.ranking_rows(d, _HISTORY_COLUMNS)} for d in days
    }
    versions = sorted(
        {v for rows in per_day.values() for v in rows},
        key=lambda v: (ctx.versions.index(v) if v in ctx.versions else 10**6, v),
    )
    history_rows = [
        {
            "day": d,
            "model_version": v,
            "rank": r["rank"],
            "rank_low": r["rank_low"],
            "rank_high": r["rank_high"],
            "mean_win_rate": r["mean_win_rate"],
            "mean_score": r["mean_score"],
        }
        for d in days
        for v, r in per_day[d].items()
    ]
    version_traces = []
    for v in versions:
        version_traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": v,
                "meta": v,
                "x": [_day_end(d) for d in days if v in per_day[d]],
                "y": [_finite(per_day[d][v]["mean_score"]) for d in days if v in per_day[d]],
            }
        )
    moves = alias_moves(data.events)
    names = sorted({(m["model"], m["alias"]) for m in moves})
    alias_traces, alias_rows, shapes, notes = [], [], [], []
    for model, alias in names:
        xs, ys, holders = [], [], []
        for d in days:
            holder = next(
                (
                    v
                    for v, a in alias_holders(data.events, end_of(d)).items()
                    if alias in a and v.startswith(f"{model}@v")
                ),
                None,
            )
            if holder is None:
                continue
            row = per_day[d].get(holder)
            xs.append(_day_end(d))
            ys.append(None if row is None else _finite(row["mean_score"]))
            holders.append(holder)
            alias_rows.append(
                {
                    "day": d,
                    "model": model,
                    "alias": alias,
                    "model_version": holder,
                    "mean_score": None if row is None else row["mean_score"],
                    "rank": None if row is None else row["rank"],
                }
            )
        alias_traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{model} @ {alias}",
                "x": xs,
                "y": ys,
                "text": holders,
                "line": {"shape": "hv"},
            }
        )
    for m in moves:
        if (m["model"], m["alias"]) not in names:
            continue
        ts = m["ts"][:19].replace("T", " ")
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": ts,
                "x1": ts,
                "y0": 0,
                "y1": 1,
                "line": {"dash": "dot", "color": "#cf222e"},
            }
        )
        notes.append(
            {
                "x": ts,
                "y": 1,
                "yref": "paper",
                "xref": "x",
                "showarrow": False,
                "textangle": -90,
                "xanchor": "right",
                "yanchor": "top",
                "text": f"{m['alias']} → {(m['after'] or 'removed')}",
            }
        )
    chart_layout = {
        "xaxis": {"type": "date", "title": {"text": "day"}},
        "yaxis": {"title": {"text": "mean score"}},
        "height": 440,
        "margin": {"t": 50},
    }
    version_chart = {
        "data": version_traces,
        "layout": {
            **chart_layout,
            "title": {"text": "mean score per day (each point: the board at the day's end)"},
            "shapes": shapes,
        },
    }
    alias_chart = {
        "data": alias_traces,
        "layout": {
            **chart_layout,
            "title": {"text": "score of the version an alias points at; moves marked"},
            "shapes": shapes,
            "annotations": notes,
        },
    }
    # The ranks per day as data the page draws into its table: a cell per version and day
    # in the page's markup grew with their product.
    rank_grid = {
        "days": [[d, "index.html" if d == data.day else day_page(d)] for d in days],
        "versions": [[v, [_rank_cell(per_day[d].get(v)) for d in days]] for v in versions],
    }
    ctx.render(
        "history.html",
        "history.html",
        title="History",
        versions=versions,
        version_chart=version_chart,
        alias_chart=alias_chart,
        moves=moves,
        decisions=decision_rows(data.events),
        history_export=ctx.site.export("history", history_rows),
        alias_export=ctx.site.export("alias-history", alias_rows),
        moves_export=ctx.site.export("alias-events", moves),
        rank_grid=rank_grid,
    )


def _rank_cell(row: dict | None) -> list | None:
    """A version's rank on a day with its interval, or None when the day's board lacks it."""
    return None if row is None else [row["rank"], row["rank_low"], row["rank_high"]]
