"""The scenario page: scorecards, group breakdowns, robustness, calibration and instances."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from assay.compare.ranking import SCORECARD_COLUMNS
from assay.contamination.clean import CLEAN, CLEAN_MINUS_FULL, FAMILY, RATE
from assay.core.records import METRIC_FAMILIES
from assay.evaluate.sequential import extent_of_row
from assay.report.links import reliability_file, scenario_page, slug
from assay.report.render import _Context, _finite
from assay.report.writing import inputs_digest
from assay.scoring.metrics.calibration import reliability_bins
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES

# Versions drawn in the per-version charts of a scenario page (the best ones on the board).
MAX_CHART_VERSIONS = 12


def _scenario_inputs(ctx: _Context, scenario: str) -> str:
    """What a scenario page shows: every board version's metric tables and instance scores
    on it (fingerprints), its data files, the board's order and the scenarios listed."""
    results = ctx.results
    return inputs_digest(
        "scenario",
        scenario,
        ctx.data.board.primary_metrics[scenario],
        ctx.scenarios,
        ctx.versions,
        [
            [results.fingerprint(a, v, scenario) for a in (METRIC_TABLES, INSTANCE_SCORES)]
            for v in ctx.versions
        ],
        ctx.manifest.get(scenario, {}),
    )


def _scenario(ctx: _Context, scenario: str) -> None:
    """The scenario's page and exports, unless their inputs are the last build's."""
    with ctx.site.unit(f"scenario\x1f{scenario}", _scenario_inputs(ctx, scenario)) as fresh:
        if fresh:
            _scenario_page(ctx, scenario)


def _scenario_page(ctx: _Context, scenario: str) -> None:
    data = ctx.data
    metric = data.board.primary_metrics[scenario]
    cards = ctx.results.cards(scenario, ctx.versions)
    if cards is None:
        cards = pa.table({c: pa.array([], pa.string()) for c in SCORECARD_COLUMNS})
    every_row = cards.to_pylist()
    # Rows over every evaluated instance; the contamination subsets have their own section.
    rows = [r for r in every_row if not r.get("subset")]
    order = {v: i for i, v in enumerate(ctx.versions)}
    versions = [v for v in ctx.versions if any(r["model_version"] == v for r in rows)]
    charted = versions[:MAX_CHART_VERSIONS]

    # Scorecards: one table per family (rows = versions, columns = metric × perturbation);
    # a family whose every metric is absent for every version folds into one line.
    families: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["group"]:
            continue
        families[r["family"]].append(r)
    scorecards, folded = [], []
    for family in sorted(families, key=_family_order):
        fam_rows = families[family]
        if all(r["reason"] for r in fam_rows):
            reasons = sorted({r["reason"] for r in fam_rows})
            folded.append(
                {
                    "family": family,
                    "reasons": reasons,
                    "metrics": len({r["metric"] for r in fam_rows}),
                }
            )
            continue
        columns = sorted(
            {(r["metric"], r["perturbation"]) for r in fam_rows if not r["reason"]},
            key=lambda c: (c[1] != "", c[1], c[0] != metric, c[0]),
        )
        absent = sorted({(r["metric"], r["reason"]) for r in fam_rows if r["reason"]})
        cells = {(r["model_version"], r["metric"], r["perturbation"]): r for r in fam_rows}
        table = []
        for v in versions:
            line = []
            for m, p in columns:
                r = cells.get((v, m, p))
                line.append(
                    None
                    if r is None
                    else {
                        "mean": r["mean"],
                        "low": r["ci_low"],
                        "high": r["ci_high"],
                        "reason": r["reason"],
                        "note": r.get("ci_note") or "",  # why it has no interval
                        "count": r["count"],
                    }
                )
            table.append({"version": v, "cells": line})
        scorecards.append({"family": family, "columns": columns, "rows": table, "absent": absent})
    card_export = ctx.site.export(
        f"scorecards-{slug(scenario)}",
        [
            {
                **{k: r[k] for k in (*SCORECARD_COLUMNS, "reason")},
                "ci_note": r.get("ci_note") or "",
                "subset": r.get("subset") or "",
            }
            for r in sorted(
                every_row,
                key=lambda r: (
                    order[r["model_version"]],
                    r.get("subset") or "",
                    r["family"],
                    r["metric"],
                    r["group"],
                    r["perturbation"],
                ),
            )
        ],
    )
    contamination = contamination_rows(every_row, versions, metric)
    contamination_export = ctx.site.export(f"contamination-{slug(scenario)}", contamination)

    # Group breakdowns of the primary metric and the gap between groups.
    grouped = [
        r
        for r in rows
        if r["group"]
        and r["family"] == "accuracy"
        and r["metric"] == metric
        and not r["perturbation"]
    ]
    groups = sorted({r["group"] for r in grouped})
    group_chart = None
    if groups:
        group_chart = _bars(
            [(v, groups, [_cell(grouped, v, group=g) for g in groups]) for v in charted],
            f"{metric} by group (95% intervals)",
        )
    gaps = [
        r
        for r in rows
        if r["metric"] in (f"{metric}_group_gap", f"{metric}_group_ratio") and not r["reason"]
    ]
    gaps.sort(key=lambda r: (order[r["model_version"]], r["group"], r["metric"]))
    group_export = ctx.site.export(
        f"groups-{slug(scenario)}",
        [
            {
                k: r[k]
                for k in ("model_version", "metric", "group", "mean", "count", "ci_low", "ci_high")
            }
            for r in grouped + gaps
        ],
    )

    # Robustness and fairness: clean against each perturbation, and the worst case.
    perturbed = [
        r
        for r in rows
        if r["perturbation"]
        and r["metric"] == metric
        and not r["group"]
        and r["family"] in ("robustness", "fairness")
        and not r["reason"]
    ]
    specs = sorted(
        {r["perturbation"] for r in perturbed}, key=lambda p: (p in ("robustness", "fairness"), p)
    )
    robust_chart, robust_rows = None, []
    if specs:
        labels = ["clean", *specs]
        series = []
        for v in charted:
            values = [_cell(rows, v, metric=metric, family="accuracy")]
            values += [_cell(perturbed, v, perturbation=p) for p in specs]
            series.append((v, labels, values))
        robust_chart = _bars(series, f"{metric}: clean vs perturbed (95% intervals)")
        for v in versions:
            clean = _cell(rows, v, metric=metric, family="accuracy")
            for p in specs:
                cell = _cell(perturbed, v, perturbation=p)
                robust_rows.append(
                    {
                        "model_version": v,
                        "perturbation": p,
                        "clean": clean["mean"] if clean else None,
                        "perturbed": cell["mean"] if cell else None,
                        "ci_low": cell["low"] if cell else None,
                        "ci_high": cell["high"] if cell else None,
                    }
                )
    robust_export = ctx.site.export(f"robustness-{slug(scenario)}", robust_rows)

    # Calibration: the reliability diagram from the per-instance chosen probabilities.
    bins = _reliability(ctx, scenario, versions)
    calibration_chart = None
    if bins:
        traces = [
            {
                "type": "scatter",
                "mode": "lines",
                "x": [0, 1],
                "y": [0, 1],
                "name": "perfect",
                "line": {"dash": "dot", "color": "#8c959f"},
            }
        ]
        for v in charted:
            if v in bins:
                traces.append(
                    {
                        "type": "scatter",
                        "mode": "lines+markers",
                        "name": v,
                        "x": [b["confidence"] for b in bins[v]],
                        "y": [b["accuracy"] for b in bins[v]],
                        "text": [f"n={b['count']}" for b in bins[v]],
                    }
                )
        calibration_chart = {
            "data": traces,
            "layout": {
                "title": {"text": "reliability: accuracy against confidence (10 equal-mass bins)"},
                "xaxis": {"title": {"text": "mean chosen probability"}, "range": [0, 1]},
                "yaxis": {"title": {"text": "accuracy"}, "range": [0, 1]},
                "height": 420,
                "margin": {"t": 50},
            },
        }
    calibration_export = ctx.site.export(
        f"calibration-{slug(scenario)}",
        [{"model_version": v, **b} for v in versions for b in bins.get(v, [])],
    )
    ctx.render(
        "scenario.html",
        scenario_page(scenario),
        title=scenario,
        scenario=scenario,
        metric=metric,
        versions=versions,
        charted=charted,
        scorecards=scorecards,
        folded=folded,
        partial=_partial(every_row, versions),
        card_export=card_export,
        group_chart=group_chart,
        gaps=gaps,
        group_export=group_export,
        robust_chart=robust_chart,
        robust_export=robust_export,
        calibration_chart=calibration_chart,
        calibration_export=calibration_export,
        contamination=contamination,
        contamination_export=contamination_export,
        manifest=ctx.manifest.get(scenario, {}),
    )


def contamination_rows(rows: Iterable[dict], versions: Sequence[str], metric: str) -> list[dict]:
    """Per version (in ``versions`` order): the contamination rate and, for the primary
    ``metric``, the full and clean means and clean − full, each with its 95% interval; a
    version never checked has the rate's reason and no clean figures."""
    found: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        if r["group"] or r["perturbation"]:
            continue
        subset = r.get("subset") or ""
        if r["metric"] == RATE and not subset:
            found[(r["model_version"], "rate", "")] = r
        elif r["metric"] == metric and r["family"] != FAMILY:
            found.setdefault((r["model_version"], "score", subset), r)
    out = []
    for v in versions:
        rate = found.get((v, "rate", ""))
        if rate is None:
            continue  # scored before contamination rows existed
        line: dict = {"model_version": v, "checked": not rate["reason"], "reason": rate["reason"]}
        for name, row in (
            ("rate", rate),
            ("full", found.get((v, "score", ""))),
            ("clean", found.get((v, "score", CLEAN))),
            ("diff", found.get((v, "score", CLEAN_MINUS_FULL))),
        ):
            present = row is not None and not row["reason"]
            line[name] = row["mean"] if present else None
            line[f"{name}_low"] = row["ci_low"] if present else None
            line[f"{name}_high"] = row["ci_high"] if present else None
            line[f"{name}_count"] = row["count"] if present else None
            line[f"{name}_note"] = (row.get("ci_note") or row["reason"]) if row else ""
        out.append(line)
    return out


_FAMILY_ORDER = METRIC_FAMILIES


def _partial(every_row: Sequence[dict], versions: Sequence[str]) -> list[dict]:
    """The versions whose scorecard here is a partial evaluation, with its extent (each
    version's first row says, as :func:`~assay.evaluate.sequential.extent_of` reads it)."""
    first: dict[str, dict] = {}
    for row in every_row:
        first.setdefault(row["model_version"], row)
    out = []
    for version in versions:
        extent = extent_of_row(first[version]) if version in first else None
        if extent is not None and extent.partial:
            out.append(
                {
                    "version": version,
                    "evaluated": extent.evaluated,
                    "total": extent.total,
                    "reason": extent.stop_reason,
                }
            )
    return out


def _family_order(family: str) -> tuple[int, str]:
    return (_FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else len(_FAMILY_ORDER), family)


def _cell(rows: Iterable[dict], version: str, **match: str) -> dict | None:
    for r in rows:
        if r["model_version"] != version:
            continue
        if "group" not in match and r["group"]:
            continue
        if "perturbation" not in match and r["perturbation"]:
            continue
        if all(r[k] == v for k, v in match.items()):
            return {"mean": r["mean"], "low": r["ci_low"], "high": r["ci_high"]}
    return None


def _bars(series: Sequence[tuple[str, list[str], list[dict | None]]], title: str) -> dict:
    traces = []
    for name, labels, cells in series:
        ys = [None if c is None else _finite(c["mean"]) for c in cells]
        hi = [
            None if c is None or _finite(c["high"]) is None or y is None else c["high"] - y
            for c, y in zip(cells, ys, strict=True)
        ]
        lo = [
            None if c is None or _finite(c["low"]) is None or y is None else y - c["low"]
            for c, y in zip(cells, ys, strict=True)
        ]
        traces.append(
            {
                "type": "bar",
                "name": name,
                "x": labels,
                "y": ys,
                "error_y": {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
            }
        )
    return {
        "data": traces,
        "layout": {
            "title": {"text": title},
            "barmode": "group",
            "height": 420,
            "margin": {"t": 50},
            "xaxis": {"type": "category"},
        },
    }


def _reliability(ctx: _Context, scenario: str, versions: Sequence[str]) -> dict[str, list]:
    """Each version's reliability bins on ``scenario`` (versions without chosen
    probabilities left out), and the page's record of them (:func:`reliability_file`).

    A version whose partition's inputs are the last build's keeps the bins that build
    recorded; only the others' instance scores are read: a new version on a large board reads
    its own rows, not every version's.
    """
    kept = _recorded_bins(ctx, scenario)
    bins = {v: kept[v] for v in versions if v in kept and (v, scenario) in ctx.kept_partitions}
    missing = [v for v in versions if v not in bins]
    if missing:
        bins.update(_bins_from_scores(ctx, scenario, missing))
    ctx.site.put(
        reliability_file(scenario),
        json.dumps({v: bins[v] for v in versions}, allow_nan=False).encode("utf-8"),
    )
    return {v: bins[v] for v in versions if bins[v]}


def _recorded_bins(ctx: _Context, scenario: str) -> dict[str, list]:
    """The bins the last build recorded for ``scenario`` (none where it recorded nothing or
    the record does not read as one)."""
    folder, path = ctx.site.folder, reliability_file(scenario)
    if folder is None or not ctx.site.previous_file(path):
        return {}
    try:
        recorded = json.loads(folder.read(path) or b"{}")
    except ValueError:
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {v: b for v, b in recorded.items() if isinstance(v, str) and _are_bins(b)}


def _are_bins(value: object) -> bool:
    """Whether ``value`` reads as a version's bins (anything else is computed again)."""
    return isinstance(value, list) and all(
        isinstance(b, dict)
        and set(b) == {"count", "confidence", "accuracy"}
        and type(b["count"]) is int
        and all(type(b[k]) is float for k in ("confidence", "accuracy"))
        for b in value
    )


def _bins_from_scores(
    ctx: _Context, scenario: str, versions: Sequence[str]
) -> dict[str, list[dict]]:
    """The bins of ``versions``, from their per-instance chosen probabilities and accuracy."""
    out: dict[str, list[dict]] = {v: [] for v in versions}
    scores = ctx.results.scores(scenario, versions, ["chosen_prob", "acc"])
    if scores is None:
        return out
    table = scores.filter(pc.equal(scores["group"], "")).select(
        ["model_version", "instance_id", "trial", "template_id", "metric", "family", "value"]
    )
    pairs: dict[str, dict[tuple, list]] = defaultdict(dict)
    # Column by column (rows as dicts cost most of a scenario page over a large board).
    columns = [table[c].to_pylist() for c in table.column_names]
    for version, iid, trial, template, metric, family, value in zip(*columns, strict=True):
        if metric == "acc" and family != "accuracy":
            continue
        cell = pairs[version].setdefault((iid, trial, template), [None, None])
        cell[0 if metric == "chosen_prob" else 1] = value
    for v in versions:
        got = [(p, y) for p, y in pairs.get(v, {}).values() if p is not None and y is not None]
        if not got:
            continue
        probs, correct = zip(*got, strict=True)
        out[v] = [
            {"count": n, "confidence": conf, "accuracy": acc}
            for n, conf, acc in reliability_bins(probs, [int(c) for c in correct])
        ]
    return out
