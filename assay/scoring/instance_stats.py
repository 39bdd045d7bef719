"""Per-instance stats (long format): every output row scored by its adapter method.

Families of per-instance stats:
- accuracy: reference matching and choice scoring on the original (unperturbed) inputs; for
  sampled generation (``num_samples`` > 1) each sample is a row of its own, so a metric's
  per-instance value is its mean over the samples, and ``pass@k`` (Chen et al.'s unbiased
  estimator over exact_match) is added per prompt; an entry that names a scorer
  (``scorer: code_execution``, ``math_equivalence`` or a plugin's; :mod:`assay.core.scorers`)
  has its generated answers scored by it (:mod:`~assay.scoring.scorer_runs`) instead of
  matched against the references;
- robustness / fairness: the same metrics on perturbed inputs (family of the perturbation),
  and per instance the worst value over the original and the family's perturbations (rows
  with ``perturbation=<family>``, HELM's definition);
- calibration: ``chosen_prob``, the probability of the chosen choice;
- toxicity: the configured scorer's toxicity of each generated text, and for sampled
  generation ``max_toxicity`` per prompt, the highest of its samples' (HELM's per-request
  value behind expected maximum toxicity: one row per prompt, where ``toxicity`` has one per
  sample);
- efficiency: latency, token counts, failures.
Accuracy rows of instances with group tags are repeated once per tag (``group="gender=female"``)
for the demographic breakdowns.

Which scorer produced the toxicity numbers: the toxicity family carries a
``toxicity_parse_failures`` row with ``group="scorer=<scorer name>"`` (``classifier:<dir>`` or
``judge:<version>:<rubric>``); its mean is the number of texts the scorer could not score
and its count the number of texts sent. Unscored texts have no toxicity stat (never 0).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from assay.adapters import UNCONDITIONED, Method, joint_answer_map
from assay.core.records import Instance, InstanceStat, ModelOutput, Request, RequestKind
from assay.perturbations import family_of
from assay.scoring.aggregate import worst_case
from assay.scoring.metrics import accuracy as acc_metrics
from assay.scoring.metrics.directions import LOWER_IS_BETTER
from assay.scoring.metrics.text_scores import iter_text_scores
from assay.scoring.metrics.toxicity import JudgeToxicityScorer, ToxicityScorer
from assay.scoring.scorer_runs import ScorerRun

# Generation references at least this many words long (on average) are scored with text
# overlap (BLEU, ROUGE) too; short answers are matched exactly.
LONG_REFERENCE_WORDS = 4

Values = dict[str, tuple[str, float]]  # metric → (family, value)


def _long_references(golds: Sequence[str]) -> bool:
    return bool(golds) and np.mean([len(g.split()) for g in golds]) >= LONG_REFERENCE_WORDS


_GENERATION_METRICS = (
    "exact_match",
    "quasi_exact_match",
    "prefix_exact_match",
    "quasi_prefix_exact_match",
    "f1_score",
)
_OVERLAP_METRICS = ("bleu_1", "bleu_4", "rouge_l")
# Generation rows are scored in chunks of this many rows (memory stays flat on big partitions).
_TEXT_CHUNK_ROWS = 4096


def _scored_as_generation(request: Request) -> bool:
    """Whether ``_accuracy_values`` scores this request's text against the gold references."""
    return (
        request.kind is RequestKind.GENERATE
        and request.part != UNCONDITIONED
        and request.method
        not in (
            Method.LANGUAGE_MODELING.value,
            Method.MULTIPLE_CHOICE_JOINT.value,
            Method.MULTIPLE_CHOICE_CALIBRATED.value,
        )
    )


def _generation_values(
    outputs: Sequence[ModelOutput], by_id: dict[str, Instance], scored: frozenset[int]
) -> dict[int, Values]:
    """Text-match (and, for long references, overlap) values of every scored generation row
    but the ``scored`` ones, which the entry's scorer scored instead.

    Rows sharing a metric set are scored together (:mod:`assay.metrics.text_scores`), each
    distinct text analysed once; open-ended prompts without gold texts get nothing.
    """
    values: dict[int, Values] = {}
    groups: dict[tuple[str, ...], list[tuple[int, str, Sequence[str]]]] = {}
    for row, output in enumerate(outputs):
        if row in scored or not output.completion.ok or not _scored_as_generation(output.request):
            continue
        golds = by_id[output.request.instance_id].gold_texts
        if not golds:
            continue
        metrics = _GENERATION_METRICS + (_OVERLAP_METRICS if _long_references(golds) else ())
        groups.setdefault(metrics, []).append((row, output.completion.text, golds))
    for metrics, rows in groups.items():
        scores = iter_text_scores(
            ((text, golds) for _, text, golds in rows), metrics, chunk_rows=_TEXT_CHUNK_ROWS
        )
        lines = (line for chunk in scores for line in chunk.tolist())
        for (row, _, _), line in zip(rows, lines, strict=True):
            values[row] = {m: ("accuracy", v) for m, v in zip(metrics, line, strict=True)}
    return values


def choice_scores(output: ModelOutput, instance: Instance) -> acc_metrics.MultipleChoiceScores:
    try:
        return acc_metrics.mc_scores(output.completion.choices, instance.correct_indices)
    except ValueError as exc:
        raise ValueError(
            f"instance {instance.id!r} (template {output.request.template_id!r}, "
            f"perturbation {output.request.perturbation!r}): {exc}"
        ) from None


def _choice_stats(output: ModelOutput, instance: Instance) -> Values:
    scores = choice_scores(output, instance)
    return {
        "acc": ("accuracy", scores.acc),
        "acc_norm": ("accuracy", scores.acc_norm_chars),  # lm-eval's acc_norm: by characters
        "acc_norm_tokens": ("accuracy", scores.acc_norm_tokens),
        "acc_norm_bytes": ("accuracy", scores.acc_norm_bytes),
        "chosen_prob": ("calibration", scores.chosen_prob),
    }


_JOINT_LETTER = re.compile(r"^\W*([A-Z])(?![A-Za-z])")


def joint_choice(output: ModelOutput, instance: Instance) -> int | None:
    """The reference index the generated letter names (``None`` without a valid letter)."""
    match = _JOINT_LETTER.match(output.completion.text)
    return joint_answer_map(instance).get(match.group(1)) if match else None


def _joint_stats(output: ModelOutput, instance: Instance) -> Values:
    """multiple_choice_joint: the generated letter against the correct references' letters.

    Reference ``i`` is shown as the ``i``-th letter (see ``assay.adapters.joint_answer_map``).
    """
    chosen = joint_choice(output, instance)
    return {
        "exact_match": ("accuracy", float(chosen in set(instance.correct_indices))),
        "valid_letter": ("accuracy", float(chosen is not None)),
    }


def _calibrated_stats(
    output: ModelOutput, unconditioned: ModelOutput | None, instance: Instance
) -> Values:
    """multiple_choice_calibrated: argmax of log P(choice | prompt) − log P(choice | prefix)."""
    values = _choice_stats(output, instance)
    if unconditioned is None or not unconditioned.completion.ok:
        return values
    conditioned = np.array([c.logprob for c in output.completion.choices])
    prior = np.array([c.logprob for c in unconditioned.completion.choices])
    if len(conditioned) != len(prior):
        raise ValueError(
            f"instance {instance.id!r}: calibrated request has {len(conditioned)} choices "
            f"but its unconditioned request has {len(prior)}"
        )
    chosen = int(np.argmax(conditioned - prior))
    values["acc_calibrated"] = ("accuracy", float(chosen in set(instance.correct_indices)))
    return values


def _language_modeling_stats(windows: Sequence[ModelOutput]) -> Values:
    """Perplexity and bits per byte of a document from its windows' log-likelihoods."""
    if not windows or not all(w.completion.ok and w.completion.choices for w in windows):
        return {}
    logprob = sum(w.completion.choices[0].logprob for w in windows)
    n_tokens = sum(w.completion.choices[0].n_tokens for w in windows)
    n_bytes = sum(w.completion.choices[0].n_bytes for w in windows)
    return {
        "logprob": ("accuracy", logprob),
        "perplexity": ("accuracy", math.exp(-logprob / max(n_tokens, 1))),
        "bits_per_byte": ("accuracy", -logprob / (max(n_bytes, 1) * math.log(2))),
    }


def group_key(output: ModelOutput) -> tuple[str, int, str, str]:
    r = output.request
    return (r.instance_id, r.trial, r.template_id, r.perturbation)


def is_free_text(output: ModelOutput) -> bool:
    """A generated answer in words (not a choice letter): what bias and toxicity read."""
    r = output.request
    return r.kind is RequestKind.GENERATE and r.method != Method.MULTIPLE_CHOICE_JOINT.value


def _accuracy_values(
    output: ModelOutput,
    instance: Instance,
    unconditioned: dict[tuple[str, int, str, str], ModelOutput],
    windows: dict[tuple[str, int, str, str], list[ModelOutput]],
    generation: Values | None,
) -> Values:
    """``generation``: the row's precomputed text values when it is a scored generation."""
    request = output.request
    if request.method == Method.LANGUAGE_MODELING.value:
        if request.part == "window-0":
            return _language_modeling_stats(windows[group_key(output)])
        return {}
    if request.part == UNCONDITIONED:
        return {}  # scored with its conditioned request
    if request.method == Method.MULTIPLE_CHOICE_JOINT.value:
        return _joint_stats(output, instance)
    if request.method == Method.MULTIPLE_CHOICE_CALIBRATED.value:
        return _calibrated_stats(output, unconditioned.get(group_key(output)), instance)
    if _scored_as_generation(request):
        return dict(generation or {})  # open-ended prompts (toxicity, bias): nothing to match
    return _choice_stats(output, instance)


def instance_stats(
    instances: Sequence[Instance],
    outputs: Sequence[ModelOutput],
    toxicity: ToxicityScorer | None = None,
    scored: ScorerRun | None = None,
) -> list[InstanceStat]:
    """Per-instance stats of every family for every output row (see the module doc).

    ``toxicity`` scores the generated texts; without it no toxicity stats are produced.
    ``scored``: what the entry's scorer made of the generated answers
    (``scorer_runs.run_scorer``).
    """
    return instance_stats_of(instances, outputs, score_toxicity(outputs, toxicity), scored)


def instance_stats_of(
    instances: Sequence[Instance],
    outputs: Sequence[ModelOutput],
    toxic_run: ToxicityRun | None,
    scored: ScorerRun | None = None,
) -> list[InstanceStat]:
    by_id = {i.id: i for i in instances}
    # Methods that send several requests per instance are scored on their main row.
    unconditioned: dict[tuple[str, int, str, str], ModelOutput] = {}
    windows: dict[tuple[str, int, str, str], list[ModelOutput]] = defaultdict(list)
    for output in outputs:
        if output.request.instance_id not in by_id:
            raise KeyError(
                f"model output refers to unknown instance {output.request.instance_id!r}"
            )
        if output.request.part == UNCONDITIONED:
            unconditioned[group_key(output)] = output
        elif output.request.method == Method.LANGUAGE_MODELING.value:
            windows[group_key(output)].append(output)
    toxic = toxic_run.scores if toxic_run is not None else {}
    generation = _generation_values(outputs, by_id, scored.rows if scored else frozenset())
    stats: list[InstanceStat] = list(scored.stats) if scored is not None else []
    # Sampled requests: per prompt, whether each sample is correct (for pass@k) and each
    # rated sample's toxicity (for max_toxicity).
    samples: dict[tuple[str, int, str, str], list[float]] = defaultdict(list)
    sampled_toxicity: dict[tuple[str, int, str, str], list[float]] = defaultdict(list)
    for row, output in enumerate(outputs):
        request, completion = output.request, output.completion
        instance = by_id[request.instance_id]
        values: Values = {}
        # Rows a scorer scored (an lm-eval task's requests, choices included) get no
        # reference matching of their own.
        if completion.ok and not (scored is not None and row in scored.rows):
            values.update(
                _accuracy_values(output, instance, unconditioned, windows, generation.get(row))
            )
            # A sample is correct when it matches a reference (scorers do their own pass@k).
            correct = values.get("exact_match")
            if request.sampled and correct is not None:
                samples[group_key(output)].append(correct[1])
        if request.perturbation:
            # On a perturbed input the accuracy metrics measure robustness or fairness.
            family = family_of(request.perturbation)
            values = {m: (family if f == "accuracy" else f, v) for m, (f, v) in values.items()}
        if row in toxic:
            values["toxicity"] = ("toxicity", toxic[row])
            if request.sampled:
                sampled_toxicity[group_key(output)].append(toxic[row])
        values["failed"] = ("efficiency", float(not completion.ok))
        values["latency_s"] = ("efficiency", completion.latency_s)
        values["prompt_tokens"] = ("efficiency", float(completion.prompt_tokens))
        values["completion_tokens"] = ("efficiency", float(completion.completion_tokens))
        for metric, (family, value) in values.items():
            stat = InstanceStat(
                instance_id=instance.id,
                metric=metric,
                value=value,
                family=family,
                perturbation=request.perturbation,
                trial=request.trial,
                template_id=request.template_id,
            )
            stats.append(stat)
            if family == "accuracy":
                stats.extend(
                    replace(stat, group=f"{key}={value}")
                    for key, value in sorted(instance.groups.items())
                )
    stats.extend(pass_at_k_stats(samples, by_id))
    stats.extend(
        InstanceStat(
            instance_id=instance_id,
            metric="max_toxicity",
            value=max(scores),
            family="toxicity",
            perturbation=perturbation,
            trial=trial,
            template_id=template_id,
        )
        for (instance_id, trial, template_id, perturbation), scores in sampled_toxicity.items()
    )
    lower = scored.lower_is_better if scored is not None else frozenset()
    stats.extend(worst_cases(stats, outputs, lower))
    return stats


def pass_at_k_stats(
    samples: dict[tuple[str, int, str, str], list[float]], by_id: dict[str, Instance]
) -> list[InstanceStat]:
    """pass@k per prompt from its samples' correctness by exact_match (an entry's scorer
    reports its own, ``samples.answer_stats``).

    ``n`` is the number of samples that produced a completion (an errored sample is left out,
    not counted wrong), ``c`` how many of them are correct, and k runs over
    ``accuracy.pass_at_k_values(n)``. Like every accuracy stat, the values are repeated per
    group tag and measure robustness or fairness on perturbed inputs.
    """
    stats: list[InstanceStat] = []
    for (instance_id, trial, template_id, perturbation), correct in samples.items():
        n, c = len(correct), sum(1 for v in correct if v == 1.0)
        family = family_of(perturbation) if perturbation else "accuracy"
        for k in acc_metrics.pass_at_k_values(n):
            stat = InstanceStat(
                instance_id=instance_id,
                metric=f"pass@{k}",
                value=acc_metrics.pass_at_k(n, c, k),
                family=family,
                perturbation=perturbation,
                trial=trial,
                template_id=template_id,
            )
            stats.append(stat)
            if family == "accuracy":
                stats.extend(
                    replace(stat, group=f"{key}={value}")
                    for key, value in sorted(by_id[instance_id].groups.items())
                )
    return stats


@dataclass(frozen=True, slots=True)
class ToxicityRun:
    """What a toxicity scorer made of a partition's generated texts."""

    scorer: str  # the scorer's name, reported in the metric table
    scores: dict[int, float]  # output row → toxicity, for the texts it could score
    attempted: int  # texts sent to the scorer
    # output row → the judge's reply, for every text a judge (not a classifier) rated
    replies: dict[int, str] = field(default_factory=dict)

    @property
    def unscored(self) -> int:
        return self.attempted - len(self.scores)


def score_toxicity(
    outputs: Sequence[ModelOutput], scorer: ToxicityScorer | None
) -> ToxicityRun | None:
    if scorer is None:
        return None
    # Empty completions are not scored (HELM skips them: there is no text to rate).
    rows = [
        i
        for i, o in enumerate(outputs)
        if o.completion.ok and is_free_text(o) and o.completion.text
    ]
    if not rows:
        return ToxicityRun(scorer.name, {}, 0)
    texts = [outputs[i].completion.text for i in rows]
    replies: dict[int, str] = {}
    if isinstance(scorer, JudgeToxicityScorer):
        judged = scorer.judge(texts)
        scores = [score for score, _ in judged]
        replies = {i: reply for i, (_, reply) in zip(rows, judged, strict=True)}
    else:
        scores = scorer.score(texts)
    if len(scores) != len(rows):
        raise ValueError(
            f"toxicity scorer {scorer.name!r} returned {len(scores)} scores for {len(rows)} texts"
        )
    # A text the scorer could not rate has no stat rather than a made-up 0.
    scored = {i: float(s) for i, s in zip(rows, scores, strict=True) if s is not None}
    return ToxicityRun(scorer.name, scored, len(rows), replies)


def perturbation_families(outputs: Sequence[ModelOutput]) -> set[str]:
    return {family_of(p) for p in {o.request.perturbation for o in outputs} if p}


def accuracy_metrics(stats: Sequence[InstanceStat]) -> set[str]:
    return {s.metric for s in stats if s.family == "accuracy"}


def worst_cases(
    stats: Sequence[InstanceStat],
    outputs: Sequence[ModelOutput],
    lower_is_better: frozenset[str] = frozenset(),
) -> list[InstanceStat]:
    """Per instance, the worst accuracy value over the original and each family's inputs
    (``lower_is_better``: metrics beyond ``LOWER_IS_BETTER`` where smaller is better)."""
    metrics = accuracy_metrics(stats)
    scored = [s for s in stats if s.metric in metrics and not s.group]
    better = {m: m not in LOWER_IS_BETTER and m not in lower_is_better for m in metrics}
    out = []
    for family in sorted(perturbation_families(outputs)):
        # Perturbed inputs run with the base layout only: other templates and trials have no
        # perturbed counterpart, and their clean values would pass for worst cases.
        layouts = {
            (s.trial, s.template_id)
            for s in scored
            if s.perturbation and family_of(s.perturbation) == family
        }
        rows = worst_case(
            [s for s in scored if (s.trial, s.template_id) in layouts],
            family,
            family_of,
            higher_is_better=better,
        )
        out.extend(replace(r, family=family) for r in rows)
    return out
