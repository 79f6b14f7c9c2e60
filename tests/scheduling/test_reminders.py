from __future__ import annotations

from datetime import timedelta

import pytest

from jaejin.scheduling.model import VISIT_TYPES_BY_CODE, VisitMode
from jaejin.scheduling.reminders import reminder_text, reminder_times

from .builders import NEW_YORK, SEOUL, at

START = at(SEOUL, 2026, 3, 10, 9)


def test_both_default_reminders_are_scheduled_when_booked_early() -> None:
    reminders = reminder_times(START, now=START - timedelta(days=3))

    assert [(item.offset, item.send_at) for item in reminders] == [
        (timedelta(hours=24), START - timedelta(hours=24)),
        (timedelta(hours=1), START - timedelta(hours=1)),
    ]


def test_reminders_already_past_are_skipped() -> None:
    reminders = reminder_times(START, now=START - timedelta(hours=5))

    assert [item.offset for item in reminders] == [timedelta(hours=1)]
    assert reminder_times(START, now=START - timedelta(minutes=5)) == []


def test_configured_offsets_are_sorted_and_deduplicated() -> None:
    offsets = [timedelta(minutes=10), timedelta(days=2), timedelta(minutes=10)]

    reminders = reminder_times(START, offsets, now=START - timedelta(days=7))

    assert [item.offset for item in reminders] == [timedelta(days=2), timedelta(minutes=10)]


def test_a_reminder_offset_must_be_before_the_start() -> None:
    with pytest.raises(ValueError, match="positive"):
        reminder_times(START, [timedelta(0)], now=START - timedelta(days=1))


def test_a_patient_abroad_reads_the_reminder_in_their_language_and_zone() -> None:
    english = reminder_text(
        "en", visit_type=VISIT_TYPES_BY_CODE["international_follow_up"], mode=VisitMode.VIDEO,
        start=START, institution_zone=SEOUL, recipient_zone=NEW_YORK,
        practitioner_name="Dr Kim", join_url="https://example.org/v/abc",
    )
    korean = reminder_text(
        "ko", visit_type=VISIT_TYPES_BY_CODE["follow_up"], mode=VisitMode.VIDEO,
        start=START, institution_zone=SEOUL, recipient_zone=SEOUL, practitioner_name="김민준",
    )

    assert english == (
        "Jaejin reminder: International follow-up (video visit) with Dr Kim at "
        "Mon, Mar 9, 20:00 New York (Tue 09:00 Seoul = Mon 20:00 New York). "
        "Join: https://example.org/v/abc"
    )
    assert korean == (
        "Jaejin 알림: 서울 3월 10일 (화) 09:00에 김민준 선생님의 재진(화상진료)가 "
        "예약되어 있습니다."
    )
