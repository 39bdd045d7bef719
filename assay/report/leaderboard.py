"""The leaderboard pages: the board of the newest day (``index.html``) and of each stored day."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pyarrow.compute as pc

from assay.compare.ranking import comparison_rows
from assay.core.records import subset_rows
from assay.report.data import alias_holders, end_of
from assay.report.decisions import decision_page, latest_verdicts
from assay.report.links import compare_page, day_page, scenario_page, slug
from assay.report.render import _Context, _finite


def _leaderboard(ctx: _Context, day: str, path: str, days: Sequence[str]) -> None:
    data = ctx.data
    rows = data.ranking_rows(day)
    scenarios = [c[len("score.") :] for c in (rows[0] if rows else {}) if c.startswith("score.")]
    families = [
        c[len("win_rate.") :] for c in (rows[0] if rows else {}) if c.startswith("win_rate.")
    ]
    held = alias_holders(data.events, end_of(day))
    aliases = sorted({a for v in held.values() for a in v})
    pairs = set(ctx.pairs)
    order = [r["model_version"] for r in rows]
    nxt = dict(pairwise(order))
    registered = {v.key: v for v in data.versions}
    decided = latest_verdicts(data.events)
    table = []
    for r in rows:
        v = r["model_version"]
        n = nxt.get(v)
        table.append(
            {
                **r,
                "description": registered[v].description if v in registered else "",
                # The corpora it declares it was trained on (names only: URLs stay internal).
                "training_data": ", ".join(c.name for c in registered[v].training_data)
                if v in registered
                else "",
                "aliases": held.get(v, []),
                "compare_next": compare_page(v, n) if n and (v, n) in pairs else None,
                "decision": decision_page(decided[v].id) if v in decided else None,
                "decision_kind": decided[v].kind.value.removeprefix("gate_")
                if v in decided
                else "",
            }
        )
    export_rows = [
        {
            **{
                k: v
                for k, v in r.items()
                if k not in ("compare_next", "aliases", "decision", "decision_kind")
            },
            "aliases": " ".join(r["aliases"]),
        }
        for r in table
    ]
    exports = (
        ctx.site.export(f"leaderboard-{slug(day)}", export_rows)
        if path != "index.html"
        else {
            "csv": f"export/leaderboard-{slug(day)}.csv",
            "json": f"export/leaderboard-{slug(day)}.json",
        }
    )
    comparisons = []
    comparison_exports = None
    family_figures: list[dict] = []
    family_exports = None
    if day == data.day:
        family_figures = [
            {
                "family": f.family,
                "title": f.title,
                "cells": [f.cells.get(v) for v in order],
            }
            for f in data.board.family_figures
        ]
        family_exports = (
            ctx.site.export(f"families-{slug(day)}", data.board.family_figure_rows())
            if path != "index.html"
            else {
                "csv": f"export/families-{slug(day)}.csv",
                "json": f"export/families-{slug(day)}.json",
            }
        )
        comparisons = [
            {
                **c,
                "href": compare_page(c["model_a"], c["model_b"])
                if (c["model_a"], c["model_b"]) in pairs
                else None,
            }
            for c in comparison_rows(data.board.comparisons)
        ]
        if path != "index.html":
            comparison_exports = ctx.site.export(
                f"comparisons-{slug(day)}", comparison_rows(data.board.comparisons)
            )
        else:
            comparison_exports = {
                "csv": f"export/comparisons-{slug(day)}.csv",
                "json": f"export/comparisons-{slug(day)}.json",
            }
    # Each scenario's primary metric per version with its 95% interval (headline rows).
    cards = subset_rows(data.metric_tables)
    headline = cards.filter(
        pc.and_(pc.equal(cards["group"], ""), pc.equal(cards["perturbation"], ""))
    )
    lookup = {}
    for r in headline.select(
        ["model_version", "scenario", "metric", "mean", "ci_low", "ci_high"]
    ).to_pylist():
        lookup[(r["model_version"], r["scenario"], r["metric"])] = r
    traces = []
    for s in scenarios:
        metric = data.board.primary_metrics.get(s)
        ys, hi, lo = [], [], []
        for v in order:
            r = lookup.get((v, s, metric))
            y = None if r is None else _finite(r["mean"])
            ys.append(y)
            hi.append(None if y is None or _finite(r["ci_high"]) is None else r["ci_high"] - y)
            lo.append(None if y is None or _finite(r["ci_low"]) is None else y - r["ci_low"])
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{s} ({metric})",
                "x": order,
                "y": ys,
                "meta": s,
                "error_y": {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
            }
        )
    chart = {
        "data": traces,
        "layout": {
            "title": {"text": "primary metric per version, 95% intervals"},
            "xaxis": {"type": "category", "automargin": True},
            "yaxis": {"title": {"text": "score"}},
            "height": 460,
            "margin": {"t": 50},
        },
    }
    ctx.render(
        "leaderboard.html",
        path,
        title=f"Leaderboard {day}",
        day=day,
        days=[
            {"day": d, "href": "index.html" if d == data.day else day_page(d)}
            for d in reversed(days)
        ],
        rows=table,
        scenarios=[
            {
                "key": s,
                "metric": data.board.primary_metrics.get(s, ""),
                "href": scenario_page(s) if s in data.board.primary_metrics else None,
            }
            for s in scenarios
        ],
        families=families,
        aliases=aliases,
        confidence=round(data.board.confidence * 100),
        comparisons=comparisons,
        comparison_exports=comparison_exports,
        family_figures=family_figures,
        family_exports=family_exports,
        board_order=order,
        notes=list(data.board.notes) if day == data.day else [],
        exports=exports,
        chart=chart,
        is_latest=day == data.day,
    )
