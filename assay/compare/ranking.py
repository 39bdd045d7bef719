"""Leaderboards: HELM's mean win rate, bootstrap rank intervals and paired significance.

The ranking follows HELM: every (scenario, primary metric) is a column, a model's win rate in
a column is the share of the other models it beats there (ties count half), and the mean over
columns orders the board. On top of HELM we report how sure the order is: a rank interval per
model from a bootstrap that resamples each scenario's instances jointly for all models, and
paired tests (Holm-corrected) between neighbours on each scenario.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.compare.family_figures import FamilyFigure, family_figures
from assay.core.digests import seed_from
from assay.core.records import is_headline, subset_rows
from assay.scoring.metrics.directions import NOT_RANKED, RATIO_PARTS
from assay.stats.paired import Comparison, adjust, compare
from assay.stats.resampling import bootstrap_collapsed, collapse

SCORECARD_COLUMNS = (
    "model_version",
    "scenario",
    "metric",
    "family",
    "group",
    "perturbation",
    "mean",
    "count",
    "ci_low",
    "ci_high",
)
INSTANCE_SCORE_COLUMNS = (
    "model_version",
    "scenario",
    "instance_id",
    "metric",
    "value",
    "family",
    "perturbation",
    "trial",
    "template_id",
    "group",
)
# Instance scores for a board: a table of them all, or a reader of one scenario's metric at a
# time (scenario, metric → its rows; other rows may come along), so that a board over a large
# store never holds every scenario's rows at once (``standings.leaderboard_of_day``).
ScoreSource = pa.Table | Callable[[str, str], pa.Table]


# --------------------------------------------------------------------------- win rates


def column_win_rates(means: np.ndarray, lower_is_better: bool = False) -> np.ndarray:
    """Win rate of each model within one column, for any number of leading (resample) axes.

    ``means`` is (..., n_models) with NaN for a model without a value. A model's win rate is
    (models it beats + half the models it ties) / (models with a value - 1). NaN where the
    model has no value or fewer than two models have one (the column says nothing then).
    """
    values = np.asarray(means, dtype=np.float64)
    # Beating under lower-is-better is beating the negated values (negation is exact and
    # keeps ties; NaN stays NaN).
    below, ties = _below_and_ties(-values if lower_is_better else values)
    present = ~np.isnan(values)
    wins = below + 0.5 * ties
    n_present = present.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = wins / (n_present - 1)
    return np.where(present & (n_present >= 2), rates, np.nan)


def _below_and_ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of each row (last axis): how many entries of its row are strictly
    smaller, and how many others equal it. NaN is neither smaller than nor equal to anything.

    One sort per row (O(n log n)) instead of comparing every pair (O(n²)): in a row sorted
    ascending (NaN last), an entry's run of equal values starts after the entries below it
    and ends before the entries above it.
    """
    n = values.shape[-1]
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    position = np.arange(n)
    starts = np.ones(ordered.shape, dtype=bool)  # a run of equal values starts here
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]  # NaN != NaN: runs of one
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    ends = np.ones(ordered.shape, dtype=bool)
    ends[..., :-1] = starts[..., 1:]
    last = np.flip(
        np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), axis=-1), axis=-1),
        axis=-1,
    )
    below = np.empty(values.shape, dtype=np.int64)
    ties = np.empty(values.shape, dtype=np.int64)
    np.put_along_axis(below, order, first, axis=-1)
    np.put_along_axis(ties, order, last - first, axis=-1)
    return below, ties


class _WinRateSum:
    """The running sum behind :func:`mean_win_rates`, one column at a time (a column's
    resamples can be dropped once added)."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count: np.ndarray | None = None

    def add(self, means: np.ndarray, lower_is_better: bool) -> None:
        rates = column_win_rates(means, lower_is_better)
        known = ~np.isnan(rates)
        self.total = np.where(known, rates, 0.0) + (0.0 if self.total is None else self.total)
        self.count = known.astype(np.int64) + (0 if self.count is None else self.count)

    def mean(self) -> np.ndarray:
        if self.total is None or self.count is None:
            raise ValueError("no columns to compute win rates from")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


def mean_win_rates(columns: Sequence[np.ndarray], lower_is_better: Sequence[bool]) -> np.ndarray:
    """Mean over columns of ``column_win_rates``, skipping the columns where it is NaN."""
    if len(columns) != len(lower_is_better):
        raise ValueError("one lower_is_better flag per column is needed")
    rates = _WinRateSum()
    for means, lower in zip(columns, lower_is_better, strict=True):
        rates.add(means, lower)
    return rates.mean()


def mean_win_rate(
    table: Mapping[str, Mapping[str, float | None]],
    *,
    lower_is_better: Collection[str] = frozenset(),
    skip: Collection[str] = frozenset(),
) -> dict[str, float | None]:
    """HELM's mean win rate of each model (row) over the columns of ``table``.

    ``table`` maps model → column → value (None or NaN when the model has no value there).
    Columns named in ``lower_is_better`` rank smaller values first; columns in ``skip`` have
    no meaningful order and are ignored (HELM's ``lower_is_better=None``). A column with fewer
    than two values is ignored; a model with no usable column gets None.
    """
    models = list(table)
    names = sorted({c for row in table.values() for c in row} - set(skip))
    columns = []
    for name in names:
        col = []
        for model in models:
            value = table[model].get(name)
            col.append(np.nan if value is None else float(value))
        columns.append(np.array(col))
    if not columns:
        return dict.fromkeys(models)
    rates = mean_win_rates(columns, [n in lower_is_better for n in names])
    return {m: (None if np.isnan(r) else float(r)) for m, r in zip(models, rates, strict=True)}


def competition_ranks(scores: np.ndarray) -> np.ndarray:
    """1 + the number of models with a strictly higher score; NaN scores rank last."""
    values = np.where(np.isnan(scores), -np.inf, scores)
    below, ties = _below_and_ties(values)
    return values.shape[-1] - below - ties  # 1 + (n - below - ties - 1) above


# --------------------------------------------------------------------------- rank intervals


@dataclass(frozen=True)
class ScoreColumn:
    """Per-instance scores of every model on one column of the leaderboard.

    ``values`` is (n_rows, n_models), rows aligned across models (the same instance, trial,
    template), NaN where a model has no score. ``clusters`` labels each row's instance, so the
    rows of one instance are resampled together.
    """

    name: str
    values: np.ndarray
    lower_is_better: bool = False
    clusters: np.ndarray | None = None


def paired_rows(
    column: ScoreColumn, a: int, b: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The rows of ``column`` that both models ``a`` and ``b`` (model indices) have: their two
    value arrays and the rows' clusters (None when the column has none)."""
    va, vb = column.values[:, a], column.values[:, b]
    shared = ~np.isnan(va) & ~np.isnan(vb)
    clusters = column.clusters[shared] if column.clusters is not None else None
    return va[shared], vb[shared], clusters


def compare_pair(
    a: np.ndarray,
    b: np.ndarray,
    *,
    model_a: str,
    model_b: str,
    metric: str,
    scenario: str,
    clusters: np.ndarray | None,
    salt: Sequence[object],
    n_resamples: int,
    confidence: float,
) -> Comparison:
    """:func:`~assay.stats.paired.compare` of two models' paired rows, seeded from ``salt``,
    the scenario, the metric and the two models: the same pair resamples alike on every run."""
    return compare(
        a,
        b,
        model_a=model_a,
        model_b=model_b,
        metric=metric,
        scenario=scenario,
        clusters=clusters,
        seed=seed_from(*salt, scenario, metric, model_a, model_b),
        n_resamples=n_resamples,
        confidence=confidence,
    )


def comparison_rows(comparisons: Iterable[Comparison]) -> list[dict[str, Any]]:
    """Comparisons as plain rows, with the columns of :meth:`Leaderboard.comparisons_table`."""
    return [{name: getattr(c, name) for name in _COMPARISON_SCHEMA.names} for c in comparisons]


@dataclass(frozen=True, slots=True)
class RankInterval:
    """A model's rank (1 = best) on the data and its bootstrap percentile interval."""

    model: str
    rank: int
    low: int
    high: int


def rank_intervals(
    columns: Sequence[ScoreColumn],
    models: Sequence[str],
    *,
    seed: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> dict[str, RankInterval]:
    """Bootstrap interval of each model's mean-win-rate rank over ``columns``.

    Each resample draws every column's instances with replacement (the same draw for all
    models, so paired differences survive), recomputes the column means, the mean win rates
    and the ranks; the interval is the equal-tailed percentile interval of a model's ranks.
    With one column this is the rank by mean score.
    """
    if not columns:
        raise ValueError("rank_intervals needs at least one column")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ranks = _RankSums()
    for column in columns:
        ranks.add(column.lower_is_better, *_column_means(column, len(models), seed, n_resamples))
    return ranks.intervals(models, confidence)


def _column_means(
    column: ScoreColumn, n_models: int, seed: int, n_resamples: int
) -> tuple[np.ndarray, np.ndarray]:
    """A column's observed mean per model and its (n_resamples, n_models) bootstrap means."""
    if column.values.ndim != 2 or column.values.shape[1] != n_models:
        raise ValueError(
            f"column {column.name!r} has shape {column.values.shape}, expected "
            f"(n_rows, {n_models}): one column per model"
        )
    collapsed = collapse(column.values, column.clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = collapsed.sums.sum(axis=0) / collapsed.counts.sum(axis=0)
    resampled = bootstrap_collapsed(
        collapsed, n_resamples=n_resamples, seed=seed_from(seed, "rank", column.name)
    )
    return observed, resampled


class _RankSums:
    """The running win rates behind :func:`rank_intervals`, one column at a time, in column
    order: each column's resamples enter them and are dropped, so memory holds one column's
    (n_resamples, n_models), not every column's."""

    def __init__(self) -> None:
        self.observed, self.resampled = _WinRateSum(), _WinRateSum()

    def add(self, lower_is_better: bool, observed: np.ndarray, resampled: np.ndarray) -> None:
        self.observed.add(observed, lower_is_better)
        self.resampled.add(resampled, lower_is_better)

    def intervals(self, models: Sequence[str], confidence: float) -> dict[str, RankInterval]:
        ranks = competition_ranks(self.observed.mean())
        boot_ranks = competition_ranks(self.resampled.mean())
        tail = (1.0 - confidence) / 2.0
        # Ranks are integers: take the order statistics themselves rather than interpolating.
        low = np.quantile(boot_ranks, tail, axis=0, method="inverted_cdf")
        high = np.quantile(boot_ranks, 1.0 - tail, axis=0, method="inverted_cdf")
        return {
            model: RankInterval(model, int(ranks[i]), int(low[i]), int(high[i]))
            for i, model in enumerate(models)
        }


# --------------------------------------------------------------------------- leaderboard


@dataclass(frozen=True)
class LeaderboardRow:
    """One model version on the leaderboard."""

    model_version: str
    rank: int
    rank_low: int
    rank_high: int
    mean_win_rate: float | None  # over the scenarios' primary metrics
    mean_score: float | None  # plain mean of the primary metrics' means
    scenario_scores: dict[str, float | None]  # scenario → primary metric mean
    family_win_rates: dict[str, float | None]  # family → mean win rate over its columns


@dataclass(frozen=True)
class Leaderboard:
    """Models ordered by mean win rate, with rank intervals and paired comparisons."""

    rows: tuple[LeaderboardRow, ...]
    comparisons: tuple[Comparison, ...]
    primary_metrics: dict[str, str]
    families: tuple[str, ...]
    confidence: float = 0.95
    notes: tuple[str, ...] = field(default=())
    # One headline figure per family with its interval or why it has none (family_figures).
    family_figures: tuple[FamilyFigure, ...] = field(default=())

    def to_table(self) -> pa.Table:
        """One row per model version: fixed columns, then ``score.<scenario>`` and
        ``win_rate.<family>`` columns."""
        data: dict[str, list] = {
            "rank": [r.rank for r in self.rows],
            "model_version": [r.model_version for r in self.rows],
            "rank_low": [r.rank_low for r in self.rows],
            "rank_high": [r.rank_high for r in self.rows],
            "mean_win_rate": [r.mean_win_rate for r in self.rows],
            "mean_score": [r.mean_score for r in self.rows],
        }
        types: dict[str, pa.DataType] = {
            "rank": pa.int32(),
            "model_version": pa.string(),
            "rank_low": pa.int32(),
            "rank_high": pa.int32(),
        }
        for scenario in self.primary_metrics:
            data[f"score.{scenario}"] = [r.scenario_scores.get(scenario) for r in self.rows]
        for family in self.families:
            data[f"win_rate.{family}"] = [r.family_win_rates.get(family) for r in self.rows]
        schema = pa.schema([(name, types.get(name, pa.float64())) for name in data])
        return pa.table(data, schema=schema)

    def family_figure_rows(self) -> list[dict[str, Any]]:
        """The family headline figures, one row per family and version (board order)."""
        return [row for figure in self.family_figures for row in figure.rows()]

    def comparisons_table(self) -> pa.Table:
        """One row per paired comparison."""
        return pa.Table.from_pylist(comparison_rows(self.comparisons), schema=_COMPARISON_SCHEMA)

    def to_markdown(self) -> str:
        """A compact table for a terminal; ``*`` marks a score significantly different from the
        next-ranked model's on that scenario."""
        level = round(self.confidence * 100)
        order = [r.model_version for r in self.rows]
        nxt = dict(pairwise(order))
        starred = {
            (c.scenario, c.model_a)
            for c in self.comparisons
            if c.significant and nxt.get(c.model_a) == c.model_b
        }
        header = ["#", "model", f"rank {level}%", "win rate", "mean"]
        header += [f"{s} ({m})" for s, m in self.primary_metrics.items()]
        header += list(self.families)
        lines = [_md_row(header), _md_row(["---"] * len(header))]
        for row in self.rows:
            cells = [
                str(row.rank),
                row.model_version,
                f"{row.rank_low}–{row.rank_high}",
                _fmt(row.mean_win_rate),
                _fmt(row.mean_score),
            ]
            for scenario in self.primary_metrics:
                mark = "*" if (scenario, row.model_version) in starred else ""
                cells.append(_fmt(row.scenario_scores.get(scenario)) + mark)
            cells += [_fmt(row.family_win_rates.get(f)) for f in self.families]
            lines.append(_md_row(cells))
        alpha = 1.0 - self.confidence
        lines.append("")
        lines.append(
            f"`*` differs significantly from the next model on that scenario "
            f"(paired test, Holm-adjusted p < {alpha:.2g}); families show mean win rates."
        )
        if self.family_figures:
            lines += ["", *self._family_markdown(order)]
        if self.comparisons:
            lines += [
                "",
                _md_row(["scenario", "a vs b", "diff", f"{level}% CI", "p (adj.)", "test"]),
            ]
            lines.append(_md_row(["---"] * 6))
            for c in self.comparisons:
                lines.append(
                    _md_row(
                        [
                            f"{c.scenario} ({c.metric})",
                            f"{c.model_a} vs {c.model_b}",
                            f"{c.mean_diff:+.3f}" + ("*" if c.significant else ""),
                            f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}]",
                            f"{c.p_value:.3g} ({c.p_adjusted:.3g})",
                            c.test,
                        ]
                    )
                )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _family_markdown(self, order: Sequence[str]) -> list[str]:
        """Each family's headline figure per version: ``mean [low, high]``, or the value or a
        dash with a numbered note saying why the interval or the value is missing."""
        level = round(self.confidence * 100)
        notes: list[str] = []

        def cell(figure: FamilyFigure, version: str) -> str:
            c = figure.cells.get(version)
            if c is None:
                return "–"
            if c.has_interval:
                return f"{c.mean:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]"
            if c.note not in notes:
                notes.append(c.note)
            mark = f"(note {notes.index(c.note) + 1})"
            return f"{_fmt(c.mean)} {mark}"

        lines = [
            f"Families: one headline figure each, {level}% interval (↑ higher is better, "
            "↓ lower is better)",
            "",
            _md_row(["family", "figure", *order]),
            _md_row(["---"] * (2 + len(order))),
        ]
        for figure in self.family_figures:
            lines.append(_md_row([figure.family, figure.title, *(cell(figure, v) for v in order)]))
        lines += [f"note {i}: {note}" for i, note in enumerate(notes, 1)]
        return lines


_COMPARISON_SCHEMA = pa.schema(
    [
        ("scenario", pa.string()),
        ("metric", pa.string()),
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("n", pa.int64()),
        ("n_clusters", pa.int64()),
        ("mean_diff", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_value", pa.float64()),
        ("p_adjusted", pa.float64()),
        ("test", pa.string()),
        ("significant", pa.bool_()),
    ]
)


def _fmt(value: float | None) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.3f}"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _require_columns(table: pa.Table, needed: Sequence[str], name: str) -> None:
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} table lacks column(s) {', '.join(missing)}")


def _headline_scorecards(scorecards: pa.Table) -> dict[tuple[str, str, str], dict]:
    """(model, scenario, metric) → the unperturbed, ungrouped scorecard row."""
    rows: dict[tuple[str, str, str], dict] = {}
    for i, row in enumerate(scorecards.select(list(SCORECARD_COLUMNS)).to_pylist()):
        if not is_headline(row):
            continue
        key = (row["model_version"], row["scenario"], row["metric"])
        if key in rows:
            raise ValueError(
                f"scorecards row {i}: model_version={key[0]!r} scenario={key[1]!r} "
                f"metric={key[2]!r} appears twice without group or perturbation"
            )
        rows[key] = row
    return rows


def _family_columns(
    scorecards: pa.Table, models: Sequence[str], lower_is_better: Collection[str]
) -> dict[str, tuple[list[np.ndarray], list[bool]]]:
    """family → its win-rate columns: one per (scenario, metric, perturbation), ungrouped.

    Figures of the run rather than the model (``NOT_RANKED``) have no column."""
    index = {m: i for i, m in enumerate(models)}
    cells: dict[str, dict[tuple[str, str, str], np.ndarray]] = {}
    for row in scorecards.select(list(SCORECARD_COLUMNS)).to_pylist():
        if row["group"] or row["metric"] in NOT_RANKED:
            continue
        key = (row["scenario"], row["metric"], row["perturbation"])
        column = cells.setdefault(row["family"], {}).setdefault(key, np.full(len(models), np.nan))
        column[index[row["model_version"]]] = np.nan if row["mean"] is None else row["mean"]
    return {
        family: (list(cols.values()), [k[1] in lower_is_better for k in cols])
        for family, cols in sorted(cells.items())
    }


def _instance_column(
    instance_scores: pa.Table,
    scenario: str,
    metric: str,
    models: Sequence[str],
    lower_is_better: bool,
) -> ScoreColumn:
    """The unperturbed per-instance scores of one scenario's metric, pivoted to models.

    Rows with ``group == ""`` are used when there are any (a breakdown repeats the instance);
    otherwise every instance carries exactly one group tag and all rows are used.
    """
    mask = pc.and_(
        pc.and_(
            pc.equal(instance_scores["scenario"], scenario),
            pc.equal(instance_scores["metric"], metric),
        ),
        pc.equal(instance_scores["perturbation"], ""),
    )
    rows = instance_scores.filter(mask)
    ungrouped = rows.filter(pc.equal(rows["group"], ""))
    if ungrouped.num_rows:
        rows = ungrouped
    if rows.num_rows == 0:
        raise ValueError(
            f"instance_scores has no unperturbed rows for scenario={scenario!r} metric={metric!r}"
        )
    uniq, row_of = _row_keys(rows)
    known = pc.index_in(rows["model_version"], value_set=pa.array(list(models), pa.string()))
    if known.null_count:
        unknown = sorted(set(rows["model_version"].to_pylist()) - set(models))
        raise ValueError(
            f"instance_scores names model_version {unknown[0]!r} (scenario={scenario!r}), "
            "which has no scorecard"
        )
    col_of = known.to_numpy().astype(np.int64)
    flat = row_of * len(models) + col_of
    dup = np.flatnonzero(np.bincount(flat) > 1)
    if dup.size:
        r, c = divmod(int(dup[0]), len(models))
        raise ValueError(
            f"instance_scores repeats model_version={models[c]!r} scenario={scenario!r} "
            f"metric={metric!r} row (instance, trial, template, group)="
            f"{tuple(str(uniq[r]).split(chr(0x1F)))}"
        )
    values = np.full((uniq.size, len(models)), np.nan)
    values[row_of, col_of] = np.asarray(
        rows["value"].to_numpy(zero_copy_only=False), dtype=np.float64
    )
    clusters = np.array([k.split("\x1f", 1)[0] for k in uniq], dtype=object)
    return ScoreColumn(f"{scenario}/{metric}", values, lower_is_better, clusters)


def _row_keys(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's key, ``instance␟trial␟template␟group`` (␟ = U+001F): the sorted distinct
    keys (an object array of str) and each row's index among them, as ``np.unique`` of the
    keys would give. Built in Arrow (a board pivots millions of rows), or in Python where a
    key has a null part or a trial that is not an integer, which Arrow would spell otherwise."""
    parts = [rows[c] for c in ("instance_id", "trial", "template_id", "group")]
    strings = [pa.types.is_string(p.type) or pa.types.is_large_string(p.type) for p in parts]
    if (
        not all(strings[i] for i in (0, 2, 3))
        or not pa.types.is_integer(parts[1].type)
        or any(p.null_count for p in parts)
    ):
        keys = [
            f"{i}\x1f{t}\x1f{tpl}\x1f{g}"
            for i, t, tpl, g in zip(*(p.to_pylist() for p in parts), strict=True)
        ]
        return np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    parts[1] = pc.cast(parts[1], pa.string())
    keys = pc.binary_join_element_wise(*parts, "\x1f").combine_chunks().dictionary_encode()
    # Arrow orders strings by their UTF-8 bytes, which is Python's (code point) order.
    order = pc.array_sort_indices(keys.dictionary).to_numpy()
    rank = np.empty(order.size, dtype=np.intp)
    rank[order] = np.arange(order.size)
    uniq = np.asarray(keys.dictionary.take(order).to_pylist(), dtype=object)
    return uniq, rank[keys.indices.to_numpy()]


def instance_column(
    instance_scores: pa.Table,
    scenario: str,
    metric: str,
    models: Sequence[str],
    lower_is_better: bool = False,
) -> ScoreColumn:
    """The per-instance scores behind the board's rank intervals and paired tests: the
    unperturbed rows of one scenario's metric, one column per model in ``models`` (every
    model in ``instance_scores`` must be one of them), NaN where a model has no score."""
    return _instance_column(instance_scores, scenario, metric, models, lower_is_better)


def ranked_column(
    source: ScoreSource,
    scenario: str,
    metric: str,
    models: Sequence[str],
    lower_is_better: bool,
) -> tuple[ScoreColumn, str]:
    """The column a scenario is resampled and compared on, and the metric it holds.

    That is the primary metric's per-instance scores, or for a corpus figure with no
    per-instance value (lm-eval's perplexities, see ``RATIO_PARTS``) its numerator: every
    model is scored on the same documents, so the denominators (words, bytes, instructions)
    are the same for all of them, and the numerator's sum over any resample of documents
    orders the models as the figure does. The comparisons are then of the numerator.
    ``source`` is a table holding the rows of :func:`ranked_metrics`, or a reader."""
    primary = None
    for name, denominator, larger_is_better in _candidates(metric):
        rows = _scores_of(source, scenario, name)
        primary = rows if primary is None else primary
        if not _holds(rows, scenario, name):
            continue
        if denominator is None:
            return _instance_column(rows, scenario, name, models, lower_is_better), name
        weights = _instance_column(
            _scores_of(source, scenario, denominator), scenario, denominator, models, False
        ).values
        # NaN (a model without the instance) is left out; fmax and fmin skip it.
        spread = np.fmax.reduce(weights, axis=1) - np.fmin.reduce(weights, axis=1)
        if np.any(spread > 0):
            row = int(np.flatnonzero(spread > 0)[0])
            raise ValueError(
                f"scenario={scenario!r} metric={metric!r}: its {denominator!r} differs "
                f"between model versions on instance row {row}; a ratio is ranked only over "
                "the same denominators"
            )
        lower = lower_is_better if larger_is_better is None else not larger_is_better
        return _instance_column(rows, scenario, name, models, lower), name
    # None of them: the error names the primary metric.
    return _instance_column(primary, scenario, metric, models, lower_is_better), metric


def _candidates(metric: str) -> list[tuple[str, str | None, bool | None]]:
    """The per-instance metrics a scenario of ``metric`` may be ranked on, in the order they
    are tried: ``metric`` itself, then each corpus figure's numerator, with its denominator
    and whether a larger numerator is better (None: as the figure)."""
    parts = [(metric + num, metric + den, larger) for num, den, larger in RATIO_PARTS]
    return [(metric, None, None), *parts]


def compared_metric(present: Collection[str], metric: str) -> str | None:
    """Which of :func:`ranked_metrics` a scenario is compared on, given the per-instance
    metrics ``present`` (as :func:`ranked_column` chooses); None when none is there."""
    return next((name for name, _, _ in _candidates(metric) if name in present), None)


def ranked_metrics(metric: str) -> list[str]:
    """The per-instance metrics :func:`ranked_column` may read for ``metric``."""
    return [n for name, den, _ in _candidates(metric) for n in (name, den) if n is not None]


def _holds(rows: pa.Table, scenario: str, metric: str) -> bool:
    """Whether ``rows`` has an unperturbed row of ``scenario``'s ``metric``."""
    mask = pc.and_(
        pc.and_(pc.equal(rows["scenario"], scenario), pc.equal(rows["metric"], metric)),
        pc.equal(rows["perturbation"], ""),
    )
    return bool(pc.any(mask).as_py())


def _scores_of(source: ScoreSource, scenario: str, metric: str) -> pa.Table:
    """The instance scores that hold ``scenario``'s ``metric`` (the whole table, or what the
    reader returns for it)."""
    if not callable(source):
        return source
    rows = source(scenario, metric)
    _require_columns(rows, INSTANCE_SCORE_COLUMNS, f"instance_scores of scenario {scenario!r}")
    return rows


def build_leaderboard(
    scorecards: pa.Table,
    instance_scores: ScoreSource,
    *,
    primary_metrics: Mapping[str, str],
    lower_is_better: Collection[str] = frozenset(),
    seed: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    pairs: str = "adjacent",
    threads: int | None = None,
) -> Leaderboard:
    """Rank model versions by HELM's mean win rate over each scenario's primary metric.

    ``scorecards`` has one row per model version × scenario × metric × family × group ×
    perturbation (``SCORECARD_COLUMNS``); its unperturbed, ungrouped rows are the headline
    scores. ``instance_scores`` holds the per-instance values (``INSTANCE_SCORE_COLUMNS``)
    behind them, used for rank intervals and paired tests, or a reader of one scenario's
    metric at a time (:data:`ScoreSource`), called once per scenario on the board (from
    worker threads, a few scenarios at a time) and dropped after pivoting.
    ``primary_metrics`` maps each scenario on the board to its primary metric; other
    scenarios only enter the per-family win rates. Metrics named in ``lower_is_better`` rank
    smaller values first.

    ``pairs`` is ``"adjacent"`` (each model against the next one down) or ``"all"``; every
    comparison on the board is one family for the Holm correction. Rows of a contamination
    subset (``subset`` not empty) are left out.

    Scenarios are worked on by ``threads`` threads (default :func:`ranking_threads`); the
    board is the same for any number.
    """
    _require_columns(scorecards, SCORECARD_COLUMNS, "scorecards")
    if not callable(instance_scores):
        _require_columns(instance_scores, INSTANCE_SCORE_COLUMNS, "instance_scores")
    # Rows over all evaluated instances; a contamination subset's rows (``subset``) are ranked
    # only when the caller puts them in their place (``standings.ranked_results``).
    scorecards = subset_rows(scorecards)
    if not primary_metrics:
        raise ValueError("primary_metrics is empty: name each scenario's primary metric")
    if pairs not in ("adjacent", "all"):
        raise ValueError(f"pairs must be 'adjacent' or 'all', got {pairs!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    threads = ranking_threads() if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    headline = _headline_scorecards(scorecards)
    models = sorted({k[0] for k in headline})
    scenario_means: dict[str, np.ndarray] = {}
    for scenario, metric in primary_metrics.items():
        means = np.array(
            [(headline.get((m, scenario, metric)) or {}).get("mean") for m in models],
            dtype=np.float64,
        )
        if np.all(np.isnan(means)):
            raise ValueError(
                f"scorecards have no headline row for scenario={scenario!r} metric={metric!r}"
            )
        scenario_means[scenario] = means
    flags = [primary_metrics[s] in lower_is_better for s in primary_metrics]
    win_rates = mean_win_rates(list(scenario_means.values()), flags)
    stacked = np.vstack(list(scenario_means.values()))
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(stacked), axis=0)
        mean_scores = np.where(
            counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan
        )
    families = _family_columns(scorecards, models, lower_is_better)
    family_rates = {f: mean_win_rates(cols, fl) for f, (cols, fl) in families.items()}

    ranks = competition_ranks(win_rates)
    order = sorted(range(len(models)), key=lambda i: (ranks[i], models[i]))
    ranked = [models[i] for i in order]
    pair_list = list(pairwise(ranked)) if pairs == "adjacent" else list(combinations(ranked, 2))
    index = {m: i for i, m in enumerate(models)}
    pair_indices = [(index[a], index[b]) for a, b in pair_list]

    def scenario_work(item: tuple[str, str]) -> _ScenarioWork:
        scenario, metric = item
        column, compared = ranked_column(
            instance_scores, scenario, metric, models, metric in lower_is_better
        )
        observed, resampled = _column_means(column, len(models), seed, n_resamples)
        found, missing = _column_comparisons(
            column,
            scenario,
            compared,
            models,
            pair_indices,
            seed=seed,
            n_resamples=n_resamples,
            confidence=confidence,
        )
        return _ScenarioWork(column.lower_is_better, observed, resampled, found, missing)

    # Scenarios are read, resampled and compared in worker threads (numpy's resampling and
    # DuckDB's reads release the GIL); their results are added in scenario order, so the
    # board is the same whatever the number of threads.
    rank_sums = _RankSums()
    comparisons: list[Comparison] = []
    notes: list[str] = []
    for work in _ordered_map(scenario_work, list(primary_metrics.items()), threads):
        rank_sums.add(work.lower_is_better, work.observed, work.resampled)
        comparisons += work.comparisons
        notes += work.notes
    intervals = rank_sums.intervals(models, confidence)

    def opt(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    rows = tuple(
        LeaderboardRow(
            model_version=models[i],
            rank=int(ranks[i]),
            rank_low=intervals[models[i]].low,
            rank_high=intervals[models[i]].high,
            mean_win_rate=opt(win_rates[i]),
            mean_score=opt(mean_scores[i]),
            scenario_scores={s: opt(v[i]) for s, v in scenario_means.items()},
            family_win_rates={f: opt(r[i]) for f, r in family_rates.items()},
        )
        for i in order
    )
    adjusted = adjust(comparisons, method="holm", alpha=1.0 - confidence)
    return Leaderboard(
        rows=rows,
        comparisons=tuple(adjusted),
        primary_metrics=dict(primary_metrics),
        families=tuple(families),
        confidence=confidence,
        notes=tuple(notes),
        family_figures=family_figures(scorecards, primary_metrics, ranked, lower_is_better),
    )


# --------------------------------------------------------------------------- scenario work

THREADS_ENV = "ASSAY_RANKINGS_THREADS"


def ranking_threads() -> int:
    """Threads a board works on its scenarios with: ``$ASSAY_RANKINGS_THREADS``, else the
    CPU count (at most 8)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return max(1, min(os.cpu_count() or 1, 8))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class _ScenarioWork:
    """What one scenario's column adds to a board."""

    lower_is_better: bool
    observed: np.ndarray  # mean per model
    resampled: np.ndarray  # (n_resamples, n_models) bootstrap means
    comparisons: list[Comparison]
    notes: list[str]


def _ordered_map(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> Iterator[Any]:
    """``map(fn, items)`` computed by ``threads`` threads, yielded in order, with at most
    ``2 * threads`` results computed ahead (each holds a scenario's rows)."""
    if threads <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rankings") as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _column_comparisons(
    column: ScoreColumn,
    scenario: str,
    metric: str,
    models: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    *,
    seed: int,
    n_resamples: int,
    confidence: float,
) -> tuple[list[Comparison], list[str]]:
    """The paired comparisons of ``pairs`` (model indices) on one column, and a note for
    each pair that shares no instance there."""
    if column.clusters is not None:
        # Integer labels in the strings' order: each comparison groups its rows by them
        # exactly as by the strings (same clusters, same order), only faster.
        codes = np.unique(column.clusters, return_inverse=True)[1]
        column = ScoreColumn(column.name, column.values, column.lower_is_better, codes)
    comparisons: list[Comparison] = []
    notes: list[str] = []
    for i, j in pairs:
        model_a, model_b = models[i], models[j]
        a, b, clusters = paired_rows(column, i, j)
        if not len(a):
            notes.append(f"{model_a} and {model_b} share no instances on {scenario}")
            continue
        comparisons.append(
            compare_pair(
                a,
                b,
                model_a=model_a,
                model_b=model_b,
                metric=metric,
                scenario=scenario,
                clusters=clusters,
                salt=(seed, "compare"),
                n_resamples=n_resamples,
                confidence=confidence,
            )
        )
    return comparisons, notes
