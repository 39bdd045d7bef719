"""The model version as materialized: what was resolved, so a result can be reproduced."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from assay.core.environment import package_versions
from assay.models.base import ModelSpec, ServingConfig
from assay.models.openai_backend import endpoint_identity_digest
from assay.registry import ModelVersion
from assay.storage.contract import MODEL_VERSION, REGISTERED_MODELS
from assay.storage.parquet import ParquetStore


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """One ``registered_models`` partition."""

    key: str
    model: str
    version: int
    source: str
    serving: ServingConfig
    artifact_digest: str
    aliases: tuple[str, ...]
    stage: str
    tags: dict[str, str]
    environment: dict[str, str]

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(key=self.key, source=self.source, serving=self.serving)

    SCHEMA = pa.schema(
        [
            ("key", pa.string()),
            ("model", pa.string()),
            ("version", pa.int64()),
            ("source", pa.string()),
            ("serving", pa.string()),
            ("artifact_digest", pa.string()),
            ("aliases", pa.list_(pa.string())),
            ("stage", pa.string()),
            ("tags", pa.string()),
            ("environment", pa.string()),
        ]
    )

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist(
            [
                {
                    "key": self.key,
                    "model": self.model,
                    "version": self.version,
                    "source": self.source,
                    "serving": json.dumps(self.serving.to_dict(), sort_keys=True),
                    "artifact_digest": self.artifact_digest,
                    "aliases": list(self.aliases),
                    "stage": self.stage,
                    "tags": json.dumps(self.tags, sort_keys=True),
                    "environment": json.dumps(self.environment, sort_keys=True),
                }
            ],
            schema=self.SCHEMA,
        )

    @classmethod
    def from_table(cls, table: pa.Table) -> ResolvedModel:
        if table.num_rows != 1:
            raise ValueError(f"a registered_models partition has one row, found {table.num_rows}")
        row = table.to_pylist()[0]
        return cls(
            key=row["key"],
            model=row["model"],
            version=row["version"],
            source=row["source"],
            serving=ServingConfig.from_dict(json.loads(row["serving"])),
            artifact_digest=row["artifact_digest"],
            aliases=tuple(row["aliases"]),
            stage=row["stage"],
            tags=json.loads(row["tags"]),
            environment=json.loads(row["environment"]),
        )


def resolve_version(
    version: ModelVersion, artifact_digest: Callable[[ModelSpec], str]
) -> ResolvedModel:
    """Resolve a registry version into what ``registered_models`` records for it.

    An ``openai:`` endpoint is not contacted here: resolution runs in the sensor for every
    newly registered version, and the URL is whatever a registry user wrote. Its digest is
    the endpoint's identity (credential-free URL and model id); the served model's own
    ``/models`` entry is digested by the evaluation's client, under the credential rules.
    """
    serving = ServingConfig.from_dict(dict(version.serving or {}))
    spec = ModelSpec(key=version.key, source=version.source, serving=serving)
    if version.source.startswith("openai:"):
        digest = endpoint_identity_digest(version.source)
    else:
        digest = artifact_digest(spec)
    return ResolvedModel(
        key=version.key,
        model=version.model,
        version=version.version,
        source=version.source,
        serving=serving,
        artifact_digest=digest,
        aliases=tuple(sorted(version.aliases)),
        stage=str(version.stage),
        tags=dict(version.tags or {}),
        environment=package_versions(),
    )


@dataclass(frozen=True, slots=True)
class RecordedModel:
    """A ``registered_models`` partition as written: what was resolved and where it lives."""

    resolved: ResolvedModel
    url: str

    def metadata(self) -> dict[str, object]:
        """What the Dagster UI shows for the partition (plain values; dicts render as JSON)."""
        r = self.resolved
        return {
            "source": r.source,
            "artifact_digest": r.artifact_digest,
            "aliases": ", ".join(r.aliases) or "-",
            "stage": r.stage,
            "serving": r.serving.to_dict(),
            "environment": dict(r.environment),
            "path": self.url,
        }


def record_registered_model(
    store: ParquetStore, version: ModelVersion, artifact_digest: Callable[[ModelSpec], str]
) -> RecordedModel:
    """Resolve ``version`` and write its ``registered_models`` partition.

    The one write path of that asset: the ``registered_models`` asset and the promotion sensor
    both call it. Resolution (the artifact digest) runs before anything is written, so a
    version whose source cannot be resolved raises and leaves the store untouched.
    """
    resolved = resolve_version(version, artifact_digest)
    url = store.write(REGISTERED_MODELS, {MODEL_VERSION: resolved.key}, resolved.to_table())
    return RecordedModel(resolved, url)
