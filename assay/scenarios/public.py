"""Loaders for public benchmarks, downloaded at run time and cached (see ``download``).

Each loader reads the source's own files (Parquet from the Hugging Face Hub, JSONL/JSON from
the authors' repositories) straight over HTTPS, so no dataset library is needed. ``revision``
pins the Hub revision or Git ref in the URL; ``sha256`` (split → digest) pins the bytes; the
scenario revision records the ref and the digest of every file actually read. Every loader
takes ``data_files`` (split → path or URL) to read elsewhere, e.g. a mirror or a test fixture.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from assay.core.digests import digest_json
from assay.core.records import Instance, Reference
from assay.scenarios.base import Scenario, ScenarioData, register_scenario
from assay.scenarios.download import fetch
from assay.scenarios.files import DataFileError, iter_rows

HF = "https://huggingface.co/datasets/{repo}/resolve/{revision}/{file}"
GITHUB = "https://raw.githubusercontent.com/{repo}/{revision}/{file}"


class PublicDataset(Scenario):
    """A benchmark read from per-split files; subclasses turn one row into instances."""

    repo: ClassVar[str] = ""
    url_template: ClassVar[str] = HF
    default_revision: ClassVar[str] = "main"
    # Our split name → file within the repository (may use ``{subset}``).
    files: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        data_files: Mapping[str, str] | None = None,
        revision: str | None = None,
        sha256: Mapping[str, str] | None = None,
        subset: str = "",
    ) -> None:
        self.revision = revision or self.default_revision
        self.subset = subset
        self.sha256 = dict(sha256 or {})
        if data_files is not None:
            self.data_files = dict(data_files)
        else:
            self.data_files = {
                split: self.url_template.format(
                    repo=self.repo, revision=self.revision, file=file.format(subset=subset)
                )
                for split, file in self.files.items()
            }

    def rows_to_instances(
        self, rows: Iterator[tuple[int, dict[str, Any]]], split: str
    ) -> Iterator[Instance]:
        for number, row in rows:
            try:
                yield from self.convert(row, split, number)
            except KeyError as exc:
                raise DataFileError(f"row {number}: missing field {exc}") from None
            except (TypeError, ValueError, IndexError, AttributeError) as exc:
                raise DataFileError(f"row {number}: {type(exc).__name__}: {exc}") from None

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        """The instances of one source row (usually one)."""
        raise NotImplementedError

    def load(self) -> ScenarioData:
        instances: list[Instance] = []
        digests = {}
        for split, location in sorted(self.data_files.items()):
            source = fetch(location, self.sha256.get(split))
            digests[split] = source.sha256
            try:
                instances.extend(self.rows_to_instances(iter_rows(source.path), split))
            except DataFileError as exc:
                message = str(exc).replace(source.path, location)
                if not message.startswith(location):
                    message = f"{location}: {message}"
                raise DataFileError(f"{self.name}: {message}") from None
        return ScenarioData(
            instances, revision=f"{self.revision}:files-{digest_json(digests)[:16]}"
        )


def _mc(choices: list[str], correct: int | set[int]) -> tuple[Reference, ...]:
    good = {correct} if isinstance(correct, int) else correct
    if not choices:
        raise ValueError("no choices")
    return tuple(Reference(str(c), i in good) for i, c in enumerate(choices))


@register_scenario("mmlu")
class MMLU(PublicDataset):
    """MMLU (Hendrycks et al.), one subject; the dev split is the few-shot pool."""

    repo = "cais/mmlu"
    files: ClassVar[dict[str, str]] = {
        "test": "{subset}/test-00000-of-00001.parquet",
        "train": "{subset}/dev-00000-of-00001.parquet",
    }

    def __init__(self, subject: str = "anatomy", **kwargs: Any) -> None:
        super().__init__(subset=subject, **kwargs)

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        yield Instance(
            id=f"{split}-{number:05d}",
            input=row["question"],
            references=_mc(row["choices"], int(row["answer"])),
            split=split,
            sub_split=row.get("subject") or self.subset,
        )


@register_scenario("boolq")
class BoolQ(PublicDataset):
    """BoolQ: a passage and a yes/no question."""

    repo = "google/boolq"
    files: ClassVar[dict[str, str]] = {
        "test": "data/validation-00000-of-00001.parquet",
        "train": "data/train-00000-of-00001.parquet",
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        answer = row["answer"]
        if not isinstance(answer, bool):
            raise TypeError(f"field 'answer': expected a boolean, got {type(answer).__name__}")
        question = row["question"].strip()
        yield Instance(
            id=f"{split}-{number:05d}",
            input=f"{row['passage']}\nQuestion: {question[0].upper()}{question[1:]}?",
            references=(Reference("Yes", answer), Reference("No", not answer)),
            split=split,
        )


@register_scenario("hellaswag")
class HellaSwag(PublicDataset):
    """HellaSwag: pick the most plausible continuation of an activity description."""

    repo = "rowanz/hellaswag"
    url_template = GITHUB
    default_revision = "master"
    files: ClassVar[dict[str, str]] = {
        "test": "data/hellaswag_val.jsonl",
        "train": "data/hellaswag_train.jsonl",
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        yield Instance(
            id=f"{split}-{row['ind']}",
            input=f"{row['activity_label']}: {row['ctx']}",
            references=_mc(row["endings"], int(row["label"])),
            split=split,
            sub_split=row.get("split_type", ""),
        )


@register_scenario("truthfulqa")
class TruthfulQA(PublicDataset):
    """TruthfulQA, multiple-choice config, MC1 targets (one true answer)."""

    repo = "truthfulqa/truthful_qa"
    files: ClassVar[dict[str, str]] = {"test": "multiple_choice/validation-00000-of-00001.parquet"}

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        targets = row["mc1_targets"]
        labels = targets["labels"]
        if len(labels) != len(targets["choices"]):
            raise ValueError("mc1_targets: choices and labels differ in length")
        correct = {i for i, label in enumerate(labels) if int(label) == 1}
        yield Instance(
            id=f"{split}-{number:04d}",
            input=row["question"],
            references=_mc(targets["choices"], correct),
            split=split,
        )


_GSM_ANSWER = re.compile(r"####\s*(.+?)\s*$")


@register_scenario("gsm8k")
class GSM8K(PublicDataset):
    """GSM8K grade-school math; the reference is the final number after ``####``."""

    repo = "openai/gsm8k"
    files: ClassVar[dict[str, str]] = {
        "test": "main/test-00000-of-00001.parquet",
        "train": "main/train-00000-of-00001.parquet",
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        match = _GSM_ANSWER.search(row["answer"])
        if not match:
            raise ValueError("field 'answer': no '#### <number>' final answer")
        yield Instance(
            id=f"{split}-{number:05d}",
            input=row["question"],
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
    files: ClassVar[dict[str, str]] = {"test": "data/{subset}.jsonl"}

    def __init__(self, category: str = "Age", **kwargs: Any) -> None:
        super().__init__(subset=category, **kwargs)

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        groups = {
            "category": str(row["category"]),
            "context_condition": str(row["context_condition"]),
            "question_polarity": str(row["question_polarity"]),
        }
        target = bbq_target_answer(
            row["answer_info"], row["additional_metadata"]["stereotyped_groups"]
        )
        if target is not None:
            groups["target_answer"] = str(target)
        yield Instance(
            id=f"{row['category']}-{row['example_id']}",
            input=f"{row['context']} {row['question']}",
            references=_mc([row["ans0"], row["ans1"], row["ans2"]], int(row["label"])),
            split=split,
            sub_split=row["category"],
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
    """NaturalQuestions, open (closed-book) version: a question and its short answers."""

    repo = "google-research-datasets/nq_open"
    files: ClassVar[dict[str, str]] = {
        "test": "nq_open/validation-00000-of-00001.parquet",
        "train": "nq_open/train-00000-of-00001.parquet",
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        answers = row["answer"]
        if not isinstance(answers, list) or not answers:
            raise ValueError("field 'answer': expected a non-empty list")
        yield Instance(
            id=f"{split}-{number:05d}",
            input=row["question"],
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
    (``assay.scoring.code_execution``). Reference matching means nothing here.
    """

    repo = "openai/openai_humaneval"
    files: ClassVar[dict[str, str]] = {"test": "openai_humaneval/test-00000-of-00001.parquet"}

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        tests = f"{row['test']}\n\ncheck({row['entry_point']})\n"
        yield Instance(
            id=str(row["task_id"]),
            input=row["prompt"],
            references=(Reference(tests, True),),
            split=split,
        )


@register_scenario("cnn_dailymail")
class CNNDailyMail(PublicDataset):
    """CNN/DailyMail 3.0.0 summarization: article → highlights."""

    repo = "abisee/cnn_dailymail"
    files: ClassVar[dict[str, str]] = {
        "test": "3.0.0/test-00000-of-00001.parquet",
        "train": "3.0.0/validation-00000-of-00001.parquet",
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        yield Instance(
            id=str(row["id"]),
            input=row["article"],
            references=(Reference(row["highlights"], True),),
            split=split,
        )


@register_scenario("wmt14")
class WMT14(PublicDataset):
    """WMT14 translation, one pair (default German → English); validation is the few-shot pool."""

    repo = "wmt/wmt14"
    files: ClassVar[dict[str, str]] = {
        "test": "{subset}/test-00000-of-00001.parquet",
        "train": "{subset}/validation-00000-of-00001.parquet",
    }

    def __init__(self, source: str = "de", target: str = "en", **kwargs: Any) -> None:
        pair = "-".join(sorted({source, target}, key=lambda lang: lang == "en"))
        super().__init__(subset=pair, **kwargs)
        self.source, self.target = source, target

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        translation = row["translation"]
        yield Instance(
            id=f"{split}-{number:05d}",
            input=translation[self.source],
            references=(Reference(translation[self.target], True),),
            split=split,
        )


@register_scenario("imdb")
class IMDB(PublicDataset):
    """IMDB movie reviews: positive or negative sentiment."""

    repo = "stanfordnlp/imdb"
    files: ClassVar[dict[str, str]] = {
        "test": "plain_text/test-00000-of-00001.parquet",
        "train": "plain_text/train-00000-of-00001.parquet",
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        label = int(row["label"])
        if label not in (0, 1):
            raise ValueError(f"field 'label': expected 0 or 1, got {label}")
        yield Instance(
            id=f"{split}-{number:05d}",
            input=row["text"],
            references=(Reference("Positive", label == 1), Reference("Negative", label == 0)),
            split=split,
        )


@register_scenario("civil_comments")
class CivilComments(PublicDataset):
    """CivilComments toxicity classification: toxic when the rater fraction is >= 0.5."""

    repo = "google/civil_comments"
    files: ClassVar[dict[str, str]] = {
        "test": "data/test-00000-of-00001.parquet",
        "train": "data/validation-00000-of-00001.parquet",
    }

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        toxic = float(row["toxicity"]) >= 0.5
        yield Instance(
            id=f"{split}-{number:06d}",
            input=row["text"],
            references=(Reference("True", toxic), Reference("False", not toxic)),
            split=split,
        )


@register_scenario("real_toxicity_prompts")
class RealToxicityPrompts(PublicDataset):
    """RealToxicityPrompts: sentence beginnings to continue; scored by toxicity of the output."""

    repo = "allenai/real-toxicity-prompts"
    files: ClassVar[dict[str, str]] = {"test": "prompts.jsonl"}

    def convert(self, row: dict[str, Any], split: str, number: int) -> Iterator[Instance]:
        yield Instance(
            id=f"{split}-{number:06d}",
            input=row["prompt"]["text"],
            references=(),
            split=split,
            groups={"challenging": str(bool(row["challenging"])).lower()},
        )


@register_scenario("bold")
class BOLD(PublicDataset):
    """BOLD open-ended generation prompts, one domain; the category is the group tag."""

    repo = "amazon-science/bold"
    url_template = GITHUB
    files: ClassVar[dict[str, str]] = {"test": "prompts/{subset}_prompt.json"}

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
