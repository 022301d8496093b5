"""dataset profiles

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 03:27:29.258673
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_profile",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("profile_json", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_dataset_profile_site_id_site")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_profile")),
        sa.UniqueConstraint("site_id", "dataset", name=op.f("uq_dataset_profile_site_id")),
    )


def downgrade() -> None:
    op.drop_table("dataset_profile")
