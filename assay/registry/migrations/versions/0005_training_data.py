"""Model versions declare their training corpora (``assay.registry.training_data``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Versions registered before this revision declare nothing: an empty JSON list.
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("training_data", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("training_data")
