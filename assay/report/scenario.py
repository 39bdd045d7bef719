"""The scenario page: scorecards, group breakdowns, robustness, calibration and instances,
drawn in the browser from one card per version (see :func:`_scenario`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import pyarrow.compute as pc

from assay.compare.ranking import SCORECARD_COLUMNS
from assay.contamination.clean import CLEAN, CLEAN_MINUS_FULL, FAMILY, RATE
from assay.core.records import METRIC_FAMILIES
from assay.evaluate.sequential import extent_of_row
from assay.report.links import card_file, cards_file, scenario_page, slug
from assay.report.partitions import _data_script
from assay.report.render import _clean, _Context
from assay.report.results import NONE
from assay.report.writing import export_part, inputs_digest
from assay.scoring.metrics.calibration import reliability_bins
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES

# Versions drawn in the per-version charts of a scenario page (the best ones on the board).
MAX_CHART_VERSIONS = 12

# The exports of a scenario page, each assembled in the browser from the versions' parts.
EXPORTS = ("scorecards", "contamination", "groups", "robustness", "calibration")


def _scenario(ctx: _Context, scenario: str) -> None:
    """The scenario's page: a page that draws itself in the browser from the scenario's
    index (:func:`cards_file`: the board's versions with a card, in order, and where their
    instance data is) and one card per version (:func:`card_file`). A card is made again
    only when its partition's metric table or instance scores changed, so a new version on
    a large board costs its own cards and the small index, and no page is rendered again."""
    metric = ctx.data.board.primary_metrics[scenario]
    listed = _cards(ctx, scenario, metric)
    ctx.site.put(
        cards_file(scenario),
        _data_script(
            f"cards\x1f{scenario}",
            {
                "versions": [[v, card_file(scenario, v)] for v in listed],
                "partitions": ctx.manifest.get(scenario, {}),
            },
        ),
    )
    inputs = inputs_digest("scenario", scenario, metric, ctx.scenarios)
    with ctx.site.unit(f"scenario\x1f{scenario}", inputs) as fresh:
        if fresh:
            ctx.render(
                "scenario.html",
                scenario_page(scenario),
                title=scenario,
                scenario=scenario,
                metric=metric,
                page={
                    "scenario": scenario,
                    "metric": metric,
                    "index": cards_file(scenario),
                    "families": list(METRIC_FAMILIES),
                    "charted": MAX_CHART_VERSIONS,
                    "exports": {name: f"{name}-{slug(scenario)}" for name in EXPORTS},
                },
            )


def _cards(ctx: _Context, scenario: str, metric: str) -> list[str]:
    """Write the cards of the board's versions on ``scenario`` whose inputs changed; return
    the versions that have one, in the board's order."""
    site, results = ctx.site, ctx.results
    inputs = {
        v: inputs_digest(
            "card",
            scenario,
            v,
            metric,
            [results.fingerprint(a, v, scenario) for a in (METRIC_TABLES, INSTANCE_SCORES)],
        )
        for v in ctx.versions
        # A version without a metric table here has no card (and nothing is read for it).
        if results.fingerprint(METRIC_TABLES, v, scenario) != NONE
    }
    kept = {v for v in inputs if site.unchanged_unit(_card_key(scenario, v), inputs[v])}
    site.summary.units_skipped += len(kept)
    changed = [v for v in inputs if v not in kept]
    made = set()
    if changed:
        table = results.cards(scenario, changed)
        rows: dict[str, list[dict]] = defaultdict(list)
        for row in [] if table is None else table.to_pylist():
            rows[row["model_version"]].append(row)
        bins = _bins_from_scores(ctx, scenario, [v for v in changed if v in rows])
        for v in changed:
            if v not in rows:
                continue  # not evaluated on this scenario: no card
            path = card_file(scenario, v)
            card = version_card(rows[v], v, metric, bins.get(v, []))
            site.put(path, _data_script(_card_key(scenario, v), _clean(card)))
            site.rendered_unit(_card_key(scenario, v), inputs[v], [path])
            made.add(v)
    return [v for v in ctx.versions if v in kept or v in made]


def _card_key(scenario: str, version: str) -> str:
    return f"card\x1f{scenario}\x1f{version}"


def version_card(
    every_row: Sequence[dict], version: str, metric: str, bins: Sequence[dict]
) -> dict:
    """What the scenario page shows of one version, from its metric table rows on the
    scenario (``every_row``, the contamination subsets' included) and its reliability
    ``bins``: scorecard cells per family, the primary metric per group and per perturbation,
    the group gaps, the contamination line, the partial extent, and its part of each export
    (:func:`~assay.report.writing.export_part`). ``shown``: whether it has rows over every
    evaluated instance (the page lists only those; the scorecards export has every row)."""
    rows = [r for r in every_row if not r.get("subset")]
    shown = [version] if rows else []
    families: dict[str, list] = defaultdict(list)
    for r in rows:
        if not r["group"]:
            families[r["family"]].append(
                [
                    r["metric"],
                    r["perturbation"],
                    r["mean"],
                    r["ci_low"],
                    r["ci_high"],
                    r["reason"],
                    r.get("ci_note") or "",  # why it has no interval
                ]
            )
    grouped = [
        r
        for r in rows
        if r["group"]
        and r["family"] == "accuracy"
        and r["metric"] == metric
        and not r["perturbation"]
    ]
    gaps = [
        {k: r[k] for k in _GROUP_COLUMNS}
        for r in sorted(
            (
                r
                for r in rows
                if r["metric"] in (f"{metric}_group_gap", f"{metric}_group_ratio")
                and not r["reason"]
            ),
            key=lambda r: (r["group"], r["metric"]),
        )
    ]
    perturbed = [
        r
        for r in rows
        if r["perturbation"]
        and r["metric"] == metric
        and not r["group"]
        and r["family"] in ("robustness", "fairness")
        and not r["reason"]
    ]
    clean = _cell(rows, version, metric=metric, family="accuracy")
    robust = {
        p: _cell(perturbed, version, perturbation=p)
        for p in sorted({r["perturbation"] for r in perturbed}, key=_perturbation_order)
    }
    card_rows = [
        {
            **{k: r[k] for k in (*SCORECARD_COLUMNS, "reason")},
            "ci_note": r.get("ci_note") or "",
            "subset": r.get("subset") or "",
        }
        for r in sorted(
            every_row,
            key=lambda r: (
                r.get("subset") or "",
                r["family"],
                r["metric"],
                r["group"],
                r["perturbation"],
            ),
        )
    ]
    extent = extent_of_row(every_row[0]) if every_row else None
    contamination = contamination_rows(every_row, shown, metric)  # its line, or none
    return {
        "version": version,
        "shown": bool(shown),
        "partial": (
            {"evaluated": extent.evaluated, "total": extent.total, "reason": extent.stop_reason}
            if extent is not None and extent.partial
            else None
        ),
        "families": families,
        "groups": {
            g: _cell(grouped, version, group=g) for g in sorted({r["group"] for r in grouped})
        },
        "gaps": gaps,
        "clean": clean,
        "robust": robust,
        "bins": list(bins) if shown else [],
        "contamination": contamination[0] if contamination else None,
        "exports": {
            "scorecards": export_part(card_rows),
            "contamination": export_part(contamination),
            "groups": export_part([{k: r[k] for k in _GROUP_COLUMNS} for r in grouped] + gaps),
            "robustness": export_part(
                [
                    {
                        "model_version": version,
                        "perturbation": p,
                        "clean": clean["mean"] if clean else None,
                        "perturbed": cell["mean"] if cell else None,
                        "ci_low": cell["low"] if cell else None,
                        "ci_high": cell["high"] if cell else None,
                    }
                    for p, cell in robust.items()
                ]
            ),
            "calibration": export_part(
                [{"model_version": version, **b} for b in bins] if shown else []
            ),
        },
    }


_GROUP_COLUMNS = ("model_version", "metric", "group", "mean", "count", "ci_low", "ci_high")


def _perturbation_order(perturbation: str) -> tuple[bool, str]:
    """Perturbations in the page's order: each one, then the families' worst cases."""
    return (perturbation in ("robustness", "fairness"), perturbation)


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
