"""Model and prompt registry: versions, aliases, stages, tags, prompt templates and an
append-only event log, stored through SQLAlchemy (SQLite by default, Postgres by URL)."""

from assay.registry.checks import normalize_serving
from assay.registry.engine import default_actor, default_registry_url
from assay.registry.entities import (
    Event,
    EventKind,
    ModelVersion,
    Prices,
    PromptTemplate,
    PromptVersion,
    RegisteredModel,
    Stage,
)
from assay.registry.errors import ErrorCode, RegistryError
from assay.registry.store import Registry

__all__ = [
    "ErrorCode",
    "Event",
    "EventKind",
    "ModelVersion",
    "Prices",
    "PromptTemplate",
    "PromptVersion",
    "RegisteredModel",
    "Registry",
    "RegistryError",
    "Stage",
    "default_actor",
    "default_registry_url",
    "normalize_serving",
]
