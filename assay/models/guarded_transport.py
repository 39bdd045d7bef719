"""An HTTP transport that checks the address of every connection it opens.

``check_host_allowed`` runs when a client is built, but a name can resolve to a public address
then and to a metadata address a minute later (DNS rebinding). This transport resolves the
name itself for each new connection, refuses the connection when any address is link-local or
a metadata service (``assay.core.security.connectable_addresses``), and connects to the
address it checked, so the address that was checked is the address that is reached. TLS still
verifies the certificate against the name, and the ``Host`` header still carries it.

Requests sent through a proxy (``HTTPS_PROXY`` and friends) are resolved by the proxy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from assay.core.security import connectable_addresses


class CheckedNetworkBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses that pass the check."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in connectable_addresses(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the name's next address
                last = exc
        raise last or httpcore.ConnectError(f"{host} resolved to no address")


def checked_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's default transport with ``CheckedNetworkBackend`` under its connection pool."""
    transport = httpx.HTTPTransport(limits=limits)
    pool = transport._pool  # httpx offers no argument for the network backend
    if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx's transport no longer has the expected connection pool")
    pool._network_backend = CheckedNetworkBackend()
    return transport
