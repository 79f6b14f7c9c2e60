"""monitoring workflow: when each care plan was last evaluated, escalation policies

Revision ID: monitoring_0002
Revises: monitoring_0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import jaejin.core.database

revision: str = "monitoring_0002"
down_revision: str | None = "monitoring_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monitoring_escalation_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("escalate_after_minutes", sa.Integer(), nullable=False),
        sa.Column("on_call_user_id", sa.Integer(), nullable=True),
        sa.Column("on_call_phone", sa.String(length=32), nullable=True),
        sa.Column("updated_by", sa.String(length=80), nullable=False),
        sa.Column("updated_at", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_monitoring_escalation_policies_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["on_call_user_id"],
            ["users.id"],
            name=op.f("fk_monitoring_escalation_policies_on_call_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_escalation_policies")),
        sa.UniqueConstraint(
            "institution_id", name=op.f("uq_monitoring_escalation_policies_institution_id")
        ),
    )
    with op.batch_alter_table("monitoring_care_plans", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("evaluated_at", jaejin.core.database.UTCDateTime(), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_monitoring_care_plans_evaluated_at"), ["evaluated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("monitoring_care_plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_monitoring_care_plans_evaluated_at"))
        batch_op.drop_column("evaluated_at")
    op.drop_table("monitoring_escalation_policies")
