"""audit entries written unsealed, chained afterwards by the sealer

An entry is now written by one INSERT with no chain, sequence or hashes; the sealer fills them
in (jaejin/core/audit.py). Those columns become nullable, `chain` loses its default (an
unsealed entry is in no chain), and a partial index holds the entries waiting to be sealed.
Entries already chained keep their chain, sequence and hashes, and verify as before; the
sealer continues the highest-numbered chain.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSEALED = "sequence IS NULL"


def upgrade() -> None:
    # SQLite rebuilds audit_log (nothing refers to it, so no cascade fires).
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("chain", existing_type=sa.Integer(), nullable=True,
                              server_default=None, existing_server_default="1")
        batch_op.alter_column("sequence", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("previous_hash", existing_type=sa.String(length=64),
                              nullable=True)
        batch_op.alter_column("entry_hash", existing_type=sa.String(length=64), nullable=True)
    op.create_index("ix_audit_log_unsealed", "audit_log", ["id"], unique=False,
                    postgresql_where=sa.text(UNSEALED), sqlite_where=sa.text(UNSEALED))


def downgrade() -> None:
    # Entries must be chained to fit the old columns: only the application can seal them.
    bind = op.get_bind()
    waiting = bind.execute(sa.text("SELECT count(*) FROM audit_log WHERE sequence IS NULL")
                           ).scalar()
    if waiting:
        raise RuntimeError(f"{waiting} audit entries are not sealed yet: run "
                           "`jaejin audit verify` (it seals them) before downgrading")
    op.drop_index("ix_audit_log_unsealed", table_name="audit_log",
                  postgresql_where=sa.text(UNSEALED), sqlite_where=sa.text(UNSEALED))
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("entry_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("previous_hash", existing_type=sa.String(length=64),
                              nullable=False)
        batch_op.alter_column("sequence", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("chain", existing_type=sa.Integer(), nullable=False,
                              server_default="1")
