"""Where practitioners are searched, kept in memory per process so that a cached slot search
sends no statement at all (`jaejin.scheduling.search.answer_from_memory`).

A cached search needs, for the practitioner: each institution where they have an active role,
its zone, the version of their hours there and their calendar version (`SearchPlace`). Reading
them costs a connection and a statement per search (about two thirds of a cached search's
CPU, and the database's share on top). Here they are read for all practitioners searched
lately in ONE statement every `REFRESH_SECONDS` by a thread per engine, and trusted for at most
`TRUST_SECONDS` after that read began:

- **Changes made through this process** are seen by the next search at once (read-your-writes:
  a client that booked and then searches through the same worker never sees its slot free).
  Every statement that writes one of the tables the places come from is noticed as it runs
  (the engine's `after_cursor_execute`): the practitioner named by a calendar key in its
  parameters (or, for hours, roles and zones, every practitioner) is dropped and not trusted
  again until the connection that wrote it is back in the pool, i.e. its transaction has
  committed or rolled back; reads begun before that are not kept.
- **Changes made through another process** (another worker, `jaejin worker`, a script) are
  seen within `TRUST_SECONDS`: an entry older than that is not served, whatever the thread does.
  That is the window in which another worker's booking may still be offered here; a booking
  of it is then refused 409 SLOT_TAKEN (with the next free slots), as a race always was.

LISTEN/NOTIFY would shorten that window, but a transaction that notifies takes a lock held
through its commit, so notifying bookings commit one at a time (16 writers on this machine's
PostgreSQL: 1,900-2,500 commits/s plain, 500-990 with a NOTIFY each).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Engine,
    String,
    and_,
    any_,
    bindparam,
    cast,
    event,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.types import NullType

from jaejin.core.database import read_connection
from jaejin.directory.store import Institution, PractitionerRole
from jaejin.scheduling.store import (
    AvailabilityRow,
    CalendarVersion,
    OwnerKind,
    ResourceKind,
    SearchPlace,
)

log = logging.getLogger(__name__)

#: The longest a change made through another process can go unseen by this one's searches.
TRUST_SECONDS = 0.1
#: How often the places of practitioners searched lately are read again (one statement for
#: all: about 0.8 ms of this process's CPU for 50 practitioners).
REFRESH_SECONDS = 0.05
#: A practitioner not searched for this long is no longer read again (nor kept): one searched
#: rarely costs a read per search, as without this module, not a read per refresh.
IDLE_SECONDS = 1.0
#: At most this many practitioners are watched (ids beyond are read at each search).
WATCHED_LIMIT = 4096

#: The name of the threads that read places again (a statement count of one request may
#: leave out what they send meanwhile).
THREAD_NAME = "jaejin-place-watch"

#: Tables the places are read from: a write to one of them may change a search's answer.
_CALENDARS = CalendarVersion.__tablename__
_OTHER_SOURCES = (AvailabilityRow.__tablename__, PractitionerRole.__tablename__,
                  Institution.__tablename__)
_PRACTITIONER_KEY = f"{ResourceKind.PRACTITIONER.value}:"
#: Said of a write whose practitioners are not known: every practitioner.
EVERYONE = -1
#: Where a connection keeps, until it is back in the pool, what its transaction wrote.
_WRITTEN = "jaejin_places_written"

def _places_statement(dialect_name: str) -> Any:
    """Every active place of the practitioners in the bound list `ids` (on PostgreSQL an
    integer array, elsewhere a JSON array): one statement whatever their number, built once."""
    if dialect_name == "postgresql":
        wanted = PractitionerRole.practitioner_id == any_(cast(bindparam("ids"),
                                                               ARRAY(BigInteger)))
    else:
        wanted = PractitionerRole.practitioner_id.in_(
            select(literal_column("value")).select_from(func.json_each(bindparam("ids"))))
    return (
        # `updated_at` as the driver returns it (`store.SearchPlace.hours`: a version token,
        # only compared), so the same hours always give the same key and ETag.
        select(PractitionerRole.practitioner_id, PractitionerRole.institution_id,
               Institution.time_zone, AvailabilityRow.id,
               type_coerce(AvailabilityRow.updated_at, NullType()), CalendarVersion.version)
        .select_from(PractitionerRole)
        .join(Institution, Institution.id == PractitionerRole.institution_id)
        .outerjoin(AvailabilityRow, and_(
            AvailabilityRow.owner_kind == OwnerKind.PRACTITIONER.value,
            AvailabilityRow.owner_id == PractitionerRole.practitioner_id,
            AvailabilityRow.institution_id == PractitionerRole.institution_id))
        .outerjoin(CalendarVersion, CalendarVersion.resource_key
                   == literal(_PRACTITIONER_KEY) + cast(PractitionerRole.practitioner_id, String))
        .where(wanted, PractitionerRole.active)
        .order_by(PractitionerRole.practitioner_id, PractitionerRole.institution_id)
    )


@dataclass(frozen=True, slots=True)
class _DriverForm:
    """`_places_statement` compiled once for a dialect and sent as the driver's SQL (the
    engine's events still see it), skipping SQLAlchemy's per-call compiling and result work."""

    sql: str
    #: Parameter names in order for a positional paramstyle (SQLite's qmark); None: by name.
    order: tuple[str, ...] | None
    constants: dict[str, Any]
    ids_as_json: bool

    @classmethod
    def of(cls, dialect: Any) -> _DriverForm:
        compiled = _places_statement(dialect.name).compile(dialect=dialect)
        return cls(compiled.string,
                   tuple(compiled.positiontup) if compiled.positiontup else None,
                   {name: value for name, value in compiled.params.items() if value is not None},
                   dialect.name != "postgresql")

    def parameters(self, practitioner_ids: list[int]) -> Any:
        values = {**self.constants,
                  "ids": orjson.dumps(practitioner_ids).decode() if self.ids_as_json
                  else practitioner_ids}
        return values if self.order is None else tuple(values[name] for name in self.order)


_forms: dict[str, _DriverForm] = {}
_SMALLEST_ID, _LARGEST_ID = -(2**63), 2**63 - 1


def read_places(connection: Connection, practitioner_ids: list[int]
                ) -> dict[int, tuple[SearchPlace, ...]]:
    """Each practitioner's active places, by institution id, in one statement."""
    form = _forms.get(connection.dialect.name)
    if form is None:
        form = _forms[connection.dialect.name] = _DriverForm.of(connection.dialect)
    found: dict[int, dict[int, SearchPlace]] = {identifier: {}
                                                 for identifier in practitioner_ids}
    # An id no database integer can hold names nobody (and no driver would send it).
    possible = [identifier for identifier in practitioner_ids
                if _SMALLEST_ID <= identifier <= _LARGEST_ID]
    rows = connection.exec_driver_sql(form.sql, form.parameters(possible)).all() if possible \
        else []
    for practitioner_id, institution_id, zone, hours_id, updated_at, calendar in rows:
        found[practitioner_id].setdefault(institution_id, SearchPlace(
            institution_id, zone, (hours_id, updated_at) if hours_id is not None else None,
            calendar or 0))
    return {identifier: tuple(by_institution.values())
            for identifier, by_institution in found.items()}


def practitioners_written(statement: str, parameters: Any) -> set[int] | None:
    """The practitioners whose places a statement may change: None when it writes none of
    the places' tables, {EVERYONE} when it cannot say whose."""
    if statement[:16].lstrip()[:6].upper() == "SELECT":
        return None
    if _CALENDARS in statement:
        named = {int(value[len(_PRACTITIONER_KEY):])
                 for value in _parameter_values(parameters)
                 if isinstance(value, str) and value.startswith(_PRACTITIONER_KEY)
                 and value[len(_PRACTITIONER_KEY):].isascii()
                 and value[len(_PRACTITIONER_KEY):].isdigit()}
        return named or {EVERYONE}
    if any(table in statement for table in _OTHER_SOURCES):
        return {EVERYONE}
    return None


def _parameter_values(parameters: Any) -> Iterable[Any]:
    if isinstance(parameters, Mapping):
        yield from parameters.values()
    elif isinstance(parameters, Sequence) and not isinstance(parameters, str | bytes):
        for item in parameters:
            if isinstance(item, Mapping | Sequence) and not isinstance(item, str | bytes):
                yield from _parameter_values(item)
            else:
                yield item


@dataclass(frozen=True, slots=True)
class _Entry:
    places: tuple[SearchPlace, ...]
    #: `time.monotonic()` when the read began: trusted until `read_at + TRUST_SECONDS`.
    read_at: float


@dataclass(frozen=True, slots=True)
class _Mark:
    """What had been written when a read began: its rows are kept only if nothing more was."""

    changes: dict[int, int]
    everyone: int


class PlaceWatch:
    """The places of one engine's practitioners, kept as described in the module's text."""

    def __init__(self, engine: Engine) -> None:
        # Weakly: the watch is the value of a WeakKeyDictionary keyed by the engine.
        self._engine = weakref.ref(engine)
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._asked: dict[int, float] = {}
        # Writes seen (per practitioner, and to everyone's), and those not yet ended.
        self._changes: Counter[int] = Counter()
        self._unsettled: Counter[int] = Counter()
        self._thread: threading.Thread | None = None
        #: Reads by the thread so far (tests wait on it).
        self.refreshes = 0
        event.listen(engine, "after_cursor_execute", self._statement_ran)
        event.listen(engine.pool, "checkin", self._connection_returned)
        event.listen(engine, "engine_disposed", self._engine_disposed)

    # -- searches ---------------------------------------------------------------------------

    def trusted(self, practitioner_id: int) -> tuple[SearchPlace, ...] | None:
        """The practitioner's places if read less than TRUST_SECONDS ago and not written by
        this process since; None: read them (`read`)."""
        now = time.monotonic()
        if practitioner_id in self._asked or len(self._asked) < WATCHED_LIMIT:
            self._asked[practitioner_id] = now
        entry = self._entries.get(practitioner_id)
        if entry is None or now - entry.read_at > TRUST_SECONDS:
            self._keep_reading()
            return None
        return entry.places

    def read(self, practitioner_id: int) -> tuple[SearchPlace, ...]:
        """The practitioner's places, read now (and kept when nothing was written meanwhile)."""
        return self._read([practitioner_id]).get(practitioner_id, ())

    # -- reading ----------------------------------------------------------------------------

    def _read(self, practitioner_ids: list[int]) -> dict[int, tuple[SearchPlace, ...]]:
        with self._lock:
            mark = _Mark({identifier: self._changes[identifier]
                          for identifier in practitioner_ids}, self._changes[EVERYONE])
        began = time.monotonic()
        engine = self._engine()
        if engine is None:
            return {}
        with read_connection(engine) as connection:
            places = read_places(connection, practitioner_ids)
        with self._lock:
            if self._changes[EVERYONE] != mark.everyone or self._unsettled[EVERYONE]:
                return places
            for identifier, kept in places.items():
                if (self._changes[identifier] == mark.changes[identifier]
                        and not self._unsettled[identifier]):
                    self._entries[identifier] = _Entry(kept, began)
        return places

    def _keep_reading(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._refresh, daemon=True,
                                                    name=THREAD_NAME)
                    self._thread.start()

    def _refresh(self) -> None:
        try:
            while self._refreshed():
                pass
        finally:
            # However it ends, a later search may start another.
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _refreshed(self) -> bool:
        """Wait, then read again the places of practitioners asked for lately; False when
        there are none."""
        time.sleep(REFRESH_SECONDS)
        if self._engine() is None:
            return False  # nothing left to read from (`_read` would answer nothing)
        now = time.monotonic()
        with self._lock:
            # Searches add to `_asked` without the lock: copied in one C call (the GIL held
            # throughout), never iterated while they may add to it.
            asked = list(self._asked.items())
            for identifier, at in asked:
                if now - at > IDLE_SECONDS:
                    self._asked.pop(identifier, None)
                    self._entries.pop(identifier, None)
            wanted = sorted(identifier for identifier, at in asked if now - at <= IDLE_SECONDS)
            if not wanted:
                return False
        try:
            self._read(wanted)
        except Exception:  # a lost connection, a restarting server: entries just expire
            log.warning("re-reading the places of %d practitioners failed", len(wanted),
                        exc_info=True)
        self.refreshes += 1
        return True

    # -- writes through this process -------------------------------------------------------

    def _statement_ran(self, connection: Any, _cursor: Any, statement: str, parameters: Any,
                       _context: Any, _executemany: bool) -> None:
        written = practitioners_written(statement, parameters)
        if written is None:
            return
        connection.info.setdefault(_WRITTEN, []).append(written)
        self._written(written, +1)

    def _connection_returned(self, _dbapi_connection: Any, record: Any) -> None:
        # Back in the pool: whatever its transaction wrote is committed or rolled back.
        for written in record.info.pop(_WRITTEN, ()):
            self._written(written, -1)

    def _written(self, practitioners: set[int], unsettled: int) -> None:
        with self._lock:
            for identifier in practitioners:
                self._changes[identifier] += 1
                self._unsettled[identifier] += unsettled
                if identifier == EVERYONE:
                    self._entries.clear()
                else:
                    self._entries.pop(identifier, None)

    def _engine_disposed(self, _engine: Engine) -> None:
        # Its owner closed its connections: reading again would open new ones behind its back
        # (and, in tests sharing an engine, send statements during the next test). A later
        # search starts reading again.
        self.forget()

    def forget(self) -> None:
        """Drop every entry and stop reading again (the thread ends at its next wake)."""
        with self._lock:
            self._entries.clear()
            self._asked.clear()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


_watches: weakref.WeakKeyDictionary[Engine, PlaceWatch] = weakref.WeakKeyDictionary()
_watches_lock = threading.Lock()


def watch_of(engine: Engine) -> PlaceWatch:
    """The engine's watch, made (and its listeners installed) the first time."""
    found = _watches.get(engine)
    if found is None:
        with _watches_lock:
            found = _watches.get(engine)
            if found is None:
                found = _watches[engine] = PlaceWatch(engine)
    return found


def forget_places() -> None:
    """Drop every kept place (tests)."""
    for watch in list(_watches.values()):
        watch.forget()
