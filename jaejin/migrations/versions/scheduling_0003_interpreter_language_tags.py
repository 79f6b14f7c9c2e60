"""scheduling: an appointment's interpreter language up to 35 characters (BCP 47)

The core tables were widened by revision 0003; `appointments.interpreter_language` holds a tag
the API accepts up to that length (an interpreter's language, e.g. yue-Hant-HK), so it must fit
the same: at 20 characters PostgreSQL refused a longer tag with a server error.

Revision ID: scheduling_0003
Revises: scheduling_0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scheduling_0003"
down_revision: str | None = "scheduling_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _declared_lengths_matter() -> bool:
    # SQLite ignores a VARCHAR's declared length; batch mode would rebuild the table for nothing.
    return op.get_bind().dialect.name != "sqlite"


def upgrade() -> None:
    if not _declared_lengths_matter():
        return
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.alter_column("interpreter_language", existing_type=sa.String(length=20),
                              type_=sa.String(length=35), existing_nullable=True)


def downgrade() -> None:
    if not _declared_lengths_matter():
        return
    # Longer tags would not fit again: they are cut to 20 characters.
    op.execute(sa.text("UPDATE appointments SET interpreter_language = "
                       "substr(interpreter_language, 1, 20) "
                       "WHERE length(interpreter_language) > 20"))
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.alter_column("interpreter_language", existing_type=sa.String(length=35),
                              type_=sa.String(length=20), existing_nullable=True)
