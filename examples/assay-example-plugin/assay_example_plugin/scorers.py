"""``numeric_tolerance``: the last number of an answer against the reference number, within a
relative tolerance.

It follows assay's scorer protocol (``assay.core.scorers``): ``metric`` names the headline
metric, ``Args`` validates ``scorer_args``, and ``score`` turns the instances and the model's
answers of one prompt layout into :class:`~assay.core.scorers.Stat` records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from pydantic import BaseModel, ConfigDict, Field

from assay.core.records import Instance, ModelOutput
from assay.core.scorers import Stat

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


class NumericToleranceArgs(BaseModel):
    """``scorer_args`` of ``scorer: numeric_tolerance``."""

    model_config = ConfigDict(extra="forbid")

    rel_tol: float = Field(default=0.01, gt=0, lt=1)  # |answer - reference| / |reference|


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (thousands separators allowed), or None."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


class NumericTolerance:
    """Scores ``within_tolerance`` (1 when the answer's last number is within ``rel_tol`` of
    the reference) and ``relative_error`` (capped at 1; smaller is better; 1 when the answer
    has no number). A reference that is not a number fails its instance."""

    metric = "within_tolerance"
    Args = NumericToleranceArgs

    def score(
        self,
        instances: Sequence[Instance],
        outputs: Sequence[ModelOutput],
        args: NumericToleranceArgs,
    ) -> Iterator[Stat]:
        references = {i.id: i.gold_texts for i in instances}
        for output in outputs:
            instance_id, trial = output.request.instance_id, output.request.trial
            golds = references[instance_id]
            if not golds or last_number(golds[0]) is None or last_number(golds[0]) == 0:
                raise ValueError(f"reference {golds!r} is not a non-zero number")
            gold = last_number(golds[0])
            answer = last_number(output.completion.text)
            error = 1.0 if answer is None else min(abs(answer - gold) / abs(gold), 1.0)
            yield Stat(instance_id, "within_tolerance", float(error <= args.rel_tol), trial=trial)
            yield Stat(instance_id, "relative_error", error, direction="lower", trial=trial)
