from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from jaejin.scheduling.model import ExceptionKind, HoursMode, VisitMode
from jaejin.scheduling.schemas import AvailabilityIn, SlotQuery


def errors_of(model: type, payload: dict) -> list[dict]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(payload)
    return raised.value.errors()


SURGEON_WEEK = {
    "weekly": [
        {"weekday": 1, "start": "09:00", "end": "12:30", "mode": "video"},
        {"weekday": 1, "start": "12:30", "end": "17:00", "mode": "in_person"},
        {"weekday": 1, "start": "14:00", "end": "15:00", "mode": "video"},
        {"weekday": 7, "start": "20:00", "end": "24:00"},
    ],
    "exceptions": [
        {"date": "2026-09-25", "kind": "open_on_holiday"},
        {"date": "2026-08-03", "until": "2026-08-07", "kind": "closed"},
        {"date": "2026-07-11", "kind": "extra_hours", "start": "10:00", "end": "11:00",
         "mode": "video"},
    ],
}


def test_a_valid_week_converts_to_minutes_and_back_unchanged() -> None:
    availability_in = AvailabilityIn.model_validate(SURGEON_WEEK)
    domain = availability_in.to_domain()

    assert domain.weekly[0].start == 540
    assert domain.weekly[3].end == 1440
    assert domain.exceptions[1].kind is ExceptionKind.CLOSED
    assert len(domain.exceptions_on(date(2026, 8, 5))) == 1
    assert domain.exceptions_on(date(2026, 8, 8)) == ()
    assert AvailabilityIn.from_domain(domain) == availability_in
    assert availability_in.model_dump(mode="json", exclude_none=True) == SURGEON_WEEK | {
        "weekly": [rule | {"mode": rule.get("mode", "any")} for rule in SURGEON_WEEK["weekly"]],
        "exceptions": [
            item | {"mode": item.get("mode", "any")} for item in SURGEON_WEEK["exceptions"]
        ],
    }


@pytest.mark.parametrize(
    ("rule", "error_type"),
    [
        ({"weekday": 1, "start": "12:00", "end": "09:00"}, "end_not_after_start"),
        ({"weekday": 1, "start": "09:00", "end": "09:00"}, "end_not_after_start"),
        ({"weekday": 1, "start": "9:00", "end": "12:00"}, "invalid_clock_time"),
        ({"weekday": 1, "start": "09:00", "end": "24:30"}, "invalid_clock_time"),
        ({"weekday": 1, "start": "09:60", "end": "12:00"}, "invalid_clock_time"),
        ({"weekday": 0, "start": "09:00", "end": "12:00"}, "greater_than_equal"),
        ({"weekday": 8, "start": "09:00", "end": "12:00"}, "less_than_equal"),
        ({"weekday": 1, "start": "09:00", "end": "12:00", "mode": "phone"}, "enum"),
        ({"weekday": 1, "start": "09:00", "end": "12:00", "hours": 3}, "extra_forbidden"),
    ],
)
def test_a_bad_weekly_rule_gets_a_field_error(rule: dict, error_type: str) -> None:
    errors = errors_of(AvailabilityIn, {"weekly": [rule]})

    assert [error["type"] for error in errors] == [error_type]
    assert errors[0]["loc"][:2] == ("weekly", 0)


@pytest.mark.parametrize(
    ("first_mode", "second_mode"),
    [("video", "video"), ("any", "in_person"), ("video", "any")],
)
def test_overlapping_rules_for_the_same_mode_are_refused(first_mode: str, second_mode: str) -> None:
    errors = errors_of(
        AvailabilityIn,
        {"weekly": [
            {"weekday": 2, "start": "09:00", "end": "12:00", "mode": first_mode},
            {"weekday": 2, "start": "11:30", "end": "13:00", "mode": second_mode},
        ]},
    )

    assert errors[0]["type"] == "overlapping_rules"
    assert errors[0]["loc"] == ("weekly",)
    assert "Tuesday" in errors[0]["msg"]


def test_touching_rules_and_rules_for_different_modes_or_days_may_share_hours() -> None:
    availability = AvailabilityIn.model_validate(
        {"weekly": [
            {"weekday": 2, "start": "09:00", "end": "12:00", "mode": "video"},
            {"weekday": 2, "start": "12:00", "end": "13:00", "mode": "video"},
            {"weekday": 2, "start": "09:00", "end": "12:00", "mode": "in_person"},
            {"weekday": 3, "start": "09:00", "end": "12:00", "mode": "video"},
        ]}
    )

    assert len(availability.weekly) == 4


@pytest.mark.parametrize(
    ("item", "error_type"),
    [
        ({"date": "2026-07-11", "kind": "extra_hours"}, "missing_hours"),
        ({"date": "2026-07-11", "kind": "closed", "start": "10:00"}, "incomplete_hours"),
        ({"date": "2026-07-11", "kind": "closed", "start": "11:00", "end": "10:00"},
         "end_not_after_start"),
        ({"date": "2026-07-11", "until": "2026-07-10", "kind": "closed"}, "invalid_range"),
        ({"date": "2026-01-01", "until": "2027-06-01", "kind": "closed"}, "range_too_long"),
        ({"date": "2026-02-30", "kind": "closed"}, "date_from_datetime_parsing"),
        ({"date": "2026-07-11", "kind": "holiday"}, "enum"),
    ],
)
def test_a_bad_exception_gets_a_field_error(item: dict, error_type: str) -> None:
    errors = errors_of(AvailabilityIn, {"exceptions": [item]})

    assert errors[0]["type"] == error_type
    assert errors[0]["loc"][:2] == ("exceptions", 0)


def test_a_slot_query_normalises_the_zone_and_defaults_to_video() -> None:
    query = SlotQuery.model_validate(
        {"start": "2026-03-01", "end": "2026-03-07", "tz": "america/new_york",
         "visit_type": "international_follow_up"}
    )

    assert query.tz == "America/New_York"
    assert query.zone.key == "America/New_York"
    assert query.mode is VisitMode.VIDEO


@pytest.mark.parametrize(
    ("changes", "field", "error_type"),
    [
        ({"tz": ""}, "tz", "unknown_time_zone"),
        ({"tz": "Mars/Olympus"}, "tz", "unknown_time_zone"),
        ({"visit_type": "surgery"}, "visit_type", "unknown_visit_type"),
        ({"mode": "phone"}, "mode", "enum"),
        ({"end": "2026-02-28"}, None, "invalid_range"),
        ({"end": "2026-06-01"}, None, "range_too_long"),
        ({"start": "yesterday"}, "start", "date_from_datetime_parsing"),
    ],
)
def test_a_bad_slot_query_gets_a_clear_error(
    changes: dict, field: str | None, error_type: str
) -> None:
    payload = {"start": "2026-03-01", "end": "2026-03-07", "tz": "Asia/Seoul",
               "visit_type": "follow_up"} | changes

    errors = errors_of(SlotQuery, payload)

    assert errors[0]["type"] == error_type
    if field is not None:
        assert errors[0]["loc"] == (field,)


def test_an_unknown_zone_error_names_the_zone_and_an_example() -> None:
    errors = errors_of(
        SlotQuery,
        {"start": "2026-03-01", "end": "2026-03-01", "tz": "Mars/Olympus",
         "visit_type": "follow_up"},
    )

    assert errors[0]["msg"] == (
        'Unknown time zone "Mars/Olympus": use an IANA name such as Asia/Seoul'
    )
    assert errors[0]["ctx"] == {"zone": "Mars/Olympus"}


def test_hours_modes_cover_the_visit_modes_they_name() -> None:
    assert HoursMode.ANY.covers(VisitMode.IN_PERSON)
    assert HoursMode.VIDEO.covers(VisitMode.VIDEO)
    assert not HoursMode.VIDEO.covers(VisitMode.IN_PERSON)
