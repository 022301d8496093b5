"""access tokens that expire and can be revoked; roles operator, researcher and site admin;
sites revoked; projects, their members and the sites' decisions; a job's project

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principal.id"],
            name=op.f("fk_access_token_principal_id_principal"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_access_token_token_hash")),
    )
    op.create_index(
        op.f("ix_access_token_principal_id"), "access_token", ["principal_id"], unique=False
    )
    # Tokens issued before this revision never expire: their holders were told nothing else.
    op.execute(
        "INSERT INTO access_token (principal_id, token_hash, label, created_at) "
        "SELECT id, token_hash, 'first', created_at FROM principal"
    )
    op.execute("UPDATE principal SET role = 'operator' WHERE role = 'admin'")
    with op.batch_alter_table("principal") as batch:
        batch.add_column(sa.Column("site_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f("fk_principal_site_id_site"), "site", ["site_id"], ["id"])
        batch.drop_constraint(batch.f("uq_principal_token_hash"), type_="unique")
        batch.drop_column("token_hash")
    with op.batch_alter_table("site") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    _projects()


def _projects() -> None:
    op.create_table(
        "project",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("principal_investigator", sa.String(length=200), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("scope_json", sa.Text(), nullable=False),
        sa.Column("scope_sha", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["principal.id"], name=op.f("fk_project_owner_id_principal")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project")),
        sa.UniqueConstraint("name", name=op.f("uq_project_name")),
    )
    op.create_table(
        "project_member",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principal.id"],
            name=op.f("fk_project_member_principal_id_principal"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_project_member_project_id_project")
        ),
        sa.PrimaryKeyConstraint("project_id", "principal_id", name=op.f("pk_project_member")),
    )
    op.create_table(
        "project_site",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=True),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_project_site_project_id_project")
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_project_site_site_id_site")
        ),
        sa.PrimaryKeyConstraint("project_id", "site_id", name=op.f("pk_project_site")),
    )
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("project_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_job_project_id_project"), "project", ["project_id"], ["id"]
        )
        batch.create_index(batch.f("ix_job_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_index(batch.f("ix_job_project_id"))
        batch.drop_constraint(batch.f("fk_job_project_id_project"), type_="foreignkey")
        batch.drop_column("project_id")
    for table in ("project_site", "project_member", "project"):
        op.drop_table(table)
    with op.batch_alter_table("site") as batch:
        batch.drop_column("revoked_at")
    with op.batch_alter_table("principal") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(length=64), nullable=True))
        batch.drop_constraint(batch.f("fk_principal_site_id_site"), type_="foreignkey")
        batch.drop_column("site_id")
    op.execute(
        "UPDATE principal SET token_hash = (SELECT min(token_hash) FROM access_token "
        "WHERE access_token.principal_id = principal.id)"
    )
    op.execute("UPDATE principal SET role = 'admin' WHERE role = 'operator'")
    op.drop_index(op.f("ix_access_token_principal_id"), table_name="access_token")
    op.drop_table("access_token")
