"""A version's declared corpora as recorded (``training_corpora``), and their indexes.

``training_corpora`` holds, per model version, the registry manifest with each corpus's
content digest at the time it was recorded. Its data version is a digest of the
(name, corpus digest) pairs, so re-recording a version whose corpora did not change gives
the same data version (nothing downstream is stale), and a changed corpus (new bytes, hence a
new digest) gives a new one: exactly that version's ``contamination`` partitions go stale.

``corpus_index`` keeps one n-gram index per corpus digest under the store's base URL
(``<base>/corpus_index/corpus_digest=<digest>/``), built once and reused by every version
that declares the same bytes; :func:`ensure_index` never rebuilds an index that exists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import fsspec
import pyarrow as pa

from assay.contamination.corpus import CorpusSource, corpus_digest, corpus_files
from assay.contamination.ngram_index import FORMAT, MANIFEST, IndexInfo, build_index
from assay.registry.training_data import TrainingCorpus, check_corpus_url
from assay.storage.contract import (
    CORPUS_DIGEST,
    CORPUS_INDEX,
    MODEL_VERSION,
    TRAINING_CORPORA,
)
from assay.storage.parquet import ParquetStore

SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("url", pa.string()),
        ("format", pa.string()),
        ("text_field", pa.string()),
        ("digest", pa.string()),
    ]
)


class CorpusChangedError(RuntimeError):
    """A corpus's files no longer have the digest recorded for it."""


@dataclass(frozen=True, slots=True)
class DeclaredCorpus:
    """One row of ``training_corpora``: a declared corpus and its recorded digest."""

    name: str
    source: CorpusSource
    digest: str


def corpus_source(corpus: TrainingCorpus, *, check: bool = True) -> CorpusSource:
    """The index library's view of a declared corpus; ``check`` re-applies the URL policy
    (``assay.registry.training_data``) in this process, before anything reads the URL."""
    if check:
        check_corpus_url(corpus.url, f"corpus {corpus.name!r}: url")
    return CorpusSource(
        name=corpus.name, url=corpus.url, format=corpus.format, text_field=corpus.text_field
    )


def check_files(source: CorpusSource) -> None:
    """Re-check every file a folder or glob expands to: a link inside a corpus root that
    points elsewhere is refused before it is read (the URL alone cannot show it)."""
    check_corpus_url(source.url, f"corpus {source.name!r}: url")
    for url in corpus_files(source):
        if "://" not in url or url.startswith(("file://", "local://")):
            check_corpus_url(url, f"corpus {source.name!r}: file")


def declare(
    corpora: Sequence[TrainingCorpus], digest: Callable[[CorpusSource], str] = corpus_digest
) -> list[DeclaredCorpus]:
    """Each declared corpus with its digest (the files are read and hashed, streamed)."""
    out = []
    for corpus in corpora:
        source = corpus_source(corpus)
        check_files(source)
        out.append(DeclaredCorpus(corpus.name, source, digest(source)))
    return out


def declared_table(declared: Sequence[DeclaredCorpus]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "name": d.name,
                "url": d.source.url,
                "format": d.source.format,
                "text_field": d.source.text_field,
                "digest": d.digest,
            }
            for d in declared
        ],
        schema=SCHEMA,
    )


def declared_from_table(table: pa.Table) -> list[DeclaredCorpus]:
    return [
        DeclaredCorpus(
            row["name"],
            CorpusSource(
                name=row["name"],
                url=row["url"],
                format=row["format"],
                text_field=row["text_field"],
            ),
            row["digest"],
        )
        for row in table.to_pylist()
    ]


def manifest_data_version(declared: Sequence[DeclaredCorpus]) -> str:
    """The data version of a ``training_corpora`` partition (module docstring)."""
    pairs = sorted([d.name, d.digest] for d in declared)
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class RecordedCorpora:
    """A ``training_corpora`` partition as written."""

    key: str
    declared: list[DeclaredCorpus]
    url: str

    @property
    def data_version(self) -> str:
        return manifest_data_version(self.declared)

    @property
    def digests(self) -> list[str]:
        return sorted({d.digest for d in self.declared})

    def metadata(self) -> dict[str, object]:
        return {
            "corpora": {d.name: d.digest for d in self.declared},
            "num_corpora": len(self.declared),
            "path": self.url,
        }


def record_training_corpora(
    store: ParquetStore,
    key: str,
    corpora: Sequence[TrainingCorpus],
    digest: Callable[[CorpusSource], str] = corpus_digest,
) -> RecordedCorpora:
    """Digest version ``key``'s declared corpora and write its ``training_corpora``
    partition. The one write path of that table: the asset and the promotion sensor call it.
    Digests are computed before anything is written: an unreadable corpus leaves the store
    as it was."""
    declared = declare(corpora, digest)
    url = store.write(TRAINING_CORPORA, {MODEL_VERSION: key}, declared_table(declared))
    return RecordedCorpora(key, declared, url)


def read_training_corpora(store: ParquetStore, key: str) -> list[DeclaredCorpus] | None:
    """Version ``key``'s recorded corpora, or None when none were recorded."""
    where = {MODEL_VERSION: key}
    if not store.exists(TRAINING_CORPORA, where):
        return None
    return declared_from_table(store.read(TRAINING_CORPORA, where))


def find_declared(store: ParquetStore, digest: str) -> DeclaredCorpus:
    """A recorded corpus with content ``digest`` (any version's), to build its index from."""
    table = store.read_all(TRAINING_CORPORA)
    rows = [] if table is None else table.filter(pa.compute.equal(table["digest"], digest))
    if not len(rows):
        raise LookupError(
            f"corpus_index {digest[:12]}…: no recorded training_corpora row has this digest "
            "(record the version that declares it first)"
        )
    return declared_from_table(rows.select(SCHEMA.names).slice(0, 1))[0]


def index_url(store: ParquetStore, digest: str) -> str:
    """Where the index of the corpus with content ``digest`` lives (an fsspec folder URL)."""
    folder = store.partition_dir(CORPUS_INDEX, {CORPUS_DIGEST: digest})
    return folder if store.is_local else f"{store.protocol}://{folder.lstrip('/')}"


def index_exists(target: str) -> bool:
    """Whether a complete index of this library's format is at ``target``."""
    fs, root = fsspec.core.url_to_fs(target)
    try:
        manifest = json.loads(fs.cat_file(f"{root.rstrip('/')}/{MANIFEST}"))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return False
    return manifest.get("format") == FORMAT


@dataclass(frozen=True, slots=True)
class EnsuredIndex:
    """An index that exists: ``built`` when this call built it (``info`` then set)."""

    digest: str
    url: str
    built: bool
    info: IndexInfo | None = None


def ensure_index(
    store: ParquetStore, corpus: DeclaredCorpus, *, memory_mb: int = 256
) -> EnsuredIndex:
    """The index of ``corpus``, built only when no index for its digest exists (an unchanged
    corpus is never re-indexed). A corpus whose files changed since its digest was recorded
    is refused (``CorpusChangedError``) and the half-built index removed."""
    target = index_url(store, corpus.digest)
    if index_exists(target):
        return EnsuredIndex(corpus.digest, target, built=False)
    check_files(corpus.source)
    info = build_index(corpus.source, target, memory_mb=memory_mb)
    if info.digest != corpus.digest:
        fs, root = fsspec.core.url_to_fs(target)
        fs.rm(root, recursive=True)
        raise CorpusChangedError(
            f"corpus {corpus.name!r} ({corpus.source.url}) changed since it was recorded "
            f"(digest {corpus.digest[:12]}…, now {info.digest[:12]}…); record the version's "
            "training_corpora again"
        )
    return EnsuredIndex(corpus.digest, target, built=True, info=info)
