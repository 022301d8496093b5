"""task by site and status: handing out reads a site's unanswered tasks, not all it ever had

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 20:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_task_site_id_status", "task", ["site_id", "status"], unique=False)
    op.drop_index("ix_task_site_id", table_name="task")


def downgrade() -> None:
    op.create_index("ix_task_site_id", "task", ["site_id"], unique=False)
    op.drop_index("ix_task_site_id_status", table_name="task")
