"""Adapters: from instances and a prompt layout to model requests."""

from assay.adapters.prompts import build_requests, render_prompt, select_train_examples
from assay.adapters.spec import AdapterSpec, Method

__all__ = ["AdapterSpec", "Method", "build_requests", "render_prompt", "select_train_examples"]
