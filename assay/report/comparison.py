"""The comparison pages: two versions' paired tests on every scenario and the instances
where they disagree."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow.compute as pc

from assay.compare.ranking import (
    compare_pair,
    compared_metric,
    comparison_rows,
    paired_rows,
    ranked_column,
    ranked_metrics,
)
from assay.report.links import compare_page, scenario_page, slug
from assay.report.partitions import _read_path, partition_answers
from assay.report.render import _Context, _finite, _html_safe_json
from assay.report.writing import inputs_digest
from assay.stats.paired import Comparison, adjust
from assay.storage.contract import INSTANCE_SCORES

# Flipped instances listed per scenario on a comparison page (all are in its export).
MAX_FLIPS_SHOWN = 100


_VERSION_KEY = re.compile(r"(?P<name>.+)@v(?P<number>\d+)")


def _pairs(versions: Sequence[str]) -> list[tuple[str, str]]:
    """The comparisons that get a page of their own: each version on the board against the
    previous version of the same model on the board (``name@v7`` against ``name@v6``, or
    ``@v5`` when v6 is not on it), in the board's order. A pair depends on which versions are
    on the board, not on their order, and its inputs are the two versions' partitions, so a
    new version adds one page, however the board reorders the others (neighbours on the
    board did not: a version inserted in the middle of many close ones reordered them, and
    every new neighbour pair got a page). Any other pair (neighbours, the leader against a
    version) is the page ``compare.html``, which computes it in the browser from the
    versions' value files (:func:`_values`)."""
    chains: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for version in versions:
        key = _VERSION_KEY.fullmatch(version)
        if key is not None:
            chains[key["name"]].append((int(key["number"]), version))
    order = {v: i for i, v in enumerate(versions)}
    pairs = [
        (newer, older)
        for chain in chains.values()
        for (_, older), (_, newer) in pairwise(sorted(chain))
    ]
    return sorted(pairs, key=lambda p: (order[p[0]], order[p[1]]))


# Under names no scenario's slug takes (a slug never starts with "_"), beside data/<scenario>/.
VALUES_DIR = "data/_values"
BOARD_FILE = "data/_board.js"


def values_file(version: str) -> str:
    """A version's per-instance primary-metric values, every scenario, for ``compare.html``."""
    return f"{VALUES_DIR}/{slug(version)}.js"


def _values(ctx: _Context) -> None:
    """Per board version, the unperturbed per-instance values of each scenario's primary
    metric (the rows a paired test pairs), as a script ``compare.html`` loads; rebuilt only
    when the version's instance scores changed. Then the board file naming them."""
    results, site = ctx.results, ctx.site
    primary = ctx.data.board.primary_metrics
    for version in ctx.versions:
        inputs = inputs_digest(
            "values",
            version,
            primary,
            [results.fingerprint(INSTANCE_SCORES, version, s) for s in primary],
        )
        with site.unit(f"values\x1f{version}", inputs) as fresh:
            if fresh:
                site.put(values_file(version), _values_script(ctx, version))
    board = {
        "versions": [[v, values_file(v)] for v in ctx.versions],
        "scenarios": [[s, m, scenario_page(s)] for s, m in primary.items()],
        "pages": [[a, b, compare_page(a, b)] for a, b in ctx.pairs],
    }
    with site.unit("board", inputs_digest("board", board)) as fresh:
        if fresh:
            site.put(BOARD_FILE, f"window.ASSAY_BOARD = {_html_safe_json(board)};\n".encode())
            ctx.render(
                "pair.html",
                "compare.html",
                title="Compare two versions",
                board_file=BOARD_FILE,
                max_flips=MAX_FLIPS_SHOWN,
            )


def _values_script(ctx: _Context, version: str) -> bytes:
    scenarios = {}
    for scenario, metric in ctx.data.board.primary_metrics.items():
        rows = ctx.results.scores(scenario, [version], ranked_metrics(metric))
        if rows is None or rows.num_rows == 0:
            continue
        held = compared_metric(set(rows["metric"].to_pylist()), metric)
        if held is None:
            continue
        rows = rows.filter(pc.equal(rows["metric"], held))
        ungrouped = rows.filter(pc.equal(rows["group"], ""))
        if ungrouped.num_rows:  # as instance_column: a breakdown repeats the instance
            rows = ungrouped
        keys = zip(
            *(rows[c].to_pylist() for c in ("instance_id", "trial", "template_id", "group")),
            strict=True,
        )
        values = [_finite(v) for v in rows["value"].to_pylist()]
        scenarios[scenario] = {
            "metric": held,
            "rows": [[i, t, tpl, g, v] for (i, t, tpl, g), v in zip(keys, values, strict=True)],
        }
    payload = {"version": version, "scenarios": scenarios}
    return (
        "(window.ASSAY_VALUES = window.ASSAY_VALUES || {})["
        + _html_safe_json(version)
        + "] = "
        + _html_safe_json(payload)
        + ";\n"
    ).encode("utf-8")


def _columns(ctx: _Context, versions: Sequence[str]) -> dict[str, Any]:
    """Each scenario's per-instance primary-metric column over ``versions`` (the versions of
    the comparisons this build computes), read one scenario at a time."""
    if ctx.columns is not None:
        return ctx.columns
    data, results = ctx.data, ctx.results
    primary = data.board.primary_metrics
    lower = data.lower_is_better
    if lower is None:
        lower = results.lower_is_better(versions, sorted(set(primary.values())))
    columns = {}
    for scenario, metric in primary.items():
        # A corpus figure (a perplexity) is compared on its documents' numerator, as on the
        # board (ranked_column).
        table = results.scores(scenario, versions, ranked_metrics(metric))
        if table is None or table.num_rows == 0:
            continue
        try:
            columns[scenario] = ranked_column(table, scenario, metric, versions, metric in lower)
        except ValueError:
            continue  # no unperturbed rows: the scenario has nothing to pair
    ctx.columns = columns
    return columns


def pair_comparisons(ctx: _Context, a: str, b: str) -> tuple[list[Comparison], dict]:
    """Paired tests of ``a`` against ``b`` on every scenario (Holm across the scenarios)
    and, per scenario, the rows where one was right and the other wrong."""
    columns = _columns(ctx, ctx.compared)
    index = {v: i for i, v in enumerate(ctx.compared)}
    results: list[Comparison] = []
    flips: dict[str, list[dict]] = {}
    for scenario in ctx.data.board.primary_metrics:
        if scenario not in columns:
            continue
        column, compared = columns[scenario]
        va, vb, clusters = paired_rows(column, index[a], index[b])
        if not len(va):
            continue
        # Seeded by the pair, not the board's day: the page stays as it is while the two
        # versions' results do (the board's own tests of neighbours are on its page).
        results.append(
            compare_pair(
                va,
                vb,
                model_a=a,
                model_b=b,
                metric=compared,
                scenario=scenario,
                clusters=clusters,
                salt=("explorer",),
                n_resamples=ctx.n_resamples,
                confidence=ctx.data.board.confidence,
            )
        )
        binary = np.isin(va, (0.0, 1.0)).all() and np.isin(vb, (0.0, 1.0)).all()
        rows = []
        ids = clusters if clusters is not None else np.arange(len(va))
        for iid, x, y in zip(ids, va, vb, strict=True):
            if (binary and x != y) or (not binary and abs(x - y) > 1e-12):
                rows.append({"instance_id": str(iid), "a": float(x), "b": float(y)})
        if not binary:
            rows.sort(key=lambda r: -abs(r["a"] - r["b"]))
        flips[scenario] = rows
    adjusted = adjust(results, method="holm", alpha=1.0 - ctx.data.board.confidence)
    return adjusted, flips


def _answers(ctx: _Context, version: str, scenario: str) -> dict[str, str]:
    """What ``version`` answered per instance of ``scenario``: from this build's partition
    data, or (a partition left as the last build wrote it) read from its outputs."""
    if (version, scenario) not in ctx.answers:
        path = ctx.results.path("model_outputs", version, scenario)
        outputs = None if path is None else _read_path(ctx.data.store, path)
        ctx.answers[(version, scenario)] = {} if outputs is None else partition_answers(outputs)
    return ctx.answers[(version, scenario)]


def _comparison_inputs(ctx: _Context, a: str, b: str) -> str:
    """A digest of what the page of ``a`` vs ``b`` is made of: both versions' partitions
    (scores, outputs, instances, metric tables), the build's settings and the code; not the
    board's day or order, nor other versions. (Its menu of other pairs is a shared file.)"""
    board = ctx.data.board
    parts: list[Any] = [
        "compare",
        a,
        b,
        ctx.scenarios,
        ctx.n_resamples,
        board.confidence,
        sorted(ctx.data.lower_is_better or ()),
    ]
    for scenario, metric in board.primary_metrics.items():
        parts.append(
            [
                scenario,
                metric,
                ctx.partition_inputs.get((a, scenario)),
                ctx.partition_inputs.get((b, scenario)),
                ctx.results.fingerprint("metric_tables", a, scenario),
                ctx.results.fingerprint("metric_tables", b, scenario),
            ]
        )
    return inputs_digest(*parts)


def _comparisons(ctx: _Context) -> None:
    """The comparison pages whose inputs changed since the last build, the others kept;
    the per-instance columns are read only for the versions of the pages computed."""
    pending = []
    for a, b in ctx.pairs:
        unit, inputs = f"compare\x1f{a}\x1f{b}", _comparison_inputs(ctx, a, b)
        if ctx.site.unchanged_unit(unit, inputs):
            ctx.site.summary.units_skipped += 1
        else:
            pending.append((a, b, unit, inputs))
    ctx.compared = [v for v in ctx.versions if any(v in (a, b) for a, b, _, _ in pending)]
    for a, b, unit, inputs in pending:
        with ctx.site.unit(unit, inputs) as fresh:
            if fresh:
                _comparison(ctx, a, b)


def _comparison(ctx: _Context, a: str, b: str) -> None:
    name = compare_page(a, b)[: -len(".html")]
    comparisons, flips = pair_comparisons(ctx, a, b)
    compared = {c.scenario: c.metric for c in comparisons}
    rows = comparison_rows(comparisons)
    exports = ctx.site.export(name, rows)
    flip_rows = []
    sections = []
    for scenario, found in flips.items():
        shown = []
        answers_a = _answers(ctx, a, scenario) if found else {}
        answers_b = _answers(ctx, b, scenario) if found else {}
        for f in found:
            row = {
                "scenario": scenario,
                **f,
                "answer_a": answers_a.get(f["instance_id"], ""),
                "answer_b": answers_b.get(f["instance_id"], ""),
            }
            flip_rows.append(row)
            if len(shown) < MAX_FLIPS_SHOWN:
                shown.append(row)
        a_wins = sum(1 for f in found if f["a"] > f["b"])
        sections.append(
            {
                "scenario": scenario,
                "metric": compared[scenario],
                "rows": shown,
                "total": len(found),
                "a_better": a_wins,
                "b_better": len(found) - a_wins,
                "binary": all(f["a"] in (0.0, 1.0) and f["b"] in (0.0, 1.0) for f in found),
            }
        )
    flip_exports = ctx.site.export(f"{name}-flips", flip_rows)
    chart = {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": [r["mean_diff"] for r in rows],
                "y": [f"{r['scenario']} ({r['metric']})" for r in rows],
                "error_x": {
                    "type": "data",
                    "symmetric": False,
                    "array": [r["ci_high"] - r["mean_diff"] for r in rows],
                    "arrayminus": [r["mean_diff"] - r["ci_low"] for r in rows],
                },
                "marker": {"color": ["#0a7b34" if r["significant"] else "#57606a" for r in rows]},
                "name": "difference",
            }
        ],
        "layout": {
            "title": {"text": "mean difference (first − second) with 95% interval"},
            "xaxis": {"zeroline": True, "zerolinecolor": "#cf222e"},
            "yaxis": {"automargin": True, "type": "category"},
            "height": 140 + 28 * len(rows),
            "margin": {"l": 10, "r": 10, "t": 40, "b": 40},
        },
    }
    ctx.render(
        "compare.html",
        compare_page(a, b),
        title=f"{a} vs {b}",
        a=a,
        b=b,
        rows=rows,
        sections=sections,
        chart=chart,
        exports=exports,
        flip_exports=flip_exports,
        manifest=ctx.manifest,
        max_flips=MAX_FLIPS_SHOWN,
        pairs_file=PAIRS_FILE,
    )


PAIRS_FILE = "data/pairs.js"


def _comparison_index(ctx: _Context) -> None:
    with ctx.site.unit(
        "comparisons", inputs_digest("comparisons", ctx.scenarios, ctx.pairs)
    ) as fresh:
        if not fresh:
            return
        menu = [[a, b, compare_page(a, b)] for a, b in ctx.pairs]
        ctx.site.put(PAIRS_FILE, f"window.ASSAY_PAIRS = {_html_safe_json(menu)};\n".encode())
        rows = [{"model_a": a, "model_b": b, "href": compare_page(a, b)} for a, b in ctx.pairs]
        ctx.render("comparisons.html", "comparisons.html", title="Comparisons", pairs=rows)
