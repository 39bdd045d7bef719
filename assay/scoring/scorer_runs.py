"""A suite entry's scorer (``assay.core.scorers``) run over one partition's stored outputs.

The generated answers that reference matching would score are handed to the scorer instead,
one call per prompt layout and input version (the original inputs of each template, then each
perturbation), with the original instances. Its :class:`~assay.core.scorers.Stat` records
become :class:`~assay.core.records.InstanceStat` rows: the layout and perturbation added,
accuracy on a perturbed input reported as that perturbation's family (robustness, fairness),
accuracy repeated per demographic group tag of the instance.

A call that raises is retried instance by instance; the instances whose own call raises fail
alone (:class:`ScorerFailure`, counted and reported, no value), the others keep their stats. A
return of the wrong shape is a bug in the scorer, not in an instance: it raises
:class:`ScorerError` naming the scorer, its entry point and the instance, and the partition
fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel

from assay.adapters import UNCONDITIONED, Method
from assay.core.plugins import Plugin, PluginError
from assay.core.records import (
    Instance,
    InstanceStat,
    MetricSummary,
    ModelOutput,
    Request,
    RequestKind,
)
from assay.core.scorers import RESERVED_METRICS, LoadedScorer, Scored, Stat, get_scorer
from assay.perturbations import family_of

LM_EVAL_METHOD = "lm_eval"  # Request.method of an lm-eval task's requests


class ScorerError(PluginError):
    """A scorer answered with something other than stats; the partition cannot be scored."""


@dataclass(frozen=True, slots=True)
class EntryScorer:
    """A loaded scorer with the arguments a suite entry gives it."""

    loaded: LoadedScorer
    args: BaseModel | None = None

    @classmethod
    def named(cls, name: str, args: BaseModel | None = None) -> EntryScorer:
        return cls(get_scorer(name), args)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def plugin(self) -> Plugin:
        return self.loaded.plugin


@dataclass(frozen=True, slots=True)
class ScorerFailure:
    """One instance the scorer raised on (in one prompt layout and input version)."""

    instance_id: str
    template_id: str
    perturbation: str
    message: str  # names the scorer, its entry point and the instance


@dataclass(frozen=True, slots=True)
class ScorerRun:
    """What an entry's scorer made of a partition's generated answers."""

    scorer: str  # its name, and a plugin's distribution and version ("x (acme 1.0)")
    stats: list[InstanceStat]
    rows: frozenset[int]  # the output rows it scored (not matched against references)
    lower_is_better: frozenset[str]  # its metrics where smaller is better
    failures: list[ScorerFailure] = field(default_factory=list)
    attempted: int = 0  # instance × layout × input version sent to it
    figures: dict[str, float] = field(default_factory=dict)
    # Ratio metric → (numerator, denominator), from the scorer (``Scorer.ratios``).
    ratios: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Ratio metric → the name of a function of the ratio its row reports instead
    # (``summary.RATIO_TRANSFORMS``: lm-eval's weighted perplexity and bits per byte).
    ratio_transforms: dict[str, str] = field(default_factory=dict)
    # Partition-level scorecard rows of its own (lm-eval's aggregates other than a mean).
    card_rows: list[MetricSummary] = field(default_factory=list)


def scored_by_scorer(request: Request) -> bool:
    """Whether a request's answer goes to the entry's scorer: a generated text answer, the
    rows reference matching would otherwise score (an lm-eval task's generations too, when
    its entry names a scorer such as ``code_execution``)."""
    return (
        request.kind is RequestKind.GENERATE
        and request.part != UNCONDITIONED
        and request.method in (Method.GENERATION.value, LM_EVAL_METHOD)
    )


def run_scorer(
    entry: EntryScorer, instances: Sequence[Instance], outputs: Sequence[ModelOutput]
) -> ScorerRun:
    """Score the partition's generated answers with ``entry`` (see the module doc).

    Raises what the scorer's ``check`` raises (with a note naming it) before scoring, and
    :class:`ScorerError` for an answer of the wrong shape.
    """
    scorer, plugin = entry.loaded.scorer, entry.plugin
    check = getattr(scorer, "check", None)
    if check is not None:
        try:
            check(entry.args)
        except Exception as exc:
            exc.add_note(f"raised by the check of {plugin}")
            raise
    by_id = {i.id: i for i in instances}
    slices: dict[tuple[str, str], list[int]] = {}
    for row, output in enumerate(outputs):
        if output.completion.ok and scored_by_scorer(output.request):
            if output.request.instance_id not in by_id:
                raise KeyError(
                    f"model output refers to unknown instance {output.request.instance_id!r}"
                )
            key = (output.request.template_id, output.request.perturbation)
            slices.setdefault(key, []).append(row)
    stats: list[InstanceStat] = []
    failures: list[ScorerFailure] = []
    figures: dict[str, float] = {}
    directions: dict[str, str] = {}
    attempted = 0
    # The original inputs first, then each perturbation; templates in order of appearance.
    for template_id, perturbation in sorted(slices, key=lambda k: (k[1] != "", k[1])):
        rows = slices[(template_id, perturbation)]
        answers = [outputs[r] for r in rows]
        ids = list(dict.fromkeys(a.request.instance_id for a in answers))
        attempted += len(ids)
        where = _Where(plugin, template_id, perturbation)
        got, failed = _score_slice(entry, [by_id[i] for i in ids], answers, where)
        failures += failed
        for part in got:
            for name, value in part.figures.items():
                figures[name] = figures.get(name, 0.0) + float(value)
            for stat in part.stats:
                _check_direction(stat, directions, where)
                stats += _instance_stats(stat, by_id[stat.instance_id], template_id, perturbation)
    covered = frozenset(r for rows in slices.values() for r in rows)
    lower = frozenset(m for m, d in directions.items() if d == "lower")
    label = entry.name if plugin.builtin else f"{entry.name} ({plugin.origin})"
    return ScorerRun(
        label, stats, covered, lower, failures, attempted, figures, entry.loaded.ratios
    )


@dataclass(frozen=True, slots=True)
class _Where:
    plugin: Plugin
    template_id: str
    perturbation: str

    def instance(self, instance_id: str) -> str:
        return (
            f"{self.plugin}: instance {instance_id!r} (template {self.template_id!r}, "
            f"perturbation {self.perturbation or 'none'})"
        )


def _score_slice(
    entry: EntryScorer, instances: list[Instance], answers: list[ModelOutput], where: _Where
) -> tuple[list[Scored], list[ScorerFailure]]:
    allowed = {i.id for i in instances}
    try:
        return [_checked(_call(entry, instances, answers), allowed, where)], []
    except ScorerError:
        raise
    except Exception:
        pass  # find the instances at fault: one call each
    results, failures = [], []
    for instance in instances:
        own = [a for a in answers if a.request.instance_id == instance.id]
        try:
            results.append(_checked(_call(entry, [instance], own), {instance.id}, where))
        except ScorerError:
            raise
        except Exception as exc:
            message = f"{where.instance(instance.id)}: {type(exc).__name__}: {exc}"
            failures.append(
                ScorerFailure(instance.id, where.template_id, where.perturbation, message)
            )
    return results, failures


def _call(entry: EntryScorer, instances: list[Instance], answers: list[ModelOutput]) -> Any:
    result = entry.loaded.scorer.score(instances, answers, entry.args)
    # A generator runs here, so its exceptions count as the call's.
    if isinstance(result, Scored):
        return Scored(
            list(result.stats) if _iterable(result.stats) else result.stats, result.figures
        )
    return list(result) if _iterable(result) else result


def _iterable(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes | dict)


def _checked(result: Any, allowed: set[str], where: _Where) -> Scored:
    """The scorer's answer as :class:`Scored`, or :class:`ScorerError` saying what is wrong."""
    stats, figures = (result.stats, result.figures) if isinstance(result, Scored) else (result, {})
    if not isinstance(stats, list):
        raise ScorerError(
            f"{where.plugin}: score() returned {type(result).__name__}, not an iterable of "
            "assay.core.scorers.Stat (or Scored)"
        )
    for index, stat in enumerate(stats):
        if not isinstance(stat, Stat):
            about = _instance_of(stat)
            at = where.instance(about) if about else str(where.plugin)
            raise ScorerError(
                f"{at}: score() item {index} is {type(stat).__name__}, not assay.core.scorers.Stat"
            )
        if stat.instance_id not in allowed:
            raise ScorerError(
                f"{where.instance(stat.instance_id)}: a stat for an instance it was not given"
            )
        if stat.metric in RESERVED_METRICS:
            raise ScorerError(
                f"{where.instance(stat.instance_id)}: metric {stat.metric!r} is assay's own; "
                "name the scorer's metric otherwise"
            )
    if not hasattr(figures, "items") or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        for k, v in figures.items()
    ):
        raise ScorerError(f"{where.plugin}: Scored.figures must map names to numbers")
    return Scored(stats, dict(figures))


def _instance_of(item: Any) -> str:
    value = item.get("instance_id") if isinstance(item, dict) else getattr(item, "instance_id", "")
    return value if isinstance(value, str) else ""


def _check_direction(stat: Stat, seen: dict[str, str], where: _Where) -> None:
    if seen.setdefault(stat.metric, stat.direction) != stat.direction:
        raise ScorerError(
            f"{where.instance(stat.instance_id)}: metric {stat.metric!r} is "
            f"{stat.direction}-is-better here and {seen[stat.metric]}-is-better elsewhere"
        )


def _instance_stats(
    stat: Stat, instance: Instance, template_id: str, perturbation: str
) -> list[InstanceStat]:
    family = stat.family
    if perturbation and family == "accuracy":
        family = family_of(perturbation)  # accuracy on a perturbed input: robustness, fairness
    row = InstanceStat(
        instance_id=stat.instance_id,
        metric=stat.metric,
        value=stat.value,
        family=family,
        perturbation=perturbation,
        trial=stat.trial,
        template_id=template_id,
        group=stat.group,
        note=stat.note,
    )
    if family != "accuracy" or stat.group:
        return [row]
    return [row] + [replace(row, group=f"{k}={v}") for k, v in sorted(instance.groups.items())]
