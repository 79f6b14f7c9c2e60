"""scheduling tables: availability, appointments, occupancy blocks (no double booking)

Revision ID: scheduling_0001
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import jaejin.core.database

revision: str = "scheduling_0001"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("scheduling",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduling_availability",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_kind", sa.String(length=20), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("updated_at", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_scheduling_availability_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduling_availability")),
        sa.UniqueConstraint(
            "owner_kind", "owner_id", "institution_id", name="uq_scheduling_availability_owner"
        ),
    )
    with op.batch_alter_table("scheduling_availability", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scheduling_availability_institution_id"),
            ["institution_id"],
            unique=False,
        )

    op.create_table(
        "appointments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.Integer(), nullable=False),
        sa.Column("interpreter_id", sa.Integer(), nullable=True),
        sa.Column("interpreter_language", sa.String(length=20), nullable=True),
        sa.Column("visit_type", sa.String(length=40), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("start_at", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.Column("end_at", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.Column("occupied_until", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("booked_by_user_id", sa.Integer(), nullable=True),
        sa.Column("booked_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.Column("updated_at", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.Column("cancelled_at", jaejin.core.database.UTCDateTime(), nullable=True),
        sa.Column("cancelled_by", sa.String(length=80), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("no_show_at", jaejin.core.database.UTCDateTime(), nullable=True),
        sa.Column("condition_code", sa.String(length=20), nullable=True),
        sa.Column("tri_party", sa.Boolean(), nullable=False),
        sa.Column("policy_pack", sa.String(length=80), nullable=True),
        sa.Column("policy_decision", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["booked_by_user_id"],
            ["users.id"],
            name=op.f("fk_appointments_booked_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_appointments_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["interpreter_id"],
            ["interpreters.id"],
            name=op.f("fk_appointments_interpreter_id_interpreters"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_appointments_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["practitioner_id"],
            ["practitioners.id"],
            name=op.f("fk_appointments_practitioner_id_practitioners"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointments")),
    )
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_appointments_institution_start", ["institution_id", "start_at"], unique=False
        )
        batch_op.create_index(
            "ix_appointments_interpreter_start", ["interpreter_id", "start_at"], unique=False
        )
        batch_op.create_index(
            "ix_appointments_patient_start", ["patient_id", "start_at"], unique=False
        )
        batch_op.create_index(
            "ix_appointments_practitioner_start", ["practitioner_id", "start_at"], unique=False
        )

    op.create_table(
        "appointment_occupancy",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("resource_key", sa.String(length=40), nullable=False),
        sa.Column("block_start", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointments.id"],
            name=op.f("fk_appointment_occupancy_appointment_id_appointments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_occupancy")),
        sa.UniqueConstraint("resource_key", "block_start", name="uq_appointment_occupancy_block"),
    )
    with op.batch_alter_table("appointment_occupancy", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_appointment_occupancy_appointment_id"), ["appointment_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("appointment_occupancy", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appointment_occupancy_appointment_id"))

    op.drop_table("appointment_occupancy")
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_index("ix_appointments_practitioner_start")
        batch_op.drop_index("ix_appointments_patient_start")
        batch_op.drop_index("ix_appointments_interpreter_start")
        batch_op.drop_index("ix_appointments_institution_start")

    op.drop_table("appointments")
    with op.batch_alter_table("scheduling_availability", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduling_availability_institution_id"))

    op.drop_table("scheduling_availability")
