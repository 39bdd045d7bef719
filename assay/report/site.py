"""The results explorer: a static site of linked pages, charts and exports.

Pages (all at the site's root, so relative links work from a file, a static web server or
an object store alike):

- ``index.html`` / ``day-<day>.html``: the leaderboard of the newest / each stored day;
- ``compare-<a>--<b>-<id>.html``: two versions compared (paired tests, flipped instances);
- ``scenario-<key>.html``: scorecards, group breakdowns, robustness, calibration, instances;
- ``instance.html#s=<scenario>&v=<version>&id=<instance>``: one prediction;
- ``history.html``: scores over days, alias moves;
- ``export/``: every table as CSV and JSON, each partition's per-instance rows as JSONL.

Pages are jinja2 templates with autoescaping; data for charts sits in
``<script type="application/json">`` blocks (HTML-safe JSON) and is drawn by plotly, whose
JavaScript is copied into ``static/`` once. Per-instance data is one ``data/<s>/<v>.js`` file
per partition, loaded by a ``<script>`` element only when a page needs it: browsers refuse
``fetch()`` from ``file://``, but run scripts from there. The browser code puts every text
into the page with ``textContent``, never as markup.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from itertools import pairwise
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from assay.compare.ranking import instance_column
from assay.core.digests import seed_from
from assay.report.data import (
    ExplorerData,
    alias_holders,
    alias_moves,
    end_of,
    split_by,
)
from assay.scoring.metrics.calibration import reliability_bins
from assay.stats.paired import Comparison, adjust, compare

Writer = Callable[[str, bytes], object]
# Flipped instances listed per scenario on a comparison page (all are in its export).
MAX_FLIPS_SHOWN = 100
# Versions drawn in the per-version charts of a scenario page (the best ones on the board).
MAX_CHART_VERSIONS = 12
_ANSWER_CHARS = 400
_SAFE_NAME = re.compile(r"[A-Za-z0-9._@-]+")


# --------------------------------------------------------------------------- names and links


def slug(key: str) -> str:
    """A file-name-safe form of a key; keys with other characters get a digest suffix, so
    two keys never share a file."""
    if _SAFE_NAME.fullmatch(key) and not key.startswith("."):
        return key
    cleaned = re.sub(r"[^A-Za-z0-9._@-]+", "_", key).strip("._")[:60]
    return f"{cleaned}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def day_page(day: str) -> str:
    return f"day-{slug(day)}.html"


def scenario_page(scenario: str) -> str:
    """The scenario page's path within the site."""
    return f"scenario-{slug(scenario)}.html"


def compare_page(a: str, b: str) -> str:
    pair = hashlib.sha256(f"{a}\x00{b}".encode()).hexdigest()[:8]
    return f"compare-{slug(a)}--{slug(b)}-{pair}.html"


def instance_href(scenario: str, version: str, instance_id: str) -> str:
    """The instance page's link for one prediction (parameters in the fragment)."""
    return "instance.html#" + urlencode(
        {"s": scenario, "v": version, "id": instance_id}, quote_via=quote
    )


def data_file(scenario: str, version: str) -> str:
    return f"data/{slug(scenario)}/{slug(version)}.js"


def instances_file(scenario: str) -> str:
    """The scenario's inputs and references, shared by every version's data file."""
    return f"data/{slug(scenario)}/_instances.js"


def jsonl_file(scenario: str, version: str) -> str:
    # Gzipped: a partition's rows repeat the prompts and references, and compress ~10×.
    return f"export/instances/{slug(scenario)}/{slug(version)}.jsonl.gz"


# --------------------------------------------------------------------------- rendering helpers


def _num(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _finite(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)  # type: ignore[arg-type]
    return value if math.isfinite(value) else None


def _html_safe_json(value: object) -> str:
    """JSON that is safe inside HTML and JavaScript: ``<``, ``>``, ``&`` and the two
    JavaScript line separators are escaped, so no text can close a script element."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _clean(value: Any) -> Any:
    """NaN and infinities as None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _plot_text(value: Any, key: str = "") -> Any:
    """A chart spec with its strings escaped for plotly, which reads a few HTML tags (``<b>``,
    ``<a href>``) in labels: data texts must show as written. ``meta`` (matched by the page's
    filters, never displayed) stays as is."""
    if isinstance(value, str):
        return value if key == "meta" else html.escape(value, quote=False)
    if isinstance(value, dict):
        return {k: _plot_text(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plot_text(v, key) for v in value]
    return value


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("assay.report", "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["jsdata"] = lambda v: Markup(_html_safe_json(_clean(v)))
    env.filters["chartdata"] = lambda v: Markup(_html_safe_json(_clean(_plot_text(v))))
    env.globals.update(
        scenario_page=scenario_page,
        compare_page=compare_page,
        day_page=day_page,
        instance_href=instance_href,
    )
    return env


def _csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    buffer = io.StringIO()
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in _clean(dict(row)).items()})
    return buffer.getvalue().encode("utf-8")


def _json(rows: Any) -> bytes:
    return json.dumps(_clean(rows), ensure_ascii=False, indent=1).encode("utf-8")


@dataclass
class SiteSummary:
    """What a build wrote."""

    files: int = 0
    bytes: int = 0
    pages: list[str] = field(default_factory=list)


class _Site:
    def __init__(self, write: Writer) -> None:
        self._write = write
        self.summary = SiteSummary()

    def put(self, path: str, data: bytes) -> None:
        self._write(path, data)
        self.summary.files += 1
        self.summary.bytes += len(data)
        if path.endswith(".html"):
            self.summary.pages.append(path)

    def export(self, name: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Write ``export/<name>.csv`` and ``.json``; return their links."""
        links = {"csv": f"export/{name}.csv", "json": f"export/{name}.json"}
        self.put(links["csv"], _csv(rows))
        self.put(links["json"], _json(list(rows)))
        return links


# --------------------------------------------------------------------------- per-partition data


def _answer(row: Mapping[str, Any]) -> str:
    """What the model answered: its text, or for choice scoring the most likely choice."""
    if row.get("error"):
        return f"error: {row['error']}"
    if row.get("text"):
        return str(row["text"])
    choices = row.get("choices") or []
    if choices:
        best = max(choices, key=lambda c: c["logprob"])
        return f"→ {best['text']}"
    return ""


def _score_lookup(scores: pa.Table | None, metric: str) -> dict[tuple, float]:
    """(instance, perturbation, trial, template) → the metric's value (ungrouped rows)."""
    if scores is None or scores.num_rows == 0:
        return {}
    rows = scores.filter(
        pc.and_(pc.equal(scores["metric"], metric), pc.equal(scores["group"], ""))
    ).select(["instance_id", "perturbation", "trial", "template_id", "value", "family"])
    out = {}
    for r in rows.to_pylist():
        # Worst-case rows (perturbation = family name) summarise; keep the per-variant rows.
        if r["perturbation"] in ("robustness", "fairness"):
            continue
        out[(r["instance_id"], r["perturbation"], r["trial"], r["template_id"])] = r["value"]
    return out


def partition_records(
    instances: pa.Table | None,
    outputs: pa.Table,
    scores: pa.Table | None,
    metric: str,
) -> list[dict[str, Any]]:
    """One record per instance of a partition: input, references, every request with its
    completion, choices, cost and primary-metric value, and the instance's other scores."""
    by_id = {}
    if instances is not None:
        for row in instances.to_pylist():
            by_id[row["id"]] = row
    values = _score_lookup(scores, metric)
    extra: dict[str, list] = defaultdict(list)
    if scores is not None and scores.num_rows:
        mask = pc.and_(
            pc.equal(scores["perturbation"], ""),
            pc.or_(pc.equal(scores["group"], ""), pc.equal(scores["family"], "judge")),
        )
        for r in (
            scores.filter(mask)
            .select(["instance_id", "metric", "family", "group", "value", "trial"])
            .to_pylist()
        ):
            extra[r["instance_id"]].append(
                [r["family"], r["metric"], r["group"], r["trial"], _finite(r["value"])]
            )
    records: dict[str, dict[str, Any]] = {}
    for row in outputs.to_pylist():
        iid = row["instance_id"]
        record = records.get(iid)
        if record is None:
            inst = by_id.get(iid) or {}
            refs = list(zip(inst.get("references") or [], inst.get("correct") or [], strict=False))
            record = records[iid] = {
                "id": iid,
                "input": inst.get("input"),
                "references": [[t, bool(c)] for t, c in refs],
                "groups": json.loads(inst["groups"]) if inst.get("groups") else {},
                "correct": None,
                "answer": None,
                "requests": [],
                "scores": extra.get(iid, []),
            }
        value = _finite(values.get((iid, row["perturbation"], row["trial"], row["template_id"])))
        answer = _answer(row)
        main = row["perturbation"] == "" and row.get("part") in ("", None)
        if main and record["answer"] is None:
            record["answer"] = answer[:_ANSWER_CHARS]
            record["correct"] = value
        record["requests"].append(
            {
                "perturbation": row["perturbation"],
                "trial": row["trial"],
                "template_id": row["template_id"],
                "kind": row["kind"],
                "method": row.get("method"),
                "part": row.get("part"),
                "prompt": row["prompt"],
                "prompt_digest": row["prompt_digest"],
                "truncated": row.get("truncated"),
                "text": row["text"],
                "answer": answer,
                "choices": [
                    [c["text"], _finite(c["logprob"]), c["n_tokens"], c["is_greedy"]]
                    for c in row["choices"] or []
                ],
                "latency_s": _finite(row["latency_s"]),
                "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
                "batch_size": row["batch_size"],
                "cached": row["cached"],
                "error": row["error"],
                "value": value,
            }
        )
    return list(records.values())


# --------------------------------------------------------------------------- the build


@dataclass
class _Context:
    data: ExplorerData
    site: _Site
    env: Environment
    generated_at: datetime
    n_resamples: int
    scenarios: list[str]
    versions: list[str]
    answers: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    manifest: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    columns: dict[str, Any] | None = None  # scenario → ScoreColumn, built on first use

    def render(self, template: str, path: str, **values: Any) -> None:
        nav = [{"title": s, "href": scenario_page(s)} for s in self.scenarios]
        page = self.env.get_template(template).render(
            generated_at=f"{self.generated_at:%Y-%m-%d %H:%M} UTC",
            latest_day=self.data.day,
            scenario_nav=nav,
            **values,
        )
        self.site.put(path, page.encode("utf-8"))


def build_site(
    data: ExplorerData,
    write: Writer,
    *,
    generated_at: datetime,
    n_resamples: int = 1000,
) -> SiteSummary:
    """Write the whole explorer through ``write(relative_path, bytes)``; ``index.html`` last,
    so a reader of a half-written site never lands on links to pages not yet there."""
    from plotly.offline import get_plotlyjs

    site = _Site(write)
    ctx = _Context(
        data=data,
        site=site,
        env=_environment(),
        generated_at=generated_at,
        n_resamples=n_resamples,
        scenarios=list(data.board.primary_metrics),
        versions=data.board_versions,
    )
    site.put("static/plotly.min.js", get_plotlyjs().encode("utf-8"))
    static = resources.files("assay.report") / "static"
    for name in ("explorer.js", "explorer.css"):
        site.put(f"static/{name}", (static / name).read_bytes())
    _partitions(ctx)
    ctx.pairs = _pairs(ctx.versions)
    for a, b in ctx.pairs:
        _comparison(ctx, a, b)
    _comparison_index(ctx)
    for scenario in ctx.scenarios:
        _scenario(ctx, scenario)
    ctx.render("instance.html", "instance.html", manifest=ctx.manifest, title="Instance")
    _history(ctx)
    days = data.days()
    for day in days:
        if day != data.day:
            _leaderboard(ctx, day, day_page(day), days)
    _leaderboard(ctx, data.day, day_page(data.day), days)
    _leaderboard(ctx, data.day, "index.html", days)
    return site.summary


def _partitions(ctx: _Context) -> None:
    """Per partition of a version on the board: the instance data file and its JSONL."""
    data = ctx.data
    scores_by_version = split_by(data.instance_scores, "model_version")
    primary = data.board.primary_metrics
    instances_cache: dict[str, pa.Table | None] = {}
    written: set[str] = set()  # scenarios whose shared instance file is written
    for version in ctx.versions:
        by_scenario = (
            split_by(scores_by_version[version], "scenario")
            if version in (scores_by_version)
            else {}
        )
        for scenario in ctx.scenarios:
            outputs = data.outputs(version, scenario)
            if outputs is None:
                continue
            if scenario not in instances_cache:
                instances_cache[scenario] = data.instances(scenario)
            records = partition_records(
                instances_cache[scenario], outputs, by_scenario.get(scenario), primary[scenario]
            )
            key = f"{scenario}\x1f{version}"
            shared = ("input", "references", "groups")
            payload = {
                "key": key,
                "scenario": scenario,
                "version": version,
                "metric": primary[scenario],
                "request_fields": REQUEST_FIELDS,
                "instances": [_compact(r, shared) for r in records],
            }
            ctx.site.put(data_file(scenario, version), _data_script(key, payload))
            if scenario not in written:
                texts = {r["id"]: [r["input"], r["references"], r["groups"]] for r in records}
                ctx.site.put(
                    instances_file(scenario),
                    _data_script(f"{scenario}\x1f", {"scenario": scenario, "instances": texts}),
                )
                written.add(scenario)
            head = {"model_version": version, "scenario": scenario}
            lines = "".join(
                json.dumps({**head, **r}, ensure_ascii=False, allow_nan=False) + "\n"
                for r in records
            )
            ctx.site.put(
                jsonl_file(scenario, version), gzip.compress(lines.encode("utf-8"), 6, mtime=0)
            )
            ctx.manifest.setdefault(scenario, {})[version] = {
                "data": data_file(scenario, version),
                "instances": instances_file(scenario),
                "jsonl": jsonl_file(scenario, version),
            }
            ctx.answers[(version, scenario)] = {r["id"]: r["answer"] or "" for r in records}


# The fields of a request in a page's data file, which holds each request as a list in this
# order (names once per file, not once per request: the file is about half the size).
REQUEST_FIELDS = (
    "perturbation",
    "trial",
    "template_id",
    "kind",
    "method",
    "part",
    "prompt",
    "prompt_digest",
    "truncated",
    "text",
    "answer",
    "choices",
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
    "batch_size",
    "cached",
    "error",
    "value",
)


def _compact(record: dict[str, Any], leave_out: Sequence[str]) -> dict[str, Any]:
    """A record as a page's data file holds it: requests as lists, display precision
    (latency to 0.01 ms, log-probabilities to 1e-4; the JSONL export keeps every digit)."""
    out = {k: v for k, v in record.items() if k not in leave_out and k != "requests"}
    requests = []
    for q in record["requests"]:
        q = dict(q)
        if q["latency_s"] is not None:
            q["latency_s"] = round(q["latency_s"], 5)
        q["choices"] = [
            [t, None if lp is None else round(lp, 4), n, g] for t, lp, n, g in q["choices"]
        ]
        if q["answer"] == q["text"]:
            q["answer"] = None  # the page shows the text
        requests.append([q[f] for f in REQUEST_FIELDS])
    out["requests"] = requests
    return out


def _data_script(key: str, payload: Any) -> bytes:
    """A script that files ``payload`` under ``key`` for the page that loads it."""
    return (
        "(window.ASSAY_PARTITIONS = window.ASSAY_PARTITIONS || {})["
        + _html_safe_json(key)
        + "] = "
        + _html_safe_json(payload)
        + ";\n"
    ).encode("utf-8")


def _pairs(versions: Sequence[str]) -> list[tuple[str, str]]:
    """The comparisons that get a page: neighbours on the board and the leader against
    everyone (2n at most, instead of every one of n² pairs)."""
    pairs = list(pairwise(versions)) + [(versions[0], v) for v in versions[1:]]
    return list(dict.fromkeys(pairs))


def _columns(ctx: _Context) -> dict[str, Any]:
    """Each scenario's per-instance primary-metric column over every board version."""
    if ctx.columns is not None:
        return ctx.columns
    data = ctx.data
    keep = pa.array(ctx.versions, pa.string())
    scores = data.instance_scores.filter(pc.is_in(data.instance_scores["model_version"], keep))
    by_scenario = split_by(scores, "scenario")
    columns = {}
    for scenario, metric in data.board.primary_metrics.items():
        table = by_scenario.get(scenario)
        if table is None:
            continue
        try:
            columns[scenario] = instance_column(
                table, scenario, metric, ctx.versions, metric in data.lower_is_better
            )
        except ValueError:
            continue  # no unperturbed rows: the scenario has nothing to pair
    ctx.columns = columns
    return columns


def pair_comparisons(ctx: _Context, a: str, b: str) -> tuple[list[Comparison], dict]:
    """Paired tests of ``a`` against ``b`` on every scenario (Holm across the scenarios)
    and, per scenario, the rows where one was right and the other wrong."""
    columns = _columns(ctx)
    index = {v: i for i, v in enumerate(ctx.versions)}
    results: list[Comparison] = []
    flips: dict[str, list[dict]] = {}
    board_tests = {(c.model_a, c.model_b, c.scenario): c for c in ctx.data.board.comparisons}
    for scenario, metric in ctx.data.board.primary_metrics.items():
        column = columns.get(scenario)
        if column is None:
            continue
        va, vb = column.values[:, index[a]], column.values[:, index[b]]
        shared = ~np.isnan(va) & ~np.isnan(vb)
        if not shared.any():
            continue
        clusters = column.clusters[shared] if column.clusters is not None else None
        # Neighbours on the board were compared when it was built: the same test, reused.
        known = board_tests.get((a, b, scenario))
        results.append(
            known
            if known is not None
            else compare(
                va[shared],
                vb[shared],
                model_a=a,
                model_b=b,
                metric=metric,
                scenario=scenario,
                clusters=clusters,
                seed=seed_from("explorer", scenario, metric, a, b),
                n_resamples=ctx.n_resamples,
                confidence=ctx.data.board.confidence,
            )
        )
        binary = np.isin(va[shared], (0.0, 1.0)).all() and np.isin(vb[shared], (0.0, 1.0)).all()
        rows = []
        ids = column.clusters[shared] if column.clusters is not None else np.arange(shared.sum())
        for iid, x, y in zip(ids, va[shared], vb[shared], strict=True):
            if (binary and x != y) or (not binary and abs(x - y) > 1e-12):
                rows.append({"instance_id": str(iid), "a": float(x), "b": float(y)})
        if not binary:
            rows.sort(key=lambda r: -abs(r["a"] - r["b"]))
        flips[scenario] = rows
    adjusted = adjust(results, method="holm", alpha=1.0 - ctx.data.board.confidence)
    return adjusted, flips


def _comparison_rows(comparisons: Iterable[Comparison]) -> list[dict]:
    return [
        {
            "scenario": c.scenario,
            "metric": c.metric,
            "model_a": c.model_a,
            "model_b": c.model_b,
            "n": c.n,
            "n_clusters": c.n_clusters,
            "mean_diff": c.mean_diff,
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
            "p_value": c.p_value,
            "p_adjusted": c.p_adjusted,
            "test": c.test,
            "significant": c.significant,
        }
        for c in comparisons
    ]


def _comparison(ctx: _Context, a: str, b: str) -> None:
    comparisons, flips = pair_comparisons(ctx, a, b)
    rows = _comparison_rows(comparisons)
    name = compare_page(a, b)[: -len(".html")]
    exports = ctx.site.export(name, rows)
    flip_rows = []
    sections = []
    for scenario, found in flips.items():
        shown = []
        answers_a = ctx.answers.get((a, scenario), {})
        answers_b = ctx.answers.get((b, scenario), {})
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
                "metric": ctx.data.board.primary_metrics[scenario],
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
        pairs=[{"a": x, "b": y, "href": compare_page(x, y)} for x, y in ctx.pairs],
    )


def _comparison_index(ctx: _Context) -> None:
    rows = [{"model_a": a, "model_b": b, "href": compare_page(a, b)} for a, b in ctx.pairs]
    ctx.render("comparisons.html", "comparisons.html", title="Comparisons", pairs=rows)


# --------------------------------------------------------------------------- scenario page


def _scenario(ctx: _Context, scenario: str) -> None:
    data = ctx.data
    metric = data.board.primary_metrics[scenario]
    cards = data.metric_tables.filter(pc.equal(data.metric_tables["scenario"], scenario))
    cards = cards.filter(pc.is_in(cards["model_version"], pa.array(ctx.versions, pa.string())))
    rows = cards.to_pylist()
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
                        "count": r["count"],
                    }
                )
            table.append({"version": v, "cells": line})
        scorecards.append({"family": family, "columns": columns, "rows": table, "absent": absent})
    card_export = ctx.site.export(
        f"scorecards-{slug(scenario)}",
        [
            {
                k: r[k]
                for k in (
                    "model_version",
                    "scenario",
                    "metric",
                    "family",
                    "group",
                    "perturbation",
                    "mean",
                    "count",
                    "ci_low",
                    "ci_high",
                    "reason",
                )
            }
            for r in sorted(
                rows,
                key=lambda r: (
                    order[r["model_version"]],
                    r["family"],
                    r["metric"],
                    r["group"],
                    r["perturbation"],
                ),
            )
        ],
    )

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
        card_export=card_export,
        group_chart=group_chart,
        gaps=gaps,
        group_export=group_export,
        robust_chart=robust_chart,
        robust_export=robust_export,
        calibration_chart=calibration_chart,
        calibration_export=calibration_export,
        manifest=ctx.manifest.get(scenario, {}),
    )


_FAMILY_ORDER = (
    "accuracy",
    "calibration",
    "robustness",
    "fairness",
    "bias",
    "toxicity",
    "efficiency",
)


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
    scores = ctx.data.instance_scores
    mask = pc.and_(
        pc.and_(pc.equal(scores["scenario"], scenario), pc.equal(scores["perturbation"], "")),
        pc.and_(
            pc.equal(scores["group"], ""),
            pc.is_in(scores["metric"], pa.array(["chosen_prob", "acc"])),
        ),
    )
    table = scores.filter(mask).select(
        ["model_version", "instance_id", "trial", "template_id", "metric", "family", "value"]
    )
    pairs: dict[str, dict[tuple, list]] = defaultdict(dict)
    for r in table.to_pylist():
        if r["metric"] == "acc" and r["family"] != "accuracy":
            continue
        cell = pairs[r["model_version"]].setdefault(
            (r["instance_id"], r["trial"], r["template_id"]), [None, None]
        )
        cell[0 if r["metric"] == "chosen_prob" else 1] = r["value"]
    out = {}
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


# --------------------------------------------------------------------------- leaderboard


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
    table = []
    for r in rows:
        v = r["model_version"]
        n = nxt.get(v)
        table.append(
            {
                **r,
                "description": registered[v].description if v in registered else "",
                "aliases": held.get(v, []),
                "compare_next": compare_page(v, n) if n and (v, n) in pairs else None,
            }
        )
    export_rows = [
        {
            **{k: v for k, v in r.items() if k not in ("compare_next", "aliases")},
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
    if day == data.day:
        comparisons = [
            {
                **c,
                "href": compare_page(c["model_a"], c["model_b"])
                if (c["model_a"], c["model_b"]) in pairs
                else None,
            }
            for c in _comparison_rows(data.board.comparisons)
        ]
        if path != "index.html":
            comparison_exports = ctx.site.export(
                f"comparisons-{slug(day)}", _comparison_rows(data.board.comparisons)
            )
        else:
            comparison_exports = {
                "csv": f"export/comparisons-{slug(day)}.csv",
                "json": f"export/comparisons-{slug(day)}.json",
            }
    # Each scenario's primary metric per version with its 95% interval (headline rows).
    cards = data.metric_tables
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
        notes=list(data.board.notes) if day == data.day else [],
        exports=exports,
        chart=chart,
        is_latest=day == data.day,
    )


# --------------------------------------------------------------------------- history


def _day_end(day: str) -> str:
    """Where a day's board sits on a time axis: its end, since it holds that whole day."""
    return f"{day} 23:59:59"


def _history(ctx: _Context) -> None:
    data = ctx.data
    days = data.days()
    per_day = {d: {r["model_version"]: r for r in data.ranking_rows(d)} for d in days}
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
    ctx.render(
        "history.html",
        "history.html",
        title="History",
        versions=versions,
        version_chart=version_chart,
        alias_chart=alias_chart,
        moves=moves,
        history_export=ctx.site.export("history", history_rows),
        alias_export=ctx.site.export("alias-history", alias_rows),
        moves_export=ctx.site.export("alias-events", moves),
        days=days,
        per_day=[{"day": d, "rows": per_day[d]} for d in days],
    )


# --------------------------------------------------------------------------- writers


def store_writer(store: Any, prefix: str = "explorer") -> Writer:
    """Write the site under ``prefix`` of a :class:`~assay.storage.ParquetStore` (local
    directory or object store), each file atomically."""

    def write(path: str, data: bytes) -> str:
        return store.write_file(f"{prefix}/{path}", data)

    return write


def directory_writer(root: Any) -> Writer:
    """Write the site into a local directory (created as needed)."""
    from pathlib import Path

    base = Path(root)

    def write(path: str, data: bytes) -> None:
        target = base / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    return write
