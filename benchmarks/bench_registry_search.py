"""``assay server``'s version searches at 10,000 versions: SQL against the record-by-record scan.

A synthetic registry (``--models`` models × ``--per-model`` versions, 10 × 1,000 by default,
each version with a source, a team tag and an accuracy tag) is written straight into the
store's tables (creating 10,000 versions one transaction at a time would take minutes). Then,
for each filter, one 100-row page (``--page``) is asked for, repeatedly:

- **scan** (the reference, how the server answered before): every version listed with its
  tags and aliases, each checked with ``assay.server.search.matches``, stable sorts, a slice;
- **sql**: ``Registry.search_versions``, the database filters, orders and pages;
- **http**: the MLflow endpoint ``/model-versions/search`` over the SQL path (in-process ASGI
  client: routing, token check, JSON), to show what a client sees.

Both library paths end with the page's JSON, as the endpoint does. Printed per filter: p50
and p95 in ms of each, and the ratio scan p50 / sql p50. The two paths' pages are compared
(same versions, same order) before any timing. SQLite by default; ``--postgres`` adds a
throwaway Postgres cluster (initdb on loopback).

    .venv/bin/python benchmarks/bench_registry_search.py [--models 10] [--per-model 1000]
        [--runs 30] [--scan-runs 7] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from peers import print_header

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, insert, update  # noqa: E402

from assay.registry import ModelVersion, Registry  # noqa: E402
from assay.registry.schema import ModelRow, VersionRow, VersionTagRow  # noqa: E402
from assay.registry.search import Comparison  # noqa: E402
from assay.server.http import millis  # noqa: E402
from assay.server.mlflow_api import version_json  # noqa: E402
from assay.server.search import matches, parse_filter  # noqa: E402

ATTRIBUTES = ["name", "version_number", "run_id", "source_path"]
TEAMS = ["nlp", "vision", "speech", "search", "ranking", "safety", "infra", "ads"]
DEFAULT_ORDER = [("last_updated_timestamp", True), ("name", False), ("version_number", True)]
HOSTILE = "source_path LIKE '" + "%a" * 60 + "%!'"
FILTERS: list[tuple[str, list[tuple[str, bool]], int]] = [
    ("", DEFAULT_ORDER, 0),
    ("name LIKE 'model-%'", DEFAULT_ORDER, 0),
    ("name ILIKE 'MODEL-1%'", DEFAULT_ORDER, 0),
    ("name IN ('model-1', 'model-2')", DEFAULT_ORDER, 0),
    ("name != 'model-3'", [("name", False), ("version_number", True)], 0),
    ("tags.team = 'nlp'", DEFAULT_ORDER, 0),
    ("tags.team = 'nlp'", DEFAULT_ORDER, 1000),  # a page deep into the answer
    ("tags.team LIKE '%a%'", [("creation_timestamp", False), *DEFAULT_ORDER[1:]], 0),
    ("tags.team ILIKE '%S%'", DEFAULT_ORDER, 0),
    ("tag.`eval.suite.acc` LIKE '0.9%'", DEFAULT_ORDER, 0),
    ("source_path LIKE '%ckpt-99_'", DEFAULT_ORDER, 0),
    ("version_number > 500", [("version_number", False), ("name", False)], 0),
    ("run_id = '' AND name = 'model-3' AND tags.team != 'ads'", DEFAULT_ORDER, 0),
    (HOSTILE, DEFAULT_ORDER, 0),
]


def build_store(url: str, models: int, per_model: int) -> None:
    """Models and versions written in bulk into the registry's own tables."""
    with Registry.open(url) as registry:
        for m in range(models):
            registry.create_model(f"model-{m}", tags={"team": TEAMS[m % len(TEAMS)]})
    engine = create_engine(url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as connection:
        ids = dict(
            connection.execute(
                ModelRow.__table__.select().with_only_columns(ModelRow.name, ModelRow.id)
            ).all()
        )
        rows = []
        for m in range(models):
            for v in range(1, per_model + 1):
                at = start + timedelta(seconds=v * models + m, microseconds=(v * 7919) % 1000)
                rows.append(
                    {
                        "model_id": ids[f"model-{m}"],
                        "version": v,
                        "source": f"hf:/org/model-{m}/ckpt-{v}",
                        "serving": "{}",
                        "description": "",
                        "status": "READY",
                        "stage": "None",
                        "created_at": at,
                    }
                )
        connection.execute(insert(VersionRow.__table__), rows)
        version_ids = connection.execute(
            VersionRow.__table__.select().with_only_columns(
                VersionRow.id, VersionRow.model_id, VersionRow.version
            )
        ).all()
        tags = []
        for vid, model_id, number in version_ids:
            tags.append(
                {
                    "version_id": vid,
                    "key": "team",
                    "value": TEAMS[(number * 3 + model_id) % len(TEAMS)],
                }
            )
            tags.append(
                {
                    "version_id": vid,
                    "key": "eval.suite.acc",
                    "value": repr(round((number * 37 % 1000) / 1000, 3)),
                }
            )
        connection.execute(insert(VersionTagRow.__table__), tags)
        connection.execute(update(ModelRow.__table__).values(last_version=per_model))
    engine.dispose()


def scan(
    registry: Registry,
    terms: list[Comparison],
    order: list[tuple[str, bool]],
    offset: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The search as the server ran it before: list, match each record, sort, slice."""
    named = [t.value for t in terms if t.key == "name" and t.op == "="]
    pool = registry.list_versions(named[0]) if named else registry.list_versions()

    def value(version: ModelVersion, key: str) -> Any:
        return {
            "name": version.model,
            "version_number": version.version,
            "run_id": "",
            "source_path": version.source,
        }[key]

    versions = [
        v
        for v in pool
        if all(
            matches(
                t,
                v.tags.get(t.tag) if t.tag is not None else value(v, t.key),
                numeric=t.key == "version_number",
            )
            for t in terms
        )
    ]
    keys: dict[str, Callable[[ModelVersion], Any]] = {
        "name": lambda v: v.model,
        "version_number": lambda v: v.version,
        "creation_timestamp": lambda v: millis(v.created_at),
        "last_updated_timestamp": lambda v: millis(v.created_at),
    }
    for key, descending in reversed(order):
        versions.sort(key=keys[key], reverse=descending)
    return [version_json(v) for v in versions[offset : offset + limit]]


def sql(
    registry: Registry,
    terms: list[Comparison],
    order: list[tuple[str, bool]],
    offset: int,
    limit: int,
) -> list[dict[str, Any]]:
    return [version_json(v) for v in registry.search_versions(terms, order, offset, limit).items]


def timed(work: Callable[[], Any], runs: int) -> tuple[float, float]:
    work()  # warm: caches, prepared statements
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1000, times[
        min(len(times) - 1, int(0.95 * len(times)))
    ] * 1000


def http_client(registry: Registry) -> Callable[[str, list[tuple[str, bool]], int, int], Any]:
    from starlette.testclient import TestClient

    from assay.registry.tokens import TokenStore
    from assay.server import create_app
    from assay.server.search import encode_page_token

    secret = TokenStore(registry).create("bench", "reader", (), created_by="bench")[1]
    client = TestClient(
        create_app(registry),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {secret}"},
    )

    def ask(filter_: str, order: list[tuple[str, bool]], offset: int, limit: int) -> Any:
        clauses = [f"{key} {'DESC' if descending else 'ASC'}" for key, descending in order]
        params: dict[str, Any] = {"filter": filter_, "max_results": limit, "order_by": clauses}
        if offset:
            params["page_token"] = encode_page_token(offset)
        answer = client.get("/api/2.0/mlflow/model-versions/search", params=params)
        answer.raise_for_status()
        return answer.json()

    return ask


def run(label: str, url: str, args: argparse.Namespace) -> None:
    build_start = time.perf_counter()
    build_store(url, args.models, args.per_model)
    total = args.models * args.per_model
    print(f"\n{label}: {total} versions written in {time.perf_counter() - build_start:.1f} s")
    print(
        f"{'filter':<58} {'offset':>6} {'hits':>5} | {'scan p50':>8} {'p95':>7} | "
        f"{'sql p50':>7} {'p95':>6} | {'http p50':>8} {'p95':>6} | scan/sql"
    )
    ratios = []
    worst = 0.0
    with Registry.open(url) as registry:
        ask = http_client(registry)
        for filter_, order, offset in FILTERS:
            terms = parse_filter(filter_, ATTRIBUTES)
            want = scan(registry, terms, order, offset, args.page)
            got = sql(registry, terms, order, offset, args.page)
            assert json.dumps(got) == json.dumps(want), f"pages differ for {filter_!r}"
            via_http = ask(filter_, order, offset, args.page)["model_versions"] if got else []
            assert [(v["name"], v["version"]) for v in via_http] == [
                (v["name"], v["version"]) for v in got
            ], filter_
            question = (terms, order, offset, args.page)
            scan_p50, scan_p95 = timed(partial(scan, registry, *question), args.scan_runs)
            sql_p50, sql_p95 = timed(partial(sql, registry, *question), args.runs)
            http_p50, http_p95 = timed(partial(ask, filter_, *question[1:]), args.runs)
            ratios.append(scan_p50 / sql_p50)
            worst = max(worst, http_p95)
            shown = filter_ if len(filter_) <= 56 else filter_[:45] + "…(hostile)"
            print(
                f"{shown or '(none)':<58} {offset:>6} {len(got):>5} | {scan_p50:8.1f} "
                f"{scan_p95:7.1f} | {sql_p50:7.1f} {sql_p95:6.1f} | {http_p50:8.1f} "
                f"{http_p95:6.1f} | {scan_p50 / sql_p50:6.1f}x"
            )
    print(
        f"{label}: scan/sql p50 ratio, median over filters {statistics.median(ratios):.1f}x "
        f"(min {min(ratios):.1f}x); worst http p95 {worst:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--per-model", type=int, default=1000)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30, help="timed runs of sql and http")
    parser.add_argument("--scan-runs", type=int, default=7, help="timed runs of the scan")
    parser.add_argument("--postgres", action="store_true", help="also on Postgres")
    args = parser.parse_args()
    print_header(
        f"version search: {args.page}-row pages at {args.models * args.per_model} versions"
    )
    root = Path(tempfile.mkdtemp(prefix="assay-bench-search-"))
    try:
        run("SQLite", f"sqlite:///{root / 'registry.db'}", args)
        if args.postgres:
            from deploy.stack import PostgresServer

            postgres = PostgresServer()
            try:
                run("Postgres", postgres.url(), args)
            finally:
                postgres.remove()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
