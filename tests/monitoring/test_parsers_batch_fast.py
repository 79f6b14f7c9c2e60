"""The JSON batch's fast paths give exactly the answers of the item-by-item, fully explained way.

`parse_batch` builds plain items straight from the dict (`quick_item`), validates the rest as one
list in one pydantic call and builds plain valid items without the pointers a refusal needs;
these properties prove that none of them changes any item's outcome.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from jaejin.monitoring.parsers import (
    MEASUREMENT_KINDS,
    ReadingItemIn,
    parse_batch,
    reading_digest,
    reading_fingerprint,
)
from jaejin.monitoring.parsers.items import mark_duplicate_keys, panel_identifier
from jaejin.monitoring.parsers.json_batch import (
    explained_item,
    parse_batch_item,
    plain_item,
    quick_item,
)
from jaejin.monitoring.readings import Metric, Reading
from tests.monitoring.fixtures import PATIENT, RECEIVED_AT, context

PROPERTIES = settings(max_examples=150, deadline=None)

UNITS_OF = {"blood_pressure": ["mmHg", "mm[Hg]"], "heart_rate": ["bpm", "/min"],
            "glucose": ["mg/dL", "mmol/L"], "cgm_glucose": ["mg/dL", "mmol/L"],
            "body_weight": ["kg", "[lb_av]"], "spo2": ["%"], "body_temperature": ["Cel", "[degF]"]}
UNITS = ["mmHg", "mm[Hg]", "bpm", "/min", "mg/dL", "mmol/L", "kg", "[lb_av]", "lb", "%", "Cel",
         "[degF]", "furlong", "MMHG"]
METRIC_NAMES = [*MEASUREMENT_KINDS, "Heart_Rate", "wound_photo", "pulse"]
LOINC_CODES = ["8867-4", "85354-9", "2339-0", "15074-8", "99504-3", "1234-5"]

numbers = st.one_of(
    st.floats(min_value=30, max_value=150), st.floats(min_value=-50, max_value=700),
    st.integers(min_value=-5, max_value=400), st.none())


@st.composite
def moments(draw: st.DrawFn) -> str:
    """A measurement time from two days before to an hour after arrival, any offset."""
    seconds = draw(st.integers(min_value=-2 * 86400, max_value=3600))
    offset = draw(st.sampled_from([-300, 0, 330, 540, 600]))
    moment = (RECEIVED_AT + timedelta(seconds=seconds)).astimezone(
        timezone(timedelta(minutes=offset)))
    if draw(st.booleans()) and offset == 0:
        return moment.isoformat().replace("+00:00", "Z")
    return moment.isoformat()


@st.composite
def raw_items(draw: st.DrawFn, *, well_formed: bool = False) -> Any:
    if not well_formed and draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([42, "text", None, [1, 2]]))
    metric = draw(st.sampled_from(METRIC_NAMES)) if draw(st.integers(0, 9)) else None
    # Mostly the shape the metric asks for (a value, or both halves of a blood pressure),
    # sometimes any mix of the three.
    shaped = draw(st.integers(0, 3)) > 0
    pressure = metric == "blood_pressure"
    fields: dict[str, Any] = {
        "idempotency_key": draw(st.sampled_from(["a", "b", "c", " d ", "e" * 10])),
        "metric": metric,
        "loinc": draw(st.sampled_from(LOINC_CODES)) if draw(st.integers(0, 4)) == 0 else None,
        "value": None if shaped and pressure else draw(numbers),
        "systolic": None if shaped and not pressure else draw(numbers),
        "diastolic": None if shaped and not pressure else draw(numbers),
        "unit": draw(st.sampled_from(UNITS_OF.get(metric or "", UNITS) if shaped else UNITS)),
        "effective_at": draw(moments()),
        "device": draw(st.none() | st.sampled_from(["Omron", ""])),
    }
    if not well_formed:
        fields["effective_at"] = draw(st.sampled_from([
            fields["effective_at"], "2024-05-01T08:30:00", "yesterday", 1714521600,
            "2024-05-01"]))
        if draw(st.integers(0, 7)) == 0:
            fields["colour"] = "red"
    return {name: value for name, value in fields.items() if value is not None}


@PROPERTIES
@given(raw_items(well_formed=True))
def test_a_plain_item_is_built_exactly_as_the_explained_way_builds_it(raw: Any) -> None:
    try:
        item = ReadingItemIn.model_validate(raw)
    except ValidationError:
        assume(False)
        return
    quick = plain_item(item, 3, context())
    explained = explained_item(item, 3, context(), "/readings/3")
    if quick is not None:
        assert quick == explained
        assert quick.readings[0].effective_at == explained.readings[0].effective_at
    elif item.loinc is None and item.metric in MEASUREMENT_KINDS:
        # The fast way declines only what the explained way refuses.
        assert not explained.accepted


@PROPERTIES
@given(st.lists(raw_items(), max_size=12))
def test_a_batch_validated_as_a_whole_answers_as_item_by_item(raws: list[Any]) -> None:
    whole = parse_batch({"readings": raws}, context())
    one_by_one = mark_duplicate_keys(
        [parse_batch_item(raw, index, context(), f"/readings/{index}")
         for index, raw in enumerate(raws)],
        lambda index: f"/readings/{index}/idempotency_key",
    )
    assert whole == one_by_one
    assert [item.index for item in whole] == list(range(len(raws)))


def test_a_readings_fingerprint_is_the_one_stored_readings_carry() -> None:
    """Exact duplicates are found by this digest against readings stored by earlier versions:
    it must never change (computed with the formula as first released)."""
    reading = Reading("7", Metric.GLUCOSE, 101.23456789, "mg/dL", "2339-0",
                      datetime(2024, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=9))), "dev",
                      datetime(2024, 5, 1, tzinfo=UTC))
    expected = "a3bee085487cabea5d899134e367f7fda89b4af9cdfb87fb85fa500847dadb19"
    assert reading_fingerprint(reading) == expected == reading_digest(reading).hex()


# -- the quick check: any item, plain or odd, answered as the general way answers it ---------

#: Texts pydantic may trim or refuse: Python's and pydantic's whitespace, empty, too long.
ODD_TEXTS = ["", " ", "a ", " a", "\u3000a", "a\x1f", "\x85a", "a\u180e", "x" * 201, "é"]
ODD_NUMBERS = [True, False, 2**53, 2**53 + 1, 2**60, -(2**70), 10**400, float("inf"),
               float("-inf"), float("nan"), -0.0, 1e308, 5e-324, "90", [90], {"v": 1}]
ODD_MOMENTS = ["2024-05-01T08:30:00", "2024-05-01", " 2024-05-01T08:30:00+09:00 ",
               "2024-05-01T08:30+09:00", "20240501T083000+0900", "2024-05-01T08:30:00.5Z",
               "2024-05-01T08:30:00+05:30:15", "2024-05-01T08:30:00+05:30:15.000250",
               "0001-01-01T00:00:00+00:00", "2024-05-01T08:30:00-23:59", "2024-W18-3T08:30Z",
               "2024-05-01 08:30:00+09:00", "2024-05-01T24:00:00+09:00", "2024-13-01T00:00Z",
               "yesterday", "", 1714521600, None]
ODD_UNITS = ["mmHg ", " mg/dL", "MG/DL", "mmol/l", "BPM", "\u3000%", "lbs", "°F", "stone",
             "g", "1", "furlong", ""]
ODD_METRICS = ["Glucose", "GLUCOSE", " glucose", "glucose ", "BLOOD_PRESSURE", "", "wound_photo",
               "Body_Weight", "ſpo2"]


def _odd(draw: st.DrawFn, usual: Any, odd: list[Any]) -> Any:
    return draw(st.sampled_from(odd)) if draw(st.integers(0, 11)) == 0 else usual


@st.composite
def any_items(draw: st.DrawFn) -> Any:
    """Plain items and items as `raw_items` makes them, each field sometimes made odd."""
    raw = draw(st.deferred(lambda: plain_items()) | raw_items())
    if not isinstance(raw, dict):
        return raw
    odd_values: dict[str, list[Any]] = {
        "idempotency_key": ODD_TEXTS, "device": ODD_TEXTS, "unit": ODD_UNITS + ODD_TEXTS,
        "metric": ODD_METRICS + ODD_TEXTS, "effective_at": ODD_MOMENTS,
        "value": ODD_NUMBERS, "systolic": ODD_NUMBERS, "diastolic": ODD_NUMBERS,
        "loinc": [None, "", " 8867-4"]}
    for name, odd in odd_values.items():
        raw[name] = _odd(draw, raw.get(name), odd)
        if raw[name] is None and draw(st.booleans()):
            del raw[name]
    return raw


def _same_readings(quick: tuple[Reading, ...], general: tuple[Reading, ...]) -> None:
    """Equal, and alike in what equality does not see: the value's type and the offset kept."""
    assert quick == general
    for mine, theirs in zip(quick, general, strict=True):
        assert repr(mine.value) == repr(theirs.value)
        assert type(mine.value) is type(theirs.value) is float
        assert mine.effective_at.isoformat() == theirs.effective_at.isoformat()
        assert mine.effective_at.tzinfo == theirs.effective_at.tzinfo
        assert reading_digest(mine) == reading_digest(theirs)


@settings(max_examples=600, deadline=None)
@given(any_items(), st.sampled_from([0, 60, 3600]))
def test_the_quick_check_builds_an_item_exactly_as_the_general_way(raw: Any, skew: int) -> None:
    ingest = context(clock_skew=timedelta(seconds=skew))
    quick = quick_item(raw, 3, ingest, ingest.received_at + ingest.clock_skew)
    general = parse_batch_item(raw, 3, ingest, "/readings/3")
    if quick is None:
        return
    assert (quick.index, quick.key, quick.problems, quick.skipped) == (
        general.index, general.key, general.problems, general.skipped)
    _same_readings(quick.readings, general.readings)


#: Plausible values per measurement name and unit as sent (each within the physiological limits).
PLAUSIBLE = {
    ("blood_pressure", "mmHg"): (100, 200), ("heart_rate", "bpm"): (40, 200),
    ("glucose", "mg/dL"): (40, 500), ("glucose", "mmol/L"): (2, 25),
    ("cgm_glucose", "mmol/L"): (2, 25), ("body_weight", "kg"): (2, 300),
    ("body_weight", "[lb_av]"): (5, 600), ("spo2", "%"): (50, 100),
    ("body_temperature", "Cel"): (33, 42), ("body_temperature", "[degF]"): (92, 107),
}


@st.composite
def plain_items(draw: st.DrawFn) -> dict[str, Any]:
    (metric, unit), (low, high) = draw(st.sampled_from(sorted(PLAUSIBLE.items())))
    number = st.integers(low, high) | st.floats(low, high)
    item: dict[str, Any] = {"idempotency_key": draw(st.sampled_from(["a", "k-1", "é" * 200])),
                            "metric": metric, "unit": unit, "effective_at": draw(moments())}
    if metric == "blood_pressure":
        item["systolic"] = draw(number)
        item["diastolic"] = draw(st.integers(30, 99) | st.floats(30, 99))
    else:
        item["value"] = draw(number)
    device = draw(st.sampled_from([None, "", "Omron HEM-7155T"]))
    if device is not None or draw(st.booleans()):
        item["device"] = device
    return item


@PROPERTIES
@given(plain_items())
def test_the_quick_check_takes_every_plain_item_the_general_way_accepts(raw: Any) -> None:
    general = parse_batch_item(raw, 3, context(), "/readings/3")
    assume(general.accepted)
    quick = quick_item(raw, 3, context(), RECEIVED_AT + timedelta(minutes=5))
    assert quick is not None
    _same_readings(quick.readings, general.readings)


@PROPERTIES
@given(st.lists(any_items(), max_size=12))
def test_a_batch_of_any_items_answers_as_item_by_item(raws: list[Any]) -> None:
    whole = parse_batch(raws, context())
    one_by_one = mark_duplicate_keys(
        [parse_batch_item(raw, index, context(), f"/{index}") for index, raw in enumerate(raws)],
        lambda index: f"/{index}/idempotency_key",
    )
    assert whole == one_by_one


def test_a_blood_pressure_panel_keeps_its_released_identifier() -> None:
    """Panel ids are stored with the readings: the formula must never change."""
    seoul = timezone(timedelta(hours=9))
    assert panel_identifier("7", datetime(2024, 5, 1, 8, 30, tzinfo=seoul), "Omron",
                            [128.0, 82.0]) == "bp-782f7cd4b136ad7a75de"
    assert panel_identifier("7", datetime(2024, 5, 1, 8, 30, 0, 5, tzinfo=UTC), None,
                            [128.5, 82]) == "bp-7ee5e1cd26f3afe79cf9"
    parsed = parse_batch([{"idempotency_key": "k", "metric": "blood_pressure", "systolic": 128,
                           "diastolic": 82, "unit": "mmHg", "device": "Omron",
                           "effective_at": "2024-05-01T08:30:00+09:00"}], context())
    assert {reading.panel_id for reading in parsed[0].readings} == {
        panel_identifier(PATIENT, datetime(2024, 5, 1, 8, 30, tzinfo=seoul), "Omron",
                         [128.0, 82.0])}


def test_fingerprints_of_utc_and_whole_number_readings_keep_their_released_values() -> None:
    in_utc = Reading("7", Metric.HEART_RATE, 72.0, "/min", "8867-4",
                     datetime(2024, 5, 1, 8, 30, 0, 123456, tzinfo=UTC), None,
                     datetime(2024, 5, 1, tzinfo=UTC))
    whole = Reading("7", Metric.HEART_RATE, 72, "/min", "8867-4",
                    datetime(2024, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
                    "", datetime(2024, 5, 1, tzinfo=UTC))
    assert reading_fingerprint(in_utc) == (
        "bd2689a68d5d2ddce531173d77e290130ea0e5a8c4187761c3f15e90815354cf")
    assert reading_fingerprint(whole) == (
        "329db4fdc1368a88de485a0aaaa1771eb075f3e11473770ab6b2b3b35c179749")


ODD_FIELDS = [
    *(("value", odd) for odd in ODD_NUMBERS), *(("effective_at", odd) for odd in ODD_MOMENTS),
    *(("unit", odd) for odd in ODD_UNITS + ODD_TEXTS),
    *(("metric", odd) for odd in ODD_METRICS + ODD_TEXTS),
    *(("idempotency_key", odd) for odd in ODD_TEXTS), *(("device", odd) for odd in ODD_TEXTS),
    ("loinc", None), ("loinc", ""), ("loinc", "8867-4"), ("colour", "red"), ("systolic", 120),
]


@pytest.mark.parametrize(("field", "odd"), ODD_FIELDS, ids=repr)
def test_an_odd_field_is_answered_as_the_general_way_answers_it(field: str, odd: Any) -> None:
    raw = {"idempotency_key": "k", "metric": "heart_rate", "value": 72, "unit": "bpm",
           "effective_at": "2024-05-01T08:30:00+09:00", "device": "Omron", field: odd}
    general = parse_batch_item(raw, 0, context(), "/0")
    quick = quick_item(raw, 0, context(), RECEIVED_AT + timedelta(minutes=5))
    assert parse_batch([raw], context()) == [general]
    if quick is not None:
        assert (quick.key, quick.problems) == (general.key, general.problems)
        _same_readings(quick.readings, general.readings)


def _released_digest(reading: Reading) -> bytes:
    """The fingerprint's formula as first released, kept here to compare against."""
    material = "|".join([
        reading.patient_ref, reading.metric.value, reading.loinc,
        reading.effective_at.astimezone(UTC).isoformat(), repr(round(reading.value, 6)),
        reading.source_device or "",
    ])
    return hashlib.sha256(material.encode()).digest()


@PROPERTIES
@given(
    st.text(max_size=12), st.sampled_from(list(Metric)), st.sampled_from(LOINC_CODES),
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive by design
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-3, minutes=-30))]),
    ),
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6),
    st.none() | st.text(max_size=12),
)
def test_a_readings_digest_is_the_released_formula(
    patient: str, metric: Metric, code: str, moment: datetime, value: float, device: str | None
) -> None:
    reading = Reading(patient, metric, value, "1", code, moment, device, RECEIVED_AT)
    assert reading_digest(reading) == _released_digest(reading)
