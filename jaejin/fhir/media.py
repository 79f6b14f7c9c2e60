"""Wound photos as FHIR R4 `Media` resources (pure: a stored photo in, a resource out).

R4 has `Media` for "a photo, video or audio recording acquired or used in healthcare"; R5 folds
it into `DocumentReference`, but R4 clients look for photos here. The image itself is not
inlined: `content.url` points at the photo API's image route, which authorises, audits and
answers with `Cache-Control: private, no-store` like any other view of the photo.
"""

from __future__ import annotations

from typing import Any, Final

from jaejin.monitoring.photo_store import WoundPhotoRow

MEDIA_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/media-type"


def image_path(row: WoundPhotoRow) -> str:
    """The photo API's route of the full-size image (relative to the server's base URL)."""
    return f"api/v1/patients/{row.patient_id}/wound-photos/{row.id}/image"


def wound_photo_media(row: WoundPhotoRow, base_url: str) -> dict[str, Any]:
    """`row` as a Media resource; `base_url` is the server's, ending in "/"."""
    taken = row.local_taken_at.isoformat()
    extension = "png" if row.content_type == "image/png" else "jpg"
    media: dict[str, Any] = {
        "resourceType": "Media",
        "id": str(row.id),
        "meta": {"versionId": "1"},
        "status": "completed",
        "type": {"coding": [{"system": MEDIA_TYPE_SYSTEM, "code": "image",
                             "display": "Image"}]},
        "subject": {"reference": f"Patient/{row.patient_id}"},
        # When it was taken, on the patient's clock (with its offset).
        "createdDateTime": taken,
        # When Jaejin received it: "made available", for R4.
        "issued": row.received_at.isoformat(),
        "width": row.width,
        "height": row.height,
        "content": {
            "contentType": row.content_type,
            "url": f"{base_url}{image_path(row)}",
            "size": row.byte_size,
            "title": f"wound-photo-{row.id}.{extension}",
            "creation": taken,
        },
    }
    if row.body_site:
        media["bodySite"] = {"text": row.body_site}
    if row.note:
        media["note"] = [{"text": row.note}]
    return media


__all__ = ["MEDIA_TYPE_SYSTEM", "image_path", "wound_photo_media"]
