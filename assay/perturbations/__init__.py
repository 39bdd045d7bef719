"""Perturbations of scenario inputs for the robustness and fairness families.

Each perturbation has a stable ``name``, parameters, a ``family`` ('robustness' or
'fairness') and ``apply(text, seed)``, deterministic in the seed (the instance id). Build one
from a spec with :func:`get_perturbation` and perturb instances with :func:`perturb_instances`.
"""

from assay.perturbations.apply import PerturbedInstance, perturb_instances
from assay.perturbations.base import FAIRNESS, ROBUSTNESS, Perturbation
from assay.perturbations.registry import PERTURBATIONS, family_of, get_perturbation

__all__ = [
    "FAIRNESS",
    "PERTURBATIONS",
    "ROBUSTNESS",
    "Perturbation",
    "PerturbedInstance",
    "family_of",
    "get_perturbation",
    "perturb_instances",
]
