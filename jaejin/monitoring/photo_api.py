"""Wound photos over HTTP: sending one, listing a patient's, and viewing one.

Routes (answers JSON except the images; errors are problem details with a stable `code`):

* `POST /api/v1/patients/{patient_id}/wound-photos`: multipart, field `file` (JPEG, PNG, WebP or
  HEIC/HEIF, as iPhones send by default), optional `taken_at` (ISO 8601; without an offset, the
  patient's clock), `body_site` and `note`. 201 with the photo; 200 with `"duplicate": true`
  when the same file was already stored. The copy kept has no metadata (`photos.prepare_photo`).
* `GET /api/v1/patients/{patient_id}/wound-photos`: the patient's photos, newest first;
* `GET /api/v1/patients/{patient_id}/wound-photos/{photo_id}`: one photo's details;
* `GET .../wound-photos/{photo_id}/image` and `.../thumbnail`: the image itself, for the
  signed-in care team or the patient only (`Cache-Control: private, no-store`: no shared cache
  or browser disk keeps a copy), each view audit-logged.

Who may: the patient themself, clinicians and coordinators of the patient's institution, and
its system clients with `monitoring.write` (sending) or `monitoring.read` (viewing, where
institution admins may view too). Another institution's patient is "not found".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from jaejin.core.audit import AuditEvent
from jaejin.core.authn import DbSession, Principal, audit
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem, not_found
from jaejin.core.i18n import N_
from jaejin.directory.store import Patient
from jaejin.monitoring.api import Access, CallingPrincipal, authorised_patient, json_response
from jaejin.monitoring.photo_store import (
    BODY_SITE_MAX,
    NOTE_MAX,
    StoredPhoto,
    WoundPhotoRow,
    patient_photos,
    photo_image,
    store_wound_photo,
)
from jaejin.monitoring.photos import (
    WOUND_PHOTO_MAX_BYTES,
    PhotoProblem,
    PreparedPhoto,
    prepare_photo,
    taken_at,
)
from jaejin.monitoring.store import actor_ref

router = APIRouter(tags=["monitoring"])

PHOTOS_PATH: Final = "/api/v1/patients/{patient_id}/wound-photos"
#: Multipart framing and the small fields around the file.
_FORM_OVERHEAD: Final = 256 * 1024
#: Body-size limits of the routes that receive a photo (the pages' too), for
#: `core.errors.BodySizeLimit(overrides=...)`: ids sit inside these paths, hence patterns.
BODY_LIMIT_OVERRIDES: Final[dict[str | re.Pattern[str], int]] = {
    re.compile(r"/api/v1/patients/\d+/wound-photos"): WOUND_PHOTO_MAX_BYTES + _FORM_OVERHEAD,
    re.compile(r"/monitoring/(me|patients/\d+)/wound-photos"):
        WOUND_PHOTO_MAX_BYTES + _FORM_OVERHEAD,
}
#: Images are never kept by a shared cache or on the browser's disk.
IMAGE_HEADERS: Final = {
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PHOTOS_PAGE_MAX: Final = 200


def photo_problem(error: PhotoProblem) -> Problem:
    return Problem(error.status, error.code, error.message, params=dict(error.params))


@dataclass(frozen=True, slots=True)
class PhotoForm:
    """What a multipart request sent: the file's bytes and the optional fields."""

    data: bytes
    filename: str
    taken_at: str | None
    body_site: str | None
    note: str
    #: Which of their records a patient with several sends for (the pages' hidden field).
    patient_field: str | None = None


def _text(form: FormData, name: str, limit: int) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    text = value.strip()
    if len(text) > limit:
        raise Problem(422, "PHOTO_FIELD_TOO_LONG",
                      N_("“{field}” may be at most {limit} characters long."),
                      params={"field": name, "limit": limit})
    return text or None


async def read_photo_form(request: Request) -> PhotoForm:
    """The photo and fields of a multipart request; 413 beyond the size limit."""
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise Problem(422, "PHOTO_REQUIRED",
                      N_("Choose a photo to send (form field “file”)."))
    data = await upload.read(WOUND_PHOTO_MAX_BYTES + 1)
    if len(data) > WOUND_PHOTO_MAX_BYTES:
        raise photo_problem(PhotoProblem(
            413, "PHOTO_TOO_LARGE", N_("The photo is larger than {limit} MB."),
            limit=str(WOUND_PHOTO_MAX_BYTES // (1024 * 1024))))
    return PhotoForm(
        data=data, filename=(upload.filename or "photo")[:255],
        taken_at=_text(form, "taken_at", 64), body_site=_text(form, "body_site", BODY_SITE_MAX),
        note=_text(form, "note", NOTE_MAX) or "",
        patient_field=_text(form, "patient_id", 20),
    )


async def prepared(form: PhotoForm) -> PreparedPhoto:
    """The stored copy of the sent file (decoding is CPU work: off the event loop)."""
    try:
        return await run_in_threadpool(prepare_photo, form.data)
    except PhotoProblem as error:
        raise photo_problem(error) from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Seoul")


def save_photo(db: Session, principal: Principal, patient: Patient, form: PhotoForm,
               photo: PreparedPhoto) -> StoredPhoto:
    """Store an accepted photo for `patient` and audit it. The caller commits."""
    received_at = utcnow()
    try:
        moment = taken_at(form.taken_at, photo.camera_time, _zone(patient.time_zone),
                          received_at)
    except PhotoProblem as error:
        raise photo_problem(error) from None
    stored = store_wound_photo(
        db, patient, photo, taken_at=moment, received_at=received_at,
        uploaded_by=actor_ref(principal.kind, principal.subject_id),
        body_site=form.body_site, note=form.note,
    )
    audit(db, principal, AuditEvent(
        "create", "wound_photo", str(stored.row.id), patient.id, patient.institution_id,
        detail={"duplicate": not stored.created, "bytes": len(form.data),
                "format": photo.original_format, "width": photo.width,
                "height": photo.height, "metadata_removed": list(photo.removed_metadata),
                "alerts": [alert.alert_id for alert in stored.alerts]},
    ))
    return stored


def photo_urls(row: WoundPhotoRow) -> dict[str, str]:
    base = f"/api/v1/patients/{row.patient_id}/wound-photos/{row.id}"
    return {"url": base, "image_url": f"{base}/image", "thumbnail_url": f"{base}/thumbnail"}


def photo_json(row: WoundPhotoRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "patient_id": row.patient_id,
        "taken_at": row.local_taken_at.isoformat(),
        "received_at": row.received_at.isoformat(),
        "content_type": row.content_type,
        "byte_size": row.byte_size,
        "width": row.width,
        "height": row.height,
        "sha256": row.sha256,
        "body_site": row.body_site,
        "note": row.note,
        "uploaded_by": row.uploaded_by,
        **photo_urls(row),
    }


def _authorised_photo(db: Session, principal: Principal, patient_id: int,
                      photo_id: int) -> tuple[Patient, WoundPhotoRow]:
    patient = authorised_patient(db, principal, patient_id, Access.READ)
    row = db.get(WoundPhotoRow, photo_id)
    if row is None or row.patient_id != patient.id:
        raise not_found("wound photo")
    return patient, row


def image_response(db: Session, principal: Principal, patient_id: int, photo_id: int,
                   thumbnail: bool) -> Response:
    """One photo's image for someone who may see it; the view is audit-logged."""
    patient, row = _authorised_photo(db, principal, patient_id, photo_id)
    found = photo_image(db, row.id, thumbnail)
    if found is None:
        raise not_found("wound photo")
    content, media_type = found
    audit(db, principal, AuditEvent(
        "read", "wound_photo", str(row.id), patient.id, patient.institution_id,
        detail={"view": "thumbnail" if thumbnail else "full"},
    ))
    db.commit()
    extension = "png" if media_type == "image/png" else "jpg"
    return Response(content, media_type=media_type, headers={
        **IMAGE_HEADERS,
        "Content-Disposition": f'inline; filename="wound-photo-{row.id}.{extension}"',
    })


# ----------------------------------------------------------------------------------- routes


@router.post(PHOTOS_PATH, status_code=201,
             summary="Send a wound photo (multipart field `file`; metadata is removed)")
async def post_wound_photo(patient_id: int, request: Request, principal: CallingPrincipal,
                           db: DbSession) -> Response:
    # Who may send is settled before the file is received: no transaction meanwhile.
    await run_in_threadpool(authorised_patient, db, principal, patient_id, Access.WRITE)
    await run_in_threadpool(db.rollback)
    form = await read_photo_form(request)
    photo = await prepared(form)

    def work() -> tuple[dict[str, Any], bool]:
        patient = authorised_patient(db, principal, patient_id, Access.WRITE)
        stored = save_photo(db, principal, patient, form, photo)
        db.commit()
        return {**photo_json(stored.row), "duplicate": not stored.created}, stored.created

    payload, created = await run_in_threadpool(work)
    return json_response(payload, 201 if created else 200,
                         headers={"Location": payload["url"]})


@router.get(PHOTOS_PATH, summary="A patient's wound photos, newest first")
def list_wound_photos(patient_id: int, principal: CallingPrincipal, db: DbSession,
                      limit: Annotated[int, Query(ge=1, le=PHOTOS_PAGE_MAX)] = 50,
                      before_id: Annotated[int | None, Query(ge=1)] = None) -> Response:
    patient = authorised_patient(db, principal, patient_id, Access.READ)
    rows = patient_photos(db, patient.id, limit, before_id)
    audit(db, principal, AuditEvent(
        "search", "wound_photo", None, patient.id, patient.institution_id,
        detail={"returned": len(rows)},
    ))
    db.commit()
    return json_response({"patient_id": patient.id,
                          "items": [photo_json(row) for row in rows]})


@router.get(PHOTOS_PATH + "/{photo_id}", summary="One wound photo's details")
def get_wound_photo(patient_id: int, photo_id: int, principal: CallingPrincipal,
                    db: DbSession) -> Response:
    patient, row = _authorised_photo(db, principal, patient_id, photo_id)
    audit(db, principal, AuditEvent(
        "read", "wound_photo", str(row.id), patient.id, patient.institution_id,
        detail={"view": "details"},
    ))
    db.commit()
    return json_response(photo_json(row))


@router.get(PHOTOS_PATH + "/{photo_id}/image", summary="A wound photo, full size",
            response_class=Response)
def wound_photo_image(patient_id: int, photo_id: int, principal: CallingPrincipal,
                      db: DbSession) -> Response:
    return image_response(db, principal, patient_id, photo_id, thumbnail=False)


@router.get(PHOTOS_PATH + "/{photo_id}/thumbnail", summary="A wound photo's thumbnail",
            response_class=Response)
def wound_photo_thumbnail(patient_id: int, photo_id: int, principal: CallingPrincipal,
                          db: DbSession) -> Response:
    return image_response(db, principal, patient_id, photo_id, thumbnail=True)

