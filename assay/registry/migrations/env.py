"""Alembic environment for the registry store.

Migrations run programmatically from ``Registry.open``, which hands over an open connection
(already holding the store's write lock) in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from assay.registry.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("registry migrations run through assay.registry.Registry.open(url)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
)
with context.begin_transaction():
    context.run_migrations()
