"""Photo files for the wound-photo tests, made with Pillow as phones make them (no test here)."""

from __future__ import annotations

import io

from PIL import Image

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
ORIENTATION = 0x0112
MAKE = 0x010F
SERIAL = 0xA431
DATE_TIME_ORIGINAL = 0x9003
OFFSET_TIME_ORIGINAL = 0x9011


def phone_jpeg(width: int = 64, height: int = 48, *, colour=(190, 60, 60),
               taken: str | None = "2026:11:20 09:15:00", offset: str | None = "+09:00",
               orientation: int = 6) -> bytes:
    """A JPEG as a phone writes it: GPS position, maker, serial number, the time taken and an
    orientation tag saying "turn me a quarter"."""
    image, exif = _phone_picture(width, height, colour, orientation, taken, offset)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, comment=b"home address", quality=85)
    return buffer.getvalue()


def _phone_picture(width: int, height: int, colour: tuple[int, int, int], orientation: int,
                   taken: str | None, offset: str | None) -> tuple[Image.Image, Image.Exif]:
    """The picture and the EXIF a phone gives it (position, maker, serial, time taken)."""
    image = Image.new("RGB", (width, height), colour)
    # A bright marker in the top-left corner shows which way the stored copy was turned.
    image.paste((255, 255, 0), (0, 0, width // 4, height // 4))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = "JaejinPhone"
    exif[GPS_IFD] = {1: "N", 2: (37.0, 33.0, 59.0), 3: "E", 4: (126.0, 58.0, 40.0)}
    details = exif.get_ifd(EXIF_IFD)
    details[SERIAL] = "SERIAL-123456"
    if taken is not None:
        details[DATE_TIME_ORIGINAL] = taken
    if offset is not None:
        details[OFFSET_TIME_ORIGINAL] = offset
    return image, exif


def phone_heic(width: int = 64, height: int = 48, *, colour=(190, 60, 60),
               orientation: int = 6) -> bytes:
    """A HEIC as an iPhone writes it (through pillow-heif, which the app depends on): the same
    GPS position, maker, serial number, time taken and quarter-turn orientation as
    `phone_jpeg`, an XMP packet naming the position again, and a colour profile."""
    from PIL import ImageCms
    from pillow_heif import register_heif_opener

    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    image, exif = _phone_picture(width, height, colour, orientation,
                                 "2026:11:20 09:15:00", "+09:00")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    image.save(buffer, "HEIF", exif=exif.tobytes(), icc_profile=profile, quality=85,
               xmp=b"<x:xmpmeta><rdf:Description exif:GPSLatitude='37,33N'/></x:xmpmeta>")
    return buffer.getvalue()


def png(width: int = 40, height: int = 30, mode: str = "RGBA") -> bytes:
    image = Image.new(mode, (width, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def image_bytes(fmt: str, width: int = 20, height: int = 20, **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, fmt, **options)
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
