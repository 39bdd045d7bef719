"""``assay prompts ...``: versioned prompt templates with ``{{var}}`` placeholders and aliases.

Same conventions as ``assay registry``: ``--registry-url``/``--actor`` on every command, and
``ERROR CODE: message`` on stderr with exit status 2 when the registry refuses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assay.cli.registry import (
    add_force_options,
    command,
    common_options,
    force_reason,
    format_time,
    parse_pairs,
    print_move,
    table,
)
from assay.registry import PromptVersion, Registry
from assay.registry.errors import invalid


def _create(args: argparse.Namespace, registry: Registry) -> int:
    prompt = registry.create_prompt(args.name, args.description, actor=args.actor)
    print(f"created prompt {prompt.name}")
    return 0


def _register(args: argparse.Namespace, registry: Registry) -> int:
    if args.template_file is not None:
        try:
            template = Path(args.template_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise invalid(f"cannot read template file {args.template_file!r}: {exc}") from exc
    else:
        template = args.template
    version = registry.create_prompt_version(
        args.name, template, args.var or [], args.description, actor=args.actor
    )
    print(version.uri)
    return 0


def _list(args: argparse.Namespace, registry: Registry) -> int:
    if args.name is None:
        rows = [
            [
                p.name,
                p.latest_version or "-",
                ",".join(f"{a}=v{v}" for a, v in p.aliases.items()),
                format_time(p.updated_at),
                p.description,
            ]
            for p in registry.list_prompts()
        ]
        print(table(["PROMPT", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION"], rows))
        return 0
    rows = [
        [v.uri, ",".join(v.variables), ",".join(v.aliases), format_time(v.created_at)]
        for v in registry.list_prompt_versions(args.name)
    ]
    print(table(["VERSION", "VARIABLES", "ALIASES", "CREATED"], rows))
    return 0


def _print_version(version: PromptVersion) -> None:
    print(f"uri          {version.uri}")
    print(f"variables    {', '.join(version.variables) or '-'}")
    print(f"aliases      {', '.join(version.aliases) or '-'}")
    print(f"created      {format_time(version.created_at)}")
    print(f"description  {version.description or '-'}")
    print("template:")
    print(version.template)


def _show(args: argparse.Namespace, registry: Registry) -> int:
    _print_version(registry.get_prompt(args.uri))
    return 0


def _alias(args: argparse.Namespace, registry: Registry) -> int:
    result = registry.request_prompt_alias(
        args.name,
        args.alias,
        args.version,
        actor=args.actor,
        force=args.force,
        reason=force_reason(args),
    )
    return print_move(result)


def _render(args: argparse.Namespace, registry: Registry) -> int:
    version = registry.get_prompt(args.uri)
    sys.stdout.write(version.render(parse_pairs(args.var, "--var")))
    if not version.template.endswith("\n"):
        sys.stdout.write("\n")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``prompts`` and its subcommands; each leaf sets ``func(args) -> exit code``."""
    common = common_options()
    parser = subparsers.add_parser("prompts", help="prompt templates: versions and aliases")
    sub = parser.add_subparsers(dest="prompts_command", required=True, metavar="COMMAND")

    p = sub.add_parser("create", parents=[common], help="register a prompt name")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.set_defaults(func=command(_create))

    p = sub.add_parser("register", parents=[common], help="register a new template version")
    p.add_argument("name")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--template", help="template text with {{var}} placeholders")
    source.add_argument("--template-file", help="read the template from this file")
    p.add_argument("--var", action="append", metavar="NAME", help="declare a variable")
    p.add_argument("--description", default="")
    p.set_defaults(func=command(_register))

    p = sub.add_parser("list", parents=[common], help="list prompts, or the versions of one")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=command(_list))

    p = sub.add_parser("show", parents=[common], help="show one version")
    p.add_argument("uri", help="prompts:/NAME@ALIAS, prompts:/NAME/N or NAME@vN")
    p.set_defaults(func=command(_show))

    p = sub.add_parser("alias", parents=[common], help="point an alias at a version")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", type=int)
    add_force_options(p, "move a gated prompt alias without a passing verdict")
    p.set_defaults(func=command(_alias))

    p = sub.add_parser("render", parents=[common], help="render a version with variables")
    p.add_argument("uri")
    p.add_argument("--var", action="append", metavar="NAME=VALUE")
    p.set_defaults(func=command(_render))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``assay prompts ...`` on its own (``python -m assay.cli.prompts ...``)."""
    parser = argparse.ArgumentParser(prog="assay")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["prompts", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
