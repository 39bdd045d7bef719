"""A promotion decision judged sequentially: the suite's criteria checked after every chunk of
a partial evaluation (``assay.evaluate.sequential``), stopping as soon as the answer is clear.

The same function drives the evaluation and judges it. :func:`replay` walks the rounds of a
sequential evaluation over the scores it is given (round ``r``: every scenario still running
holds the first ``r·chunk`` instances of its order, or all of them): either the decision
stopped within them (``complete``, with the verdict), or it names how many instances each
running scenario needs next. The ``model_outputs`` asset evaluates and scores until the
replay is complete; the promotion sensor replays the stored tables and records the verdict,
so the verdict is recomputed from what is stored (same order, same data, same answer).

**Per round.** Each tested criterion with per-instance rows and bounded values (the metric's
range: ``assay.evaluate.sequential.bounds_of``) gets one observation per instance, in the
instance order: the mean of its paired rows, oriented so that clearing the criterion is
``>= threshold`` (relative: ``d = sign·(candidate − incumbent)`` against ``−margin``;
absolute: ``sign·value`` against ``sign·t``). ``sequential_test`` gives each an anytime-valid
test and ``sequential_verdicts`` decides them all with Holm over the decision at
``alpha·alpha_share``: ``below`` fails, ``above`` passes, and a decided criterion stays
decided. An absolute criterion on the point estimate is decided exactly once no value of the
instances not yet evaluated can change it (the full-set mean is bounded by the range).
The decision is refused as soon as one criterion fails (deny by default) and stops when it is
refused or every scenario stopped; a scenario stops when all its criteria are decided (passed)
or at its full set.

**At the full set**, a criterion still undecided is judged by the fixed-sample rule of
``assay.compare.decision`` (paired bootstrap, Holm over the undecided ones) at
``alpha·(1 − alpha_share)``. The anytime-valid tests err with probability at most
``alpha·alpha_share`` over every look and criterion (Ville's inequality, Holm), the
fixed-sample rule with at most ``alpha·(1 − alpha_share)``, so by the union bound the
decision's family-wise error stays at most ``alpha``. Where the full-sample verdict is clear
the sequential one agrees with it; where it is not, the remaining alpha decides as today.

Figures without per-instance rows (p95 latency, calibration error) and tested criteria whose
metric has no known range are not sequential: the first are judged on the evaluated instances
as today (noted), the second hold their scenario to its full set. A relative criterion on a
corpus figure (a perplexity: per-instance parts, no per-instance value) is of the second kind:
tested at the full set by the fixed-sample rule's ratio bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from assay.compare.corpus_figures import ratio_parts
from assay.compare.decision import (
    FAIL,
    PASS,
    CriterionResult,
    PromotionDecision,
    _absolute,
    _base,
    _decided,
    _Evaluation,
    _fail,
    _plan,
    _Planned,
    _relative,
    _skip,
    _unjudged,
)
from assay.core.environment import runtime_environment
from assay.core.records import TokenPrices
from assay.evaluate.criteria import PromotionCriteria, SequentialSpec
from assay.evaluate.sequential import (
    ChunkedPartition,
    bounds_of,
    evaluate_up_to,
    extent_of,
    order_key,
    outputs_table,
    start_partition,
)
from assay.evaluate.suite import Suite
from assay.models.base import ModelClient
from assay.registry import Registry
from assay.scoring.intervals import provisional_intervals
from assay.scoring.metrics.directions import LOWER_IS_BETTER, marked_lower_is_better
from assay.scoring.partition import SuiteScorer
from assay.stats import holm
from assay.stats.sequential import (
    ABOVE,
    BELOW,
    UNDECIDED,
    SequentialTest,
    sequential_test,
    sequential_verdicts,
)
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, evaluation_partition
from assay.storage.parquet import ParquetStore


@dataclass(slots=True)
class _Track:
    """One criterion followed round by round."""

    plan: _Planned
    lib: bool
    kind: str  # "test" (anytime-valid) or "estimate" (decided by the bounds of the mean)
    ranks: np.ndarray  # each observation's instance position in its scenario's order
    x: np.ndarray  # oriented observations, in instance order
    threshold: float  # oriented
    lower: float  # oriented range of one observation
    upper: float
    sign: float  # natural = sign · oriented (relative: the metric's direction)
    verdict: str = UNDECIDED
    round: int = 0
    n_used: int = 0
    instances: int = 0  # the scenario's instances evaluated when it was decided
    test: SequentialTest | None = None
    path: list[list[float]] = field(default_factory=list)  # [instances, n, cs_low, cs_high]

    def used(self, extent: int) -> int:
        """Observations among the first ``extent`` instances of the order."""
        return int(np.searchsorted(self.ranks, extent))


@dataclass(frozen=True, slots=True)
class ScenarioStop:
    """Where a scenario's sequential evaluation stopped (or stands)."""

    evaluated: int
    total: int
    reason: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The sequential evaluation replayed over given scores: complete with its decision, or
    the instances each still-running scenario needs next (``needs``)."""

    complete: bool
    rounds: int
    scenarios: dict[str, ScenarioStop]
    needs: dict[str, int]
    decision: PromotionDecision | None = None


def _instance_means(rows: Mapping[tuple, float]) -> dict[str, float]:
    """Instance id → the mean of its rows."""
    sums: dict[str, list[float]] = {}
    for key, value in rows.items():
        sums.setdefault(key[0], []).append(value)
    return {k: float(np.mean(v)) for k, v in sums.items()}


def _paired_means(a: Mapping[tuple, float], b: Mapping[tuple, float]) -> dict[str, float]:
    """Instance id → the mean of candidate − incumbent over its paired rows."""
    diffs: dict[str, list[float]] = {}
    for key in a.keys() & b.keys():
        diffs.setdefault(key[0], []).append(a[key] - b[key])
    return {k: float(np.mean(v)) for k, v in diffs.items()}


def _track(
    plan: _Planned,
    lib: bool,
    cand: _Evaluation,
    inc: _Evaluation | None,
    spec: SequentialSpec,
    rank: Mapping[str, int],
) -> _Track | None:
    """The track of a criterion that can be followed sequentially, else None."""
    bounds = bounds_of(plan.metric, spec.bounds)
    if bounds is None:
        return None
    low, high = bounds
    if plan.margin is not None:  # relative: d = sign·(candidate − incumbent) vs −margin
        assert inc is not None
        means = _paired_means(cand.rows(plan.metric), inc.rows(plan.metric))
        sign = -1.0 if lib else 1.0
        width = high - low
        kind, threshold, lower, upper = "test", -float(plan.margin), -width, width
    else:
        means = _instance_means(cand.rows(plan.metric))
        sign = 1.0 if plan.at_least else -1.0
        t = float(plan.threshold or 0.0)
        kind = "estimate" if (plan.spec is None or plan.spec.bound == "estimate") else "test"
        threshold = sign * t
        lower, upper = sorted((sign * low, sign * high))
    if not means:
        return None
    if not lower < threshold < upper:
        # Every mean of such observations lies on one side of the threshold: the range alone
        # decides it (exactly), as for a criterion on the point estimate.
        kind = "estimate"
    ids = sorted((i for i in means if i in rank), key=rank.__getitem__)
    return _Track(
        plan,
        lib,
        kind,
        np.array([rank[i] for i in ids], dtype=int),
        np.array([sign * means[i] for i in ids], dtype=float),
        threshold,
        lower,
        upper,
        sign,
    )


def _natural(track: _Track, low: float, high: float) -> tuple[float, float]:
    a, b = track.sign * low, track.sign * high
    return (min(a, b), max(a, b))


def replay(
    suite: Suite,
    candidate: str,
    incumbent: str | None,
    cand: Mapping[str, _Evaluation],
    inc: Mapping[str, _Evaluation],
    totals: Mapping[str, int],
    criteria: PromotionCriteria | None = None,
    evaluated: Mapping[str, int] | None = None,
) -> Replay:
    """Replay the sequential evaluation over ``cand`` (the candidate's scores so far, per
    scenario) and ``inc`` (the incumbent's); ``totals``: each scenario's full set size;
    ``evaluated``: how many instances of its order each scenario's scores cover (default: the
    instances they hold rows of). See the module doc."""
    criteria = criteria or suite.promotion
    spec = criteria.sequential
    if spec is None:
        raise ValueError("the suite's promotion block has no 'sequential' settings")
    alpha_seq = criteria.alpha * spec.alpha_share
    scenarios = list(suite.keys)
    rank: dict[str, dict[str, int]] = {}
    available: dict[str, int] = {}
    for s in scenarios:
        ids = _evaluated_ids(cand[s])
        ordered = sorted(ids, key=lambda i, s=s: order_key(s, i))
        rank[s] = {i: k for k, i in enumerate(ordered)}
        available[s] = len(ordered) if evaluated is None else evaluated.get(s, 0)
    lower = set(LOWER_IS_BETTER) | marked_lower_is_better(
        *(e.card for e in (*cand.values(), *inc.values()))
    )
    plans = _plan(suite, criteria, cand) if all(cand[s].present for s in scenarios) else []
    tracks: list[_Track] = []
    holding: dict[str, int] = {s: 0 for s in scenarios}  # criteria that hold s to its full set
    for plan in plans:
        lib = plan.metric in lower
        if plan.scenario not in cand:
            continue
        if plan.margin is not None and (incumbent is None or not inc[plan.scenario].present):
            continue
        other = inc.get(plan.scenario) if plan.margin is not None else None
        track = _track(plan, lib, cand[plan.scenario], other, spec, rank[plan.scenario])
        if track is not None:
            tracks.append(track)
        elif _has_rows(plan, cand[plan.scenario], other):
            holding[plan.scenario] += 1  # tested, but unbounded: judged at the full set
    frozen: dict[str, ScenarioStop] = {}
    refused_by: _Track | None = None
    r = 0
    while True:
        r += 1
        extent = {}
        for s in scenarios:
            if s in frozen:
                extent[s] = frozen[s].evaluated
                continue
            extent[s] = min(r * spec.chunk, totals[s])
        needs = {s: n for s, n in extent.items() if s not in frozen and available[s] < n}
        if needs:
            stand = {
                s: frozen.get(s) or ScenarioStop(available[s], totals[s], "running")
                for s in scenarios
            }
            return Replay(False, r - 1, stand, {s: extent[s] for s in scenarios if s not in frozen})
        tests = []
        for t in (t for t in tracks if t.kind == "test"):
            n = t.used(extent[t.plan.scenario])
            test = sequential_test(
                t.x[:n], t.threshold, lower=t.lower, upper=t.upper, alpha=alpha_seq
            )
            tests.append((t, n, test))
        verdicts = sequential_verdicts([test for _, _, test in tests], alpha_seq)
        for (t, n, test), verdict in zip(tests, verdicts, strict=True):
            if t.verdict != UNDECIDED:
                continue
            if n:
                low, high = _natural(t, float(test.cs_low[-1]), float(test.cs_high[-1]))
                t.path.append([extent[t.plan.scenario], n, low, high])
            t.test, t.n_used, t.instances = test, n, extent[t.plan.scenario]
            if verdict != UNDECIDED:
                t.verdict, t.round = verdict, r
        for t in (t for t in tracks if t.kind == "estimate" and t.verdict == UNDECIDED):
            s = t.plan.scenario
            n = t.used(extent[s])
            seen, left = float(t.x[:n].sum()), totals[s] - extent[s]
            t.n_used, t.instances = n, extent[s]
            # The full-set mean over ``totals`` instances, whatever the rest turn out to be
            # (the scorecard's mean over rows equals the mean of instance means when every
            # instance has as many rows: the same variants and trials for all).
            best = (seen + left * t.upper) / totals[s]
            worst = (seen + left * t.lower) / totals[s]
            if worst >= t.threshold:
                t.verdict, t.round = ABOVE, r
            elif best < t.threshold:
                t.verdict, t.round = BELOW, r
        failed = [t for t in tracks if t.verdict == BELOW]
        if failed:
            refused_by = failed[0]
            why = f"the decision was refused at round {r}: {_what(refused_by)} failed"
            for s in scenarios:
                if s not in frozen:
                    frozen[s] = ScenarioStop(extent[s], totals[s], why)
            break
        for s in scenarios:
            if s in frozen:
                continue
            mine = [t for t in tracks if t.plan.scenario == s]
            if extent[s] >= totals[s]:
                frozen[s] = ScenarioStop(extent[s], totals[s], "full set")
            elif not holding[s] and all(t.verdict == ABOVE for t in mine):
                frozen[s] = ScenarioStop(
                    extent[s], totals[s], f"every criterion decided (passed) at round {r}"
                )
        if len(frozen) == len(scenarios):
            break
    decision = _verdict(
        suite,
        criteria,
        candidate,
        incumbent,
        cand,
        inc,
        plans,
        tracks,
        frozen,
        lower,
        refused_by,
        r,
    )
    return Replay(True, r, frozen, {}, decision)


def _evaluated_ids(evaluation: _Evaluation) -> set[str]:
    if evaluation.scores is None:
        return set()
    return set(evaluation.scores.column("instance_id").to_pylist())


def _has_rows(plan: _Planned, cand: _Evaluation, inc: _Evaluation | None) -> bool:
    if plan.spec is not None and plan.margin is None and plan.spec.bound == "estimate":
        return False  # judged on the estimate, untested
    rows = cand.rows(plan.metric)
    if plan.margin is not None and inc is not None:
        if not rows and ratio_parts(plan.metric, [cand.rows, inc.rows]) is not None:
            return True  # a corpus figure: tested on its parts (decision._ratio_test)
        return bool(rows.keys() & inc.rows(plan.metric).keys())
    return bool(rows)


def _what(t: _Track) -> str:
    return f"{t.plan.scenario} {t.plan.metric}" + (" vs incumbent" if t.plan.margin else "")


def _verdict(
    suite: Suite,
    criteria: PromotionCriteria,
    candidate: str,
    incumbent: str | None,
    cand: Mapping[str, _Evaluation],
    inc: Mapping[str, _Evaluation],
    plans: list[_Planned],
    tracks: list[_Track],
    frozen: Mapping[str, ScenarioStop],
    lower: set[str],
    refused_by: _Track | None,
    rounds: int,
) -> PromotionDecision:
    spec = criteria.sequential
    assert spec is not None
    rest = criteria.model_copy(update={"alpha": criteria.alpha * (1 - spec.alpha_share)})
    by_plan = {id(t.plan): t for t in tracks}
    results: list[CriterionResult | None] = []
    pending: list[tuple[int, _Planned, dict[str, Any]]] = []
    for scenario in suite.keys:
        if not cand[scenario].present:
            results.append(_unjudged(scenario, "*", f"{candidate} has no scores on {scenario}"))
    for plan in plans:
        lib = plan.metric in lower
        if plan.scenario not in cand:
            results.append(_fail(plan, lib, f"no scenario reports {plan.metric}"))
            continue
        stop = frozen[plan.scenario]
        if plan.margin is not None and incumbent is None:
            results.append(_skip(plan, lib, "no incumbent: absolute criteria alone decide"))
            continue
        if plan.margin is not None and not inc[plan.scenario].present:
            note = f"incumbent {incumbent} has no scores on {plan.scenario}"
            results.append(_fail(plan, lib, note))
            continue
        track = by_plan.get(id(plan))
        if track is not None and track.verdict != UNDECIDED:
            results.append(_sequential_result(plan, lib, track, stop, criteria))
            continue
        at_full = stop.evaluated >= stop.total
        if track is not None and not at_full:
            note = (
                f"undecided at {track.instances} of {stop.total} instances when the decision "
                "stopped"
            )
            results.append(_skip(plan, lib, note))
            continue
        if plan.margin is not None:
            outcome = _relative(
                plan, cand[plan.scenario], inc[plan.scenario], lib, rest, candidate, incumbent or ""
            )
        else:
            outcome = _absolute(plan, cand[plan.scenario], lib, rest, candidate)
        if isinstance(outcome, CriterionResult):
            if not at_full:
                where = f"{stop.evaluated} of {stop.total} instances"
                outcome = replace(outcome, note=_join(outcome.note, f"judged on {where}"))
            results.append(outcome)
        elif not at_full:  # tested, unbounded, and the decision stopped first
            note = f"not sequentially testable; the decision stopped at {stop.evaluated}"
            results.append(_skip(plan, lib, f"{note} of {stop.total} instances"))
        else:
            results.append(None)
            pending.append((len(results) - 1, plan, outcome))
    adjusted = holm([figures["p"] for _, _, figures in pending]) if pending else []
    for (index, plan, figures), p_adj in zip(pending, adjusted, strict=True):
        decided = _decided(plan, figures, float(p_adj), rest)
        note = f"undecided sequentially: fixed-sample rule at the full set, alpha {rest.alpha:g}"
        results[index] = replace(decided, note=_join(decided.note, note))
    judged = tuple(r for r in results if r is not None)
    evaluated = sum(s.evaluated for s in frozen.values())
    total = sum(s.total for s in frozen.values())
    stopped = (
        f"refused at round {rounds}: {_what(refused_by)} failed"
        if refused_by is not None
        else f"stopped at round {rounds}"
    )
    summary = (
        f"sequential: {evaluated} of {total} instances evaluated, {stopped}, chunk {spec.chunk}, "
        f"alpha share {spec.alpha_share:g}"
    )
    figures = {
        "summary": summary,
        "chunk": spec.chunk,
        "alpha_share": spec.alpha_share,
        "alpha_sequential": criteria.alpha * spec.alpha_share,
        "alpha_full_set": rest.alpha,
        "rounds": rounds,
        "stopped": stopped,
        "instances_evaluated": evaluated,
        "instances_total": total,
        "scenarios": [
            {"scenario": s, "evaluated": v.evaluated, "total": v.total, "reason": v.reason}
            for s, v in frozen.items()
        ],
        "criteria": [_track_record(t) for t in tracks],
    }
    return PromotionDecision(
        candidate=candidate,
        incumbent=incumbent,
        mode=criteria.mode,
        alpha=criteria.alpha,
        criteria=judged,
        sequential=figures,
    )


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _sequential_result(
    plan: _Planned, lib: bool, t: _Track, stop: ScenarioStop, criteria: PromotionCriteria
) -> CriterionResult:
    outcome = PASS if t.verdict == ABOVE else FAIL
    mean = float(t.x[: t.n_used].mean()) if t.n_used else math.nan
    estimate = t.sign * mean
    where = f"{t.instances} of {stop.total} instances"
    if t.kind == "estimate":
        side = "clears" if outcome == PASS else "misses"
        note = (
            f"decided at {where}: the full-set mean {side} the threshold whatever the "
            "instances not evaluated score"
        )
        return CriterionResult(
            **_base(plan, lib),
            estimate=estimate,
            ci_low=None,
            ci_high=None,
            p_value=None,
            p_adjusted=None,
            n=t.n_used,
            outcome=outcome,
            note=note,
        )
    assert t.test is not None
    low, high = _natural(t, float(t.test.cs_low[-1]), float(t.test.cs_high[-1]))
    p = t.test.p_above if t.verdict == ABOVE else t.test.p_below
    alpha_seq = criteria.alpha * (criteria.sequential.alpha_share if criteria.sequential else 1)
    note = (
        f"decided sequentially at {where} ({t.verdict} the threshold; anytime-valid p {p:.3g}, "
        f"Holm over the decision at alpha {alpha_seq:g})"
    )
    return CriterionResult(
        **_base(plan, lib),
        estimate=estimate,
        ci_low=low,
        ci_high=high,
        p_value=float(p),
        p_adjusted=None,
        n=t.n_used,
        outcome=outcome,
        note=note,
    )


def _track_record(t: _Track) -> dict[str, Any]:
    threshold = t.sign * t.threshold
    return {
        "scenario": t.plan.scenario,
        "metric": t.plan.metric,
        "kind": "relative" if t.plan.margin is not None else "absolute",
        "test": "anytime-valid" if t.kind == "test" else "bounded mean",
        "threshold": threshold,
        "verdict": {ABOVE: PASS, BELOW: FAIL}.get(t.verdict, "undecided"),
        "round": t.round,
        "n_used": t.n_used,
        "stopped_at": t.instances,
        "why": (
            f"confidence sequence {'above' if t.verdict == ABOVE else 'below'} the threshold"
            if t.kind == "test" and t.verdict != UNDECIDED
            else "the full-set mean is decided by the range"
            if t.verdict != UNDECIDED
            else "undecided"
        ),
        # (instances evaluated, observations, cs_low, cs_high) after each round, in the
        # metric's own units (relative: candidate − incumbent).
        "path": [[int(a), int(b), _finite(c), _finite(d)] for a, b, c, d in t.path],
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def judge_sequential(
    store: ParquetStore,
    suite: Suite,
    candidate: str,
    incumbent: str | None,
    criteria: PromotionCriteria | None = None,
) -> Replay:
    """Replay the candidate's stored (partial) evaluation against the incumbent's stored one:
    what the promotion sensor calls. Each scenario's full set size is what the candidate's
    ``metric_tables`` record (``instances_total``), or what it holds when it is full."""
    cand = {s: _Evaluation(store, candidate, s) for s in suite.keys}
    inc = {s: _Evaluation(store, incumbent, s) for s in suite.keys} if incumbent else {}
    totals, evaluated = {}, {}
    for s, e in cand.items():
        extent = extent_of(e.card)
        evaluated[s] = extent.evaluated if extent is not None else len(_evaluated_ids(e))
        totals[s] = extent.total if extent is not None else evaluated[s]
    return replay(suite, candidate, incumbent, cand, inc, totals, criteria, evaluated)


def stored_evaluation(store: ParquetStore, key: str, scenario: str) -> _Evaluation:
    """A version's stored scores of one scenario (what the sequential run reads of the
    incumbent)."""
    where = evaluation_partition(key, scenario)
    card = store.read(METRIC_TABLES, where) if store.exists(METRIC_TABLES, where) else None
    scores = store.read(INSTANCE_SCORES, where) if store.exists(INSTANCE_SCORES, where) else None
    return _Evaluation.of_tables(card, scores)


def evaluate_sequentially(
    suite: Suite,
    candidate: str,
    incumbent: str | None,
    incumbent_scores: Mapping[str, _Evaluation],
    totals: Mapping[str, int],
    evaluate_to: Callable[[str, int], None],
    score: Callable[[str], tuple[pa.Table, pa.Table]],
    log: Callable[[str], None] = print,
) -> Replay:
    """Drive a sequential evaluation: replay what is evaluated so far, evaluate what the
    replay needs next (``evaluate_to(scenario, size)``: the first ``size`` instances of the
    order), score it (``score(scenario)`` → its ``metric_tables`` and ``instance_scores``
    tables so far), until the replay is complete. What the ``model_outputs`` asset runs.

    Each round is scored under :func:`~assay.scoring.intervals.provisional_intervals`: the
    replay reads per-instance rows and means, not the resampled intervals of partition-level
    figures, which would cost more per chunk than the chunk's requests. So the returned
    decision is provisional where a criterion reads such an interval; the verdict that counts
    is the sensor's, from the stored tables scored in full (:func:`judge_sequential`)."""
    cards: dict[str, _Evaluation] = {s: _Evaluation.of_tables(None, None) for s in suite.keys}
    done = dict.fromkeys(suite.keys, 0)
    while True:
        replayed = replay(
            suite, candidate, incumbent, cards, incumbent_scores, totals, evaluated=done
        )
        if replayed.complete:
            return replayed
        for scenario, size in replayed.needs.items():
            if size <= done[scenario]:
                raise RuntimeError(f"sequential replay asks {scenario} for {size} again")
            evaluate_to(scenario, size)
            with provisional_intervals():
                card, stats = score(scenario)
            cards[scenario] = _Evaluation.of_tables(card, stats)
            done[scenario] = size
        sizes = ", ".join(f"{s} {n}/{totals[s]}" for s, n in replayed.needs.items())
        log(f"sequential round {replayed.rounds + 1} of {candidate}: {sizes}")


@dataclass(frozen=True, slots=True)
class SequentialEvaluation:
    """A candidate's sequential evaluation across the suite: each scenario's chunked
    partition (its outputs so far and why it stopped) and the replay that stopped it."""

    parts: dict[str, ChunkedPartition]
    replayed: Replay


def run_sequential_evaluation(
    suite: Suite,
    candidate: str,
    incumbent: str | None,
    scenario_instances: Mapping[str, pa.Table],
    client: ModelClient,
    scorer: SuiteScorer,
    store: ParquetStore,
    *,
    max_instances: int | None = None,
    registry: Callable[[], Registry] | None = None,
    prices: TokenPrices | None = None,
    environment: dict | None = None,
    max_failure_fraction: float = 0.0,
    label: str | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> SequentialEvaluation:
    """Evaluate ``candidate`` on every scenario of ``suite`` chunk by chunk in each
    scenario's instance order, scoring each chunk with ``scorer`` against
    the incumbent's stored scores, until :func:`evaluate_sequentially` stops: what the
    ``model_outputs`` asset runs on a sequential decision's run. Each partition's
    ``stop_reason`` says where it stopped."""
    parts = {
        s: start_partition(suite[s], scenario_instances[s], max_instances, registry)
        for s in suite.keys
    }
    environment = environment or runtime_environment()
    name = label or candidate

    def evaluate_to(scenario: str, size: int) -> None:
        evaluate_up_to(
            parts[scenario],
            size,
            client,
            store=store,
            label=f"{name} × {scenario}",
            max_failure_fraction=max_failure_fraction,
            log=log,
            warn=warn,
        )

    def score(scenario: str) -> tuple[pa.Table, pa.Table]:
        table = outputs_table(parts[scenario], prices, environment)
        scored = scorer.score(
            candidate,
            scenario,
            scenario_instances[scenario],
            table,
            seed_key=f"{candidate}|{scenario}",
        )
        return scored.card_table, scored.stats_table

    incumbent_scores = (
        {s: stored_evaluation(store, incumbent, s) for s in suite.keys} if incumbent else {}
    )
    replayed = evaluate_sequentially(
        suite,
        candidate,
        incumbent,
        incumbent_scores,
        {s: p.total for s, p in parts.items()},
        evaluate_to,
        score,
        log=log,
    )
    for scenario, part in parts.items():
        part.stop_reason = replayed.scenarios[scenario].reason
    return SequentialEvaluation(parts, replayed)


def sequential_lines(record: Mapping[str, Any]) -> list[str]:
    """A verdict's sequential figures as lines (``assay registry history``): per scenario how
    many instances were evaluated and why it stopped, per criterion where it was decided and
    its confidence sequence at each chunk boundary."""
    figures = record.get("sequential")
    if not isinstance(figures, Mapping):
        return []
    lines = [str(figures.get("summary", "sequential"))]
    for row in figures.get("scenarios") or []:
        lines.append(
            f"  {row['scenario']}: {row['evaluated']} of {row['total']} instances evaluated, "
            f"stopped: {row['reason']}"
        )
    for row in figures.get("criteria") or []:
        where = f"{row['scenario']} {row['metric']} ({row['kind']}, {row['test']})"
        lines.append(
            f"  {where}: {row['verdict']} after {row['stopped_at']} instances "
            f"({row['n_used']} observations, round {row['round']}): {row['why']}; threshold "
            f"{row['threshold']:+.4g}"
        )
        path = ", ".join(f"{a}: [{_fmt(c)}, {_fmt(d)}]" for a, _, c, d in row.get("path") or [])
        if path:
            lines.append(f"    confidence sequence by instances evaluated: {path}")
    return lines


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:+.3f}"


__all__ = (
    "Replay",
    "ScenarioStop",
    "SequentialEvaluation",
    "evaluate_sequentially",
    "judge_sequential",
    "replay",
    "run_sequential_evaluation",
    "sequential_lines",
    "stored_evaluation",
)
