"""The Alembic migrations shipped in the package: applied on open, idempotent on reopen, and
in step with the SQLAlchemy models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

import assay.registry.store as store_module
from assay.registry import Registry
from assay.registry.schema import Base


def _head() -> str:
    config = Config()
    config.set_main_option(
        "script_location", str(Path(store_module.__file__).parent / "migrations")
    )
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _revision_and_tables(url: str) -> tuple[str | None, set[str], list]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            tables = set(inspect(conn).get_table_names())
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            return revision, tables, diff
    finally:
        engine.dispose()


def test_open_migrates_an_empty_database_to_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'registry.db'}"
    Registry.open(url).close()
    revision, tables, diff = _revision_and_tables(url)
    assert revision == _head()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    # The hand-written migration creates exactly what the models describe.
    assert diff == []


def test_reopening_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry.open(url) as registry:
        registry.create_model("m")
        registry.create_version("m", "hf:/a")
        events = registry.events()
    for _ in range(2):
        with Registry.open(url) as registry:
            assert registry.get_version("m@v1").source == "hf:/a"
            assert registry.events() == events
    revision, _, _ = _revision_and_tables(url)
    assert revision == _head()
