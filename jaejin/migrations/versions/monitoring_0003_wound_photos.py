"""monitoring: wound photos (the stored copy without metadata, its thumbnail, who sent it)

Revision ID: monitoring_0003
Revises: monitoring_0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import jaejin.core.database

revision: str = "monitoring_0003"
down_revision: str | None = "monitoring_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "wound_photos",
        sa.Column("id", big_id, nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("taken_at", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.Column("taken_offset_minutes", sa.SmallInteger(), nullable=False),
        sa.Column("received_at", jaejin.core.database.UTCDateTime(), nullable=False),
        sa.Column("content_type", sa.String(length=40), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column("thumbnail_type", sa.String(length=40), nullable=False),
        sa.Column("thumbnail", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("body_site", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=80), nullable=False),
        sa.Column("reading_id", big_id, nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"], ["institutions.id"],
            name=op.f("fk_wound_photos_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_wound_photos_patient_id_patients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wound_photos")),
        sa.UniqueConstraint("patient_id", "sha256", name="uq_wound_photos_patient_sha256"),
    )
    with op.batch_alter_table("wound_photos", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_wound_photos_institution_id"), ["institution_id"], unique=False
        )
        batch_op.create_index(
            "ix_wound_photos_patient_taken", ["patient_id", "taken_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("wound_photos", schema=None) as batch_op:
        batch_op.drop_index("ix_wound_photos_patient_taken")
        batch_op.drop_index(batch_op.f("ix_wound_photos_institution_id"))
    op.drop_table("wound_photos")
