"""release cohorts: the patients behind every job's exact releases, to refuse narrow differences

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "release_cohort",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("patients", sa.Integer(), nullable=False),
        sa.Column("keys_sha256", sa.String(length=64), nullable=False),
        sa.Column("keys", sa.LargeBinary(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_release_cohort")),
    )
    op.create_index(
        op.f("ix_release_cohort_dataset_patients"),
        "release_cohort",
        ["dataset", "patients"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_release_cohort_dataset_patients"), table_name="release_cohort")
    op.drop_table("release_cohort")
