"""Serving any ``ModelClient`` behind an OpenAI-compatible HTTP API."""

from assay.models.prompt_logprobs import PromptLogprobs, PromptScorer
from assay.serving.batcher import BatchStats, RequestBatcher
from assay.serving.openai_server import (
    BackgroundApp,
    OpenAIServer,
    RunningServer,
    asgi_in_background,
    serve,
    serving_in_background,
)

__all__ = [
    "BackgroundApp",
    "BatchStats",
    "OpenAIServer",
    "PromptLogprobs",
    "PromptScorer",
    "RequestBatcher",
    "RunningServer",
    "asgi_in_background",
    "serve",
    "serving_in_background",
]
