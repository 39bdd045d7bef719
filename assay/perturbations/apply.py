"""Perturbing scenario instances: the rows of the ``perturbed_instances`` asset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from assay.core.records import Instance
from assay.perturbations.base import Perturbation


@dataclass(frozen=True, slots=True)
class PerturbedInstance:
    """One instance under one perturbation. References are the original's, untouched."""

    instance: Instance  # the original
    perturbation: str  # the perturbation's spec: name and parameters
    family: str
    input: str  # the perturbed input

    @property
    def original_id(self) -> str:
        return self.instance.id

    @property
    def unchanged(self) -> bool:
        return self.input == self.instance.input


def perturb_instances(
    instances: Iterable[Instance],
    perturbations: Sequence[Perturbation],
    drop_unchanged: bool = True,
) -> list[PerturbedInstance]:
    """Every perturbation of every instance, each seeded from the instance id.

    With ``drop_unchanged`` (the default, as HELM does) a perturbation that leaves an input
    as it was is not emitted: it would only duplicate the original's scores.
    """
    out = []
    for instance in instances:
        for perturbation in perturbations:
            row = PerturbedInstance(
                instance=instance,
                perturbation=perturbation.spec,
                family=perturbation.family,
                input=perturbation.apply(instance.input, seed=instance.id),
            )
            if not (drop_unchanged and row.unchanged):
                out.append(row)
    return out
