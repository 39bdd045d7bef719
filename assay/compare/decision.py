"""Judge a promotion: every declared criterion of the suite (``assay.evaluate.criteria``) on a
candidate's stored evaluation, against the incumbent's where a criterion is relative.

Per criterion, from the stored ``instance_scores`` (paired rows, instance-clustered, as the
per-partition regression check) or, for a figure with no per-instance rows (p95 latency,
calibration error, bias), from the ``metric_tables`` headline row:

- **absolute** (``at_least`` / ``at_most``): on the ``estimate``, the candidate's mean must
  clear the threshold; on the ``lower`` / ``upper`` bound, the bound of the ``1 - alpha``
  interval must clear it and the one-sided test of ``H0: mean = threshold`` must reject after
  Holm's correction.
- **relative** (``margin``; ``d`` = candidate − incumbent oriented so positive is better):
  ``require_non_inferiority`` passes when the lower end of the paired interval of ``d`` clears
  ``-margin`` and the one-sided test of ``H0: d <= -margin`` rejects after Holm;
  ``block_regressions`` fails only when the upper end lies below ``-margin`` and the test of
  ``H0: d = -margin`` rejects after Holm (the per-partition check's rule). A corpus figure
  (lm-eval's perplexities, pooled rates: a ratio of per-instance sums) is tested on the
  shared instances by a paired bootstrap of the figure itself, both parts of an instance
  resampled together (:func:`_ratio_test`). Any other figure with no per-instance rows is
  judged on the estimates' difference, untested.

Holm's correction runs over every tested criterion of the decision (all scenarios, metrics
and families together), so the decision's family-wise error stays at ``alpha``. With no
incumbent (the first holder) relative criteria are skipped and the absolute ones decide.
A criterion that cannot be judged (a scenario not evaluated, a metric absent) fails: deny by
default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from assay.compare.corpus_figures import headline_figure, paired_ratio, ratio_parts
from assay.compare.ranking import compare_pair
from assay.core.digests import seed_from
from assay.core.records import is_headline
from assay.evaluate.criteria import CriterionSpec, PromotionCriteria
from assay.evaluate.suite import Suite
from assay.scoring.metrics.directions import LOWER_IS_BETTER, marked_lower_is_better
from assay.stats import holm
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, evaluation_partition
from assay.storage.parquet import ParquetStore

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One judged criterion: its figures in the metric's own units and direction.

    ``estimate`` is the candidate's mean (absolute) or candidate − incumbent (relative);
    ``threshold`` is what the judged figure (``on``) must clear: at least it when
    ``direction`` is ``>=``, at most it when ``<=``.
    """

    scenario: str
    metric: str
    kind: str  # "absolute" or "relative"
    on: str  # "estimate", "lower", "upper" (absolute) or "interval" (relative)
    direction: str  # ">=" or "<="
    threshold: float
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None
    n: int
    outcome: str  # pass, fail, skipped
    note: str = ""
    family: str = ""
    lower_is_better: bool = False

    def sentence(self) -> str:
        """One line with the numbers: what was judged, what it had to clear, the outcome."""
        what = f"{self.scenario} {self.metric}"
        if self.kind == "relative":
            what += " vs incumbent (candidate − incumbent)"
        parts = [f"{what}: {self.outcome}"]
        if self.estimate is not None:
            parts.append(
                f"estimate {self.estimate:+.4g}"
                if self.kind == "relative"
                else f"estimate {self.estimate:.4g}"
            )
        if self.ci_low is not None and self.ci_high is not None:
            parts.append(f"CI [{self.ci_low:+.4g}, {self.ci_high:+.4g}]")
        judged = "interval" if self.on == "interval" else self.on
        parts.append(f"{judged} must be {self.direction} {self.threshold:+.4g}")
        if self.p_adjusted is not None:
            parts.append(f"p {self.p_value:.3g} (Holm {self.p_adjusted:.3g})")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """The verdict on one candidate: approved when no judged criterion failed."""

    candidate: str
    incumbent: str | None
    mode: str
    alpha: float
    criteria: tuple[CriterionResult, ...]
    # A sequential decision's figures (``assay.compare.sequential``): per scenario how many
    # instances were evaluated and why it stopped, per criterion where it was decided.
    sequential: dict[str, Any] | None = None

    @property
    def approved(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[CriterionResult]:
        return [c for c in self.criteria if c.outcome == FAIL]

    @property
    def summary(self) -> str:
        """One paragraph: approved, or the failing criteria with their numbers."""
        judged = [c for c in self.criteria if c.outcome != SKIPPED]
        against = f"vs {self.incumbent}" if self.incumbent else "with no incumbent"
        if self.sequential:
            against += f" ({self.sequential['summary']})"
        if self.approved and not judged:
            return (
                f"approved: {self.candidate} {against}: no criterion applies (relative criteria "
                f"need an incumbent and no absolute criterion is declared; {self.mode})"
            )
        if self.approved:
            return (
                f"approved: {self.candidate} {against} passed {len(judged)} criteria "
                f"({self.mode}, alpha {self.alpha:g}, Holm)"
            )
        lines = "; ".join(c.sentence() for c in self.failed)
        return (
            f"refused: {self.candidate} {against} failed {len(self.failed)} of {len(judged)} "
            f"criteria ({self.mode}, alpha {self.alpha:g}, Holm): {lines}"
        )

    def to_record(self) -> dict[str, Any]:
        """JSON-safe (NaN as null): what a verdict event carries."""
        return {
            "approved": self.approved,
            "mode": self.mode,
            "alpha": self.alpha,
            "correction": "holm",
            "summary": self.summary,
            "criteria": [_json_safe(asdict(c)) for c in self.criteria],
            **({"sequential": self.sequential} if self.sequential else {}),
        }


def _json_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


@dataclass(frozen=True, slots=True)
class _Planned:
    """A criterion bound to one scenario and metric, before Holm."""

    spec: CriterionSpec | None  # None: the implicit primary-metric criterion
    scenario: str
    metric: str
    family: str
    margin: float | None
    threshold: float | None
    at_least: bool


class _Evaluation:
    """A version's stored scores of one scenario, read once."""

    def __init__(
        self,
        store: ParquetStore,
        key: str,
        scenario: str,
        layouts: Mapping[str, str] | None = None,
    ) -> None:
        self.layouts = layouts or {}  # template id → the name rows pair on
        where = evaluation_partition(key, scenario)
        self.present = store.exists(METRIC_TABLES, where)
        self.card = store.read(METRIC_TABLES, where) if self.present else None
        self.scores = (
            store.read(INSTANCE_SCORES, where) if store.exists(INSTANCE_SCORES, where) else None
        )

    @classmethod
    def of_tables(cls, card: pa.Table | None, scores: pa.Table | None) -> _Evaluation:
        """An evaluation held in memory (a sequential run's scores so far)."""
        out = cls.__new__(cls)
        out.layouts, out.present, out.card, out.scores = {}, card is not None, card, scores
        return out

    def headline(self, metric: str) -> dict[str, Any] | None:
        if self.card is None:
            return None
        for row in self.card.to_pylist():
            if row["metric"] == metric and is_headline(row):
                return row
        return None

    def family_metrics(self, family: str) -> list[str]:
        if self.card is None:
            return []
        return sorted(
            {
                row["metric"]
                for row in self.card.to_pylist()
                if row["family"] == family and is_headline(row) and not row.get("reason")
            }
        )

    def rows(self, metric: str) -> dict[tuple, float]:
        """(instance, trial, template, group) → value of the unperturbed rows of ``metric``."""
        if self.scores is None:
            return {}
        table = self.scores
        selected = [
            r
            for r in table.select(
                ["instance_id", "metric", "value", "perturbation", "trial", "template_id", "group"]
            ).to_pylist()
            if r["metric"] == metric and r["perturbation"] == ""
        ]
        if any(r["group"] == "" for r in selected):
            selected = [r for r in selected if r["group"] == ""]
        return {
            (
                r["instance_id"],
                r["trial"],
                self.layouts.get(r["template_id"], r["template_id"]),
                r["group"],
            ): float(r["value"])
            for r in selected
            if r["value"] is not None and math.isfinite(r["value"])
        }


def judge_promotion(
    store: ParquetStore,
    suite: Suite,
    candidate: str,
    incumbent: str | None,
    criteria: PromotionCriteria | None = None,
) -> PromotionDecision:
    """Judge ``candidate`` (a version key) against ``incumbent`` on every scenario of the suite
    from the stored tables; see the module doc. ``criteria`` defaults to the suite's."""
    cand = {s: _Evaluation(store, candidate, s) for s in suite.keys}
    inc = {s: _Evaluation(store, incumbent, s) for s in suite.keys} if incumbent else {}
    return _judge(suite, criteria or suite.promotion, candidate, incumbent, [("", cand, inc)])


def judge_prompt_promotion(
    candidate_store: ParquetStore,
    incumbent_store: ParquetStore | None,
    suite: Suite,
    model_versions: list[str],
    candidate: str,
    incumbent: str | None,
    layouts: Mapping[str, str] | None = None,
    criteria: PromotionCriteria | None = None,
) -> PromotionDecision:
    """Judge a candidate prompt version against the one its alias held, on the same model
    versions: each store holds one prompt version's trial tables
    (``assay.evaluate.prompt_trials``), ``suite`` the entries that read the alias. Every
    criterion is judged per model version (its results name the scenario ``<key> on
    <version>``), and Holm runs over all of them together.

    ``layouts``: template id → the layout's place in its entry (base, variant i), for both
    prompt versions, so rows pair across versions whose layouts (and so template ids) differ.
    """
    criteria = criteria or suite.promotion
    keys = set(suite.keys)
    criteria = criteria.model_copy(
        update={"criteria": [c for c in criteria.criteria if c.scenario in (None, *keys)]}
    )
    pairings = []
    for version in model_versions:
        cand = {s: _Evaluation(candidate_store, version, s, layouts) for s in suite.keys}
        inc = (
            {s: _Evaluation(incumbent_store, version, s, layouts) for s in suite.keys}
            if incumbent and incumbent_store is not None
            else {}
        )
        pairings.append((f" on {version}", cand, inc))
    return _judge(suite, criteria, candidate, incumbent, pairings)


def _judge(
    suite: Suite,
    criteria: PromotionCriteria,
    candidate: str,
    incumbent: str | None,
    pairings: list[tuple[str, dict[str, _Evaluation], dict[str, _Evaluation]]],
) -> PromotionDecision:
    """Every criterion on each (label, candidate's, incumbent's) pairing; one Holm family."""
    results: list[CriterionResult | None] = []
    tests: list[tuple[int, float]] = []  # (index in results, raw p) of tested criteria
    pending: list[tuple[int, _Planned, dict[str, Any], str]] = []
    lower = set(LOWER_IS_BETTER) | marked_lower_is_better(
        *(e.card for _, cand, inc in pairings for e in (*cand.values(), *inc.values()))
    )

    def add(result: CriterionResult, label: str) -> None:
        results.append(replace(result, scenario=result.scenario + label) if label else result)

    for label, cand, inc in pairings:
        for scenario in suite.keys:
            if not cand[scenario].present:
                note = f"{candidate} has no scores on {scenario}{label}"
                add(_unjudged(scenario, "*", note), label)
        for plan in _plan(suite, criteria, cand):
            lib = plan.metric in lower
            if plan.scenario not in cand:  # a declared criterion no scenario reports
                add(_fail(plan, lib, f"no scenario reports {plan.metric}"), label)
                continue
            if plan.margin is not None:
                if incumbent is None:
                    note = "no incumbent: absolute criteria alone decide"
                    add(_skip(plan, lib, note), label)
                    continue
                if not inc[plan.scenario].present:
                    note = f"incumbent {incumbent} has no scores on {plan.scenario}{label}"
                    add(_fail(plan, lib, note), label)
                    continue
                outcome = _relative(
                    plan,
                    cand[plan.scenario],
                    inc[plan.scenario],
                    lib,
                    criteria,
                    candidate,
                    incumbent,
                )
            else:
                outcome = _absolute(plan, cand[plan.scenario], lib, criteria, candidate)
            if isinstance(outcome, CriterionResult):
                add(outcome, label)
            else:  # tested: decided after Holm
                results.append(None)
                tests.append((len(results) - 1, outcome["p"]))
                pending.append((len(results) - 1, plan, outcome, label))

    adjusted = holm([p for _, p in tests]) if tests else []
    for (index, plan, figures, label), p_adj in zip(pending, adjusted, strict=True):
        decided = _decided(plan, figures, float(p_adj), criteria)
        results[index] = replace(decided, scenario=decided.scenario + label)
    return PromotionDecision(
        candidate=candidate,
        incumbent=incumbent,
        mode=criteria.mode,
        alpha=criteria.alpha,
        criteria=tuple(r for r in results if r is not None),
    )


def _plan(
    suite: Suite, criteria: PromotionCriteria, cand: Mapping[str, _Evaluation]
) -> list[_Planned]:
    plans: list[_Planned] = []
    if criteria.primary_metrics:
        for key, config in suite.scenarios.items():
            plans.append(_Planned(None, key, config.metric, "", criteria.margin, None, True))
    for spec in criteria.criteria:
        scenarios = [spec.scenario] if spec.scenario is not None else list(suite.keys)
        found = 0
        for scenario in scenarios:
            if spec.metric is not None:
                metrics = [spec.metric]
                if spec.scenario is None and cand[scenario].headline(spec.metric) is None:
                    metrics = []  # "every scenario that reports it"
            else:
                metrics = cand[scenario].family_metrics(spec.family or "")
            for metric in metrics:
                found += 1
                threshold = spec.at_least if spec.at_least is not None else spec.at_most
                plans.append(
                    _Planned(
                        spec,
                        scenario,
                        metric,
                        spec.family or "",
                        spec.margin,
                        threshold,
                        spec.at_least is not None,
                    )
                )
        if not found:  # declared, and nothing reports it: it cannot pass
            where = spec.scenario or "any scenario"
            plans.append(
                _Planned(
                    spec,
                    where,
                    spec.subject,
                    spec.family or "",
                    spec.margin,
                    spec.at_least if spec.at_least is not None else spec.at_most,
                    spec.at_least is not None,
                )
            )
    return plans


def _unjudged(scenario: str, metric: str, note: str) -> CriterionResult:
    return CriterionResult(
        scenario,
        metric,
        "evaluated",
        "estimate",
        ">=",
        0.0,
        None,
        None,
        None,
        None,
        None,
        0,
        FAIL,
        note,
    )


def _base(plan: _Planned, lib: bool) -> dict[str, Any]:
    relative = plan.margin is not None
    if relative:
        # In the metric's own direction: higher-is-better diffs must stay above -margin.
        direction, threshold = ("<=", plan.margin) if lib else (">=", -plan.margin)
        on = "interval"
    else:
        direction = ">=" if plan.at_least else "<="
        threshold = float(plan.threshold or 0.0)
        on = plan.spec.bound if plan.spec is not None else "estimate"
    return {
        "scenario": plan.scenario,
        "metric": plan.metric,
        "kind": "relative" if relative else "absolute",
        "on": on,
        "direction": direction,
        "threshold": float(threshold),
        "family": plan.family,
        "lower_is_better": lib,
    }


def _skip(plan: _Planned, lib: bool, note: str) -> CriterionResult:
    return CriterionResult(
        **_base(plan, lib),
        estimate=None,
        ci_low=None,
        ci_high=None,
        p_value=None,
        p_adjusted=None,
        n=0,
        outcome=SKIPPED,
        note=note,
    )


def _fail(plan: _Planned, lib: bool, note: str) -> CriterionResult:
    return replace(_skip(plan, lib, note), outcome=FAIL)


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _absolute(
    plan: _Planned, cand: _Evaluation, lib: bool, criteria: PromotionCriteria, candidate: str
) -> CriterionResult | dict[str, Any]:
    row = cand.headline(plan.metric)
    if row is None or row.get("reason"):
        why = row.get("reason") if row else "not in the scorecard"
        return _fail(plan, lib, f"{plan.metric} absent on {plan.scenario}: {why}")
    base = _base(plan, lib)
    mean = _finite(row["mean"])
    if mean is None:
        return _fail(plan, lib, f"{plan.metric} has no value on {plan.scenario}")
    threshold = base["threshold"]
    bound = base["on"]
    rows = cand.rows(plan.metric)
    if bound == "estimate" or not rows:
        low, high = _finite(row.get("ci_low")), _finite(row.get("ci_high"))
        value = {"estimate": mean, "lower": low, "upper": high}[bound]
        if value is None:
            return _fail(plan, lib, f"{plan.metric} on {plan.scenario} has no interval")
        ok = value >= threshold if plan.at_least else value <= threshold
        return CriterionResult(
            **base,
            estimate=mean,
            ci_low=low,
            ci_high=high,
            p_value=None,
            p_adjusted=None,
            n=int(row.get("count") or 0),
            outcome=PASS if ok else FAIL,
            note="" if bound == "estimate" else "no per-instance rows: the scorecard's interval",
        )
    keys = sorted(rows)
    a = np.array([rows[k] for k in keys])
    sign = 1.0 if plan.at_least else -1.0  # oriented so that clearing the threshold is > 0
    comparison = compare_pair(
        sign * a,
        sign * np.full_like(a, threshold),
        model_a=candidate,
        model_b=f"threshold {threshold:g}",
        metric=plan.metric,
        scenario=plan.scenario,
        clusters=np.array([k[0] for k in keys], dtype=object),
        salt=("promotion", "absolute"),
        n_resamples=criteria.n_resamples,
        confidence=1.0 - criteria.alpha,
    )
    oriented_low = comparison.ci_low  # of sign * (mean - threshold)
    lo, hi = sorted((threshold + sign * comparison.ci_low, threshold + sign * comparison.ci_high))
    return {
        "base": base,
        "estimate": float(a.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "n": int(comparison.n),
        "p": _one_sided(comparison.p_value, comparison.mean_diff),
        "clears": oriented_low > 0,
    }


def _relative(
    plan: _Planned,
    cand: _Evaluation,
    inc: _Evaluation,
    lib: bool,
    criteria: PromotionCriteria,
    candidate: str,
    incumbent: str,
) -> CriterionResult | dict[str, Any]:
    base = _base(plan, lib)
    margin = float(plan.margin or 0.0)
    sign = -1.0 if lib else 1.0
    a_rows, b_rows = cand.rows(plan.metric), inc.rows(plan.metric)
    shared = sorted(a_rows.keys() & b_rows.keys())
    if not shared:
        tested = _ratio_test(plan, cand, inc, lib, criteria, candidate, incumbent)
        if tested is not None:
            return tested
        a_mean = headline_figure(cand.card, plan.metric)
        b_mean = headline_figure(inc.card, plan.metric)
        if a_mean is None or b_mean is None:
            who = candidate if a_mean is None else incumbent
            return _fail(plan, lib, f"{plan.metric} absent on {plan.scenario} for {who}")
        diff = a_mean - b_mean
        ok = sign * diff >= -margin
        return CriterionResult(
            **base,
            estimate=diff,
            ci_low=None,
            ci_high=None,
            p_value=None,
            p_adjusted=None,
            n=0,
            outcome=PASS if ok else FAIL,
            note="no paired per-instance rows: judged on the estimates' difference, untested",
        )
    a = np.array([a_rows[k] for k in shared])
    b = np.array([b_rows[k] for k in shared])
    comparison = compare_pair(
        sign * a + margin,
        sign * b,
        model_a=candidate,
        model_b=incumbent,
        metric=plan.metric,
        scenario=plan.scenario,
        clusters=np.array([k[0] for k in shared], dtype=object),
        salt=("promotion", "relative"),
        n_resamples=criteria.n_resamples,
        confidence=1.0 - criteria.alpha,
    )
    # Oriented d (positive is better), then back to the metric's own direction.
    low, high = comparison.ci_low - margin, comparison.ci_high - margin
    natural = (-high, -low) if lib else (low, high)
    if criteria.mode == "require_non_inferiority":
        p = _one_sided(comparison.p_value, comparison.mean_diff)
        clears = low > -margin
    else:
        p = comparison.p_value
        clears = not (high < -margin)
    return {
        "base": base,
        "estimate": float(a.mean() - b.mean()),
        "ci_low": float(natural[0]),
        "ci_high": float(natural[1]),
        "n": int(comparison.n),
        "p": p,
        "clears": clears,
    }


def _ratio_test(
    plan: _Planned,
    cand: _Evaluation,
    inc: _Evaluation,
    lib: bool,
    criteria: PromotionCriteria,
    candidate: str,
    incumbent: str,
) -> dict[str, Any] | None:
    """A relative criterion on a corpus figure (:mod:`.corpus_figures`): the figure per
    version over the instances both have, instances resampled with both versions' parts
    together; ``d`` is oriented so positive is better, as in :func:`_relative`. The p-values
    are the bootstrap's: one-sided for ``H0: d <= -margin``, two-sided for ``H0: d = -margin``.
    None when the figure is not such a ratio, the two versions' denominators differ, or no
    transform reproduces both scorecard figures."""
    parts = ratio_parts(plan.metric, [cand.rows, inc.rows])
    if parts is None:
        return None
    tested = paired_ratio(
        parts,
        (headline_figure(cand.card, plan.metric), headline_figure(inc.card, plan.metric)),
        lower_is_better=lib,
        n_resamples=criteria.n_resamples,
        seed=seed_from("promotion", "relative", plan.scenario, plan.metric, candidate, incumbent),
    )
    if tested is None:
        return None
    margin = float(plan.margin or 0.0)
    low, high = tested.interval(criteria.alpha)
    if criteria.mode == "require_non_inferiority":
        p, clears = tested.p_at_most(margin), low > -margin
    else:
        p, clears = tested.p_two_sided(margin), not (high < -margin)
    sign = -1.0 if lib else 1.0
    return {
        "base": _base(plan, lib),
        "estimate": sign * tested.d,
        "ci_low": -high if lib else low,
        "ci_high": -low if lib else high,
        "n": tested.n,
        "p": p,
        "clears": clears,
        "note": "a ratio of sums: instances resampled with both parts",
    }


def _one_sided(two_sided: float, shifted_mean: float) -> float:
    """The one-sided p-value of "the shifted mean is > 0" from a symmetric two-sided test."""
    half = two_sided / 2.0
    return float(half if shifted_mean > 0 else 1.0 - half)


def _decided(
    plan: _Planned, figures: dict[str, Any], p_adj: float, criteria: PromotionCriteria
) -> CriterionResult:
    base = figures["base"]
    significant = p_adj < criteria.alpha
    if base["kind"] == "relative" and criteria.mode == "block_regressions":
        # Fails only on a confident regression beyond the margin.
        regressed = not figures["clears"] and significant
        outcome, note = (FAIL, "confident regression") if regressed else (PASS, "")
    else:
        ok = figures["clears"] and significant
        note = (
            ""
            if ok
            else (
                "interval does not clear the threshold"
                if not figures["clears"]
                else f"not significant after Holm (alpha {criteria.alpha:g})"
            )
        )
        outcome = PASS if ok else FAIL
    if figures.get("note"):
        note = f"{note}; {figures['note']}" if note else figures["note"]
    return CriterionResult(
        **base,
        estimate=figures["estimate"],
        ci_low=figures["ci_low"],
        ci_high=figures["ci_high"],
        p_value=float(figures["p"]),  # the p-value Holm corrected (one-sided where tested so)
        p_adjusted=p_adj,
        n=figures["n"],
        outcome=outcome,
        note=note,
    )


def decision_from_record(record: Mapping[str, Any]) -> list[CriterionResult]:
    """The criteria of a stored verdict (an event payload), for pages and messages."""
    out = []
    for row in record.get("criteria") or []:
        if isinstance(row, Mapping):
            try:
                out.append(CriterionResult(**row))
            except TypeError:
                continue
    return out


__all__ = (
    "CriterionResult",
    "PromotionDecision",
    "decision_from_record",
    "judge_promotion",
    "judge_prompt_promotion",
)
