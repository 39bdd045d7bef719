"""The ``contamination`` table: per-instance findings of one model version × scenario.

One row per instance × detector × corpus:

- ``instance_id``: the eval instance (``scenario_instances.id``);
- ``detector``: an overlap detector (``gpt3_13gram``, ``palm_8gram``, ``llama2_span``) or a
  model-based one (``min_k_prob``, ``guided_completion``);
- ``corpus`` / ``corpus_digest``: the declared corpus's name and content digest; both ``""``
  for the model-based detectors;
- ``score``: for overlap detectors the matched fraction (0..1); otherwise the detector's own
  statistic;
- ``flagged``: this detector counts the instance as contaminated;
- ``label``: ``dirty`` / ``clean`` / ``neither`` for ``llama2_span``, ``""`` otherwise;
- ``evidence``: why (the first matched n-gram, the figures).

An instance is contaminated when a row of a detector in the suite's
``contamination.flag_detectors`` is flagged. A partition with no rows means "not checked"
(no corpus declared and no model-based detector asked for), never "clean".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pyarrow as pa

# The same names as ``overlap.DETECTORS`` and ``membership.MEMBERSHIP_DETECTORS`` (a test holds
# them equal), kept here so reading a table never imports the detectors' machinery.
OVERLAP_DETECTORS = ("gpt3_13gram", "palm_8gram", "llama2_span")
MEMBERSHIP_DETECTORS = ("min_k_prob", "guided_completion")
KNOWN_DETECTORS = OVERLAP_DETECTORS + MEMBERSHIP_DETECTORS
LABELS = ("dirty", "clean", "neither")

SCHEMA = pa.schema(
    [
        ("instance_id", pa.string()),
        ("detector", pa.string()),
        ("corpus", pa.string()),
        ("corpus_digest", pa.string()),
        ("score", pa.float64()),
        ("flagged", pa.bool_()),
        ("label", pa.string()),
        ("evidence", pa.string()),
    ]
)


class ContaminationTableError(ValueError):
    """A contamination table that breaks the schema; the message names the row and column."""


def contamination_table(rows: Iterable[Mapping[str, object]]) -> pa.Table:
    """The rows as a validated table, sorted by instance, detector and corpus."""
    ordered = sorted(
        (dict(r) for r in rows),
        key=lambda r: (str(r["instance_id"]), str(r["detector"]), str(r["corpus"])),
    )
    table = pa.Table.from_pylist(ordered, schema=SCHEMA)
    return validate_contamination(table)


def validate_contamination(table: pa.Table, where: str = "contamination") -> pa.Table:
    """``table`` if it follows the schema and the rules of the module docstring, else
    ``ContaminationTableError`` naming ``where``, the row and the column at fault."""
    if table.schema.remove_metadata() != SCHEMA:
        missing = [f.name for f in SCHEMA if f.name not in table.column_names]
        extra = [n for n in table.column_names if n not in SCHEMA.names]
        raise ContaminationTableError(
            f"{where}: schema differs from the contamination table's"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
            + ("" if missing or extra else f"; got {table.schema}")
        )
    seen: set[tuple[str, str, str]] = set()
    for i, row in enumerate(table.to_pylist()):
        at = f"{where}: row {i} (instance {row['instance_id']!r})"
        for column in SCHEMA.names:
            if row[column] is None:
                raise ContaminationTableError(f"{at}: column {column!r} is null")
        detector = row["detector"]
        if detector not in KNOWN_DETECTORS:
            raise ContaminationTableError(
                f"{at}: column 'detector' is {detector!r}, not one of {', '.join(KNOWN_DETECTORS)}"
            )
        overlap = detector in OVERLAP_DETECTORS
        if overlap != bool(row["corpus"]) or overlap != bool(row["corpus_digest"]):
            raise ContaminationTableError(
                f"{at}: columns 'corpus' and 'corpus_digest' must be set for an overlap "
                f"detector and empty for {detector!r}"
                if not overlap
                else f"{at}: columns 'corpus' and 'corpus_digest' must be set for {detector!r}"
            )
        score = row["score"]
        # A model-based statistic may be NaN (an instance too short to score; evidence says).
        if overlap and (not math.isfinite(score) or not 0.0 <= score <= 1.0):
            raise ContaminationTableError(f"{at}: column 'score' is {score!r}")
        label = row["label"]
        if detector == "llama2_span" and label not in LABELS:
            raise ContaminationTableError(f"{at}: column 'label' is {label!r}")
        if detector != "llama2_span" and label:
            raise ContaminationTableError(f"{at}: column 'label' must be empty for {detector!r}")
        key = (row["instance_id"], detector, row["corpus"])
        if key in seen:
            raise ContaminationTableError(
                f"{at}: a second row for {detector!r} × {row['corpus']!r}"
            )
        seen.add(key)
    return table


def empty_table() -> pa.Table:
    """A partition with nothing checked."""
    return SCHEMA.empty_table()
