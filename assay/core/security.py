"""Where secrets may go and which addresses assay refuses to contact.

Three rules every network-facing part of the library shares:

- **Credentials are bound to scheme, host and port.** A key read from the environment
  variable ``NAME`` is sent only to the targets listed in ``NAME_HOSTS`` (comma-separated
  ``host``, ``host:port`` or ``https://host:port``, case-insensitive), or in
  ``ASSAY_CREDENTIAL_HOSTS`` as ``NAME=host1,host2;OTHER=host3``. An entry without a scheme
  means https on the given port (443 when none is given); plain http is allowed on loopback
  hosts only, where an entry without a scheme covers both. With neither variable set,
  ``OPENAI_API_KEY`` goes to ``https://api.openai.com:443`` only and any other key nowhere: a
  request elsewhere carries no credentials.
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
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
        addresses = _resolve(name, None)
    except (OSError, UnicodeError):
        return None
    return _addresses_problem(name, addresses)


def _resolve(name: str, port: int | None) -> list[str]:
    infos = socket.getaddrinfo(name, port, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _addresses_problem(name: str, addresses: Iterable[str]) -> str | None:
    for text in addresses:
        try:
            problem = _address_problem(ipaddress.ip_address(text.split("%")[0]))
        except ValueError:
            continue
        if problem:
            return f"{name} resolves to {problem.replace(' is ', ', which is ', 1)}"
    return None


def connectable_addresses(host: str, port: int) -> list[str]:
    """Resolve ``host`` for one connection and return its addresses, all of them allowed.

    Called for every new connection (not once per client), so a name that resolves to a
    public address when a client is built and to a metadata address later (DNS rebinding)
    is refused at the connection that would reach it. Raises ``ForbiddenAddressError``.
    """
    name = _normal_host(host)
    reason = forbidden_host_reason(name, resolve=False)
    if reason:
        raise ForbiddenAddressError(f"connection to {name}: refused, {reason}")
    try:
        ipaddress.ip_address(name.split("%")[0])
        return [name]
    except ValueError:
        pass
    addresses = _resolve(name, port)
    reason = _addresses_problem(name, addresses)
    if reason:
        raise ForbiddenAddressError(f"connection to {name}: refused, {reason}")
    return addresses


def check_host_allowed(host: str, what: str) -> None:
    """Raise ``ForbiddenAddressError`` naming ``what`` when ``host`` must not be contacted."""
    reason = forbidden_host_reason(host)
    if reason:
        raise ForbiddenAddressError(f"{what}: refused, {reason}")


@dataclass(frozen=True, slots=True)
class CredentialTarget:
    """Where a key may be sent: one scheme, host and port."""

    scheme: str
    host: str
    port: int


def credential_targets(
    key_env: str, environ: Mapping[str, str] | None = None
) -> frozenset[CredentialTarget]:
    """The scheme, host and port triples the key in ``key_env`` may go to.

    Entries are ``host``, ``host:port`` or ``scheme://host[:port]``. Without a scheme an entry
    means ``https`` (and also ``http`` on a loopback host); without a port, the scheme's
    default. Plain ``http`` to any other host is refused: a ``ValueError`` names the entry.
    """
    env = os.environ if environ is None else environ
    own = env.get(key_env + HOSTS_SUFFIX)
    where = f"${key_env}{HOSTS_SUFFIX}"
    if own is None:
        own, where = (
            _table_entry(env.get(CREDENTIAL_HOSTS_ENV), key_env),
            f"${CREDENTIAL_HOSTS_ENV}",
        )
    if own is None:
        return frozenset(
            CredentialTarget("https", host, 443)
            for host in DEFAULT_CREDENTIAL_HOSTS.get(key_env, ())
        )
    targets: set[CredentialTarget] = set()
    for entry in (e.strip() for e in own.split(",")):
        if entry:
            targets.update(_targets_of(entry, f"{where} entry {entry!r}"))
    return frozenset(targets)


def _table_entry(table: str | None, key_env: str) -> str | None:
    for part in (table or "").split(";"):
        name, sep, hosts = part.partition("=")
        if sep and name.strip() == key_env:
            return hosts
    return None


def _targets_of(entry: str, where: str) -> list[CredentialTarget]:
    scheme, sep, rest = entry.partition("://")
    explicit = bool(sep)
    if not explicit:
        scheme, rest = "https", entry
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{where}: scheme {scheme!r} is not http or https")
    parsed = urllib.parse.urlsplit(f"{scheme}://{rest.rstrip('/')}")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"{where}: the port is not a number from 0 to 65535") from None
    if not parsed.hostname or parsed.path or parsed.query or parsed.username:
        raise ValueError(f"{where}: expected host, host:port or scheme://host:port")
    host = _normal_host(parsed.hostname)
    loopback = is_loopback(host)
    if scheme == "http" and not loopback:
        raise ValueError(
            f"{where}: a key would travel in cleartext; plain http is allowed for loopback "
            "hosts only, use https"
        )
    schemes = ("https", "http") if loopback and not explicit else (scheme,)
    return [CredentialTarget(s, host, port or _DEFAULT_PORTS[s]) for s in schemes]


_DEFAULT_PORTS = {"https": 443, "http": 80}


def _host_list(text: str) -> frozenset[str]:
    return frozenset(h.strip().lower().rstrip("/") for h in text.split(",") if h.strip())


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    name = _normal_host(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def credential_may_go(
    scheme: str, host: str, port: int | None, targets: Iterable[CredentialTarget]
) -> bool:
    """Whether a URL with this scheme, host and port is one of the key's ``targets``."""
    scheme = scheme.lower()
    wanted = CredentialTarget(scheme, _normal_host(host), port or _DEFAULT_PORTS.get(scheme, 0))
    return wanted in set(targets)


_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[^\s\"',;&}\]\\]+")
_AUTH_HEADER = re.compile(
    r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b)[^\s\"',;&}\]\\]+"
)
_KEY_SHAPES = re.compile(
    r"(?i)\b(sk-[a-z0-9_\-]{8,}|hf_[a-z0-9]{8,}|gh[pousr]_[a-z0-9]{8,}|github_pat_[a-z0-9_]{8,}"
    r"|xox[abpr]-[a-z0-9\-]{8,}|akia[a-z0-9]{12,})"
)


def contains_key_shape(text: str) -> bool:
    """Whether ``text`` holds a word shaped like a well-known key (``sk-…``, ``hf_…``, …)."""
    return _KEY_SHAPES.search(text) is not None


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
    check_under_roots(path, roots, f"{where}: local file {path!r}", DATA_ROOTS_ENV)


def check_under_roots(
    path: str, roots: Iterable[str], what: str, variable: str, kind: str = "allowed"
) -> None:
    """Refuse ``path`` (named ``what`` in the error) unless, links resolved, it lies under one
    of ``roots`` (``kind`` names them in the error: "outside the allowed roots").

    The answer depends on the path's text and links alone, never on whether the file exists,
    so the refusal tells a caller nothing about the files of this machine.
    """
    roots = list(roots)
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return
    raise ValueError(
        f"{what} is outside the {kind} roots ({', '.join(roots)}); "
        f"set ${variable} to allow another folder"
    )


# -- local model files named by registered versions ----------------------------------------------

MODEL_ROOTS_ENV = "ASSAY_MODEL_ROOTS"


def model_roots(environ: Mapping[str, str] | None = None) -> list[str]:
    """Folders whose files ``gguf:``, ``hf:`` and ``llamacpp:`` sources may name.

    ``$ASSAY_MODEL_ROOTS`` (``os.pathsep``-separated) when set; else the working directory
    and the Hugging Face cache (``$HF_HOME``, default ``~/.cache/huggingface``).
    """
    env = os.environ if environ is None else environ
    configured = env.get(MODEL_ROOTS_ENV)
    if configured:
        return [r for r in configured.split(os.pathsep) if r]
    hf_home = env.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return [os.getcwd(), hf_home]


def check_model_path(path: str, source: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a local model path outside ``model_roots``; the error names the source.

    A registry writer chooses the path: unchecked, the daemon would tell them which files
    exist on its host and record the digest of any file it can read.
    """
    check_under_roots(path, model_roots(environ), f"model source {source!r}: path", MODEL_ROOTS_ENV)
