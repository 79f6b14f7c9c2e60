from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.monitoring.parsers import (
    OutcomeIssue,
    UnreadableInputError,
    issues_from_problems,
    operation_outcome,
    panel_to_observation,
    parse_bundle,
    parse_observation,
    parse_observation_request,
    reading_to_observation,
)
from jaejin.monitoring.readings import Metric, Reading
from tests.monitoring.fixtures import (
    PATIENT,
    RECEIVED_AT,
    blood_pressure_observation,
    context,
    single_observation,
)

FAST = settings(max_examples=200, deadline=None)


def codes(item):
    return [problem.code for problem in item.problems]


def test_a_blood_pressure_panel_becomes_two_readings_sharing_a_panel():
    item = parse_observation(blood_pressure_observation(), context())
    assert item.accepted
    systolic, diastolic = item.readings
    assert (systolic.metric, systolic.value, systolic.unit, systolic.loinc) == (
        Metric.SYSTOLIC, 128.0, "mm[Hg]", "8480-6",
    )
    assert (diastolic.metric, diastolic.value, diastolic.loinc) == (
        Metric.DIASTOLIC, 82.0, "8462-4",
    )
    assert systolic.panel_id is not None
    assert systolic.panel_id == diastolic.panel_id
    assert systolic.effective_at == datetime(2024, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=9)))
    assert systolic.effective_at.utcoffset() == timedelta(hours=9)
    assert systolic.source_device == "Omron HEM-7155T"
    assert systolic.patient_ref == PATIENT
    assert systolic.received_at == RECEIVED_AT


def test_the_same_panel_sent_twice_gets_the_same_panel_id():
    first = parse_observation(blood_pressure_observation(), context())
    second = parse_observation(blood_pressure_observation(), context())
    assert first.readings[0].panel_id == second.readings[0].panel_id


def test_a_glucose_in_mmol_is_stored_in_mg_dl_under_the_mass_code():
    item = parse_observation(single_observation("15074-8", 5.5, "mmol/L"), context())
    (reading,) = item.readings
    assert reading.metric is Metric.GLUCOSE
    assert reading.unit == "mg/dL"
    assert reading.value == pytest.approx(99.088)
    assert reading.loinc == "2339-0"


def test_a_heart_rate_with_annotated_ucum_unit_is_accepted():
    item = parse_observation(single_observation("8867-4", 64, "{beats}/min"), context())
    assert item.readings[0].unit == "/min"


def test_effective_period_start_is_the_measurement_time():
    resource = single_observation("29463-7", 70.2, "kg")
    del resource["effectiveDateTime"]
    resource["effectivePeriod"] = {"start": "2024-05-01T07:00:00+09:00"}
    item = parse_observation(resource, context())
    assert item.readings[0].effective_at.hour == 7


def test_it_refuses_a_resource_that_is_not_an_observation():
    item = parse_observation({"resourceType": "Patient", "id": "x"}, context())
    assert codes(item) == ["UNSUPPORTED_RESOURCE"]
    assert issues_from_problems(item.problems, "en")[0].code == "not-supported"


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "registered"])
def test_it_refuses_observations_whose_status_is_not_a_result(status):
    item = parse_observation(blood_pressure_observation(status=status), context())
    assert codes(item) == ["UNSUPPORTED_STATUS"]
    assert item.problems[0].pointer == "Observation.status"


def test_it_refuses_an_observation_without_a_value_and_says_where():
    resource = single_observation("8867-4", 60, "/min")
    del resource["valueQuantity"]
    item = parse_observation(resource, context())
    assert codes(item) == ["MISSING_FIELD"]
    assert item.problems[0].pointer == "Observation.valueQuantity"
    assert issues_from_problems(item.problems, "en")[0].code == "required"


def test_a_panel_missing_its_diastolic_component_is_refused_whole():
    resource = blood_pressure_observation()
    resource["component"] = resource["component"][:1]
    item = parse_observation(resource, context())
    assert item.readings == ()
    assert codes(item) == ["MISSING_FIELD"]
    assert "8462-4" in item.problems[0].pointer


def test_it_refuses_an_unknown_loinc_code_as_code_invalid():
    item = parse_observation(single_observation("1234-5", 1, "mg/dL"), context())
    assert codes(item) == ["UNKNOWN_CODE"]
    assert issues_from_problems(item.problems, "en")[0].code == "code-invalid"


def test_it_refuses_an_unknown_unit_naming_the_accepted_units():
    item = parse_observation(single_observation("2339-0", 100, "mg/L"), context())
    assert codes(item) == ["UNKNOWN_UNIT"]
    assert item.problems[0].pointer == "Observation.valueQuantity.code"
    assert "mmol/L" in item.problems[0].message("en")


def test_it_refuses_a_quantity_in_another_coding_system():
    resource = single_observation("8867-4", 60, "/min")
    resource["valueQuantity"]["system"] = "http://snomed.info/sct"
    item = parse_observation(resource, context())
    assert codes(item) == ["UNKNOWN_UNIT"]


def test_it_refuses_a_value_that_is_only_a_bound():
    resource = single_observation("2339-0", 40, "mg/dL")
    resource["valueQuantity"]["comparator"] = "<"
    item = parse_observation(resource, context())
    assert codes(item) == ["INVALID_VALUE"]
    assert item.problems[0].pointer == "Observation.valueQuantity.comparator"


def test_it_refuses_a_naive_effective_time():
    resource = blood_pressure_observation(effectiveDateTime="2024-05-01T08:30:00")
    item = parse_observation(resource, context())
    assert codes(item) == ["NAIVE_TIMESTAMP"]
    assert item.problems[0].pointer == "Observation.effectiveDateTime"


def test_it_refuses_a_reading_from_beyond_the_clock_skew_in_the_future():
    soon = (RECEIVED_AT + timedelta(minutes=4)).isoformat()
    later = (RECEIVED_AT + timedelta(minutes=6)).isoformat()
    assert parse_observation(blood_pressure_observation(effectiveDateTime=soon), context()).accepted
    item = parse_observation(blood_pressure_observation(effectiveDateTime=later), context())
    assert set(codes(item)) == {"FUTURE_TIMESTAMP"}
    assert item.problems[0].pointer == "Observation.effectiveDateTime"


def test_it_refuses_a_physiologically_impossible_value_with_the_reason():
    item = parse_observation(blood_pressure_observation(systolic=420), context())
    assert item.readings == ()
    assert codes(item) == ["IMPOSSIBLE_VALUE"]
    assert item.problems[0].pointer == "Observation.component[0].valueQuantity.value"
    assert "420" in item.problems[0].message("en")


def test_it_refuses_a_diastolic_above_the_systolic():
    item = parse_observation(blood_pressure_observation(systolic=80, diastolic=120), context())
    assert codes(item) == ["DIASTOLIC_ABOVE_SYSTOLIC"]


def test_it_refuses_a_reading_for_another_patient():
    resource = blood_pressure_observation(subject={"reference": "Patient/someone-else"})
    item = parse_observation(resource, context())
    assert codes(item) == ["WRONG_PATIENT"]
    assert issues_from_problems(item.problems, "en")[0].code == "forbidden"


def test_a_request_body_that_is_not_an_object_is_unreadable():
    with pytest.raises(UnreadableInputError):
        parse_observation_request([1, 2], context())


def test_operation_outcome_carries_severity_code_diagnostics_and_expression():
    item = parse_observation(blood_pressure_observation(systolic=420), context())
    outcome = operation_outcome(issues_from_problems(item.problems, "ko"))
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["severity"] == "error"
    assert issue["code"] == "value"
    assert issue["expression"] == ["Observation.component[0].valueQuantity.value"]
    assert issue["diagnostics"] == item.problems[0].message("ko")
    assert issue["diagnostics"] != item.problems[0].message("en")


def test_operation_outcome_for_store_decisions_takes_plain_issues():
    outcome = operation_outcome([OutcomeIssue("error", "not-found", "No such Observation")])
    assert outcome["issue"] == [
        {"severity": "error", "code": "not-found", "diagnostics": "No such Observation"}
    ]


def bundle(bundle_type="transaction", entries=None):
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries or []}


def test_bundle_entries_keep_their_request_and_if_none_exist():
    parsed = parse_bundle(
        bundle(
            "batch",
            [
                {
                    "fullUrl": "urn:uuid:1",
                    "resource": blood_pressure_observation(),
                    "request": {
                        "method": "POST", "url": "Observation",
                        "ifNoneExist": "identifier=urn:omron|42",
                    },
                },
                {
                    "resource": blood_pressure_observation(systolic=500),
                    "request": {"method": "POST", "url": "Observation"},
                },
                {"request": {"method": "DELETE", "url": "Observation/9"}},
            ],
        ),
        context(),
    )
    assert not parsed.is_transaction
    first, second, third = parsed.entries
    assert first.item.accepted
    assert first.item.key == "identifier=urn:omron|42"
    assert first.request.if_none_exist_params == [("identifier", "urn:omron|42")]
    assert first.request.full_url == "urn:uuid:1"
    assert [problem.code for problem in second.item.problems] == ["IMPOSSIBLE_VALUE"]
    assert second.item.problems[0].pointer.startswith("Bundle.entry[1].resource.component[0]")
    assert [problem.code for problem in third.item.problems] == ["UNSUPPORTED_REQUEST"]


def test_a_transaction_bundle_is_marked_as_all_or_nothing():
    parsed = parse_bundle(bundle("transaction", []), context())
    assert parsed.is_transaction
    assert parsed.entries == ()


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Observation"},
        "not json object",
    ],
)
def test_a_body_that_is_not_a_transaction_or_batch_bundle_is_unreadable(body):
    with pytest.raises(UnreadableInputError) as raised:
        parse_bundle(body, context())
    assert raised.value.message("ko") != raised.value.message("en")


reading_metrics = st.sampled_from(
    [
        (Metric.HEART_RATE, "8867-4", "/min", 20, 300),
        (Metric.GLUCOSE, "2339-0", "mg/dL", 10, 1000),
        (Metric.GLUCOSE, "99504-3", "mg/dL", 10, 1000),
        (Metric.SPO2, "59408-5", "%", 50, 100),
        (Metric.BODY_WEIGHT, "29463-7", "kg", 1, 400),
        (Metric.BODY_TEMPERATURE, "8310-5", "Cel", 30, 45),
        (Metric.SYSTOLIC, "8480-6", "mm[Hg]", 40, 300),
    ]
)


@st.composite
def readings(draw):
    metric, code, unit, low, high = draw(reading_metrics)
    offset_minutes = draw(st.integers(min_value=-12 * 4, max_value=14 * 4)) * 15
    instant = draw(
        st.datetimes(
            # Hypothesis takes naive bounds and attaches the zone itself.
            min_value=datetime(2000, 1, 1),  # noqa: DTZ001
            max_value=datetime(2024, 5, 1),  # noqa: DTZ001
            timezones=st.just(UTC),
        )
    ).replace(microsecond=0)
    return Reading(
        patient_ref=PATIENT,
        metric=metric,
        value=draw(st.floats(min_value=low, max_value=high, allow_nan=False)),
        unit=unit,
        loinc=code,
        effective_at=instant.astimezone(timezone(timedelta(minutes=offset_minutes))),
        source_device=draw(
            st.none() | st.text(min_size=1, max_size=30).map(str.strip).filter(bool)
        ),
        received_at=RECEIVED_AT,
    )


@FAST
@given(readings())
def test_a_reading_survives_the_round_trip_through_an_observation(reading):
    resource = reading_to_observation(reading, PATIENT, "obs-1")
    assert resource["id"] == "obs-1"
    item = parse_observation(copy.deepcopy(resource), context())
    assert item.readings == (reading,)


def test_a_blood_pressure_pair_round_trips_through_a_panel_observation():
    systolic, diastolic = parse_observation(blood_pressure_observation(), context()).readings
    resource = panel_to_observation(systolic, diastolic, PATIENT, "obs-2")
    assert resource["code"]["coding"][0]["code"] == "85354-9"
    assert parse_observation(resource, context()).readings == (systolic, diastolic)
