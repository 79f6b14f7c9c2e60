"""audit trail in several hash chains

Entries gain `chain` (existing entries, and the one head, become chain 1) and are unique per
(chain, sequence) instead of by sequence alone, so concurrent writers can append to different
chains without waiting on one head row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("core",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.Integer(), server_default="1", nullable=False))
        batch_op.drop_constraint("uq_audit_log_sequence", type_="unique")
        batch_op.create_unique_constraint("uq_audit_log_chain_sequence", ["chain", "sequence"])


def downgrade() -> None:
    # One chain again: only possible while every entry is in chain 1.
    bind = op.get_bind()
    others = bind.execute(sa.text("SELECT count(*) FROM audit_log WHERE chain <> 1")).scalar()
    if others:
        raise RuntimeError(f"{others} audit entries are in chains other than 1: the single-chain "
                           "schema cannot hold them")
    op.execute("DELETE FROM audit_chain_head WHERE id <> 1")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_log_chain_sequence", type_="unique")
        batch_op.create_unique_constraint("uq_audit_log_sequence", ["sequence"])
        batch_op.drop_column("chain")
