"""Command-line helpers for ``assay serve``: serve one model over the OpenAI-compatible API."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from assay.core.http_server import add_connection_arguments, connection_limits_from_args
from assay.models.base import ModelSpec, ServingConfig
from assay.models.factory import build_client
from assay.serving.openai_server import serve
from assay.serving.policy import API_KEY_ENV, CONNECTIONS_ENV_PREFIX, ServerAccess, ServerLimits


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``assay serve`` to ``parser``."""
    parser.add_argument("source", help="model source, e.g. bundled:smollm2-135m-instruct")
    parser.add_argument("--name", default=None, help="model id to serve under (default: key)")
    parser.add_argument("--key", default="served@v1", help="model version key for the spec")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--chat-template", action="store_true", help="wrap prompts as chat turns")
    parser.add_argument("--system-prompt", default=None)
    parser.add_argument("--batch-size", type=int, default=16, help="upper bound per batch")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:<index> or mps")
    parser.add_argument(
        "--device-map", default=None, help="spread weights with transformers, e.g. auto"
    )
    parser.add_argument("--batch-window-ms", type=float, default=10.0)
    parser.add_argument("--cache-dir", type=Path, default=Path(".assay/cache"))
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer <key>' (prefer ${API_KEY_ENV}: flags show in ps)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        help="a Host name clients may use (repeatable; default: loopback names, "
        "or $ASSAY_SERVE_ALLOWED_HOSTS; '*' for any)",
    )
    for field in dataclasses.fields(ServerLimits):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag,
            type=int,
            default=None,
            help=f"limit (default {field.default}, or $ASSAY_SERVE_{field.name.upper()})",
        )
    add_connection_arguments(parser, CONNECTIONS_ENV_PREFIX)


def run_serve(args: argparse.Namespace) -> None:
    """Build the client the arguments name and serve it until interrupted."""
    serving = ServingConfig(
        chat_template=args.chat_template,
        system_prompt=args.system_prompt,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
    )
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ServerLimits)
        if getattr(args, f.name) is not None
    }
    limits = dataclasses.replace(ServerLimits.from_env(), **overrides)
    connection_limits = connection_limits_from_args(args, CONNECTIONS_ENV_PREFIX)
    access = ServerAccess.from_env()
    if args.allowed_host:
        access = dataclasses.replace(
            access, allowed_hosts=tuple(h.lower() for h in args.allowed_host)
        )
    if args.api_key or os.environ.get(API_KEY_ENV):
        access = dataclasses.replace(access, api_key=args.api_key or os.environ[API_KEY_ENV])
    client = build_client(ModelSpec(args.key, args.source, serving), args.cache_dir)
    serve(
        client,
        host=args.host,
        port=args.port,
        model_name=args.name,
        batch_window_s=args.batch_window_ms / 1000,
        max_batch=max(args.batch_size * 4, 1),
        connection_limits=connection_limits,
        limits=limits,
        access=access,
    )
