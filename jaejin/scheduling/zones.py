"""IANA time zones: validating names, and turning local wall-clock times into instants.

Availability is written in wall-clock time ("Mondays 09:00-12:00 in Seoul"), but bookings,
busy time and comparisons are instants in UTC. Two wall-clock times need a rule:
- a time that does not exist (skipped by a spring-forward change) maps to the instant the clock
  jumped, so it can bound a window but never starts a slot;
- a time that happens twice (fall-back change) means its first occurrence (fold=0), so a slot
  label is never offered twice.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from functools import lru_cache
from zoneinfo import ZoneInfo

from jaejin.core.i18n import N_
from jaejin.scheduling.errors import ErrorCode, SchedulingError

MINUTES_PER_DAY = 24 * 60

# Present in zoneinfo's search path on many systems but not zones anyone lives in.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})


@lru_cache(maxsize=1)
def _zone_names_by_folded_name() -> dict[str, str]:
    names = sorted(zoneinfo.available_timezones() - _NOT_PLACES)
    return {
        name.casefold(): name
        for name in names
        if not name.startswith(("posix/", "right/"))
    }


def canonical_zone_name(name: str) -> str:
    """The IANA spelling of `name` (matched without regard to case), or UNKNOWN_TIME_ZONE."""
    found = _zone_names_by_folded_name().get(name.strip().casefold()) if name else None
    if found is None:
        raise SchedulingError(
            ErrorCode.UNKNOWN_TIME_ZONE,
            N_("Unknown time zone \"{zone}\": use an IANA name such as Asia/Seoul."),
            field="tz",
            zone=name,
        )
    return found


def resolve_zone(name: str) -> ZoneInfo:
    """A ZoneInfo for an IANA name; raises SchedulingError(UNKNOWN_TIME_ZONE) otherwise."""
    return ZoneInfo(canonical_zone_name(name))


def ensure_aware(moment: datetime, what: str = "datetime") -> datetime:
    """`moment` in UTC; naive datetimes are a programming error, never guessed at."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


class WallTimeKind(Enum):
    REGULAR = "regular"
    AMBIGUOUS = "ambiguous"
    NONEXISTENT = "nonexistent"


def wall_datetime(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """The local wall-clock time `minute` minutes after midnight of `day` (1440 = next midnight)."""
    return datetime.combine(day, time(), tzinfo=zone) + timedelta(minutes=minute)


def classify_wall_time(local: datetime) -> WallTimeKind:
    """Whether a local wall-clock time happens once, twice or never in its zone.

    Per PEP 495, inside a gap fold=0 applies the offset from before the change and fold=1 the one
    after, so the fold=0 offset is the smaller; inside an overlap it is the larger.
    """
    before = local.replace(fold=0).utcoffset()
    after = local.replace(fold=1).utcoffset()
    assert before is not None and after is not None
    if before == after:
        return WallTimeKind.REGULAR
    return WallTimeKind.AMBIGUOUS if before > after else WallTimeKind.NONEXISTENT


def wall_time_exists(local: datetime) -> bool:
    return classify_wall_time(local) is not WallTimeKind.NONEXISTENT


def _offset_at(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _end_of_gap(local: datetime) -> datetime:
    """The instant the clock jumped over `local`, a wall time inside a spring-forward gap."""
    zone = local.tzinfo
    assert isinstance(zone, ZoneInfo)
    latest_before = local.replace(fold=1).astimezone(UTC)
    earliest_after = local.replace(fold=0).astimezone(UTC)
    offset_before = _offset_at(latest_before, zone)
    # Bisect to the second: tzdata transitions fall on whole seconds.
    low = int(latest_before.timestamp())
    high = int(earliest_after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(datetime.fromtimestamp(middle, UTC), zone) == offset_before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def wall_to_instant(local: datetime) -> datetime:
    """The UTC instant of a local wall time under the rule in the module docstring."""
    if classify_wall_time(local) is WallTimeKind.NONEXISTENT:
        return _end_of_gap(local)
    return local.replace(fold=0).astimezone(UTC)


def local_day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of `day` in `zone` (midnight, or the end of a gap that swallowed it)."""
    return wall_to_instant(wall_datetime(day, 0, zone))


def offset_label(offset: timedelta) -> str:
    """`+09:00`, `-11:00`, `+05:45` for a UTC offset."""
    total_minutes = int(offset.total_seconds() // 60)
    sign = "+" if total_minutes >= 0 else "-"
    hours, minutes = divmod(abs(total_minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"
