"""The ``assay`` command line: registry, prompts, suites, serving and results."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from assay.cli import prompts, registry, server, suites, tokens


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assay", description="Holistic evaluation of language models."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    registry.add_parser(subparsers)
    prompts.add_parser(subparsers)
    server.add_parser(subparsers)
    tokens.add_parser(subparsers)
    suites.add_parser(subparsers)
    serve = subparsers.add_parser(
        "serve", help="serve a model version over an OpenAI-compatible HTTP API"
    )
    from assay.serving.cli import add_serve_arguments, run_serve

    add_serve_arguments(serve)
    serve.set_defaults(func=run_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
