"""scheduling: calendar versions (a counter per resource, raised whenever its held time changes)

A slot search's answer depends on the practitioner's hours (versioned by their availability
row) and on the time they already hold. `scheduling_calendar_versions` counts changes of the
latter: the transaction that books, moves or cancels an appointment raises the practitioner's
counter, so every worker can keep computed answers and check them with one indexed read.

Revision ID: scheduling_0002
Revises: scheduling_0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scheduling_0002"
down_revision: str | None = "scheduling_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduling_calendar_versions",
        sa.Column("resource_key", sa.String(length=40), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resource_key", name=op.f("pk_scheduling_calendar_versions")),
    )


def downgrade() -> None:
    op.drop_table("scheduling_calendar_versions")
