"""Wound photos, pure: which files are photos, the copy kept has no metadata, when it was taken."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jaejin.monitoring.photos import (
    CLOCK_SKEW,
    STORED_MAX_EDGE,
    THUMBNAIL_MAX_EDGE,
    WOUND_PHOTO_MAX_BYTES,
    PhotoProblem,
    prepare_photo,
    taken_at,
)
from tests.monitoring.photo_files import (
    EXIF_IFD,
    GPS_IFD,
    image_bytes,
    opened,
    phone_heic,
    phone_jpeg,
    png,
)

SEOUL = ZoneInfo("Asia/Seoul")
RECEIVED = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def refused(data: bytes) -> PhotoProblem:
    with pytest.raises(PhotoProblem) as caught:
        prepare_photo(data)
    return caught.value


def kept_without_identifying_details(photo):
    """The stored copy, checked to carry no position, camera, serial or text of the phone's."""
    kept = opened(photo.content)
    exif = kept.getexif()
    assert not exif.get_ifd(GPS_IFD) and not exif.get_ifd(EXIF_IFD) and len(exif) == 0
    assert not {"exif", "xmp", "comment", "XML:com.adobe.xmp"} & set(kept.info)
    assert b"JaejinPhone" not in photo.content and b"SERIAL-123456" not in photo.content
    return kept


def test_the_copy_kept_has_no_location_no_camera_details_and_stands_upright():
    sent = phone_jpeg(64, 48)
    assert opened(sent).getexif().get_ifd(GPS_IFD), "the test file must carry a position"
    photo = prepare_photo(sent)
    kept = kept_without_identifying_details(photo)
    assert b"home address" not in photo.content
    # Orientation 6 means "turn a quarter clockwise": the copy is 48 wide, 64 high, turned.
    assert (photo.width, photo.height) == (48, 64) == kept.size
    assert kept.getpixel((kept.width - 3, 2))[0] > 200  # the marker went to the top right
    assert photo.content_type == "image/jpeg" and kept.format == "JPEG"
    assert set(photo.removed_metadata) >= {"exif", "gps", "comment"}
    assert photo.camera_time == datetime(2026, 11, 20, 9, 15, tzinfo=timezone(timedelta(hours=9)))
    thumbnail = opened(photo.thumbnail)
    assert thumbnail.format == "JPEG" and len(thumbnail.getexif()) == 0


def test_the_colour_profile_is_kept_and_nothing_else():
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 40, 40)).save(buffer, "JPEG", icc_profile=profile,
                                                    comment=b"note")
    photo = prepare_photo(buffer.getvalue())
    kept = opened(photo.content)
    assert kept.info.get("icc_profile") == profile
    assert opened(photo.thumbnail).info.get("icc_profile") == profile
    assert "comment" not in kept.info and "icc_profile" not in photo.removed_metadata


def test_png_stays_lossless_and_webp_becomes_jpeg():
    photo = prepare_photo(png(40, 30))
    assert photo.content_type == "image/png" and opened(photo.content).format == "PNG"
    webp = prepare_photo(image_bytes("WEBP"))
    assert webp.original_format == "WEBP" and webp.content_type == "image/jpeg"


def test_an_iphone_heic_is_kept_as_an_upright_jpeg_without_location_or_camera_details():
    sent = phone_heic(64, 48)
    assert sent[4:12] == b"ftypheic", "the test file must be a real HEIC"
    assert opened(sent).getexif().get_ifd(GPS_IFD), "the test file must carry a position"
    photo = prepare_photo(sent)
    kept = kept_without_identifying_details(photo)
    assert b"37,33N" not in photo.content
    assert photo.original_format == "HEIF"
    assert photo.content_type == "image/jpeg" and kept.format == "JPEG"
    # Turned upright once (by libheif as it decodes), not twice: the marker at the top right.
    assert (photo.width, photo.height) == (48, 64) == kept.size
    assert kept.getpixel((kept.width - 3, 2))[0] > 200 and kept.getpixel((2, 2))[1] < 120
    assert kept.info.get("icc_profile") == opened(sent).info["icc_profile"]
    assert set(photo.removed_metadata) >= {"exif", "xmp", "gps"}
    assert photo.camera_time == datetime(2026, 11, 20, 9, 15, tzinfo=timezone(timedelta(hours=9)))
    thumbnail = opened(photo.thumbnail)
    assert thumbnail.format == "JPEG" and len(thumbnail.getexif()) == 0


def test_a_damaged_heic_is_refused():
    whole = phone_heic(200, 150)
    for cut in (len(whole) // 2, len(whole) - 10):
        problem = refused(whole[:cut])
        assert (problem.status, problem.code) == (422, "PHOTO_CORRUPT")


def test_the_same_file_has_the_same_digest_and_another_file_another():
    first, again = prepare_photo(phone_jpeg()), prepare_photo(phone_jpeg())
    other = prepare_photo(phone_jpeg(colour=(10, 10, 10)))
    assert first.sha256 == again.sha256 != other.sha256
    assert len(first.sha256) == 64


def test_a_big_photo_is_kept_at_a_useful_size_with_a_small_thumbnail():
    photo = prepare_photo(image_bytes("JPEG", STORED_MAX_EDGE + 400, 100))
    assert photo.width == STORED_MAX_EDGE and photo.height < 100
    assert max(opened(photo.thumbnail).size) == THUMBNAIL_MAX_EDGE


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"", 422, "PHOTO_EMPTY"),
    (b"%PDF-1.7\n1 0 obj << >> endobj\n", 415, "PHOTO_FORMAT_UNSUPPORTED"),
    (b"effective_at,metric,value\n", 415, "PHOTO_FORMAT_UNSUPPORTED"),
    (image_bytes("GIF"), 415, "PHOTO_FORMAT_UNSUPPORTED"),
    (image_bytes("BMP"), 415, "PHOTO_FORMAT_UNSUPPORTED"),
])
def test_what_is_not_a_photo_of_an_accepted_format_is_refused(data, status, code):
    problem = refused(data)
    assert (problem.status, problem.code) == (status, code)


def test_a_damaged_photo_is_refused():
    whole = phone_jpeg(200, 150)
    problem = refused(whole[: len(whole) * 2 // 3])
    assert (problem.status, problem.code) == (422, "PHOTO_CORRUPT")


def test_an_animation_is_not_a_wound_photo():
    frames = [Image.new("RGB", (8, 8), (value, 0, 0)) for value in (0, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:])
    assert refused(buffer.getvalue()).code == "PHOTO_ANIMATED"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a canvas and holds no pixels (a "decompression bomb" header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_too_many_pixels_or_bytes_are_refused_before_decoding():
    # Beyond even Pillow's own ceiling: refused when the header is read.
    problem = refused(_png_header_only(30_000, 30_000))
    assert (problem.status, problem.code) == (422, "PHOTO_TOO_MANY_PIXELS")
    assert problem.params["pixels"].endswith("+")
    # 1 bit per pixel: a 56-megapixel canvas in a small file, refused from its header.
    problem = refused(png(8000, 7000, mode="1"))
    assert (problem.status, problem.code) == (422, "PHOTO_TOO_MANY_PIXELS")
    assert problem.params == {"pixels": "56", "limit": "50"}
    problem = refused(b"\xff\xd8" + bytes(WOUND_PHOTO_MAX_BYTES))
    assert (problem.status, problem.code) == (413, "PHOTO_TOO_LARGE")


# --------------------------------------------------------------------------------- taken at


def test_the_sender_says_when_else_the_camera_else_the_arrival():
    camera = datetime(2026, 11, 21, 8, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert taken_at("2026-11-21T10:30:00+09:00", camera, SEOUL, RECEIVED) == datetime(
        2026, 11, 21, 10, 30, tzinfo=timezone(timedelta(hours=9)))
    # Without an offset, the patient's own clock.
    local = taken_at("2026-11-21T10:30", camera, SEOUL, RECEIVED)
    assert local.utcoffset() == timedelta(hours=9) and local.hour == 10
    assert taken_at(None, camera, SEOUL, RECEIVED) == camera
    naive_camera = taken_at(None, datetime(2026, 11, 21, 8, 0), SEOUL, RECEIVED)  # noqa: DTZ001
    assert naive_camera.utcoffset() == timedelta(hours=9)
    arrived = taken_at(None, None, SEOUL, RECEIVED)
    assert arrived == RECEIVED and arrived.utcoffset() == timedelta(hours=9)


def test_a_time_in_the_future_or_not_a_time_is_refused_and_a_wrong_camera_clock_ignored():
    with pytest.raises(PhotoProblem) as caught:
        taken_at((RECEIVED + timedelta(hours=1)).isoformat(), None, SEOUL, RECEIVED)
    assert caught.value.code == "PHOTO_TAKEN_IN_FUTURE"
    with pytest.raises(PhotoProblem) as caught:
        taken_at("yesterday", None, SEOUL, RECEIVED)
    assert caught.value.code == "PHOTO_TAKEN_AT_INVALID"
    future_camera = RECEIVED + timedelta(days=300)
    assert taken_at(None, future_camera, SEOUL, RECEIVED) == RECEIVED


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.integers(min_value=-60 * 24 * 400, max_value=60 * 24),
    offset=st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_taken_at_is_never_later_than_the_skew_allows(minutes, offset):
    zone = timezone(timedelta(minutes=offset))
    moment = (RECEIVED + timedelta(minutes=minutes)).astimezone(zone)
    try:
        result = taken_at(moment.isoformat(), None, SEOUL, RECEIVED)
    except PhotoProblem as problem:
        assert problem.code == "PHOTO_TAKEN_IN_FUTURE"
        assert moment > RECEIVED + CLOCK_SKEW
    else:
        assert result == moment and result.utcoffset() == moment.utcoffset()
        assert result <= RECEIVED + CLOCK_SKEW
