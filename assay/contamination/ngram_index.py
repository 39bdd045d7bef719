"""The n-gram index of a corpus: every distinct hashed n-gram, built once, streamed, on disk.

Structure: for each n in :data:`~assay.contamination.normalize.NGRAM_SIZES` (8, 11, 13) one
file of the corpus's distinct n-gram hashes (:mod:`~assay.contamination.normalize`), sorted,
as raw little-endian uint64, with a fence file of every 64th hash. A lookup sorts the query
hashes and binary-searches the memory-mapped file (``np.searchsorted``; from 16M hashes on,
the fence, held in memory, first narrows each query to 64 hashes, one page). An answer is
exact up to 64-bit hash collisions.

Build (external sort, so a corpus larger than memory is fine): documents are read in batches
and hashed; in this process, the hashes are buffered up to a quarter of ``memory_mb``, then
sorted, deduplicated and spilled as a run to a local temporary folder; with ``workers``
spawned processes, each takes a batch of about ``memory_mb / (12 * workers)`` characters and
writes its runs itself. At the end the runs of each n are merged k ways (at most 128 at a
time, in chunks; the sizes in parallel) into the final file. Only bounded buffers
are ever in memory and runs are read with plain reads, never mapped: the test builds the
index of a corpus three times its process's ``RLIMIT_DATA`` (80 MiB, ``memory_mb=8``).

Why sorted arrays and not a Bloom filter. Measured by ``benchmarks/bench_contamination.py``
(synthetic Zipf-word corpus; shared 2-core machine; sorted build with 2 workers, the Bloom
filter filled with NumPy in one process, 1% false positives, k=7):

=========================  =========================  =========================
32 MB, load 2.5, median 3  sorted arrays              Bloom filter
=========================  =========================  =========================
build                      12.9 MB/s                  8.7 MB/s
size per GB of corpus      3.57 GB                    0.53 GB (6.8x smaller)
instances/s, 3 detectors   17,200                     18,000
raw 13-gram probes         8.0 M/s                    10.9 M/s (1.00% false)
=========================  =========================  =========================

At 1 GB (load 1.9) the sorted build ran at 15.1 MB/s and 12,000 instances/s. In a 1 GB run
under load ~13 the Bloom build fell to 1.5 MB/s against 7.7 for the sorted one (its 540 MB
of bits no longer fit in any cache: every insert is a cache miss), with lookups 1.2x the
sorted arrays' (before the fence). We keep the sorted arrays: they are exact, they
stream with bounded memory (a Bloom filter must be sized before the corpus is read and held
whole while it is filled: a corpus larger than memory needs a filter larger than memory),
they merge, and their lookups are as fast. A Bloom filter's 1% "maybe" is about one false
8-gram in every three 40-word instances, enough to move PaLM's 70% rule or Llama 2's
thresholds on borderline items. The price is disk: 8 bytes per distinct n-gram and size.

Layout of the target folder (any fsspec URL; written atomically): ``manifest.json`` (the
:class:`IndexInfo` and the files of each n), ``ngrams-<n>-<build id>.u64`` and
``fence-<n>-<build id>.u64``. A local target is
built in a temporary sibling folder and renamed into place; elsewhere the data files (new
names per build) are uploaded first and ``manifest.json`` last, in one PUT, so a reader sees
the old index or the new one, never a mix. :meth:`CorpusIndex.open` maps local files directly
and copies remote ones to a local temporary folder first.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import fsspec
import numpy as np

from assay.contamination.corpus import CorpusSource, corpus_digest, iter_file_documents, iter_files
from assay.contamination.normalize import NGRAM_SIZES, sorted_unique, tokenize

FORMAT = "assay-ngram-index/1"
STRUCTURE = "sorted-uint64"
MANIFEST = "manifest.json"
_DTYPE = np.dtype("<u8")
# Every FENCE_STRIDE-th hash of each file is kept in memory: a lookup finds its block there
# and binary-searches 512 bytes of the mapped file (one page) instead of ~log2(N) pages;
# 64 measured twice as fast as plain searchsorted on 150M hashes, 256 only 1.3 times.
FENCE_STRIDE = 64
# Below this many hashes plain searchsorted is faster (measured: 2.5x at 1M-4M hashes, even
# at 16M, the fence 2x faster at 150M).
_FENCE_FROM = 1 << 24
_SMALL_CORPUS = 32_000_000  # bytes: indexed in this process unless workers are asked for


class CorpusIndexError(LookupError):
    """An index folder is missing, incomplete or of another format."""


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds and where: the corpus digest, documents read, bytes of corpus
    files read (as stored: compressed files count compressed), distinct n-grams per n, the
    structure (``sorted-uint64``) and the target URL."""

    digest: str
    documents: int
    bytes_read: int
    ngrams: dict[int, int]
    structure: str
    path: str


def build_index(
    source: CorpusSource,
    target: str,
    *,
    memory_mb: int = 256,
    workers: int | None = None,
    sizes: Sequence[int] = NGRAM_SIZES,
    digest: str | None = None,
) -> IndexInfo:
    """Index every n-gram (n in ``sizes``) of the corpus into the fsspec folder ``target``.

    ``memory_mb`` bounds the buffers (batches, runs, merge chunks). ``workers`` processes hash
    the batches and merge the sizes (default: up to 2 of the CPUs, none for under 32 MB of
    files; 0 or 1: this process). ``digest``: the source's :func:`corpus_digest` when the
    caller has just computed it (saves a pass over the bytes). Workers are spawned: a script
    that builds at import time needs the usual ``if __name__ == "__main__":`` guard.
    """
    if memory_mb < 8:
        raise ValueError(f"memory_mb must be at least 8, got {memory_mb}")
    sizes = tuple(sorted(set(sizes)))
    digest = digest or corpus_digest(source)
    build_id = digest[:12] + "-" + uuid.uuid4().hex[:8]
    fs, root = fsspec.core.url_to_fs(target)
    root = root.rstrip("/")
    local = _is_local(fs)
    scratch = Path(tempfile.mkdtemp(prefix="assay-ngram-index-"))
    # A local index is written straight into a staging folder beside the target, then renamed.
    out = Path(root).parent / f".{Path(root).name}.{build_id}.tmp" if local else scratch / "out"
    try:
        if workers is None:  # worker processes take a second or two to start: not for small
            small = sum(size for _, size in iter_files(source)) < _SMALL_CORPUS
            count = 1 if small else min(2, os.cpu_count() or 1)
        else:
            count = workers
        # Spawned, not forked: the caller may hold threads (Dagster does), and a fork copies
        # their locks in whatever state they are.
        pool = (
            ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("spawn"))
            if count > 1
            else None
        )
        try:
            documents, bytes_read, runs = _spill_runs(
                source, scratch, sizes, memory_mb, pool, count
            )
            out.mkdir(parents=True)
            files = {n: f"ngrams-{n}-{build_id}.u64" for n in sizes}
            args = [
                (runs[n], out / files[n], out / f"fence-{n}-{build_id}.u64", memory_mb // count)
                for n in sizes
            ]
            if pool is None:
                counts = {n: _merge_and_fence(*a) for n, a in zip(sizes, args, strict=True)}
            else:  # the sizes merge in parallel, each with its share of the memory
                merged = pool.map(_merge_and_fence, *zip(*args, strict=True))
                counts = dict(zip(sizes, merged, strict=True))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        info = IndexInfo(
            digest=digest,
            documents=documents,
            bytes_read=bytes_read,
            ngrams=counts,
            structure=STRUCTURE,
            path=target,
        )
        manifest = {
            "format": FORMAT,
            **asdict(info),
            "ngrams": {str(n): c for n, c in counts.items()},
            "files": {str(n): f for n, f in files.items()},
            "fences": {str(n): f"fence-{n}-{build_id}.u64" for n in files},
            "fence_stride": FENCE_STRIDE,
        }
        del manifest["path"]
        text = json.dumps(manifest, indent=1, sort_keys=True)
        if local:
            (out / MANIFEST).write_text(text)
            _swap_in(out, Path(root))
        else:
            _upload(fs, out, text, root)
        return info
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if local:
            shutil.rmtree(out, ignore_errors=True)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols


# -- build: batches → sorted runs ---------------------------------------------------------


def _batches(source: CorpusSource, batch_chars: int) -> Iterator[tuple[list[str], int]]:
    """``(documents, file bytes finished since the last batch)``, about batch_chars each."""
    batch: list[str] = []
    chars = 0
    done = 0
    for url, size in iter_files(source):
        for text in iter_file_documents(source, url):
            batch.append(text)
            chars += len(text)
            if chars >= batch_chars:
                yield batch, done
                batch, chars, done = [], 0, 0
        done += size
    yield batch, done


def _hash_batch(texts: list[str], sizes: tuple[int, ...]) -> list[np.ndarray]:
    """The batch's n-gram hashes per size, as they come."""
    tokens = tokenize(texts)
    out = []
    for n in sizes:
        hashes, valid = tokens.ngram_hashes(n)
        out.append(hashes[valid])
    return out


def _runs_of_task(
    texts: list[str], sizes: tuple[int, ...], scratch: str, tag: int, piece_chars: int
) -> list[str]:
    """In a worker: hash ``texts`` piece by piece, write one sorted distinct run per size."""
    hashes: dict[int, list[np.ndarray]] = {n: [] for n in sizes}
    start = 0
    while start < len(texts):
        stop, chars = start, 0
        while stop < len(texts) and chars < piece_chars:
            chars += len(texts[stop])
            stop += 1
        for n, arr in zip(sizes, _hash_batch(texts[start:stop], sizes), strict=True):
            hashes[n].append(arr)
        start = stop
    paths = []
    for n in sizes:
        path = os.path.join(scratch, f"run-{n}-t{tag:06d}.u64")
        sorted_unique(np.concatenate(hashes.pop(n))).tofile(path)
        paths.append(path)
    return paths


def _spill_runs(
    source: CorpusSource,
    scratch: Path,
    sizes: tuple[int, ...],
    memory_mb: int,
    pool: ProcessPoolExecutor | None,
    count: int = 1,
) -> tuple[int, int, dict[int, list[Path]]]:
    budget = memory_mb * (1 << 20) // 4  # bytes of buffered hashes before a spill
    # A batch of c characters yields at most ~c/2 words, 8 bytes per n-gram per n, and the
    # tokenizer holds ~40 bytes per character at its peak: keep it a small share of the budget.
    batch_chars = max(64 * 1024, min(4 << 20, memory_mb * (1 << 20) // 96))
    runs: dict[int, list[Path]] = {n: [] for n in sizes}
    buffers: dict[int, list[np.ndarray]] = {n: [] for n in sizes}
    buffered = 0
    documents = 0
    bytes_read = 0

    def take(arrays: list[np.ndarray]) -> None:
        nonlocal buffered
        for n, arr in zip(sizes, arrays, strict=True):
            buffers[n].append(arr)
            buffered += arr.nbytes
        if buffered >= budget:
            spill()

    def spill() -> None:
        nonlocal buffered
        for n in sizes:
            if not buffers[n]:
                continue
            merged = sorted_unique(np.concatenate(buffers[n]))
            buffers[n] = []
            path = scratch / f"run-{n}-{len(runs[n]):05d}.u64"
            merged.astype(_DTYPE, copy=False).tofile(path)
            runs[n].append(path)
            del merged
        buffered = 0

    if pool is None:
        for texts, done in _batches(source, batch_chars):
            documents += len(texts)
            bytes_read += done
            if texts:
                take(_hash_batch(texts, sizes))
    else:
        # Each worker takes a large batch, hashes it in small pieces, and writes its sorted
        # runs itself: this process only reads documents (it was the bottleneck when it
        # merged the workers' hashes), and there are few runs to merge.
        task_chars = max(batch_chars, min(64 << 20, memory_mb * (1 << 20) // (12 * count)))
        pending: list[Future] = []
        tags = itertools.count()
        for texts, done in _batches(source, task_chars):
            documents += len(texts)
            bytes_read += done
            if texts:
                args = (texts, sizes, str(scratch), next(tags), batch_chars)
                pending.append(pool.submit(_runs_of_task, *args))
            while len(pending) > count or (pending and pending[0].done()):
                for n, path in zip(sizes, pending.pop(0).result(), strict=True):
                    runs[n].append(Path(path))
        for future in pending:
            for n, path in zip(sizes, future.result(), strict=True):
                runs[n].append(Path(path))
    spill()
    return documents, bytes_read, runs


# -- build: k-way merge ------------------------------------------------------------------


class _RunReader:
    def __init__(self, path: Path, chunk: int) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115 - closed when exhausted
        self.chunk = chunk
        self.buf = np.zeros(0, dtype=_DTYPE)
        self.refill()

    def refill(self) -> None:
        self.buf = np.fromfile(self.handle, dtype=_DTYPE, count=self.chunk)
        if not len(self.buf):
            self.handle.close()


def _merge_runs(runs: list[Path], out: Path, memory_mb: int, fan_in: int = 128) -> int:
    """Merge sorted unique runs into one sorted unique file; returns its length."""
    if not runs:
        out.write_bytes(b"")
        return 0
    while len(runs) > fan_in:  # merge in passes so each pass holds at most fan_in readers
        merged = []
        for i in range(0, len(runs), fan_in):
            group = runs[i : i + fan_in]
            path = group[0].with_suffix(f".m{i}.u64")
            _merge_group(group, path, memory_mb)
            for p in group:
                p.unlink()
            merged.append(path)
        runs = merged
    return _merge_group(runs, out, memory_mb)


def _merge_group(runs: list[Path], out: Path, memory_mb: int) -> int:
    if len(runs) == 1:
        shutil.move(runs[0], out)
        return out.stat().st_size // 8
    chunk = max(4096, memory_mb * (1 << 20) // 4 // (8 * len(runs)))
    readers = [r for r in (_RunReader(p, chunk) for p in runs) if len(r.buf)]
    written = 0
    last: int | None = None
    with open(out, "wb") as sink:
        while readers:
            bound = min(r.buf[-1] for r in readers)
            parts = []
            for r in readers:
                k = int(np.searchsorted(r.buf, bound, side="right"))
                parts.append(r.buf[:k])
                r.buf = r.buf[k:]
                if not len(r.buf):
                    r.refill()
            merged = sorted_unique(np.concatenate(parts), runs=True)
            if last is not None and len(merged) and merged[0] == last:
                merged = merged[1:]
            if len(merged):
                merged.tofile(sink)
                written += len(merged)
                last = int(merged[-1])
            readers = [r for r in readers if len(r.buf)]
    return written


def _merge_and_fence(runs: list[Path], out: Path, fence: Path, memory_mb: int) -> int:
    count = _merge_runs(runs, out, max(memory_mb, 4))
    _write_fence(out, fence)
    return count


def _write_fence(path: Path, fence: Path) -> None:
    """Every FENCE_STRIDE-th hash of the sorted file ``path``, read sequentially."""
    with open(path, "rb") as source, open(fence, "wb") as sink:
        while len(chunk := np.fromfile(source, dtype=_DTYPE, count=FENCE_STRIDE * 4096)):
            chunk[::FENCE_STRIDE].tofile(sink)


# -- publishing and opening --------------------------------------------------------------


def _swap_in(staging: Path, final: Path) -> None:
    """Replace the folder ``final`` by ``staging`` (same filesystem) with renames."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.parent / f".{final.name}.{uuid.uuid4().hex}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _upload(fs: fsspec.AbstractFileSystem, built: Path, manifest: str, root: str) -> None:
    """Data files first (new names), the manifest last in one PUT, then the replaced files."""
    previous = set()
    if fs.exists(f"{root}/{MANIFEST}"):
        previous = {p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)} - {MANIFEST}
    fs.makedirs(root, exist_ok=True)
    for path in sorted(built.iterdir()):
        fs.put_file(str(path), f"{root}/{path.name}")
    fs.pipe_file(f"{root}/{MANIFEST}", manifest.encode())
    for name in previous - {p.name for p in built.iterdir()}:
        if fs.exists(f"{root}/{name}"):
            fs.rm(f"{root}/{name}")


class CorpusIndex:
    """A built index, opened read-only; :meth:`contains` answers membership of n-gram hashes."""

    def __init__(
        self, info: IndexInfo, arrays: dict[int, np.ndarray], fences: dict[int, np.ndarray]
    ) -> None:
        self.info = info
        self._arrays = arrays
        self._fences = fences

    @property
    def sizes(self) -> tuple[int, ...]:
        """The n-gram sizes this index holds."""
        return tuple(sorted(self._arrays))

    @classmethod
    def open(cls, target: str) -> CorpusIndex:
        """Open the index at the fsspec folder ``target`` (remote files are copied locally)."""
        fs, root = fsspec.core.url_to_fs(target)
        root = root.rstrip("/")
        try:
            manifest = json.loads(fs.cat_file(f"{root}/{MANIFEST}"))
        except FileNotFoundError:
            raise CorpusIndexError(f"{target}: no index here (no {MANIFEST})") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorpusIndexError(f"{target}/{MANIFEST}: not valid JSON ({exc})") from None
        if manifest.get("format") != FORMAT:
            raise CorpusIndexError(
                f"{target}/{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}"
            )
        local = _is_local(fs)
        scratch = None
        if not local:
            scratch = tempfile.mkdtemp(prefix="assay-ngram-open-")
        arrays: dict[int, np.ndarray] = {}
        fences: dict[int, np.ndarray] = {}
        stride = int(manifest["fence_stride"])
        if stride != FENCE_STRIDE:
            raise CorpusIndexError(f"{target}: fence stride {stride}, expected {FENCE_STRIDE}")
        for key, name in manifest["files"].items():
            n, count = int(key), int(manifest["ngrams"][key])
            path = f"{root}/{name}"
            fence = manifest["fences"][key]
            if local:
                fence_path = f"{root}/{fence}"
            else:
                path, fence_path = (
                    _fetch(fs, f"{root}/{f}", scratch, target) for f in (name, fence)
                )
            arrays[n] = _map(path, count, target, name)
            fences[n] = _map(fence_path, -(-count // stride), target, fence)
        info = IndexInfo(
            digest=manifest["digest"],
            documents=int(manifest["documents"]),
            bytes_read=int(manifest["bytes_read"]),
            ngrams={int(k): int(v) for k, v in manifest["ngrams"].items()},
            structure=manifest["structure"],
            path=target,
        )
        index = cls(info, arrays, {n: np.array(f) for n, f in fences.items()})
        if scratch is not None:
            weakref.finalize(index, shutil.rmtree, scratch, True)
        return index

    def sorted_hashes(self, n: int) -> Iterator[np.ndarray]:
        """The index's n-gram hashes in ascending order (one memory-mapped array)."""
        yield self._arrays[n]

    def contains(self, n: int, hashes: np.ndarray) -> np.ndarray:
        """For each uint64 n-gram hash, whether the corpus holds that n-gram."""
        if n not in self._arrays:
            raise KeyError(f"this index holds n-grams of sizes {self.sizes}, not {n}")
        table = self._arrays[n]
        queries = np.asarray(hashes, dtype=np.uint64)
        found = np.zeros(len(queries), dtype=bool)
        if not len(table) or not len(queries):
            return found
        order = np.argsort(queries)
        ordered = queries[order]
        if len(table) < _FENCE_FROM:
            at = np.minimum(np.searchsorted(table, ordered), len(table) - 1)
            hit = table[at] == ordered
        else:
            hit = _fenced_search(table, self._fences[n], ordered)
        found[order] = hit
        return found


def _fenced_search(table: np.ndarray, fence: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Membership of sorted queries: the block from the in-memory fence, then a vectorized
    binary search inside the block (every query one step at a time, one gather a step)."""
    last = len(table) - 1
    block = np.searchsorted(fence, ordered, side="right").astype(np.int64) - 1
    inside = block >= 0  # smaller than the smallest hash: absent
    lo = np.where(inside, block * FENCE_STRIDE, 0)
    hi = np.where(inside, np.minimum(lo + FENCE_STRIDE, len(table)), 0)
    for _ in range(FENCE_STRIDE.bit_length()):
        mid = (lo + hi) >> 1
        active = lo < hi
        right = active & (table[np.minimum(mid, last)] < ordered)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    return inside & (table[np.minimum(lo, last)] == ordered)


def _fetch(fs: fsspec.AbstractFileSystem, path: str, scratch: str, target: str) -> str:
    name = path.rsplit("/", 1)[-1]
    dest = os.path.join(scratch, name)
    try:
        fs.get_file(path, dest)
    except FileNotFoundError:
        raise CorpusIndexError(f"{target}: {name} is missing") from None
    return dest


def _map(path: str, count: int, target: str, name: str) -> np.ndarray:
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise CorpusIndexError(f"{target}: {name} is missing") from None
    if size != count * 8:
        raise CorpusIndexError(
            f"{target}: {name} holds {size} bytes, the manifest says {count} n-grams"
        )
    if count == 0:
        return np.zeros(0, dtype=_DTYPE)
    return np.memmap(path, dtype=_DTYPE, mode="r", shape=(count,))
