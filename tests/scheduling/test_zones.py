from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from jaejin.scheduling.errors import ErrorCode, SchedulingError
from jaejin.scheduling.zones import (
    WallTimeKind,
    canonical_zone_name,
    classify_wall_time,
    local_day_start,
    offset_label,
    resolve_zone,
    wall_datetime,
    wall_to_instant,
)

from .builders import KATHMANDU, KIRITIMATI, LORD_HOWE, NEW_YORK


@pytest.mark.parametrize(
    "name", ["", "   ", "Mars/Olympus", "Asia/Seoul/", "../etc/passwd", "localtime", "Factory",
             "right/Asia/Seoul", "posixrules", "Asia/Seoul\x00"]
)
def test_an_unknown_or_unusable_zone_name_is_refused_with_a_stable_code(name: str) -> None:
    with pytest.raises(SchedulingError) as raised:
        resolve_zone(name)

    assert raised.value.code is ErrorCode.UNKNOWN_TIME_ZONE
    assert raised.value.field == "tz"
    assert "IANA" in raised.value.translated("en")
    assert "시간대" in raised.value.translated("ko")


def test_zone_names_are_matched_without_regard_to_case_and_returned_canonically() -> None:
    assert canonical_zone_name("asia/seoul") == "Asia/Seoul"
    assert canonical_zone_name(" America/New_York ") == "America/New_York"
    assert resolve_zone("PACIFIC/KIRITIMATI").key == "Pacific/Kiritimati"


def test_wall_times_are_classified_around_new_york_clock_changes() -> None:
    assert classify_wall_time(wall_datetime(date(2026, 3, 8), 150, NEW_YORK)) is (
        WallTimeKind.NONEXISTENT
    )
    assert classify_wall_time(wall_datetime(date(2026, 11, 1), 90, NEW_YORK)) is (
        WallTimeKind.AMBIGUOUS
    )
    assert classify_wall_time(wall_datetime(date(2026, 11, 1), 180, NEW_YORK)) is (
        WallTimeKind.REGULAR
    )


def test_a_missing_wall_time_maps_to_the_instant_the_clock_jumped() -> None:
    assert wall_to_instant(wall_datetime(date(2026, 3, 8), 150, NEW_YORK)) == datetime(
        2026, 3, 8, 7, 0, tzinfo=UTC
    )
    # Lord Howe jumps half an hour: 02:00 -> 02:30 (+10:30 -> +11:00).
    assert wall_to_instant(wall_datetime(date(2026, 10, 4), 135, LORD_HOWE)) == datetime(
        2026, 10, 3, 15, 30, tzinfo=UTC
    )


def test_a_repeated_wall_time_maps_to_its_first_occurrence() -> None:
    assert wall_to_instant(wall_datetime(date(2026, 11, 1), 90, NEW_YORK)) == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )


def test_a_day_that_never_happened_starts_and_ends_at_the_same_instant() -> None:
    assert local_day_start(date(1994, 12, 31), KIRITIMATI) == local_day_start(
        date(1995, 1, 1), KIRITIMATI
    )


def test_offsets_are_labelled_to_the_minute() -> None:
    assert offset_label(datetime(2026, 1, 1, tzinfo=KATHMANDU).utcoffset()) == "+05:45"  # type: ignore[arg-type]
    assert offset_label(datetime(2026, 1, 1, tzinfo=NEW_YORK).utcoffset()) == "-05:00"  # type: ignore[arg-type]
