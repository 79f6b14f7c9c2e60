"""visits: prescriptions on the visit note, each with the telemedicine rule that allowed it

Revision ID: visits_0002
Revises: visits_0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import jaejin.core.database

revision: str = "visits_0002"
down_revision: str | None = "visits_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("visit_prescriptions",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("visit_id", sa.Integer(), nullable=False),
    sa.Column("institution_id", sa.Integer(), nullable=False),
    sa.Column("patient_id", sa.Integer(), nullable=False),
    sa.Column("ingredient", sa.String(length=200), nullable=False),
    sa.Column("atc", sa.String(length=7), nullable=True),
    sa.Column("strength", sa.String(length=100), nullable=False),
    sa.Column("frequency", sa.String(length=100), nullable=False),
    sa.Column("days_supply", sa.Integer(), nullable=False),
    sa.Column("quantity", sa.Integer(), nullable=True),
    sa.Column("instructions", sa.Text(), nullable=False),
    sa.Column("controlled", sa.Boolean(), nullable=False),
    sa.Column("indication", sa.String(length=20), nullable=True),
    sa.Column("policy_code", sa.String(length=40), nullable=False),
    sa.Column("policy_pack", sa.String(length=60), nullable=True),
    sa.Column("policy_day", sa.Date(), nullable=False),
    sa.Column("created_by_user_id", sa.Integer(), nullable=True),
    sa.Column("created_at", jaejin.core.database.UTCDateTime(), nullable=False),
    sa.Column("removed_by_user_id", sa.Integer(), nullable=True),
    sa.Column("removed_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(["created_by_user_id"], ["users.id"], name=op.f("fk_visit_prescriptions_created_by_user_id_users")),
    sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"], name=op.f("fk_visit_prescriptions_institution_id_institutions")),
    sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_visit_prescriptions_patient_id_patients")),
    sa.ForeignKeyConstraint(["removed_by_user_id"], ["users.id"], name=op.f("fk_visit_prescriptions_removed_by_user_id_users")),
    sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name=op.f("fk_visit_prescriptions_visit_id_visits"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_prescriptions"))
    )
    with op.batch_alter_table("visit_prescriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_prescriptions_visit_id"), ["visit_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("visit_prescriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visit_prescriptions_visit_id"))

    op.drop_table("visit_prescriptions")
