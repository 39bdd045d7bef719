"""``assay server``: serve the registry over HTTP (MLflow's REST API plus assay's endpoints).

Listens on 127.0.0.1 unless told otherwise; put it behind TLS before exposing it, since tokens
travel in the Authorization header. Tokens are managed with ``assay tokens``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from assay.core.http_server import add_connection_arguments, connection_limits_from_args
from assay.registry import Registry
from assay.server.app import CONNECTIONS_ENV_PREFIX


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "server", help="serve the registry over MLflow's REST API and assay's own endpoints"
    )
    parser.add_argument(
        "--registry-url",
        default=None,
        help="SQLAlchemy URL of the registry (default: $ASSAY_REGISTRY_URL or .assay/registry.db)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    add_connection_arguments(parser, CONNECTIONS_ENV_PREFIX)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from assay.core.http_server import run_app
    from assay.registry.tokens import TokenStore
    from assay.server import create_app

    limits = connection_limits_from_args(args, CONNECTIONS_ENV_PREFIX)
    with Registry.open(args.registry_url) as registry:
        if not TokenStore(registry).list():
            print(
                "no active API tokens: every request will be refused (401) until one is "
                "created with `assay tokens create <principal> --role <role>`",
                file=sys.stderr,
            )
        run_app(create_app(registry), args.host, args.port, limits)
    return 0
