"""Wound photos in the database: the `wound_photos` table and storing a prepared photo.

The stored copy (`photos.prepare_photo`: re-encoded, no metadata) and its thumbnail live in the
row itself, so a photo is backed up, restored and access-controlled with the rest of the
patient's record; there is no file or public URL to leak. Bytes columns are deferred: listing a
patient's photos never reads the images.

A new photo is also a reading of the metric `wound_photo` (LOINC 72170-4, the value 1, its
`attachment_ref` naming the photo), stored through `ingest.ingest_items` like every reading: the
post-operative plan's "no wound photo for 4 days" check sees it, and the open triage pages are
told. And it always opens (or joins) the patient's "wound photo to review" alert, which only a
clinician closes (`alerts.NEVER_AUTO_CLEARED`), whatever the photo's age: ingest raises alerts
for recent readings only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from jaejin.core.database import Base
from jaejin.directory.store import Patient
from jaejin.monitoring.alerts import AlertKind, evaluate_on_ingest
from jaejin.monitoring.careplans import CarePlan
from jaejin.monitoring.ingest import (
    IngestPatient,
    RaisedAlert,
    ingest_items,
    patient_context,
    record_signals,
)
from jaejin.monitoring.parsers import ParsedItem
from jaejin.monitoring.photos import PreparedPhoto
from jaejin.monitoring.readings import LOINC_PHOTOGRAPHIC_IMAGE, Metric, Reading
from jaejin.monitoring.store import BigId, active_plan, local_time, offset_minutes

#: `ReadingRow.channel` of the reading a photo stands for.
PHOTO_CHANNEL: Final = "wound_photo"
ATTACHMENT_PREFIX: Final = "wound_photo:"
BODY_SITE_MAX: Final = 100
NOTE_MAX: Final = 2000


class WoundPhotoRow(Base):
    """One wound photo of one patient: the stored copy, its thumbnail and what was said of it.

    `sha256` is the digest of the file as sent: the same file sent twice (a retry) is one
    photo. `taken_at` is UTC with `taken_offset_minutes` the offset of the patient's clock.
    """

    __tablename__ = "wound_photos"
    __table_args__ = (
        UniqueConstraint("patient_id", "sha256", name="uq_wound_photos_patient_sha256"),
        Index("ix_wound_photos_patient_taken", "patient_id", "taken_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    taken_at: Mapped[datetime]
    taken_offset_minutes: Mapped[int] = mapped_column(SmallInteger)
    received_at: Mapped[datetime]
    content_type: Mapped[str] = mapped_column(String(40))
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    byte_size: Mapped[int] = mapped_column(Integer)
    thumbnail_type: Mapped[str] = mapped_column(String(40))
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    body_site: Mapped[str | None] = mapped_column(String(BODY_SITE_MAX))
    note: Mapped[str] = mapped_column(Text, default="")
    #: `store.actor_ref` of who sent it: the patient, a coordinator, a clinician, a client.
    uploaded_by: Mapped[str] = mapped_column(String(80))
    #: The `wound_photo` reading this photo stands for (None if it was an exact duplicate).
    reading_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(),
                                                                             "sqlite"))

    @property
    def local_taken_at(self) -> datetime:
        return local_time(self.taken_at, self.taken_offset_minutes)


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    row: WoundPhotoRow
    #: False when the same file was already stored for the patient (nothing new was written).
    created: bool
    alerts: tuple[RaisedAlert, ...] = ()


def photo_by_digest(db: Session, patient_id: int, sha256: str) -> WoundPhotoRow | None:
    return db.execute(
        select(WoundPhotoRow).where(WoundPhotoRow.patient_id == patient_id,
                                    WoundPhotoRow.sha256 == sha256)
    ).scalar_one_or_none()


def photo_reading(patient: IngestPatient, row: WoundPhotoRow) -> Reading:
    return Reading(
        patient_ref=patient.ref, metric=Metric.WOUND_PHOTO, value=1.0, unit="1",
        loinc=LOINC_PHOTOGRAPHIC_IMAGE, effective_at=row.local_taken_at, source_device=None,
        received_at=row.received_at, attachment_ref=f"{ATTACHMENT_PREFIX}{row.id}",
    )


def store_wound_photo(
    db: Session,
    patient: Patient,
    photo: PreparedPhoto,
    *,
    taken_at: datetime,
    received_at: datetime,
    uploaded_by: str,
    body_site: str | None = None,
    note: str = "",
    plan: CarePlan | None = None,
) -> StoredPhoto:
    """Store `photo` for `patient`, its reading, and the review alert. The caller audits and
    commits; a failure anywhere leaves nothing behind once the caller rolls back."""
    existing = photo_by_digest(db, patient.id, photo.sha256)
    if existing is not None:
        return StoredPhoto(existing, created=False)
    row = WoundPhotoRow(
        institution_id=patient.institution_id, patient_id=patient.id,
        taken_at=taken_at, taken_offset_minutes=offset_minutes(taken_at),
        received_at=received_at, content_type=photo.content_type, content=photo.content,
        byte_size=len(photo.content), thumbnail_type=photo.thumbnail_type,
        thumbnail=photo.thumbnail, sha256=photo.sha256, width=photo.width,
        height=photo.height, body_site=(body_site or "").strip()[:BODY_SITE_MAX] or None,
        note=note.strip()[:NOTE_MAX], uploaded_by=uploaded_by,
    )
    try:
        with db.begin_nested():
            db.add(row)
            db.flush()
    except IntegrityError:
        # The same file sent twice at the same moment: the other request stored it.
        found = photo_by_digest(db, patient.id, photo.sha256)
        if found is None:
            raise
        return StoredPhoto(found, created=False)
    target = IngestPatient.of(patient)
    reading = photo_reading(target, row)
    plan = plan if plan is not None else active_plan(db, patient.id)
    result = ingest_items(db, target, [ParsedItem(0, (reading,), key=str(row.id))],
                          PHOTO_CHANNEL, key_prefix=PHOTO_CHANNEL, plan=plan,
                          received_at=received_at)
    ids = result.items[0].reading_ids if result.items else ()
    row.reading_id = ids[0] if ids else None
    alerts = list(result.alerts)
    if not any(alert.kind == AlertKind.WOUND_PHOTO_REVIEW for alert in alerts):
        # Ingest looks at recent readings only; a photo taken days ago still needs a look.
        signals = [signal for signal in evaluate_on_ingest(
            reading, plan, (), patient=patient_context(target))
            if signal.kind is AlertKind.WOUND_PHOTO_REVIEW]
        alerts.extend(record_signals(db, target, signals))
    return StoredPhoto(row, created=True, alerts=tuple(alerts))


def patient_photos(db: Session, patient_id: int, limit: int = 50,
                   before_id: int | None = None) -> list[WoundPhotoRow]:
    """A patient's photos, newest taken first (no image bytes loaded)."""
    query = select(WoundPhotoRow).where(WoundPhotoRow.patient_id == patient_id)
    if before_id is not None:
        query = query.where(WoundPhotoRow.id < before_id)
    return list(db.execute(
        query.order_by(WoundPhotoRow.taken_at.desc(), WoundPhotoRow.id.desc()).limit(limit)
    ).scalars())


def photo_image(db: Session, photo_id: int, thumbnail: bool) -> tuple[bytes, str] | None:
    """The stored copy (or its thumbnail) and its media type."""
    column = WoundPhotoRow.thumbnail if thumbnail else WoundPhotoRow.content
    kind = WoundPhotoRow.thumbnail_type if thumbnail else WoundPhotoRow.content_type
    found = db.execute(select(column, kind).where(WoundPhotoRow.id == photo_id)).first()
    if found is None:
        return None
    return bytes(found[0]), str(found[1])
