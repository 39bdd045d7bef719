"""The corpus n-gram index and the published overlap detectors (GPT-3, PaLM, Llama 2).

Expected values come from hand reasoning about which windows survive an edit, and from a
plain Python set of normalized n-gram strings (no hashing) as the reference index.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import time
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.contamination.corpus import (
    CorpusError,
    CorpusSource,
    corpus_digest,
    iter_documents,
)
from assay.contamination.ngram_index import CorpusIndex, CorpusIndexError, build_index
from assay.contamination.normalize import NGRAM_SIZES, normalize, tokenize, words
from assay.contamination.overlap import DETECTORS, find_overlaps, find_overlaps_many

DATASETS = Path(__file__).resolve().parent / "fixtures" / "datasets"


def _jsonl(path: Path, texts: list[str], field: str = "text") -> None:
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))


def _index(tmp_path: Path, texts: list[str], name: str = "idx") -> CorpusIndex:
    corpus = tmp_path / f"{name}.jsonl"
    _jsonl(corpus, texts)
    source = CorpusSource(name=name, url=str(corpus), format="jsonl")
    build_index(source, str(tmp_path / name), workers=1)
    return CorpusIndex.open(str(tmp_path / name))


def _by_detector(findings):
    return {f.detector: f for f in findings}


def _read(path: Path, field: str) -> list[str]:
    return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]


# -- normalization -------------------------------------------------------------------------


def test_normalization_is_lm_evals_janitor():
    text = "Don't STOP: the well-known Café—ÉTÉ costs $3.50!\u00a0Ok\tthen"
    # By hand: ASCII letters lowered, ASCII punctuation deleted, Unicode whitespace splits;
    # "É" and the em dash are not ASCII and stay.
    assert words(text) == [
        "dont", "stop", "the", "wellknown", "café—ÉtÉ", "costs", "350", "ok", "then"
    ]  # fmt: skip
    assert normalize("A-B.c") == "abc"
    # lm-eval's own table (the Janitor's) gives the same string.
    table = str.maketrans(
        string.ascii_lowercase + string.ascii_uppercase,
        string.ascii_lowercase * 2,
        string.punctuation,
    )
    assert normalize(text) == text.translate(table)


def test_hashes_are_stable_and_separate_texts():
    a = tokenize(["the cat sat on the mat", "dog"])
    b = tokenize(["The cat, sat on the mat!", "DOG"])
    assert np.array_equal(a.hashes, b.hashes)
    assert a.offsets.tolist() == [0, 6, 7]
    # Word hashes: equal words equal hashes ("the" twice), different words differ.
    assert a.hashes[0] == a.hashes[4]
    assert len(set(a.hashes.tolist())) == 6
    # The same in another interpreter (Python's own hash() is salted per process).
    import subprocess
    import sys

    code = (
        "from assay.contamination.normalize import tokenize;"
        "print(tokenize(['The cat, sat on the mat!']).ngram_hashes(3)[0].tolist())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PYTHONHASHSEED": "7"},
    )
    assert json.loads(other.stdout) == a.ngram_hashes(3)[0][:4].tolist()
    # Words of every length up to 40 bytes (8-byte chunks), differing only in the last byte,
    # and non-ASCII ones: all distinct, and equal wherever they stand.
    vocab = [("x" * k)[:-1] + last for k in range(1, 41) for last in "yz"] + ["é", "ée", "日本語"]
    hashed = tokenize([" ".join(vocab), " ".join(reversed(vocab))]).hashes
    assert len(set(hashed[: len(vocab)].tolist())) == len(vocab)
    assert hashed[: len(vocab)].tolist() == hashed[len(vocab) :][::-1].tolist()
    hashes, valid = tokenize(["a b c", "d e"]).ngram_hashes(2)
    # Windows start at every word; "c d" crosses the two texts and is invalid.
    assert valid.tolist() == [True, True, False, True]
    assert len(set(hashes.tolist())) == 4


# -- hand-computed cases ----------------------------------------------------------------

SAMPLE = "w01 w02 w03 w04 w05 w06 w07 w08 w09 w10 w11 w12 w13 w14 w15"


def test_fifteen_words_first_thirteen_in_corpus(tmp_path):
    # Corpus: the sample's first 13 words, then words the sample never has.
    index = _index(tmp_path, [" ".join(SAMPLE.split()[:13]) + " x1 x2 x3"])
    found = _by_detector(find_overlaps(SAMPLE, index))
    # 13-grams: starts 0, 1, 2; only start 0 (w01..w13) is in the corpus.
    assert found["gpt3_13gram"].flagged
    assert found["gpt3_13gram"].score == pytest.approx(1 / 3)
    assert '"w01 w02 w03 w04 w05 w06 w07 w08 w09 w10 w11 w12 w13"' in (
        found["gpt3_13gram"].evidence
    )
    # 8-grams: starts 0..7; those inside w01..w13 start at 0..5: 6 of 8 = 75% >= 70%.
    assert found["palm_8gram"].score == pytest.approx(6 / 8)
    assert found["palm_8gram"].flagged
    assert "6 of 8 8-grams" in found["palm_8gram"].evidence
    # 11-grams: starts 0..4; 0..2 match, covering w01..w13: 13 of 15 words = 86.7%: dirty.
    assert found["llama2_span"].score == pytest.approx(13 / 15)
    assert found["llama2_span"].label == "dirty"
    assert found["llama2_span"].flagged
    assert "87%" in found["llama2_span"].evidence


def test_fifteen_words_first_twelve_in_corpus(tmp_path):
    index = _index(tmp_path, [" ".join(SAMPLE.split()[:12])])
    found = _by_detector(find_overlaps(SAMPLE, index))
    # No 13-gram of the sample fits in 12 corpus words.
    assert not found["gpt3_13gram"].flagged
    assert found["gpt3_13gram"].score == 0
    # 8-grams starting 0..4 fit: 5 of 8 = 62.5% < 70%.
    assert found["palm_8gram"].score == pytest.approx(5 / 8)
    assert not found["palm_8gram"].flagged
    # 11-grams starting 0..1 cover w01..w12: 12 of 15 = 80%, exactly the dirty threshold.
    assert found["llama2_span"].score == pytest.approx(12 / 15)
    assert found["llama2_span"].label == "dirty"


def test_llama2_skip_gram_budget(tmp_path):
    sample = [f"s{i:02d}" for i in range(25)]
    one_substituted = sample.copy()
    one_substituted[12] = "other"
    index = _index(tmp_path, [" ".join(one_substituted)])
    found = _by_detector(find_overlaps(" ".join(sample), index))
    # 11-grams matching: starts 0, 1 (words 0..11) and 13, 14 (words 13..24); word 12 is a
    # gap of one between two matched runs: bridged, so all 25 words count.
    assert found["llama2_span"].score == 1.0
    assert "1 bridged" in found["llama2_span"].evidence
    # Every 13-gram (starts 0..12) contains word 12: GPT-3 sees nothing.
    assert not found["gpt3_13gram"].flagged
    # 8-grams without word 12: starts 0..4 and 13..17: 10 of 18 = 55.6%.
    assert found["palm_8gram"].score == pytest.approx(10 / 18)
    assert not found["palm_8gram"].flagged

    for gap, expected in ((4, 40 / 40), (5, 35 / 40)):
        sample = [f"t{i:02d}" for i in range(40)]
        edited = sample[:15] + [f"e{j}" for j in range(gap)] + sample[15 + gap :]
        index = _index(tmp_path, [" ".join(edited)], name=f"gap{gap}")
        found = _by_detector(find_overlaps(" ".join(sample), index))
        # Words 0..14 and 15+gap..39 are covered by whole 11-grams; a gap of 4 fits the
        # budget, a gap of 5 does not: 35 of 40 = 87.5%.
        assert found["llama2_span"].score == pytest.approx(expected)


def test_short_texts(tmp_path):
    index = _index(tmp_path, ["one two three four five six seven eight nine ten"])
    ten = _by_detector(find_overlaps("One two three four five six seven eight nine ten", index))
    # 10 words: no 13-gram, so GPT-3 is checked with its 8-grams (3 windows, all matched).
    assert ten["gpt3_13gram"].flagged
    assert "checked with 8-grams" in ten["gpt3_13gram"].evidence
    assert ten["palm_8gram"].score == 1.0
    # Under 11 words no span of more than 10 words can match: clean by definition.
    assert ten["llama2_span"].label == "clean"
    assert not ten["llama2_span"].flagged
    five = _by_detector(find_overlaps("one two three four five", index))
    assert not any(f.flagged for f in five.values())
    assert "too short" in five["gpt3_13gram"].evidence
    assert "too short" in five["palm_8gram"].evidence
    empty = find_overlaps("", index)
    assert [f.detector for f in empty] == list(DETECTORS)
    assert not any(f.flagged for f in empty)


# -- planted contamination ---------------------------------------------------------------


def test_planted_contamination_gsm8k(tmp_path):
    questions = _read(DATASETS / "openai__gsm8k" / "main" / "test.jsonl", "question")
    assert len(questions) >= 50
    verbatim = questions[:15]
    recased = questions[15:25]
    edited = questions[25:40]
    absent = questions[40:]
    # Light edit: one word in the middle replaced by a word GSM8K never uses.
    edits = {}
    for q in edited:
        raw = q.split()
        middle = len(raw) // 2
        raw[middle] = "zebra"
        edits[q] = " ".join(raw)
    unrelated = (
        _read(DATASETS / "TIGER-Lab__MMLU-Pro" / "default" / "test.jsonl", "question")
        + _read(DATASETS / "google__IFEval" / "default" / "train.jsonl", "prompt")
        + [
            row["narrative"]
            for row in map(
                json.loads,
                (DATASETS / "TAUR-Lab__MuSR" / "default" / "murder_mysteries.jsonl")
                .read_text()
                .splitlines(),
            )
        ]
    )
    planted = (
        [f"Problem. {q} Solve it." for q in verbatim]
        + [q.upper().replace(",", "").replace("?", " ?") for q in recased]
        + list(edits.values())
    )
    index = _index(
        tmp_path, unrelated[: len(unrelated) // 2] + planted + unrelated[len(unrelated) // 2 :]
    )
    probes = questions + _read(
        DATASETS / "truthfulqa__truthful_qa" / "multiple_choice" / "validation.jsonl", "question"
    )
    results = dict(zip(probes, map(_by_detector, find_overlaps_many(probes, index)), strict=True))

    # Verbatim and case/punctuation-only copies normalize to the same words: all found.
    for q in verbatim + recased:
        for detector in DETECTORS:
            assert results[q][detector].flagged, (detector, q)
            assert results[q][detector].score == 1.0
        assert results[q]["llama2_span"].label == "dirty"
    # Nothing that is not in the corpus is flagged (GSM8K items left out, TruthfulQA).
    for q in absent + probes[len(questions) :]:
        for detector in DETECTORS:
            assert not results[q][detector].flagged, (detector, q, results[q][detector])

    # One word replaced at position m = L // 2 of L words (these questions have no
    # punctuation-only words, so raw and normalized positions agree), leaving a = m words
    # before it and b = L - m - 1 after:
    # - GPT-3: a 13-gram avoids m when a >= 13 or b >= 13;
    # - PaLM: (max(a - 7, 0) + max(b - 7, 0)) of the L - 7 8-grams avoid m;
    # - Llama 2: a side of >= 11 words is covered by matched 11-grams; with both sides
    #   covered, m is a gap of 1 inside the skip-gram budget and counts too.
    predicted = {d: 0 for d in DETECTORS}
    for q in edited:
        length = len(words(q))
        assert length == len(q.split())
        a, b = length // 2, length - length // 2 - 1
        palm = (max(a - 7, 0) + max(b - 7, 0)) / (length - 7)
        llama = ((a if a >= 11 else 0) + (b if b >= 11 else 0) + (a >= 11 and b >= 11)) / length
        expect = {
            "gpt3_13gram": a >= 13 or b >= 13,
            "palm_8gram": palm >= 0.7,
            "llama2_span": llama >= 0.2,
        }
        for detector, flagged in expect.items():
            assert results[q][detector].flagged == flagged, (detector, length, q)
            predicted[detector] += flagged
        assert results[q]["palm_8gram"].score == pytest.approx(palm)
        assert results[q]["llama2_span"].score == pytest.approx(llama)
    # Recall on the 15 edited items, stated (their lengths: 20, 24, 26, 28, 33, 33, 34, 39,
    # 41, 45, 46, 49, 49, 60, 65 words): GPT-3 misses the 20- and 24-word ones (13 of 15);
    # Llama 2 misses the 20-word one (10 and 9 words around the edit: 0%) (14 of 15); PaLM
    # needs L >= 34 for 70% ((33 - 15) / 26 = 69%), 9 of 15.
    assert sorted(len(words(q)) for q in edited if len(words(q)) < 34) == [20, 24, 26, 28, 33, 33]
    assert predicted == {"gpt3_13gram": 13, "palm_8gram": 9, "llama2_span": 14}
    # Precision: every flagged probe was planted.
    planted_set = set(verbatim + recased + edited)
    for detector in DETECTORS:
        flagged = {q for q in probes if results[q][detector].flagged}
        assert flagged <= planted_set


# -- the index against a plain set of n-gram strings ------------------------------------


@pytest.mark.parametrize("fenced", [False, True])
def test_index_answers_like_a_set_of_ngram_strings(tmp_path, monkeypatch, fenced):
    import assay.contamination.ngram_index as ngram_index

    if fenced:  # the two-level search that large tables use
        monkeypatch.setattr(ngram_index, "_FENCE_FROM", 0)
    texts = _read(DATASETS / "TIGER-Lab__MMLU-Pro" / "default" / "test.jsonl", "question")
    texts += _read(DATASETS / "google__IFEval" / "default" / "train.jsonl", "prompt")
    corpus, queries = texts[::2], texts
    index = _index(tmp_path, corpus)
    for n in NGRAM_SIZES:
        reference = set()
        for t in corpus:
            w = words(t)
            reference.update(" ".join(w[i : i + n]) for i in range(len(w) - n + 1))
        assert index.info.ngrams[n] == len(reference)
        expected, got = [], []
        for q in queries:
            w = words(q)
            grams = [" ".join(w[i : i + n]) for i in range(len(w) - n + 1)]
            expected += [g in reference for g in grams]
            hashes, valid = tokenize([q]).ngram_hashes(n)
            got += index.contains(n, hashes[valid]).tolist()
        assert got == expected
        assert any(expected) and not all(expected)


# -- corpus reading, errors, determinism ------------------------------------------------


def test_formats_and_folders(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    _jsonl(folder / "a.jsonl", ["alpha one", "beta two"], field="body")
    (folder / "_SUCCESS").write_text("")
    (folder / ".hidden.jsonl").write_text("not json")
    source = CorpusSource(name="c", url=str(folder), format="jsonl", text_field="body")
    assert list(iter_documents(source)) == ["alpha one", "beta two"]
    glob = CorpusSource(name="c", url=str(folder / "*.jsonl"), format="jsonl", text_field="body")
    assert list(iter_documents(glob)) == ["alpha one", "beta two"]
    pq.write_table(pa.table({"text": ["gamma three", "delta"]}), tmp_path / "p.parquet")
    parquet = CorpusSource(name="p", url=str(tmp_path / "p.parquet"), format="parquet")
    assert list(iter_documents(parquet)) == ["gamma three", "delta"]
    (tmp_path / "t1.txt").write_text("line one\nline two\n")
    text = CorpusSource(name="t", url=str(tmp_path / "t*.txt"), format="text")
    assert list(iter_documents(text)) == ["line one\nline two\n"]


def test_long_text_file_pieces_keep_every_ngram(tmp_path, monkeypatch):
    import assay.contamination.corpus as corpus_module

    monkeypatch.setattr(corpus_module, "TEXT_PIECE_CHARS", 200)
    body = " ".join(f"w{i}" for i in range(400)) + " -- , end"
    (tmp_path / "big.txt").write_text(body)
    source = CorpusSource(name="t", url=str(tmp_path / "big.txt"), format="text")
    pieces = list(iter_documents(source))
    assert len(pieces) > 5
    whole = words(body)
    expected = {" ".join(whole[i : i + 13]) for i in range(len(whole) - 12)}
    got = set()
    for piece in pieces:
        w = words(piece)
        got.update(" ".join(w[i : i + 13]) for i in range(len(w) - 12))
    assert got == expected


def test_bad_input_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl: line 2: field 'text' is int"):
        list(iter_documents(CorpusSource(name="b", url=str(bad), format="jsonl")))
    bad.write_text('{"text": "fine"}\n\n{"body": "x"}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl: line 3: no field 'text'"):
        build_index(CorpusSource(name="b", url=str(bad), format="jsonl"), str(tmp_path / "i"))
    assert not (tmp_path / "i").exists()  # nothing half-written
    bad.write_text('{"text": "fine"}\n{"text": "unterminated\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl: line 2: not valid JSON"):
        list(iter_documents(CorpusSource(name="b", url=str(bad), format="jsonl")))
    pq.write_table(pa.table({"text": ["a", None, "c"]}), tmp_path / "n.parquet")
    with pytest.raises(CorpusError, match=r"n\.parquet: row 2: field 'text' is null"):
        list(
            iter_documents(
                CorpusSource(name="n", url=str(tmp_path / "n.parquet"), format="parquet")
            )
        )
    with pytest.raises(CorpusError, match=r"n\.parquet: no column 'body'"):
        list(
            iter_documents(
                CorpusSource(
                    name="n", url=str(tmp_path / "n.parquet"), format="parquet", text_field="body"
                )
            )
        )
    (tmp_path / "latin1.txt").write_bytes(b"ok\nbad \xff byte\n")
    with pytest.raises(CorpusError, match=r"latin1\.txt: line \d+ or after: not valid UTF-8"):
        list(
            iter_documents(CorpusSource(name="t", url=str(tmp_path / "latin1.txt"), format="text"))
        )
    with pytest.raises(CorpusError, match="no such file"):
        corpus_digest(CorpusSource(name="m", url=str(tmp_path / "missing"), format="text"))
    with pytest.raises(CorpusIndexError, match="no index here"):
        CorpusIndex.open(str(tmp_path / "nothing"))


def test_deterministic_digest_and_index(tmp_path):
    texts = _read(DATASETS / "openai__gsm8k" / "main" / "test.jsonl", "question")
    corpus = tmp_path / "c.jsonl"
    _jsonl(corpus, texts)
    source = CorpusSource(name="g", url=str(corpus), format="jsonl")
    first = build_index(source, str(tmp_path / "one"), workers=1)
    second = build_index(source, "memory://contam-test/two", workers=2)
    assert first.digest == second.digest == corpus_digest(source)
    assert first.ngrams == second.ngrams
    a, b = CorpusIndex.open(str(tmp_path / "one")), CorpusIndex.open("memory://contam-test/two")
    for n in NGRAM_SIZES:
        assert np.array_equal(
            np.concatenate(list(a.sorted_hashes(n))), np.concatenate(list(b.sorted_hashes(n)))
        )
    # Rebuilding over an existing index replaces it whole (no staging folders left behind).
    _jsonl(corpus, texts[:5])
    smaller = build_index(source, str(tmp_path / "one"), workers=1)
    assert CorpusIndex.open(str(tmp_path / "one")).info.ngrams == smaller.ngrams
    assert smaller.ngrams[8] < first.ngrams[8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "one"]
    build_index(source, "memory://contam-test/two", workers=1)
    fs = fsspec.filesystem("memory")
    assert len(fs.ls("/contam-test/two")) == 1 + 2 * len(NGRAM_SIZES)  # old files removed
    # One byte more changes the digest.
    corpus.write_text(corpus.read_text() + " ")
    assert corpus_digest(source) != first.digest


# -- a corpus larger than the process's memory ------------------------------------------

_SEED = 30
_CHILD = r"""
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
import numpy as np
from assay.contamination.corpus import CorpusSource
from assay.contamination.ngram_index import build_index
try:  # the limit holds: the corpus could not even be held in memory
    np.ones(int(sys.argv[2]), dtype=np.uint8)
    raise SystemExit("RLIMIT_DATA did not limit an allocation")
except MemoryError:
    pass
source = CorpusSource(name="big", url=sys.argv[3], format="jsonl")
info = build_index(source, sys.argv[4], memory_mb=8, workers=1)
print(json.dumps({"documents": info.documents, "ngrams": info.ngrams}))
"""


def _vocabulary(size: int = 20000) -> np.ndarray:
    # Long distinct words (15-35 letters) keep the word count, and so the test's time, down
    # while the corpus bytes and the n-gram hashes (24 bytes a word) both exceed the limit.
    rng = np.random.default_rng(_SEED)
    letters = np.array(list(string.ascii_lowercase))
    seen: dict[str, None] = {}
    while len(seen) < size:
        seen.setdefault("".join(rng.choice(letters, size=int(rng.integers(15, 36)))), None)
    return np.array(list(seen), dtype=object)


def _document(vocab: np.ndarray, d: int) -> str:
    rng = np.random.default_rng([_SEED, d])
    return " ".join(vocab[rng.integers(0, len(vocab), size=int(rng.integers(200, 2000)))])


def test_index_of_a_corpus_three_times_the_memory_limit(tmp_path):
    import subprocess
    import sys

    limit = 80 << 20  # RLIMIT_DATA: heap and private mappings (the interpreter takes ~63 MiB)
    corpus = tmp_path / "big.jsonl"
    vocab = _vocabulary()
    lengths = []
    with corpus.open("w") as f:
        while f.tell() < 3 * limit:
            text = _document(vocab, len(lengths))
            lengths.append(text.count(" ") + 1)
            f.write('{"text": "' + text + '"}\n')
    size = corpus.stat().st_size
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(limit), str(size), str(corpus), str(tmp_path / "idx")],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    built = json.loads(done.stdout)
    corpus.unlink()
    assert built["documents"] == len(lengths)
    # Random words from 20,000: every n-gram of the corpus is distinct (a repeat 8-gram has
    # odds ~1e-20), so each size holds exactly sum(L - n + 1) of them.
    for n in NGRAM_SIZES:
        assert built["ngrams"][str(n)] == sum(length - n + 1 for length in lengths)
    assert 8 * sum(built["ngrams"].values()) > 2 * limit  # the index itself outgrows memory

    index = CorpusIndex.open(str(tmp_path / "idx"))
    present = [_document(vocab, d) for d in range(0, len(lengths), 97)]
    absent = [_document(vocab, d) for d in range(len(lengths), len(lengths) + 40)]
    batch = tokenize(present)
    probe = tokenize(present + absent)
    for n in NGRAM_SIZES:
        hashes, valid = batch.ngram_hashes(n)
        reference = set(hashes[valid].tolist())
        queries, ok = probe.ngram_hashes(n)
        queries = queries[ok]
        expected = np.array([q in reference for q in queries.tolist()])
        assert np.array_equal(index.contains(n, queries), expected)
        assert expected.sum() == sum(lengths[d] - n + 1 for d in range(0, len(lengths), 97))


def test_runs_spilled_and_merged_equal_a_set_of_hashes(tmp_path, monkeypatch):
    import assay.contamination.ngram_index as ngram_index

    spilled = []
    spill_runs = ngram_index._spill_runs

    def counted(*args):
        documents, bytes_read, runs = spill_runs(*args)
        spilled.append(min(len(paths) for paths in runs.values()))
        return documents, bytes_read, runs

    monkeypatch.setattr(ngram_index, "_spill_runs", counted)
    # 8 MiB of memory and ~5 MB of text: in process, ~2 MiB of hashes per run; with two
    # workers, a run per task of ~350,000 characters: several runs per size either way.
    vocab = _vocabulary(2000)
    texts = [_document(vocab, d) for d in range(200)]
    corpus = tmp_path / "c.jsonl"
    _jsonl(corpus, texts)
    assert corpus.stat().st_size > 4_000_000
    source = CorpusSource(name="c", url=str(corpus), format="jsonl")
    tokens = tokenize(texts)
    for workers in (1, 2):
        target = str(tmp_path / f"w{workers}")
        build_index(source, target, memory_mb=8, workers=workers)
        assert spilled.pop() > 2  # several sorted runs per size, merged
        index = CorpusIndex.open(target)
        for n in NGRAM_SIZES:
            hashes, valid = tokens.ngram_hashes(n)
            expected = np.array(sorted(set(hashes[valid].tolist())), dtype=np.uint64)
            assert np.array_equal(np.concatenate(list(index.sorted_hashes(n))), expected)


def test_detector_names_match_the_contamination_table():
    from assay.contamination.membership import MEMBERSHIP_DETECTORS
    from assay.contamination.table import KNOWN_DETECTORS, OVERLAP_DETECTORS

    assert DETECTORS == OVERLAP_DETECTORS
    assert KNOWN_DETECTORS == DETECTORS + MEMBERSHIP_DETECTORS


def test_an_unchanged_corpus_is_digested_once_and_a_changed_one_again(tmp_path, monkeypatch):
    import assay.contamination.corpus as corpus

    path = tmp_path / "c.jsonl"
    source = CorpusSource(name="c", url=str(path), format="jsonl")

    def write(text: str, age_s: float) -> str:
        data = (json.dumps({"text": text}) + "\n").encode()
        path.write_bytes(data)
        past = time.time() - age_s
        os.utime(path, (past, past))
        # The digest by hand: format, field, then the file's size and bytes.
        head = b"jsonl\0text\0" + len(data).to_bytes(8, "little")
        return hashlib.sha256(head + data).hexdigest()

    first = write("the first text", age_s=60)
    opened = []
    real_open = corpus.open_corpus_file

    def counted(url, *args, **kwargs):
        opened.append(url)
        return real_open(url, *args, **kwargs)

    monkeypatch.setattr(corpus, "open_corpus_file", counted)
    assert corpus_digest(source) == first
    assert corpus_digest(source) == first
    assert len(opened) == 1  # the second answer came from the first read
    # The same size, other bytes, another time: read again.
    second = write("the other text", age_s=30)
    assert second != first
    assert corpus_digest(source) == second and len(opened) == 2
    # A file written just now is read every time: it may change again within the
    # filesystem clock's tick and keep its time.
    third = write("the third text", age_s=0)
    assert corpus_digest(source) == corpus_digest(source) == third and len(opened) == 4
