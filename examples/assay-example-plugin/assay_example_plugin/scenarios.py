"""``unit_conversions``: generated questions that convert a quantity between units.

The instances are a pure function of the arguments (no download), so the scenario's data is
the same on every machine.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from assay.core.records import Instance, Reference
from assay.scenarios import Scenario, ScenarioData

# (from, to, factor): 1 <from> is <factor> <to>.
CONVERSIONS = (
    ("meters", "centimeters", 100),
    ("kilometers", "meters", 1000),
    ("hours", "minutes", 60),
    ("kilograms", "grams", 1000),
    ("feet", "inches", 12),
    ("minutes", "seconds", 60),
    ("liters", "milliliters", 1000),
)


class UnitConversionsArgs(BaseModel):
    """The suite entry's ``args``, checked when the suite is read."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=20, ge=1, le=1000)  # how many questions
    halves: bool = True  # quantities may end in .5


class UnitConversions(Scenario):
    """How many <to> are in <quantity> <from>? The reference is the number, as text."""

    Args = UnitConversionsArgs

    def __init__(self, n: int = 20, halves: bool = True) -> None:
        self.n, self.halves = n, halves

    def load(self) -> ScenarioData:
        instances = []
        for i in range(self.n):
            source, target, factor = CONVERSIONS[i % len(CONVERSIONS)]
            quantity = 1 + (i * 7) % 9 + (0.5 if self.halves and i % 2 else 0)
            answer = quantity * factor
            text = f"{answer:g}"
            instances.append(
                Instance(
                    id=f"conv-{i:04d}",
                    input=f"How many {target} are in {quantity:g} {source}?",
                    references=(Reference(text, True),),
                    groups={"kind": "time" if target in ("minutes", "seconds") else "size"},
                )
            )
        return ScenarioData(instances, revision="unit-conversions-v1")
