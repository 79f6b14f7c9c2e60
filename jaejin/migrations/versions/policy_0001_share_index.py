"""policy: index serving the institution's 30-day telemedicine share

The share cap counts an institution's encounters of the last 30 days and, among them, the
telemedicine ones, on every telemedicine booking. With only `ix_encounters_institution_id`
that count fetched every row of the institution's window from the table; (institution_id,
started_at, mode) answers it from the index alone, a range scan of the window.

Revision ID: policy_0001
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "policy_0001"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("policy",)
depends_on: str | Sequence[str] | None = None

INDEX = "ix_encounters_institution_started_mode"


def upgrade() -> None:
    op.create_index(INDEX, "encounters", ["institution_id", "started_at", "mode"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="encounters")
