"""When to remind people of an appointment, and what the short (SMS) reminder says.

Each recipient gets the time in their own zone and language, next to the institution's time, so a
patient abroad and the clinic agree on the minute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from jaejin.core.i18n import N_, translate
from jaejin.scheduling.display import dual_zone_label, zone_label
from jaejin.scheduling.model import MODE_NAMES, VisitMode, VisitType
from jaejin.scheduling.zones import ensure_aware

DEFAULT_REMINDER_OFFSETS: tuple[timedelta, ...] = (timedelta(hours=24), timedelta(hours=1))

REMINDER_WITH_LINK = N_(
    "Jaejin reminder: {visit} ({mode}) with {practitioner} at {when}. Join: {join_url}"
)
REMINDER_WITHOUT_LINK = N_("Jaejin reminder: {visit} ({mode}) with {practitioner} at {when}.")


@dataclass(frozen=True, slots=True)
class ScheduledReminder:
    """Send at `send_at`; `offset` (before the start) identifies it, e.g. for an outbox key."""

    offset: timedelta
    send_at: datetime


def reminder_times(
    start: datetime,
    offsets: Sequence[timedelta] = DEFAULT_REMINDER_OFFSETS,
    *,
    now: datetime,
) -> list[ScheduledReminder]:
    """Reminders still to send for a visit at `start`, earliest first; past ones are skipped."""
    start = ensure_aware(start, "start")
    now = ensure_aware(now, "now")
    scheduled: dict[timedelta, ScheduledReminder] = {}
    for offset in offsets:
        if offset <= timedelta(0):
            raise ValueError(f"reminder offsets are positive durations before the start: {offset}")
        send_at = start - offset
        if send_at >= now:
            scheduled[offset] = ScheduledReminder(offset=offset, send_at=send_at)
    return sorted(scheduled.values(), key=lambda reminder: reminder.send_at)


def reminder_text(
    lang: str,
    *,
    visit_type: VisitType,
    mode: VisitMode,
    start: datetime,
    institution_zone: ZoneInfo,
    recipient_zone: ZoneInfo,
    practitioner_name: str,
    join_url: str | None = None,
) -> str:
    """The SMS body in `lang`: the time in the recipient's zone, then both zones side by side,
    e.g. "... at Mon, Mar 9, 20:00 New York (Tue 09:00 Seoul = Mon 20:00 New York). Join: ..."."""
    when = zone_label(start, recipient_zone, lang)
    if recipient_zone.key != institution_zone.key:
        when = f"{when} ({dual_zone_label(start, institution_zone, recipient_zone, lang)})"
    params: dict[str, object] = {
        "visit": visit_type.display_name(lang),
        "mode": translate(lang, MODE_NAMES[mode]),
        "practitioner": practitioner_name,
        "when": when,
    }
    if join_url:
        return translate(lang, REMINDER_WITH_LINK, join_url=join_url, **params)
    return translate(lang, REMINDER_WITHOUT_LINK, **params)
