"""``assay tokens create|list|revoke``: API tokens of ``assay server``.

Run where the registry's database can be opened (that access is what makes one an
administrator). A token's secret is printed once, at creation, and stored only as a hash.
"""

from __future__ import annotations

import argparse
from typing import Any

from assay.cli.registry import command, format_time, table
from assay.registry import Registry
from assay.registry.tokens import Role, TokenStore


def _create(args: argparse.Namespace, registry: Registry) -> int:
    info, secret = TokenStore(registry).create(
        args.principal, args.role, args.grant or (), created_by=args.actor
    )
    grants = ", ".join(info.grants) or "all models"
    print(f"token {info.id} for {info.principal} ({info.role.label} on {grants}):")
    print(secret)
    print("Store it now: it is not shown again.")
    return 0


def _list(args: argparse.Namespace, registry: Registry) -> int:
    rows = [
        [
            t.id,
            t.prefix + "…",
            t.principal,
            t.role.label,
            ", ".join(t.grants) or "*",
            format_time(t.created_at),
            t.created_by,
            "never" if t.last_used_at is None else format_time(t.last_used_at),
            "-" if t.revoked_at is None else f"{format_time(t.revoked_at)} by {t.revoked_by}",
        ]
        for t in TokenStore(registry).list(include_revoked=args.all)
    ]
    headers = [
        *("ID", "PREFIX", "PRINCIPAL", "ROLE", "MODELS", "CREATED", "BY"),
        *("LAST USED", "REVOKED"),
    ]
    print(table(headers, rows))
    return 0


def _revoke(args: argparse.Namespace, registry: Registry) -> int:
    info = TokenStore(registry).revoke(args.id, revoked_by=args.actor)
    print(f"revoked token {info.id} of {info.principal}")
    return 0


def add_parser(subparsers: Any) -> None:
    from assay.cli.registry import common_options

    common = common_options()
    parser = subparsers.add_parser("tokens", help="API tokens of assay server")
    sub = parser.add_subparsers(dest="tokens_command", required=True)
    p = sub.add_parser("create", parents=[common], help="create a token and print it once")
    p.add_argument("principal", help="who the token stands for; the history's actor")
    p.add_argument("--role", default="reader", choices=[r.label for r in Role])
    p.add_argument(
        "--grant",
        action="append",
        metavar="MODEL",
        help="limit the role to this model (repeatable); elsewhere the token reads only",
    )
    p.set_defaults(func=command(_create))
    p = sub.add_parser("list", parents=[common], help="list tokens (never their secrets)")
    p.add_argument("--all", action="store_true", help="include revoked tokens")
    p.set_defaults(func=command(_list))
    p = sub.add_parser("revoke", parents=[common], help="revoke a token by id")
    p.add_argument("id", type=int)
    p.set_defaults(func=command(_revoke))
