"""``assay registry ...``: register models and versions, move aliases and stages, read history.

Every command takes ``--registry-url`` (default ``$ASSAY_REGISTRY_URL`` or ``.assay/registry.db``)
and ``--actor`` (default ``$ASSAY_ACTOR`` or the OS user). Refused operations print
``ERROR CODE: message`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from assay.compare.decision import decision_from_record
from assay.compare.sequential import sequential_lines
from assay.registry import Event, ModelVersion, Registry, RegistryError
from assay.registry.errors import ErrorCode, invalid
from assay.registry.gating import MoveResult, Outcome
from assay.registry.limits import check_public_tag_key, check_public_tags, escape
from assay.registry.training_data import manifest_json

Handler = Callable[[argparse.Namespace], int]

# ---------------------------------------------------------------- shared with assay.cli.prompts


def common_options() -> argparse.ArgumentParser:
    """Options every registry and prompts command accepts (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--registry-url",
        default=None,
        help="SQLAlchemy URL of the registry (default: $ASSAY_REGISTRY_URL or .assay/registry.db)",
    )
    parent.add_argument("--actor", default=None, help="who is acting (default: $ASSAY_ACTOR)")
    return parent


def command(handler: Callable[[argparse.Namespace, Registry], int]) -> Handler:
    """Wrap a handler: open the registry, turn refusals into ``ERROR CODE: message``, exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            with Registry.open(args.registry_url) as registry:
                return handler(args, registry)
        except RegistryError as exc:
            print(f"ERROR {exc.code.value}: {exc.message}", file=sys.stderr)
            return 2
        except SQLAlchemyError as exc:
            # The driver's own message, without SQLAlchemy's statement dump (or the URL).
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            print(f"ERROR DATABASE_ERROR: {detail}", file=sys.stderr)
            return 2

    return run


def parse_pairs(pairs: Sequence[str] | None, what: str) -> dict[str, str]:
    """``["k=v", ...]`` → dict; a pair without ``=`` is refused naming it."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise invalid(f"{what} {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An aligned plain-text table (last column left ragged)."""
    # Stored text is escaped: a newline or an escape sequence in a tag must not forge a row.
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else escape(c) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_moment(text: str) -> datetime:
    """ISO date or datetime. A bare date means the end of that day (UTC): "as of D" includes
    everything that happened on D. Naive datetimes are UTC."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None and len(text) == 10:
        return datetime.combine(day, time.max, tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise invalid(f"date {text!r} is not an ISO date or datetime (e.g. 2026-01-31)") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ---------------------------------------------------------------- handlers


def _serving(values: Sequence[str] | None) -> dict[str, Any] | None:
    """``--serving`` values: JSON objects, or KEY=VALUE pairs whose value is read as JSON when
    it parses (``batch_size=8``, ``chat_template=true``) and as a string otherwise."""
    if not values:
        return None
    serving: dict[str, Any] = {}
    for value in values:
        if value.lstrip().startswith("{"):
            try:
                obj = json.loads(value)
            except json.JSONDecodeError as exc:
                raise invalid(f"--serving {value!r} is not valid JSON: {exc}") from exc
            if not isinstance(obj, dict):
                raise invalid(f"--serving {value!r} is not a JSON object")
            serving.update(obj)
            continue
        for key, raw in parse_pairs([value], "--serving").items():
            try:
                serving[key] = json.loads(raw)
            except json.JSONDecodeError:
                serving[key] = raw
    return serving


def _create(args: argparse.Namespace, registry: Registry) -> int:
    tags = parse_pairs(args.tag, "--tag")
    check_public_tags(tags, "--tag")
    model = registry.create_model(args.name, args.description, tags, actor=args.actor)
    print(f"created model {model.name}")
    return 0


def _register(args: argparse.Namespace, registry: Registry) -> int:
    serving = _serving(args.serving)
    tags = parse_pairs(args.tag, "--tag")
    check_public_tags(tags, "--tag")
    prices = {"prompt_per_1k": args.price_prompt, "completion_per_1k": args.price_completion}
    if args.create_model:
        registry.get_or_create_model(args.model, actor=args.actor)
    version = registry.create_version(
        args.model,
        args.source,
        serving=serving,
        description=args.description,
        tags=tags,
        prices=prices,
        actor=args.actor,
        training_data=_manifest(args.training_data),
    )
    print(version.key)
    return 0


def _manifest(path: str | None) -> list[Any] | None:
    """A training-data manifest from a JSON file (a list of corpora), or None."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError) as exc:
        raise invalid(f"training data file {path!r}: {exc}") from None
    if isinstance(value, dict) and set(value) == {"training_data"}:
        value = value["training_data"]
    return value


def _training_data(args: argparse.Namespace, registry: Registry) -> int:
    if sum(x is not None and x is not False for x in (args.file, args.copy_from, args.clear)) > 1:
        raise invalid("training-data: give one of --file, --from or --clear")
    if args.copy_from:
        corpora: Any = registry.get_version(args.copy_from).training_data
    elif args.clear:
        corpora = []
    elif args.file:
        corpora = _manifest(args.file)
    else:
        version = registry.get_version(args.version)
        print(json.dumps(manifest_json(version.training_data), indent=2))
        return 0
    version = registry.set_training_data(args.version, corpora, actor=args.actor)
    names = ", ".join(c.name for c in version.training_data) or "none"
    print(f"training data of {version.key}: {names}")
    return 0


def _prices(args: argparse.Namespace, registry: Registry) -> int:
    prices = {"prompt_per_1k": args.price_prompt, "completion_per_1k": args.price_completion}
    version = registry.set_prices(args.version, prices, actor=args.actor)
    print(f"prices of {version.key} set; its cost changes from its next evaluation")
    return 0


def _version_rows(versions: Sequence[ModelVersion]) -> list[list[object]]:
    return [
        [
            v.key,
            v.source,
            v.stage.value,
            ",".join(v.aliases),
            format_time(v.created_at),
        ]
        for v in versions
    ]


def _list(args: argparse.Namespace, registry: Registry) -> int:
    as_of = parse_moment(args.as_of) if args.as_of else None
    if args.model is None and as_of is None:
        models = registry.list_models()
        rows = [
            [
                m.name,
                m.latest_version or "-",
                ",".join(f"{a}=v{v}" for a, v in m.aliases.items()),
                format_time(m.updated_at),
                m.description,
            ]
            for m in models
        ]
        print(table(["MODEL", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION"], rows))
        return 0
    versions = registry.list_versions(args.model, as_of=as_of)
    print(table(["VERSION", "SOURCE", "STAGE", "ALIASES", "CREATED"], _version_rows(versions)))
    return 0


def _print_version(version: ModelVersion) -> None:
    prices = version.prices
    fields: list[tuple[str, object]] = [
        ("key", version.key),
        ("source", version.source),
        ("serving", json.dumps(version.serving, sort_keys=True)),
        ("stage", version.stage.value),
        ("status", version.status),
        ("aliases", ", ".join(version.aliases) or "-"),
        ("created", format_time(version.created_at)),
        ("price/1k prompt", "-" if prices.prompt_per_1k is None else prices.prompt_per_1k),
        (
            "price/1k completion",
            "-" if prices.completion_per_1k is None else prices.completion_per_1k,
        ),
        ("description", version.description or "-"),
    ]
    fields += [
        (f"corpus {c.name}", f"{c.format} {c.url}" + (f" [{c.text_field}]" * (c.format != "text")))
        for c in version.training_data
    ]
    fields += [(f"tag {k}", v) for k, v in sorted(version.tags.items())]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{escape(name).ljust(width)}  {escape(value)}")


def _show(args: argparse.Namespace, registry: Registry) -> int:
    ref = args.ref
    if "@" not in ref and not ref.startswith("models:/"):
        model = registry.get_model(ref)
        print(f"model        {model.name}")
        print(f"description  {escape(model.description or '-')}")
        print(f"created      {format_time(model.created_at)}")
        print(f"updated      {format_time(model.updated_at)}")
        for key, value in sorted(model.tags.items()):
            print(f"tag {escape(key)}  {escape(value)}")
        print()
        versions = registry.list_versions(model.name)
        print(table(["VERSION", "SOURCE", "STAGE", "ALIASES", "CREATED"], _version_rows(versions)))
        return 0
    _print_version(registry.resolve(ref))
    return 0


def print_move(result: MoveResult) -> int:
    """Moved, unchanged and pending exit 0 (pending is an answer, not a failure); a refusal
    exits 1 with its reasons on stderr."""
    event = f" (event {result.event.id})" if result.event is not None else ""
    if result.outcome is Outcome.REFUSED:
        print(f"{result.sentence}{event}", file=sys.stderr)
        return 1
    print(f"{result.sentence}{event}")
    if result.outcome is Outcome.PENDING:
        print(
            "the promotion sensor evaluates it on the current suite and moves it if every "
            "criterion passes; `assay registry history` shows the decision"
        )
    return 0


def add_force_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--force`` (``what``; needs ``--reason``) and ``--reason``, for gated moves."""
    parser.add_argument("--force", action="store_true", help=f"{what}; needs --reason")
    parser.add_argument("--reason", default=None, help="why a move is forced (goes in the event)")


def force_reason(args: argparse.Namespace) -> str | None:
    """``--reason``, required with ``--force``."""
    if args.force and not (args.reason or "").strip():
        raise RegistryError(ErrorCode.INVALID_PARAMETER_VALUE, "--force needs --reason")
    return args.reason


def _alias_set(args: argparse.Namespace, registry: Registry) -> int:
    result = registry.request_alias(
        args.model,
        args.alias,
        args.version,
        actor=args.actor,
        force=args.force,
        reason=force_reason(args),
    )
    return print_move(result)


def _alias_remove(args: argparse.Namespace, registry: Registry) -> int:
    registry.delete_alias(args.model, args.alias, actor=args.actor)
    print(f"removed alias {args.alias} of {args.model}")
    return 0


def _stage(args: argparse.Namespace, registry: Registry) -> int:
    result = registry.request_stage(
        args.model,
        args.version,
        args.stage,
        archive_existing_versions=args.archive_existing,
        actor=args.actor,
        force=args.force,
        reason=force_reason(args),
    )
    return print_move(result)


def _tag(args: argparse.Namespace, registry: Registry) -> int:
    target = args.target
    check_public_tag_key(args.key)
    if "@" in target or target.startswith("models:/"):
        version = registry.resolve(target)
        registry.set_tag(version.model, args.key, args.value, version.version, actor=args.actor)
        print(f"tagged {version.key}: {args.key}={args.value}")
    else:
        registry.set_tag(target, args.key, args.value, actor=args.actor)
        print(f"tagged {target}: {args.key}={args.value}")
    return 0


def describe_event(ev: Event) -> str:
    """One line saying what an event changed."""
    p = ev.payload
    if ev.kind == "alias_refused":
        return (
            f"{p['alias']}: refused v{p['refused']} (gate failed: {', '.join(p['failed_gates'])})"
        )
    if ev.kind in GATE_KINDS:
        return describe_decision(ev)
    if ev.kind == "promotion_refused":
        return f"event {p['event_id']} ({p['event_kind']}) refused: {p['reason']}"
    if "alias" in p:
        before = "-" if p.get("before") is None else f"v{p['before']}"
        after = "-" if p.get("after") is None else f"v{p['after']}"
        return f"{p['alias']}: {before} -> {after}"
    if ev.kind == "stage_changed":
        return f"{p['before']} -> {p['after']}"
    if ev.kind == "tag_set":
        return f"{p['key']}={p['value']}"
    if ev.kind == "tag_deleted":
        return f"{p['key']} removed (was {p['before']})"
    if ev.kind == "description_set":
        return f"description: {p['after']}"
    if ev.kind == "prices_set":

        def per_1k(prices: dict[str, Any]) -> str:
            return "/".join(
                "-" if prices[k] is None else f"{prices[k]:g}"
                for k in ("prompt_per_1k", "completion_per_1k")
            )

        return f"prices per 1k prompt/completion: {per_1k(p['before'])} -> {per_1k(p['after'])}"
    if ev.kind == "training_data_set":

        def names(corpora: list[dict[str, Any]]) -> str:
            return ",".join(c["name"] for c in corpora) or "-"

        return f"training data: {names(p['before'])} -> {names(p['after'])}"
    if ev.kind == "evaluation_recorded":
        metrics = " ".join(f"{k}={v:g}" for k, v in sorted(p["metrics"].items()))
        run = f" run={p['run_id']}" if p.get("run_id") else ""
        return f"{p['scenario']}: {metrics}{run}"
    if ev.kind == "version_created":
        return str(p["source"])
    if ev.kind == "prompt_version_created":
        return "variables: " + ", ".join(p["variables"])
    return str(p.get("description", ""))


GATE_KINDS = ("gate_pending", "gate_approved", "gate_refused")


def describe_decision(ev: Event) -> str:
    """A promotion decision in one line: the target, the candidate against the incumbent, and
    what was decided (``decision_details`` has every criterion)."""
    p = ev.payload
    target = p.get("target") or {}
    where = f"{target.get('kind', '?')} {target.get('name', '?')}"
    against = f"vs {p['incumbent']}" if p.get("incumbent") else "no incumbent"
    head = f"{where} -> {p.get('candidate')} ({against})"
    if ev.kind == "gate_pending":
        return f"{head}: pending, {p.get('reason', '')}"
    if p.get("forced"):
        return f"{head}: forced by role {p.get('role')}: {p.get('reason')}"
    pending = f" answers {p['pending']}:" if p.get("pending") else ":"
    verdict = "approved" if ev.kind == "gate_approved" else "refused"
    counted = decision_from_record(p)
    failed = sum(c.outcome == "fail" for c in counted)
    return f"{head}{pending} {verdict} ({failed} of {len(counted)} criteria failed)"


def decision_details(ev: Event) -> list[str]:
    """Every criterion of a verdict with its estimate, interval, threshold and p-value, and
    the suite and code versions it was judged on."""
    p = ev.payload
    suite = p.get("suite") or {}
    code = ", ".join(
        f"{k} {str(v)[:12]}" for k, v in sorted((suite.get("code_versions") or {}).items())
    )
    lines = [f"decision {ev.id} ({ev.kind.value}): {p.get('summary', '')}"]
    lines.append(f"  judged on suite {str(suite.get('digest', '?'))[:12]}; code {code}")
    lines += [f"  {c.sentence()}" for c in decision_from_record(p)]
    lines += [f"  {line}" for line in sequential_lines(p)]
    return [escape(line) for line in lines]


def event_table(events: Sequence[Event]) -> str:
    rows = []
    for ev in events:
        if ev.model is not None:
            subject = ev.key or ev.model
        else:
            subject = f"prompts:/{ev.prompt}" + (f"/{ev.version}" if ev.version else "")
        rows.append(
            [ev.id, format_time(ev.ts), ev.actor, ev.kind.value, subject, describe_event(ev)]
        )
    return table(["ID", "TIME", "ACTOR", "EVENT", "SUBJECT", "DETAILS"], rows)


def _history(args: argparse.Namespace, registry: Registry) -> int:
    events = registry.events(args.after, args.limit, model=args.model)
    print(event_table(events))
    verdicts = [e for e in events if e.kind.value in GATE_KINDS[1:] and "criteria" in e.payload]
    for ev in verdicts:
        print()
        print("\n".join(decision_details(ev)))
    return 0


def _as_of(args: argparse.Namespace, registry: Registry) -> int:
    moment = parse_moment(args.date)
    version = registry.alias_holder(args.model, args.alias, moment)
    if version is None:
        print(f"{args.model}@{args.alias} was not set at {format_time(moment)}")
        return 1
    print(version.key)
    return 0


# ---------------------------------------------------------------- parser


def add_parser(subparsers: Any) -> None:
    """Register ``registry`` and its subcommands on an argparse subparsers object.

    Each leaf sets ``func``: a callable taking the parsed namespace and returning the exit code.
    """
    common = common_options()
    parser = subparsers.add_parser("registry", help="model registry: versions, aliases, history")
    sub = parser.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")

    p = sub.add_parser("create", parents=[common], help="register a model name")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=command(_create))

    p = sub.add_parser("register", parents=[common], help="register a new version of a model")
    p.add_argument("model")
    p.add_argument("source", help="e.g. bundled:smollm2-135m-instruct, hf:/dir, openai:URL#id")
    p.add_argument(
        "--serving",
        action="append",
        metavar="KEY=VALUE|JSON",
        help="serving config: chat_template, system_prompt, dtype, batch_size, max_context",
    )
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--description", default="")
    p.add_argument("--price-prompt", type=float, default=None, help="price per 1k prompt tokens")
    p.add_argument("--price-completion", type=float, default=None, help="per 1k completion tokens")
    p.add_argument("--create-model", action="store_true", help="create the model if missing")
    p.add_argument(
        "--training-data",
        default=None,
        metavar="FILE.json",
        help="the corpora the version was trained on: a JSON list of "
        "{name, url, format (jsonl|parquet|text), text_field}",
    )
    p.set_defaults(func=command(_register))

    p = sub.add_parser("list", parents=[common], help="list models, or the versions of one")
    p.add_argument("model", nargs="?")
    p.add_argument("--as-of", default=None, help="only versions registered by this date")
    p.set_defaults(func=command(_list))

    p = sub.add_parser("show", parents=[common], help="show a model or a version")
    p.add_argument("ref", help="MODEL, MODEL@vN, MODEL@ALIAS, models:/MODEL/N")
    p.set_defaults(func=command(_show))

    alias = sub.add_parser("alias", help="set or remove an alias")
    alias_sub = alias.add_subparsers(dest="alias_command", required=True, metavar="ACTION")
    p = alias_sub.add_parser("set", parents=[common], help="point an alias at a version")
    p.add_argument("model")
    p.add_argument("alias")
    p.add_argument("version", type=int)
    add_force_options(p, "move a gated alias (champion) without a passing verdict")
    p.set_defaults(func=command(_alias_set))
    p = alias_sub.add_parser("remove", parents=[common], help="remove an alias")
    p.add_argument("model")
    p.add_argument("alias")
    p.set_defaults(func=command(_alias_remove))

    p = sub.add_parser("stage", parents=[common], help="move a version to a legacy stage")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.add_argument("stage", help="None, Staging, Production or Archived")
    p.add_argument("--archive-existing", action="store_true")
    add_force_options(p, "enter a gated stage (Production) without a passing verdict")
    p.set_defaults(func=command(_stage))

    p = sub.add_parser(
        "prices",
        parents=[common],
        help="set a version's token prices (costs already scored keep the prices they pinned)",
    )
    p.add_argument("version", help="MODEL@vN")
    p.add_argument("--price-prompt", type=float, default=None, help="price per 1k prompt tokens")
    p.add_argument("--price-completion", type=float, default=None, help="per 1k completion tokens")
    p.set_defaults(func=command(_prices))

    p = sub.add_parser(
        "training-data",
        parents=[common],
        help="show or replace a version's training-data manifest (the contamination checks "
        "index its corpora)",
    )
    p.add_argument("version", help="MODEL@vN")
    p.add_argument("--file", default=None, metavar="FILE.json", help="the new manifest")
    p.add_argument(
        "--from",
        dest="copy_from",
        default=None,
        metavar="MODEL@vN",
        help="copy another version's manifest",
    )
    p.add_argument("--clear", action="store_true", help="declare no training data")
    p.set_defaults(func=command(_training_data))

    p = sub.add_parser("tag", parents=[common], help="set a tag on a model or a version")
    p.add_argument("target", help="MODEL or MODEL@vN")
    p.add_argument("key")
    p.add_argument("value")
    p.set_defaults(func=command(_tag))

    p = sub.add_parser("history", parents=[common], help="the event log")
    p.add_argument("--model", default=None)
    p.add_argument("--after", type=int, default=0, help="only events with a larger id")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=command(_history))

    p = sub.add_parser("as-of", parents=[common], help="which version held an alias on a date")
    p.add_argument("model")
    p.add_argument("alias")
    p.add_argument("date", help="ISO date (end of that day, UTC) or datetime")
    p.set_defaults(func=command(_as_of))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``assay registry ...`` on its own (``python -m assay.cli.registry ...``)."""
    parser = argparse.ArgumentParser(prog="assay")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["registry", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
