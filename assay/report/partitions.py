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
import pyarrow.parquet as pq

from assay.contamination.subsets import check_table
from assay.report.data import split_by
from assay.report.links import data_file, instances_file, jsonl_file
from assay.report.render import _Context, _finite, _html_safe_json
from assay.report.writing import code_digest
from assay.storage.contract import (
    CONTAMINATION,
    JUDGE_REPLIES,
    MODEL_OUTPUTS,
    SCENARIO_INSTANCES,
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
    """One partition's page data to build (in this process or a worker): its inputs, where
    to write, and the digest of its inputs at the last build (None: build it anyway)."""

    scenario: str
    version: str
    metric: str
    scores: pa.Table | None
    instances_digest: str
    store: ParquetStore
    folder: Any  # a writing.SiteFolder, or a plain writer callable in this process only
    previous: str | None
    code: str  # writing.code_digest() of the building process


@dataclass(frozen=True)
class PartitionResult:
    scenario: str
    version: str
    inputs: str | None  # digest of the inputs; None: the partition has no outputs
    files: tuple[tuple[str, str, int], ...]  # (path, content digest, size) written
    answers: dict[str, str] | None  # None when skipped (unchanged)


_INSTANCES: dict[tuple[str, str], pa.Table | None] = {}  # per process: the last scenario's


def _instances_of(store: ParquetStore, scenario: str) -> pa.Table | None:
    key = (store.base_url, scenario)
    if key not in _INSTANCES:
        _INSTANCES.clear()  # jobs come scenario by scenario: keep one
        where = {"scenario": scenario}
        _INSTANCES[key] = (
            store.read(SCENARIO_INSTANCES, where)
            if store.exists(SCENARIO_INSTANCES, where)
            else None
        )
    return _INSTANCES[key]


def _table_digest(table: pa.Table | None) -> bytes:
    if table is None:
        return b"-"
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).digest()


def build_partition(job: PartitionJob) -> PartitionResult:
    """Build one partition's data file and JSONL export unless its inputs (outputs, scores,
    instances, judge replies, primary metric, build format) are those of the last build."""
    where = {"model_version": job.version, "scenario": job.scenario}
    raw = job.store.read_bytes(MODEL_OUTPUTS, where)
    if raw is None:
        return PartitionResult(job.scenario, job.version, None, (), None)
    replies_raw = job.store.read_bytes(JUDGE_REPLIES, where)
    checked_raw = job.store.read_bytes(CONTAMINATION, where)
    hasher = hashlib.sha256()
    for part in (
        job.code.encode(),
        job.scenario.encode(),
        job.version.encode(),
        job.metric.encode(),
        job.instances_digest.encode(),
        hashlib.sha256(raw).digest(),
        _table_digest(job.scores),
        b"-" if replies_raw is None else hashlib.sha256(replies_raw).digest(),
        b"-" if checked_raw is None else hashlib.sha256(checked_raw).digest(),
    ):
        hasher.update(len(part).to_bytes(8, "big") + part)
    inputs = hasher.hexdigest()
    if inputs == job.previous:
        return PartitionResult(job.scenario, job.version, inputs, (), None)
    outputs = pq.read_table(pa.BufferReader(raw))
    replies = None if replies_raw is None else pq.read_table(pa.BufferReader(replies_raw))
    checked = None if checked_raw is None else pq.read_table(pa.BufferReader(checked_raw))
    records = partition_records(
        _instances_of(job.store, job.scenario), outputs, job.scores, job.metric, replies, checked
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
    return PartitionResult(
        job.scenario, job.version, inputs, tuple(files), partition_answers(outputs)
    )


_SHARED = ("input", "references", "groups")


def _partitions(ctx: _Context, workers: int) -> None:
    """Per partition of a version on the board: the instance data file and its JSONL, built
    only where the inputs changed, by ``workers`` processes when there is enough to do."""
    data = ctx.data
    site = ctx.site
    scores_by_version = split_by(data.instance_scores, "model_version")
    primary = data.board.primary_metrics
    instances_digest = {}
    for scenario in ctx.scenarios:
        table = data.instances(scenario)
        instances_digest[scenario] = _table_digest(table).hex()
        texts = {}
        if table is not None:
            for row in table.to_pylist():
                refs = zip(row.get("references") or [], row.get("correct") or [], strict=False)
                groups = json.loads(row["groups"]) if row.get("groups") else {}
                texts[row["id"]] = [row.get("input"), [[t, bool(c)] for t, c in refs], groups]
        site.put(
            instances_file(scenario),
            _data_script(f"{scenario}\x1f", {"scenario": scenario, "instances": texts}),
        )
    folder = site.folder if site.folder is not None else site._write
    jobs = []
    by_version = {
        v: split_by(scores_by_version[v], "scenario") if v in scores_by_version else {}
        for v in ctx.versions
    }
    # Scenario by scenario: a worker reads a scenario's instances once for its versions.
    for scenario in ctx.scenarios:
        for version in ctx.versions:
            key = f"{scenario}\x1f{version}"
            before = site.previous["partitions"].get(key) or {}
            kept = site._all_there(before.get("files") or [])
            jobs.append(
                PartitionJob(
                    scenario,
                    version,
                    primary[scenario],
                    by_version[version].get(scenario),
                    instances_digest[scenario],
                    data.store,
                    folder,
                    before.get("inputs") if kept else None,
                    code_digest(),
                )
            )
    for result in _run(jobs, workers if _poolable(site) else 1):
        if result.inputs is None:
            continue
        paths = [
            data_file(result.scenario, result.version),
            jsonl_file(result.scenario, result.version),
        ]
        if result.answers is None:
            for path in paths:
                site.keep(path)
            site.summary.partitions_unchanged += 1
        else:
            for path, key, size in result.files:
                site.wrote(path, key, size)
            ctx.answers[(result.version, result.scenario)] = result.answers
            site.summary.partitions_built += 1
        site.record_unit(f"{result.scenario}\x1f{result.version}", result.inputs, paths)
        ctx.partition_inputs[(result.version, result.scenario)] = result.inputs
        ctx.manifest.setdefault(result.scenario, {})[result.version] = {
            "data": paths[0],
            "instances": instances_file(result.scenario),
            "jsonl": paths[1],
        }


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
