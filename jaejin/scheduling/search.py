"""Slot searches without a patient or an interpreter, answered from a per-process cache.

Such an answer is a function of: the practitioner and the institution, the institution's zone,
the practitioner's saved hours there (their availability row's version), the time the
practitioner already holds (their calendar version, raised by every booking, move and
cancellation in its own transaction: `store.bump_calendar`), the visit type and mode, the two
dates and the zone they are meant in, and the clock (slots already begun are left out).

So each search reads, in ONE statement through a connection that takes no lock
(`core.database.read_connection`: on SQLite it neither takes nor waits for the write lock),
where the practitioner may be searched by this caller with the versions of both (the caller's
institutions are part of the statement, so a cached answer is never served to someone who
may not see the practitioner), and serves the answer kept for those versions: bytes made once,
gzipped once. Every worker reads the versions from the database, so a booking made through
any worker is seen by all at once. A miss reads the busy time (and, the first time a process
meets new hours, the hours) and keeps the answer.

The clock: an answer computed at `now` stays true until the first grid slot at or after `now`
starts (before that instant no slot of the answer has begun, and no slot left out for having
begun can come back); after it, the answer is computed again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine

from jaejin.core.database import read_connection
from jaejin.scheduling import service, wire
from jaejin.scheduling.model import (
    Availability,
    Interval,
    VisitMode,
    VisitType,
    ensure_mode_offered,
    visit_type_by_code,
)
from jaejin.scheduling.place_watch import forget_places, read_places, watch_of
from jaejin.scheduling.slots import search_interval, validate_date_range
from jaejin.scheduling.store import SearchPlace, hours_of_version, practitioner_busy
from jaejin.scheduling.zones import resolve_zone

#: Answers kept per process; each holds references to shared day pieces and, once asked for,
#: its gzip form (tens of kilobytes for 60 days).
ANSWERS_LIMIT = 2048
#: Raised when what an answer is made of changes in code, so ETags of old answers never match.
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class SearchGrid:
    """What a search's slot grids are made from (`service.GridSource`), without ORM rows."""

    availability: Availability
    zone: ZoneInfo
    visit_type: VisitType
    mode: VisitMode
    hours_key: Hashable

    @property
    def grid_key(self) -> tuple[Hashable, str, str, str]:
        # The same key as `service.Schedule.grid_key`: bookings and searches share grids.
        return (self.hours_key, self.zone.key, self.visit_type.code, self.mode.value)


class Answer:
    """A search's answer: its pieces, its gzip form (made at the first request that accepts
    it, then kept), its ETag, and until when it is true."""

    __slots__ = ("_gzipped", "etag", "pieces", "size", "valid_until")

    def __init__(self, pieces: list[wire.Piece], valid_until: datetime | None, etag: str
                 ) -> None:
        self.pieces = pieces
        self.size = wire.size(pieces)
        self.valid_until = valid_until
        self.etag = etag
        self._gzipped: bytes | None = None

    @property
    def body(self) -> bytes:
        return wire.joined(self.pieces)

    @property
    def gzipped(self) -> bytes:
        # Two threads may make it at once: both make the same bytes.
        if self._gzipped is None:
            self._gzipped = wire.gzipped(self.pieces)
        return self._gzipped

    def true_at(self, now: datetime) -> bool:
        return self.valid_until is None or now <= self.valid_until


_answers: dict[tuple[Hashable, ...], Answer] = {}


def cached_free_slots(
    connection: Connection, *, institutions_seen: Iterable[int], practitioner_id: int,
    requested_institution: int | None, visit_type_code: str, mode: VisitMode,
    start_date: date, end_date: date, requested_zone: ZoneInfo, now: datetime,
) -> Answer:
    """The free slots of a practitioner the caller may see (at one of `institutions_seen`),
    as `service.free_slots_wire` finds them.

    Raises Problem 404 (no such practitioner where the caller may look), 422
    INSTITUTION_REQUIRED; SchedulingError for an unknown visit type, a mode not offered, or
    bad dates (in that order, as the uncached search).
    """
    visible = _visible(institutions_seen, requested_institution)
    search = _Search(practitioner_id, visit_type_code, mode, start_date, end_date,
                     requested_zone, now)
    places = read_places(connection, [practitioner_id])[practitioner_id]
    key, place = search.key_at([place for place in places if place.institution_id in visible])
    return _answers_get(key, now) or _keep(key, _computed(connection, key, place, search))


def answer_from_memory(
    engine: Engine, *, institutions_seen: Iterable[int], practitioner_id: int,
    requested_institution: int | None, visit_type_code: str, mode: VisitMode,
    start_date: date, end_date: date, requested_zone: ZoneInfo, now: datetime,
) -> Answer | None:
    """`cached_free_slots` answered without any I/O (so it may run on the event loop), or
    None when that needs the database: the practitioner's places are not trusted in memory
    (`jaejin.scheduling.place_watch`: changes through this process are seen at once, through
    others within `place_watch.TRUST_SECONDS`), or the answer is not kept. Raises as
    `cached_free_slots`."""
    places = watch_of(engine).trusted(practitioner_id)
    if places is None:
        return None
    search = _Search(practitioner_id, visit_type_code, mode, start_date, end_date,
                     requested_zone, now)
    visible = _visible(institutions_seen, requested_institution)
    key, _place = search.key_at([place for place in places if place.institution_id in visible])
    return _answers_get(key, now)


def free_slots_answer(
    engine: Engine, *, institutions_seen: Iterable[int], practitioner_id: int,
    requested_institution: int | None, visit_type_code: str, mode: VisitMode,
    start_date: date, end_date: date, requested_zone: ZoneInfo, now: datetime,
) -> Answer:
    """`cached_free_slots` with the places kept in memory (`answer_from_memory`): no statement
    when they are trusted and the answer kept; else they are read (and kept), and a connection
    is taken only to compute a missing answer."""
    watch = watch_of(engine)
    places = watch.trusted(practitioner_id)
    if places is None:
        places = watch.read(practitioner_id)
    search = _Search(practitioner_id, visit_type_code, mode, start_date, end_date,
                     requested_zone, now)
    visible = _visible(institutions_seen, requested_institution)
    key, place = search.key_at([place for place in places if place.institution_id in visible])
    found = _answers_get(key, now)
    if found is not None:
        return found
    with read_connection(engine) as connection:
        return _keep(key, _computed(connection, key, place, search))


def _visible(institutions_seen: Iterable[int], requested_institution: int | None) -> set[int]:
    visible = set(institutions_seen)
    if requested_institution is not None:
        visible &= {requested_institution}
    return visible


@dataclass(frozen=True, slots=True)
class _Search:
    """What was asked, before the practitioner's place is known."""

    practitioner_id: int
    visit_type_code: str
    mode: VisitMode
    start_date: date
    end_date: date
    requested_zone: ZoneInfo
    now: datetime

    def key_at(self, places: Sequence[SearchPlace]) -> tuple[tuple[Hashable, ...], SearchPlace]:
        """The answer's key at the one place meant, after the checks the uncached search
        makes (in its order)."""
        place = service.the_one_place(places)
        visit_type = visit_type_by_code(self.visit_type_code)
        ensure_mode_offered(visit_type, self.mode)
        validate_date_range(self.start_date, self.end_date)
        return (self.practitioner_id, place.institution_id, place.time_zone, place.hours,
                place.calendar, visit_type.code, self.mode.value, self.start_date,
                self.end_date, self.requested_zone.key), place


def _answers_get(key: tuple[Hashable, ...], now: datetime) -> Answer | None:
    answer = _answers.get(key)
    return answer if answer is not None and answer.true_at(now) else None


def _keep(key: tuple[Hashable, ...], answer: Answer) -> Answer:
    if len(_answers) >= ANSWERS_LIMIT:
        _answers.clear()
    _answers[key] = answer
    return answer


def _computed(connection: Connection, key: tuple[Hashable, ...], place: SearchPlace,
              search: _Search) -> Answer:
    hours_key, availability = hours_of_version(connection, place.hours)
    visit_type = visit_type_by_code(search.visit_type_code)
    grid = SearchGrid(availability, resolve_zone(place.time_zone), visit_type, search.mode,
                      hours_key)
    requested = search_interval(search.start_date, search.end_date, search.requested_zone)
    pieces = wire.json_array([])
    valid_until: datetime | None = None
    if requested is not None:  # else every day asked for was skipped by the zone
        busy = practitioner_busy(connection, search.practitioner_id, requested.start,
                                 requested.end + visit_type.step)
        pieces = service.free_slot_pieces(grid, requested, search.requested_zone,
                                          now=search.now, busy=busy)
        valid_until = first_start_from(grid, requested, max(requested.start, search.now))
    tag = hashlib.blake2b(repr((_FORMAT, key, valid_until)).encode(), digest_size=12)
    return Answer(pieces, valid_until, f'W/"{tag.hexdigest()}"')


def first_start_from(grid: SearchGrid, requested: Interval, earliest: datetime
                     ) -> datetime | None:
    """The first grid slot starting at or after `earliest` and inside `requested` (taken or
    not); None when there is none."""
    day = earliest.astimezone(grid.zone).date()
    last = (requested.end - timedelta(microseconds=1)).astimezone(grid.zone).date()
    found: datetime | None = None
    while day <= last:
        for slot in service.grid_on(grid, day):
            if earliest <= slot.start < requested.end and (found is None or slot.start < found):
                found = slot.start
        if found is not None:
            # A later day starts later, except across a clock change: look one day further.
            following = [slot.start for slot in service.grid_on(grid, day + timedelta(days=1))
                         if earliest <= slot.start < requested.end]
            return min([found, *following])
        day += timedelta(days=1)
    return found


def forget_answers() -> None:
    """Drop every cached answer and kept place (tests)."""
    _answers.clear()
    forget_places()
