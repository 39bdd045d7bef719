"""Corpora read over HTTP: a real uvicorn server on 127.0.0.1 serves the files, and every read
(size, digest, documents) goes through the address-checking transport.

Expected documents are the texts the test wrote; the expected digest is computed here by hand
from the file's bytes (format, field, size, bytes), independently of ``corpus_digest``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from controlled_resolver import ControlledResolver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from assay.contamination.corpus import (
    CorpusError,
    CorpusSource,
    corpus_digest,
    corpus_files,
    iter_documents,
)
from assay.contamination.ngram_index import build_index
from assay.registry.training_data import check_corpus_url
from assay.serving import asgi_in_background

# Enough lines that the file spans several 1 MiB reads (about 2.4 MB).
TEXTS = [
    f"document {i} says " + " ".join(f"w{(i * 7 + k) % 997}" for k in range(30))
    for i in range(9000)
]


def _file_server(folder: Path, seen: list[tuple[str, str, dict[str, str]]]) -> Starlette:
    async def serve(request: Request) -> Response:
        seen.append((request.method, request.url.path, dict(request.headers)))
        name = request.path_params["name"]
        if name == "moved.jsonl":
            return RedirectResponse("/c.jsonl", status_code=302)
        if name == "cut.jsonl":  # promises 10 MB, sends one line, then the connection drops
            line = json.dumps({"text": "first"}).encode() + b"\n"
            return Response(line, headers={"content-length": str(10_000_000)})
        if name.startswith("endless."):  # no Content-Length; 64 MB sent unless the client stops
            line = json.dumps({"text": "again " * 100}).encode() + b"\n"

            def lines():
                for _ in range(64_000_000 // len(line)):
                    yield line * 100

            return StreamingResponse(lines())
        if name == "declared.jsonl":  # a Content-Length of a terabyte (the body is never sent)
            return Response(b"", headers={"content-length": str(10**12)})
        path = folder / name
        if not path.is_file():
            return PlainTextResponse("nothing here", status_code=404)
        return FileResponse(path)

    return Starlette(routes=[Route("/files/{name}", serve, methods=["GET"])])


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    lines = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS)
    (folder / "c.jsonl").write_text(lines, encoding="utf-8")
    (folder / "c.jsonl.gz").write_bytes(gzip.compress(lines.encode("utf-8"), mtime=0))
    pq.write_table(pa.table({"text": TEXTS[:3000]}), folder / "c.parquet", row_group_size=1000)
    (folder / "t.txt").write_text("one line\nand another\n", encoding="utf-8")
    seen: list[tuple[str, str, dict[str, str]]] = []
    with asgi_in_background(_file_server(folder, seen)) as running:
        yield folder, f"http://127.0.0.1:{running.port}/files", seen


def _digest_by_hand(fmt: str, field: str, data: bytes) -> str:
    return hashlib.sha256(
        f"{fmt}\0{field}\0".encode() + len(data).to_bytes(8, "little") + data
    ).hexdigest()


def test_jsonl_over_http_reads_like_the_local_file(served):
    folder, base, seen = served
    web = CorpusSource(name="c", url=f"{base}/c.jsonl", format="jsonl")
    local = CorpusSource(name="c", url=str(folder / "c.jsonl"), format="jsonl")
    assert corpus_files(web) == [f"{base}/c.jsonl"]
    assert list(iter_documents(web)) == TEXTS
    assert list(iter_documents(local)) == TEXTS
    data = (folder / "c.jsonl").read_bytes()
    assert corpus_digest(web) == _digest_by_hand("jsonl", "text", data)
    assert corpus_digest(web) == corpus_digest(local)
    # The bytes are asked for as stored, not re-encoded by the server.
    assert seen and all(h.get("accept-encoding") == "identity" for _, _, h in seen)


def test_gzip_and_parquet_and_text_over_http(served):
    folder, base, _ = served
    gz = CorpusSource(name="g", url=f"{base}/c.jsonl.gz", format="jsonl")
    assert list(iter_documents(gz)) == TEXTS
    data = (folder / "c.jsonl.gz").read_bytes()
    assert corpus_digest(gz) == _digest_by_hand("jsonl", "text", data)  # the stored bytes
    parquet = CorpusSource(name="p", url=f"{base}/c.parquet", format="parquet")
    assert list(iter_documents(parquet)) == TEXTS[:3000]
    local = CorpusSource(name="p", url=str(folder / "c.parquet"), format="parquet")
    assert corpus_digest(parquet) == corpus_digest(local)
    text = CorpusSource(name="t", url=f"{base}/t.txt", format="text")
    assert list(iter_documents(text)) == ["one line\nand another\n"]


def test_an_index_built_over_http_matches_the_local_one(served, tmp_path):
    folder, base, _ = served
    web = CorpusSource(name="p", url=f"{base}/c.parquet", format="parquet")
    local = CorpusSource(name="p", url=str(folder / "c.parquet"), format="parquet")
    from_web = build_index(web, str(tmp_path / "web"))
    from_disk = build_index(local, str(tmp_path / "disk"))
    assert from_web.digest == from_disk.digest
    assert from_web.documents == from_disk.documents == 3000
    assert from_web.bytes_read == (folder / "c.parquet").stat().st_size
    assert from_web.ngrams == from_disk.ngrams


def test_a_missing_file_names_the_url_and_the_status(served):
    _, base, _ = served
    url = f"{base}/absent.jsonl"
    source = CorpusSource(name="c", url=url, format="jsonl")
    for read in (corpus_digest, lambda s: list(iter_documents(s))):
        with pytest.raises(CorpusError) as caught:
            read(source)
        assert url in str(caught.value) and "HTTP 404" in str(caught.value)
    parquet = CorpusSource(name="p", url=f"{base}/absent.parquet", format="parquet")
    with pytest.raises(CorpusError, match=r"absent\.parquet: HTTP 404"):
        list(iter_documents(parquet))


def test_a_redirect_is_not_followed(served):
    _, base, seen = served
    source = CorpusSource(name="c", url=f"{base}/moved.jsonl", format="jsonl")
    with pytest.raises(CorpusError, match=r"moved\.jsonl: HTTP 302 .*not followed"):
        list(iter_documents(source))
    assert [path for _, path, _ in seen] == ["/files/moved.jsonl"]


def test_a_connection_cut_mid_file_is_an_error_not_a_short_corpus(served):
    _, base, _ = served
    url = f"{base}/cut.jsonl"
    source = CorpusSource(name="c", url=url, format="jsonl")
    for read in (corpus_digest, lambda s: list(iter_documents(s))):
        with pytest.raises(CorpusError) as caught:
            read(source)
        assert str(caught.value).startswith(f"{url}: cannot read: ")


def test_a_name_rebound_to_metadata_after_the_check_is_refused_at_connection(served, monkeypatch):
    # The name passes the corpus URL policy when declared (it resolves to loopback), then
    # resolves to the metadata address when the corpus is read.
    _, base, seen = served
    port = base.split(":")[2].split("/")[0]
    url = f"http://rebind.test:{port}/files/c.jsonl"
    monkeypatch.setenv("ASSAY_CORPUS_HOSTS", "rebind.test")
    resolver = ControlledResolver(monkeypatch, {"rebind.test": ["127.0.0.1", "169.254.169.254"]})
    assert check_corpus_url(url, "corpus 'c': url") == url
    source = CorpusSource(name="c", url=url, format="jsonl")
    for read in (corpus_digest, lambda s: list(iter_documents(s))):
        with pytest.raises(CorpusError) as caught:
            read(source)
        message = str(caught.value)
        assert url in message and "169.254.169.254" in message and "link-local" in message
    assert resolver.asked and resolver.asked[0] == "rebind.test"
    assert not any(a.startswith("169.254.") for a in resolver.connected)
    assert seen == []


def test_each_connection_goes_to_the_address_that_was_checked(served, monkeypatch):
    _, base, seen = served
    port = base.split(":")[2].split("/")[0]
    resolver = ControlledResolver(monkeypatch, {"pinned.test": ["127.0.0.1"]})
    source = CorpusSource(name="c", url=f"http://pinned.test:{port}/files/t.txt", format="text")
    assert list(iter_documents(source)) == ["one line\nand another\n"]
    assert resolver.connected and set(resolver.connected) == {"127.0.0.1"}
    assert {h["host"] for _, _, h in seen} == {f"pinned.test:{port}"}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_file_that_streams_past_the_cap_is_refused(served, monkeypatch, fmt):
    # A hostile (or broken) allow-listed server streams without end: the read stops at
    # $ASSAY_CORPUS_WEB_MAX_BYTES, for the digest, the documents and Parquet's temporary file.
    _, base, seen = served
    monkeypatch.setenv("ASSAY_CORPUS_WEB_MAX_BYTES", str(3_000_000))
    url = f"{base}/endless.{fmt}"
    source = CorpusSource(name="e", url=url, format=fmt)
    for read in (corpus_digest, lambda s: list(iter_documents(s))):
        with pytest.raises(CorpusError) as caught:
            read(source)
        assert str(caught.value) == (
            f"{url}: sent more than 3000000 bytes, the most a web corpus file may have "
            "($ASSAY_CORPUS_WEB_MAX_BYTES)"
        )
    assert ("GET", f"/files/endless.{fmt}") in [(m, p) for m, p, _ in seen]


def test_a_declared_size_over_the_cap_is_refused_before_the_body(served, monkeypatch):
    _, base, seen = served
    url = f"{base}/declared.jsonl"
    source = CorpusSource(name="d", url=url, format="jsonl")
    for read in (corpus_digest, lambda s: list(iter_documents(s))):
        with pytest.raises(CorpusError, match=r"declared\.jsonl: 1000000000000 bytes, more than"):
            read(source)
    # Both stopped at HEAD's Content-Length: no GET asked for the body.
    assert [m for m, _, _ in seen] == ["HEAD", "HEAD"]
    monkeypatch.setenv("ASSAY_CORPUS_WEB_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match=r"\$ASSAY_CORPUS_WEB_MAX_BYTES must be .* 'lots'"):
        corpus_digest(source)


def test_a_line_past_the_limit_is_refused_not_held(served, monkeypatch):
    # 70 MB of one line gzips to about 70 kB: read whole, it would be held in memory.
    import assay.contamination.corpus as corpus

    folder, base, _ = served
    (folder / "bomb.jsonl.gz").write_bytes(
        gzip.compress(b'{"text": "' + b"a" * 70_000_000 + b'"}\n', mtime=0)
    )
    source = CorpusSource(name="b", url=f"{base}/bomb.jsonl.gz", format="jsonl")
    with pytest.raises(CorpusError) as caught:
        list(iter_documents(source))
    assert str(caught.value) == (
        f"{base}/bomb.jsonl.gz: line 1: longer than {corpus.JSONL_LINE_MAX_BYTES} bytes, the "
        "most a JSONL document may have"
    )
    # A long line under the limit is read as it is.
    monkeypatch.setattr(corpus, "JSONL_LINE_MAX_BYTES", 80_000_000)
    assert [len(t) for t in iter_documents(source)] == [70_000_000]


def test_an_unchanged_file_is_digested_once(served, monkeypatch):
    # Each new version declares the same corpus again: while its ETag stays, the digest is
    # the one computed before, and only HEAD asks the server (no GET of the bytes).
    folder, base, seen = served
    source = CorpusSource(name="c", url=f"{base}/c.jsonl", format="jsonl")
    expected = _digest_by_hand("jsonl", "text", (folder / "c.jsonl").read_bytes())
    assert corpus_digest(source) == expected
    gets = [m for m, _, _ in seen].count("GET")
    assert gets == 1
    assert corpus_digest(source) == expected
    assert [m for m, _, _ in seen].count("GET") == gets
    assert [m for m, _, _ in seen][-1] == "HEAD"
