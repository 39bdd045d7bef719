"""LLM-as-judge: registered model versions score outputs with a rubric from the prompt registry.

A judge is a model version from the registry (``judge_spec``); the rubric is a prompt version
(``Registry.get_prompt("prompts:/name@alias")``) rendered with the item's ``input``,
``prediction`` and ``reference`` (a rubric declares the subset it uses). The reply is parsed
into a number on the rubric's scale; a reply without one, or with one off the scale, is a
parse failure: ``score`` is None and the reply and reason are kept. It is never 0 or NaN,
so failures cannot pass for low scores.

Repeats. The backends decode greedily, so the same prompt gives the same reply every time,
and the request cache would answer a repeat without asking the model. Repeat ``r >= 1``
therefore prefixes the rubric with a neutral marker line (``[repeat r]``), which makes it a
distinct (separately cached) request; the spread over repeats measures how much a judge's
verdict moves under an irrelevant change to its prompt, the only variation a greedy judge
has. Repeat 0 is the rubric exactly as registered. Every request carries the repeat in
``trial`` and the rubric's key in ``template_id``.

Agreement between judges is Cohen's kappa and exact agreement for each pair, and
Krippendorff's alpha (nominal and interval) over all judges, computed on one repeat.

Toxicity. ``toxicity_judge`` turns a registered judge version and an optional rubric prompt
(one variable, ``text``) into a ``JudgeToxicityScorer`` whose requests go through the client
it is given (a cached one in the pipeline).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from assay.core.records import Request, RequestKind
from assay.evaluate.suite import ToxicityConfig
from assay.models.base import ModelClient, ModelSpec, ServingConfig
from assay.registry import ModelVersion, PromptVersion, Registry
from assay.scoring.metrics.toxicity import (
    DEFAULT_RUBRIC,
    ClassifierToxicityScorer,
    JudgeToxicityScorer,
    ToxicityScorer,
    packaged_classifier,
)

# Any decimal number; the default parser takes the last one in the reply (rubrics usually end
# with "Score: N", and a model that reasons first states its verdict last).
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)")
ITEM_VARIABLES = ("input", "prediction", "reference")


@dataclass(frozen=True)
class Rubric:
    """A rubric prompt and how to read a score out of the judge's reply.

    ``pattern`` is a regular expression whose first group (or whole match, without groups)
    is the score; None means the last number in the reply. Scores outside ``[low, high]``
    are parse failures.
    """

    prompt: PromptVersion
    low: float
    high: float
    pattern: str | None = None
    max_tokens: int = 8
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(
                f"rubric {self.prompt.key}: scale [{self.low}, {self.high}] must be finite "
                "with low < high"
            )
        unknown = sorted(set(self.prompt.variables) - set(ITEM_VARIABLES))
        if unknown:
            raise ValueError(
                f"rubric {self.prompt.key} declares variable(s) {', '.join(unknown)}; a judge "
                f"rubric may use only {', '.join(ITEM_VARIABLES)}"
            )
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"rubric {self.prompt.key}: bad pattern: {exc}") from None
        if self.max_tokens < 1:
            raise ValueError(f"rubric {self.prompt.key}: max_tokens must be >= 1")

    @classmethod
    def from_registry(
        cls, registry: Registry, uri: str, *, low: float, high: float, **options: object
    ) -> Rubric:
        """The rubric prompt at ``uri`` (``prompts:/name@alias``, ``prompts:/name/3``)."""
        return cls(registry.get_prompt(uri), low, high, **options)  # type: ignore[arg-type]

    @property
    def key(self) -> str:
        return self.prompt.key

    def render(self, item: JudgeItem, repeat: int = 0) -> str:
        """The judge prompt for one item and repeat (repeats >= 1 carry a marker line)."""
        values = {"input": item.input, "prediction": item.prediction, "reference": item.reference}
        text = self.prompt.render({v: values[v] for v in self.prompt.variables})
        return text if repeat == 0 else f"[repeat {repeat}]\n{text}"

    def parse(self, reply: str) -> tuple[float | None, str | None]:
        """``(score, None)`` or ``(None, reason)`` for one reply."""
        if self.pattern is not None:
            match = re.search(self.pattern, reply)
            if match is None:
                return None, f"reply does not match the rubric pattern {self.pattern!r}"
            text = match.group(1) if match.groups() else match.group(0)
        else:
            numbers = _NUMBER.findall(reply)
            if not numbers:
                return None, "no number in the reply"
            text = numbers[-1]
        try:
            score = float(text)
        except (TypeError, ValueError):
            return None, f"{text!r} is not a number"
        if not math.isfinite(score) or not self.low <= score <= self.high:
            return None, f"score {text} is outside the scale [{self.low:g}, {self.high:g}]"
        return score, None


@dataclass(frozen=True, slots=True)
class JudgeItem:
    """One output to judge."""

    id: str
    input: str
    prediction: str
    reference: str = ""


@dataclass(frozen=True, slots=True)
class Judgment:
    """One judge's verdict on one item in one repeat; ``score`` is None on a parse failure."""

    item_id: str
    judge: str
    repeat: int
    score: float | None
    reply: str
    failure: str | None  # why there is no score (parse failure or model error)
    cached: bool = False


@dataclass(frozen=True, slots=True)
class RepeatSpread:
    """How one judge's scores of one item vary over repeats (None where undefined)."""

    item_id: str
    judge: str
    n: int  # repeats
    n_parsed: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); needs two parsed scores
    range: float | None  # max - min


@dataclass(frozen=True, slots=True)
class PairAgreement:
    """Agreement of two judges on the items both scored."""

    judge_a: str
    judge_b: str
    n: int
    exact: float | None  # share of items with equal scores
    kappa: float | None  # Cohen's kappa; None when undefined


@dataclass(frozen=True, slots=True)
class Agreement:
    """Agreement between all judges on one repeat."""

    repeat: int
    pairs: tuple[PairAgreement, ...]
    alpha_nominal: float | None
    alpha_interval: float | None


def judge_spec(version: ModelVersion) -> ModelSpec:
    """The client spec of a registered judge version."""
    serving = ServingConfig.from_dict(dict(version.serving or {}))
    return ModelSpec(key=version.key, source=version.source, serving=serving)


def judge_clients(
    registry: Registry, refs: Sequence[str], build: Callable[[ModelSpec], ModelClient]
) -> list[tuple[str, ModelClient]]:
    """Resolve judge references (``name@champion``, ``name@v2``) and build their clients.

    ``build`` should return a cached client (e.g. ``ModelsResource.client``), so judgments
    are cached like any other request.
    """
    judges = []
    for ref in refs:
        version = registry.resolve(ref)
        judges.append((version.key, build(judge_spec(version))))
    keys = [k for k, _ in judges]
    if len(set(keys)) != len(keys):
        raise ValueError(f"judge references resolve to the same version twice: {keys}")
    return judges


TOXICITY_VARIABLE = "text"
TOXICITY_MAX_TOKENS = 8


def toxicity_scorer(
    config: ToxicityConfig | None,
    registry: Callable[[], Registry],
    build: Callable[[ModelSpec], ModelClient],
) -> ToxicityScorer | None:
    """The suite's toxicity classifier or judge, or None (the toxicity family is then absent).
    ``registry`` is only opened when a judge needs resolving."""
    if config is None:
        return None
    if config.judge is not None:
        return toxicity_judge(registry(), config.judge, config.rubric, build)
    if config.classifier is not None:
        return packaged_classifier(config.classifier)
    return ClassifierToxicityScorer(config.classifier_dir, config.toxic_label)


def toxicity_judge(
    registry: Registry,
    judge: str,
    rubric: str | None,
    build: Callable[[ModelSpec], ModelClient],
) -> JudgeToxicityScorer:
    """A toxicity scorer asking the registered version ``judge`` with the rubric at ``rubric``.

    The rubric prompt must declare exactly one variable, ``text`` (the text to rate); None
    uses the built-in rubric. Replies are read by ``parse_judge_score`` (a number in [0, 1]).
    The scorer's name, ``judge:<version key>:<rubric key or builtin>``, is what the metric
    table reports as the scorer.
    """
    ((key, client),) = judge_clients(registry, [judge], build)
    if rubric is None:
        template, rubric_key = DEFAULT_RUBRIC, "builtin"
    else:
        prompt = registry.get_prompt(rubric)
        if tuple(prompt.variables) != (TOXICITY_VARIABLE,):
            raise ValueError(
                f"toxicity rubric {prompt.key} declares variable(s) "
                f"{', '.join(prompt.variables) or '(none)'}; it must declare exactly "
                f"'{TOXICITY_VARIABLE}'"
            )
        # Rendered once with a placeholder the scorer fills per text.
        template = prompt.render({TOXICITY_VARIABLE: "{text}"})
        rubric_key = prompt.key

    def complete(prompts: Sequence[str]) -> list[str]:
        requests = [
            Request(
                instance_id=f"toxicity-{i}",
                kind=RequestKind.GENERATE,
                prompt=prompt_text,
                max_tokens=TOXICITY_MAX_TOKENS,
                template_id=rubric_key,
                method="judge",
            )
            for i, prompt_text in enumerate(prompts)
        ]
        # A failed request replies "", which parses to None: counted as unscored, never 0.
        return [c.text if c.error is None else "" for c in client.complete(requests)]

    return JudgeToxicityScorer(complete, template, name=f"judge:{key}:{rubric_key}")


def judge_outputs(
    judges: Sequence[tuple[str, ModelClient]],
    rubric: Rubric,
    items: Sequence[JudgeItem],
    repeats: int = 1,
) -> list[Judgment]:
    """Every judge's judgments of every item, ``repeats`` times; ordered judge, item, repeat."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not judges:
        raise ValueError("judge_outputs needs at least one judge")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"judge items repeat id {dup!r}")
    requests = [
        Request(
            instance_id=item.id,
            kind=RequestKind.GENERATE,
            prompt=rubric.render(item, repeat),
            max_tokens=rubric.max_tokens,
            stop=rubric.stop,
            template_id=rubric.key,
            trial=repeat,
            method="judge",
        )
        for item in items
        for repeat in range(repeats)
    ]
    judgments = []
    for key, client in judges:
        completions = client.complete(requests)
        if len(completions) != len(requests):
            raise RuntimeError(
                f"judge {key} returned {len(completions)} completions for {len(requests)} requests"
            )
        for request, completion in zip(requests, completions, strict=True):
            if completion.error is not None:
                score, failure = None, f"model error: {completion.error}"
            else:
                score, failure = rubric.parse(completion.text)
            judgments.append(
                Judgment(
                    item_id=request.instance_id,
                    judge=key,
                    repeat=request.trial,
                    score=score,
                    reply=completion.text,
                    failure=failure,
                    cached=completion.cached,
                )
            )
    return judgments


def repeat_spread(judgments: Sequence[Judgment]) -> list[RepeatSpread]:
    """Spread of each judge's scores of each item over its repeats (parse failures skipped)."""
    groups: dict[tuple[str, str], list[Judgment]] = defaultdict(list)
    for j in judgments:
        groups[(j.item_id, j.judge)].append(j)
    out = []
    for (item_id, judge), group in groups.items():
        parsed = np.array([j.score for j in group if j.score is not None], dtype=np.float64)
        out.append(
            RepeatSpread(
                item_id=item_id,
                judge=judge,
                n=len(group),
                n_parsed=int(parsed.size),
                mean=float(parsed.mean()) if parsed.size else None,
                std=float(parsed.std(ddof=1)) if parsed.size >= 2 else None,
                range=float(parsed.max() - parsed.min()) if parsed.size else None,
            )
        )
    return out


def cohen_kappa(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cohen's (unweighted) kappa of two raters' labels; None when chance agreement is 1."""
    if len(a) != len(b):
        raise ValueError(f"raters labelled {len(a)} and {len(b)} items: lengths must match")
    if not a:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a: dict[float, int] = defaultdict(int)
    count_b: dict[float, int] = defaultdict(int)
    for x, y in zip(a, b, strict=True):
        count_a[x] += 1
        count_b[y] += 1
    expected = sum(count_a[c] * count_b.get(c, 0) for c in count_a) / n**2
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha(
    units: Sequence[Sequence[float | None]], level: str = "nominal"
) -> float | None:
    """Krippendorff's alpha; ``units[u][c]`` is coder ``c``'s value for unit ``u`` (None = missing).

    Built from the coincidence matrix: every ordered pair of values within a unit with
    ``m`` values counts ``1 / (m - 1)``; alpha = 1 - observed / expected disagreement, with
    squared distance 0/1 (nominal) or ``(c - k)**2`` (interval). None when no unit has two
    values or all values are equal (no expected disagreement).
    """
    if level not in ("nominal", "interval"):
        raise ValueError(f"level must be 'nominal' or 'interval', got {level!r}")
    pairable = [[v for v in unit if v is not None] for unit in units]
    pairable = [values for values in pairable if len(values) >= 2]
    if not pairable:
        return None
    categories = sorted({v for values in pairable for v in values})
    index = {c: i for i, c in enumerate(categories)}
    coincidence = np.zeros((len(categories), len(categories)))
    for values in pairable:
        weight = 1.0 / (len(values) - 1)
        for i, j in ((i, j) for i in range(len(values)) for j in range(len(values)) if i != j):
            coincidence[index[values[i]], index[values[j]]] += weight
    totals = coincidence.sum(axis=1)
    n = totals.sum()
    cats = np.asarray(categories, dtype=np.float64)
    if level == "nominal":
        delta = 1.0 - np.eye(len(categories))
    else:
        delta = (cats[:, None] - cats[None, :]) ** 2
    observed = float((coincidence * delta).sum() / n)
    expected = float((np.outer(totals, totals) * delta).sum() / (n * (n - 1)))
    if expected == 0.0:
        return None
    return 1.0 - observed / expected


def agreement(judgments: Sequence[Judgment], repeat: int = 0) -> Agreement:
    """Agreement between judges on repeat ``repeat``; items a judge failed to score are
    left out of its pairs and count as missing for alpha."""
    scores: dict[str, dict[str, float | None]] = defaultdict(dict)
    for j in judgments:
        if j.repeat == repeat:
            scores[j.judge][j.item_id] = j.score
    judges = sorted(scores)
    items = sorted({i for per_judge in scores.values() for i in per_judge})
    pairs = []
    for a, b in combinations(judges, 2):
        shared = [
            (scores[a][i], scores[b][i])
            for i in items
            if scores[a].get(i) is not None and scores[b].get(i) is not None
        ]
        xs = [float(x) for x, _ in shared]  # type: ignore[arg-type]
        ys = [float(y) for _, y in shared]  # type: ignore[arg-type]
        pairs.append(
            PairAgreement(
                judge_a=a,
                judge_b=b,
                n=len(shared),
                exact=sum(x == y for x, y in shared) / len(shared) if shared else None,
                kappa=cohen_kappa(xs, ys),
            )
        )
    units = [[scores[j].get(i) for j in judges] for i in items]
    return Agreement(
        repeat=repeat,
        pairs=tuple(pairs),
        alpha_nominal=krippendorff_alpha(units, "nominal"),
        alpha_interval=krippendorff_alpha(units, "interval"),
    )


def scores_by_item(judgments: Sequence[Judgment]) -> Mapping[str, float | None]:
    """Each item's mean parsed score over all judges and repeats (None if none parsed)."""
    values: dict[str, list[float]] = defaultdict(list)
    seen: set[str] = set()
    for j in judgments:
        seen.add(j.item_id)
        if j.score is not None:
            values[j.item_id].append(j.score)
    return {i: (float(np.mean(values[i])) if values[i] else None) for i in sorted(seen)}
