"""Corpus n-gram index: build throughput, size on disk, lookup throughput, and the references.

One synthetic corpus (JSONL, Zipf-distributed words over a 50,000-word vocabulary, some
capitalized or followed by a comma, documents of 100-10,000 words; deterministic) of
--corpus-mb MB, then:

0. **digest**: ``corpus_digest`` reading the file, then again while its stamp is unchanged
   (what the promotion sensor pays per new version that declares the same corpus).
1. **sorted** (the structure kept, ``assay.contamination.ngram_index``): build with --workers
   processes (MB of corpus file per second of wall time, and per CPU-second of this process
   and its workers), size on disk per GB of corpus.
2. **bloom**: a Bloom filter per n-gram size over the same n-grams (sized for a 1% false-
   positive rate from the exact distinct counts, the best case: a real build would have to
   guess them first), built in one process; its size and its measured false-positive rate.
3. **lookups**: --instances instances (half windows of 40-80 words cut from corpus documents,
   half fresh text) through ``find_overlaps_many`` (all three detectors) against each
   structure: instances per second, median of --repeat runs.
4. **reference**: lm-eval's ``Janitor`` (its Python path: a set of normalized 13-gram strings,
   ``register_contaminant_python``) over the first --ref-mb MB of the corpus, and a lookup
   loop over the same instances (any 13-gram in the set): MB/s, instances/s, and the ratios.

    .venv/bin/python benchmarks/bench_contamination.py [--corpus-mb 32] [--workers 2]
        [--instances 10000] [--ref-mb 8] [--repeat 3] [--memory-mb 256]

Figures go with the load average: on a shared 2-core machine one run can be off by 30%.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from assay.contamination.corpus import CorpusSource, corpus_digest, iter_documents
from assay.contamination.ngram_index import CorpusIndex, build_index
from assay.contamination.normalize import NGRAM_SIZES, _mix, tokenize
from assay.contamination.overlap import find_overlaps_many

SEED = 2020
VOCAB = 50_000


def vocabulary() -> np.ndarray:
    rng = np.random.default_rng(SEED)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    seen: dict[str, None] = {}
    while len(seen) < VOCAB:
        seen.setdefault("".join(rng.choice(letters, size=int(rng.integers(2, 11)))), None)
    words = list(seen)
    for i in range(0, VOCAB, 13):
        words[i] = words[i].capitalize() + ","
    return np.array(words, dtype=object)


def text_stream(vocab: np.ndarray, seed: int):
    """Documents of Zipf-distributed words, forever."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, VOCAB + 1) ** 1.1)
    cdf /= cdf[-1]
    while True:
        ids = np.searchsorted(cdf, rng.random(200_000), side="right").clip(max=VOCAB - 1)
        words = vocab[ids]
        at = 0
        while at < len(words) - 10_000:
            size = int(rng.integers(100, 10_000))
            yield " ".join(words[at : at + size].tolist())
            at += size


def write_corpus(path: Path, megabytes: int, vocab: np.ndarray) -> int:
    written = 0
    with path.open("w") as f:
        for text in text_stream(vocab, SEED):
            line = json.dumps({"text": text}) + "\n"
            f.write(line)
            written += len(line)
            if written >= megabytes * 1_000_000:
                return written
    return written


def instances(source: CorpusSource, vocab: np.ndarray, count: int) -> list[str]:
    """Half windows cut from corpus documents (contaminated), half fresh text (clean)."""
    rng = np.random.default_rng(SEED + 1)
    dirty: list[str] = []
    while len(dirty) < count // 2:
        for doc in iter_documents(source):
            words = doc.split()
            for _ in range(16):
                size = int(rng.integers(40, 81))
                start = int(rng.integers(0, max(len(words) - size, 1)))
                dirty.append(" ".join(words[start : start + size]))
            if len(dirty) >= count // 2:
                break
    clean: list[str] = []
    fresh = text_stream(vocab, SEED + 2)
    while len(clean) < count - len(dirty):
        words = next(fresh).split()
        for at in range(0, len(words) - 80, 80):
            clean.append(" ".join(words[at : at + int(rng.integers(40, 81))]))
    return dirty[: count // 2] + clean[: count - count // 2]


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class BloomIndex:
    """A Bloom filter per n-gram size with the ``contains`` of :class:`CorpusIndex`."""

    def __init__(self, counts: dict[int, int], rate: float = 0.01) -> None:
        self.bits: dict[int, np.ndarray] = {}
        self.m: dict[int, int] = {}
        self.k = max(1, round(-np.log2(rate)))
        for n, count in counts.items():
            m = int(-max(count, 1) * np.log(rate) / np.log(2) ** 2) + 64
            self.m[n] = m
            self.bits[n] = np.zeros(m // 64 + 1, dtype=np.uint64)

    def _positions(self, n: int, hashes: np.ndarray) -> list[np.ndarray]:
        h1 = hashes.astype(np.uint64)
        h2 = _mix(h1 ^ np.uint64(0x5851F42D4C957F2D)) | np.uint64(1)
        m = np.uint64(self.m[n])
        out = []
        with np.errstate(over="ignore"):
            for i in range(self.k):
                out.append((h1 + np.uint64(i) * h2) % m)
        return out

    def add(self, n: int, hashes: np.ndarray) -> None:
        for pos in self._positions(n, hashes):
            np.bitwise_or.at(
                self.bits[n], pos >> np.uint64(6), np.uint64(1) << (pos & np.uint64(63))
            )

    def contains(self, n: int, hashes: np.ndarray) -> np.ndarray:
        found = np.ones(len(hashes), dtype=bool)
        for pos in self._positions(n, np.asarray(hashes, dtype=np.uint64)):
            word = self.bits[n][pos >> np.uint64(6)]
            found &= (word >> (pos & np.uint64(63))) & np.uint64(1) == np.uint64(1)
        return found

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.bits.values())


def build_bloom(source: CorpusSource, counts: dict[int, int]) -> BloomIndex:
    bloom = BloomIndex(counts)
    batch: list[str] = []
    chars = 0

    def flush() -> None:
        tokens = tokenize(batch)
        for n in NGRAM_SIZES:
            hashes, valid = tokens.ngram_hashes(n)
            bloom.add(n, hashes[valid])

    for doc in iter_documents(source):
        batch.append(doc)
        chars += len(doc)
        if chars >= 4 << 20:
            flush()
            batch, chars = [], 0
    if batch:
        flush()
    return bloom


def janitor_reference(source: CorpusSource, megabytes: float):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from lm_eval.decontamination.janitor import Janitor, word_ngrams
    janitor = Janitor(ngram_n=13)
    read = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for doc in iter_documents(source):
        janitor.register_contaminant_python(doc)
        read += len(doc.encode())
        if read >= megabytes * 1_000_000:
            break
    seconds = time.perf_counter() - start
    cpu = time.process_time() - start_cpu

    def lookup(texts: list[str]) -> list[bool]:
        dirt = janitor.dirt_ngrams
        return [any(g in dirt for g in word_ngrams(janitor.normalize_string(t), 13)) for t in texts]

    return read, seconds, cpu, lookup, len(janitor.dirt_ngrams)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus-mb", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=256)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--ref-mb", type=float, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-bloom", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-contamination-"))
    try:
        vocab = vocabulary()
        corpus = work / "corpus.jsonl"
        size = write_corpus(corpus, args.corpus_mb, vocab)
        source = CorpusSource(name="synthetic", url=str(corpus), format="jsonl")
        mb = size / 1e6
        gb = size / 1e9
        print(f"corpus: {mb:.0f} MB JSONL, load average {os.getloadavg()[0]:.1f} at start")

        # 0. the digest, read in full, then again with the file unchanged (a new version that
        # declares the same corpus: what the promotion sensor does per version)
        aged = time.time() - 60  # past the "racy" window of a file written just now
        os.utime(corpus, (aged, aged))
        before = time.perf_counter()
        digest = corpus_digest(source)
        read_s = time.perf_counter() - before
        before = time.perf_counter()
        assert corpus_digest(source) == digest
        again_s = time.perf_counter() - before
        print(
            f"digest: read in full {read_s:.2f} s ({mb / read_s:.0f} MB/s); again, unchanged "
            f"{again_s * 1e3:.2f} ms ({read_s / again_s:,.0f}x less)"
        )

        # 1. sorted arrays (kept)
        walls, cpus = [], []
        for _ in range(args.repeat):
            target = work / "index"
            before_cpu, before = cpu_seconds(), time.perf_counter()
            info = build_index(source, str(target), memory_mb=args.memory_mb, workers=args.workers)
            walls.append(time.perf_counter() - before)
            cpus.append(cpu_seconds() - before_cpu)
        disk = sum(p.stat().st_size for p in (work / "index").iterdir())
        wall = statistics.median(walls)
        print(
            f"sorted build ({args.workers} workers, memory_mb {args.memory_mb}, median of "
            f"{args.repeat}): {mb / wall:.1f} MB/s wall, {mb / statistics.median(cpus):.1f} MB "
            f"per CPU-second; distinct n-grams {info.ngrams}; "
            f"on disk {disk / 1e9 / gb:.2f} GB per GB of corpus"
        )
        index = CorpusIndex.open(str(work / "index"))

        # 3. lookups through the detectors
        texts = instances(source, vocab, args.instances)

        def rate(structure) -> tuple[float, float, list]:
            """Instances per second of wall time and of CPU time (medians of --repeat)."""
            walls, cpus, result = [], [], None
            for _ in range(args.repeat):
                start, start_cpu = time.perf_counter(), time.process_time()
                result = find_overlaps_many(texts, structure)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - start_cpu)
            count = len(texts)
            return count / statistics.median(walls), count / statistics.median(cpus), result

        sorted_rate, sorted_cpu_rate, sorted_findings = rate(index)
        flagged = sum(f[0].flagged for f in sorted_findings)
        print(
            f"sorted lookups: {sorted_rate:,.0f} instances/s wall, {sorted_cpu_rate:,.0f} per "
            f"CPU-second ({len(texts):,} instances, all three detectors; {flagged:,} flagged "
            f"by 13-grams, {len(texts) // 2:,} planted)"
        )

        # 2. Bloom filter
        if not args.no_bloom:
            before, before_cpu = time.perf_counter(), cpu_seconds()
            bloom = build_bloom(source, info.ngrams)
            bloom_wall = time.perf_counter() - before
            bloom_cpu = cpu_seconds() - before_cpu
            bloom_rate, bloom_cpu_rate, bloom_findings = rate(bloom)
            rng = np.random.default_rng(SEED + 3)
            probes = rng.integers(0, 2**63, size=1_000_000, dtype=np.int64).astype(np.uint64)
            fp = bloom.contains(13, probes[~index.contains(13, probes)]).mean()
            start = time.perf_counter()
            index.contains(13, probes)
            sorted_probe = time.perf_counter() - start
            start = time.perf_counter()
            bloom.contains(13, probes)
            bloom_probe = time.perf_counter() - start
            differ = sum(
                a[1].flagged != b[1].flagged
                for a, b in zip(sorted_findings, bloom_findings, strict=True)
            )
            print(
                f"bloom (1% target, k={bloom.k}, one process): build {mb / bloom_wall:.1f} MB/s "
                f"wall, {mb / bloom_cpu:.1f} MB per CPU-second; "
                f"{bloom.nbytes() / 1e9 / gb:.2f} GB per GB of corpus; measured false "
                f"positives {fp:.2%}; lookups {bloom_rate:,.0f} instances/s wall, "
                f"{bloom_cpu_rate:,.0f} per CPU-second; PaLM verdicts "
                f"differing from the exact index: {differ}"
            )
            print(
                f"raw 13-gram lookups, 1e6 random hashes: sorted {1 / sorted_probe:.2f} M/s, "
                f"bloom {1 / bloom_probe:.2f} M/s"
            )
            print(
                f"ratio sorted/bloom: build {bloom_wall / wall:.2f}x (sorted with "
                f"{args.workers} workers), size {disk / bloom.nbytes():.2f}x, lookups "
                f"{sorted_rate / bloom_rate:.2f}x wall, {sorted_cpu_rate / bloom_cpu_rate:.2f}x CPU"
            )

        # 4. reference: lm-eval's Janitor set of 13-gram strings
        read, seconds, ref_build_cpu, lookup, ngrams = janitor_reference(source, args.ref_mb)
        start, start_cpu = time.perf_counter(), time.process_time()
        ref_flags = lookup(texts)
        ref_seconds = time.perf_counter() - start
        ref_cpu = time.process_time() - start_cpu
        print(
            f"reference (lm-eval Janitor, Python set of 13-gram strings, {read / 1e6:.0f} MB, "
            f"{ngrams:,} 13-grams): build {read / 1e6 / seconds:.1f} MB/s wall, "
            f"{read / 1e6 / ref_build_cpu:.1f} MB per CPU-second; lookups "
            f"{len(texts) / ref_seconds:,.0f} instances/s wall, {len(texts) / ref_cpu:,.0f} per "
            f"CPU-second ({sum(ref_flags):,} flagged against its smaller corpus)"
        )
        print(
            f"ratio sorted/reference: build {(mb / wall) / (read / 1e6 / seconds):.2f}x wall, "
            f"{(mb / statistics.median(cpus)) / (read / 1e6 / ref_build_cpu):.2f}x CPU; "
            f"lookups {sorted_rate / (len(texts) / ref_seconds):.2f}x wall, "
            f"{sorted_cpu_rate / (len(texts) / ref_cpu):.2f}x CPU (three detectors vs "
            f"13-grams only); load average {os.getloadavg()[0]:.1f} at end"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
