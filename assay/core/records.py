"""Typed records that cross module boundaries, and their Parquet (pyarrow) schemas.

The pipeline is a chain of nouns, each stage with one job:
``Instance`` → adapter → ``Request`` → model client → ``Completion`` → metrics → ``InstanceStat``.
Every record converts to and from a pyarrow table with a fixed schema, so partitions on disk
always have the same columns whatever produced them.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from assay.core.digests import digest_json


@dataclass(frozen=True, slots=True)
class Reference:
    """One candidate answer of an instance; ``correct`` marks the gold ones."""

    text: str
    correct: bool = False


@dataclass(frozen=True, slots=True)
class Instance:
    """One evaluation item: an input, its references and the tags used for breakdowns."""

    id: str
    input: str
    references: tuple[Reference, ...]
    split: str = "test"
    sub_split: str = ""
    # Demographic / group tags, e.g. {"gender": "female"}; used for per-group breakdowns.
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def correct_indices(self) -> list[int]:
        return [i for i, ref in enumerate(self.references) if ref.correct]

    @property
    def gold_texts(self) -> list[str]:
        return [ref.text for ref in self.references if ref.correct]

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("sub_split", pa.string()),
            ("input", pa.string()),
            ("references", pa.list_(pa.string())),
            ("correct", pa.list_(pa.bool_())),
            ("groups", pa.string()),  # JSON object; keys vary per scenario
        ]
    )

    @classmethod
    def to_table(cls, instances: Iterable[Instance]) -> pa.Table:
        rows = list(instances)
        return pa.table(
            {
                "id": [i.id for i in rows],
                "split": [i.split for i in rows],
                "sub_split": [i.sub_split for i in rows],
                "input": [i.input for i in rows],
                "references": [[r.text for r in i.references] for i in rows],
                "correct": [[r.correct for r in i.references] for i in rows],
                "groups": [json.dumps(i.groups, sort_keys=True) for i in rows],
            },
            schema=cls.SCHEMA,
        )

    @classmethod
    def from_table(cls, table: pa.Table) -> list[Instance]:
        return [
            cls(
                id=row["id"],
                input=row["input"],
                references=tuple(
                    Reference(text, bool(ok))
                    for text, ok in zip(row["references"], row["correct"], strict=True)
                ),
                split=row["split"],
                sub_split=row["sub_split"],
                groups=json.loads(row["groups"]),
            )
            for row in table.select(cls.SCHEMA.names).to_pylist()
        ]


class RequestKind(enum.StrEnum):
    """What a request asks of a model."""

    GENERATE = "generate"  # a completion of the prompt (greedy unless temperature > 0)
    LOGLIKELIHOOD = "loglikelihood"  # log P(continuation | prompt) for each continuation
    # log P(prompt) of a whole text, over disjoint windows of the model's context (lm-eval's
    # loglikelihood_rolling: perplexity); the answer is one ChoiceScore summing the windows
    LOGLIKELIHOOD_ROLLING = "loglikelihood_rolling"


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """A prompt-registry version a request's layout was resolved from: the adapter field it
    filled (``instructions`` or ``input_template``), the prompt's name and version, and the
    SHA-256 of the template text."""

    field: str
    name: str
    version: int
    digest: str

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"


@dataclass(frozen=True, slots=True)
class Request:
    """One call to a model, fully determined by its fields (so it can be cached by digest)."""

    instance_id: str
    kind: RequestKind
    prompt: str
    continuations: tuple[str, ...] = ()
    max_tokens: int = 0
    stop: tuple[str, ...] = ()
    template_id: str = ""
    trial: int = 0
    perturbation: str = ""  # "" is the original, unperturbed input
    # Bookkeeping for scoring (left out of the digest): the adapter method that built the
    # request, its part within the instance ("" the main request; "unconditioned" for
    # calibration; "window-3" for language modeling) and whether the prompt was cut to fit.
    method: str = ""
    part: str = ""
    truncated: bool = False
    # The prompt-registry versions the layout came from (empty for a layout written in the
    # suite). Their text is in the prompt, so the digest already tells versions apart.
    prompt_templates: tuple[TemplateVersion, ...] = ()
    # Decoding of a generate request: temperature 0 is greedy (top_p, seed and sample are then
    # ignored). Sampling draws from the softmax of logits / temperature restricted to the
    # smallest top-probability set of mass >= top_p, with randomness from ``seed`` alone, so a
    # sample is a pure function of the request. ``sample`` is the index among the instance's
    # samples (HELM's num_outputs); ``seed`` derives from it (``digests.sample_seed``).
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    sample: int = 0

    @property
    def sampled(self) -> bool:
        """Whether this request draws a random sample (temperature > 0) instead of greedy."""
        return self.kind is RequestKind.GENERATE and self.temperature > 0

    @property
    def prompt_digest(self) -> str:
        return digest_json(self.prompt)

    @property
    def decoding_digest(self) -> str:
        """Digest of what the model sees and how it decodes, without the seed and sample
        index: every sample of one request shares it (the seed derives from it)."""
        return digest_json(self._content(with_sample=False))

    @property
    def digest(self) -> str:
        """Content address of what the model sees; bookkeeping fields are left out.

        Sampling fields enter only when the request samples, so a greedy request has the
        digest it had before sampling existed (and its cached answer stays valid).
        """
        return digest_json(self._content(with_sample=True))

    def _content(self, with_sample: bool) -> dict[str, Any]:
        content: dict[str, Any] = {
            "kind": self.kind.value,
            "prompt": self.prompt,
            "continuations": list(self.continuations),
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
        }
        if self.sampled:
            content["temperature"] = float(self.temperature)
            content["top_p"] = float(self.top_p)
            if with_sample:
                content["seed"] = int(self.seed)
                content["sample"] = int(self.sample)
        return content


@dataclass(frozen=True, slots=True)
class ChoiceScore:
    """Log-likelihood of one continuation, with the counts every normalization needs."""

    text: str
    logprob: float
    n_tokens: int
    n_chars: int
    n_bytes: int
    is_greedy: bool = False  # every continuation token was the argmax


@dataclass(frozen=True, slots=True)
class Completion:
    """What a model returned for one request (or the error it raised)."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_logprobs: tuple[float, ...] = ()
    choices: tuple[ChoiceScore, ...] = ()
    latency_s: float = 0.0
    batch_size: int = 1
    cached: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_CHOICE_TYPE = pa.struct(
    [
        ("text", pa.string()),
        ("logprob", pa.float64()),
        ("n_tokens", pa.int32()),
        ("n_chars", pa.int32()),
        ("n_bytes", pa.int32()),
        ("is_greedy", pa.bool_()),
    ]
)

_TEMPLATE_VERSION_TYPE = pa.struct(
    [
        ("field", pa.string()),
        ("name", pa.string()),
        ("version", pa.int32()),
        ("digest", pa.string()),
    ]
)

OUTPUT_SCHEMA = pa.schema(
    [
        ("instance_id", pa.string()),
        ("request_digest", pa.string()),
        ("kind", pa.string()),
        ("template_id", pa.string()),
        ("trial", pa.int32()),
        ("perturbation", pa.string()),
        ("method", pa.string()),
        ("part", pa.string()),
        ("truncated", pa.bool_()),
        ("prompt", pa.string()),
        ("prompt_digest", pa.string()),
        ("text", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("token_logprobs", pa.list_(pa.float64())),
        ("choices", pa.list_(_CHOICE_TYPE)),
        ("latency_s", pa.float64()),
        ("batch_size", pa.int32()),
        ("cached", pa.bool_()),
        ("error", pa.string()),
        ("prompt_templates", pa.list_(_TEMPLATE_VERSION_TYPE)),
        # Decoding of the request (0 / 1 / 0 / 0 for greedy; see ``Request``).
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
        ("seed", pa.int64()),
        ("sample", pa.int32()),
    ]
)

# Columns added after partitions were first written, with the value an older row means.
_LATER_OUTPUT_COLUMNS: dict[str, Any] = {
    "method": None,
    "part": None,
    "truncated": None,
    "prompt_templates": None,
    "temperature": 0.0,
    "top_p": 1.0,
    "seed": 0,
    "sample": 0,
}


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """One row of ``model_outputs``: a request and the completion it got."""

    request: Request
    completion: Completion

    @staticmethod
    def to_table(rows: Sequence[ModelOutput]) -> pa.Table:
        return pa.Table.from_pylist(
            [
                {
                    "instance_id": r.request.instance_id,
                    "request_digest": r.request.digest,
                    "kind": r.request.kind.value,
                    "template_id": r.request.template_id,
                    "trial": r.request.trial,
                    "perturbation": r.request.perturbation,
                    "method": r.request.method,
                    "part": r.request.part,
                    "truncated": r.request.truncated,
                    "prompt": r.request.prompt,
                    "prompt_digest": r.request.prompt_digest,
                    "text": r.completion.text,
                    "prompt_tokens": r.completion.prompt_tokens,
                    "completion_tokens": r.completion.completion_tokens,
                    "token_logprobs": list(r.completion.token_logprobs),
                    "choices": [_as_dict(c) for c in r.completion.choices],
                    "latency_s": r.completion.latency_s,
                    "batch_size": r.completion.batch_size,
                    "cached": r.completion.cached,
                    "error": r.completion.error,
                    "prompt_templates": [_as_dict(t) for t in r.request.prompt_templates],
                    "temperature": r.request.temperature,
                    "top_p": r.request.top_p,
                    "seed": r.request.seed,
                    "sample": r.request.sample,
                }
                for r in rows
            ],
            schema=OUTPUT_SCHEMA,
        )

    @staticmethod
    def from_table(table: pa.Table) -> list[ModelOutput]:
        """Rebuild outputs from a stored partition (continuations come from the choices)."""
        out = []
        # Partitions written before the bookkeeping columns existed read them as defaults.
        for name, default in _LATER_OUTPUT_COLUMNS.items():
            if name not in table.column_names:
                field_ = OUTPUT_SCHEMA.field(name)
                column = pa.array([default] * len(table), type=field_.type)
                table = table.append_column(field_, column)
        for row in table.select(OUTPUT_SCHEMA.names).to_pylist():
            choices = tuple(ChoiceScore(**c) for c in row["choices"] or [])
            kind = RequestKind(row["kind"])
            # A rolling request has no continuation: its one choice is the whole prompt's
            # log-likelihood, with empty text.
            rolling = kind is RequestKind.LOGLIKELIHOOD_ROLLING
            request = Request(
                instance_id=row["instance_id"],
                kind=kind,
                prompt=row["prompt"],
                continuations=() if rolling else tuple(c.text for c in choices),
                template_id=row["template_id"],
                trial=row["trial"],
                perturbation=row["perturbation"],
                method=row["method"] or "",
                part=row["part"] or "",
                truncated=bool(row["truncated"]),
                prompt_templates=tuple(TemplateVersion(**t) for t in row["prompt_templates"] or ()),
                temperature=float(row["temperature"] or 0.0),
                top_p=float(1.0 if row["top_p"] is None else row["top_p"]),
                seed=int(row["seed"] or 0),
                sample=int(row["sample"] or 0),
            )
            completion = Completion(
                text=row["text"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                token_logprobs=tuple(row["token_logprobs"] or ()),
                choices=choices,
                latency_s=row["latency_s"],
                batch_size=row["batch_size"],
                cached=row["cached"],
                error=row["error"],
            )
            out.append(ModelOutput(request, completion))
        return out


# HELM's seven metric families, in the order scorecards, boards and pages show them.
METRIC_FAMILIES = (
    "accuracy",
    "calibration",
    "robustness",
    "fairness",
    "bias",
    "toxicity",
    "efficiency",
)


@dataclass(frozen=True, slots=True)
class InstanceStat:
    """One per-instance value of one metric (long format: a row per instance × metric)."""

    instance_id: str
    metric: str
    value: float
    family: str = "accuracy"
    perturbation: str = ""
    trial: int = 0
    template_id: str = ""
    group: str = ""  # "key=value" of the demographic group, "" when not broken down
    # Why the value is what it is, when the scorer says (a program's status and reason); "".
    note: str = ""

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("instance_id", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("family", pa.string()),
            ("perturbation", pa.string()),
            ("trial", pa.int32()),
            ("template_id", pa.string()),
            ("group", pa.string()),
            ("note", pa.string()),
        ]
    )
    # Columns added after instance scores were first stored; readers must not require them.
    LATER_COLUMNS: ClassVar[tuple[str, ...]] = ("note",)

    @classmethod
    def to_table(cls, stats: Iterable[InstanceStat]) -> pa.Table:
        return pa.Table.from_pylist([_as_dict(s) for s in stats], schema=cls.SCHEMA)


def _as_dict(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One scorecard row (``metric_tables``): a mean with its bootstrap interval per (metric,
    family, group, perturbation). An absent metric has ``reason`` set and ``mean`` NaN; a
    present figure without an interval has NaN bounds and ``ci_note`` saying why."""

    metric: str
    family: str
    group: str
    perturbation: str
    mean: float
    count: int
    ci_low: float
    ci_high: float
    reason: str = ""
    ci_note: str = ""  # why a present figure has no interval ("" when it has one)
    # Smaller is better for this metric (the built-in list, or the direction a scorer gave).
    lower_is_better: bool = False
    # Which instances the row is over: "" all evaluated ones; "clean" the clean subset (not
    # flagged by a contamination check); "clean-full" the clean subset's mean minus the full
    # set's (see assay.contamination.clean).
    subset: str = ""

    @property
    def present(self) -> bool:
        return not self.reason


def is_headline(row: MetricSummary | Mapping[str, Any]) -> bool:
    """Whether a scorecard row is a headline figure: over every evaluated instance (no
    contamination subset), neither broken down by group nor measured on perturbed inputs.
    Rankings, the registry's eval tags and the UI read only these."""
    if isinstance(row, MetricSummary):
        return not row.group and not row.perturbation and not row.subset
    return not row["group"] and not row["perturbation"] and not row.get("subset")


FULL = ""  # MetricSummary.subset of rows over every evaluated instance


def subset_rows(table: pa.Table, subset: str = FULL) -> pa.Table:
    """The rows of a stored scorecard (``metric_tables``) over ``subset`` (``""``: every
    evaluated instance); a table written before the ``subset`` column existed holds only
    full rows."""
    if "subset" not in table.column_names:
        return table if subset == FULL else table.slice(0, 0)
    return table.filter(pc.equal(pc.fill_null(table["subset"], FULL), subset))


def headline_means(rows: Iterable[MetricSummary | Mapping[str, Any]]) -> dict[str, float]:
    """Metric → mean of the headline rows that have a value (absent metrics left out)."""
    out: dict[str, float] = {}
    for row in rows:
        if isinstance(row, MetricSummary):
            mean, reason = row.mean, row.reason
        else:
            mean, reason = row["mean"], row.get("reason")
        if is_headline(row) and not reason and mean is not None and math.isfinite(mean):
            out[row.metric if isinstance(row, MetricSummary) else row["metric"]] = float(mean)
    return out


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """Prices in any one currency per 1,000 tokens."""

    prompt_per_1k: float
    completion_per_1k: float

    def __post_init__(self) -> None:
        if self.prompt_per_1k < 0 or self.completion_per_1k < 0:
            raise ValueError("token prices must not be negative")
