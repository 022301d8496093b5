"""secure rounds: phases, signed rosters and survivor lists, site identity keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("site") as batch:
        batch.add_column(sa.Column("identity_key", sa.String(length=64), nullable=True))
    with op.batch_alter_table("round") as batch:
        batch.add_column(sa.Column("announced_sha", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("phase", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("roster_json", sa.Text(), nullable=True))
        batch.add_column(sa.Column("survivors_json", sa.Text(), nullable=True))
        batch.add_column(sa.Column("result_json", sa.Text(), nullable=True))
    op.create_table(
        "secure_message",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_secure_message_task_id_task")
        ),
        sa.PrimaryKeyConstraint("task_id", "phase", name=op.f("pk_secure_message")),
    )


def downgrade() -> None:
    op.drop_table("secure_message")
    with op.batch_alter_table("round") as batch:
        for column in ("result_json", "survivors_json", "roster_json", "phase", "announced_sha"):
            batch.drop_column(column)
    with op.batch_alter_table("site") as batch:
        batch.drop_column("identity_key")
