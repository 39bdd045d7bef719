"""A model version's training-data manifest: the corpora it declares it was trained on.

Each entry names a corpus and where its files are (an fsspec URL of a file, a folder or a
glob; an ``http(s)`` URL names exactly one file), their format and, for JSONL and Parquet,
the field holding the text. The contamination checks index each declared corpus once per
content digest and look the suite's test items up in it (``assay.contamination``).

There is no separate "registered corpus" object: two versions that declare the same files
share one index because the index is keyed by the files' digest, not by a name. Copy a
manifest from one version to the next (``assay registry training-data --from``).

Where a manifest may point (checked when it is stored, and again before a worker reads it,
so narrowing the policy stops reads of entries stored earlier):

- local paths (plain or ``file://``) must lie, links resolved, under a corpus root:
  ``$ASSAY_CORPUS_ROOTS`` (``os.pathsep``-separated), else the working directory;
- other schemes must be listed in ``$ASSAY_CORPUS_SCHEMES`` (default: s3, gs, gcs, az, abfs,
  hf: object stores, reached with the worker's own credentials);
- ``http``/``https`` only to hosts listed in ``$ASSAY_CORPUS_HOSTS`` (no host is listed by
  default, so a registry writer cannot make the workers fetch from anywhere), never to a
  link-local or cloud metadata address, even when listed (every connection's address is
  checked, redirects are not followed);
- chained URLs (``a::b``) and URLs carrying credentials (``user:pw@``, ``?token=``, key-shaped
  words) are refused.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from assay.core.security import check_host_allowed, check_under_roots
from assay.registry.errors import invalid
from assay.registry.names import check_name

FORMATS = ("jsonl", "parquet", "text")
MAX_CORPORA = 32
URL_MAX_CHARS = 2048
CORPUS_ROOTS_ENV = "ASSAY_CORPUS_ROOTS"
CORPUS_SCHEMES_ENV = "ASSAY_CORPUS_SCHEMES"
CORPUS_HOSTS_ENV = "ASSAY_CORPUS_HOSTS"
DEFAULT_CORPUS_SCHEMES = frozenset({"s3", "gs", "gcs", "az", "abfs", "hf"})
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_KEYS = ("name", "url", "format", "text_field")


@dataclass(frozen=True, slots=True)
class TrainingCorpus:
    """One declared corpus; the fields of ``assay.contamination.corpus.CorpusSource``."""

    name: str
    url: str
    format: str
    text_field: str = "text"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def check_training_data(
    value: object, where: str, environ: Mapping[str, str] | None = None
) -> tuple[TrainingCorpus, ...]:
    """Validate a manifest (a list of mappings or ``TrainingCorpus``; None is empty).

    Errors are INVALID_PARAMETER_VALUE naming ``where``, the entry and the field at fault.
    """
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise invalid(f"{where}: training_data must be a list of corpora, got {value!r:.80}")
    if len(value) > MAX_CORPORA:
        raise invalid(f"{where}: training_data declares more than {MAX_CORPORA} corpora")
    out: list[TrainingCorpus] = []
    for i, entry in enumerate(value):
        out.append(_check_entry(entry, f"{where}: training_data[{i}]", environ))
    names = [c.name for c in out]
    for name in names:
        if names.count(name) > 1:
            raise invalid(f"{where}: training_data names corpus {name!r} more than once")
    return tuple(out)


def _check_entry(entry: object, where: str, environ: Mapping[str, str] | None) -> TrainingCorpus:
    if isinstance(entry, TrainingCorpus):
        entry = entry.to_dict()
    if not isinstance(entry, Mapping):
        raise invalid(f"{where}: a corpus must be an object with {', '.join(_KEYS)}")
    unknown = sorted(str(k) for k in set(entry) - set(_KEYS))
    if unknown:
        raise invalid(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key in ("name", "url", "format"):
        if key not in entry:
            raise invalid(f"{where}: field {key!r} is required")
    name, url, fmt = entry["name"], entry["url"], entry["format"]
    text_field = entry.get("text_field", "text")
    check_name(name, f"{where}: field 'name'")
    if fmt not in FORMATS:
        raise invalid(f"{where}: field 'format' is {fmt!r}, not one of {', '.join(FORMATS)}")
    if not isinstance(text_field, str) or not _FIELD.match(text_field):
        raise invalid(f"{where}: field 'text_field' {text_field!r:.80} is not a column name")
    try:
        check_corpus_url(url, f"{where}: field 'url'", environ)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    return TrainingCorpus(name=name, url=url, format=fmt, text_field=text_field)


def check_corpus_url(url: object, where: str, environ: Mapping[str, str] | None = None) -> str:
    """``url`` if the corpus policy (module docstring) lets workers read it, else ValueError
    naming ``where`` and the reason."""
    env = os.environ if environ is None else environ
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{where}: expected a non-empty path or URL")
    if len(url) > URL_MAX_CHARS:
        raise ValueError(f"{where}: longer than {URL_MAX_CHARS} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError(f"{where}: must not contain spaces or control characters")
    if "::" in re.sub(r"\[[^\]]*\]", "", url):  # IPv6 literals aside, "::" chains fsspec URLs
        raise ValueError(f"{where}: chained fsspec URLs are not allowed ({url!r})")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() in ("file", "local"):
        _check_local(rest if sep else url, where, env)
        return url
    scheme = scheme.lower()
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError(f"{where}: the URL carries a user or password; use the environment")
    if _credential_query(parts.query):
        raise ValueError(f"{where}: the URL carries a credential in its query")
    if scheme in ("http", "https"):
        hosts = _list(env.get(CORPUS_HOSTS_ENV, ""))
        host = (parts.hostname or "").lower()
        if host not in hosts:
            raise ValueError(
                f"{where}: host {host!r} is not in ${CORPUS_HOSTS_ENV} "
                f"({', '.join(sorted(hosts)) or 'empty: no web host is allowed'})"
            )
        check_host_allowed(host, where)
        return url
    configured = env.get(CORPUS_SCHEMES_ENV)
    schemes = _list(configured) if configured else DEFAULT_CORPUS_SCHEMES
    if scheme not in schemes:
        raise ValueError(
            f"{where}: scheme {scheme!r} is not allowed for corpora (allowed: "
            f"{', '.join(sorted(schemes))}; set ${CORPUS_SCHEMES_ENV} to change)"
        )
    return url


def corpus_roots(environ: Mapping[str, str] | None = None) -> list[str]:
    """``$ASSAY_CORPUS_ROOTS`` (``os.pathsep``-separated) or the working directory."""
    env = os.environ if environ is None else environ
    configured = env.get(CORPUS_ROOTS_ENV)
    if configured:
        return [r for r in configured.split(os.pathsep) if r]
    return [os.getcwd()]


def _check_local(path: str, where: str, env: Mapping[str, str]) -> None:
    # Decided by the path's text and links alone, never by whether it exists: a refusal
    # tells a registry writer nothing about the files of the worker's machine.
    what = f"{where}: local path {path!r}"
    check_under_roots(path, corpus_roots(env), what, CORPUS_ROOTS_ENV, kind="corpus")


_SECRET_PARAMETER = re.compile(
    r"(?i)key|token|secret|passw|pwd|auth|signature|^sig$|credential|session"
)


def _credential_query(query: str) -> bool:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return any(_SECRET_PARAMETER.search(name) for name, _ in pairs)


def _list(text: str) -> frozenset[str]:
    return frozenset(s.strip().lower() for s in text.split(",") if s.strip())


def manifest_json(corpora: Sequence[TrainingCorpus]) -> list[dict[str, Any]]:
    """The stored and shown form of a manifest."""
    return [c.to_dict() for c in corpora]


def manifest_from_json(value: Sequence[Mapping[str, Any]]) -> tuple[TrainingCorpus, ...]:
    """A stored manifest back as records (no policy check: it was checked when stored)."""
    return tuple(TrainingCorpus(**dict(entry)) for entry in value)
