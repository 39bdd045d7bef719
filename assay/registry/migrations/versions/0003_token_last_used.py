"""API tokens record when they were last used (``assay tokens list``, the tokens endpoint).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from assay.registry.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a table in place beyond adding a column, and batch mode
    # is a plain ALTER TABLE ADD COLUMN where that suffices.
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("last_used_at", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("last_used_at")
