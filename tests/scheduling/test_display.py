from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from jaejin.scheduling.display import dual_zone_label, zone_city_name, zone_label

from .builders import KATHMANDU, KIRITIMATI, NEW_YORK, PAGO_PAGO, SEOUL, ULAANBAATAR, at

TUESDAY_0900_SEOUL = at(SEOUL, 2026, 3, 3, 9)


def test_the_issue_example_reads_as_written_in_english() -> None:
    assert dual_zone_label(TUESDAY_0900_SEOUL, SEOUL, NEW_YORK, "en") == (
        "Tue 09:00 Seoul = Mon 19:00 New York"
    )


def test_korean_puts_the_city_first_and_uses_korean_weekdays() -> None:
    assert dual_zone_label(TUESDAY_0900_SEOUL, SEOUL, NEW_YORK, "ko") == (
        "서울 (화) 09:00 = 뉴욕 (월) 19:00"
    )


def test_the_weekday_is_left_out_when_both_sides_share_the_date() -> None:
    assert dual_zone_label(TUESDAY_0900_SEOUL, SEOUL, ULAANBAATAR, "en") == (
        "09:00 Seoul = 08:00 Ulaanbaatar"
    )
    assert dual_zone_label(TUESDAY_0900_SEOUL, SEOUL, KATHMANDU, "ko") == (
        "서울 09:00 = Kathmandu 05:45"
    )


def test_dates_two_days_apart_show_both_weekdays() -> None:
    wednesday = at(KIRITIMATI, 2026, 3, 11, 0, 30)

    assert dual_zone_label(wednesday, KIRITIMATI, PAGO_PAGO, "en") == (
        "Wed 00:30 Kiritimati = Mon 23:30 Pago Pago"
    )


def test_one_side_only_when_patient_and_institution_share_a_zone() -> None:
    assert dual_zone_label(TUESDAY_0900_SEOUL, SEOUL, SEOUL, "en") == "09:00 Seoul"


def test_a_single_zone_label_always_carries_the_full_date() -> None:
    assert zone_label(TUESDAY_0900_SEOUL, NEW_YORK, "en") == "Mon, Mar 2, 19:00 New York"
    assert zone_label(TUESDAY_0900_SEOUL, SEOUL, "ko") == "서울 3월 3일 (화) 09:00"


@pytest.mark.parametrize(
    ("zone", "expected"),
    [("UTC", "UTC"), ("Etc/GMT-14", "UTC+14:00"), ("Etc/GMT+11", "UTC-11:00")],
)
def test_offset_only_zones_are_named_by_their_offset(zone: str, expected: str) -> None:
    assert zone_city_name(ZoneInfo(zone), "en", datetime(2026, 1, 1, tzinfo=UTC)) == expected


def test_unsupported_languages_fall_back_to_english_formatting() -> None:
    assert dual_zone_label(TUESDAY_0900_SEOUL, SEOUL, NEW_YORK, "xx") == (
        "Tue 09:00 Seoul = Mon 19:00 New York"
    )


def test_other_supported_languages_get_their_own_city_names() -> None:
    assert "ニューヨーク" in dual_zone_label(TUESDAY_0900_SEOUL, SEOUL, NEW_YORK, "ja")
    assert "Нью-Йорк" in dual_zone_label(TUESDAY_0900_SEOUL, SEOUL, NEW_YORK, "ru")
