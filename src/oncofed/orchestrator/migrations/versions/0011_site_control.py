"""site control: the operator disables, enables and removes sites

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 02:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("site") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # 0010 knows no cancelled job or task: they read as failed there
    op.execute("UPDATE job SET status = 'failed' WHERE status = 'cancelled'")
    op.execute("UPDATE task SET status = 'failed' WHERE status = 'cancelled'")
    with op.batch_alter_table("site") as batch:
        batch.drop_column("removed_at")
        batch.drop_column("disabled_at")
