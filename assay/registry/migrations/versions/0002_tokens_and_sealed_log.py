"""API tokens, and an event log sealed against every SQL path that could rewrite it.

0001 refused UPDATE and DELETE. That left holes: on SQLite ``INSERT OR REPLACE``/``REPLACE``
deletes the clashing row without firing delete triggers (unless ``recursive_triggers`` is on,
which an attacker's connection would not set), and an explicit id can be inserted into a gap
below the newest event, behind the promotion sensor's cursor; on Postgres ``TRUNCATE`` fires
no row trigger. Now a new event must carry an id above every existing one, and TRUNCATE is
refused. (Whoever owns the database can still drop the triggers; that is the database's
administrator, not a registry user.)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from assay.registry.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# In a BEFORE INSERT trigger an id SQLite will assign itself reads as -1, which no row has,
# so the first trigger catches only explicit ids that clash (the REPLACE path); the second runs
# after the row is placed and refuses any id that is not the newest (a gap, zero, negative).
_SQLITE_TRIGGERS = (
    """
CREATE TRIGGER events_no_replace BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END
""",
    """
CREATE TRIGGER events_only_at_end AFTER INSERT ON events
WHEN NEW.id <= 0 OR NEW.id < (SELECT MAX(id) FROM events)
BEGIN SELECT RAISE(ABORT, 'events are append-only: a new event must come after every other'); END
""",
)

_PG_INSERT_FN = """
CREATE OR REPLACE FUNCTION assay_events_only_at_end() RETURNS trigger AS $$
BEGIN
  IF NEW.id <= (SELECT COALESCE(MAX(id), 0) FROM events) THEN
    RAISE EXCEPTION 'events are append-only: a new event must come after every other';
  END IF;
  RETURN NEW;
END
$$ LANGUAGE plpgsql
"""

_PG_TRIGGERS = (
    # Also catches INSERT ... ON CONFLICT (id) DO UPDATE before it reaches the UPDATE path.
    """
CREATE TRIGGER events_only_at_end BEFORE INSERT ON events
FOR EACH ROW EXECUTE FUNCTION assay_events_only_at_end()
""",
    """
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
FOR EACH STATEMENT EXECUTE FUNCTION assay_events_append_only()
""",
)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("grants", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.Column("revoked_by", sa.String(256), nullable=True),
    )
    op.create_index("ix_api_tokens_principal", "api_tokens", ["principal"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(_PG_INSERT_FN)
        for statement in _PG_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS events_no_replace")
        op.execute("DROP TRIGGER IF EXISTS events_only_at_end")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
        op.execute("DROP TRIGGER IF EXISTS events_only_at_end ON events")
        op.execute("DROP FUNCTION IF EXISTS assay_events_only_at_end()")
    op.drop_index("ix_api_tokens_principal", "api_tokens")
    op.drop_table("api_tokens")
