"""Per-partition data of the explorer: one record per instance with every request (and
the judges' replies), written as a page's data script and as a gzipped JSONL export."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.contamination.subsets import check_table
from assay.report.links import data_file, instances_file, jsonl_file
from assay.report.render import _Context, _finite, _html_safe_json
from assay.report.writing import inputs_digest
from assay.storage.contract import (
    CONTAMINATION,
    INSTANCE_SCORES,
    JUDGE_REPLIES,
    MODEL_OUTPUTS,
)
from assay.storage.parquet import ParquetStore

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
    replies: pa.Table | None = None,
    contamination: pa.Table | None = None,
) -> list[dict[str, Any]]:
    """One record per instance of a partition: input, references, every request with its
    completion, choices, cost and primary-metric value, the instance's other scores, the
    judges' replies (``judge_replies``: LLM-as-judge and toxicity judge) where any judged it,
    and the contamination check's findings (``contamination``: per detector and corpus, its
    score, whether it flagged the instance, its label and evidence; empty: not checked)."""
    replied: dict[str, list] = defaultdict(list)
    if replies is not None:
        for r in replies.to_pylist():
            replied[r["instance_id"]].append(
                [
                    r["kind"],
                    r["judge"],
                    r["perturbation"],
                    r["trial"],
                    r["template_id"],
                    r["repeat"],
                    _finite(r["score"]),
                    r["failure"],
                    r["reply"],
                ]
            )
    findings: dict[str, list] = defaultdict(list)
    if contamination is not None and contamination.num_rows:
        check_table(contamination, "contamination")
        for r in contamination.to_pylist():
            findings[r["instance_id"]].append(
                [
                    r["detector"],
                    r.get("corpus") or "",
                    _finite(r.get("score")),
                    bool(r["flagged"]),
                    r.get("label") or "",
                    r.get("evidence") or "",
                ]
            )
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
        columns = ["instance_id", "metric", "family", "group", "value", "trial"]
        noted = "note" in scores.column_names  # partitions scored before notes have none
        for r in scores.filter(mask).select(columns + ["note"] * noted).to_pylist():
            extra[r["instance_id"]].append(
                [
                    r["family"],
                    r["metric"],
                    r["group"],
                    r["trial"],
                    _finite(r["value"]),
                    r.get("note") or "",
                ]
            )
    records: dict[str, dict[str, Any]] = {}
    unused = ("token_logprobs", "request_digest")  # the most costly columns to read, unshown
    for row in outputs.select([c for c in outputs.column_names if c not in unused]).to_pylist():
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
                "judge_replies": replied.get(iid, []),
                "contamination": findings.get(iid, []),
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


@dataclass(frozen=True)
class PartitionJob:
    """One partition's page data to build (in this process or a worker): the files it reads
    (``None``: not there), its instance scores, and where to write."""

    scenario: str
    version: str
    metric: str
    scores: pa.Table | None
    outputs_path: str
    replies_path: str | None
    checked_path: str | None
    instances_path: str | None
    store: ParquetStore
    folder: Any  # a writing.SiteFolder, or a plain writer callable in this process only


@dataclass(frozen=True)
class PartitionResult:
    scenario: str
    version: str
    files: tuple[tuple[str, str, int], ...]  # (path, content digest, size) written
    answers: dict[str, str]


_INSTANCES: dict[tuple[str, str | None], pa.Table | None] = {}  # per process: the last one


def _read_path(store: ParquetStore, path: str | None) -> pa.Table | None:
    """The table at ``path``: a partition's file, or a compacted copy of one."""
    if path is None:
        return None
    return store.read_path(path, path)


def _instances_of(store: ParquetStore, path: str | None) -> pa.Table | None:
    key = (store.base_url, path)
    if key not in _INSTANCES:
        _INSTANCES.clear()  # jobs come scenario by scenario: keep one
        _INSTANCES[key] = _read_path(store, path)
    return _INSTANCES[key]


def build_partition(job: PartitionJob) -> PartitionResult:
    """Build one partition's data file and JSONL export (the caller has found its inputs
    changed since the last build)."""
    outputs = _read_path(job.store, job.outputs_path)
    assert outputs is not None
    records = partition_records(
        _instances_of(job.store, job.instances_path),
        outputs,
        job.scores,
        job.metric,
        _read_path(job.store, job.replies_path),
        _read_path(job.store, job.checked_path),
    )
    key = f"{job.scenario}\x1f{job.version}"
    payload = {
        "key": key,
        "scenario": job.scenario,
        "version": job.version,
        "metric": job.metric,
        "request_fields": REQUEST_FIELDS,
        "instances": [_compact(r, _SHARED) for r in records],
    }
    head = {"model_version": job.version, "scenario": job.scenario}
    lines = "".join(
        json.dumps({**head, **r}, ensure_ascii=False, allow_nan=False) + "\n" for r in records
    )
    files = []
    for path, data in (
        (data_file(job.scenario, job.version), _data_script(key, payload)),
        (
            jsonl_file(job.scenario, job.version),
            gzip.compress(lines.encode("utf-8"), 6, mtime=0),
        ),
    ):
        write = job.folder.write if hasattr(job.folder, "write") else job.folder
        write(path, data)
        files.append((path, hashlib.sha256(data).hexdigest(), len(data)))
    return PartitionResult(job.scenario, job.version, tuple(files), partition_answers(outputs))


_SHARED = ("input", "references", "groups")


def _partitions(ctx: _Context, workers: int) -> None:
    """Per partition of a version on the board: the instance data file and its JSONL, built
    only where the inputs changed (fingerprints of the files it reads, see
    :mod:`.results`), by ``workers`` processes when there is enough to do."""
    results = ctx.results
    site = ctx.site
    primary = ctx.data.board.primary_metrics
    for scenario in ctx.scenarios:
        path = results.instances_path(scenario)
        inputs = inputs_digest("instances", scenario, results.instances_fingerprint(scenario))
        with site.unit(f"instances\x1f{scenario}", inputs) as fresh:
            if fresh:
                table = _read_path(ctx.data.store, path)
                texts = {}
                if table is not None:
                    for row in table.to_pylist():
                        refs = zip(
                            row.get("references") or [], row.get("correct") or [], strict=False
                        )
                        groups = json.loads(row["groups"]) if row.get("groups") else {}
                        texts[row["id"]] = [
                            row.get("input"),
                            [[t, bool(c)] for t, c in refs],
                            groups,
                        ]
                site.put(
                    instances_file(scenario),
                    _data_script(f"{scenario}\x1f", {"scenario": scenario, "instances": texts}),
                )
    folder = site.folder if site.folder is not None else site._write
    jobs, inputs_of = [], {}
    # Scenario by scenario: a worker reads a scenario's instances once for its versions.
    for scenario in ctx.scenarios:
        for version in ctx.versions:
            outputs_path = results.path(MODEL_OUTPUTS, version, scenario)
            if outputs_path is None:
                continue
            key = f"{scenario}\x1f{version}"
            inputs = inputs_digest(
                "partition",
                scenario,
                version,
                primary[scenario],
                results.instances_fingerprint(scenario),
                *(
                    results.fingerprint(asset, version, scenario)
                    for asset in (MODEL_OUTPUTS, INSTANCE_SCORES, JUDGE_REPLIES, CONTAMINATION)
                ),
            )
            paths = [data_file(scenario, version), jsonl_file(scenario, version)]
            ctx.partition_inputs[(version, scenario)] = inputs
            ctx.manifest.setdefault(scenario, {})[version] = {
                "data": paths[0],
                "instances": instances_file(scenario),
                "jsonl": paths[1],
            }
            if site.unchanged_unit(key, inputs):
                site.summary.partitions_unchanged += 1
                continue
            inputs_of[key] = inputs
            jobs.append(
                PartitionJob(
                    scenario,
                    version,
                    primary[scenario],
                    results.partition_scores(version, scenario),
                    outputs_path,
                    results.path(JUDGE_REPLIES, version, scenario),
                    results.path(CONTAMINATION, version, scenario),
                    results.instances_path(scenario),
                    ctx.data.store,
                    folder,
                )
            )
    for result in _run(jobs, workers if _poolable(site) else 1):
        for path, key, size in result.files:
            site.wrote(path, key, size)
        ctx.answers[(result.version, result.scenario)] = result.answers
        site.summary.partitions_built += 1
        key = f"{result.scenario}\x1f{result.version}"
        site.record_unit(key, inputs_of[key], [path for path, _, _ in result.files])


def _poolable(site: Any) -> bool:
    """Worker processes write for themselves: only into a local folder (an in-memory
    filesystem is the process's own, and object stores' clients are not shared over fork)."""
    folder = site.folder
    if folder is None:
        return False
    store = getattr(folder, "store", None)
    return store is None or bool(getattr(store, "is_local", False))


# Fewer partitions than this per worker are built in this process: starting a worker
# (importing pyarrow and the library) costs about as much as building a few partitions.
_MIN_JOBS_PER_WORKER = 4


def _run(jobs: Sequence[PartitionJob], workers: int) -> Iterator[PartitionResult]:
    workers = min(workers, len(jobs) // _MIN_JOBS_PER_WORKER)
    if workers <= 1:
        yield from map(build_partition, jobs)
        return
    # spawn, not fork: the caller (a Dagster run, a test) may hold threads and locks.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(build_partition, jobs, chunksize=1)


def partition_answers(outputs: pa.Table) -> dict[str, str]:
    """instance → what the model answered on its first unperturbed request (as on the page),
    without reading every column into Python: what comparisons show for flipped instances."""
    main = pc.equal(outputs["perturbation"], "")
    if "part" in outputs.column_names:
        main = pc.and_(main, pc.fill_null(pc.equal(outputs["part"], ""), True))
    rows = outputs.filter(main)
    ids = rows["instance_id"].to_pylist()
    texts = rows["text"].to_pylist()
    errors = rows["error"].to_pylist()
    choices = rows["choices"].combine_chunks()
    offsets = choices.offsets.to_numpy()
    flat = choices.values  # offsets index the unsliced values
    logprobs = flat.field("logprob").to_numpy(zero_copy_only=False)
    labels = flat.field("text")
    answers: dict[str, str] = {}
    for i, iid in enumerate(ids):
        if iid in answers:
            continue
        if errors[i]:
            answer = f"error: {errors[i]}"
        elif texts[i]:
            answer = str(texts[i])
        elif offsets[i + 1] > offsets[i] and choices[i].is_valid:
            best = offsets[i] + int(np.argmax(logprobs[offsets[i] : offsets[i + 1]]))
            answer = f"→ {labels[best].as_py()}"
        else:
            answer = ""
        answers[iid] = answer[:_ANSWER_CHARS]
    return answers


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
        values = [q[f] for f in REQUEST_FIELDS]
        if q["latency_s"] is not None:
            values[_LATENCY] = round(q["latency_s"], 5)
        values[_CHOICES] = [
            [t, None if lp is None else round(lp, 4), n, g] for t, lp, n, g in q["choices"]
        ]
        if q["answer"] == q["text"]:
            values[_ANSWER] = None  # the page shows the text
        requests.append(values)
    out["requests"] = requests
    return out


_LATENCY, _CHOICES, _ANSWER = (REQUEST_FIELDS.index(f) for f in ("latency_s", "choices", "answer"))


def _data_script(key: str, payload: Any) -> bytes:
    """A script that files ``payload`` under ``key`` for the page that loads it."""
    return (
        "(window.ASSAY_PARTITIONS = window.ASSAY_PARTITIONS || {})["
        + _html_safe_json(key)
        + "] = "
        + _html_safe_json(payload)
        + ";\n"
    ).encode("utf-8")
