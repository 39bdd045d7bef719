"""Per-document scores of an lm-eval task, computed by lm-eval's own code from stored outputs.

The task's requests are rebuilt (deterministically: same documents, same few-shot draws) and
each lm-eval request gets its answer from the stored ``model_outputs`` rows, as lm-eval's
evaluator hands them over: ``(log-likelihood, is_greedy)`` per continuation, the generated
text per repeat. Then, as ``lm_eval.evaluator.evaluate`` does, the task applies its filter
pipelines (regex extraction, take-first, majority vote, ...) and ``process_results`` scores
every document once per filter. Nothing here calls a model. A task whose
``process_results`` needs SymPy's LaTeX parser (MATH-hard) is scored by
the same function in lm-eval's peer environment (:mod:`assay.scoring.lm_eval_peer`).

Each per-document value becomes an assay per-instance stat (:class:`InstanceStat`):

- its name is lm-eval's metric, followed by ``.<filter>`` unless the filter is ``none``
  (lm-eval's ``exact_match,strict-match`` is ``exact_match.strict-match``);
- its direction is lm-eval's ``higher_is_better``; its family is accuracy (``brier_score``:
  calibration);
- a list of numbers (IFEval's per-instruction results) that lm-eval pools over documents is
  two stats, ``<name>_sum`` and ``<name>_n``, and the scorecard's ``<name>`` is their ratio
  (sum over sum, resampling documents), lm-eval's pooled mean; a list lm-eval aggregates
  otherwise is averaged for the document;
- a perplexity task's ``(log-likelihood, weight)`` pair (words or bytes) is two stats,
  ``<name>_loglikelihood`` and ``<name>_weight``, and the scorecard's ``<name>`` is lm-eval's
  corpus figure computed from their sums (``word_perplexity`` and ``byte_perplexity``:
  exp(-Σ loglik / Σ weight); ``bits_per_byte``: -Σ loglik / Σ bytes / ln 2), its interval
  resampling documents.

Aggregation is assay's: the scorecard's mean over documents with its bootstrap interval,
which for a metric lm-eval aggregates by ``mean`` is lm-eval's number. For any other
aggregation (corpus BLEU, lm-eval's ``perplexity``) the scorecard also
carries lm-eval's own aggregate, computed by the task's aggregation function over all
documents, in a row grouped ``aggregation=lm_eval`` (the headline itself when documents have
no number of their own). A document whose request failed is not scored; it is counted in
``scorer_failures``.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from assay.core.records import Instance, InstanceStat, MetricSummary, ModelOutput, RequestKind
from assay.scenarios.lm_eval_requests import METHOD, TEMPLATE_ID, doc_requests
from assay.scenarios.lm_eval_tasks import LmEvalTask, lm_eval_globals, load_task, metric_name
from assay.scoring.lm_eval_peer import needs_peer, process_results_in_peer, require_peer
from assay.scoring.metrics.directions import RATIO_PARTS
from assay.scoring.scorer_runs import ScorerFailure, ScorerRun
from assay.scoring.summary import point

CALIBRATION_METRICS = frozenset({"brier_score"})
LM_EVAL_AGGREGATE_GROUP = "aggregation=lm_eval"


# The parts' name suffixes (the rankings find a corpus figure's parts by them).
(LOGLIKELIHOOD_PART, WEIGHT_PART, _), (SUM_PART, COUNT_PART, _) = RATIO_PARTS


def _key(output: ModelOutput) -> tuple[Any, ...]:
    r = output.request
    return (r.instance_id, r.kind.value, r.prompt, tuple(r.continuations), r.sample, r.part)


def _number(value: Any) -> float | None:
    if isinstance(value, bool | numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _per_document(value: Any) -> float | None:
    """A document's number: the value itself, or the mean of a list of numbers."""
    number = _number(value)
    if number is not None:
        return number
    if isinstance(value, list | tuple) and value:
        numbers_ = [_number(v) for v in value]
        if all(n is not None for n in numbers_):
            return sum(numbers_) / len(numbers_)  # type: ignore[arg-type]
    return None


def is_lm_eval_row(output: ModelOutput) -> bool:
    return output.request.method == METHOD


def score_lm_eval(
    spec: LmEvalTask, instances: Sequence[Instance], outputs: Sequence[ModelOutput]
) -> ScorerRun:
    """Score the stored outputs of an lm-eval entry (see the module doc)."""
    loaded = load_task(spec)
    task = loaded.task
    rows = [i for i, o in enumerate(outputs) if is_lm_eval_row(o)]
    ids = {outputs[i].request.instance_id for i in rows}
    limit = len(ids)
    by_key: dict[tuple[Any, ...], ModelOutput] = {_key(outputs[i]): outputs[i] for i in rows}
    known = {i.id for i in instances}
    unknown = sorted(ids - known)
    if unknown:
        raise KeyError(f"model output refers to unknown instance {unknown[0]!r}")
    label = f"lm_eval {spec.task} (lm-eval {loaded.version})"
    peer = needs_peer(task)
    if peer and rows:
        require_peer(spec.task)  # before anything is rebuilt
    failures: list[ScorerFailure] = []
    failed_docs: set[int] = set()
    per_doc: dict[tuple[str, str], dict[int, Any]] = defaultdict(dict)  # (metric, filter) → raw
    with lm_eval_globals(loaded):
        docs = doc_requests(loaded, limit) if limit else []
        for doc in docs:
            problem = _attach(doc, by_key)
            if problem:
                failed_docs.add(doc.doc_id)
                failures.append(
                    ScorerFailure(
                        str(doc.doc_id),
                        TEMPLATE_ID,
                        "",
                        f"{label}: document {doc.doc_id}: {problem}",
                    )
                )
        if docs:
            task.apply_filters()
            by_doc = {d.doc_id: d.lm_instances for d in docs}
            filter_keys = list(task.instances[0].filtered_resps)
            asked: list[tuple[int, str, Any, list[Any]]] = []
            for filter_key in filter_keys:
                for doc_id, doc_data in task.doc_iterator(rank=0, limit=limit, world_size=1):
                    if doc_id in failed_docs:
                        continue
                    answers = [req.filtered_resps[filter_key] for req in by_doc[doc_id]]
                    asked.append((doc_id, filter_key, doc_data, answers))
            if peer and asked:
                scored = process_results_in_peer(
                    spec.task, task.config.process_results, [(d, a) for _, _, d, a in asked]
                )
                answered = scored.results
            else:
                answered = [task.process_results(d, a) for _, _, d, a in asked]
            for (doc_id, filter_key, _, _), results in zip(asked, answered, strict=True):
                for metric, value in results.items():
                    per_doc[(metric, filter_key)][doc_id] = value
    higher = task.higher_is_better()
    aggregations = task.aggregation()
    stats: list[InstanceStat] = []
    card: list[MetricSummary] = []
    lower: set[str] = set()
    from lm_eval.api.metrics import mean as lm_eval_mean

    ratios: dict[str, tuple[str, str]] = {}
    transforms: dict[str, str] = {}
    for (metric, filter_key), values in sorted(per_doc.items()):
        name = metric_name(metric, filter_key)
        family = "calibration" if metric in CALIBRATION_METRICS else "accuracy"
        raw = [values[d] for d in sorted(values)]
        aggregate = aggregations.get(metric)
        figure = None
        if aggregate is not None and aggregate is not lm_eval_mean:
            figure = float(aggregate(raw))
        transform = _weighted_transform(raw, figure)
        if transform:
            # (log-likelihood, weight) per document, lm-eval's weighted perplexity or bits
            # per byte: a function of a ratio of sums, with an instance bootstrap.
            ratios[name] = (name + LOGLIKELIHOOD_PART, name + WEIGHT_PART)
            transforms[name] = transform
            for doc_id, (loglik, weight) in sorted(values.items()):
                stats.append(_stat(doc_id, name + LOGLIKELIHOOD_PART, float(loglik), family))
                stats.append(_stat(doc_id, name + WEIGHT_PART, float(weight), family))
            if higher.get(metric) is False:
                lower.add(name)
            continue
        lists = all(isinstance(v, list | tuple) and _per_document(v) is not None for v in raw)
        if raw and lists and (figure is None or _is_pooled_mean(raw, figure)):
            # Per-document lists pooled by lm-eval (IFEval's instructions): a ratio of sums,
            # so the headline is lm-eval's pooled mean with an instance bootstrap.
            ratios[name] = (name + SUM_PART, name + COUNT_PART)
            for doc_id, value in sorted(values.items()):
                for part, number in (
                    (name + SUM_PART, sum(map(float, value))),
                    (name + COUNT_PART, len(value)),
                ):
                    stats.append(_stat(doc_id, part, float(number), family))
            if higher.get(metric) is False:
                lower.add(name)
            continue
        if higher.get(metric) is False:
            lower.add(name)
        documented = 0
        for doc_id, value in sorted(values.items()):
            number = _per_document(value)
            if number is not None:
                documented += 1
                stats.append(_stat(doc_id, name, number, family))
        if figure is not None:
            group = LM_EVAL_AGGREGATE_GROUP if documented else ""
            why = f"lm-eval's own aggregate ({getattr(aggregate, '__name__', 'aggregation')})"
            card.append(point(name, family, figure, len(raw), group=group, no_interval=why))
    covered = frozenset(rows)
    figures = {"lm_eval_documents": float(limit - len(failed_docs))}
    return ScorerRun(
        label,
        stats,
        covered,
        frozenset(lower),
        failures,
        limit,
        figures,
        card_rows=card,
        ratios=ratios,
        ratio_transforms=transforms,
    )


def _stat(doc_id: int, metric: str, value: float, family: str) -> InstanceStat:
    return InstanceStat(
        instance_id=str(doc_id), metric=metric, value=value, family=family, template_id=TEMPLATE_ID
    )


def _weighted_transform(raw: list[Any], figure: float | None) -> str:
    """The ``summary.RATIO_TRANSFORMS`` name under which lm-eval's aggregate of per-document
    ``(log-likelihood, weight)`` pairs is a function of Σ loglik / Σ weight ("" when the
    values are not such pairs or the aggregate is another function of them)."""
    pairs = all(
        isinstance(v, list | tuple) and len(v) == 2 and all(_number(x) is not None for x in v)
        for v in raw
    )
    if figure is None or not raw or not pairs:
        return ""
    total = sum(float(w) for _, w in raw)
    if total <= 0:
        return ""
    ratio = sum(float(ll) for ll, _ in raw) / total
    for name, value in (("exp_neg", math.exp(-ratio)), ("neg_bits", -ratio / math.log(2))):
        if math.isclose(value, figure, rel_tol=1e-9, abs_tol=1e-12):
            return name
    return ""


def _is_pooled_mean(raw: list[Any], figure: float) -> bool:
    """Whether lm-eval's aggregate of per-document lists is their pooled mean."""
    pooled = [float(v) for value in raw for v in value]
    return bool(pooled) and math.isclose(sum(pooled) / len(pooled), figure, abs_tol=1e-12)


def _attach(doc: Any, by_key: dict[tuple[Any, ...], ModelOutput]) -> str:
    """Give each lm-eval instance of ``doc`` its responses; the reason when one is missing
    or failed (the document's instances then get stand-ins and it is not scored)."""
    answers = []
    for request in doc.requests:
        output = by_key.get(
            (
                request.instance_id,
                request.kind.value,
                request.prompt,
                tuple(request.continuations),
                request.sample,
                request.part,
            )
        )
        answers.append(output)
    problem = ""
    for i, output in enumerate(answers):
        if output is None:
            problem = (
                f"no stored output answers request {i} (the task's requests changed since "
                "the evaluation: re-evaluate the partition)"
            )
        elif not output.completion.ok:
            problem = f"request {i} failed: {output.completion.error}"
        if problem:
            break
    for inst, (at, choice), repeats in zip(doc.lm_instances, doc.slots, doc.repeats, strict=True):
        inst.resps = []
        rolling = doc.requests[at].kind is RequestKind.LOGLIKELIHOOD_ROLLING
        if problem:
            stand_in: Any = (float("-inf"), False) if choice >= 0 else ""
            inst.resps.extend([float("-inf") if rolling else stand_in] * repeats)
            continue
        if rolling:  # lm-eval hands a perplexity task the text's summed log-likelihood
            inst.resps.append(float(answers[at].completion.choices[0].logprob))  # type: ignore[union-attr]
        elif choice >= 0:
            scored = answers[at].completion.choices[choice]  # type: ignore[union-attr]
            inst.resps.append((float(scored.logprob), bool(scored.is_greedy)))
        elif doc.requests[at].kind is RequestKind.GENERATE and doc.requests[at].sampled:
            inst.resps.extend(answers[at + r].completion.text for r in range(repeats))  # type: ignore[union-attr]
        else:
            inst.resps.extend([answers[at].completion.text] * repeats)  # type: ignore[union-attr]
    return problem
