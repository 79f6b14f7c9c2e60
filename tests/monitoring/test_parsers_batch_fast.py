"""The JSON batch's fast paths give exactly the answers of the item-by-item, fully explained way.

`parse_batch` validates the whole list in one pydantic call and builds plain valid items without
the pointers a refusal needs; these properties prove that neither changes any item's outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

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
from jaejin.monitoring.parsers.items import mark_duplicate_keys
from jaejin.monitoring.parsers.json_batch import explained_item, parse_batch_item, plain_item
from jaejin.monitoring.readings import Metric, Reading
from tests.monitoring.fixtures import RECEIVED_AT, context

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
