"""A loopback stand-in for the Hugging Face Hub, serving dataset repositories from test files.

The Hub cannot be reached from the machines these tests run on, so this server answers the
part of the Hub's HTTP API that ``huggingface_hub`` and ``datasets`` call for
``load_dataset(repo, name, revision=<commit>)`` and that assay's native loaders call for a
file's ``resolve`` URL, on 127.0.0.1 only:

- ``GET /api/datasets/<repo>/revision/<rev>`` and ``GET /api/datasets/<repo>`` (the default
  branch): the dataset's info at a revision (its commit ``sha`` and files), as
  ``HfApi.dataset_info`` / ``repo_info`` read it;
- ``GET /api/datasets/<repo>/tree/<rev>[/<dir>]`` (``recursive``) and
  ``POST /api/datasets/<repo>/paths-info/<rev>`` (form field ``paths``): the listings
  ``HfFileSystem`` reads to resolve a config's data file patterns;
- ``HEAD|GET /datasets/<repo>/resolve/<rev>/<file>``: the file, with the headers
  ``huggingface_hub`` checks (``X-Repo-Commit``, ``ETag`` and ``X-Linked-Etag`` (the git blob
  id), ``X-Linked-Size``, ``Content-Length``) and ``Range`` requests.

Each repository is served at one commit (its files' digest, so the same files give the same
commit), which its default branch ``main`` points at. Any other revision is answered as the
Hub answers a revision that does not exist (404, ``X-Error-Code: RevisionNotFound``); an
unknown repository with
``RepoNotFound`` and a missing file with ``EntryNotFound``. Every request is logged in
``requests`` (method and path) so a test can tell the Hub was actually read. The server is
bounded: 127.0.0.1 and a free port only, request bodies up to 1 MiB, a 10 s socket timeout,
and it is stopped (``stop`` or leaving the ``with`` block) by the test that started it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def git_blob_id(data: bytes) -> str:
    """A file's git blob id: SHA-1 of ``blob <size>\\0`` and its bytes (the Hub's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class HubRepo:
    """A dataset repository at one commit: path in the repository → bytes."""

    repo_id: str
    files: Mapping[str, bytes]
    commit: str = field(default="")

    def __post_init__(self) -> None:
        if not self.commit:
            listing = "".join(f"{p}\0{git_blob_id(b)}\n" for p, b in sorted(self.files.items()))
            object.__setattr__(self, "commit", hashlib.sha1(listing.encode()).hexdigest())

    @classmethod
    def from_files(cls, repo_id: str, files: Mapping[str, Path | bytes | str]) -> HubRepo:
        """A repository of local files (path in the repository → local path, or content)."""
        data = {}
        for path, source in files.items():
            if isinstance(source, Path):
                data[path] = source.read_bytes()
            else:
                data[path] = source.encode() if isinstance(source, str) else source
        return cls(repo_id, data)

    def folders(self) -> set[str]:
        out = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out

    def entry(self, path: str) -> dict[str, Any]:
        if path in self.files:
            data = self.files[path]
            return {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}
        oid = hashlib.sha1(f"tree {self.commit} {path}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def listing(self, folder: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = f"{folder}/" if folder else ""
        paths = sorted(p for p in self.files.keys() | self.folders() if p.startswith(prefix))
        if not recursive:
            paths = [p for p in paths if "/" not in p[len(prefix) :]]
        return [self.entry(p) for p in paths]


MAX_BODY = 1 << 20  # a paths-info form is a few hundred bytes
SOCKET_TIMEOUT_S = 10.0  # a client that stops talking does not hold a thread


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self._error(413, "", f"request body over {MAX_BODY} bytes", head=False)
        body = self.rfile.read(length).decode() if length else ""
        self._answer(head=False, form=parse_qs(body))

    def _answer(self, head: bool, form: Mapping[str, list[str]] | None = None) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.server.hub.requests.append((self.command, self.path))
        query = parse_qs(url.query)
        parts = path.strip("/").split("/")
        try:
            if parts[:2] == ["api", "datasets"] and len(parts) == 4:
                return self._json(_info(self._repo("/".join(parts[2:4]), "main")), head)
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6:
                repo, action, rev, rest = "/".join(parts[2:4]), parts[4], parts[5], parts[6:]
                found = self._repo(repo, rev)
                if action == "revision" and not rest:
                    return self._json(_info(found), head)
                if action == "tree":
                    recursive = query.get("recursive", ["False"])[0].lower() == "true"
                    folder = "/".join(rest)
                    if folder and folder not in found.folders():
                        raise _NotFound("EntryNotFound", f"{folder} does not exist")
                    return self._json(found.listing(folder, recursive), head)
                if action == "paths-info" and form is not None:
                    known = found.files.keys() | found.folders()
                    wanted = [p for p in (form or {}).get("paths", []) if p in known]
                    return self._json([found.entry(p) for p in wanted], head)
            if parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
                repo, rev, file = "/".join(parts[1:3]), parts[4], "/".join(parts[5:])
                return self._file(self._repo(repo, rev), file, head)
            raise _NotFound("", f"no route {self.command} {url.path}")
        except _NotFound as exc:
            self._error(404, exc.code, exc.message, head)

    def _repo(self, repo_id: str, revision: str) -> HubRepo:
        repo = self.server.hub.repos.get(repo_id)
        if repo is None:
            raise _NotFound("RepoNotFound", f"Repository not found: {repo_id}")
        if revision not in (repo.commit, "main"):
            raise _NotFound("RevisionNotFound", f"Invalid rev id: {revision}")
        return repo

    def _file(self, repo: HubRepo, file: str, head: bool) -> None:
        if file not in repo.files:
            raise _NotFound("EntryNotFound", f"Entry not found: {file}")
        data = repo.files[file]
        etag = f'"{git_blob_id(data)}"'
        status, start, end = 200, 0, len(data)
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start = int(first or 0)
            end = min(len(data), int(last) + 1) if last else len(data)
            status = 206
        body = data[start:end]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("X-Linked-Etag", etag)
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, value: Any, head: bool) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _NotFound(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _info(repo: HubRepo) -> dict[str, Any]:
    return {
        "_id": repo.commit[:24],
        "id": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": repo.commit,
        "private": False,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "lastModified": "2026-01-01T00:00:00.000Z",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "siblings": [{"rfilename": p} for p in sorted(repo.files)],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: LoopbackHub


class LoopbackHub:
    """The server on 127.0.0.1 (a free port); a context manager that stops it on exit."""

    def __init__(self, *repos: HubRepo) -> None:
        self.repos = {repo.repo_id: repo for repo in repos}
        self.requests: list[tuple[str, str]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
