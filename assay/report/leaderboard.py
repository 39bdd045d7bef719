"""The leaderboard pages: the board of the newest day (``index.html``) and of each stored day."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pyarrow.compute as pc

from assay.compare.ranking import comparison_rows
from assay.core.records import subset_rows
from assay.report.data import alias_holders, best_first, end_of
from assay.report.decisions import decision_page, latest_verdicts
from assay.report.links import (
    compare_page,
    day_page,
    headline_file,
    pair_href,
    scenario_page,
    slug,
)
from assay.report.render import (
    _clean,
    _Context,
    _finite,
    _html_safe_json,
    _plot_text,
    _script_json,
)
from assay.report.results import table_digest
from assay.report.writing import inputs_digest


def _leaderboard_inputs(
    ctx: _Context, day: str, path: str, rows: Any, order: list[str], days
) -> str:
    """What a leaderboard page shows: the day's rows (``rows``: them, or a digest of the
    stored table they are read from), the days listed, per row (``order``: its versions,
    best first) the version's registration, aliases, verdict, comparison link and metric
    tables (fingerprints of its partitions: the chart's cells), and for the build's day its
    board's tests and figures."""
    data = ctx.data
    held = alias_holders(data.events, end_of(day))
    registered = {v.key: v for v in data.versions}
    decided = latest_verdicts(data.events)
    pairs = set(ctx.pairs)
    previous = dict(ctx.pairs)
    scenarios = list(data.board.primary_metrics)
    per_row = [
        [
            v,
            registered[v].description if v in registered else None,
            [c.name for c in registered[v].training_data] if v in registered else None,
            held.get(v, []),
            decided[v].id if v in decided else None,
            # The newest board links the built pages of its pairs (:func:`_pairs`); a past
            # day's links are the in-browser comparison, whatever pairs there are now.
            [v, n] if day == data.day and (v, n) in pairs else None,
            [v, previous[v]] if day == data.day and v in previous else None,
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


def _headline_units(ctx: _Context) -> None:
    """Each board version's headline cells (:func:`headline_file`: every scenario's primary
    metric with its interval, what the leaderboards' chart shows), read from the store only
    for the versions whose metric tables changed since the last build; the others' files are
    kept and read back only when a leaderboard page is rendered (:func:`_headline`)."""
    scenarios = list(ctx.data.board.primary_metrics)
    primary = dict(ctx.data.board.primary_metrics)
    stale = {}
    for v in ctx.versions:
        inputs = inputs_digest(
            "headline", v, primary, ctx.results.version_fingerprint("metric_tables", v, scenarios)
        )
        if ctx.site.unchanged_unit(f"headline\x1f{v}", inputs):
            ctx.site.summary.units_skipped += 1
            ctx.headline_kept.add(v)
        else:
            stale[v] = inputs
    if not stale:
        return
    cells = _headline_cells(ctx, list(stale))
    for v, inputs in stale.items():
        ctx.site.rendered_unit(f"headline\x1f{v}", inputs, [_put_headline(ctx, v, cells)])
    ctx.headline.update(cells)
    ctx.headline_read.update(stale)


def _headline(ctx: _Context, versions: Sequence[str]) -> dict[tuple[str, str, str], list]:
    """(version, scenario, metric) → [mean, ci_low, ci_high] of the headline rows the
    leaderboards' chart shows, for ``versions``: from the kept headline files, or from the
    store for a version that has none (one on a past day's board only)."""
    missing = [v for v in dict.fromkeys(versions) if v not in ctx.headline_read]
    ctx.headline_read.update(missing)
    unread = []
    for v in missing:
        recorded = _recorded_headline(ctx, v) if v in ctx.headline_kept else None
        if recorded is None:
            unread.append(v)
            continue
        for s, m, *cell in recorded:
            ctx.headline[(v, s, m)] = cell
    if unread:
        cells = _headline_cells(ctx, unread)
        ctx.headline.update(cells)
        for v in unread:
            if v in ctx.headline_kept:  # its kept file did not read as cells: mended
                _put_headline(ctx, v, cells, mend=True)
    return ctx.headline


def _put_headline(
    ctx: _Context, version: str, cells: dict[tuple[str, str, str], list], *, mend: bool = False
) -> str:
    """Write ``version``'s headline file from ``cells`` (``mend``: over a file the folder
    holds that did not read as one); its path."""
    path = headline_file(version)
    own = [
        [s, m, *cells[(version, s, m)]]
        for s, m in ctx.data.board.primary_metrics.items()
        if (version, s, m) in cells
    ]
    ctx.site.put(path, json.dumps(_clean(own), allow_nan=False).encode("utf-8"), mend=mend)
    return path


def _recorded_headline(ctx: _Context, version: str) -> list | None:
    """The headline cells the last build recorded for ``version`` (None: unreadable)."""
    folder = ctx.site.folder
    if folder is None:
        return None
    try:
        recorded = json.loads(folder.read(headline_file(version)) or b"null")
    except ValueError:
        return None
    if not isinstance(recorded, list) or not all(
        isinstance(c, list) and len(c) == 5 and all(isinstance(x, str) for x in c[:2])
        for c in recorded
    ):
        return None
    return recorded


def _headline_cells(ctx: _Context, versions: Sequence[str]) -> dict[tuple[str, str, str], list]:
    """The headline rows of ``versions`` (ungrouped, unperturbed, over every evaluated
    instance) read from the store."""
    out: dict[tuple[str, str, str], list] = {}
    found = ctx.results.headline_cards(sorted(versions))
    if found is not None and found.num_rows:
        cards = subset_rows(found)
        headline = cards.filter(
            pc.and_(pc.equal(cards["group"], ""), pc.equal(cards["perturbation"], ""))
        )
        for v, s, m, mean, low, high in zip(
            *(
                headline[c].to_pylist()
                for c in ("model_version", "scenario", "metric", "mean", "ci_low", "ci_high")
            ),
            strict=True,
        ):
            out[(v, s, m)] = [mean, low, high]
    return out


def _leaderboard(ctx: _Context, day: str, path: str, days: Sequence[str]) -> None:
    """A leaderboard page and its exports, unless their inputs are the last build's. A
    past day's page is checked against a digest of its stored rows (its rows are read into
    Python only when it is rendered): every build checks every day's page."""
    stored = None if day == ctx.data.day else ctx.data.stored_board(day)
    if stored is None:
        rows: list[dict] | None = ctx.data.ranking_rows(day)
        shown: Any = rows
        order = [r["model_version"] for r in rows]
    else:
        rows = None
        shown = ["stored", table_digest(stored)]
        order = stored["model_version"].take(best_first(stored)).to_pylist()
    inputs = _leaderboard_inputs(ctx, day, path, shown, order, days)
    with ctx.site.unit(f"leaderboard\x1f{path}", inputs) as fresh:
        if fresh:
            rows = ctx.data.ranking_rows(day) if rows is None else rows
            # ``index.html`` is the newest day's page under another name: what the day's
            # page computed in this build (its exports written) is drawn again as it is.
            values = ctx.newest_leaderboard if path == "index.html" else None
            if values is None:
                values = _leaderboard_values(ctx, day, path != "index.html", rows)
                if path != "index.html" and day == ctx.data.day:
                    ctx.newest_leaderboard = values
            ctx.render("leaderboard.html", path, page_path=path, **values)


def _leaderboard_values(ctx: _Context, day: str, export: bool, rows: list[dict]) -> dict:
    """What a leaderboard page of ``day`` shows, its data and chart as JSON; with
    ``export``, its tables are written as exports (``index.html`` links the day's)."""
    data = ctx.data
    is_today = day == data.day
    scenarios = [c[len("score.") :] for c in (rows[0] if rows else {}) if c.startswith("score.")]
    families = [
        c[len("win_rate.") :] for c in (rows[0] if rows else {}) if c.startswith("win_rate.")
    ]
    held = alias_holders(data.events, end_of(day))
    aliases = sorted({a for v in held.values() for a in v})
    pairs = set(ctx.pairs)
    previous = dict(ctx.pairs)
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
                # The newest board links the pages built for its pairs (a version and its
                # model's previous version, comparison._pairs); a past day's links are the
                # in-browser comparison, so that a new version, which changes the newest
                # board's pairs, leaves past days' pages as they are.
                "compare_next": None
                if n is None
                else compare_page(v, n)
                if is_today and (v, n) in pairs
                else pair_href(v, n),
                "compare_previous": compare_page(v, previous[v])
                if is_today and v in previous and previous[v] != n
                else None,
                "previous": previous[v] if is_today and v in previous else "",
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
                not in (
                    "compare_next",
                    "compare_previous",
                    "previous",
                    "compare_leader",
                    "aliases",
                    "decision",
                    "decision_kind",
                )
            },
            "aliases": " ".join(r["aliases"]),
        }
        for r in table
    ]
    exports = (
        ctx.site.export(f"leaderboard-{slug(day)}", export_rows)
        if export
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
            if export
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
        if export:
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
            mean, low, high = lookup.get((v, s, metric)) or (None, None, None)
            y = _finite(mean)
            ys.append(y)
            hi.append(None if y is None or _finite(high) is None else high - y)
            lo.append(None if y is None or _finite(low) is None else y - low)
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
    return dict(
        title=f"Leaderboard {day}",
        day=day,
        days_file=DAYS_FILE,
        board=_script_json(_board_data(table, scenarios, families, family_figures, comparisons)),
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
        notes=list(data.board.notes) if day == data.day else [],
        exports=exports,
        chart=_script_json(_plot_text(chart)),
        is_latest=day == data.day,
    )


def _board_data(
    table: Sequence[dict],
    scenarios: Sequence[str],
    families: Sequence[str],
    family_figures: Sequence[dict],
    comparisons: Sequence[dict],
) -> dict:
    """What the page draws in the browser (its rows, family figures and comparisons), as
    one JSON document: writing it costs a fraction of a table cell per version and scenario
    rendered by the template. Figures the browser cannot format as Python does (signs,
    p-values) come as text."""
    keys = ("model_version", "rank", "rank_low", "rank_high", "mean_win_rate", "mean_score")
    links = ("compare_next", "compare_previous", "previous", "compare_leader")
    return {
        "scenarios": list(scenarios),
        "families": list(families),
        "rows": [
            {
                **{k: r[k] for k in keys},
                "scores": [r.get(f"score.{s}") for s in scenarios],
                "win_rates": [r.get(f"win_rate.{f}") for f in families],
                "aliases": r["aliases"],
                "decision": r["decision"],
                "decision_kind": r["decision_kind"],
                "description": r["description"],
                "training_data": r["training_data"],
                **{k: r[k] for k in links},
            }
            for r in table
        ],
        "figures": [
            {
                "family": f["family"],
                "title": f["title"],
                "cells": [
                    None
                    if c is None
                    else {
                        "mean": c.mean,
                        "ci_low": c.ci_low,
                        "ci_high": c.ci_high,
                        "has_interval": c.has_interval,
                        "note": c.note,
                    }
                    for c in f["cells"]
                ],
            }
            for f in family_figures
        ],
        "comparisons": [
            {
                **{
                    k: c[k]
                    for k in (
                        "scenario",
                        "metric",
                        "model_a",
                        "model_b",
                        "mean_diff",
                        "p_value",
                        "p_adjusted",
                        "test",
                        "significant",
                        "href",
                    )
                },
                "texts": [
                    f"{c['mean_diff']:+.3f}",
                    f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                    f"{c['p_value']:.3g}",
                    f"{c['p_adjusted']:.3g}",
                ],
            }
            for c in comparisons
        ],
    }
