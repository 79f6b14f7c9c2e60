"""Apple Health exports built in the test: zip and bare XML, paired panels, corrupt files."""

from __future__ import annotations

import io
import tracemalloc
from datetime import timedelta

import pytest

from jaejin.monitoring.parsers import UnreadableInputError, parse_apple_health_export
from jaejin.monitoring.readings import Metric
from tests.monitoring.fixtures import (
    WATCH,
    apple_bp_correlation,
    apple_export_xml,
    apple_export_zip,
    apple_record,
    context,
    write,
)


def parse(data: bytes, **kwargs):
    return list(parse_apple_health_export(io.BytesIO(data), context(), **kwargs))


def metrics(items):
    return [[reading.metric for reading in item.readings] for item in items]


EVERY_KIND = apple_export_xml(
    apple_record("HeartRate", "64", "count/min", device=WATCH, source="Jimin’s Watch"),
    apple_record("OxygenSaturation", "0.97", "%", "2024-05-01 08:31:00 +0900"),
    apple_record("BloodGlucose", "5.5", "mmol<180.1558800000541>/L", "2024-05-01 08:32:00 +0900"),
    apple_record("BloodGlucose", "112", "mg/dL", "2024-05-01 08:33:00 +0900"),
    apple_record("BodyMass", "154.3", "lb", "2024-05-01 08:34:00 +0900"),
    apple_record("StepCount", "1200", "count", "2024-05-01 08:35:00 +0900"),
    apple_bp_correlation("128", "82"),
)


def test_it_reads_every_supported_record_type_from_a_zip(tmp_path):
    path = write(tmp_path / "export.zip", apple_export_zip(EVERY_KIND))
    items = list(parse_apple_health_export(path, context()))
    assert metrics(items) == [
        [Metric.HEART_RATE],
        [Metric.SPO2],
        [Metric.GLUCOSE],
        [Metric.GLUCOSE],
        [Metric.BODY_WEIGHT],
        [Metric.SYSTOLIC, Metric.DIASTOLIC],
    ]
    heart, spo2, glucose_mmol, glucose_mg, weight, bp = items
    assert heart.readings[0].source_device == "Apple Watch"
    assert heart.readings[0].unit == "/min"
    assert spo2.readings[0].value == pytest.approx(97.0)
    assert glucose_mmol.readings[0].value == pytest.approx(5.5 * 18.016)
    assert glucose_mg.readings[0].value == 112.0
    assert weight.readings[0].value == pytest.approx(69.99, abs=0.01)
    assert [reading.value for reading in bp.readings] == [128.0, 82.0]
    assert bp.readings[0].panel_id == bp.readings[1].panel_id is not None
    assert bp.readings[0].source_device == "Omron Connect"
    assert bp.readings[0].effective_at.utcoffset() == timedelta(hours=9)
    assert [item.index for item in items] == list(range(6))


def test_a_bare_export_xml_file_is_read_too(tmp_path):
    path = write(tmp_path / "export.xml", EVERY_KIND)
    assert len(list(parse_apple_health_export(path, context()))) == 6


def test_blood_pressure_halves_also_listed_as_records_are_not_counted_twice():
    xml = apple_export_xml(
        apple_record("BloodPressureDiastolic", "82", "mmHg"),
        apple_record("BloodPressureSystolic", "128", "mmHg"),
        apple_bp_correlation("128", "82"),
    )
    items = parse(xml)
    assert metrics(items) == [[Metric.SYSTOLIC, Metric.DIASTOLIC]]


def test_halves_without_a_correlation_pair_by_identical_start_date():
    xml = apple_export_xml(
        apple_record("BloodPressureDiastolic", "80", "mmHg", "2024-05-01 07:00:00 +0900"),
        apple_record("BloodPressureDiastolic", "85", "mmHg", "2024-05-01 21:00:00 +0900"),
        apple_record("BloodPressureSystolic", "121", "mmHg", "2024-05-01 07:00:00 +0900"),
        apple_record("BloodPressureSystolic", "135", "mmHg", "2024-05-01 21:00:00 +0900"),
    )
    items = parse(xml)
    assert [[reading.value for reading in item.readings] for item in items] == [
        [121.0, 80.0],
        [135.0, 85.0],
    ]


def test_a_half_without_its_partner_is_refused_not_half_stored():
    xml = apple_export_xml(apple_record("BloodPressureSystolic", "128", "mmHg"))
    (item,) = parse(xml)
    assert item.readings == ()
    assert [problem.code for problem in item.problems] == ["UNPAIRED_BLOOD_PRESSURE"]
    assert "HKQuantityTypeIdentifierBloodPressureSystolic" in item.problems[0].pointer


def test_bad_records_are_refused_one_by_one():
    xml = apple_export_xml(
        apple_record("HeartRate", "fast", "count/min"),
        apple_record("HeartRate", "900", "count/min", "2024-05-01 09:00:00 +0900"),
        apple_record("HeartRate", "60", "count/min", "01/05/2024 09:00"),
        apple_record("BodyMass", "70", "oz", "2024-05-01 09:00:00 +0900"),
        apple_record("HeartRate", "61", "count/min", "2024-05-01 10:00:00 +0900"),
    )
    items = parse(xml)
    assert [[problem.code for problem in item.problems] for item in items] == [
        ["INVALID_NUMBER"],
        ["IMPOSSIBLE_VALUE"],
        ["INVALID_TIMESTAMP"],
        ["UNKNOWN_UNIT"],
        [],
    ]
    assert items[-1].accepted


def test_progress_is_reported_up_to_the_whole_file(tmp_path):
    records = [
        apple_record("HeartRate", str(60 + n % 30), "count/min", f"2024-04-{1 + n % 28:02d} "
                     f"{n % 24:02d}:{n % 60:02d}:00 +0900")
        for n in range(2000)
    ]
    xml = apple_export_xml(*records)
    calls: list[tuple[int, int]] = []
    path = write(tmp_path / "export.zip", apple_export_zip(xml))
    items = list(
        parse_apple_health_export(path, context(), on_progress=lambda *call: calls.append(call))
    )
    assert len(items) == 2000
    assert len(calls) > 3
    assert calls[-1] == (len(xml), len(xml))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_memory_stays_flat_however_long_the_export_is():
    """Elements are cleared as they are read: a tree of the whole file would need tens of MB."""
    xml = apple_export_xml(
        *(
            apple_record(
                "StepCount" if n % 2 else "HeartRate", "70", "count/min",
                f"2024-04-{1 + n % 28:02d} {n % 24:02d}:{n % 60:02d}:00 +0900",
            )
            for n in range(4_000)
        )
    )
    stream = io.BytesIO(xml)
    tracemalloc.start()
    try:
        accepted = sum(item.accepted for item in parse_apple_health_export(stream, context()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert accepted == 2_000
    # The whole tree of this 1.1 MB file takes about 7 MB; streaming peaks near 0.3 MB.
    assert peak < 2_000_000


def test_a_truncated_zip_is_refused_with_a_clear_error(tmp_path):
    data = apple_export_zip(EVERY_KIND)
    path = write(tmp_path / "export.zip", data[: len(data) // 2])
    with pytest.raises(UnreadableInputError) as raised:
        list(parse_apple_health_export(path, context()))
    assert raised.value.code == "CORRUPT_ZIP"
    assert "zip" in raised.value.message("en")


def test_a_zip_whose_data_was_damaged_is_refused(tmp_path):
    data = bytearray(apple_export_zip(EVERY_KIND * 1))
    start = data.index(b"apple_health_export/export.xml") + 40
    for offset in range(start, start + 200):
        data[offset] ^= 0x5A
    with pytest.raises(UnreadableInputError) as raised:
        list(parse_apple_health_export(io.BytesIO(bytes(data)), context()))
    assert raised.value.code in {"CORRUPT_ZIP", "CORRUPT_XML"}


def test_a_zip_without_export_xml_is_not_an_export():
    with pytest.raises(UnreadableInputError) as raised:
        parse(apple_export_zip(EVERY_KIND, member="photos/IMG_0001.xml"))
    assert raised.value.code == "NOT_AN_EXPORT"


def test_a_cut_off_xml_is_refused_naming_the_position():
    with pytest.raises(UnreadableInputError) as raised:
        parse(EVERY_KIND[: len(EVERY_KIND) - 40])
    assert raised.value.code == "CORRUPT_XML"
    assert "line" in raised.value.message("en")


def test_xml_that_is_not_a_health_export_is_refused():
    with pytest.raises(UnreadableInputError) as raised:
        parse(b"<?xml version='1.0'?><ClinicalDocument/>")
    assert raised.value.code == "NOT_AN_EXPORT"


def test_an_entity_expansion_bomb_is_refused_before_it_expands():
    bomb = (
        b'<?xml version="1.0"?>\n<!DOCTYPE HealthData [\n<!ENTITY a "aaaaaaaaaa">\n'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">\n]>\n'
        b'<HealthData><Record type="HKQuantityTypeIdentifierHeartRate" value="&c;"/></HealthData>'
    )
    with pytest.raises(UnreadableInputError) as raised:
        parse(bomb)
    assert raised.value.code == "UNSAFE_XML"


def test_an_external_entity_is_refused():
    xxe = (
        b'<?xml version="1.0"?>\n'
        b'<!DOCTYPE HealthData [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        b"<HealthData>&x;</HealthData>"
    )
    with pytest.raises(UnreadableInputError) as raised:
        parse(xxe)
    assert raised.value.code == "UNSAFE_XML"
