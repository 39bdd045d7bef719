"""The scorer protocol, and the registry of scorers a suite entry may name.

A scorer turns a partition's generated answers into per-instance stats; a suite entry names
it instead of reference matching::

      scorer: math_equivalence
      scorer_args: {float_rounding: 4}

The protocol (the object an ``assay.scorers`` entry point names, or a class whose
no-argument instance is that object)::

    class MyScorer:
        metric = "my_metric"                  # the entry's headline metric by default
        Args = MyArgs                         # a pydantic model of scorer_args (optional)

        def score(self, instances: Sequence[Instance], outputs: Sequence[ModelOutput],
                  args: MyArgs | None) -> Iterable[Stat] | Scored: ...

        def check(self, args: MyArgs | None) -> None: ...   # optional: can it run here?

        ratios = {"my_rate": ("my_hits", "my_trials")}    # optional, see below

``score`` receives the instances and the model's completed generated answers of one prompt
layout and one input version (assay calls it once for the original inputs of each prompt
template, and once per perturbation), and returns :class:`Stat` records: per instance (and
optionally per few-shot ``trial`` and ``group``), a metric's value, which way is better and
its family. assay adds the layout and perturbation, reports accuracy on perturbed inputs as
robustness or fairness, repeats accuracy stats per demographic group tag, and builds the
scorecard with intervals. Several stats of one metric for one instance and trial (one per
sample, say) are averaged per instance. A scorer may return :class:`Scored` to add
partition figures (counts shown in the Dagster UI).

**Ratios.** A figure that is not a mean over instances, such as a rate over items that
instances hold in different numbers (IFEval's instruction-level accuracy: instructions
followed over instructions given, pooled across prompts), is declared in ``ratios``: name →
(numerator metric, denominator metric), both per-instance stats the scorer reports. The
scorecard adds a row per ratio in every (family, group, perturbation) cell holding both: the
sum of the numerators over the sum of the denominators (per instance averaged over its rows
first, as every mean is), with a bootstrap interval that resamples instances, numerator and
denominator together. A ratio has no per-instance value, so it cannot be a primary metric.

Failures: if ``score`` raises, assay calls it again once per instance: the instances whose
call raises fail (they get no value, are counted in the scorecard's ``scorer_failures`` row
and logged with the scorer, its entry point and the instance), the others keep their stats.
A scorer should therefore be a pure function of its inputs. A return of the wrong shape
fails the partition with an error naming the scorer, its entry point and the instance.
``check`` raising fails the partition before anything is scored (a missing sandbox, say).

The built-in scorers are entry points like any plugin's (:data:`BUILTIN_SCORERS`), loaded
through the same path; installed ones come from ``assay.core.plugins``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from assay.core.plugins import SCORERS_GROUP, Plugin, PluginError, available, find, validate_args
from assay.core.records import Instance, ModelOutput

Direction = Literal["higher", "lower"]
DIRECTIONS = ("higher", "lower")
NOTE_MAX_CHARS = 1000
# Families a scorer may report in. Robustness and fairness are assay's to assign: they are
# the scorer's accuracy stats measured on perturbed inputs.
SCORER_FAMILIES = ("accuracy", "calibration", "bias", "toxicity", "efficiency")
# Metrics assay itself writes for every output row or partition; a scorer may not reuse them.
RESERVED_METRICS = frozenset(
    {"failed", "latency_s", "prompt_tokens", "completion_tokens", "toxicity", "scorer_failures"}
)


@dataclass(frozen=True, slots=True)
class Stat:
    """One per-instance value a scorer reports (checked when made)."""

    instance_id: str
    metric: str
    value: float
    direction: Direction = "higher"  # which way is better; "lower" for errors, distances, ...
    family: str = "accuracy"  # one of SCORER_FAMILIES
    group: str = ""  # "key=value" of a breakdown of the scorer's own; "" for none
    trial: int = 0  # the few-shot trial the value belongs to
    # Why the value is what it is, shown beside it in the explorer (at most NOTE_MAX_CHARS).
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.instance_id, str) or not self.instance_id:
            raise ValueError(
                f"Stat.instance_id must be a non-empty string, got {self.instance_id!r}"
            )
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"Stat.metric must be a non-empty string, got {self.metric!r}")
        if not isinstance(self.value, numbers.Real) or math.isnan(float(self.value)):
            raise ValueError(f"Stat.value of {self.metric!r} must be a number, got {self.value!r}")
        object.__setattr__(self, "value", float(self.value))
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Stat.direction must be 'higher' or 'lower', got {self.direction!r}")
        if self.family not in SCORER_FAMILIES:
            raise ValueError(
                f"Stat.family must be one of {', '.join(SCORER_FAMILIES)}, got {self.family!r}"
            )
        if self.group and "=" not in self.group:
            raise ValueError(f"Stat.group must read 'key=value', got {self.group!r}")
        if isinstance(self.trial, bool) or not isinstance(self.trial, int) or self.trial < 0:
            raise ValueError(f"Stat.trial must be an integer >= 0, got {self.trial!r}")
        if not isinstance(self.note, str):
            raise ValueError(f"Stat.note must be a string, got {type(self.note).__name__}")
        if len(self.note) > NOTE_MAX_CHARS:
            object.__setattr__(self, "note", self.note[: NOTE_MAX_CHARS - 1] + "…")


@dataclass(frozen=True, slots=True)
class Scored:
    """A scorer's answer with partition figures beside the stats (numbers, summed over the
    calls of one partition)."""

    stats: Sequence[Stat]
    figures: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Scorer(Protocol):
    """What an ``assay.scorers`` entry point names (see the module doc)."""

    metric: str

    def score(
        self, instances: Sequence[Instance], outputs: Sequence[ModelOutput], args: Any
    ) -> Iterable[Stat] | Scored: ...


def _builtin(name: str, value: str) -> Plugin:
    return Plugin(SCORERS_GROUP, name, value)


# assay's own scorers, declared as entry points are (loaded only when a suite names them).
BUILTIN_SCORERS = (
    _builtin("code_execution", "assay.scoring.code_execution:CodeExecution"),
    _builtin("ifeval", "assay.scoring.ifeval:IFEval"),
    _builtin("math_equivalence", "assay.scoring.math_equivalence:MathEquivalence"),
)


@dataclass(frozen=True)
class LoadedScorer:
    """A scorer ready to use: the plugin it came from and the object its entry point names."""

    plugin: Plugin
    scorer: Any  # satisfies Scorer

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def metric(self) -> str:
        return self.scorer.metric

    @property
    def ratios(self) -> dict[str, tuple[str, str]]:
        """Ratio metric → (numerator metric, denominator metric); empty for most scorers."""
        return {name: (num, den) for name, (num, den) in getattr(self.scorer, "ratios", {}).items()}

    @property
    def args_model(self) -> type[BaseModel] | None:
        return getattr(self.scorer, "Args", None)

    def validate(self, data: Mapping[str, Any] | None, where: str) -> BaseModel | None:
        """``scorer_args`` checked by the scorer's pydantic model (errors name ``where``)."""
        return validate_args(self.args_model, data, where)


def scorer_names() -> list[str]:
    """Every scorer a suite may name: built in and installed."""
    return sorted(available(SCORERS_GROUP, BUILTIN_SCORERS))


def get_scorer(name: str) -> LoadedScorer:
    """Load the scorer called ``name``; unknown names list the known ones, a broken plugin
    raises :class:`PluginError` naming it and its entry point."""
    plugin = find(SCORERS_GROUP, name, BUILTIN_SCORERS)
    if plugin is None:
        raise KeyError(f"unknown scorer {name!r}; known: {', '.join(scorer_names())}")
    obj = plugin.load()
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginError(
                f"{plugin}: could not be created: {type(exc).__name__}: {exc}"
            ) from exc
    problem = _shape_problem(obj)
    if problem:
        raise PluginError(f"{plugin} is not a scorer: {problem}")
    return LoadedScorer(plugin, obj)


def _shape_problem(obj: Any) -> str:
    if not callable(getattr(obj, "score", None)):
        return "it has no score(instances, outputs, args) method"
    metric = getattr(obj, "metric", None)
    if not isinstance(metric, str) or not metric:
        return "its 'metric' (the headline metric name) is not a non-empty string"
    model = getattr(obj, "Args", None)
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "its 'Args' is not a pydantic model class"
    check = getattr(obj, "check", None)
    if check is not None and not callable(check):
        return "its 'check' is not callable"
    return _ratios_problem(getattr(obj, "ratios", {}))


def _ratios_problem(ratios: Any) -> str:
    if not isinstance(ratios, Mapping):
        return "its 'ratios' is not a mapping of name to (numerator, denominator)"
    for name, pair in ratios.items():
        if not isinstance(name, str) or not name or name in RESERVED_METRICS:
            return f"its ratio name {name!r} is not a non-empty name of its own"
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not all(isinstance(m, str) and m for m in pair)
            or name in pair
        ):
            return (
                f"its ratio {name!r} is not (numerator metric, denominator metric), two other "
                f"metric names: {pair!r}"
            )
    return ""
