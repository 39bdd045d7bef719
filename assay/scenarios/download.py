"""Download public data files once, verify them, and keep them in a local cache.

HTTP(S) goes through the standard library, so no extra dependency is needed to fetch a file;
other fsspec URLs (``s3://``, ``gs://``, ``memory://``, local paths) are read in place. A file
is cached under ``$ASSAY_DATA_CACHE`` (default ``.assay/datasets``) by a digest of its URL,
written to a temporary name and renamed, so a killed download never leaves half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from assay.core.digests import digest_file, digest_json

DEFAULT_CACHE = Path(".assay") / "datasets"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"


class DataSourceError(RuntimeError):
    """A data source could not be fetched or did not match its pinned checksum."""


def cache_dir() -> Path:
    """Where downloaded data files live: ``$ASSAY_DATA_CACHE`` or ``.assay/datasets``."""
    return Path(os.environ.get("ASSAY_DATA_CACHE") or DEFAULT_CACHE)


def hub_endpoint() -> str:
    """The Hugging Face Hub's base URL: ``$HF_ENDPOINT`` (a Hub mirror; the variable
    ``huggingface_hub`` and ``datasets`` read) or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A data file on local disk (or at its own fsspec URL) and the SHA-256 of its bytes."""

    path: str
    sha256: str


def fetch(url: str, sha256: str | None = None, timeout_s: float = 60.0) -> FetchedFile:
    """A local copy of ``url`` (downloaded once) or the URL itself when it is not HTTP(S);
    a local folder's digest covers each of its files (``_digest_folder``).

    ``sha256`` pins the content: a mismatch is an error naming both digests. A download
    enters the cache only once its digest matches, and a cached copy that no longer matches
    the pin (the pin changed) is downloaded again. A source that cannot be reached is one
    ``DataSourceError`` sentence with the URL and the cause.
    """
    if not url.startswith(("http://", "https://")):
        digest = _digest_folder(url) if os.path.isdir(url) else _digest_any(url)
        fetched = FetchedFile(url, digest)
        _check(url, sha256, fetched.sha256)
        return fetched
    target = cache_dir() / digest_json(url)[:24] / Path(url.split("?")[0]).name
    if target.exists():
        cached = digest_file(target)
        if not sha256 or cached == sha256:
            return FetchedFile(str(target), cached)
    return FetchedFile(str(target), _download(url, target, timeout_s, sha256))


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def extract_member(archive: FetchedFile, member: str) -> FetchedFile:
    """One regular file of a tar archive (compressed or not, read as a stream up to the
    member), cached under the archive's digest so it is extracted once; its own SHA-256.

    The archive should already be checked against its pin (``fetch``); a member that is
    missing or not a regular file is a ``DataSourceError`` naming the archive and the member.
    """
    parts = member.split("/")
    if not member or member.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{member!r}: expected a relative path inside the archive")
    target = cache_dir() / "members" / archive.sha256[:32] / Path(*parts)
    if target.exists():
        return FetchedFile(str(target), digest_file(target))
    import fsspec

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with fsspec.open(archive.path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for info in tar:
                if info.name.removeprefix("./") != member:
                    continue
                handle = tar.extractfile(info) if info.isfile() else None
                if handle is None:
                    raise DataSourceError(f"{archive.path}: {member} is not a regular file")
                with handle, partial.open("wb") as out:
                    shutil.copyfileobj(handle, out, 1 << 20)
                partial.replace(target)
                return FetchedFile(str(target), digest_file(target))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataSourceError(f"{archive.path}: cannot read the tar archive: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    raise DataSourceError(f"{archive.path}: the archive has no member {member}")


def _check(url: str, expected: str | None, got: str) -> None:
    if expected and got != expected:
        raise DataSourceError(f"{url}: checksum mismatch: expected sha256 {expected}, got {got}")


def _download(url: str, target: Path, timeout_s: float, sha256: str | None) -> str:
    """Download ``url`` to ``target`` (replacing it) when its bytes match ``sha256``; their
    digest."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    request = urllib.request.Request(url, headers={"User-Agent": "assay"})
    try:
        with (
            urllib.request.urlopen(request, timeout=timeout_s) as response,
            partial.open("wb") as out,
        ):
            shutil.copyfileobj(response, out, 1 << 20)
        digest = digest_file(partial)
        _check(url, sha256, digest)
        partial.replace(target)
        return digest
    except urllib.error.HTTPError as exc:
        raise DataSourceError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataSourceError(f"cannot download {url}: {_reason(exc.reason)}") from None
    except (TimeoutError, ConnectionError, OSError) as exc:
        raise DataSourceError(f"cannot download {url}: {_reason(exc)}") from None
    finally:
        partial.unlink(missing_ok=True)


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _digest_folder(folder: str) -> str:
    """SHA-256 over a local folder's regular files: each one's path below the folder and the
    SHA-256 of its bytes, in path order (links are not followed)."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in names:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                files.append(
                    [os.path.relpath(path, folder).replace(os.sep, "/"), digest_file(path)]
                )
    return digest_json(sorted(files))


def _digest_any(url: str) -> str:
    """SHA-256 of a file at any fsspec URL, streamed."""
    import fsspec

    h = hashlib.sha256()
    try:
        with fsspec.open(url, "rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        raise DataSourceError(f"cannot read {url}: file not found") from None
    except OSError as exc:
        raise DataSourceError(f"cannot read {url}: {_reason(exc)}") from None
    return h.hexdigest()
