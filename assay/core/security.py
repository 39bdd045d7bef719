"""Where secrets may go and which addresses assay refuses to contact.

Three rules every network-facing part of the library shares:

- **Credentials are bound to hosts.** A key read from the environment variable ``NAME`` is
  sent only to the hosts listed in ``NAME_HOSTS`` (comma-separated ``host`` or ``host:port``,
  case-insensitive), or in ``ASSAY_CREDENTIAL_HOSTS`` as ``NAME=host1,host2;OTHER=host3``.
  With neither set, ``OPENAI_API_KEY`` goes to ``api.openai.com`` only and any other key to
  no host at all: a request elsewhere carries no credentials.
- **Link-local and cloud metadata addresses are never contacted** (169.254.0.0/16, fe80::/10,
  the metadata names and addresses of the big clouds), whatever a source or a suite says.
  Host names are resolved and every address they resolve to is checked.
- **Suites name data only where the deployment allows** (``check_data_url``): local files
  under the data roots, allow-listed schemes and hosts.
- **Error text is scrubbed before it is cut short**: the key values themselves in any letter
  case, ``Bearer <token>`` and well-known key shapes (``sk-…``, ``hf_…``, ``ghp_…``,
  ``AKIA…``) become ``***``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Mapping

CREDENTIAL_HOSTS_ENV = "ASSAY_CREDENTIAL_HOSTS"
HOSTS_SUFFIX = "_HOSTS"
# The hosts a key is meant for when the operator has said nothing: OpenAI's key goes to OpenAI.
DEFAULT_CREDENTIAL_HOSTS: Mapping[str, frozenset[str]] = {
    "OPENAI_API_KEY": frozenset({"api.openai.com"}),
}

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
# Instance metadata services reachable without link-local addresses.
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "metadata.azure"}
)


class ForbiddenAddressError(ValueError):
    """A URL points at a link-local or cloud metadata address."""


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:169.254.169.254 is the same machine
        address = mapped
    if address in _METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if any(address in net for net in _LINK_LOCAL):
        return f"{address} is a link-local address"
    return None


def forbidden_host_reason(host: str, resolve: bool = True) -> str | None:
    """Why ``host`` must not be contacted, or ``None`` when it may be.

    A name is resolved (``resolve=True``) and refused when any of its addresses is forbidden;
    a name that does not resolve is left to fail when it is contacted.
    """
    name = _normal_host(host)
    if not name:
        return None
    if name in _METADATA_NAMES:
        return f"{name} is a cloud metadata host"
    try:
        return _address_problem(ipaddress.ip_address(name.split("%")[0]))
    except ValueError:
        pass
    if not resolve:
        return None
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        try:
            problem = _address_problem(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
        if problem:
            return f"{name} resolves to {problem.replace(' is ', ', which is ', 1)}"
    return None


def check_host_allowed(host: str, what: str) -> None:
    """Raise ``ForbiddenAddressError`` naming ``what`` when ``host`` must not be contacted."""
    reason = forbidden_host_reason(host)
    if reason:
        raise ForbiddenAddressError(f"{what}: refused, {reason}")


def credential_hosts(key_env: str, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The hosts (``host`` or ``host:port``, lower case) the key in ``key_env`` may go to."""
    env = os.environ if environ is None else environ
    own = env.get(key_env + HOSTS_SUFFIX)
    if own is not None:
        return _host_list(own)
    table = env.get(CREDENTIAL_HOSTS_ENV)
    if table:
        for part in table.split(";"):
            name, sep, hosts = part.partition("=")
            if sep and name.strip() == key_env:
                return _host_list(hosts)
    return DEFAULT_CREDENTIAL_HOSTS.get(key_env, frozenset())


def _host_list(text: str) -> frozenset[str]:
    return frozenset(h.strip().lower().rstrip("/") for h in text.split(",") if h.strip())


def host_may_receive(host: str, port: int | None, scheme: str, allowed: Iterable[str]) -> bool:
    """Whether a URL with this host and port is one of ``allowed`` (``host`` or ``host:port``)."""
    name = _normal_host(host)
    if port is None:
        port = 443 if scheme == "https" else 80
    shown = f"[{name}]" if ":" in name else name
    candidates = {name, shown, f"{shown}:{port}"}
    return any(entry in candidates for entry in allowed)


_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[^\s\"',;&}\]\\]+")
_AUTH_HEADER = re.compile(
    r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b)[^\s\"',;&}\]\\]+"
)
_KEY_SHAPES = re.compile(
    r"(?i)\b(sk-[a-z0-9_\-]{8,}|hf_[a-z0-9]{8,}|gh[pousr]_[a-z0-9]{8,}|github_pat_[a-z0-9_]{8,}"
    r"|xox[abpr]-[a-z0-9\-]{8,}|akia[a-z0-9]{12,})"
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret (any letter case), bearer token and key-shaped word hidden."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}***", text)
    return _KEY_SHAPES.sub("***", text)


def redact_then_cut(text: str, limit: int, secrets: Iterable[str | None] = ()) -> str:
    """Scrub first, then shorten: cutting first could leave a key's head uncovered."""
    cleaned = redact(text, secrets)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


# -- data URLs in suites ------------------------------------------------------------------------

DATA_ROOTS_ENV = "ASSAY_DATA_ROOTS"
DATA_SCHEMES_ENV = "ASSAY_DATA_SCHEMES"
DATA_HOSTS_ENV = "ASSAY_DATA_HOSTS"
DEFAULT_DATA_SCHEMES = frozenset({"http", "https", "s3", "gs", "gcs", "az", "abfs", "hf"})


def check_data_url(
    url: str,
    where: str,
    extra_roots: Iterable[str | os.PathLike[str]] = (),
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse a data file URL a suite may not name; the error names ``where`` and the reason.

    - local paths (plain or ``file://``) must lie, after resolving links, under a data root:
      ``$ASSAY_DATA_ROOTS`` (``os.pathsep``-separated), else the working directory and
      ``extra_roots`` (the suite file's folder);
    - other schemes must be listed in ``$ASSAY_DATA_SCHEMES`` (default: http, https, s3, gs,
      gcs, az, abfs, hf); chained URLs (``a::b``) are refused;
    - an HTTP(S) host must not be link-local or a metadata service, and must be listed in
      ``$ASSAY_DATA_HOSTS`` when that is set.
    """
    env = os.environ if environ is None else environ
    if not isinstance(url, str) or not url:
        raise ValueError(f"{where}: expected a non-empty path or URL")
    if "::" in re.sub(r"\[[^\]]*\]", "", url):  # IPv6 literals aside, "::" chains fsspec URLs
        raise ValueError(f"{where}: chained fsspec URLs are not allowed in a suite ({url!r})")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() in ("file", "local"):
        path = rest if sep else url
        _check_local_path(path, where, extra_roots, env)
        return
    scheme = scheme.lower()
    allowed = env.get(DATA_SCHEMES_ENV)
    schemes = (
        frozenset(s.strip().lower() for s in allowed.split(",") if s.strip())
        if allowed
        else DEFAULT_DATA_SCHEMES
    )
    if scheme not in schemes:
        raise ValueError(
            f"{where}: scheme {scheme!r} is not allowed for data files (allowed: "
            f"{', '.join(sorted(schemes))}; set ${DATA_SCHEMES_ENV} to change)"
        )
    if scheme in ("http", "https"):
        import httpx  # local: only HTTP sources need URL parsing

        host = httpx.URL(url).host
        check_host_allowed(host, where)
        hosts = env.get(DATA_HOSTS_ENV)
        if hosts and host.lower() not in _host_list(hosts):
            raise ValueError(f"{where}: host {host!r} is not in ${DATA_HOSTS_ENV} ({hosts})")


def _check_local_path(
    path: str, where: str, extra_roots: Iterable[str | os.PathLike[str]], env: Mapping[str, str]
) -> None:
    configured = env.get(DATA_ROOTS_ENV)
    if configured:
        roots = [r for r in configured.split(os.pathsep) if r]
    else:
        roots = [os.getcwd(), *(os.fspath(r) for r in extra_roots)]
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return
    raise ValueError(
        f"{where}: local file {path!r} is outside the data roots ({', '.join(roots)}); "
        f"set ${DATA_ROOTS_ENV} to allow another folder"
    )
