"""language tags up to 35 characters (BCP 47, e.g. yue-Hant-HK) in the core tables

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column) of the core and directory tables created by revision 0001.
COLUMNS = (("users", "language"), ("patients", "preferred_language"),
           ("consents", "language"), ("invitations", "language"))


def _declared_lengths_matter() -> bool:
    # SQLite ignores a VARCHAR's declared length, so there is nothing to change there; and
    # batch mode would rebuild `users` and `patients`, whose drop fires the ON DELETE CASCADE
    # of every table referring to them.
    return op.get_bind().dialect.name != "sqlite"


def upgrade() -> None:
    if not _declared_lengths_matter():
        return
    for table, column in COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=10),
                                  type_=sa.String(length=35), existing_nullable=False)


def downgrade() -> None:
    if not _declared_lengths_matter():
        return
    # Longer tags would not fit again: they are cut to 10 characters.
    for table, column in COLUMNS:
        op.execute(sa.text(f"UPDATE {table} SET {column} = substr({column}, 1, 10) "  # noqa: S608
                           f"WHERE length({column}) > 10"))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=35),
                                  type_=sa.String(length=10), existing_nullable=False)
