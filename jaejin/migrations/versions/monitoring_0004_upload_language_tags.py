"""monitoring: the language of a bulk upload up to 35 characters (BCP 47, e.g. yue-Hant-HK)

The core tables were widened by revision 0003; `monitoring_uploads.language` holds the same
tag (the uploader's language, used for the problems shown later), so it must fit the same.

Revision ID: monitoring_0004
Revises: monitoring_0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "monitoring_0004"
down_revision: str | None = "monitoring_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _declared_lengths_matter() -> bool:
    # SQLite ignores a VARCHAR's declared length; batch mode would rebuild the table for nothing.
    return op.get_bind().dialect.name != "sqlite"


def upgrade() -> None:
    if not _declared_lengths_matter():
        return
    with op.batch_alter_table("monitoring_uploads", schema=None) as batch_op:
        batch_op.alter_column("language", existing_type=sa.String(length=10),
                              type_=sa.String(length=35), existing_nullable=False)


def downgrade() -> None:
    if not _declared_lengths_matter():
        return
    # Longer tags would not fit again: they are cut to 10 characters.
    op.execute(sa.text("UPDATE monitoring_uploads SET language = substr(language, 1, 10) "
                       "WHERE length(language) > 10"))
    with op.batch_alter_table("monitoring_uploads", schema=None) as batch_op:
        batch_op.alter_column("language", existing_type=sa.String(length=35),
                              type_=sa.String(length=10), existing_nullable=False)
