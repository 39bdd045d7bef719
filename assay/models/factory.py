"""Build the model client a ``ModelSpec`` asks for, by the scheme of its source URI."""

from __future__ import annotations

from pathlib import Path

from assay.models.base import ModelClient, ModelSpec

_TRANSFORMERS_SCHEMES = ("bundled", "gguf", "hf")


def build_client(spec: ModelSpec, cache_dir: Path) -> ModelClient:
    """A client for ``spec``: transformers for ``bundled:``/``gguf:``/``hf:``, HTTP for ``openai:``,
    llama.cpp in process for ``llamacpp:``.

    Backends are imported on demand, so an HTTP-only deployment never imports torch.
    ``cache_dir`` holds converted model files and digest sidecars.
    """
    scheme = spec.scheme
    if scheme in _TRANSFORMERS_SCHEMES:
        from assay.models.transformers_backend import TransformersClient

        return TransformersClient(spec, cache_dir)
    if scheme == "openai":
        from assay.models.openai_backend import OpenAIClient
        from assay.models.replicas import ReplicatedOpenAIClient, is_replicated_source

        if is_replicated_source(spec.source):
            return ReplicatedOpenAIClient(spec)

        return OpenAIClient(spec)
    if scheme == "llamacpp":
        from assay.models.llamacpp_backend import LlamaCppClient

        return LlamaCppClient(spec, cache_dir)
    raise ValueError(
        f"model {spec.key!r}: source {spec.source!r} has unknown scheme {scheme!r} "
        f"(known: {', '.join([*_TRANSFORMERS_SCHEMES, 'openai', 'llamacpp'])})"
    )
