"""``assay suite list|show|check``: the shipped suites and any suite file, by name or path.

``check --load`` loads every entry's data the way the ``scenario_instances`` asset does, so a
deployment sees before its first run which entries can be read here (a hub that is offline, a
gated dataset, HELM's environment missing) and what each one read (instances, revision).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

import yaml

from assay.cli.registry import table
from assay.evaluate import suites as shipped
from assay.evaluate.suite import Suite, load_suite

LM_EVAL = "lm_eval"


def _load(args: argparse.Namespace) -> Suite | None:
    try:
        return load_suite(args.suite)
    except (ValueError, OSError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return None


def _list(args: argparse.Namespace) -> int:
    rows = []
    for name in shipped.shipped_suites():
        text, _ = shipped.read_shipped(name)
        # The file's entries as written (an lm-eval group expands when the suite is read).
        entries = (yaml.safe_load(text) or {}).get("scenarios") or {}
        rows.append([name, str(len(entries)), shipped.description(text)])
    print(table(["SUITE", "ENTRIES", "DESCRIPTION"], rows))
    return 0


def _args_text(scenario_args: dict[str, Any]) -> str:
    return json.dumps(scenario_args, sort_keys=True, separators=(",", ":")) if scenario_args else ""


def _show(args: argparse.Namespace) -> int:
    suite = _load(args)
    if suite is None:
        return 2
    rows = []
    for key in suite.keys:
        config = suite[key]
        method = "lm-eval's" if config.scenario == LM_EVAL else config.adapter.method.value
        rows.append(
            [key, config.scenario, method, config.metric or "", _args_text(dict(config.args))]
        )
    print(f"{suite.source}: {len(rows)} entries")
    print(table(["KEY", "SCENARIO", "METHOD", "METRIC", "ARGS"], rows))
    return 0


def _check(args: argparse.Namespace) -> int:
    suite = _load(args)
    if suite is None:
        return 2
    keys = args.only or suite.keys
    unknown = [k for k in keys if k not in suite.keys]
    if unknown:
        print(f"ERROR: no entries {', '.join(unknown)} in {suite.source}", file=sys.stderr)
        return 2
    print(f"{suite.source}: valid, {len(suite.keys)} entries")
    if not args.load:
        return 0
    rows, failed = [], 0
    for key in keys:
        config = suite[key]
        try:
            data = config.build().load()
        except Exception as exc:  # each entry's failure is reported, the others still load
            failed += 1
            message = " ".join(str(exc).split())
            rows.append([key, "FAILED", f"{type(exc).__name__}: {message}"])
            continue
        splits = Counter(i.split for i in data.instances)
        counts = ", ".join(f"{name} {n}" for name, n in sorted(splits.items()))
        rows.append([key, "ok", f"{counts} (revision {data.revision})"])
    print(table(["KEY", "DATA", "DETAIL"], rows))
    return 1 if failed else 0


def add_parser(subparsers: Any) -> None:
    """Register ``suite`` and its subcommands; each leaf sets ``func(args) -> exit code``."""
    parser = subparsers.add_parser(
        "suite", help="evaluation suites: the shipped ones by name, or any suite file"
    )
    sub = parser.add_subparsers(dest="suite_command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="the shipped suites")
    p.set_defaults(func=_list)

    what = "a shipped suite's name (assay suite list) or a suite file's path"
    p = sub.add_parser("show", help="a suite's entries: scenario, method, metric, arguments")
    p.add_argument("suite", help=what)
    p.set_defaults(func=_show)

    p = sub.add_parser("check", help="validate a suite; with --load, read each entry's data")
    p.add_argument("suite", help=what)
    p.add_argument(
        "--load", action="store_true", help="load every entry's instances (may download)"
    )
    p.add_argument("--only", action="append", metavar="KEY", help="only this entry (repeatable)")
    p.set_defaults(func=_check)
