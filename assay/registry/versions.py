"""The model registry: registered models, their numbered versions, tags, recorded
evaluations and the event log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from assay.registry.checks import (
    SOURCE_URI,
    check_tag_value,
    check_tags,
    check_text,
    check_version_number,
    credentials_in_source,
    normalize_serving,
)
from assay.registry.engine import RegistryBase, as_utc, event_record, one
from assay.registry.entities import (
    Event,
    EventKind,
    ModelVersion,
    Prices,
    RegisteredModel,
    Stage,
)
from assay.registry.errors import exists, invalid, not_found
from assay.registry.limits import SOURCE_MAX_BYTES, unsafe_characters
from assay.registry.names import (
    VersionPointer,
    check_name,
    parse_reference,
    version_key,
)
from assay.registry.schema import (
    AliasRow,
    EventRow,
    ModelRow,
    ModelTagRow,
    VersionRow,
    VersionTagRow,
)
from assay.registry.training_data import (
    TrainingCorpus,
    check_training_data,
    manifest_from_json,
    manifest_json,
)


class ModelRegistry(RegistryBase):
    """Registered models and versions; lookups the alias and stage methods share."""

    # -- lookups inside a transaction

    @staticmethod
    def _model_row(session: Session, name: str, *, lock: bool = False) -> ModelRow:
        query = select(ModelRow).where(ModelRow.name == name)
        return one(session, query, lock, f"registered model {name!r}")

    @staticmethod
    def _version_row(session: Session, model: ModelRow, version: int) -> VersionRow:
        query = select(VersionRow).where(
            VersionRow.model_id == model.id, VersionRow.version == version
        )
        return one(session, query, False, f"model version {version_key(model.name, version)!r}")

    def _resolve_row(self, session: Session, ref: VersionPointer) -> tuple[ModelRow, VersionRow]:
        model = self._model_row(session, ref.name)
        if ref.alias is not None:
            alias = session.get(AliasRow, (model.id, ref.alias))
            if alias is None:
                raise not_found(f"alias {ref.alias!r} of model {ref.name!r} does not exist")
            return model, session.get_one(VersionRow, alias.version_id)
        if ref.version is not None:
            return model, self._version_row(session, model, ref.version)
        if model.last_version == 0:
            raise not_found(f"registered model {ref.name!r} has no versions")
        row = session.scalars(
            select(VersionRow)
            .where(VersionRow.model_id == model.id)
            .order_by(VersionRow.version.desc())
            .limit(1)
        ).one()
        return model, row

    @staticmethod
    def _model_record(session: Session, row: ModelRow) -> RegisteredModel:
        tags = session.scalars(select(ModelTagRow).where(ModelTagRow.model_id == row.id)).all()
        aliases = session.execute(
            select(AliasRow.alias, VersionRow.version)
            .join(VersionRow, VersionRow.id == AliasRow.version_id)
            .where(AliasRow.model_id == row.id)
        ).all()
        return RegisteredModel(
            name=row.name,
            description=row.description,
            tags={t.key: t.value for t in tags},
            created_at=row.created_at,
            updated_at=row.updated_at,
            latest_version=row.last_version or None,
            aliases=dict(sorted((a, v) for a, v in aliases)),
        )

    @staticmethod
    def _version_records(
        session: Session, rows: Iterable[tuple[str, VersionRow]]
    ) -> list[ModelVersion]:
        rows = list(rows)
        ids = [row.id for _, row in rows]
        tags: dict[int, dict[str, str]] = {i: {} for i in ids}
        aliases: dict[int, list[str]] = {i: [] for i in ids}
        # Batched in chunks: one query per table instead of one per version.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for tag in session.scalars(
                select(VersionTagRow).where(VersionTagRow.version_id.in_(chunk))
            ):
                tags[tag.version_id][tag.key] = tag.value
            for alias in session.scalars(select(AliasRow).where(AliasRow.version_id.in_(chunk))):
                aliases[alias.version_id].append(alias.alias)
        return [
            ModelVersion(
                model=name,
                version=row.version,
                source=row.source,
                serving=json.loads(row.serving),
                description=row.description,
                tags=tags[row.id],
                aliases=tuple(sorted(aliases[row.id])),
                stage=Stage(row.stage),
                status=row.status,
                created_at=row.created_at,
                prices=Prices(row.price_prompt_per_1k, row.price_completion_per_1k),
                training_data=manifest_from_json(json.loads(row.training_data or "[]")),
            )
            for name, row in rows
        ]

    def _version_record(self, session: Session, name: str, row: VersionRow) -> ModelVersion:
        return self._version_records(session, [(name, row)])[0]

    # -- registered models

    def create_model(
        self,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        actor: str | None = None,
    ) -> RegisteredModel:
        """Register a new model name; RESOURCE_ALREADY_EXISTS if it is taken."""
        return self._create_model(name, description, tags, actor, existing_ok=False)

    def get_or_create_model(
        self,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        actor: str | None = None,
    ) -> RegisteredModel:
        """The model called ``name``, created (with this description and tags) if absent."""
        return self._create_model(name, description, tags, actor, existing_ok=True)

    def _create_model(
        self,
        name: str,
        description: str,
        tags: Mapping[str, str] | None,
        actor: str | None,
        *,
        existing_ok: bool,
    ) -> RegisteredModel:
        check_name(name, "model name")
        check_text(description, f"model {name!r}: description")
        checked = check_tags(tags, f"model {name!r}")

        def work(session: Session) -> RegisteredModel:
            row = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
            if row is not None:
                if not existing_ok:
                    raise exists(f"registered model {name!r} already exists")
                return self._model_record(session, row)
            return self._insert_model(session, name, description, checked, actor)

        return self._write(work)

    def _insert_model(
        self,
        session: Session,
        name: str,
        description: str,
        tags: dict[str, str],
        actor: str | None,
    ) -> RegisteredModel:
        now = self._now()
        row = ModelRow(
            name=name, description=description, created_at=now, updated_at=now, last_version=0
        )
        session.add(row)
        session.flush()
        session.add_all(ModelTagRow(model_id=row.id, key=k, value=v) for k, v in tags.items())
        self._emit(
            session,
            EventKind.MODEL_CREATED,
            actor,
            now,
            model=name,
            payload={"description": description, "tags": tags},
        )
        session.flush()
        return self._model_record(session, row)

    def get_model(self, name: str) -> RegisteredModel:
        return self._read(lambda s: self._model_record(s, self._model_row(s, name)))

    def list_models(self) -> list[RegisteredModel]:
        """All registered models, by name."""

        def work(session: Session) -> list[RegisteredModel]:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [self._model_record(session, row) for row in rows]

        return self._read(work)

    # -- versions

    def create_version(
        self,
        model: str,
        source: str,
        serving: Mapping[str, Any] | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        prices: Prices | Mapping[str, Any] | None = None,
        actor: str | None = None,
        training_data: Sequence[TrainingCorpus | Mapping[str, Any]] | None = None,
    ) -> ModelVersion:
        """Register the next version of ``model`` (which must exist): 1, 2, 3, ... per model.

        ``serving`` is validated as a ``ServingConfig`` and stored with defaults filled in;
        ``training_data`` is the version's manifest of training corpora
        (``assay.registry.training_data``).
        """
        check_name(model, "model name")
        where = f"new version of model {model!r}"
        if isinstance(source, str) and len(source.encode()) > SOURCE_MAX_BYTES:
            raise invalid(f"{where}: source is longer than {SOURCE_MAX_BYTES} bytes")
        if (
            not isinstance(source, str)
            or not SOURCE_URI.match(source)
            or not source.isprintable()
            or unsafe_characters(source)
        ):
            raise invalid(f"{where}: source {source!r} is not a URI like 'hf:/path/to/model'")
        found = credentials_in_source(source)
        if found:
            # Sources are stored, logged and shown in the UI: secrets never go in them. The
            # message names what was found, never its value.
            raise invalid(
                f"{where}: the source URI carries credentials ({found}); pass them through "
                "an environment variable (e.g. OPENAI_API_KEY) instead"
            )
        normalized = normalize_serving(serving, where)
        check_text(description, f"{where}: description")
        tags = check_tags(tags, where)
        price = Prices.coerce(prices)
        corpora = manifest_json(check_training_data(training_data, where))

        def work(session: Session) -> ModelVersion:
            now = self._now()
            model_row = self._model_row(session, model, lock=True)
            model_row.last_version += 1
            model_row.updated_at = now
            row = VersionRow(
                model_id=model_row.id,
                version=model_row.last_version,
                source=source,
                serving=json.dumps(normalized, sort_keys=True),
                description=description,
                status="READY",
                stage=Stage.NONE.value,
                created_at=now,
                price_prompt_per_1k=price.prompt_per_1k,
                price_completion_per_1k=price.completion_per_1k,
                training_data=json.dumps(corpora),
            )
            session.add(row)
            session.flush()
            session.add_all(
                VersionTagRow(version_id=row.id, key=k, value=v) for k, v in tags.items()
            )
            self._emit(
                session,
                EventKind.VERSION_CREATED,
                actor,
                now,
                model=model,
                version=row.version,
                payload={
                    "source": source,
                    "serving": normalized,
                    "description": description,
                    "tags": tags,
                    "prices": {
                        "prompt_per_1k": price.prompt_per_1k,
                        "completion_per_1k": price.completion_per_1k,
                    },
                    "training_data": corpora,
                },
            )
            session.flush()
            return self._version_record(session, model, row)

        return self._write(work)

    def get_version(self, key: str) -> ModelVersion:
        """The version with partition key ``<model>@v<n>``."""
        ref = parse_reference(key, "models")
        if ref.version is None or key.startswith("models:/"):
            raise invalid(f"{key!r} is not a version key like 'name@v3'")
        return self.resolve(key)

    def resolve(self, uri_or_key: str) -> ModelVersion:
        """Resolve ``name@v3``, ``name@champion``, ``name@latest``, ``models:/name@champion``,
        ``models:/name/3`` or ``models:/name`` (latest) to a version."""
        ref = parse_reference(uri_or_key, "models")

        def work(session: Session) -> ModelVersion:
            model, row = self._resolve_row(session, ref)
            return self._version_record(session, model.name, row)

        return self._read(work)

    def find_version(
        self, model: str, source: str, serving: Mapping[str, Any] | None = None
    ) -> ModelVersion | None:
        """The earliest version of ``model`` with this source and (normalized) serving config,
        or None; lets a caller register idempotently."""
        normalized = json.dumps(normalize_serving(serving), sort_keys=True)

        def work(session: Session) -> ModelVersion | None:
            row = session.scalars(
                select(VersionRow)
                .join(ModelRow, ModelRow.id == VersionRow.model_id)
                .where(
                    ModelRow.name == model,
                    VersionRow.source == source,
                    VersionRow.serving == normalized,
                )
                .order_by(VersionRow.version)
                .limit(1)
            ).one_or_none()
            return None if row is None else self._version_record(session, model, row)

        return self._read(work)

    def list_versions(
        self, model: str | None = None, as_of: datetime | None = None
    ) -> list[ModelVersion]:
        """Versions (of one model, or all), ordered by model and number.

        With ``as_of``, only versions registered by then according to the event log; the
        records themselves show current tags, aliases and stage.
        """
        cutoff = None if as_of is None else as_utc(as_of, "as_of")

        def work(session: Session) -> list[ModelVersion]:
            if model is not None:
                self._model_row(session, model)
            query = select(ModelRow.name, VersionRow).join(
                ModelRow, ModelRow.id == VersionRow.model_id
            )
            if model is not None:
                query = query.where(ModelRow.name == model)
            if cutoff is not None:
                registered = select(EventRow.model, EventRow.version).where(
                    EventRow.kind == EventKind.VERSION_CREATED.value, EventRow.ts <= cutoff
                )
                if model is not None:
                    registered = registered.where(EventRow.model == model)
                wanted = {(m, v) for m, v in session.execute(registered)}
            rows = [
                (name, row)
                for name, row in session.execute(query.order_by(ModelRow.name, VersionRow.version))
                if cutoff is None or (name, row.version) in wanted
            ]
            return self._version_records(session, rows)

        return self._read(work)

    def versions(self, as_of: datetime | None = None) -> list[ModelVersion]:
        """Every version registered by ``as_of`` (all versions when None)."""
        return self.list_versions(None, as_of)

    def set_tag(
        self,
        model: str,
        key: str,
        value: str,
        version: int | None = None,
        actor: str | None = None,
    ) -> None:
        """Set a tag on a model, or on one of its versions when ``version`` is given."""
        check_name(model, "model name")
        check_name(key, "tag key", allow_at=True)
        check_tag_value(value, f"tag {key!r}")
        if version is not None:
            check_version_number(version, f"tag {key!r} of model {model!r}")

        def work(session: Session) -> None:
            now = self._now()
            model_row = self._model_row(session, model)
            self._put_tag(session, model_row, version, key, value, actor, now, emit=True)

        self._write(work)

    def _put_tag(
        self,
        session: Session,
        model_row: ModelRow,
        version: int | None,
        key: str,
        value: str,
        actor: str | None,
        now: datetime,
        *,
        emit: bool,
    ) -> None:
        tag: ModelTagRow | VersionTagRow | None
        if version is None:
            tag = session.get(ModelTagRow, (model_row.id, key))
            new: ModelTagRow | VersionTagRow = ModelTagRow(
                model_id=model_row.id, key=key, value=value
            )
        else:
            version_row = self._version_row(session, model_row, version)
            tag = session.get(VersionTagRow, (version_row.id, key))
            new = VersionTagRow(version_id=version_row.id, key=key, value=value)
        before = None if tag is None else tag.value
        if before == value:
            return
        if tag is None:
            session.add(new)
        else:
            tag.value = value
        model_row.updated_at = now
        if emit:
            self._emit(
                session,
                EventKind.TAG_SET,
                actor,
                now,
                model=model_row.name,
                version=version,
                payload={"key": key, "value": value, "before": before},
            )

    # -- evaluations and the event log

    def record_evaluation(
        self,
        key: str,
        scenario: str,
        metrics: Mapping[str, float],
        run_id: str | None = None,
        actor: str | None = None,
    ) -> Event:
        """Log an evaluation of version ``key`` and tag it ``eval.<scenario>.<metric>=value``.

        Metric values must be finite numbers (the log is JSON, which has no NaN).
        """
        ref = parse_reference(key, "models")
        check_name(scenario, "scenario", allow_at=True)
        if not isinstance(metrics, Mapping) or not metrics:
            raise invalid(
                f"evaluation of {key!r} on {scenario!r}: metrics must be a non-empty mapping"
            )
        values: dict[str, float] = {}
        for name, value in metrics.items():
            check_name(name, f"evaluation of {key!r} on {scenario!r}: metric name", allow_at=True)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid(f"evaluation of {key!r}: metric {name!r} is not a number: {value!r}")
            if not math.isfinite(value):
                raise invalid(f"evaluation of {key!r}: metric {name!r} is not finite: {value!r}")
            check_name(f"eval.{scenario}.{name}", "tag key", allow_at=True)
            values[name] = float(value)
        if run_id is not None:
            check_text(run_id, "run_id")

        def work(session: Session) -> Event:
            now = self._now()
            model_row, row = self._resolve_row(session, ref)
            for name, value in values.items():
                tag_key = f"eval.{scenario}.{name}"
                # The evaluation event carries every value; per-tag events would only repeat it.
                self._put_tag(
                    session, model_row, row.version, tag_key, repr(value), actor, now, emit=False
                )
            event_row = self._emit(
                session,
                EventKind.EVALUATION_RECORDED,
                actor,
                now,
                model=model_row.name,
                version=row.version,
                payload={"scenario": scenario, "metrics": values, "run_id": run_id},
            )
            session.flush()
            return event_record(event_row)

        return self._write(work)

    def events(
        self,
        after_id: int = 0,
        limit: int | None = None,
        *,
        model: str | None = None,
        prompt: str | None = None,
        kind: EventKind | None = None,
        until: datetime | None = None,
    ) -> list[Event]:
        """Events with id greater than ``after_id``, oldest first (at most ``limit``).

        ``model``, ``prompt``, ``kind`` and ``until`` (a time, inclusive) filter in the
        database, so ``limit`` bounds what is read whatever the filters.
        """
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise invalid(f"limit must be a non-negative integer, got {limit!r}")

        def work(session: Session) -> list[Event]:
            query = select(EventRow).where(EventRow.id > after_id).order_by(EventRow.id)
            if model is not None:
                query = query.where(EventRow.model == model)
            if prompt is not None:
                query = query.where(EventRow.prompt == prompt)
            if kind is not None:
                query = query.where(EventRow.kind == kind.value)
            if until is not None:
                query = query.where(EventRow.ts <= as_utc(until, "until"))
            if limit is not None:
                query = query.limit(limit)
            return [event_record(row) for row in session.scalars(query)]

        return self._read(work)

    def refuse_promotion(self, event: Event, reason: str, actor: str | None = None) -> Event:
        """Log that ``event`` could not be acted on (a ``promotion_refused`` event).

        The model name is copied from ``event`` unchecked: the refusal of a version whose name
        later rules refuse must still be recordable. ``reason`` is cut to 1000 characters.
        """
        check_text(reason, "reason")

        def work(session: Session) -> Event:
            row = self._emit(
                session,
                EventKind.PROMOTION_REFUSED,
                actor,
                self._now(),
                model=event.model,
                prompt=event.prompt,
                version=event.version,
                payload={
                    "event_id": event.id,
                    "event_kind": event.kind.value,
                    "reason": reason[:1000],
                },
            )
            session.flush()
            return event_record(row)

        return self._write(work)

    # -- descriptions and tag removal (what MLflow's update and delete-tag calls need)

    def set_description(
        self, model: str, description: str, version: int | None = None, actor: str | None = None
    ) -> None:
        """Replace the description of a model, or of one of its versions."""
        check_name(model, "model name")
        check_text(description, f"model {model!r}: description")
        if version is not None:
            check_version_number(version, f"description of model {model!r}")

        def work(session: Session) -> None:
            now = self._now()
            model_row = self._model_row(session, model)
            target: ModelRow | VersionRow = model_row
            if version is not None:
                target = self._version_row(session, model_row, version)
            before = target.description
            if before == description:
                return
            target.description = description
            model_row.updated_at = now
            self._emit(
                session,
                EventKind.DESCRIPTION_SET,
                actor,
                now,
                model=model,
                version=version,
                payload={"before": before, "after": description},
            )

        self._write(work)

    def set_prices(
        self, key: str, prices: Prices | Mapping[str, Any] | None, actor: str | None = None
    ) -> ModelVersion:
        """Replace the token prices of version ``key`` (``<model>@v<n>``).

        Costs already scored keep the prices pinned when their evaluation ran; the new prices
        apply from the version's next evaluation.
        """
        ref = parse_reference(key, "models")
        if ref.version is None or key.startswith("models:/"):
            raise invalid(f"{key!r} is not a version key like 'name@v3'")
        price = Prices.coerce(prices)

        def work(session: Session) -> ModelVersion:
            now = self._now()
            model_row, row = self._resolve_row(session, ref)
            before = Prices(row.price_prompt_per_1k, row.price_completion_per_1k)
            if before != price:
                row.price_prompt_per_1k = price.prompt_per_1k
                row.price_completion_per_1k = price.completion_per_1k
                model_row.updated_at = now
                self._emit(
                    session,
                    EventKind.PRICES_SET,
                    actor,
                    now,
                    model=model_row.name,
                    version=row.version,
                    payload={"before": asdict(before), "after": asdict(price)},
                )
                session.flush()
            return self._version_record(session, model_row.name, row)

        return self._write(work)

    def set_training_data(
        self,
        key: str,
        training_data: Sequence[TrainingCorpus | Mapping[str, Any]] | None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Replace the training-data manifest of version ``key`` (``<model>@v<n>``).

        A change is a ``training_data_set`` event (before and after): the promotion sensor
        records the version's ``training_corpora`` again, which marks exactly this version's
        ``contamination`` partitions stale when a corpus digest changed.
        """
        ref = parse_reference(key, "models")
        if ref.version is None or key.startswith("models:/"):
            raise invalid(f"{key!r} is not a version key like 'name@v3'")
        corpora = manifest_json(check_training_data(training_data, f"model version {key!r}"))

        def work(session: Session) -> ModelVersion:
            now = self._now()
            model_row, row = self._resolve_row(session, ref)
            before = json.loads(row.training_data or "[]")
            if before != corpora:
                row.training_data = json.dumps(corpora)
                model_row.updated_at = now
                self._emit(
                    session,
                    EventKind.TRAINING_DATA_SET,
                    actor,
                    now,
                    model=model_row.name,
                    version=row.version,
                    payload={"before": before, "after": corpora},
                )
                session.flush()
            return self._version_record(session, model_row.name, row)

        return self._write(work)

    def delete_tag(
        self, model: str, key: str, version: int | None = None, actor: str | None = None
    ) -> None:
        """Remove a tag from a model or version; RESOURCE_DOES_NOT_EXIST if it is not set."""
        check_name(model, "model name")
        check_name(key, "tag key", allow_at=True)
        if version is not None:
            check_version_number(version, f"tag {key!r} of model {model!r}")

        def work(session: Session) -> None:
            now = self._now()
            model_row = self._model_row(session, model)
            tag: ModelTagRow | VersionTagRow | None
            if version is None:
                tag = session.get(ModelTagRow, (model_row.id, key))
                where = f"registered model {model!r}"
            else:
                version_row = self._version_row(session, model_row, version)
                tag = session.get(VersionTagRow, (version_row.id, key))
                where = f"model version {version_key(model, version)!r}"
            if tag is None:
                raise not_found(f"tag {key!r} of {where} does not exist")
            before = tag.value
            session.delete(tag)
            model_row.updated_at = now
            self._emit(
                session,
                EventKind.TAG_DELETED,
                actor,
                now,
                model=model,
                version=version,
                payload={"key": key, "before": before},
            )

        self._write(work)

    def latest_versions(
        self, model: str, stages: Iterable[Stage | str] | None = None
    ) -> list[ModelVersion]:
        """The highest-numbered version in each stage (every stage when None), by stage order."""
        wanted = list(Stage) if stages is None else [Stage.parse(s) for s in stages]

        def work(session: Session) -> list[ModelVersion]:
            model_row = self._model_row(session, model)
            numbers = dict(
                session.execute(
                    select(VersionRow.stage, func.max(VersionRow.version))
                    .where(VersionRow.model_id == model_row.id)
                    .group_by(VersionRow.stage)
                ).all()
            )
            rows = [
                (model, self._version_row(session, model_row, numbers[stage.value]))
                for stage in wanted
                if stage.value in numbers
            ]
            return self._version_records(session, rows)

        return self._read(work)

    def versions_page(
        self, model: str, offset: int, limit: int, *, descending: bool = True
    ) -> tuple[list[ModelVersion], int]:
        """One page of a model's versions by number, and how many versions it has in all."""
        if offset < 0 or limit < 0:
            raise invalid(f"offset and limit must be non-negative, got {offset}, {limit}")

        def work(session: Session) -> tuple[list[ModelVersion], int]:
            model_row = self._model_row(session, model)
            total = session.scalar(
                select(func.count())
                .select_from(VersionRow)
                .where(VersionRow.model_id == model_row.id)
            )
            order = VersionRow.version.desc() if descending else VersionRow.version.asc()
            rows = session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model_row.id)
                .order_by(order)
                .offset(offset)
                .limit(limit)
            ).all()
            return self._version_records(session, [(model, r) for r in rows]), int(total or 0)

        return self._read(work)
