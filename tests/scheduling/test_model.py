from __future__ import annotations

from datetime import date, timedelta

import pytest

from jaejin.scheduling.errors import ErrorCode, SchedulingError
from jaejin.scheduling.model import (
    VISIT_TYPES_BY_CODE,
    Interval,
    IntervalSet,
    VisitMode,
    VisitType,
    ensure_interpreter_language_offered,
    interpreters_free_for,
    needs_interpreter,
    visit_type_by_code,
)
from jaejin.scheduling.public_holidays import KOREAN_PUBLIC_HOLIDAYS

from .builders import SEOUL, at


def test_the_default_visit_types_have_the_agreed_lengths() -> None:
    lengths = {code: visit.duration for code, visit in VISIT_TYPES_BY_CODE.items()}

    assert lengths["follow_up"] == timedelta(minutes=15)
    assert lengths["international_follow_up"] == timedelta(minutes=30)
    assert lengths["tri_party_consultation"] == timedelta(minutes=45)
    assert VISIT_TYPES_BY_CODE["in_person_follow_up"].modes == {VisitMode.IN_PERSON}
    assert VISIT_TYPES_BY_CODE["tri_party_consultation"].display_name("ko") == (
        "현지 주치의와 함께하는 3자 협진"
    )


def test_an_unknown_visit_type_lists_the_known_ones() -> None:
    with pytest.raises(SchedulingError) as raised:
        visit_type_by_code("surgery")

    assert raised.value.code is ErrorCode.UNKNOWN_VISIT_TYPE
    assert raised.value.to_dict("en") == {
        "code": "UNKNOWN_VISIT_TYPE",
        "message": 'Unknown visit type "surgery"; known types: follow_up, in_person_follow_up, '
        "international_follow_up, tri_party_consultation.",
        "field": "visit_type",
    }


@pytest.mark.parametrize(
    ("duration", "buffer"),
    [(timedelta(0), timedelta(0)), (timedelta(seconds=90), timedelta(0)),
     (timedelta(minutes=15), timedelta(minutes=-5))],
)
def test_a_visit_type_needs_whole_positive_minutes(duration: timedelta, buffer: timedelta) -> None:
    with pytest.raises(ValueError, match=r"minutes|positive"):
        VisitType("x", duration, buffer, frozenset({VisitMode.VIDEO}), "x")


def test_an_interpreter_is_needed_only_when_the_practitioner_lacks_the_language() -> None:
    assert needs_interpreter(["ko", "en"], "mn")
    assert not needs_interpreter(["ko", "en"], "en-US")
    assert not needs_interpreter(["ko", "zh-Hans"], "zh-Hant")


def test_a_language_no_interpreter_offers_is_a_clear_error() -> None:
    ensure_interpreter_language_offered("mn", ["ru", "mn-Cyrl"])

    with pytest.raises(SchedulingError) as raised:
        ensure_interpreter_language_offered("th", ["ru", "mn"])

    assert raised.value.code is ErrorCode.INTERPRETER_LANGUAGE_UNAVAILABLE
    assert raised.value.translated("ko") == '"th" 언어를 통역할 수 있는 통역사가 없습니다.'


def test_the_interpreters_free_for_a_whole_visit_are_named() -> None:
    visit = Interval(at(SEOUL, 2026, 6, 2, 9), at(SEOUL, 2026, 6, 2, 9, 30))
    windows = {
        "bat": [Interval(at(SEOUL, 2026, 6, 2, 8), at(SEOUL, 2026, 6, 2, 9, 15))],
        "saraa": [Interval(at(SEOUL, 2026, 6, 2, 8), at(SEOUL, 2026, 6, 2, 9, 15)),
                  Interval(at(SEOUL, 2026, 6, 2, 9, 15), at(SEOUL, 2026, 6, 2, 10))],
        "oyun": [Interval(at(SEOUL, 2026, 6, 2, 9), at(SEOUL, 2026, 6, 2, 9, 30))],
    }

    assert interpreters_free_for(visit, windows) == ["saraa", "oyun"]


def test_interval_sets_merge_and_answer_overlap_cover_and_subtract() -> None:
    hours = IntervalSet([
        Interval(at(SEOUL, 2026, 6, 2, 10), at(SEOUL, 2026, 6, 2, 11)),
        Interval(at(SEOUL, 2026, 6, 2, 9), at(SEOUL, 2026, 6, 2, 10)),
        Interval(at(SEOUL, 2026, 6, 2, 13), at(SEOUL, 2026, 6, 2, 14)),
    ])

    assert len(hours.intervals) == 2
    assert hours.covers(at(SEOUL, 2026, 6, 2, 9, 30), at(SEOUL, 2026, 6, 2, 10, 30))
    assert not hours.covers(at(SEOUL, 2026, 6, 2, 10, 30), at(SEOUL, 2026, 6, 2, 13, 30))
    assert hours.overlaps(at(SEOUL, 2026, 6, 2, 12), at(SEOUL, 2026, 6, 2, 13, 1))
    assert not hours.overlaps(at(SEOUL, 2026, 6, 2, 11), at(SEOUL, 2026, 6, 2, 13))
    assert hours.subtract_from(
        Interval(at(SEOUL, 2026, 6, 2, 8), at(SEOUL, 2026, 6, 2, 15))
    ) == [
        Interval(at(SEOUL, 2026, 6, 2, 8), at(SEOUL, 2026, 6, 2, 9)),
        Interval(at(SEOUL, 2026, 6, 2, 11), at(SEOUL, 2026, 6, 2, 13)),
        Interval(at(SEOUL, 2026, 6, 2, 14), at(SEOUL, 2026, 6, 2, 15)),
    ]


def test_an_interval_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="end after"):
        Interval(at(SEOUL, 2026, 6, 2, 9), at(SEOUL, 2026, 6, 2, 9))


def test_korean_holidays_include_alternative_and_election_days_with_their_names() -> None:
    assert date(2026, 9, 25) in KOREAN_PUBLIC_HOLIDAYS
    assert KOREAN_PUBLIC_HOLIDAYS.name(date(2026, 9, 25), "ko") == "추석"
    assert KOREAN_PUBLIC_HOLIDAYS.name(date(2025, 10, 8), "en") == "Alternative holiday for Chuseok"
    assert date(2026, 6, 3) in KOREAN_PUBLIC_HOLIDAYS
    assert date(2026, 6, 4) not in KOREAN_PUBLIC_HOLIDAYS
    assert "2026-09-25" not in KOREAN_PUBLIC_HOLIDAYS
