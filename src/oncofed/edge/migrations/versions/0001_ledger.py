"""the edge's ledger: tasks run per job, pinned job inputs, secure rounds, peer keys

Revision ID: 0001
Revises:
Create Date: 2026-12-02 15:17:54
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("spec_sha256", sa.String(length=64), nullable=False),
        sa.Column("pooled_json", sa.Text(), nullable=True),
        sa.Column("scaling_json", sa.Text(), nullable=True),
        sa.Column("model_round", sa.Integer(), nullable=True),
        sa.Column("model_sha256", sa.String(length=64), nullable=True),
        sa.Column("params_round", sa.Integer(), nullable=True),
        sa.Column("params_json", sa.Text(), nullable=True),
        _at("first_seen_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    op.create_table(
        "task",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        _at("received_at"),
        _at("answered_at", nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_task_job_id_job")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task")),
        sa.UniqueConstraint("job_id", "round", name=op.f("uq_task_job_id")),
    )
    op.create_table(
        "secure_advert",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        _at("advertised_at"),
        sa.PrimaryKeyConstraint("job_id", "round", name=op.f("pk_secure_advert")),
    )
    op.create_table(
        "share_release",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("peer", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        _at("released_at"),
        sa.PrimaryKeyConstraint("job_id", "round", "peer", name=op.f("pk_share_release")),
    )
    op.create_table(
        "peer_key",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=16), nullable=False),
        _at("first_seen_at"),
        sa.PrimaryKeyConstraint("site", name=op.f("pk_peer_key")),
    )


def downgrade() -> None:
    for table in ("peer_key", "share_release", "secure_advert", "task", "job"):
        op.drop_table(table)
