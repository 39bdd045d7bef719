"""Configurable resources for storage, the registry, the suite and model clients."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from assay.evaluate.suite import Suite, load_suite
from assay.models.base import ModelClient, ModelSpec
from assay.models.cache import CachedClient, RequestCache
from assay.models.factory import build_client
from assay.registry import Registry, default_registry_url
from assay.storage.parquet import ParquetStore, default_base_url


def _assay_home() -> Path:
    return Path(os.environ.get("ASSAY_HOME", ".assay"))


class StorageResource(ConfigurableResource):
    """Direct access to the Parquet store, for assets that read many partitions at once."""

    base_url: str = Field(default_factory=default_base_url)

    def store(self) -> ParquetStore:
        return ParquetStore(self.base_url)


class RegistryResource(ConfigurableResource):
    """The model and prompt registry (SQLite file by default, any SQLAlchemy URL)."""

    url: str = Field(default_factory=default_registry_url)

    def open(self) -> Registry:
        return _open_registry(self.url)


@cache
def _open_registry(url: str) -> Registry:
    return Registry.open(url)


class SuiteResource(ConfigurableResource):
    """The evaluation suite file (``$ASSAY_SUITE`` or the shipped default)."""

    path: str | None = None
    max_instances: int | None = Field(
        default=None, description="Cap on eval instances per scenario (smoke runs, tests)."
    )

    def load(self) -> Suite:
        return load_suite(self.path)


class ModelsResource(ConfigurableResource):
    """Builds model clients behind the content-addressed request cache."""

    cache_dir: str = Field(default_factory=lambda: str(_assay_home() / "cache"))
    request_cache_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the request cache (default: SQLite file)."
    )
    max_failure_fraction: float = Field(
        default=0.05, description="A partition fails when more of its requests fail than this."
    )

    def cache_url(self) -> str:
        if self.request_cache_url:
            return self.request_cache_url
        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(self.cache_dir).resolve() / 'requests.db'}"

    def client(self, spec: ModelSpec) -> ModelClient:
        raw = build_client(spec, Path(self.cache_dir))
        return CachedClient(raw, RequestCache(self.cache_url()), spec.serving)

    def artifact_digest(self, spec: ModelSpec) -> str:
        """Digest of the version's weights, tokenizer and chat template."""
        return build_client(spec, Path(self.cache_dir)).artifact_digest
