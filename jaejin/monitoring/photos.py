"""Wound photos, pure: is this file a real photo, and the copy of it Jaejin keeps.

A phone photo carries more than the wound: EXIF holds the GPS position of the patient's home,
the phone's make and serial number, sometimes a thumbnail of the uncropped picture. Nothing of
the file as sent is kept. `prepare_photo` decodes it with Pillow (a file that does not decode
whole is refused), turns it upright by its EXIF orientation (the only EXIF that matters to a
clinician), and encodes new pixels without any metadata (only an RGB colour profile is kept, so
the redness of a wound looks as the phone saw it): JPEG for photographs, PNG stays PNG
(lossless in, lossless kept). A thumbnail for the care team's page is made at the same time.

The formats are JPEG, PNG, WebP and HEIC/HEIF (what iPhones send by default; decoded by the
`pillow-heif` plug-in, a dependency, and kept as JPEG like the others). Of a HEIF file only its
primary picture counts: its embedded thumbnails, depth maps and auxiliary pictures are never
decoded. No I/O here: the caller hands bytes in and stores what comes out.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import get_file_mimetype, register_heif_opener

from jaejin.core.i18n import N_

# HEIF files are turned upright by libheif as they are decoded (their EXIF orientation reset to
# 1), so `ImageOps.exif_transpose` leaves them as they are. Only the primary picture is wanted.
register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

#: Largest file accepted (a 50-megapixel phone JPEG is about 15 MB).
WOUND_PHOTO_MAX_BYTES: Final = 20 * 1024 * 1024
#: Largest picture accepted, in pixels: the decoded image must fit in memory many times over,
#: and a "decompression bomb" (a tiny file claiming a huge canvas) is refused before decoding.
WOUND_PHOTO_MAX_PIXELS: Final = 50_000_000
#: The stored copy's longest edge: enough to judge a wound, a fraction of a 50 MP original.
STORED_MAX_EDGE: Final = 4096
THUMBNAIL_MAX_EDGE: Final = 320
JPEG_QUALITY: Final = 90
THUMBNAIL_QUALITY: Final = 80
#: A photo "taken" later than now by more than this is refused (phones' clocks drift a little).
CLOCK_SKEW: Final = timedelta(minutes=5)

#: What Pillow calls the formats accepted, and their media types.
#: MPO is the JPEG some phones write with a second, depth or preview, picture inside: the first
#: picture is the photo. HEIF is Pillow's name (through pillow-heif) for HEIC files too.
ACCEPTED_FORMATS: Final[Mapping[str, str]] = MappingProxyType({
    "JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
    "HEIF": "image/heic",
})
#: What a HEIC/HEIF file says it is in its first 12 bytes (the `ftyp` box's brand).
_HEIF_MEDIA_TYPES: Final = frozenset({"image/heic", "image/heif"})
#: Formats whose file may hold several pictures of which the first (primary) one is the photo.
_PRIMARY_PICTURE_FORMATS: Final = frozenset({"MPO", "HEIF"})
_FORMAT_NAMES: Final = "JPEG, PNG, WebP, HEIC"
#: The upload form's `accept` list: the media types, and the file name endings of HEIC/HEIF
#: for the browsers and systems that do not know those media types.
UPLOAD_ACCEPT: Final = ",".join([*sorted(set(ACCEPTED_FORMATS.values())), "image/heif",
                                 ".heic", ".heif"])

_EXIF_IFD: Final = 0x8769
_DATE_TIME_ORIGINAL: Final = 0x9003
_OFFSET_TIME_ORIGINAL: Final = 0x9011


class PhotoProblem(Exception):
    """Why a file is not accepted as a wound photo: an HTTP status, a stable code and an
    English message (msgid) with its parameters."""

    def __init__(self, status: int, code: str, message: str, **params: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.params = params


def _too_large() -> PhotoProblem:
    return PhotoProblem(413, "PHOTO_TOO_LARGE",
                        N_("The photo is larger than {limit} MB."),
                        limit=str(WOUND_PHOTO_MAX_BYTES // (1024 * 1024)))


@dataclass(frozen=True, slots=True)
class PreparedPhoto:
    """The copy Jaejin keeps of an accepted photo (no metadata) and what it knows of it."""

    content: bytes
    content_type: str
    width: int
    height: int
    thumbnail: bytes
    thumbnail_type: str
    #: SHA-256 of the file as it was sent (hex): the same file sent again is recognised.
    sha256: str
    #: The format the file was sent in (Pillow's name: JPEG, PNG, WEBP, HEIF).
    original_format: str
    #: When the camera says it was taken (EXIF DateTimeOriginal), with the offset it recorded
    #: (OffsetTimeOriginal) or naive when the camera recorded none.
    camera_time: datetime | None = None
    removed_metadata: tuple[str, ...] = field(default=())


def _camera_time(image: Image.Image) -> datetime | None:
    try:
        details = image.getexif().get_ifd(_EXIF_IFD)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return None
    raw = details.get(_DATE_TIME_ORIGINAL)
    if not isinstance(raw, str):
        return None
    try:
        # EXIF keeps the camera's wall clock; its offset, when recorded, comes separately.
        moment = datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S")  # noqa: DTZ007
    except ValueError:
        return None
    offset = details.get(_OFFSET_TIME_ORIGINAL)
    if isinstance(offset, str):
        text = offset.strip("\x00 ")
        try:
            sign = -1 if text.startswith("-") else 1
            hours, minutes = text.lstrip("+-").split(":")
            delta = timedelta(hours=int(hours), minutes=int(minutes))
            if delta <= timedelta(hours=14):
                return moment.replace(tzinfo=timezone(sign * delta))
        except ValueError:
            pass
    return moment


def _metadata_names(image: Image.Image) -> tuple[str, ...]:
    """What the sent file carried besides pixels (for the audit trail: never the values)."""
    names = sorted(name for name in image.info if name in {"exif", "xmp", "XML:com.adobe.xmp",
                                                          "comment"})
    try:
        exif = image.getexif()
        if exif.get_ifd(0x8825):
            names.append("gps")
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        pass
    return tuple(names)


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for JPEG: transparency over white (a wound photo has none worth keeping)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode(image: Image.Image, as_png: bool, quality: int, colour: bytes | None) -> bytes:
    """New pixels and, of everything else, only the colour profile (`colour`: an RGB ICC
    profile or None): no `pnginfo`, no `exif`, no comment."""
    buffer = io.BytesIO()
    profile = {"icc_profile": colour} if colour else {}
    if as_png:
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        image.save(buffer, "PNG", optimize=False,
                   **(profile if image.mode in ("RGB", "RGBA") else {}))
    else:
        _flatten(image).save(buffer, "JPEG", quality=quality, optimize=True, **profile)
    return buffer.getvalue()


#: Colour profiles are kept (a phone's Display P3 shown as sRGB would pale the redness of a
#: wound), up to this size: a profile describes colours, not the patient or the phone.
_MAX_PROFILE_BYTES: Final = 512 * 1024


def _colour_profile(image: Image.Image) -> bytes | None:
    profile = image.info.get("icc_profile")
    if not isinstance(profile, bytes) or len(profile) > _MAX_PROFILE_BYTES:
        return None
    # A profile only means something for the pixels it was made for: RGB ones here.
    return profile if image.mode in ("RGB", "RGBA") else None


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow warns (and beyond twice its limit refuses) on huge canvases; ours is lower.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            # Pillow's own ceiling (twice `Image.MAX_IMAGE_PIXELS`), far above ours.
            raise _too_many_pixels(2 * (Image.MAX_IMAGE_PIXELS or 0), "+") from None
        except UnidentifiedImageError:
            if get_file_mimetype(data[:12]) in _HEIF_MEDIA_TYPES:
                # pillow-heif says "unidentified" for a HEIC it cannot decode: one that is
                # cut off or damaged, not one of another format.
                raise _corrupt() from None
            raise PhotoProblem(
                415, "PHOTO_FORMAT_UNSUPPORTED",
                N_("The file is not a photo in a format Jaejin accepts ({formats})."),
                formats=_FORMAT_NAMES,
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError):
            raise _corrupt() from None


def _too_many_pixels(pixels: int, more: str = "") -> PhotoProblem:
    return PhotoProblem(
        422, "PHOTO_TOO_MANY_PIXELS",
        N_("The photo has {pixels} megapixels; at most {limit} are accepted."),
        pixels=f"{round(pixels / 1_000_000)}{more}",
        limit=str(WOUND_PHOTO_MAX_PIXELS // 1_000_000),
    )


def _corrupt() -> PhotoProblem:
    return PhotoProblem(422, "PHOTO_CORRUPT",
                        N_("The photo could not be read: the file is damaged or incomplete."))


def prepare_photo(data: bytes) -> PreparedPhoto:
    """Check `data` is a whole photo of an accepted format and size, and make the stored copy.

    Raises `PhotoProblem`: 413 too large, 415 not an accepted format, 422 empty, damaged or
    too many pixels.
    """
    if not data:
        raise PhotoProblem(422, "PHOTO_EMPTY", N_("The file is empty."))
    if len(data) > WOUND_PHOTO_MAX_BYTES:
        raise _too_large()
    image = _open(data)
    original_format = image.format or ""
    if original_format not in ACCEPTED_FORMATS:
        raise PhotoProblem(
            415, "PHOTO_FORMAT_UNSUPPORTED",
            N_("The file is not a photo in a format Jaejin accepts ({formats})."),
            formats=_FORMAT_NAMES,
        )
    if image.width * image.height > WOUND_PHOTO_MAX_PIXELS:
        raise _too_many_pixels(image.width * image.height)
    try:
        image.load()
        camera_time = _camera_time(image)
        removed = _metadata_names(image)
        upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise _corrupt() from None
    if original_format not in _PRIMARY_PICTURE_FORMATS and getattr(image, "n_frames", 1) > 1:
        raise PhotoProblem(422, "PHOTO_ANIMATED",
                           N_("An animation is not a wound photo: send a single picture."))
    colour = _colour_profile(image)
    # Nothing else of the sent file's side data travels on (EXIF, XMP, comments, text chunks).
    upright.info = {}
    as_png = original_format == "PNG"
    stored = upright
    if max(stored.size) > STORED_MAX_EDGE:
        stored = stored.copy()
        stored.thumbnail((STORED_MAX_EDGE, STORED_MAX_EDGE), Image.Resampling.LANCZOS)
    content = _encode(stored, as_png, JPEG_QUALITY, colour)
    preview = stored.copy()
    preview.thumbnail((THUMBNAIL_MAX_EDGE, THUMBNAIL_MAX_EDGE), Image.Resampling.LANCZOS)
    thumbnail = _encode(preview, False, THUMBNAIL_QUALITY, colour)
    return PreparedPhoto(
        content=content,
        content_type="image/png" if as_png else "image/jpeg",
        width=stored.width,
        height=stored.height,
        thumbnail=thumbnail,
        thumbnail_type="image/jpeg",
        sha256=hashlib.sha256(data).hexdigest(),
        original_format=original_format,
        camera_time=camera_time,
        removed_metadata=removed,
    )


def taken_at(given: str | None, camera_time: datetime | None, zone: tzinfo,
             received_at: datetime) -> datetime:
    """When the photo was taken, with an offset: what the sender says (an ISO 8601 time; one
    without an offset is the patient's clock), else the camera's time, else when it arrived.

    Raises `PhotoProblem` (422) for a time that is not one, or one in the future.
    """
    moment: datetime
    if given is not None and given.strip():
        try:
            moment = datetime.fromisoformat(given.strip())
        except ValueError:
            raise PhotoProblem(422, "PHOTO_TAKEN_AT_INVALID",
                               N_("“{value}” is not a date and time."),
                               value=given.strip()[:40]) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
    elif camera_time is not None:
        moment = camera_time if camera_time.tzinfo is not None else camera_time.replace(
            tzinfo=zone)
        if moment > received_at + CLOCK_SKEW:
            # A camera clock set wrong says nothing about when the photo was taken.
            moment = received_at.astimezone(zone)
    else:
        moment = received_at.astimezone(zone)
    if moment > received_at + CLOCK_SKEW:
        raise PhotoProblem(422, "PHOTO_TAKEN_IN_FUTURE",
                           N_("The photo cannot have been taken in the future."))
    return moment


__all__ = [
    "ACCEPTED_FORMATS", "CLOCK_SKEW", "STORED_MAX_EDGE", "THUMBNAIL_MAX_EDGE", "UPLOAD_ACCEPT",
    "WOUND_PHOTO_MAX_BYTES", "WOUND_PHOTO_MAX_PIXELS", "PhotoProblem", "PreparedPhoto",
    "prepare_photo", "taken_at",
]
