"""visits tables: visits, call intervals, notes, attachments, guest links of local physicians

Revision ID: visits_0001
Revises: 0001
Create Date: 2026-11-22
Depends on: scheduling_0001 (visits reference appointments)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import jaejin.core.database

revision: str = "visits_0001"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("visits",)
depends_on: str | Sequence[str] | None = "scheduling_0001"


def upgrade() -> None:
    op.create_table("visits",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("appointment_id", sa.Integer(), nullable=False),
    sa.Column("institution_id", sa.Integer(), nullable=False),
    sa.Column("patient_id", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(length=20), nullable=False),
    sa.Column("mode", sa.String(length=10), nullable=False),
    sa.Column("condition_code", sa.String(length=20), nullable=True),
    sa.Column("tri_party", sa.Boolean(), nullable=False),
    sa.Column("local_physician_required", sa.Boolean(), nullable=False),
    sa.Column("local_physician_id", sa.Integer(), nullable=True),
    sa.Column("checked_in_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("waiting_since", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("first_call_started_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("call_ended_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("closed_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("no_show_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("cancelled_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("consent_id", sa.Integer(), nullable=True),
    sa.Column("identity_method", sa.String(length=40), nullable=True),
    sa.Column("identity_verified_by_user_id", sa.Integer(), nullable=True),
    sa.Column("identity_verified_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("decision_at_check_in", sa.JSON(), nullable=True),
    sa.Column("decision_at_start", sa.JSON(), nullable=True),
    sa.Column("encounter_id", sa.Integer(), nullable=True),
    sa.Column("clinician_minutes", sa.Integer(), nullable=True),
    sa.Column("created_at", jaejin.core.database.UTCDateTime(), nullable=False),
    sa.Column("updated_at", jaejin.core.database.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"], name=op.f("fk_visits_appointment_id_appointments")),
    sa.ForeignKeyConstraint(["consent_id"], ["consents.id"], name=op.f("fk_visits_consent_id_consents")),
    sa.ForeignKeyConstraint(["encounter_id"], ["encounters.id"], name=op.f("fk_visits_encounter_id_encounters")),
    sa.ForeignKeyConstraint(["identity_verified_by_user_id"], ["users.id"], name=op.f("fk_visits_identity_verified_by_user_id_users")),
    sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"], name=op.f("fk_visits_institution_id_institutions")),
    sa.ForeignKeyConstraint(["local_physician_id"], ["local_physicians.id"], name=op.f("fk_visits_local_physician_id_local_physicians")),
    sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_visits_patient_id_patients")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
    sa.UniqueConstraint("appointment_id", name=op.f("uq_visits_appointment_id"))
    )
    with op.batch_alter_table("visits", schema=None) as batch_op:
        batch_op.create_index("ix_visits_institution_state", ["institution_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_visits_patient_id"), ["patient_id"], unique=False)

    op.create_table("visit_attachments",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("visit_id", sa.Integer(), nullable=False),
    sa.Column("institution_id", sa.Integer(), nullable=False),
    sa.Column("uploaded_by", sa.String(length=40), nullable=False),
    sa.Column("uploader_role", sa.String(length=20), nullable=False),
    sa.Column("filename", sa.String(length=200), nullable=False),
    sa.Column("content_type", sa.String(length=100), nullable=False),
    sa.Column("size_bytes", sa.Integer(), nullable=False),
    sa.Column("sha256", sa.String(length=64), nullable=False),
    sa.Column("content", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", jaejin.core.database.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"], name=op.f("fk_visit_attachments_institution_id_institutions")),
    sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name=op.f("fk_visit_attachments_visit_id_visits"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_attachments"))
    )
    with op.batch_alter_table("visit_attachments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_attachments_visit_id"), ["visit_id"], unique=False)

    op.create_table("visit_call_intervals",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("visit_id", sa.Integer(), nullable=False),
    sa.Column("started_at", jaejin.core.database.UTCDateTime(), nullable=False),
    sa.Column("ended_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("started_by_user_id", sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(["started_by_user_id"], ["users.id"], name=op.f("fk_visit_call_intervals_started_by_user_id_users")),
    sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name=op.f("fk_visit_call_intervals_visit_id_visits"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_call_intervals"))
    )
    with op.batch_alter_table("visit_call_intervals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_call_intervals_visit_id"), ["visit_id"], unique=False)

    op.create_table("visit_guest_links",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("visit_id", sa.Integer(), nullable=False),
    sa.Column("local_physician_id", sa.Integer(), nullable=False),
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("language", sa.String(length=10), nullable=False),
    sa.Column("created_by_user_id", sa.Integer(), nullable=True),
    sa.Column("created_at", jaejin.core.database.UTCDateTime(), nullable=False),
    sa.Column("expires_at", jaejin.core.database.UTCDateTime(), nullable=False),
    sa.Column("used_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.Column("revoked_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(["created_by_user_id"], ["users.id"], name=op.f("fk_visit_guest_links_created_by_user_id_users")),
    sa.ForeignKeyConstraint(["local_physician_id"], ["local_physicians.id"], name=op.f("fk_visit_guest_links_local_physician_id_local_physicians")),
    sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name=op.f("fk_visit_guest_links_visit_id_visits"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_guest_links")),
    sa.UniqueConstraint("token_hash", name=op.f("uq_visit_guest_links_token_hash"))
    )
    with op.batch_alter_table("visit_guest_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_visit_guest_links_visit_id"), ["visit_id"], unique=False)

    op.create_table("visit_notes",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("visit_id", sa.Integer(), nullable=False),
    sa.Column("subjective", sa.Text(), nullable=False),
    sa.Column("objective", sa.Text(), nullable=False),
    sa.Column("assessment", sa.Text(), nullable=False),
    sa.Column("plan", sa.Text(), nullable=False),
    sa.Column("condition_codes", sa.JSON(), nullable=False),
    sa.Column("follow_up_interval_days", sa.Integer(), nullable=True),
    sa.Column("next_appointment_id", sa.Integer(), nullable=True),
    sa.Column("updated_by_user_id", sa.Integer(), nullable=True),
    sa.Column("updated_at", jaejin.core.database.UTCDateTime(), nullable=False),
    sa.Column("signed_by_user_id", sa.Integer(), nullable=True),
    sa.Column("signed_at", jaejin.core.database.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(["next_appointment_id"], ["appointments.id"], name=op.f("fk_visit_notes_next_appointment_id_appointments")),
    sa.ForeignKeyConstraint(["signed_by_user_id"], ["users.id"], name=op.f("fk_visit_notes_signed_by_user_id_users")),
    sa.ForeignKeyConstraint(["updated_by_user_id"], ["users.id"], name=op.f("fk_visit_notes_updated_by_user_id_users")),
    sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name=op.f("fk_visit_notes_visit_id_visits"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_notes")),
    sa.UniqueConstraint("visit_id", name=op.f("uq_visit_notes_visit_id"))
    )


def downgrade() -> None:
    op.drop_table("visit_notes")
    with op.batch_alter_table("visit_guest_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visit_guest_links_visit_id"))

    op.drop_table("visit_guest_links")
    with op.batch_alter_table("visit_call_intervals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visit_call_intervals_visit_id"))

    op.drop_table("visit_call_intervals")
    with op.batch_alter_table("visit_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visit_attachments_visit_id"))

    op.drop_table("visit_attachments")
    with op.batch_alter_table("visits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_visits_patient_id"))
        batch_op.drop_index("ix_visits_institution_state")

    op.drop_table("visits")
