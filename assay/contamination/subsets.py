"""The clean subset of a partition: which evaluated instances a ``contamination`` table flags.

The ``contamination`` table (one partition per model version × scenario, written by the
``contamination`` asset) has one row per instance × detector × corpus (:data:`TABLE_SCHEMA`).
An instance is **contaminated** when any row of a chosen detector (the suite's
``contamination.flag_detectors``, default the three overlap detectors) is ``flagged``.

"Not checked" is never "clean": a missing partition, an empty one, or one with no row of a
chosen detector (say, only model-based rows while the suite flags by corpus overlap) gives
``None``, and no clean slice is computed then. Within a checked partition, an instance with no
row of a chosen detector was not checked either: it is neither contaminated nor clean.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from assay.contamination.config import ContaminationConfig
from assay.contamination.table import (
    KNOWN_DETECTORS,
    MEMBERSHIP_DETECTORS,
    OVERLAP_DETECTORS,
    SCHEMA,
)

# The detectors' names and the table's columns have one home, ``assay.contamination.table``.
DEFAULT_FLAG_DETECTORS = OVERLAP_DETECTORS
TABLE_SCHEMA = SCHEMA
# Columns a reader needs; the others are shown when present.
_REQUIRED = ("instance_id", "detector", "flagged")


# The suite's ``contamination:`` block is one model (flag_detectors beside the switches of the
# checks themselves); this name is kept for the readers of the clean subsets.
ContaminationSettings = ContaminationConfig


def check_table(table: pa.Table, where: str = "contamination") -> None:
    """Raise a ``ValueError`` naming ``where``, the column and the row when ``table`` is not a
    contamination table: a required column missing, a column of the wrong type, a null in a
    required column."""
    if not isinstance(table, pa.Table):
        raise TypeError(f"{where}: expected a pyarrow Table, got {type(table).__name__}")
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {', '.join(missing)} (a contamination table has "
            f"{', '.join(TABLE_SCHEMA.names)})"
        )
    for field in TABLE_SCHEMA:
        if field.name not in table.column_names:
            continue
        actual = table.schema.field(field.name).type
        compatible = actual == field.type or (
            pa.types.is_string(field.type) and pa.types.is_large_string(actual)
        )
        if not compatible:
            raise ValueError(
                f"{where}: column {field.name!r} has type {actual}, expected {field.type}"
            )
    for name in _REQUIRED:
        column = table[name]
        if column.null_count:
            row = next(i for i, v in enumerate(column.to_pylist()) if v is None)
            raise ValueError(f"{where}: row {row}: {name} is null")


@dataclass(frozen=True, slots=True)
class Contamination:
    """What a checked partition says under the chosen detectors: the instances that were
    checked, and those of them that are flagged."""

    checked: frozenset[str]
    flagged: frozenset[str]
    detectors: tuple[str, ...]

    def clean(self, evaluated: Iterable[str]) -> set[str]:
        """The evaluated instances that were checked and not flagged."""
        return {i for i in evaluated if i in self.checked and i not in self.flagged}

    @classmethod
    def of(
        cls,
        table: pa.Table | None,
        detectors: Iterable[str] | None = None,
        where: str = "contamination",
    ) -> Contamination | None:
        """The table's verdicts under ``detectors`` (default: the overlap detectors); None
        when it checked nothing with them (no table, no rows, no row of those detectors)."""
        chosen = tuple(DEFAULT_FLAG_DETECTORS if detectors is None else detectors)
        if not chosen:
            raise ValueError("detectors is empty: name at least one detector")
        if table is None or table.num_rows == 0:
            return None
        check_table(table, where)
        checked: set[str] = set()
        flagged: set[str] = set()
        wanted = set(chosen)
        rows = zip(
            table["instance_id"].to_pylist(),
            table["detector"].to_pylist(),
            table["flagged"].to_pylist(),
            strict=True,
        )
        for instance, detector, flag in rows:
            if detector not in wanted:
                continue
            checked.add(instance)
            if flag:
                flagged.add(instance)
        if not checked:
            return None
        return cls(frozenset(checked), frozenset(flagged), chosen)


def contaminated_instances(
    table: pa.Table | None, detectors: Iterable[str] | None = None
) -> set[str] | None:
    """The instances any row of ``detectors`` (default: the overlap detectors) flags; None
    when the table checked nothing with them ("not checked" is not the empty set)."""
    found = Contamination.of(table, detectors)
    return None if found is None else set(found.flagged)


__all__ = (
    "DEFAULT_FLAG_DETECTORS",
    "KNOWN_DETECTORS",
    "MEMBERSHIP_DETECTORS",
    "OVERLAP_DETECTORS",
    "TABLE_SCHEMA",
    "Contamination",
    "ContaminationSettings",
    "check_table",
    "contaminated_instances",
)
