"""Running an ASGI app under uvicorn with the connection limits both servers share.

uvicorn bounds a request head under h11 only, closes an idle connection only after it has
answered a request (``timeout_keep_alive``), and its ``limit_concurrency`` counts idle
connections too, so a few hundred sockets that send half a request (or nothing) hold the
server's file descriptors forever and then turn every real client away. ``assay server`` and
``assay serve`` therefore run uvicorn with a guarded HTTP protocol:

- **Request timeout**: a request must arrive whole (head and body) within
  ``request_timeout_s`` of the connection opening or of the previous answer; otherwise the
  connection is closed. Requests being answered are never cut.
- **Connection cap**: at most ``max_connections`` open connections, and never more than the
  process's open-file limit allows (a quarter of it, at least 128, is kept for the rest of
  the server). A connection over the cap closes the one that has waited longest for its
  request to arrive, so idle sockets cannot crowd out a client that sends a request; when
  every connection is being answered, the new one gets 503.
- **Head size**: a request line and headers over ``MAX_HEAD_BYTES`` get 400. Under httptools
  (which has no bound of its own) the guard counts them; under h11 the bound is h11's on the
  unfinished head it buffers (``h11_max_incomplete_event_size``).

| setting | default | ``assay serve`` | ``assay server`` |
|---|---|---|---|
| request timeout | 20 s | ``ASSAY_SERVE_REQUEST_TIMEOUT_S`` | ``ASSAY_SERVER_REQUEST_TIMEOUT_S`` |
| open connections | 1,024 | ``ASSAY_SERVE_MAX_CONNECTIONS`` | ``ASSAY_SERVER_MAX_CONNECTIONS`` |

(flags ``--request-timeout-s`` and ``--max-connections`` on both commands).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

MAX_HEAD_BYTES = 32 * 1024
_BUSY = b"every connection is being answered; retry later\n"
_SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many connections may be open."""

    request_timeout_s: float = 20.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        timeout = self.request_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ValueError(f"request_timeout_s must be a number of seconds, got {timeout!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"request_timeout_s must be a positive number, got {timeout!r}")
        cap = self.max_connections
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"max_connections must be a positive integer, got {cap!r}")

    @classmethod
    def from_env(cls, prefix: str, environ: Mapping[str, str] | None = None) -> ConnectionLimits:
        """Defaults, overridden by ``<prefix>REQUEST_TIMEOUT_S`` and ``<prefix>MAX_CONNECTIONS``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, kind in (("request_timeout_s", float), ("max_connections", int)):
            name = f"{prefix}{field.upper()}"
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[field] = kind(raw)
            except ValueError:
                raise ValueError(f"${name} must be a positive number, got {raw!r}") from None
        return cls(**values)

    def open_connections_allowed(self) -> int:
        """``max_connections``, lowered to fit the process's open-file limit."""
        try:
            import resource

            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ImportError, OSError, ValueError):  # not on this platform
            return self.max_connections
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return min(self.max_connections, max(8, soft - max(128, soft // 4)))


def add_connection_arguments(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    """``--request-timeout-s`` and ``--max-connections`` (defaults from ``env_prefix``)."""
    defaults = ConnectionLimits()
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=None,
        help=f"seconds a request may take to arrive (default {defaults.request_timeout_s:g}, "
        f"or ${env_prefix}REQUEST_TIMEOUT_S)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help=f"open connections at most (default {defaults.max_connections}, "
        f"or ${env_prefix}MAX_CONNECTIONS)",
    )


def connection_limits_from_args(args: argparse.Namespace, env_prefix: str) -> ConnectionLimits:
    """The environment's limits, with the flags of ``add_connection_arguments`` on top."""
    overrides = {
        name: getattr(args, name)
        for name in ("request_timeout_s", "max_connections")
        if getattr(args, name, None) is not None
    }
    return dataclasses.replace(ConnectionLimits.from_env(env_prefix), **overrides)


def guarded_protocol(limits: ConnectionLimits, base: type = AutoHTTPProtocol) -> type:
    """uvicorn's HTTP protocol class ``base`` with the request timeout, the connection cap and
    the head size bound (one class per server: the cap counts that server's connections)."""
    cap = limits.open_connections_allowed()
    # Open connections, the one waiting longest for its request first.
    connections: OrderedDict[Any, None] = OrderedDict()

    def incomplete(protocol: Any) -> bool:
        """Whether the connection's request has not arrived whole (or none has begun)."""
        cycle = protocol.cycle
        return cycle is None or cycle.response_complete or cycle.more_body

    def make_room(newcomer: Any) -> None:
        for protocol in connections:
            if protocol is not newcomer and incomplete(protocol):
                connections.pop(protocol)
                protocol.transport.close()
                return
        connections.pop(newcomer, None)
        newcomer.transport.write(_SERVICE_UNAVAILABLE)
        newcomer.transport.close()

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._request_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._wait_for_request()
            if len(connections) > cap:
                make_room(self)

        def connection_lost(self, exc: Exception | None) -> None:
            connections.pop(self, None)
            self._stop_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            # Before the base class, which may start a pipelined request at once.
            self._wait_for_request()
            super().on_response_complete()

        def _wait_for_request(self) -> None:
            self._stop_timer()
            connections[self] = None
            connections.move_to_end(self)
            self._request_timer = self.loop.call_later(
                limits.request_timeout_s, self._request_overdue
            )

        def _stop_timer(self) -> None:
            if self._request_timer is not None:
                self._request_timer.cancel()
                self._request_timer = None

        def _request_overdue(self) -> None:
            self._request_timer = None
            if self.transport.is_closing():
                connections.pop(self, None)
            elif incomplete(self):
                connections.pop(self, None)
                self.transport.close()

        # httptools' parser callbacks (h11 bounds the head it buffers, see uvicorn_config).
        if hasattr(base, "on_header"):

            def on_message_begin(self) -> None:
                self._head_bytes = 0
                super().on_message_begin()

            def on_url(self, url: bytes) -> None:
                self._count_head(len(url))
                super().on_url(url)

            def on_header(self, name: bytes, value: bytes) -> None:
                self._count_head(len(name) + len(value) + 4)
                super().on_header(name, value)

            def _count_head(self, size: int) -> None:
                self._head_bytes += size
                if self._head_bytes > MAX_HEAD_BYTES:
                    # The parser turns this into an error; uvicorn answers 400 and closes.
                    raise ValueError(f"request head over {MAX_HEAD_BYTES} bytes")

    GuardedProtocol.__name__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def uvicorn_config(app: Any, limits: ConnectionLimits | None = None, **options: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` with the guarded protocol (``options`` go to uvicorn)."""
    limits = limits if limits is not None else ConnectionLimits()
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        ws="none",  # neither server speaks WebSocket; an upgraded socket would leave the guard
        **options,
    )


def run_app(
    app: Any,
    host: str,
    port: int,
    limits: ConnectionLimits | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``app`` in the foreground until interrupted (what the commands do)."""
    server = uvicorn.Server(uvicorn_config(app, limits, host=host, port=port, log_level=log_level))
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's exit status when it could not start


@dataclass
class BackgroundApp:
    """An ASGI app running on a background thread (see ``asgi_in_background``)."""

    host: str
    port: int
    _uvicorn: uvicorn.Server
    _thread: threading.Thread

    @property
    def base_url(self) -> str:
        """The ``/v1`` URL, as an ``openai:`` source expects it."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://{self.host}:{self.port}"

    def stop(self, force: bool = False) -> None:
        """Stop listening; ``force`` drops requests in flight instead of finishing them."""
        self._uvicorn.should_exit = True
        self._uvicorn.force_exit = force
        self._thread.join(30)


@contextlib.contextmanager
def asgi_in_background(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    connection_limits: ConnectionLimits | None = None,
) -> Iterator[BackgroundApp]:
    """Run any ASGI app with uvicorn on a background thread until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn_config(
        app, connection_limits, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    runner = uvicorn.Server(config)
    thread = threading.Thread(
        target=runner.run, kwargs={"sockets": [sock]}, name="assay-http-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
        time.sleep(0.01)
    running = BackgroundApp(host, sock.getsockname()[1], runner, thread)
    try:
        yield running
    finally:
        running.stop()
        sock.close()
