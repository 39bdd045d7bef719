"""Scenarios the project ships: generated deterministically or read from files in the package."""

from __future__ import annotations

import json
import random
from importlib import resources

from assay.core.digests import digest_bytes, seed_from
from assay.core.records import Instance, Reference
from assay.scenarios.base import Scenario, ScenarioData, register_scenario


@register_scenario("arithmetic_qa")
class ArithmeticQA(Scenario):
    """Short-answer arithmetic ("What is 17 + 25?" → "42"), scored by exact match.

    Operands are drawn with a seed derived from the scenario arguments and the item index,
    so the same arguments always give the same instances.
    """

    REVISION = "generated-v1"

    def __init__(
        self, n_test: int = 150, n_train: int = 20, max_operand: int = 50, seed: int = 0
    ) -> None:
        if n_test < 1 or n_train < 0 or max_operand < 1:
            raise ValueError("arithmetic_qa needs n_test >= 1, n_train >= 0, max_operand >= 1")
        self.n_test, self.n_train, self.max_operand, self.seed = n_test, n_train, max_operand, seed

    def _instance(self, split: str, index: int) -> Instance:
        rng = random.Random(seed_from(self.name, self.seed, self.max_operand, split, index))
        a, b = rng.randint(0, self.max_operand), rng.randint(0, self.max_operand)
        op = rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a
        answer = a + b if op == "+" else a - b
        return Instance(
            id=f"{split}-{index:05d}",
            input=f"What is {a} {op} {b}?",
            references=(Reference(str(answer), correct=True),),
            split=split,
            sub_split="addition" if op == "+" else "subtraction",
        )

    def load(self) -> ScenarioData:
        items = [self._instance("train", i) for i in range(self.n_train)]
        items += [self._instance("test", i) for i in range(self.n_test)]
        return ScenarioData(items, revision=f"{self.REVISION}:seed={self.seed}")


@register_scenario("facts_mc")
class FactsMC(Scenario):
    """Four-way multiple choice over everyday facts (capitals, opposites, plurals, sounds).

    The facts ship in ``data/facts.json``; distractors are other answers of the same
    category, drawn with a seed derived from the item, so the choice order is fixed.
    """

    def __init__(self, num_choices: int = 4, seed: int = 0) -> None:
        if num_choices < 2:
            raise ValueError("facts_mc needs num_choices >= 2")
        self.num_choices, self.seed = num_choices, seed

    def load(self) -> ScenarioData:
        raw = resources.files("assay.scenarios").joinpath("data/facts.json").read_bytes()
        categories = json.loads(raw)
        items = []
        for category, spec in sorted(categories.items()):
            answers = [answer for _, answer in spec["pairs"]]
            for index, (subject, answer) in enumerate(spec["pairs"]):
                item_id = f"{category}-{index:03d}"
                rng = random.Random(seed_from(self.name, self.seed, item_id))
                pool = sorted({a for a in answers if a not in (answer, subject)})
                if len(pool) < self.num_choices - 1:
                    raise ValueError(
                        f"facts.json category {category!r} has too few answers for "
                        f"{self.num_choices} choices"
                    )
                choices = [answer, *rng.sample(pool, self.num_choices - 1)]
                rng.shuffle(choices)
                items.append(
                    Instance(
                        id=item_id,
                        input=spec["question"].format(subject=subject),
                        references=tuple(Reference(c, correct=c == answer) for c in choices),
                        sub_split=category,
                    )
                )
        return ScenarioData(items, revision=f"facts.json:{digest_bytes(raw)[:12]}")
