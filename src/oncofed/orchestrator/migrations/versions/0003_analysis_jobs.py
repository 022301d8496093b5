"""analysis jobs: round parameters, job state and report

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("round") as batch:
        batch.add_column(sa.Column("params_json", sa.Text(), nullable=True))
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("state_json", sa.Text(), nullable=True))
        batch.add_column(sa.Column("report_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("report_json")
        batch.drop_column("state_json")
    with op.batch_alter_table("round") as batch:
        batch.drop_column("params_json")
