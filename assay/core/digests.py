"""Stable content digests for datasets, prompts, requests, models and code."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any


def digest_bytes(data: bytes) -> str:
    """Hex SHA-256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()


def digest_json(value: Any) -> str:
    """Hex SHA-256 of a JSON value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return digest_bytes(text.encode("utf-8"))


def digest_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def seed_from(*parts: Any) -> int:
    """A 64-bit seed derived from data, so randomness is the same on every run."""
    return int(digest_json([str(p) for p in parts])[:16], 16)


def sample_seed(base_seed: int, decoding_digest: str, sample: int) -> int:
    """The seed of one sample: from the adapter's seed, the request's decoding digest and the
    sample index, reduced to 31 bits so every backend takes it (llama.cpp's is unsigned 32-bit
    with 0xFFFFFFFF meaning "random"; OpenAI-compatible servers take a signed integer)."""
    return int(digest_json([int(base_seed), decoding_digest, int(sample)])[:16], 16) % (2**31)


def memoized_file_digest(path: Path, cache_dir: Path) -> str:
    """SHA-256 of a file, remembered in a sidecar under ``cache_dir/digests`` by size and mtime.

    Model files are hundreds of MB; hashing them on every client construction would cost
    seconds, so the digest is recomputed only when the file's size or mtime changes.
    """
    path = path.resolve()
    stat = path.stat()
    stamp = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecar = cache_dir / "digests" / f"{digest_json(str(path))}.json"
    try:
        memo = json.loads(sidecar.read_text())
        if {k: memo.get(k) for k in stamp} == stamp and isinstance(memo.get("sha256"), str):
            return memo["sha256"]
    except (OSError, ValueError):
        pass  # absent or unreadable sidecar: recompute
    digest = digest_file(path)
    write_text_atomic(sidecar, json.dumps({**stamp, "sha256": digest}))
    return digest


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file through a temporary name, so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
