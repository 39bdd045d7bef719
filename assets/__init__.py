"""The Dagster assets of assay: thin wrappers over the ``assay`` library."""

from assets.contamination import contamination, corpus_index, training_corpora
from assets.dashboard import dashboard
from assets.evaluation import model_outputs, scores
from assets.perturbations import perturbed_instances
from assets.prompt_trials import prompt_trials
from assets.rankings import rankings
from assets.registry import registered_models
from assets.scenarios import scenario_instances

all_assets = [
    registered_models,
    scenario_instances,
    perturbed_instances,
    model_outputs,
    scores,
    prompt_trials,
    rankings,
    dashboard,
    training_corpora,
    corpus_index,
    contamination,
]

__all__ = [
    "all_assets",
    "contamination",
    "corpus_index",
    "dashboard",
    "model_outputs",
    "prompt_trials",
    "rankings",
    "registered_models",
    "scenario_instances",
    "scores",
    "training_corpora",
]
