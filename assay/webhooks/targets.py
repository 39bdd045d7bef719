"""Where a webhook may point: the host policy model credentials obey.

A webhook's signing secret is a credential, and a webhook URL is a request the server makes
on a registry user's say-so (server-side request forgery: ``http://169.254.169.254/``, an
internal admin port, a database on the server's network). So a URL is accepted only when its
scheme, host and port are listed for the credential ``ASSAY_WEBHOOK``, exactly as a model key
is bound to its hosts (``assay.core.security.credential_targets``):

- ``$ASSAY_WEBHOOK_HOSTS`` (comma-separated ``host``, ``host:port`` or ``scheme://host:port``),
  or ``ASSAY_WEBHOOK=...`` in ``$ASSAY_CREDENTIAL_HOSTS``; with neither, no URL is allowed;
- plain ``http`` only on loopback hosts; link-local and cloud metadata addresses never, even
  when listed (names are resolved, and resolved again for every connection by
  ``assay.models.guarded_transport``, against DNS rebinding).

The check runs when a webhook is created or updated and again before every attempt, so
removing a host from the list stops deliveries to it. Errors name the scheme, host and port,
never the path or query, which often carry a receiver's own token (Slack, Teams).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from assay.core.security import (
    HOSTS_SUFFIX,
    ForbiddenAddressError,
    check_host_allowed,
    credential_may_go,
    credential_targets,
)

WEBHOOK_CREDENTIAL = "ASSAY_WEBHOOK"
WEBHOOK_HOSTS_ENV = WEBHOOK_CREDENTIAL + HOSTS_SUFFIX
URL_MAX_CHARS = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetRefused(ValueError):
    """A webhook URL the host policy does not allow; the message names why."""


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, the only part of it errors and logs show."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        host = parts.hostname or ""
    except ValueError:
        return "(unparseable URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}:{port}"


def check_target(url: object, environ: Mapping[str, str] | None = None) -> str:
    """``url`` if a webhook may be sent there, else ``TargetRefused`` saying why."""
    if not isinstance(url, str) or not url.strip():
        raise TargetRefused("webhook URL must be a non-empty string")
    if len(url) > URL_MAX_CHARS:
        raise TargetRefused(f"webhook URL is longer than {URL_MAX_CHARS} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise TargetRefused("webhook URL must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"webhook URL is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise TargetRefused(f"webhook URL scheme {scheme!r} is not http or https")
    if not parts.hostname:
        raise TargetRefused("webhook URL must include a host name")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("webhook URL must not carry credentials (user:password@)")
    where = origin(url)
    try:
        check_host_allowed(parts.hostname, f"webhook URL {where}")
    except ForbiddenAddressError as exc:
        raise TargetRefused(str(exc)) from None
    try:
        targets = credential_targets(WEBHOOK_CREDENTIAL, environ)
    except ValueError as exc:
        raise TargetRefused(f"the webhook host policy is misconfigured: {exc}") from None
    if not credential_may_go(scheme, parts.hostname, port, targets):
        raise TargetRefused(
            f"webhook URL {where} is not an allowed target: its scheme, host and port must be "
            f"listed in ${WEBHOOK_HOSTS_ENV} (plain http on loopback hosts only)"
        )
    return url
