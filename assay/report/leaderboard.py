"""The leaderboard pages: the board of the newest day (``index.html``) and of each stored day."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pyarrow.compute as pc

from assay.compare.ranking import comparison_rows
from assay.core.records import subset_rows
from assay.report.data import alias_holders, end_of
from assay.report.decisions import decision_page, latest_verdicts
from assay.report.links import compare_page, day_page, pair_href, scenario_page, slug
from assay.report.render import _Context, _finite, _html_safe_json
from assay.report.writing import inputs_digest


def _leaderboard_inputs(ctx: _Context, day: str, path: str, rows: list[dict], days) -> str:
    """What a leaderboard page shows: the day's rows, the days listed, per row the version's
    registration, aliases, verdict, comparison link and metric tables (fingerprints of its
    partitions: the chart's cells), and for the build's day its board's tests and figures."""
    data = ctx.data
    held = alias_holders(data.events, end_of(day))
    registered = {v.key: v for v in data.versions}
    decided = latest_verdicts(data.events)
    order = [r["model_version"] for r in rows]
    pairs = set(ctx.pairs)
    scenarios = list(data.board.primary_metrics)
    per_row = [
        [
            v,
            registered[v].description if v in registered else None,
            [c.name for c in registered[v].training_data] if v in registered else None,
            held.get(v, []),
            decided[v].id if v in decided else None,
            # The newest board links its neighbours' built pages; a past day's link is the
            # in-browser comparison, whatever pairs the newest board has now.
            [v, n] if day == data.day and (v, n) in pairs else None,
            ctx.results.version_fingerprint("metric_tables", v, scenarios),
        ]
        for v, n in zip(order, [*order[1:], None], strict=True)
    ]
    today = None
    if day == data.day:
        board = data.board
        today = [
            repr(board.comparisons),
            board.family_figure_rows(),
            list(board.notes),
            board.confidence,
        ]
    return inputs_digest(
        "leaderboard",
        day,
        path,
        path == "index.html" or day == data.day,
        rows,
        per_row,
        dict(data.board.primary_metrics),
        ctx.scenarios,
        today,
    )


DAYS_FILE = "data/_days.js"


def _days_menu(ctx: _Context, days: Sequence[str]) -> None:
    """The shared menu of days every leaderboard page loads, newest first."""
    menu = [[d, "index.html" if d == ctx.data.day else day_page(d)] for d in reversed(days)]
    ctx.site.put(DAYS_FILE, f"window.ASSAY_DAYS = {_html_safe_json(menu)};\n".encode())


def _headline(ctx: _Context, versions: Sequence[str]) -> dict[tuple[str, str, str], dict]:
    """(version, scenario, metric) → the headline row the leaderboards' chart shows, read
    for the ``versions`` of the page being rendered that no page has read yet."""
    if ctx.headline is None:
        ctx.headline = {}
    missing = sorted(set(versions) - ctx.headline_read)
    if missing:
        ctx.headline_read.update(missing)
        found = ctx.results.headline_cards(missing)
        if found is not None and found.num_rows:
            cards = subset_rows(found)
            headline = cards.filter(
                pc.and_(pc.equal(cards["group"], ""), pc.equal(cards["perturbation"], ""))
            )
            for r in headline.select(
                ["model_version", "scenario", "metric", "mean", "ci_low", "ci_high"]
            ).to_pylist():
                ctx.headline[(r["model_version"], r["scenario"], r["metric"])] = r
    return ctx.headline


def _leaderboard(ctx: _Context, day: str, path: str, days: Sequence[str]) -> None:
    """A leaderboard page and its exports, unless their inputs are the last build's."""
    rows = ctx.data.ranking_rows(day)
    inputs = _leaderboard_inputs(ctx, day, path, rows, days)
    with ctx.site.unit(f"leaderboard\x1f{path}", inputs) as fresh:
        if fresh:
            _leaderboard_page(ctx, day, path, days, rows)


def _leaderboard_page(
    ctx: _Context, day: str, path: str, days: Sequence[str], rows: list[dict]
) -> None:
    data = ctx.data
    is_today = day == data.day
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
                # The newest board's neighbours have a page built with the site; a past
                # day's neighbours are compared in the browser, so that a new version, which
                # changes the newest board's pairs, leaves past days' pages as they are.
                "compare_next": None
                if n is None
                else compare_page(v, n)
                if is_today and (v, n) in pairs
                else pair_href(v, n),
                # Any other pair is computed in the browser (compare.html, see comparison.py).
                "compare_leader": pair_href(order[0], v) if is_today and v != order[0] else None,
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
                if k
                not in ("compare_next", "compare_leader", "aliases", "decision", "decision_kind")
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
    lookup = _headline(ctx, order)
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
        page_path=path,
        days_file=DAYS_FILE,
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
