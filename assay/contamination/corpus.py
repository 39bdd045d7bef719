"""A declared training corpus: its files at an fsspec URL, their digest, their documents.

``CorpusSource.url`` names one file, a folder (every file under it, recursively, except names
starting with ``.`` or ``_`` such as ``_SUCCESS``) or a glob (``s3://bucket/pile/*.jsonl.zst``);
files are taken in sorted path order. Compressed files (``.gz``, ``.zst``, ``.bz2``, ``.xz``)
are read through fsspec's compression inference (not Parquet, which compresses inside).

An ``http``/``https`` URL names exactly one file (no folder listing, no glob) and is read
through an httpx client on ``assay.models.guarded_transport.checked_transport``: the name is
resolved again for every connection and a link-local or metadata address is refused, so a name
that passed ``ASSAY_CORPUS_HOSTS`` when the corpus was declared and later resolves elsewhere
(DNS rebinding) is not reached. Reads are streamed with bounded timeouts, redirects are not
followed, no proxy from the environment is used, and the bytes are taken as served
(``Accept-Encoding: identity``). Every other URL (local paths, ``s3://``, ``memory://``, ...)
goes through fsspec. :func:`open_corpus_file` is the one place a corpus file is opened.

Documents, streamed (nothing holds more than one file's current batch):

- ``jsonl``: one JSON object per line, the document is its ``text_field`` (blank lines skipped).
- ``parquet``: one row per document, the ``text_field`` column, read one record batch at a time.
- ``text``: **one document per file**: line breaks inside a file are ordinary whitespace, so an
  n-gram may run across a hard-wrapped line. A file over ``TEXT_PIECE_CHARS`` characters comes
  as consecutive pieces cut at whitespace, each starting with the last ``TEXT_OVERLAP_WORDS``
  words of the piece before, so every n-gram of up to 13 words lies whole in some piece and the
  index equals the one-document reading (``iter_documents`` then yields more items than files).

Bad input raises :class:`CorpusError` naming the file, the line or row, and the field. Hostile
sizes too: a web file over ``$ASSAY_CORPUS_WEB_MAX_BYTES`` (default 64 GiB), by its
``Content-Length`` or by what it streams, a Parquet file that the temporary folder has no room
for, and a JSONL line over ``JSONL_LINE_MAX_BYTES`` (64 MiB) are refused, naming the URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple

import fsspec
import fsspec.compression
import fsspec.utils
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import httpx

TEXT_PIECE_CHARS = 8 * 1024 * 1024
TEXT_OVERLAP_WORDS = 12
_CHUNK = 1 << 20
_GLOB = set("*?[")
# HTTP reads: 10 s to connect, 30 s for any other wait (the next bytes of a read included).
HTTP_CONNECT_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 30.0
# The most bytes one web corpus file may send (its Content-Length or what it streams): a
# server that sends without end fills neither the disk (Parquet is spooled to a temporary
# file) nor the index build's hours.
WEB_MAX_BYTES_ENV = "ASSAY_CORPUS_WEB_MAX_BYTES"
WEB_MAX_BYTES = 64 * 1024**3
# The longest line of a JSONL file (after decompression): a line is held whole to parse it,
# so a file without line breaks (a small gzip expands to gigabytes) would fill memory.
JSONL_LINE_MAX_BYTES = 64 * 1024**2


class CorpusError(ValueError):
    """A corpus file is missing, unreadable, or holds a malformed document."""


class CorpusSource(BaseModel):
    """A training corpus to check evaluation instances against."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    url: str
    format: Literal["jsonl", "parquet", "text"]
    text_field: str = "text"


def corpus_files(source: CorpusSource) -> list[str]:
    """The files of the corpus as URLs, in sorted path order (an http(s) URL is one file)."""
    if is_web_url(source.url):
        return [source.url]
    fs, root = fsspec.core.url_to_fs(source.url)
    if any(ch in _GLOB for ch in root):
        paths = [p for p in fs.glob(root) if not p.rsplit("/", 1)[-1].startswith((".", "_"))]
        paths = [p for p in paths if not fs.isdir(p)]
    elif fs.isdir(root):
        paths = [
            p
            for p in fs.find(root)
            if not any(part.startswith((".", "_")) for part in p[len(root) :].split("/") if part)
        ]
    elif fs.exists(root):
        paths = [root]
    else:
        raise CorpusError(f"corpus {source.name!r}: {source.url}: no such file or folder")
    if not paths:
        raise CorpusError(f"corpus {source.name!r}: {source.url}: no files match")
    return [fs.unstrip_protocol(p) for p in sorted(paths)]


def corpus_digest(source: CorpusSource) -> str:
    """SHA-256 (hex) of the corpus, streamed: the format and text field, then for each file in
    sorted path order its size and its bytes (sizes keep ``ab``+``c`` apart from ``a``+``bc``).

    File names do not enter: the same bytes moved to another bucket keep their digest.
    A corpus whose every file has a version stamp (:func:`file_stat`) is read once per
    process: while the stamps stay the same, its digest is the one computed before (the
    promotion sensor records the corpora of every new version, which mostly declare the same).
    """
    files = corpus_files(source)
    stats = [file_stat(url) for url in files]
    key = _digest_key(source, files, stats)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key) if key is not None else None
    if known is not None:
        return known
    h = hashlib.sha256()
    h.update(f"{source.format}\0{source.text_field}\0".encode())
    for url, stat in zip(files, stats, strict=True):
        size = stat.size
        h.update(size.to_bytes(8, "little"))
        read = 0
        try:
            with open_corpus_file(url) as handle:
                while chunk := handle.read(_CHUNK):
                    h.update(chunk)
                    read += len(chunk)
        except FileNotFoundError:
            raise CorpusError(f"{url}: file not found") from None
        except OSError as exc:
            raise CorpusError(f"{url}: cannot read: {exc}") from None
        if read != size:
            raise CorpusError(f"{url}: read {read} bytes, its size was {size} (did it change?)")
    digest = h.hexdigest()
    # Kept only if no file changed while it was read (its stamp is the same after).
    if key is not None and key == _digest_key(source, files, [file_stat(u) for u in files]):
        with _DIGESTS_LOCK:
            _DIGESTS[key] = digest
            _DIGESTS.move_to_end(key)
            while len(_DIGESTS) > DIGESTS_KEPT:
                _DIGESTS.popitem(last=False)
    return digest


class FileStat(NamedTuple):
    """A corpus file's size and, where its store gives one, a stamp that changes whenever its
    bytes do: a local file's (modification time in ns, inode), once it is a few seconds old,
    an object's ETag or generation, a web file's strong ``ETag``."""

    size: int
    stamp: tuple | None


# An object store's fields (fsspec ``info``) that change with an object's bytes.
_STAMP_FIELDS = ("ETag", "etag", "md5Hash", "generation", "VersionId", "version_id")
DIGESTS_KEPT = 256
RACY_NS = 3_000_000_000
_DIGESTS: OrderedDict[tuple, str] = OrderedDict()
_DIGESTS_LOCK = threading.Lock()


def _digest_key(source: CorpusSource, files: list[str], stats: list[FileStat]) -> tuple | None:
    if any(stat.stamp is None for stat in stats):
        return None
    return (source.format, source.text_field, tuple(zip(files, stats, strict=True)))


def file_stat(url: str) -> FileStat:
    """One corpus file's :class:`FileStat`, without reading its bytes."""
    if is_web_url(url):
        return _web_stat(url)
    fs, path = fsspec.core.url_to_fs(url)
    try:
        if isinstance(fs, LocalFileSystem):
            st = os.stat(path)
            # A file modified in the last seconds may change again within the filesystem
            # clock's tick, keeping its time: no stamp until it has aged (git's "racy" rule).
            racy = time.time_ns() - st.st_mtime_ns < RACY_NS
            stamp = None if racy else ("local", st.st_mtime_ns, st.st_ino, st.st_dev)
            return FileStat(st.st_size, stamp)
        info = fs.info(path)
    except FileNotFoundError:
        raise CorpusError(f"{url}: file not found") from None
    except OSError as exc:
        raise CorpusError(f"{url}: cannot read: {exc}") from None
    stamp = tuple((k, str(info[k])) for k in _STAMP_FIELDS if info.get(k))
    return FileStat(int(info["size"]), stamp or None)


def iter_documents(source: CorpusSource) -> Iterator[str]:
    """Every document of the corpus, streamed (see the module doc for what a document is)."""
    for url, _size in iter_files(source):
        yield from iter_file_documents(source, url)


def iter_files(source: CorpusSource) -> Iterator[tuple[str, int]]:
    """``(url, size in bytes)`` of each corpus file, in order."""
    for url in corpus_files(source):
        yield url, file_size(url)


def is_web_url(url: str) -> bool:
    """Whether ``url`` is read over HTTP (``http://`` or ``https://``, any case)."""
    return url.partition("://")[0].lower() in ("http", "https") and "://" in url


def file_size(url: str) -> int:
    """The size in bytes of one corpus file (over HTTP: its ``Content-Length`` as served)."""
    return file_stat(url).size


def _web_stat(url: str) -> FileStat:
    """A web file's size (its ``Content-Length``, else the bytes of a GET) and its strong
    ``ETag`` (a weak ``W/`` one promises equivalent content, not the same bytes)."""
    with _web_client() as client:
        with _web_response(client, url, "HEAD") as response:
            length = response.headers.get("content-length")
            etag = response.headers.get("etag")
            etag = None if etag is None or etag.startswith("W/") else etag
            if response.status_code != 405 and length is not None and length.isdigit():
                return FileStat(_within_cap(url, int(length)), ("etag", etag) if etag else None)
        # No usable HEAD answer: count the bytes of a GET.
        with _web_response(client, url, "GET") as response:
            return FileStat(sum(len(chunk) for chunk in _body(url, response)), None)


@contextlib.contextmanager
def open_corpus_file(
    url: str, compression: str | None = None, seekable: bool = False
) -> Iterator[IO[bytes]]:
    """One corpus file opened for binary reading: the one place a corpus file is opened.

    ``compression``: ``"infer"`` decompresses by the name's ending (``.gz``, ``.zst``, ...),
    ``None`` gives the stored bytes. ``seekable``: the handle must seek (Parquet); an HTTP file
    is then streamed to a temporary file first. Otherwise an HTTP file is read as it arrives.
    Errors: ``CorpusError`` for an HTTP status, a refused address or a failed HTTP read;
    ``OSError`` (or ``FileNotFoundError``) for a failed fsspec read.
    """
    if not is_web_url(url):
        with fsspec.open(url, "rb", compression=compression) as handle:
            yield handle
        return
    if compression == "infer":
        compression = fsspec.utils.infer_compression(urllib.parse.urlsplit(url).path)
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(_web_client())
        response = stack.enter_context(_web_response(client, url, "GET"))
        handle: IO[bytes]
        if seekable:
            _room_for(url, response.headers.get("content-length"))
            handle = stack.enter_context(tempfile.TemporaryFile(prefix="assay-corpus-"))
            for chunk in _body(url, response):
                handle.write(chunk)
            handle.seek(0)
        else:
            reader = _ChunkReader(_body(url, response))
            handle = stack.enter_context(io.BufferedReader(reader, _CHUNK))
        if compression:
            handle = stack.enter_context(fsspec.compression.compr[compression](handle, mode="rb"))
        yield handle


def _web_client() -> httpx.Client:
    # Imported here: httpx and the model layer are not loaded for local corpora (an index
    # build under a tight memory limit stays small).
    import httpx

    from assay.models.guarded_transport import checked_transport

    limits = httpx.Limits(max_connections=2, max_keepalive_connections=1)
    return httpx.Client(
        timeout=httpx.Timeout(HTTP_TIMEOUT_S, connect=HTTP_CONNECT_TIMEOUT_S),
        follow_redirects=False,
        trust_env=False,
        transport=checked_transport(limits),
        headers={"Accept-Encoding": "identity"},
    )


@contextlib.contextmanager
def _web_response(client: httpx.Client, url: str, method: str) -> Iterator[httpx.Response]:
    """A streamed response with a 2xx status, else ``CorpusError`` naming the URL and why."""
    import httpx

    from assay.core.security import ForbiddenAddressError

    try:
        response = client.send(client.build_request(method, url), stream=True)
    except ForbiddenAddressError as exc:
        raise CorpusError(f"{url}: {exc}") from None
    except httpx.HTTPError as exc:
        raise CorpusError(f"{url}: cannot read: {_cause(exc)}") from None
    try:
        if response.status_code == 405 and method == "HEAD":
            pass  # the caller falls back to GET
        elif response.is_redirect:
            raise CorpusError(
                f"{url}: HTTP {response.status_code} {response.reason_phrase}: redirects are "
                "not followed; declare the URL the file is served at"
            )
        elif not response.is_success:
            raise CorpusError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
        yield response
    finally:
        response.close()


def _body(url: str, response: httpx.Response) -> Iterator[bytes]:
    """The body as served, in chunks; a failed read, or more bytes than
    :func:`web_max_bytes`, is ``CorpusError`` naming the URL."""
    import httpx

    length = response.headers.get("content-length")
    if length is not None and length.isdigit():
        _within_cap(url, int(length))
    cap, read = web_max_bytes(), 0
    try:
        for chunk in response.iter_raw(_CHUNK):
            read += len(chunk)
            if read > cap:
                raise CorpusError(
                    f"{url}: sent more than {cap} bytes, the most a web corpus file may have "
                    f"(${WEB_MAX_BYTES_ENV})"
                )
            yield chunk
    except httpx.HTTPError as exc:
        raise CorpusError(f"{url}: cannot read: {_cause(exc)}") from None


def web_max_bytes() -> int:
    """The most bytes one web corpus file may send: ``$ASSAY_CORPUS_WEB_MAX_BYTES`` (default
    64 GiB)."""
    raw = os.environ.get(WEB_MAX_BYTES_ENV, "").strip()
    if not raw:
        return WEB_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"${WEB_MAX_BYTES_ENV} must be a positive number of bytes, got {raw!r}")
    return int(raw)


def _within_cap(url: str, size: int) -> int:
    """``size`` (a served Content-Length), unless it is over :func:`web_max_bytes`."""
    cap = web_max_bytes()
    if size > cap:
        raise CorpusError(
            f"{url}: {size} bytes, more than the {cap} a web corpus file may have "
            f"(${WEB_MAX_BYTES_ENV})"
        )
    return size


def _room_for(url: str, length: str | None) -> None:
    """Refuse to spool a web file that the temporary folder has no room for (by its
    Content-Length; a body without one is bounded by :func:`web_max_bytes` as it streams)."""
    if length is None or not length.isdigit():
        return
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if int(length) > free:
        raise CorpusError(
            f"{url}: {length} bytes to read into a temporary file, and {folder} has {free} "
            "bytes free (set TMPDIR to a larger folder)"
        )


def _cause(exc: BaseException) -> str:
    """An httpx error as ``Kind: message`` (the message may be empty for timeouts)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _ChunkReader(io.RawIOBase):
    """Chunks of bytes as a raw binary file, read as they come."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def iter_file_documents(source: CorpusSource, url: str) -> Iterator[str]:
    """The documents of one corpus file."""
    try:
        if source.format == "parquet":
            yield from _parquet(url, source.text_field)
        else:
            with open_corpus_file(url, compression="infer") as handle:
                if source.format == "jsonl":
                    yield from _jsonl(url, handle, source.text_field)
                else:
                    yield from _text(url, handle)
    except FileNotFoundError:
        raise CorpusError(f"{url}: file not found") from None
    except (CorpusError, GeneratorExit):
        raise
    except OSError as exc:
        raise CorpusError(f"{url}: cannot read: {exc}") from None


def _jsonl(url: str, handle: Any, field: str) -> Iterator[str]:
    for number, raw in enumerate(_lines(url, handle), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{url}: line {number}: not valid UTF-8 ({exc.reason})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{url}: line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise CorpusError(f"{url}: line {number}: expected a JSON object")
        if field not in row:
            raise CorpusError(f"{url}: line {number}: no field {field!r}")
        text = row[field]
        if not isinstance(text, str):
            raise CorpusError(
                f"{url}: line {number}: field {field!r} is {type(text).__name__}, not a string"
            )
        yield text


def _lines(url: str, handle: Any) -> Iterator[bytes]:
    """The lines of ``handle``, each at most ``JSONL_LINE_MAX_BYTES`` (else ``CorpusError``)."""
    number = 0
    while raw := handle.readline(JSONL_LINE_MAX_BYTES + 1):
        number += 1
        if len(raw) > JSONL_LINE_MAX_BYTES:
            raise CorpusError(
                f"{url}: line {number}: longer than {JSONL_LINE_MAX_BYTES} bytes, the most a "
                "JSONL document may have"
            )
        yield raw


def _parquet(url: str, field: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_corpus_file(url, seekable=True) as handle:
        try:
            reader = pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorpusError(f"{url}: not a readable Parquet file ({exc})") from None
        schema = reader.schema_arrow
        if field not in schema.names:
            raise CorpusError(
                f"{url}: no column {field!r} (columns: {', '.join(schema.names) or 'none'})"
            )
        kind = schema.field(field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise CorpusError(f"{url}: column {field!r} is {kind}, not a string")
        row = 0
        for batch in reader.iter_batches(columns=[field], batch_size=8192):
            column = batch.column(0)
            if column.null_count:
                first = column.is_null().to_pylist().index(True)
                raise CorpusError(f"{url}: row {row + first + 1}: field {field!r} is null")
            yield from column.to_pylist()
            row += len(column)


def _text(url: str, handle: Any) -> Iterator[str]:
    reader = io.TextIOWrapper(handle, encoding="utf-8", errors="strict", newline="")
    carry = ""
    line = 1
    while True:
        try:
            chunk = reader.read(TEXT_PIECE_CHARS)
        except UnicodeDecodeError as exc:
            raise CorpusError(
                f"{url}: line {line} or after: not valid UTF-8 ({exc.reason})"
            ) from None
        if not chunk:
            if carry:
                yield carry
            return
        line += chunk.count("\n")
        text = carry + chunk
        following = reader.read(1)
        if not following:
            yield text
            return
        # Cut at the last whitespace; the next piece repeats the last words of this one.
        cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
        if cut <= 0:
            carry = text + following
            continue
        head = text[:cut]
        yield head
        carry = " ".join(_last_words(head)) + text[cut:] + following


def _last_words(text: str) -> list[str]:
    """The raw words at the end of ``text`` that hold its last ``TEXT_OVERLAP_WORDS`` normalized
    words (a word of punctuation only normalizes to nothing and does not count)."""
    from assay.contamination.normalize import normalize

    raw = text[-65536:].split()
    if len(raw) < 4 * TEXT_OVERLAP_WORDS:
        raw = text.split()
    kept: list[str] = []
    counted = 0
    for word in reversed(raw):
        kept.append(word)
        counted += bool(normalize(word))
        if counted == TEXT_OVERLAP_WORDS:
            break
    return kept[::-1]
