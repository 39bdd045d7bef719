"""Adapters: from instances and a prompt layout to model requests."""

from assay.adapters.helm_prompts import from_helm_adapter_spec, helm_train_examples
from assay.adapters.prompts import (
    LETTERS,
    UNCONDITIONED,
    RenderedPrompt,
    build_requests,
    build_variant_requests,
    choice_label,
    fit_prompt,
    joint_answer_map,
    language_modeling_requests,
    render_prompt,
    select_train_examples,
)
from assay.adapters.spec import LOGLIKELIHOOD_METHODS, AdapterSpec, Method

__all__ = [
    "LETTERS",
    "LOGLIKELIHOOD_METHODS",
    "UNCONDITIONED",
    "AdapterSpec",
    "Method",
    "RenderedPrompt",
    "build_requests",
    "build_variant_requests",
    "choice_label",
    "fit_prompt",
    "from_helm_adapter_spec",
    "helm_train_examples",
    "joint_answer_map",
    "language_modeling_requests",
    "render_prompt",
    "select_train_examples",
]
