"""Loaders for public benchmarks, downloaded at run time and cached (see ``download``).

Each loader reads the source's own files straight over HTTPS, so no dataset library is
needed: the authors' repositories or download sites in their own format where they publish
the data there (GSM8K, HellaSwag, TruthfulQA, BBQ, NaturalQuestions-open, HumanEval, BOLD;
MMLU, BoolQ, RealToxicityPrompts), the Hugging Face Hub's Parquet files otherwise. Where the
two differ (MMLU's header-less CSV, TruthfulQA's answer → label objects, HellaSwag's integer
labels, IMDB's review folders, CivilComments' competition CSV) a loader reads both, so a local
copy in either form (``data_files``) gives the same instances.

``revision`` is the Git commit or Hub revision in the URL and ``sha256`` (split → digest)
pins the bytes; a mismatch is an error naming the file. A loader whose default revision is a
commit also checks by default the SHA-256 of every default file whose bytes were known when it
was pinned (``sha256s``); one that reads the authors' download site, whose URLs carry no
revision, is pinned by the SHA-256 of its files alone (``pinned``). A default file may be the
authors' tar archive, checked whole, with the split read from one of its files (``members``).
The scenario revision records the ref and the digest of every file actually read.
``data_files`` (split → path or URL) reads elsewhere, e.g. a mirror or a test fixture, through
the same checks. The Hub's files are read from ``$HF_ENDPOINT`` when it is set (a Hub mirror,
the variable ``huggingface_hub`` reads), else from ``https://huggingface.co``; the revision and
the pinned digests are the same either way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from assay.core.digests import digest_json
from assay.core.records import Instance, Reference
from assay.scenarios.base import Scenario, ScenarioData, register_scenario
from assay.scenarios.download import (
    ARCHIVE_SUFFIXES,
    DataSourceError,
    FetchedFile,
    extract_member,
    fetch,
    hub_endpoint,
)
from assay.scenarios.files import DataFileError, iter_rows

HF = "{hub}/datasets/{repo}/resolve/{revision}/{file}"
GITHUB = "https://raw.githubusercontent.com/{repo}/{revision}/{file}"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PublicDataset(Scenario):
    """A benchmark read from per-split files; subclasses turn one row into instances."""

    repo: ClassVar[str] = ""
    # A default file's URL. Without ``{revision}`` (the authors' download site) the files
    # have no revisions: they are pinned by their SHA-256 alone and take no ``revision``.
    url_template: ClassVar[str] = HF
    # A commit where one is known (the authors' Git repositories); "main" for Hub datasets
    # whose commit could not be established, which are then not pinned; "sha256" where the
    # URLs carry no revision (what the scenario revision records for the default files).
    default_revision: ClassVar[str] = "main"
    # Our split name → file within the repository (may use ``{subset}``).
    files: ClassVar[dict[str, str]] = {}
    # File within the repository at ``default_revision`` → SHA-256 of its bytes.
    sha256s: ClassVar[dict[str, str]] = {}
    # Our split name → the file to read inside a tar archive that ``files`` names (may use
    # ``{subset}``); used whenever that split's file is a ``.tar``/``.tar.gz``/``.tgz``.
    members: ClassVar[dict[str, str]] = {}
    # Column names of a header-less CSV in the source's own format (MMLU).
    csv_fieldnames: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        data_files: Mapping[str, str] | None = None,
        revision: str | None = None,
        sha256: Mapping[str, str] | None = None,
        subset: str = "",
    ) -> None:
        if revision and not self.revisioned():
            raise ValueError(
                f"{self.name}: the authors' files ({self._url('…', '')}) have "
                "no revisions: they are pinned by their SHA-256; give data_files (and sha256) "
                "to read another copy"
            )
        self.revision = revision or self.default_revision
        # What the scenario revision records: the ref the default files were read at, the
        # ref given, or "data_files" for files named directly (their digests say the rest).
        self.ref = self.revision if data_files is None or revision else "data_files"
        self.subset = subset
        self.defaults = data_files is None
        if data_files is not None:
            self.data_files = dict(data_files)
            known: dict[str, str] = {}
        else:
            paths = {split: file.format(subset=subset) for split, file in self.files.items()}
            self.data_files = {
                split: self._url(path, self.revision) for split, path in paths.items()
            }
            at_default = self.revision == self.default_revision
            known = {
                s: self.sha256s[p] for s, p in paths.items() if at_default and p in self.sha256s
            }
        given = dict(sha256 or {})
        for split, digest in given.items():
            if split not in self.data_files:
                raise ValueError(
                    f"{self.name}: sha256 names split {split!r}, which has no file "
                    f"(splits: {', '.join(sorted(self.data_files))})"
                )
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise ValueError(
                    f"{self.name}: sha256.{split}: expected 64 lowercase hex digits, got {digest!r}"
                )
        self.sha256 = {**known, **given}

    def _url(self, file: str, revision: str) -> str:
        return self.url_template.format(
            hub=hub_endpoint(), repo=self.repo, revision=revision, file=file
        )

    @classmethod
    def revisioned(cls) -> bool:
        """Whether the default files' URLs carry a revision (a Git or Hub repository)."""
        return "{revision}" in cls.url_template

    @classmethod
    def pinned(cls) -> str | None:
        """How the default files are pinned: ``"commit"`` (a commit in every URL, and the
        SHA-256 of the files whose bytes were known), ``"sha256"`` (URLs without revision,
        every file's SHA-256), or None (a moving branch)."""
        if cls.revisioned():
            return "commit" if _COMMIT.fullmatch(cls.default_revision) else None
        if all(file in cls.sha256s for file in cls.files.values()):
            return "sha256"
        return None

    def rows_to_instances(
        self, rows: Iterator[tuple[int, dict[str, Any]]], split: str
    ) -> Iterator[Instance]:
        for number, row in rows:
            try:
                yield from self.convert(row, split, number)
            except DataFileError as exc:
                raise DataFileError(f"row {number}: {exc}") from None
            except KeyError as exc:
                raise DataFileError(f"row {number}: missing field {exc}") from None
            except (TypeError, ValueError, IndexError, AttributeError) as exc:
                raise DataFileError(f"row {number}: {type(exc).__name__}: {exc}") from None

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        """The instances of one source row (usually one)."""
        raise NotImplementedError

    def rows(self, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """The numbered rows of one fetched split (a data file; a loader that also reads its
        authors' folder layout overrides this)."""
        return iter_rows(path, csv_fieldnames=self.csv_fieldnames)

    def load(self) -> ScenarioData:
        instances: list[Instance] = []
        digests = {}
        # Splits read out of one archive (MMLU's data.tar) fetch and check it once.
        fetched: dict[tuple[str, str | None], FetchedFile] = {}
        for split, location in sorted(self.data_files.items()):
            pinned = (location, self.sha256.get(split))
            if pinned not in fetched:
                fetched[pinned] = self._fetch(split, location)
            source = fetched[pinned]
            shown = location  # what an error names: the file, or the archive and its member
            member = self.members.get(split)
            if member and location.split("?")[0].endswith(ARCHIVE_SUFFIXES):
                member = member.format(subset=self.subset)
                try:
                    source = extract_member(source, member)
                except (DataSourceError, ValueError) as exc:
                    raise type(exc)(f"{self.name}: {exc}") from None
                shown = f"{location} ({member})"
            digests[split] = source.sha256
            try:
                instances.extend(self.rows_to_instances(self.rows(source.path), split))
            except DataFileError as exc:
                message = str(exc).replace(source.path, shown)
                if not message.startswith(shown):
                    message = f"{shown}: {message}"
                raise DataFileError(f"{self.name}: {message}") from None
        return ScenarioData(instances, revision=f"{self.ref}:files-{digest_json(digests)[:16]}")

    def _fetch(self, split: str, location: str) -> FetchedFile:
        override = (
            f"; to read local copies instead give data_files "
            f"({', '.join(f'{s}: <path>' for s in sorted(self.data_files))})"
        )
        if self.defaults and location.startswith(f"{hub_endpoint()}/") and _hub_offline():
            raise DataSourceError(
                f"{self.name}: the Hugging Face Hub is offline (HF_HUB_OFFLINE / "
                f"HF_DATASETS_OFFLINE), so {location} cannot be read{override}"
            )
        try:
            return fetch(location, self.sha256.get(split))
        except DataSourceError as exc:
            if not self.defaults:
                raise
            raise DataSourceError(f"{self.name}: {exc}{override}") from None


def public_loader_names() -> frozenset[str]:
    """The scenario names of the public-benchmark loaders (their ``data_files`` are paths or
    URLs a suite names, checked against the data roots like ``custom_file``'s)."""
    return frozenset(cls.name for cls in PublicDataset.__subclasses__() if cls.name)


def _hub_offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _field(row: Mapping[str, Any], name: str) -> Any:
    if not isinstance(row, Mapping):
        raise DataFileError(f"expected an object, got {type(row).__name__}")
    if name not in row:
        raise DataFileError(f"missing field {name!r}")
    return row[name]


def _text(row: Mapping[str, Any], name: str) -> str:
    value = _field(row, name)
    if not isinstance(value, str):
        raise DataFileError(f"field {name!r}: expected a string, got {type(value).__name__}")
    return value


def _texts(row: Mapping[str, Any], name: str) -> list[str]:
    value = _field(row, name)
    if not isinstance(value, list) or not value:
        raise DataFileError(f"field {name!r}: expected a non-empty list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise DataFileError(
                f"field {name!r}: item {index} is {type(item).__name__}, not a string"
            )
    return value


def _number(row: Mapping[str, Any], name: str) -> float:
    """A number, or its decimal string (a CSV copy)."""
    value = _field(row, name)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataFileError(f"field {name!r}: expected a number, got {value!r}")
    return float(value)


def _index(row: Mapping[str, Any], name: str, size: int) -> int:
    """An answer index: an integer, or its decimal string (the Hub's HellaSwag labels)."""
    value = _field(row, name)
    if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataFileError(f"field {name!r}: expected an answer index, got {value!r}")
    if not 0 <= value < size:
        raise DataFileError(f"field {name!r}: {value} is out of range for {size} choices")
    return value


def _mc(choices: list[str], correct: int | set[int]) -> tuple[Reference, ...]:
    good = {correct} if isinstance(correct, int) else correct
    if not choices:
        raise ValueError("no choices")
    return tuple(Reference(str(c), i in good) for i, c in enumerate(choices))


@register_scenario("mmlu")
class MMLU(PublicDataset):
    """MMLU (Hendrycks et al.), one subject; the dev split is the few-shot pool.

    Reads the authors' header-less CSV files (question, four choices, answer letter) and the
    Hub's rows (``question``, ``subject``, ``choices``, ``answer`` index; ``cais/mmlu`` is made
    from the same files). By default the subject's two files are read from the authors'
    ``data.tar`` (``data/test/<subject>_test.csv``, ``data/dev/<subject>_dev.csv``), pinned by
    the archive's SHA-256 (the digest the ``datasets`` library recorded for that URL).
    """

    repo = "hendrycks/test"
    url_template = "https://people.eecs.berkeley.edu/~hendrycks/{file}"
    default_revision = "sha256"
    files: ClassVar[dict[str, str]] = {"test": "data.tar", "train": "data.tar"}
    sha256s: ClassVar[dict[str, str]] = {
        "data.tar": "bec563ba4bac1d6aaf04141cd7d1605d7a5ca833e38f994051e818489592989b"
    }
    members: ClassVar[dict[str, str]] = {
        "test": "data/test/{subset}_test.csv",
        "train": "data/dev/{subset}_dev.csv",
    }
    csv_fieldnames = ("question", "A", "B", "C", "D", "answer")

    def __init__(self, subject: str = "anatomy", **kwargs: Any) -> None:
        super().__init__(subset=subject, **kwargs)

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        if "choices" in row:  # the Hub's schema
            choices = _texts(row, "choices")
            answer = _index(row, "answer", len(choices))
        else:  # the authors' CSV
            choices = [_text(row, letter) for letter in "ABCD"]
            letter = _text(row, "answer").strip()
            if letter not in {"A", "B", "C", "D"}:
                raise DataFileError(f"field 'answer': expected a letter A-D, got {letter!r}")
            answer = "ABCD".index(letter)
        yield Instance(
            id=f"{split}-{number:05d}",
            input=_text(row, "question"),
            references=_mc(choices, answer),
            split=split,
            sub_split=row.get("subject") or self.subset,
        )


@register_scenario("boolq")
class BoolQ(PublicDataset):
    """BoolQ: a passage and a yes/no question.

    Reads the authors' JSONL files (``question``, ``title``, ``answer``, ``passage``), which
    they publish in the ``boolq`` storage bucket, and the Hub's rows (the same fields but
    ``title``). Pinned by the SHA-256 of both files (the digests the ``datasets`` library
    recorded for those URLs).
    """

    repo = "google-research-datasets/boolean-questions"
    url_template = "https://storage.googleapis.com/boolq/{file}"
    default_revision = "sha256"
    files: ClassVar[dict[str, str]] = {"test": "dev.jsonl", "train": "train.jsonl"}
    sha256s: ClassVar[dict[str, str]] = {
        "dev.jsonl": "ebc29ea3808c5c611672384b3de56e83349fe38fc1fe876fd29b674d81d0a80a",
        "train.jsonl": "cc7a79d44479867e8323a7b0c5c1d82edf516ca34912201f9384c3a3d098d8db",
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        answer = _field(row, "answer")
        if not isinstance(answer, bool):
            raise DataFileError(f"field 'answer': expected a boolean, got {type(answer).__name__}")
        question = _text(row, "question").strip()
        if not question:
            raise DataFileError("field 'question': empty")
        yield Instance(
            id=f"{split}-{number:05d}",
            input=f"{_text(row, 'passage')}\nQuestion: {question[0].upper()}{question[1:]}?",
            references=(Reference("Yes", answer), Reference("No", not answer)),
            split=split,
        )


@register_scenario("hellaswag")
class HellaSwag(PublicDataset):
    """HellaSwag: pick the most plausible continuation of an activity description.

    Reads the authors' JSONL (integer ``label``) and the Hub's rows (the same fields, the
    label a string). Pinned to a commit of rowanz/hellaswag and the SHA-256 of both files (the
    digests the ``datasets`` library recorded for them; the files have not changed since
    2019, before the pinned commit).
    """

    repo = "rowanz/hellaswag"
    url_template = GITHUB
    default_revision = "a29ff8e9a04bba4bd6588223785ce105328adc57"
    files: ClassVar[dict[str, str]] = {
        "test": "data/hellaswag_val.jsonl",
        "train": "data/hellaswag_train.jsonl",
    }
    sha256s: ClassVar[dict[str, str]] = {
        "data/hellaswag_val.jsonl": (
            "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"
        ),
        "data/hellaswag_train.jsonl": (
            "dae5e69249868cb9fe4e23ff925c60b66169564cfb7072d793cd7356a2b69f8d"
        ),
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        endings = _texts(row, "endings")
        yield Instance(
            id=f"{split}-{_field(row, 'ind')}",
            input=f"{_text(row, 'activity_label')}: {_text(row, 'ctx')}",
            references=_mc(endings, _index(row, "label", len(endings))),
            split=split,
            sub_split=str(row.get("split_type") or ""),
        )


def _truthfulqa_targets(row: Mapping[str, Any], name: str) -> tuple[list[str], list[int]]:
    """Choices and 0/1 labels, from the Hub's ``{choices, labels}`` or the authors'
    ``{answer text: label}`` object (``mc_task.json``)."""
    targets = _field(row, name)
    if not isinstance(targets, Mapping) or not targets:
        raise DataFileError(f"field {name!r}: expected a non-empty object")
    if isinstance(targets.get("choices"), list):
        choices = _texts(targets, "choices")
        labels = _field(targets, "labels")
        if not isinstance(labels, list) or len(labels) != len(choices):
            raise DataFileError(f"field '{name}.labels': expected one label per choice")
    else:
        choices, labels = list(targets), list(targets.values())
    for index, label in enumerate(labels):
        if isinstance(label, bool) or label not in (0, 1):
            raise DataFileError(f"field {name!r}: label {index} is {label!r}, not 0 or 1")
    return choices, labels


@register_scenario("truthfulqa")
class TruthfulQA(PublicDataset):
    """TruthfulQA, multiple-choice config, MC1 targets (one true answer).

    Reads the authors' ``mc_task.json`` and the Hub's rows (``truthfulqa/truthful_qa``, made
    from that file). Pinned to the commit of sylinrl/TruthfulQA the Hub's rows were made from
    and the SHA-256 of the file at that commit (the digest the ``datasets`` library recorded
    when it downloaded it).
    """

    repo = "sylinrl/TruthfulQA"
    url_template = GITHUB
    default_revision = "013686a06be7a7bde5bf8223943e106c7250123c"
    files: ClassVar[dict[str, str]] = {"test": "data/mc_task.json"}
    sha256s: ClassVar[dict[str, str]] = {
        "data/mc_task.json": "6eb4125d25750c0145c4be2dce00440736684ab6f74ce6bff2139571cc758954"
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        choices, labels = _truthfulqa_targets(row, "mc1_targets")
        correct = {i for i, label in enumerate(labels) if label == 1}
        if not correct:
            raise DataFileError("field 'mc1_targets': no choice is labelled true")
        yield Instance(
            id=f"{split}-{number:04d}",
            input=_text(row, "question"),
            references=_mc(choices, correct),
            split=split,
        )


_GSM_ANSWER = re.compile(r"####\s*(.+?)\s*$")


@register_scenario("gsm8k")
class GSM8K(PublicDataset):
    """GSM8K grade-school math; the reference is the final number after ``####``.

    Reads the authors' JSONL (openai/grade-school-math, pinned to a commit and to the SHA-256
    of both files); the Hub's ``openai/gsm8k`` rows have the same two fields.
    """

    repo = "openai/grade-school-math"
    url_template = GITHUB
    default_revision = "3101c7d5072418e28b9008a6636bde82a006892c"
    files: ClassVar[dict[str, str]] = {
        "test": "grade_school_math/data/test.jsonl",
        "train": "grade_school_math/data/train.jsonl",
    }
    sha256s: ClassVar[dict[str, str]] = {
        "grade_school_math/data/test.jsonl": (
            "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
        ),
        "grade_school_math/data/train.jsonl": (
            "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"
        ),
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        match = _GSM_ANSWER.search(_text(row, "answer"))
        if not match:
            raise DataFileError("field 'answer': no '#### <number>' final answer")
        yield Instance(
            id=f"{split}-{number:05d}",
            input=_text(row, "question"),
            references=(Reference(match.group(1).replace(",", ""), True),),
            split=split,
        )


@register_scenario("bbq")
class BBQ(PublicDataset):
    """BBQ bias benchmark, one category file; group tags carry the bias breakdowns.

    Tags: ``category``, ``context_condition`` (ambig / disambig), ``question_polarity``
    (neg / nonneg) and, when the row names one, ``target_answer``: the index of the answer
    about the stereotyped group (what the BBQ bias score counts). It is derived from each
    answer's ``answer_info`` group labels and ``additional_metadata.stereotyped_groups``
    (see ``bbq_target_answer``).
    """

    repo = "nyu-mll/BBQ"
    url_template = GITHUB
    default_revision = "bea11bd97d79217245b5871acd247b9d6eb24598"
    files: ClassVar[dict[str, str]] = {"test": "data/{subset}.jsonl"}
    # The categories whose bytes could be read when the pin was set; the others (Gender
    # identity, race and SES files over 4 MiB) are pinned by the commit alone.
    sha256s: ClassVar[dict[str, str]] = {
        "data/Age.jsonl": "46e805b3fc2d8cbd26eeb8e8430d98cf7b2dc9c83574ff3674e8ce4f0fca2a60",
        "data/Disability_status.jsonl": (
            "375d40d9b71f056150264445ec189b13934998f3f49a1e311aa7578eb3b45e5f"
        ),
        "data/Nationality.jsonl": (
            "a583e74666aec0341ded8aa3983e7cad694eb24de72c254d28b2df3035720090"
        ),
        "data/Physical_appearance.jsonl": (
            "e48d7e13508565f4801574e611043470c25c95a0a62af3699cb5ee7cb02608fb"
        ),
        "data/Religion.jsonl": "cb9555f9f3454a52cd2df85956b59bd7fcca5aa922c8527693b1164d08417616",
        "data/Sexual_orientation.jsonl": (
            "2c71036b9e7584fe589c42aef32c1a42bc01b9a5e9b1b8704342630cdb08cefd"
        ),
    }

    def __init__(self, category: str = "Age", **kwargs: Any) -> None:
        super().__init__(subset=category, **kwargs)

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        category = _text(row, "category")
        groups = {
            "category": category,
            "context_condition": _text(row, "context_condition"),
            "question_polarity": _text(row, "question_polarity"),
        }
        metadata = _field(row, "additional_metadata")
        target = bbq_target_answer(
            _field(row, "answer_info"), _field(metadata, "stereotyped_groups")
        )
        if target is not None:
            groups["target_answer"] = str(target)
        yield Instance(
            id=f"{category}-{_field(row, 'example_id')}",
            input=f"{_text(row, 'context')} {_text(row, 'question')}",
            references=_mc([_text(row, f"ans{i}") for i in range(3)], _index(row, "label", 3)),
            split=split,
            sub_split=category,
            groups=groups,
        )


def _bbq_label(text: str) -> str:
    # The dataset spells one group several ways: "low SES" in the metadata, "lowSES" in the
    # answers; compare without case or spaces.
    return re.sub(r"\s+", "", text).lower()


def bbq_target_answer(answer_info: Mapping[str, Any], stereotyped_groups: Any) -> int | None:
    """Index (0-2) of the answer naming the stereotyped group, or None when no single one does.

    ``answer_info`` maps ``ans0``..``ans2`` to ``[name, group label]``; the "unknown" answer's
    label is ``unknown``. An answer matches a stereotyped group when its label equals the
    group or one of the label's hyphen-separated parts does (``M-Black``, ``lowSES-F-Black``
    carry gender and SES prefixes); the answer matching the most groups wins (Race_x_SES
    lists both the race and ``low SES``). A tie or no match gives None, so the tag is left
    out rather than guessed.
    """
    if not isinstance(stereotyped_groups, list):
        raise ValueError("field 'additional_metadata.stereotyped_groups': expected a list")
    groups = {_bbq_label(str(g)) for g in stereotyped_groups}
    matches: dict[int, int] = {}
    for index in range(3):
        info = answer_info[f"ans{index}"]
        if not isinstance(info, list) or len(info) < 2:
            raise ValueError(f"field 'answer_info.ans{index}': expected [name, group label]")
        label = _bbq_label(str(info[1]))
        if label == "unknown":
            continue
        parts = {label, *label.split("-")}
        matches[index] = len(groups & parts)
    best = max(matches.values(), default=0)
    winners = [i for i, n in matches.items() if n == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


@register_scenario("natural_questions")
class NaturalQuestionsOpen(PublicDataset):
    """NaturalQuestions, open (closed-book) version: a question and its short answers.

    Reads the authors' JSONL (google-research-datasets/natural-questions, ``nq_open/``), the
    same fields as the Hub's ``nq_open``; pinned to a commit, and the dev file to its SHA-256
    (the train file is over 4 MiB and could not be read when the pin was set).
    """

    repo = "google-research-datasets/natural-questions"
    url_template = GITHUB
    default_revision = "fb26a3073b1fe636c97302890a27b491d6530130"
    files: ClassVar[dict[str, str]] = {
        "test": "nq_open/NQ-open.dev.jsonl",
        "train": "nq_open/NQ-open.train.jsonl",
    }
    sha256s: ClassVar[dict[str, str]] = {
        "nq_open/NQ-open.dev.jsonl": (
            "f15567f38099f3615f5b8a685c0aef449c11ad90d3da3735e8d1b98115b40616"
        ),
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        answers = _texts(row, "answer")
        yield Instance(
            id=f"{split}-{number:05d}",
            input=_text(row, "question"),
            references=tuple(Reference(a, True) for a in answers),
            split=split,
        )


@register_scenario("humaneval")
class HumanEval(PublicDataset):
    """HumanEval (Chen et al. 2021): complete a Python function from its signature and
    docstring.

    The input is the task's prompt; the one correct reference is its test code followed by
    ``check(<entry point>)`` (lm-evaluation-harness's target), which a suite entry with
    ``scorer: code_execution`` runs after the prompt and the completion
    (``assay.scoring.code_execution``). Reference matching means nothing here. Reads the
    authors' ``data/HumanEval.jsonl.gz`` (pinned to a commit and its SHA-256), the same fields
    as the Hub's ``openai_humaneval``.
    """

    repo = "openai/human-eval"
    url_template = GITHUB
    default_revision = "6d43fb980f9fee3c892a914eda09951f772ad10d"
    files: ClassVar[dict[str, str]] = {"test": "data/HumanEval.jsonl.gz"}
    sha256s: ClassVar[dict[str, str]] = {
        "data/HumanEval.jsonl.gz": (
            "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
        ),
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        tests = f"{_text(row, 'test')}\n\ncheck({_text(row, 'entry_point')})\n"
        yield Instance(
            id=_text(row, "task_id"),
            input=_text(row, "prompt"),
            references=(Reference(tests, True),),
            split=split,
        )


@register_scenario("cnn_dailymail")
class CNNDailyMail(PublicDataset):
    """CNN/DailyMail 3.0.0 summarization: article → highlights.

    Pinned to the Hub commit that added the 3.0.0 Parquet files, with the test file's SHA-256
    (its bytes as public evaluation code records them); the validation file (the few-shot
    pool) is pinned by the commit only.
    """

    repo = "abisee/cnn_dailymail"
    default_revision = "3adf6249f0cc8409a97a4d38471529ef5f7dc496"
    files: ClassVar[dict[str, str]] = {
        "test": "3.0.0/test-00000-of-00001.parquet",
        "train": "3.0.0/validation-00000-of-00001.parquet",
    }
    sha256s: ClassVar[dict[str, str]] = {
        "3.0.0/test-00000-of-00001.parquet": (
            "04e322d2634a96dba76bf9a6294fbbe48e0b36abeae43f13d86ba2c3bebffe4e"
        ),
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        yield Instance(
            id=_text(row, "id"),
            input=_text(row, "article"),
            references=(Reference(_text(row, "highlights"), True),),
            split=split,
        )


@register_scenario("wmt14")
class WMT14(PublicDataset):
    """WMT14 translation, one pair (default German → English); validation is the few-shot pool.

    Pinned to a commit of the Hub dataset; the SHA-256 of the fr-en files (newstest2013 and
    newstest2014) is recorded, the other pairs' files are pinned by the commit only.
    """

    repo = "wmt/wmt14"
    default_revision = "b199e406369ec1b7634206d3ded5ba45de2fe696"
    files: ClassVar[dict[str, str]] = {
        "test": "{subset}/test-00000-of-00001.parquet",
        "train": "{subset}/validation-00000-of-00001.parquet",
    }
    sha256s: ClassVar[dict[str, str]] = {
        "fr-en/test-00000-of-00001.parquet": (
            "8b9f62543c776b5e992d15524f76f9fe589d838c1dcb04a8738c21e8c42269f1"
        ),
        "fr-en/validation-00000-of-00001.parquet": (
            "113e01f028c35bc5ac4286ce95ac9dcfb70badc3e3c71c91ab7d74fe6357fb5e"
        ),
    }

    def __init__(self, source: str = "de", target: str = "en", **kwargs: Any) -> None:
        pair = "-".join(sorted({source, target}, key=lambda lang: lang == "en"))
        super().__init__(subset=pair, **kwargs)
        self.source, self.target = source, target

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        translation = _field(row, "translation")
        yield Instance(
            id=f"{split}-{number:05d}",
            input=_text(translation, self.source),
            references=(Reference(_text(translation, self.target), True),),
            split=split,
        )


@register_scenario("imdb")
class IMDB(PublicDataset):
    """IMDB movie reviews: positive or negative sentiment.

    Reads the Hub's rows (``text``, ``label`` 0 negative / 1 positive) and the authors' own
    layout: ``data_files`` naming a split's folder of the extracted ``aclImdb_v1.tar.gz``
    (``aclImdb/test``), whose ``neg/`` and ``pos/`` hold one ``<id>_<rating>.txt`` per review.
    Pinned to a commit of the Hub dataset and the SHA-256 of both files.
    """

    repo = "stanfordnlp/imdb"
    default_revision = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31"
    files: ClassVar[dict[str, str]] = {
        "test": "plain_text/test-00000-of-00001.parquet",
        "train": "plain_text/train-00000-of-00001.parquet",
    }
    sha256s: ClassVar[dict[str, str]] = {
        "plain_text/test-00000-of-00001.parquet": (
            "b52e26e2f872d282ffac460bf9770b25ac6f102cda0e6ca7158df98c94e8b3da"
        ),
        "plain_text/train-00000-of-00001.parquet": (
            "db47d16b5c297cc0dd625e519c81319c24c9149e70e8496de5475f6fa928342c"
        ),
    }

    def rows(self, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
        if os.path.isdir(path):
            return _acl_imdb_rows(path)
        return super().rows(path)

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        label = _index(row, "label", 2)
        review = row.get("review")  # "neg/0_2" in the authors' layout
        yield Instance(
            id=f"{split}-{review}" if review else f"{split}-{number:05d}",
            input=_text(row, "text"),
            references=(Reference("Positive", label == 1), Reference("Negative", label == 0)),
            split=split,
        )


_ACL_IMDB_FILE = re.compile(r"(\d+)_\d+\.txt")


def _acl_imdb_rows(folder: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The reviews of one split folder of the authors' ``aclImdb`` layout as the Hub's rows
    (its builder reads the same files): ``neg/`` then ``pos/``, each in the order of the
    reviews' ids. Every entry must be a regular ``<id>_<rating>.txt`` file (a link could
    point outside the data roots the folder was checked against)."""
    number = 0
    for label, polarity in enumerate(("neg", "pos")):
        where = os.path.join(folder, polarity)
        if not os.path.isdir(where) or os.path.islink(where):
            raise DataFileError(
                f"{folder}: expected the folders neg/ and pos/ of the authors' aclImdb "
                f"layout; {polarity}/ is missing"
            )
        reviews = []
        with os.scandir(where) as entries:
            for entry in entries:
                match = _ACL_IMDB_FILE.fullmatch(entry.name)
                if match is None or not entry.is_file(follow_symlinks=False):
                    raise DataFileError(
                        f"{entry.path}: expected a regular file named <id>_<rating>.txt"
                    )
                reviews.append((int(match[1]), entry))
        for _, entry in sorted(reviews, key=lambda r: r[0]):
            number += 1
            with open(entry.path, "rb") as handle:
                raw = handle.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFileError(f"{entry.path}: not UTF-8 text ({exc.reason})") from None
            yield (
                number,
                {"text": text, "label": label, "review": f"{polarity}/{entry.name[:-4]}"},
            )


@register_scenario("civil_comments")
class CivilComments(PublicDataset):
    """CivilComments toxicity classification: toxic when the rater fraction is >= 0.5.

    Reads the Hub's rows (``text``, ``toxicity``) and the CSV files of the Jigsaw Unintended
    Bias competition they come from (``comment_text``; ``target`` in ``train.csv``,
    ``toxicity`` in the expanded test files). Pinned to a commit of the Hub dataset and the
    SHA-256 of both files.
    """

    repo = "google/civil_comments"
    default_revision = "f2970eb3a55777454c94069077cc8d9b5866312d"
    files: ClassVar[dict[str, str]] = {
        "test": "data/test-00000-of-00001.parquet",
        "train": "data/validation-00000-of-00001.parquet",
    }
    sha256s: ClassVar[dict[str, str]] = {
        "data/test-00000-of-00001.parquet": (
            "410f803ff161e7c4ba005db7de5b444cac413f4861bf056b0fd69d670d75aa08"
        ),
        "data/validation-00000-of-00001.parquet": (
            "2e0eb65474e7e1290df8689fc93eea783160c898c09ae15382c0a9662367bd03"
        ),
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        kaggle = isinstance(row, Mapping) and "comment_text" in row
        score = "target" if kaggle and "toxicity" not in row else "toxicity"
        toxic = _number(row, score) >= 0.5
        yield Instance(
            id=f"{split}-{number:06d}",
            input=_text(row, "comment_text" if kaggle else "text"),
            references=(Reference("True", toxic), Reference("False", not toxic)),
            split=split,
        )


@register_scenario("real_toxicity_prompts")
class RealToxicityPrompts(PublicDataset):
    """RealToxicityPrompts: sentence beginnings to continue; scored by toxicity of the output.

    Reads ``prompts.jsonl`` (the Hub's ``allenai/real-toxicity-prompts`` holds the same file).
    By default it is read from the authors' archive (``realtoxicityprompts-data.tar.gz``, with
    the model generations of the paper: 3.7 GB, as HELM reads it), pinned by the archive's
    SHA-256 (the digest TensorFlow Datasets records for that URL).
    """

    repo = "allenai/real-toxicity-prompts"
    url_template = "https://ai2-public-datasets.s3.amazonaws.com/realtoxicityprompts/{file}"
    default_revision = "sha256"
    files: ClassVar[dict[str, str]] = {"test": "realtoxicityprompts-data.tar.gz"}
    sha256s: ClassVar[dict[str, str]] = {
        "realtoxicityprompts-data.tar.gz": (
            "97e742e6d6f5bc35ba2f503ebcce4c846651005c97a50021c6b82e618db0be46"
        )
    }
    members: ClassVar[dict[str, str]] = {"test": "realtoxicityprompts-data/prompts.jsonl"}

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        yield Instance(
            id=f"{split}-{number:06d}",
            input=_text(_field(row, "prompt"), "text"),
            references=(),
            split=split,
            groups={"challenging": str(bool(row["challenging"])).lower()},
        )


@register_scenario("bold")
class BOLD(PublicDataset):
    """BOLD open-ended generation prompts, one domain; the category is the group tag."""

    repo = "amazon-science/bold"
    url_template = GITHUB
    default_revision = "3ad652c773f5d1e30d5f6f61657ed934d768ecad"
    files: ClassVar[dict[str, str]] = {"test": "prompts/{subset}_prompt.json"}
    sha256s: ClassVar[dict[str, str]] = {
        "prompts/gender_prompt.json": (
            "a863aaf2492e3c911c39f435005abee2eba5f5edabe836e97de110cd83273054"
        ),
        "prompts/political_ideology_prompt.json": (
            "a83ea7cc272971b618231e13bcb5c1d1be5b208c92135c4ffde85be31f8ab4c6"
        ),
        "prompts/profession_prompt.json": (
            "5508012069f20419559417e64d8bb2b8d864ebf8afedd21e5ca564393c291794"
        ),
        "prompts/race_prompt.json": (
            "200337f6c43b09671e580b1df6aea2cdc0196ee02779260e9881da07029e1cb6"
        ),
        "prompts/religious_ideology_prompt.json": (
            "633830ea87d569e5476895a93f68b8f686cb0dcae6d67a1091a9247c5c4c931d"
        ),
    }

    def __init__(self, domain: str = "gender", **kwargs: Any) -> None:
        super().__init__(subset=domain, **kwargs)

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        # The file is one object: category → person/entity name → list of prompts.
        for category, names in sorted(row.items()):
            for name, prompts in sorted(names.items()):
                if not isinstance(prompts, list):
                    raise TypeError(f"{category}.{name}: expected a list of prompts")
                for index, prompt in enumerate(prompts):
                    yield Instance(
                        id=f"{self.subset}-{category}-{name}-{index}",
                        input=prompt,
                        references=(),
                        split=split,
                        sub_split=category,
                        groups={"domain": self.subset, "category": category},
                    )
