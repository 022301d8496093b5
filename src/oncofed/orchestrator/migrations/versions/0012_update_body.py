"""update body: a small accepted update's bytes kept with its task until its round closes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "update_body",
        sa.Column("task_id", sa.String(length=32), sa.ForeignKey("task.id"), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    # 0011 reads every accepted update from a blob: a round still open keeps its bodies only
    # here, so it cannot be taken back while one is held
    held = op.get_bind().execute(sa.text("SELECT count(*) FROM update_body")).scalar()
    if held:
        raise RuntimeError(
            f"{held} accepted updates are held in the database; let their rounds close first"
        )
    op.drop_table("update_body")
