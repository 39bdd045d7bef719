"""``assay server``: serve the registry over HTTP (MLflow's REST API plus assay's endpoints).

Listens on 127.0.0.1 unless told otherwise; put it behind TLS before exposing it, since tokens
travel in the Authorization header, and list the names clients use in ``--allowed-host`` (or
``$ASSAY_SERVER_ALLOWED_HOSTS``). Tokens are managed with ``assay tokens``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from assay.core.http_rules import LOOPBACK_HOSTS, allowed_hosts_from_env
from assay.core.http_server import add_connection_arguments, connection_limits_from_args
from assay.registry import Registry
from assay.server.app import ALLOWED_HOSTS_ENV, CONNECTIONS_ENV_PREFIX


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
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        help="a Host name clients may use (repeatable; default: loopback names, "
        f"or ${ALLOWED_HOSTS_ENV}; '*' for any)",
    )
    add_connection_arguments(parser, CONNECTIONS_ENV_PREFIX)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from assay.core.http_server import run_app
    from assay.registry.tokens import TokenStore
    from assay.server import create_app
    from assay.webhooks.delivery import WebhookWorker

    if args.allowed_host:
        allowed = tuple(h.strip().lower() for h in args.allowed_host)
    else:
        allowed = allowed_hosts_from_env(ALLOWED_HOSTS_ENV, os.environ)
    limits = connection_limits_from_args(args, CONNECTIONS_ENV_PREFIX)
    if args.host not in LOOPBACK_HOSTS and allowed == LOOPBACK_HOSTS:
        print(
            f"listening on {args.host} but serving only the Host names {', '.join(allowed)}: "
            f"list the names clients use with --allowed-host or ${ALLOWED_HOSTS_ENV}",
            file=sys.stderr,
        )
    with Registry.open(args.registry_url) as registry:
        if not TokenStore(registry).list():
            print(
                "no active API tokens: every request will be refused (401) until one is "
                "created with `assay tokens create <principal> --role <role>`",
                file=sys.stderr,
            )
        # Webhook deliveries run on a thread of this process (assay.webhooks.delivery says why).
        app = create_app(registry, allowed_hosts=allowed, webhook_worker=WebhookWorker(registry))
        run_app(app, args.host, args.port, limits)
    return 0
