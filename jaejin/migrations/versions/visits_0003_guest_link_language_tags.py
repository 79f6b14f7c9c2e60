"""visits: the language of a local physician's guest link up to 35 characters (BCP 47)

The core tables were widened by revision 0003; `visit_guest_links.language` holds the same
tag (the language the guest page and its summary are shown in), so it must fit the same.

Revision ID: visits_0003
Revises: visits_0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "visits_0003"
down_revision: str | None = "visits_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _declared_lengths_matter() -> bool:
    # SQLite ignores a VARCHAR's declared length; batch mode would rebuild the table for nothing.
    return op.get_bind().dialect.name != "sqlite"


def upgrade() -> None:
    if not _declared_lengths_matter():
        return
    with op.batch_alter_table("visit_guest_links", schema=None) as batch_op:
        batch_op.alter_column("language", existing_type=sa.String(length=10),
                              type_=sa.String(length=35), existing_nullable=False)


def downgrade() -> None:
    if not _declared_lengths_matter():
        return
    # Longer tags would not fit again: they are cut to 10 characters.
    op.execute(sa.text("UPDATE visit_guest_links SET language = substr(language, 1, 10) "
                       "WHERE length(language) > 10"))
    with op.batch_alter_table("visit_guest_links", schema=None) as batch_op:
        batch_op.alter_column("language", existing_type=sa.String(length=35),
                              type_=sa.String(length=10), existing_nullable=False)
