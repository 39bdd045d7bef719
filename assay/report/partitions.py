"""Per-partition data of the explorer: one record per instance with every request, written
as a page's data script and as a gzipped JSONL export."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from assay.report.data import split_by
from assay.report.links import data_file, instances_file, jsonl_file
from assay.report.render import _Context, _finite, _html_safe_json

_ANSWER_CHARS = 400


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
