"""Nightscout uploaders' entries and api-secret, plus exact-duplicate identity of readings."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.parsers import (
    UnreadableInputError,
    generate_api_secret,
    parse_entries,
    reading_fingerprint,
    verify_api_secret,
)
from jaejin.monitoring.readings import Metric
from tests.monitoring.fixtures import RECEIVED_AT, context

FAST = settings(max_examples=200, deadline=None)
SECRET = "correct-horse-battery"
EPOCH_MS = int(datetime(2024, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=9))).timestamp() * 1000)


def uploader_digest(secret: str) -> str:
    """What xDrip+ and other uploaders put in the api-secret header."""
    return hashlib.sha1(secret.encode(), usedforsecurity=False).hexdigest()


def sgv(value=123, date=EPOCH_MS, **extra):
    entry = {
        "type": "sgv",
        "sgv": value,
        "date": date,
        "dateString": "2024-05-01T08:30:00.000+09:00",
        "direction": "Flat",
        "device": "xDrip-DexcomG6",
    }
    entry.update(extra)
    return entry


def test_sgv_entries_become_cgm_glucose_readings_at_the_senders_offset():
    (item,) = parse_entries([sgv()], context())
    (reading,) = item.readings
    assert reading.metric is Metric.GLUCOSE
    assert reading.loinc == "99504-3"
    assert reading.value == 123.0
    assert reading.unit == "mg/dL"
    assert reading.source_device == "xDrip-DexcomG6"
    assert reading.effective_utc == datetime(2024, 4, 30, 23, 30, tzinfo=UTC)
    assert reading.effective_at.utcoffset() == timedelta(hours=9)
    assert item.key == f"sgv:{EPOCH_MS}"


def test_utc_offset_in_minutes_wins_over_the_date_string():
    (item,) = parse_entries([sgv(utcOffset=-300, dateString="garbage")], context())
    assert item.readings[0].effective_at.utcoffset() == timedelta(hours=-5)


def test_an_entry_without_any_offset_is_kept_in_utc():
    entry = sgv()
    del entry["dateString"]
    (item,) = parse_entries([entry], context())
    assert item.readings[0].effective_at.utcoffset() == timedelta(0)


def test_meter_glucose_entries_are_blood_glucose():
    (item,) = parse_entries([{"type": "mbg", "mbg": 140, "date": EPOCH_MS}], context())
    assert item.readings[0].loinc == "2339-0"


def test_calibrations_and_other_types_are_skipped_not_refused():
    calibration, status, sensor_error = parse_entries(
        [
            {"type": "cal", "slope": 850, "intercept": 3000, "scale": 1, "date": EPOCH_MS},
            {"type": "sensor", "date": EPOCH_MS},
            sgv(value=5),
        ],
        context(),
    )
    assert calibration.skipped == "NIGHTSCOUT_CALIBRATION"
    assert status.skipped == "NIGHTSCOUT_UNSUPPORTED_TYPE"
    assert sensor_error.skipped == "NIGHTSCOUT_SENSOR_ERROR_CODE"
    assert not any(item.readings or item.problems for item in (calibration, status, sensor_error))


def test_bad_entries_are_refused_one_by_one():
    future = int((RECEIVED_AT + timedelta(hours=1)).timestamp() * 1000)
    items = parse_entries(
        [sgv(value="high"), sgv(value=1200), sgv(date=future), {"type": "sgv"}, 7, sgv()],
        context(),
    )
    assert [[problem.code for problem in item.problems] for item in items] == [
        ["INVALID_NUMBER"],
        ["IMPOSSIBLE_VALUE"],
        ["FUTURE_TIMESTAMP"],
        ["MISSING_FIELD"],
        ["MALFORMED_ITEM"],
        [],
    ]
    assert items[1].problems[0].pointer == "/1/sgv"


def test_a_single_entry_object_is_accepted_like_an_array_of_one():
    assert len(parse_entries(sgv(), context())) == 1


def test_a_body_that_is_not_entries_is_unreadable():
    with pytest.raises(UnreadableInputError):
        parse_entries("sgv=123", context())


def test_the_uploaders_sha1_of_the_secret_is_accepted_in_any_case():
    digest = uploader_digest(SECRET)
    assert verify_api_secret(digest, SECRET)
    assert verify_api_secret(digest.upper(), SECRET)
    assert verify_api_secret(hashlib.sha512(SECRET.encode()).hexdigest(), SECRET)


@pytest.mark.parametrize(
    "header",
    [None, "", SECRET, uploader_digest("another-secret-value"), "0" * 40],
)
def test_a_wrong_or_missing_api_secret_is_refused(header):
    assert not verify_api_secret(header, SECRET)


def test_a_secret_shorter_than_nightscouts_minimum_never_verifies():
    short = "tooshort"
    assert not verify_api_secret(uploader_digest(short), short)


def test_generated_secrets_are_long_enough_and_distinct():
    first, second = generate_api_secret(), generate_api_secret()
    assert first != second
    assert len(first) >= 12
    assert verify_api_secret(uploader_digest(first), first)


def test_the_same_reading_sent_again_has_the_same_fingerprint():
    (first,) = parse_entries([sgv()], context())[0].readings
    (again,) = parse_entries(
        [sgv()], context(received_at=RECEIVED_AT + timedelta(hours=1))
    )[0].readings
    assert reading_fingerprint(first) == reading_fingerprint(again)


@FAST
@given(st.integers(min_value=-12 * 60, max_value=14 * 60))
def test_the_same_instant_with_another_offset_is_the_same_reading(offset_minutes):
    (reading,) = parse_entries([sgv()], context())[0].readings
    shifted = replace(
        reading,
        effective_at=reading.effective_at.astimezone(timezone(timedelta(minutes=offset_minutes))),
    )
    assert reading_fingerprint(shifted) == reading_fingerprint(reading)


@pytest.mark.parametrize(
    "change",
    [
        {"patient_ref": "pt-other"},
        {"value": 124.0},
        {"source_device": "Libre"},
        {"effective_at": datetime(2024, 5, 1, 8, 35, tzinfo=timezone(timedelta(hours=9)))},
        {"loinc": "2339-0"},
    ],
)
def test_a_reading_that_differs_in_what_matters_is_not_a_duplicate(change):
    (reading,) = parse_entries([sgv()], context())[0].readings
    assert reading_fingerprint(replace(reading, **change)) != reading_fingerprint(reading)
