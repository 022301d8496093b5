"""secure rounds: record the rounds a site masked for, not those it advertised keys for

A site may now advertise keys for a round ahead of it (with its previous round's masked input)
and again when the round opens without them; what must happen once per round is the masked
input.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 22:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.rename_table("secure_advert", "secure_masked")
    with op.batch_alter_table("secure_masked") as batch:
        batch.alter_column("advertised_at", new_column_name="masked_at")


def downgrade() -> None:
    with op.batch_alter_table("secure_masked") as batch:
        batch.alter_column("masked_at", new_column_name="advertised_at")
    op.rename_table("secure_masked", "secure_advert")
