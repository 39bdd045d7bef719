"""Regression gate: may a candidate model version replace the champion?

The gate compares a candidate's per-instance scores with the champion's on the same scenario,
metric by metric, with paired tests clustered by instance (``assay.stats.compare``), and
fails only when the candidate is *confidently* worse by more than a tolerated margin.

Decision rule, per gated metric. Let ``d`` be the mean over paired rows of
``candidate - champion``, oriented so that positive means better (negated for lower-is-better
metrics such as latency, perplexity and bits per byte). The metric **regresses** when both

1. the upper end of the paired bootstrap ``1 - alpha`` percentile interval of ``d`` lies
   below ``-margin`` (the whole interval says "worse by more than the margin"), and
2. the Holm-adjusted p-value of the paired test of ``H0: d = -margin`` is below ``alpha``;
   the test runs on the rows shifted by the margin, so McNemar's exact test applies when the
   margin is 0 and the metric is binary with one row per instance, and the clustered
   sign-flip permutation test otherwise. Holm corrects over the gated metrics of one
   scenario.

A corpus figure (lm-eval's perplexities and bits per byte: a ratio of per-document sums, with
no per-instance value) is gated by the same rule on a paired bootstrap of the figure itself,
both parts of a document resampled together (``assay.compare.corpus_figures``), as the
promotion decision tests it.

The gate passes when no gated metric regresses. A candidate that is merely not better, or
worse by an amount the data cannot distinguish from noise, passes: the gate blocks
regressions, it does not demand improvements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from assay.compare.corpus_figures import headline_figure, paired_ratio, ratio_parts
from assay.compare.ranking import compare_pair
from assay.core.digests import seed_from
from assay.evaluate.sequential import extent_of
from assay.registry import Registry, RegistryError
from assay.registry.aliases import GATE_FAILED, GATE_PASSED, GATE_TAG_PREFIX
from assay.registry.errors import ErrorCode
from assay.scoring.metrics.directions import LOWER_IS_BETTER, marked_lower_is_better
from assay.stats.paired import Comparison, adjust
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, evaluation_partition
from assay.storage.parquet import ParquetStore

_KEY_COLUMNS = ("instance_id", "metric", "value", "perturbation", "trial", "template_id", "group")


@dataclass(frozen=True)
class GateConfig:
    """What the gate compares and how strict it is.

    ``metrics`` maps a scenario key to the metrics gated on it; a scenario not listed is gated
    on ``default_metrics`` (build both from a suite with ``GateConfig.from_suite``).
    ``margin`` is in the metric's own units: a regression smaller than it is tolerated.
    """

    champion_alias: str = "champion"
    metrics: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_metrics: tuple[str, ...] = ()
    margin: float = 0.0
    alpha: float = 0.05
    correction: str = "holm"
    lower_is_better: Collection[str] = LOWER_IS_BETTER
    perturbation: str = ""  # which rows are compared: "" is the unperturbed input
    n_resamples: int = 2000

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"GateConfig.alpha must be in (0, 1), got {self.alpha!r}")
        if not np.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"GateConfig.margin must be finite and >= 0, got {self.margin!r}")
        if self.correction not in ("holm", "bh"):
            raise ValueError(
                f"GateConfig.correction must be 'holm' or 'bh', got {self.correction!r}"
            )
        if self.n_resamples < 1:
            raise ValueError(f"GateConfig.n_resamples must be >= 1, got {self.n_resamples!r}")

    @classmethod
    def from_suite(cls, suite: object, **overrides: object) -> GateConfig:
        """Gate each scenario of ``suite`` (an ``assay.evaluate.suite.Suite``) on its primary
        metric."""
        scenarios = getattr(suite, "scenarios", None)
        if not isinstance(scenarios, Mapping):
            raise TypeError(f"expected an assay.evaluate.suite.Suite, got {type(suite).__name__}")
        metrics = {key: (config.metric,) for key, config in scenarios.items()}
        return cls(metrics=metrics, **overrides)  # type: ignore[arg-type]

    def metrics_for(self, scenario: str) -> tuple[str, ...]:
        """The gated metrics of ``scenario``; a clear error when none are configured."""
        gated = tuple(self.metrics.get(scenario, ())) or tuple(self.default_metrics)
        if not gated:
            raise ValueError(
                f"no gated metrics for scenario {scenario!r}: configure GateConfig.metrics "
                "(e.g. GateConfig.from_suite(suite)) or GateConfig.default_metrics"
            )
        return gated


@dataclass(frozen=True, slots=True)
class MetricGate:
    """One gated metric: the paired comparison of candidate and champion and its verdict.

    ``diff``, ``ci_low`` and ``ci_high`` are in the metric's own units and direction
    (``candidate - champion``); for a lower-is-better metric a positive diff is worse.
    """

    metric: str
    lower_is_better: bool
    n: int  # paired rows
    n_clusters: int  # instances
    candidate_mean: float
    champion_mean: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float  # of H0: oriented difference == -margin
    p_adjusted: float
    test: str
    regressed: bool
    unpaired_rows: int = 0  # rows present for only one of the two versions (left out)


@dataclass(frozen=True, slots=True)
class GateResult:
    """The gate's verdict on one scenario."""

    scenario: str
    candidate: str
    champion: str | None
    passed: bool
    reason: str  # one line
    comparisons: tuple[MetricGate, ...] = ()
    margin: float = 0.0
    alpha: float = 0.05

    @property
    def tag_key(self) -> str:
        """The registry tag the verdict is recorded under on the candidate version."""
        return gate_tag_key(self.scenario)

    @property
    def tag_value(self) -> str:
        return GATE_PASSED if self.passed else GATE_FAILED

    def to_markdown(self) -> str:
        """A small table for the Dagster UI or a terminal."""
        lines = [
            self.reason,
            "",
            "| metric | candidate | champion | diff | CI | p (adj.) | test | regressed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in self.comparisons:
            lines.append(
                f"| {c.metric}{' (lower better)' if c.lower_is_better else ''} "
                f"| {c.candidate_mean:.4g} | {c.champion_mean:.4g} | {c.diff:+.4g} "
                f"| [{c.ci_low:+.4g}, {c.ci_high:+.4g}] | {c.p_value:.3g} ({c.p_adjusted:.3g}) "
                f"| {c.test} | {'yes' if c.regressed else 'no'} |"
            )
        return "\n".join(lines)


def gate_tag_key(scenario: str) -> str:
    """``gate.<scenario>``: the version tag holding the gate verdict for one scenario."""
    return f"{GATE_TAG_PREFIX}{scenario}"


def no_champion(scenario: str, candidate: str, why: str) -> GateResult:
    """A passing result for a candidate with nothing to be compared against."""
    return GateResult(scenario, candidate, None, True, f"passed: {why}")


class _ScoreRows:
    """One version's instance_scores of the compared perturbation, grouped by metric once;
    :meth:`rows` gives a metric's compared rows."""

    def __init__(self, table: pa.Table, perturbation: str, name: str) -> None:
        missing = [c for c in _KEY_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{name} instance_scores lack column(s) {', '.join(missing)}")
        self.perturbation, self.name = perturbation, name
        self._by_metric: dict[str, list[dict]] = defaultdict(list)
        for row in table.select(list(_KEY_COLUMNS)).to_pylist():
            if row["perturbation"] == perturbation:
                self._by_metric[row["metric"]].append(row)
        self._rows: dict[str, dict[tuple, float]] = {}

    def rows(self, metric: str) -> dict[tuple, float]:
        """(instance_id, trial, template_id, group) → value for one metric's compared rows
        (none: empty).

        Ungrouped rows are used when there are any (a group breakdown repeats the instance);
        otherwise every instance carries exactly one group tag and all rows are used.
        """
        if metric not in self._rows:
            self._rows[metric] = self._select(metric)
        return self._rows[metric]

    def required(self, metric: str) -> dict[tuple, float]:
        """:meth:`rows`, with a clear error when there are none."""
        out = self.rows(metric)
        if not out:
            raise ValueError(
                f"{self.name} instance_scores have no rows for metric {metric!r} "
                f"(perturbation {self.perturbation!r})"
            )
        return out

    def _select(self, metric: str) -> dict[tuple, float]:
        selected = self._by_metric.get(metric, [])
        if any(row["group"] == "" for row in selected):
            selected = [row for row in selected if row["group"] == ""]
        out: dict[tuple, float] = {}
        for row in selected:
            key = (row["instance_id"], row["trial"], row["template_id"], row["group"])
            if key in out:
                raise ValueError(
                    f"{self.name} instance_scores repeat metric {metric!r} row (instance_id, "
                    f"trial, template_id, group)={key}"
                )
            value = row["value"]
            if value is None or not np.isfinite(value):
                raise ValueError(
                    f"{self.name} instance_scores: metric {metric!r} row {key} has value "
                    f"{value!r}; gated values must be finite"
                )
            out[key] = float(value)
        return out


def evaluate_gate(
    candidate_scores: pa.Table,
    champion_scores: pa.Table,
    config: GateConfig,
    *,
    scenario: str,
    candidate: str = "candidate",
    champion: str = "champion",
    candidate_card: pa.Table | None = None,
    champion_card: pa.Table | None = None,
) -> GateResult:
    """Compare candidate and champion instance_scores of one scenario; see the module doc.

    Both tables are long-format instance_scores (``InstanceStat.SCHEMA`` columns). Rows are
    paired on (instance_id, trial, template_id, group); rows only one side has are left out
    and counted. A corpus figure (a gated metric with no per-instance rows, only the parts of
    its ratio: lm-eval's perplexities) is tested by :func:`_corpus_figure`, which needs both
    versions' metric tables (``candidate_card``, ``champion_card``). Raises ValueError naming
    the table and metric when a gated metric is absent or the two versions share no rows
    for it.
    """
    metrics = config.metrics_for(scenario)
    cand_rows = _ScoreRows(candidate_scores, config.perturbation, f"candidate {candidate!r}")
    champ_rows = _ScoreRows(champion_scores, config.perturbation, f"champion {champion!r}")
    raw = []  # (metric, lower, candidate figure, champion figure, comparison, unpaired rows)
    for metric in metrics:
        lower = metric in config.lower_is_better
        # A corpus figure: no row of its own on the candidate, both parts of its ratio on each.
        parts = (
            None
            if cand_rows.rows(metric)
            else ratio_parts(metric, [cand_rows.rows, champ_rows.rows])
        )
        if parts is not None:
            figures = (
                headline_figure(candidate_card, metric),
                headline_figure(champion_card, metric),
            )
            raw.append(
                _corpus_figure(parts, figures, config, scenario, metric, lower, candidate, champion)
            )
            continue
        cand = cand_rows.required(metric)
        champ = champ_rows.required(metric)
        shared = sorted(cand.keys() & champ.keys())
        if not shared:
            raise ValueError(
                f"candidate {candidate!r} and champion {champion!r} share no rows of metric "
                f"{metric!r} on scenario {scenario!r} (instance, trial, template, group differ)"
            )
        sign = -1.0 if lower else 1.0
        a = np.array([cand[k] for k in shared])
        b = np.array([champ[k] for k in shared])
        clusters = np.array([k[0] for k in shared], dtype=object)
        # Shifting the candidate by the margin turns "d = -margin" into "d = 0".
        comparison = compare_pair(
            sign * a + config.margin,
            sign * b,
            model_a=candidate,
            model_b=champion,
            metric=metric,
            scenario=scenario,
            clusters=clusters,
            salt=("gate",),
            n_resamples=config.n_resamples,
            confidence=1.0 - config.alpha,
        )
        unpaired = len(cand) + len(champ) - 2 * len(shared)
        raw.append((metric, lower, float(a.mean()), float(b.mean()), comparison, unpaired))

    adjusted = adjust([r[4] for r in raw], method=config.correction, alpha=config.alpha)
    gates = []
    for (metric, lower, cand_figure, champ_figure, _, unpaired), c in zip(
        raw, adjusted, strict=True
    ):
        # Back to the oriented difference d, then to the metric's own direction.
        low, high = c.ci_low - config.margin, c.ci_high - config.margin
        regressed = high < -config.margin and c.p_adjusted < config.alpha
        natural_low, natural_high = (-high, -low) if lower else (low, high)
        gates.append(
            MetricGate(
                metric=metric,
                lower_is_better=lower,
                n=c.n,
                n_clusters=c.n_clusters,
                candidate_mean=cand_figure,
                champion_mean=champ_figure,
                diff=cand_figure - champ_figure,
                ci_low=natural_low,
                ci_high=natural_high,
                p_value=c.p_value,
                p_adjusted=c.p_adjusted,
                test=c.test,
                regressed=regressed,
                unpaired_rows=unpaired,
            )
        )
    failed = [g for g in gates if g.regressed]
    level = f"{1 - config.alpha:.0%}"
    if failed:
        worst = failed[0]
        reason = (
            f"failed: {candidate} regresses on {scenario} {worst.metric} vs {champion}: "
            f"diff {worst.diff:+.4g}, {level} CI [{worst.ci_low:+.4g}, {worst.ci_high:+.4g}], "
            f"p_adj {worst.p_adjusted:.3g} (margin {config.margin:g})"
        )
        if len(failed) > 1:
            reason += f"; {len(failed) - 1} more metric(s) regressed"
    else:
        reason = (
            f"passed: {candidate} shows no regression beyond margin {config.margin:g} vs "
            f"{champion} on {scenario} ({', '.join(metrics)}; alpha {config.alpha:g})"
        )
    return GateResult(
        scenario=scenario,
        candidate=candidate,
        champion=champion,
        passed=not failed,
        reason=reason,
        comparisons=tuple(gates),
        margin=config.margin,
        alpha=config.alpha,
    )


def _corpus_figure(
    parts: list,
    figures: tuple[float | None, float | None],
    config: GateConfig,
    scenario: str,
    metric: str,
    lower: bool,
    candidate: str,
    champion: str,
) -> tuple[str, bool, float, float, Comparison, int]:
    """A gated corpus figure (``assay.compare.corpus_figures``): the paired bootstrap of the
    figure itself over the documents both versions hold, as the promotion decision tests it.
    The interval and the two-sided p-value of ``H0: d = -margin`` come from the bootstrap;
    they enter Holm's correction with the scenario's other gated metrics. Raises ValueError
    when the figure cannot be tested (no shared document with equal denominators, or no
    metric table row that the parts reproduce)."""
    tested = paired_ratio(
        parts,
        figures,
        lower_is_better=lower,
        n_resamples=config.n_resamples,
        seed=seed_from("gate", "ratio", scenario, metric, candidate, champion),
    )
    if tested is None:
        raise ValueError(
            f"corpus figure {metric!r} on scenario {scenario!r}: candidate {candidate!r} and "
            f"champion {champion!r} cannot be compared on its parts (no shared document with "
            "equal denominators, or a metric table row of it missing or not their ratio)"
        )
    margin = config.margin
    low, high = tested.interval(config.alpha)
    p_value = tested.p_two_sided(margin)
    (num_a, _), (num_b, _) = parts
    comparison = Comparison(
        model_a=candidate,
        model_b=champion,
        metric=metric,
        scenario=scenario,
        n=tested.rows,
        n_clusters=tested.n,
        # As the shifted rows of a per-instance metric: d + margin.
        mean_diff=tested.d + margin,
        ci_low=low + margin,
        ci_high=high + margin,
        p_value=p_value,
        p_adjusted=p_value,
        test="paired_ratio_bootstrap",
        significant=p_value < config.alpha,
    )
    unpaired = len(num_a) + len(num_b) - 2 * tested.rows
    return metric, lower, tested.figure_a, tested.figure_b, comparison, unpaired


def champion_of(registry: Registry, candidate: str, alias: str) -> str | None:
    """The version key holding ``alias`` on the candidate's model now, or None if unset."""
    model = registry.get_version(candidate).model
    try:
        return registry.resolve(f"{model}@{alias}").key
    except RegistryError as exc:
        if exc.code is ErrorCode.RESOURCE_DOES_NOT_EXIST:
            return None
        raise


def gate_partition(
    store: ParquetStore,
    registry: Registry,
    config: GateConfig,
    *,
    candidate: str,
    scenario: str,
    actor: str | None = None,
) -> GateResult:
    """Gate one stored ``model_version × scenario`` partition and record the verdict.

    The champion is the current holder of ``config.champion_alias`` on the candidate's model.
    The gate passes without a comparison when there is no champion, the candidate is the
    champion, or the champion has no stored instance_scores for the scenario. The verdict is
    written as the tag ``gate.<scenario>`` = ``passed``/``failed`` on the candidate version.
    A gate that cannot be computed (a gated metric missing, no shared rows) is recorded as
    failed with the error as its reason, since nothing shows the candidate is no worse.
    A partial evaluation (a sequential promotion decision stopped it) is not judged: the
    result says so and no tag is written.
    """
    where = evaluation_partition(candidate, scenario)
    card = store.read(METRIC_TABLES, where) if store.exists(METRIC_TABLES, where) else None
    extent = extent_of(card)
    if extent is not None and extent.partial:
        # A sequential promotion decision stopped this evaluation early and judged it with
        # anytime-valid tests; its rows cover the first instances of the order only, so this
        # check waits for the full evaluation that completes it. No tag is written.
        return GateResult(
            scenario,
            candidate,
            None,
            True,
            f"not judged: {extent.sentence()}; a full evaluation completes it",
        )
    champion = champion_of(registry, candidate, config.champion_alias)
    if champion is None:
        result = no_champion(
            scenario, candidate, f"{config.champion_alias!r} is not set on the model"
        )
    elif champion == candidate:
        result = no_champion(scenario, candidate, f"{candidate} is the champion")
    elif not store.exists(INSTANCE_SCORES, evaluation_partition(champion, scenario)):
        result = no_champion(
            scenario, candidate, f"champion {champion} has no instance_scores on {scenario}"
        )
    else:
        cand = store.read(INSTANCE_SCORES, where)
        champion_where = evaluation_partition(champion, scenario)
        champ = store.read(INSTANCE_SCORES, champion_where)
        champion_card = (
            store.read(METRIC_TABLES, champion_where)
            if store.exists(METRIC_TABLES, champion_where)
            else None
        )
        # Metrics whose scorer said smaller is better, as the candidate's scorecard records.
        lower = frozenset(config.lower_is_better) | marked_lower_is_better(card)
        config = replace(config, lower_is_better=lower)
        try:
            result = evaluate_gate(
                cand,
                champ,
                config,
                scenario=scenario,
                candidate=candidate,
                champion=champion,
                candidate_card=card,
                champion_card=champion_card,
            )
        except ValueError as exc:
            result = GateResult(scenario, candidate, champion, False, f"failed: {exc}")
    version = registry.get_version(candidate)
    registry.set_tag(
        version.model, result.tag_key, result.tag_value, version=version.version, actor=actor
    )
    return result


def failed_gates(tags: Mapping[str, str]) -> list[str]:
    """Scenarios whose gate tag on a version says ``failed``."""
    return sorted(
        key[len(GATE_TAG_PREFIX) :]
        for key, value in tags.items()
        if key.startswith(GATE_TAG_PREFIX) and value == GATE_FAILED
    )


__all__ = (
    "LOWER_IS_BETTER",
    "GateConfig",
    "GateResult",
    "MetricGate",
    "champion_of",
    "evaluate_gate",
    "failed_gates",
    "gate_partition",
    "gate_tag_key",
    "no_champion",
)
