"""the client certificates the consortium CA issued to sites

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "site_certificate",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_site_certificate_site_id_site")
        ),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_site_certificate")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_site_certificate_fingerprint")),
    )
    op.create_index(
        op.f("ix_site_certificate_site_id"), "site_certificate", ["site_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_site_certificate_site_id"), table_name="site_certificate")
    op.drop_table("site_certificate")
