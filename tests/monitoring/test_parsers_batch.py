"""Jaejin's JSON batch and the CSV upload: per-item results, never half an item."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.parsers import (
    MEASUREMENT_KINDS,
    ReadingBatchIn,
    UnreadableInputError,
    parse_batch,
    parse_readings_csv,
)
from jaejin.monitoring.readings import Metric
from tests.monitoring.fixtures import RECEIVED_AT, context

FAST = settings(max_examples=200, deadline=None)


def item(**fields):
    values = {
        "idempotency_key": "k1",
        "metric": "heart_rate",
        "value": 64,
        "unit": "bpm",
        "effective_at": "2024-05-01T08:30:00+09:00",
        "device": "Galaxy Watch",
    }
    values.update(fields)
    return {key: value for key, value in values.items() if value is not None}


def codes(parsed):
    return [problem.code for problem in parsed.problems]


def test_a_batch_reports_every_item_with_its_key():
    parsed = parse_batch(
        {
            "readings": [
                item(),
                item(idempotency_key="k2", metric="glucose", value=6.1, unit="mmol/L"),
                item(idempotency_key="k3", value=900),
            ]
        },
        context(),
    )
    assert [one.key for one in parsed] == ["k1", "k2", "k3"]
    assert [one.accepted for one in parsed] == [True, True, False]
    assert parsed[1].readings[0].value == pytest.approx(6.1 * 18.016)
    assert parsed[1].readings[0].loinc == "2339-0"
    assert codes(parsed[2]) == ["IMPOSSIBLE_VALUE"]
    assert parsed[2].problems[0].pointer == "/readings/2/value"


def test_a_blood_pressure_item_becomes_a_panel_or_nothing():
    good, bad = parse_batch(
        [
            item(metric="blood_pressure", value=None, systolic=128, diastolic=82, unit="mmHg"),
            item(
                idempotency_key="k2", metric="blood_pressure", value=None, systolic=128,
                diastolic=999, unit="mmHg",
            ),
        ],
        context(),
    )
    assert [reading.metric for reading in good.readings] == [Metric.SYSTOLIC, Metric.DIASTOLIC]
    assert good.readings[0].panel_id == good.readings[1].panel_id is not None
    assert bad.readings == ()
    assert bad.problems[0].pointer == "/1/diastolic"


def test_a_loinc_code_can_name_the_measurement():
    (parsed,) = parse_batch(
        [item(metric=None, loinc="99504-3", value=150, unit="mg/dL")], context()
    )
    assert parsed.readings[0].glucose_source is not None
    assert parsed.readings[0].loinc == "99504-3"


def test_a_metric_and_a_loinc_that_disagree_are_refused():
    (parsed,) = parse_batch([item(loinc="29463-7")], context())
    assert codes(parsed) == ["CONFLICTING_CODE"]


@pytest.mark.parametrize(
    ("fields", "expected", "pointer"),
    [
        ({"effective_at": "2024-05-01T08:30:00"}, "NAIVE_TIMESTAMP", "/0/effective_at"),
        ({"effective_at": "2024-05-01"}, "NAIVE_TIMESTAMP", "/0/effective_at"),
        ({"effective_at": 1714519800}, "INVALID_TIMESTAMP", "/0/effective_at"),
        ({"effective_at": "yesterday"}, "INVALID_TIMESTAMP", "/0/effective_at"),
        ({"value": "64"}, "INVALID_NUMBER", "/0/value"),
        ({"value": True}, "INVALID_NUMBER", "/0/value"),
        ({"unit": "furlongs"}, "UNKNOWN_UNIT", "/0/unit"),
        ({"unit": "kg"}, "UNIT_MISMATCH", "/0/unit"),
        ({"metric": "mood"}, "UNKNOWN_METRIC", "/0/metric"),
        ({"metric": "wound_photo"}, "UNSUPPORTED_METRIC", "/0/metric"),
        ({"idempotency_key": None}, "MISSING_FIELD", "/0/idempotency_key"),
        ({"colour": "blue"}, "UNKNOWN_FIELD", "/0/colour"),
        ({"value": None}, "MISSING_FIELD", "/0/value"),
        ({"systolic": 120}, "UNKNOWN_FIELD", "/0/systolic"),
        ({"device": "x" * 201}, "INVALID_TEXT", "/0/device"),
    ],
)
def test_it_refuses_bad_items_with_a_stable_code_and_pointer(fields, expected, pointer):
    (parsed,) = parse_batch([item(**fields)], context())
    assert parsed.readings == ()
    assert expected in codes(parsed)
    assert pointer in [problem.pointer for problem in parsed.problems]
    assert all(problem.message("en") for problem in parsed.problems)


def test_a_reused_idempotency_key_in_one_batch_is_refused_after_the_first():
    first, second = parse_batch([item(), item(value=70)], context())
    assert first.accepted
    assert codes(second) == ["DUPLICATE_KEY"]
    assert "0" in second.problems[0].message("en")


def test_one_bad_item_does_not_stop_the_others():
    parsed = parse_batch(["not an object", item(idempotency_key="k2")], context())
    assert codes(parsed[0]) == ["MALFORMED_ITEM"]
    assert parsed[1].accepted


@pytest.mark.parametrize("body", [{"items": []}, "text", 42])
def test_a_body_that_is_not_a_batch_is_unreadable(body):
    with pytest.raises(UnreadableInputError):
        parse_batch(body, context())


def test_a_batch_over_the_limit_is_refused_whole():
    with pytest.raises(UnreadableInputError) as raised:
        parse_batch([item(idempotency_key=str(n)) for n in range(1001)], context())
    assert raised.value.code == "TOO_MANY_ITEMS"


def test_the_batch_schema_documents_the_item_fields():
    schema = ReadingBatchIn.model_json_schema()
    fields = schema["$defs"]["ReadingItemIn"]["properties"]
    assert {"idempotency_key", "metric", "loinc", "value", "systolic", "diastolic", "unit",
            "effective_at", "device"} <= set(fields)
    assert fields["effective_at"]["format"] == "date-time"


@FAST
@given(
    st.sampled_from(sorted(name for name in MEASUREMENT_KINDS if name != "blood_pressure")),
    st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=5),
    st.text(max_size=12),
    st.text(max_size=30),
)
def test_any_item_is_accepted_whole_or_refused_with_reasons(metric, value, unit, effective):
    (parsed,) = parse_batch(
        [item(metric=metric, value=value, unit=unit, effective_at=effective)], context()
    )
    assert bool(parsed.readings) != bool(parsed.problems)


CSV_HEADER = "effective_at,metric,value,unit,device,systolic,diastolic\n"


def test_a_csv_file_becomes_one_item_per_row_with_line_numbers():
    text = CSV_HEADER + (
        "2024-05-01T08:30:00+09:00,blood_pressure,,mmHg,Omron,128,82\n"
        "\n"
        "2024-05-01T08:35:00+09:00,glucose,5.6,mmol/L,,,\n"
        "2024-05-01T08:40:00+09:00,body_weight,abc,kg,,,\n"
        "2024-05-01T08:45:00,heart_rate,64,bpm,,,\n"
    )
    bp, glucose, weight, heart = parse_readings_csv(text, context())
    assert [reading.value for reading in bp.readings] == [128.0, 82.0]
    assert bp.readings[0].source_device == "Omron"
    assert glucose.readings[0].value == pytest.approx(5.6 * 18.016)
    assert codes(weight) == ["INVALID_NUMBER"]
    assert weight.problems[0].pointer == "line 5, value"
    assert codes(heart) == ["NAIVE_TIMESTAMP"]
    assert heart.problems[0].pointer == "line 6, effective_at"
    assert [one.index for one in (bp, glucose, weight, heart)] == [0, 1, 2, 3]


def test_csv_naive_times_are_read_in_the_patients_zone_when_given():
    text = CSV_HEADER + "2024-05-01 08:45:00,heart_rate,64,bpm,,,\n"
    (parsed,) = parse_readings_csv(text, context(default_zone=ZoneInfo("Asia/Seoul")))
    assert parsed.readings[0].effective_at.utcoffset() == timedelta(hours=9)


def test_a_csv_saved_by_korean_excel_in_cp949_is_read():
    text = (
        "effective_at,metric,value,unit,device\n"
        "2024-05-01T08:30:00+09:00,heart_rate,64,bpm,갤럭시 워치\n"
    )
    (parsed,) = parse_readings_csv(text.encode("cp949"), context())
    assert parsed.readings[0].source_device == "갤럭시 워치"


def test_a_csv_with_a_utf8_bom_and_upper_case_headers_is_read():
    text = "\ufeffEffective_At,Metric,Value,Unit\n2024-05-01T08:30:00+09:00,spo2,97,%\n"
    (parsed,) = parse_readings_csv(text.encode("utf-8"), context())
    assert parsed.readings[0].value == 97.0


def test_a_csv_row_from_the_future_is_refused():
    future = (RECEIVED_AT + timedelta(hours=2)).isoformat()
    (parsed,) = parse_readings_csv(CSV_HEADER + f"{future},heart_rate,64,bpm,,,\n", context())
    assert codes(parsed) == ["FUTURE_TIMESTAMP"]
    assert parsed.problems[0].pointer == "line 2, effective_at"


def test_a_csv_blood_pressure_row_missing_diastolic_is_refused():
    (parsed,) = parse_readings_csv(
        CSV_HEADER + "2024-05-01T08:30:00+09:00,blood_pressure,,mmHg,,128,\n", context()
    )
    assert codes(parsed) == ["MISSING_FIELD"]
    assert parsed.problems[0].pointer == "line 2, diastolic"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "EMPTY_FILE"),
        (b"metric,value,unit\nheart_rate,64,bpm\n", "MISSING_COLUMNS"),
        (b"effective_at,metric,unit\n", "MISSING_COLUMNS"),
        (b"\xff\xfe\x00\x00binary\x80\x81", "NOT_TEXT"),
    ],
)
def test_an_unreadable_csv_is_refused_whole_with_a_clear_error(data, code):
    with pytest.raises(UnreadableInputError) as raised:
        parse_readings_csv(data, context())
    assert raised.value.code == code
