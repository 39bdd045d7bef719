"""Clean-subset rows of a scorecard: the scores without the instances a contamination check
flagged, beside the full ones, and how far the two differ.

For one model version × scenario and its :class:`~assay.contamination.subsets.Contamination`:

- ``contamination_rate`` (family ``contamination``, lower is better, never ranked): the share
  of the evaluated instances that were checked and are flagged, with its instance-bootstrap
  interval; per instance a ``contamination_rate`` stat of 1 (flagged) or 0 (clean), so a gate
  criterion can test it on per-instance rows. Not checked: the row is absent with the reason,
  never 0, and no clean rows are written.
- ``subset="clean"``: the scorecard's mean rows (:func:`assay.scoring.summary.scorecard`, every
  metric, family, group and perturbation) recomputed on the clean instances' stats alone.
  Partition-level figures (calibration errors, bias, latency percentiles, cost) are not.
- ``subset="clean-full"``: per headline metric (ungrouped, unperturbed), the clean mean minus
  the full mean, with a 95% interval from one instance bootstrap of both means: every
  resample draws the evaluated instances with replacement and takes the full mean over all
  drawn rows and the clean mean over the drawn clean ones (``bootstrap_means`` on the columns
  [value, value if clean else missing], resampled jointly; one draw serves every metric).
  The clean subset is part of the full set, so the two means are correlated; resampling them
  together keeps that, where two independent intervals would overstate the uncertainty of
  the difference. A resample that
  drew no clean instance is left out (the interval is NaN with a note when most are).
  ``count`` is the number of clean instances.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace

import numpy as np

from assay.contamination.subsets import Contamination
from assay.core.digests import seed_from
from assay.core.records import InstanceStat, MetricSummary
from assay.scoring.summary import absent, scorecard, summarize
from assay.stats.resampling import bootstrap_means, percentile_interval

RATE = "contamination_rate"
FAMILY = "contamination"
CLEAN = "clean"
CLEAN_MINUS_FULL = "clean-full"
NOT_CHECKED = (
    "not checked for contamination: no contamination partition, or no row of the suite's "
    "flag detectors"
)
N_RESAMPLES = 1000
CONFIDENCE = 0.95


def contamination_rows(
    stats: Sequence[InstanceStat],
    evaluated: Iterable[str],
    contamination: Contamination | None,
    *,
    seed_key: str = "",
    lower_is_better: Collection[str] = frozenset(),
) -> tuple[list[InstanceStat], list[MetricSummary]]:
    """The per-instance ``contamination_rate`` stats and the scorecard rows to add to a
    partition scored into ``stats`` (see the module doc). ``evaluated``: the instance ids the
    model was evaluated on; ``lower_is_better`` marks the clean rows as the full ones are."""
    if contamination is None:
        row = replace(absent(RATE, FAMILY, NOT_CHECKED), lower_is_better=True)
        return [], [row]
    ids = sorted(set(evaluated))
    checked = [i for i in ids if i in contamination.checked]
    flags = [InstanceStat(i, RATE, float(i in contamination.flagged), FAMILY) for i in checked]
    rate = summarize([s.value for s in flags], RATE, FAMILY, seed_key=seed_key)
    if not checked:
        why = f"none of the {len(ids)} evaluated instances was checked for contamination"
        rate = absent(RATE, FAMILY, why)
    rows = [replace(rate, lower_is_better=True)]
    clean = contamination.clean(ids)
    clean_stats = [s for s in stats if s.instance_id in clean]
    full_cells = _headline_cells(stats)
    if not clean:
        why = (
            f"no clean instance: all {len(checked)} checked instances are flagged"
            if checked
            else "no instance was checked for contamination"
        )
        for metric, family in sorted(full_cells):
            for subset in (CLEAN, CLEAN_MINUS_FULL):
                rows.append(replace(absent(metric, family, why), subset=subset))
    else:
        rows += [
            replace(r, subset=CLEAN, lower_is_better=r.metric in lower_is_better)
            for r in scorecard(clean_stats, f"{seed_key}\x1f{CLEAN}")
        ]
        rows += [
            replace(row, lower_is_better=row.metric in lower_is_better)
            for row in _differences(full_cells, clean, seed_key)
        ]
    return flags, rows


def _headline_cells(stats: Iterable[InstanceStat]) -> dict[tuple[str, str], dict[str, float]]:
    """(metric, family) → instance → its mean over rows (trials, templates), ungrouped and
    unperturbed: the per-instance values behind each headline row of the scorecard."""
    values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in stats:
        if not s.group and not s.perturbation:
            values[(s.metric, s.family)][s.instance_id].append(s.value)
    return {
        cell: {i: sum(v) / len(v) for i, v in per_instance.items()}
        for cell, per_instance in values.items()
    }


def _differences(
    cells: dict[tuple[str, str], dict[str, float]], clean: Collection[str], seed_key: str
) -> list[MetricSummary]:
    """clean mean − full mean of each headline cell, with the joint bootstrap interval.

    One resample draw serves every metric (the instances of all cells, a metric's missing
    instances left out of its means): one draw of counts instead of one per metric, and each
    interval is still the percentile interval of its own resampled differences."""
    names = sorted(cells)
    ids = sorted({i for c in names for i, v in cells[c].items() if math.isfinite(v)})
    if not names or not ids:
        return []
    row = {i: k for k, i in enumerate(ids)}
    full = np.full((len(ids), len(names)), np.nan)
    for j, cell in enumerate(names):
        for i, v in cells[cell].items():
            if math.isfinite(v):
                full[row[i], j] = v
    in_clean = np.array([i in clean for i in ids])
    kept = np.where(in_clean[:, None], full, np.nan)
    n_full = (~np.isnan(full)).sum(axis=0)
    n_clean = (~np.isnan(kept)).sum(axis=0)
    diffs = None
    if len(ids) >= 2:
        seed = seed_from(seed_key, CLEAN_MINUS_FULL)
        means = bootstrap_means(np.hstack([full, kept]), n_resamples=N_RESAMPLES, seed=seed)
        diffs = means[:, len(names) :] - means[:, : len(names)]
    out = []
    for j, (metric, family) in enumerate(names):
        if n_clean[j] == 0:
            why = f"no clean instance has a value for {metric}"
            out.append(replace(absent(metric, family, why), subset=CLEAN_MINUS_FULL))
            continue
        diff = float(np.nanmean(kept[:, j]) - np.nanmean(full[:, j]))
        low = high = math.nan
        note = ""
        present = np.isfinite(diffs[:, j]) if diffs is not None else None
        if diffs is None or n_full[j] < 2:
            note = "one instance: no spread to resample"
        elif present.mean() < 0.5:
            note = f"the clean mean could be resampled only {int(present.sum())} times"
        else:
            low, high = percentile_interval(diffs[present, j], CONFIDENCE)
        out.append(
            MetricSummary(
                metric,
                family,
                "",
                "",
                diff,
                int(n_clean[j]),
                low,
                high,
                ci_note=note,
                subset=CLEAN_MINUS_FULL,
            )
        )
    return out


__all__ = (
    "CLEAN",
    "CLEAN_MINUS_FULL",
    "FAMILY",
    "NOT_CHECKED",
    "RATE",
    "contamination_rows",
)
