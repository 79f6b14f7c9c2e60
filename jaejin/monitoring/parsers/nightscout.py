"""Nightscout-compatible `POST /api/v1/entries`, so open CGM uploaders send to Jaejin unchanged.

Uploaders (xDrip+, Spike, AndroidAPS, Loop, ...) POST a JSON array of entries:

    [{"type": "sgv", "sgv": 123, "date": 1714519800000, "dateString": "2024-05-01T08:30:00+09:00",
      "direction": "Flat", "device": "xDrip-DexcomG6"}]

Per Nightscout's semantics `sgv` is a sensor glucose value (CGM, LOINC 99504-3) and `mbg` a meter
blood glucose (LOINC 2339-0), both in mg/dL whatever the user's display unit; `cal` calibration
records and other types carry no reading and are skipped. Nightscout identifies an entry by its
type and `date`, which is the item key here too, so an uploader's retry is an exact duplicate.

Uploaders authenticate with the `api-secret` header holding the SHA-1 hex digest of the site's
API secret (newer clients may send SHA-512); each Jaejin patient has their own secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeGuard

from jaejin.core.i18n import N_
from jaejin.monitoring.parsers.items import (
    ImportContext,
    ImportProblem,
    ImportProblemCode,
    Measurement,
    ParsedItem,
    ReadingPointers,
    UnreadableInputError,
    build_item,
    refuse,
)
from jaejin.monitoring.readings import LOINC_GLUCOSE_BLOOD_MASS, LOINC_GLUCOSE_CGM, Metric

MAX_ENTRIES: Final = 2000
#: Nightscout requires API secrets of at least 12 characters.
MINIMUM_SECRET_LENGTH: Final = 12
#: Dexcom reports sensor states as sgv values 0-12 ("sensor not ready", "???"), not glucose.
HIGHEST_SENSOR_ERROR_CODE: Final = 12

SKIPPED_CALIBRATION: Final = "NIGHTSCOUT_CALIBRATION"
SKIPPED_OTHER_TYPE: Final = "NIGHTSCOUT_UNSUPPORTED_TYPE"
SKIPPED_SENSOR_ERROR: Final = "NIGHTSCOUT_SENSOR_ERROR_CODE"

_NOT_ENTRIES = N_("The request body must be a JSON array of Nightscout entries")
_TOO_MANY_ENTRIES = N_("At most {limit} entries can be sent at once")

_GLUCOSE_FIELDS: Final = {
    "sgv": ("sgv", LOINC_GLUCOSE_CGM),
    "mbg": ("mbg", LOINC_GLUCOSE_BLOOD_MASS),
}


def generate_api_secret() -> str:
    """A new per-patient API secret to type into the uploader app (24 URL-safe characters)."""
    return secrets.token_urlsafe(18)


def api_secret_hashes(secret: str) -> tuple[str, str]:
    """The SHA-1 and SHA-512 hex digests uploaders send in the `api-secret` header."""
    encoded = secret.encode()
    return (
        hashlib.sha1(encoded).hexdigest(),  # noqa: S324 - Nightscout's wire protocol
        hashlib.sha512(encoded).hexdigest(),
    )


def verify_api_secret(header_value: str | None, stored_secret: str) -> bool:
    """Whether an `api-secret` header proves knowledge of `stored_secret`.

    Accepts the SHA-1 (what uploaders send) or SHA-512 hex digest, in either letter case.
    Comparisons run in constant time and both digests are always compared.
    """
    if not header_value or len(stored_secret) < MINIMUM_SECRET_LENGTH:
        return False
    offered = header_value.strip().lower().encode()
    sha1, sha512 = api_secret_hashes(stored_secret)
    matches_sha1 = hmac.compare_digest(offered, sha1.encode())
    matches_sha512 = hmac.compare_digest(offered, sha512.encode())
    return matches_sha1 | matches_sha512


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _entry_instant(entry: Mapping[str, Any], base: str) -> datetime | ImportProblem:
    """`date` (epoch ms) is the instant; the offset comes from `utcOffset` or `dateString`."""
    epoch_ms = entry.get("date")
    if not _is_number(epoch_ms):
        text = entry.get("dateString")
        if isinstance(text, str):
            try:
                parsed = datetime.fromisoformat(text.strip())
            except ValueError:
                parsed = None
            if parsed is not None and parsed.utcoffset() is not None:
                return parsed
            return ImportProblem.of(
                ImportProblemCode.INVALID_TIMESTAMP, f"{base}/dateString", value=text[:60]
            )
        return ImportProblem.of(ImportProblemCode.MISSING_FIELD, f"{base}/date", field="date")
    try:
        instant = datetime.fromtimestamp(float(epoch_ms) / 1000.0, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return ImportProblem.of(
            ImportProblemCode.INVALID_TIMESTAMP, f"{base}/date", value=str(epoch_ms)
        )
    offset = _offset(entry)
    return instant.astimezone(offset) if offset is not None else instant


def _offset(entry: Mapping[str, Any]) -> timezone | None:
    minutes = entry.get("utcOffset")
    if _is_number(minutes) and abs(float(minutes)) <= 18 * 60:
        return timezone(timedelta(minutes=float(minutes)))
    text = entry.get("dateString")
    if isinstance(text, str):
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            return None
        offset = parsed.utcoffset()
        if offset is not None:
            return timezone(offset)
    return None


def parse_entry(raw: object, index: int, context: ImportContext) -> ParsedItem:
    base = f"/{index}"
    if not isinstance(raw, Mapping):
        return refuse(
            index,
            ImportProblem.of(ImportProblemCode.MALFORMED_ITEM, base, expected="JSON object"),
        )
    entry_type = raw.get("type")
    if entry_type is None and "sgv" in raw:
        entry_type = "sgv"
    date = raw.get("date")
    key = f"{entry_type}:{int(date)}" if _is_number(date) else None
    if entry_type == "cal":
        return ParsedItem(index, key=key, skipped=SKIPPED_CALIBRATION)
    if entry_type not in _GLUCOSE_FIELDS:
        return ParsedItem(index, key=key, skipped=SKIPPED_OTHER_TYPE)
    field, loinc = _GLUCOSE_FIELDS[str(entry_type)]
    value = raw.get(field)
    if value is None:
        return refuse(
            index,
            ImportProblem.of(ImportProblemCode.MISSING_FIELD, f"{base}/{field}", field=field),
            key=key,
        )
    if not _is_number(value):
        return refuse(
            index,
            ImportProblem.of(
                ImportProblemCode.INVALID_NUMBER, f"{base}/{field}", field=field,
                value=str(value)[:60],
            ),
            key=key,
        )
    if entry_type == "sgv" and float(value) <= HIGHEST_SENSOR_ERROR_CODE:
        return ParsedItem(index, key=key, skipped=SKIPPED_SENSOR_ERROR)
    effective_at = _entry_instant(raw, base)
    if isinstance(effective_at, ImportProblem):
        return refuse(index, effective_at, key=key)
    device = raw.get("device")
    device_name = device.strip()[:200] if isinstance(device, str) and device.strip() else None
    measurement = Measurement(
        Metric.GLUCOSE, float(value), "mg/dL", loinc, f"{base}/{field}", f"{base}/{field}"
    )
    pointers = ReadingPointers(item=base, time=f"{base}/date", code=f"{base}/type")
    return build_item(
        index, [measurement], effective_at, device_name, context, pointers, key=key
    )


def parse_entries(body: object, context: ImportContext) -> list[ParsedItem]:
    """Every entry of an uploader's POST, in order (a single entry object is accepted too)."""
    if isinstance(body, Mapping):
        body = [body]
    if not isinstance(body, list):
        raise UnreadableInputError("NOT_ENTRIES", _NOT_ENTRIES)
    if len(body) > MAX_ENTRIES:
        raise UnreadableInputError("TOO_MANY_ENTRIES", _TOO_MANY_ENTRIES, limit=str(MAX_ENTRIES))
    return [parse_entry(raw, index, context) for index, raw in enumerate(body)]
