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
  [value, value if clean else missing], resampled jointly). The clean subset is part of the
  full set, so the two means are correlated; resampling them together keeps that, where two
  independent intervals would overstate the uncertainty of the difference. A resample that
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
        for (metric, family), per_instance in sorted(full_cells.items()):
            row = _difference(metric, family, per_instance, clean, seed_key)
            rows.append(replace(row, lower_is_better=metric in lower_is_better))
    return flags, rows


def _headline_cells(stats: Iterable[InstanceStat]) -> dict[tuple[str, str], dict[str, float]]:
    """(metric, family) → instance → its mean over rows (trials, templates), ungrouped and
    unperturbed: the per-instance values behind each headline row of the scorecard."""
    values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in stats:
        if not s.group and not s.perturbation:
            values[(s.metric, s.family)][s.instance_id].append(s.value)
    return {
        cell: {i: float(np.mean(v)) for i, v in per_instance.items()}
        for cell, per_instance in values.items()
    }


def _difference(
    metric: str, family: str, per_instance: dict[str, float], clean: Collection[str], seed_key: str
) -> MetricSummary:
    """clean mean − full mean of one headline metric, with the joint bootstrap interval."""
    ids = sorted(i for i, v in per_instance.items() if math.isfinite(v))
    kept = [i for i in ids if i in clean]
    if not kept:
        why = f"no clean instance has a value for {metric}"
        return replace(absent(metric, family, why), subset=CLEAN_MINUS_FULL)
    full = np.array([per_instance[i] for i in ids])
    in_clean = np.array([i in clean for i in ids])
    diff = float(full[in_clean].mean() - full.mean())
    low = high = math.nan
    note = ""
    if len(ids) < 2:
        note = "one instance: no spread to resample"
    else:
        columns = np.column_stack([full, np.where(in_clean, full, np.nan)])
        seed = seed_from(seed_key, CLEAN_MINUS_FULL, metric, family)
        means = bootstrap_means(columns, n_resamples=N_RESAMPLES, seed=seed)
        diffs = means[:, 1] - means[:, 0]
        present = np.isfinite(diffs)
        if present.mean() < 0.5:
            note = f"the clean mean could be resampled only {int(present.sum())} times"
        else:
            low, high = percentile_interval(diffs[present], CONFIDENCE)
    return MetricSummary(
        metric,
        family,
        "",
        "",
        diff,
        len(kept),
        low,
        high,
        ci_note=note,
        subset=CLEAN_MINUS_FULL,
    )


__all__ = (
    "CLEAN",
    "CLEAN_MINUS_FULL",
    "FAMILY",
    "NOT_CHECKED",
    "RATE",
    "contamination_rows",
)
