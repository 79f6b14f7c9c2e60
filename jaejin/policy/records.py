"""The policy engine fed from Jaejin's own records: the bridge booking and visits call.

    from jaejin.policy.records import decide_for_visit
    decision = decide_for_visit(db, patient=patient, institution=institution, at=starts_at,
                                mode="video", condition="I10", lang=principal.language)
    if decision.decision is DecisionKind.DENIED:
        raise policy_denied_problem(decision)   # 422 POLICY_DENIED, reasons and alternatives

The engine itself (`jaejin.policy.engine`) is pure; this module reads the database (encounters,
patient flags, consents, the institution's 30-day telemedicine share), builds the same
`EvaluationRequest` an outside system would send to `POST /api/v1/policy/evaluate`, and
evaluates it with the packs loaded at start-up. Reading patient records is the caller's to
audit (the caller knows the purpose and the principal).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from pydantic import ValidationError
from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Engine,
    Index,
    Integer,
    Select,
    String,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from jaejin.core.config import get_settings
from jaejin.core.database import utcnow
from jaejin.core.errors import FieldError, Problem, field_errors_from_pydantic
from jaejin.core.i18n import N_
from jaejin.directory.store import Consent, Encounter, Institution, Patient
from jaejin.policy.decision import Decision, PrescriptionVerdict
from jaejin.policy.engine import evaluate
from jaejin.policy.errors import RequestError
from jaejin.policy.korean_time import KST
from jaejin.policy.packs import (
    DEFAULT_DATA_DIRECTORY,
    PackRegistry,
    default_registry,
    korean_date,
    load_packs,
)
from jaejin.policy.request import EvaluationRequest, parse_request
from jaejin.policy.vocabulary import DecisionKind, Effect, PatientFlag

#: The window of the share cap: telemedicine share of an institution's encounters.
SHARE_WINDOW = timedelta(days=30)
#: Encounter modes (`jaejin.directory.model.EncounterMode`) that are telemedicine.
TELEMEDICINE_MODES = ("video", "audio", "chat")
#: Encounter mode -> the request's history mode. Text chat has no counterpart in the request
#: vocabulary and the rules only ever look at in-person encounters, so chat is left out.
HISTORY_MODES = {"in_person": "in_person", "video": "video", "audio": "phone"}
#: The request accepts at most this many history entries; the newest in-person ones decide.
MAX_HISTORY = 500
#: Consents that make `consent_recorded` true: the Act's telemedicine-limits explanation for a
#: patient in Korea; PIPA arts 23 and 28-8 (sensitive data, transfer abroad) for one abroad,
#: which is what the overseas pack's consent parameter names.
DOMESTIC_CONSENTS = ("telemedicine_limits",)
ABROAD_CONSENTS = ("pipa_sensitive", "cross_border_transfer")

#: Serves the share count from the index alone: the institution's window is one range scan.
#: Created by migration `policy_0001` (branch "policy"); declared here so the metadata knows it.
SHARE_INDEX = Index(
    "ix_encounters_institution_started_mode",
    Encounter.institution_id, Encounter.started_at, Encounter.mode,
)


@lru_cache(maxsize=1)
def policy_registry() -> PackRegistry:
    """The packs the product decides with, loaded once per process.

    `JAEJIN_POLICY_PACKS_DIRECTORY` replaces the shipped packs (the data lists stay the shipped
    ones). Raises PackError when a pack is malformed: `jaejin.policy.api` calls this at import,
    so the service refuses to start rather than decide on partial rules.
    """
    directory = get_settings().policy_packs_directory
    if directory is None:
        return default_registry()
    return load_packs(directory, DEFAULT_DATA_DIRECTORY)


# -- the institution's share -------------------------------------------------------------------


def _counts_columns() -> tuple[Any, Any]:
    return (func.count(Encounter.id).label("total"),
            func.sum(case((Encounter.mode.in_(TELEMEDICINE_MODES), 1), else_=0)).label("remote"))


def _window(institution_id: int, at: datetime) -> tuple[Any, ...]:
    return (Encounter.institution_id == institution_id,
            Encounter.started_at >= at - SHARE_WINDOW,
            Encounter.started_at < at)


def telemedicine_counts(db: Session, institution_id: int, at: datetime) -> tuple[int, int]:
    """(all encounters, telemedicine encounters) of the institution in the 30 days before `at`.

    `Encounter.started_at` in [at - 30 days, at); video, audio and chat are telemedicine.
    Always exact (no cache).
    """
    _require_aware(at, "at")
    total, remote = db.execute(select(*_counts_columns()).where(*_window(institution_id, at))).one()
    return int(total or 0), int(remote or 0)


def telemedicine_share(db: Session, institution_id: int, at: datetime) -> float:
    """Telemedicine encounters / all encounters of the institution in the 30 days before `at`.

    An institution with no encounters in the window has share 0.
    """
    total, remote = telemedicine_counts(db, institution_id, at)
    return remote / total if total else 0.0


#: A cached share is used only this far (0.02 = 2 percentage points) below the pack's cap.
SHARE_SAFETY_MARGIN = 0.02
#: Below this many encounters in the window the exact count is cheap (a few hundred index
#: entries) and a handful of new encounters could cross the margin: always count exactly.
SHARE_CACHE_MINIMUM_ENCOUNTERS = 500


def cached_counts_usable(total: int, remote: int, cap: float | None, *,
                         margin: float = SHARE_SAFETY_MARGIN,
                         minimum: int = SHARE_CACHE_MINIMUM_ENCOUNTERS) -> bool:
    """May counts taken a moment ago stand in for an exact count against `cap`?

    Only when their share is at least `margin` below the cap (and the window holds at least
    `minimum` encounters). Then the cached decision equals the exact one as long as at most
    `margin * total` encounters entered or left the window since (added, deleted, moved in or
    out of the 30 days, or an edited mode counted twice): even if every change pushed the share
    up, (remote + a) / (total + a - b) stays at or below the cap when a + b <= margin * total.
    With no cap in force the share decides nothing. Exact rational arithmetic, so a share that
    is exactly `cap - margin` behaves the same on every platform.
    """
    if total < minimum:
        return False
    if cap is None:
        return True
    return Fraction(remote) <= (Fraction(cap) - Fraction(margin)) * total


@lru_cache(maxsize=4096)
def _counts_usable(total: int, remote: int, cap: float | None, margin: float,
                   minimum: int) -> bool:
    """`cached_counts_usable`, remembered: every booking asks it again about the same counts
    until they are taken anew, and its exact fractions cost more than the rest of the look-up."""
    return cached_counts_usable(total, remote, cap, margin=margin, minimum=minimum)


@dataclass(frozen=True, slots=True)
class _CachedCounts:
    total: int
    remote: int
    taken: float


class ShareCache:
    """Institutions' 30-day counts, per process, for `seconds` (JAEJIN_POLICY_SHARE_CACHE_SECONDS).

    A booking counts the institution's encounters of the last 30 days; at thousands of
    encounters that count is most of a booking's database time, and it moves slowly (encounters
    are recorded when visits end, not when they are booked). `decide_for_visit` therefore reuses
    counts at most `seconds` old, but only where `cached_counts_usable` says no decision can
    change; anything near or above the cap, and every decision replayed for a past moment, is
    counted exactly. 0 seconds turns the cache off.
    """

    def __init__(self, seconds: float | None = None, *, margin: float = SHARE_SAFETY_MARGIN,
                 minimum: int = SHARE_CACHE_MINIMUM_ENCOUNTERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self.margin = margin
        self.minimum = minimum
        self._clock = clock
        self._entries: dict[tuple[str, int], _CachedCounts] = {}

    @property
    def seconds(self) -> float:
        if self._seconds is None:
            return get_settings().policy_share_cache_seconds
        return self._seconds

    @seconds.setter
    def seconds(self, value: float | None) -> None:
        """A lifetime of this cache's own; None: the setting's."""
        self._seconds = value

    def counts(self, key: tuple[str, int], cap: float | None) -> tuple[int, int] | None:
        """The cached (total, remote) when fresh and safely below `cap`, else None."""
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry.taken > self.seconds:
            return None
        if not _counts_usable(entry.total, entry.remote, cap, self.margin, self.minimum):
            return None
        return entry.total, entry.remote

    def usable(self, scope: str, cap: float | None) -> list[int]:
        """The institutions (of the database `scope`) whose `counts` are usable against `cap`."""
        return [institution for key, institution in list(self._entries)
                if key == scope and self.counts((key, institution), cap) is not None]

    def store(self, key: tuple[str, int], total: int, remote: int) -> None:
        if self.seconds > 0 and total >= self.minimum:
            self._entries[key] = _CachedCounts(total, remote, self._clock())
        else:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


#: The process's cache, used by `decide_for_visit`.
SHARE_CACHE = ShareCache()


@dataclass(frozen=True, slots=True)
class DayShare:
    """One Korean calendar day: that day's encounters, and the 30-day share at its end."""

    day: date
    encounters: int
    telemedicine: int
    rolling_share: float


def daily_shares(db: Session, institution_id: int, *, days: int, until: datetime) -> list[DayShare]:
    """The last `days` Korean calendar days up to `until`, oldest first, for trend charts.

    `rolling_share` is the share over the 30 days ending at the end of that day (the cap's
    window), or at `until` for the current day.
    """
    _require_aware(until, "until")
    last_day = until.astimezone(KST).date()
    first_day = last_day - timedelta(days=days - 1)
    rows = db.execute(
        select(Encounter.started_at, Encounter.mode).where(
            Encounter.institution_id == institution_id,
            Encounter.started_at >= _kst_midnight(first_day) - SHARE_WINDOW,
            Encounter.started_at < until,
        )
    ).all()
    ordered = sorted(
        (started.astimezone(UTC), mode in TELEMEDICINE_MODES) for started, mode in rows
    )
    moments = [moment for moment, _remote in ordered]
    # remote_before[i]: telemedicine encounters among the first i, so any window is two look-ups.
    remote_before = [0]
    for _moment, remote in ordered:
        remote_before.append(remote_before[-1] + remote)

    def counts(start: datetime, end: datetime) -> tuple[int, int]:
        low, high = bisect_left(moments, start), bisect_left(moments, end)
        return high - low, remote_before[high] - remote_before[low]

    result: list[DayShare] = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        day_end = min(_kst_midnight(day + timedelta(days=1)), until)
        encounters, telemedicine = counts(_kst_midnight(day), day_end)
        window_total, window_remote = counts(day_end - SHARE_WINDOW, day_end)
        result.append(
            DayShare(
                day=day,
                encounters=encounters,
                telemedicine=telemedicine,
                rolling_share=window_remote / window_total if window_total else 0.0,
            )
        )
    return result


def _kst_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=KST).astimezone(UTC)


# -- one proposed visit ------------------------------------------------------------------------


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (UTC inside, zoneinfo at the edge)")


def _history_entries(
    rows: Iterable[tuple[datetime, str, str, list[str] | None]],
) -> list[dict[str, Any]]:
    """History entries from the patient's encounters at the institution, newest first."""
    in_person: list[dict[str, Any]] = []
    remote: list[dict[str, Any]] = []
    for started_at, mode, kind, conditions in rows:
        history_mode = HISTORY_MODES.get(mode)
        if history_mode is None:
            continue
        day = started_at.astimezone(KST).date().isoformat()
        target = in_person if history_mode == "in_person" else remote
        base: dict[str, Any] = {
            "date": day, "mode": history_mode, "kind": kind, "same_institution": True,
        }
        # One entry per diagnosis (the rules compare conditions one by one); none: no diagnosis.
        if conditions:
            target.extend({**base, "condition": code} for code in conditions)
        else:
            target.append(base)
    # Newest first within each group: past the request's limit, the oldest remote contacts go
    # first (the rules never read them), then the oldest in-person ones.
    kept = (in_person + remote)[:MAX_HISTORY]
    return sorted(kept, key=lambda entry: entry["date"])


# What each row of `_records` is: the parts of one UNION ALL.
_HISTORY_ROW, _CONSENT_ROW, _COUNTS_ROW = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Records:
    history: list[dict[str, Any]]
    consents: frozenset[str]
    counts: tuple[int, int] | None


def _records_statement(consent_kinds: tuple[str, ...], with_counts: bool) -> Any:
    """The statement of `_records` for one choice of parts, with bound parameters only: built
    and compiled once per process (a booking sends it without building any SQL)."""
    def row_kind(kind: int) -> Any:
        return literal_column(str(kind), Integer).label("part")

    at = bindparam("at", type_=Encounter.started_at.type)
    parts: list[Select[Any]] = [
        select(
            row_kind(_HISTORY_ROW), Encounter.started_at, Encounter.mode, Encounter.kind,
            Encounter.conditions, cast(null(), Integer).label("total"),
            cast(null(), Integer).label("remote"),
        ).where(
            Encounter.patient_id == bindparam("patient_id"),
            # Only this institution's records: another institution's encounters with the same
            # person are not this institution's to see, and the rules ask about "same institution".
            # `+ 0` keeps SQLite (no statistics unless ANALYZE was run) from reading the patient's
            # history through the share index, i.e. the whole institution's past: with an
            # equality and a range on both indexes it would take the newer one.
            Encounter.institution_id + 0 == bindparam("institution_id"),
            Encounter.started_at <= at,
        )
    ]
    if consent_kinds:
        parts.append(
            select(
                row_kind(_CONSENT_ROW), null(), Consent.kind, null(), cast(null(), JSON),
                null(), null(),
            ).where(
                Consent.patient_id == bindparam("patient_id"),
                Consent.institution_id == bindparam("institution_id"),
                Consent.kind.in_(consent_kinds),
                Consent.granted_at <= at,
                (Consent.withdrawn_at.is_(None)) | (Consent.withdrawn_at > at),
            )
        )
    if with_counts:
        share_at = bindparam("share_at", type_=Encounter.started_at.type)
        parts.append(
            select(row_kind(_COUNTS_ROW), null(), null(), null(), cast(null(), JSON),
                   *_counts_columns())
            .where(Encounter.institution_id == bindparam("institution_id"),
                   Encounter.started_at >= bindparam("share_from",
                                                     type_=Encounter.started_at.type),
                   Encounter.started_at < share_at)
        )
    return parts[0] if len(parts) == 1 else parts[0].union_all(*parts[1:])


@lru_cache(maxsize=16)
def _records_statement_for(consent_kinds: tuple[str, ...], with_counts: bool) -> Any:
    return _records_statement(consent_kinds, with_counts)


def _records(db: Session, patient: Patient, institution: Institution, at: datetime, *,
             consent_kinds: Sequence[str], share_at: datetime | None) -> _Records:
    """Everything a decision reads from the database, in ONE statement (UNION ALL):

    the patient's encounters at this institution up to `at` (history), the patient's consents
    of `consent_kinds` active at `at` (none asked: no part), and, when `share_at` is given, the
    institution's (all, telemedicine) encounters in the 30 days before it. Patient facts come
    from the Patient row the caller already holds. Each part keeps its own index
    (patient/started, patient/kind, institution/started/mode). Sent through the session's
    connection: plain rows, no ORM work."""
    statement = _records_statement_for(tuple(consent_kinds), share_at is not None)
    parameters: dict[str, Any] = {"patient_id": patient.id, "institution_id": institution.id,
                                  "at": at}
    if share_at is not None:
        parameters["share_from"] = share_at - SHARE_WINDOW
        parameters["share_at"] = share_at
    encounters: list[tuple[datetime, str, str, list[str] | None]] = []
    consents: set[str] = set()
    counts: tuple[int, int] | None = None
    for part, started_at, mode, kind, conditions, total, remote in db.connection().execute(
            statement, parameters):
        if part == _HISTORY_ROW:
            encounters.append((started_at, mode, kind, conditions))
        elif part == _CONSENT_ROW:
            consents.add(mode)
        else:
            counts = int(total or 0), int(remote or 0)
    encounters.sort(key=lambda row: row[0], reverse=True)
    return _Records(_history_entries(encounters), frozenset(consents), counts)


# -- the records read by the caller's own statement -------------------------------------------
#
# A booking reads the patient, the institution and the practitioner in one statement; the
# records a decision needs ride along in it as three more columns (`visit_records_columns`),
# so a video booking sends one read instead of two. `decide_for_visit(records=...)` then judges
# exactly as if it had read them itself.


class _JsonArray(FunctionElement[Any]):
    """A JSON array of the values given (one row's)."""

    type = JSON()
    inherit_cache = True


class _JsonAggregate(FunctionElement[Any]):
    """A JSON array of one value per row (NULL or [] for no rows, depending on the database)."""

    type = JSON()
    inherit_cache = True


class _InJsonList(ColumnElement[bool]):
    """`column` is one of the integers of a JSON array bound as `parameter` (a fixed
    statement, whatever the list's length)."""

    type = Boolean()
    inherit_cache = True
    # What the statement cache keys on: without it every statement holding one is compiled
    # again on every execution.
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy declares it a list)
        ("column", InternalTraversal.dp_clauseelement),
        ("parameter", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[int] | InstrumentedAttribute[int],
                 parameter: str) -> None:
        self.column = (column.__clause_element__() if isinstance(column, InstrumentedAttribute)
                       else column)
        self.parameter = bindparam(parameter, type_=String())


@compiles(_JsonArray, "postgresql")
def _json_array_postgresql(element: _JsonArray, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_build_array({compiler.process(element.clauses, **kw)})"


@compiles(_JsonArray)
def _json_array_sqlite(element: _JsonArray, compiler: SQLCompiler, **kw: Any) -> str:
    # JSON held as text is embedded as JSON, not as a string.
    values = [f"json({compiler.process(clause, **kw)})" if isinstance(clause.type, JSON)
              else compiler.process(clause, **kw) for clause in element.clauses]
    return f"json_array({', '.join(values)})"


@compiles(_JsonAggregate, "postgresql")
def _json_aggregate_postgresql(element: _JsonAggregate, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_agg({compiler.process(element.clauses, **kw)})"


@compiles(_JsonAggregate)
def _json_aggregate_sqlite(element: _JsonAggregate, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


@compiles(_InJsonList, "postgresql")
def _in_json_list_postgresql(element: _InJsonList, compiler: SQLCompiler, **kw: Any) -> str:
    column, parameter = (compiler.process(part, **kw) for part in (element.column,
                                                                     element.parameter))
    return (f"{column} IN (SELECT CAST(value AS INTEGER) "  # noqa: S608 (compiled clauses)
            f"FROM json_array_elements_text(CAST({parameter} AS JSON)))")


@compiles(_InJsonList)
def _in_json_list_sqlite(element: _InJsonList, compiler: SQLCompiler, **kw: Any) -> str:
    column, parameter = (compiler.process(part, **kw) for part in (element.column,
                                                                     element.parameter))
    return f"{column} IN (SELECT value FROM json_each({parameter}))"  # noqa: S608


def _constants(values: Iterable[str]) -> list[Any]:
    """Code constants written into the statement: no list bound (and expanded) per call."""
    return [literal_column(f"'{value}'", String) for value in values]


def visit_records_columns(patient_id: ColumnElement[int] | InstrumentedAttribute[int],
                          institution_id: ColumnElement[int] | InstrumentedAttribute[int]
                          ) -> tuple[Any, Any, Any]:
    """(encounters, consents, counts): columns reading, for the patient and institution of the
    caller's statement, what `decide_for_visit` reads; the caller binds
    `visit_records_parameters` and gives the three values to `VisitRecords.of`.

    encounters: every encounter of the patient at the institution, at any time (the caller may
    also want the latest diagnosis); consents: the kinds either rule set asks for, active at
    `records_at`; counts: the institution's share window, unless listed in `share_cached`."""
    at = bindparam("records_at", type_=Encounter.started_at.type)
    encounters = select(_JsonAggregate(_JsonArray(
        Encounter.started_at, Encounter.mode, Encounter.kind, Encounter.conditions))).where(
        Encounter.patient_id == patient_id,
        # The patient's own index, as in `_records` (not the institution's whole past).
        Encounter.institution_id + 0 == institution_id,
    ).scalar_subquery()
    consents = select(_JsonAggregate(Consent.kind)).where(
        Consent.patient_id == patient_id,
        # The patient's index again: SQLite would otherwise read the institution's consents.
        Consent.institution_id + 0 == institution_id,
        Consent.kind.in_(_constants(DOMESTIC_CONSENTS + ABROAD_CONSENTS)),
        Consent.granted_at <= at,
        (Consent.withdrawn_at.is_(None)) | (Consent.withdrawn_at > at),
    ).scalar_subquery()
    telemedicine = case((Encounter.mode.in_(_constants(TELEMEDICINE_MODES)), 1), else_=0)
    share = select(_JsonArray(func.count(Encounter.id), func.sum(telemedicine))).where(
        Encounter.institution_id == institution_id,
        Encounter.started_at >= bindparam("share_from", type_=Encounter.started_at.type),
        Encounter.started_at < bindparam("share_at", type_=Encounter.started_at.type),
    ).scalar_subquery()
    counts = case((_InJsonList(institution_id, "share_cached"), null()), else_=share)
    return encounters, consents, counts


def visit_records_parameters(db: Session, at: datetime, *,
                             registry: PackRegistry | None = None) -> dict[str, Any]:
    """The parameters of `visit_records_columns` for a visit at `at`: the institutions whose
    cached counts `decide_for_visit` will use are not counted."""
    _require_aware(at, "at")
    now = utcnow()
    cached: list[int] = []
    if at >= now:
        cached = SHARE_CACHE.usable(_cache_scope(db),
                                    _share_cap_on(registry or policy_registry(), at))
    share_at = min(at, now)
    return {"records_at": at, "share_from": share_at - SHARE_WINDOW, "share_at": share_at,
            "share_cached": orjson.dumps(cached).decode()}


@dataclass(frozen=True, slots=True)
class VisitRecords:
    """What `visit_records_columns` read for one patient at one institution, at `at`."""

    at: datetime
    #: (started_at, mode, kind, conditions) of every encounter at the institution, newest first.
    encounters: list[tuple[datetime, str, str, list[str] | None]]
    consents: frozenset[str]
    #: (all, telemedicine) encounters of the share window; None: left to the cache.
    counts: tuple[int, int] | None

    @classmethod
    def of(cls, at: datetime, encounters: list[list[Any]] | None,
           consents: list[str] | None, counts: list[int | None] | None) -> VisitRecords:
        rows = [(_json_instant(started_at), mode, kind, conditions)
                for started_at, mode, kind, conditions in encounters or ()]
        rows.sort(key=lambda row: row[0], reverse=True)
        total_remote = (int(counts[0] or 0), int(counts[1] or 0)) if counts is not None else None
        return cls(at, rows, frozenset(consents or ()), total_remote)

    def latest_conditions(self) -> list[str] | None:
        """The diagnoses of the newest encounter that has any (None: no encounter has)."""
        return next((conditions for *_, conditions in self.encounters if conditions), None)

    def up_to(self, at: datetime, counts: tuple[int, int]) -> _Records:
        return _Records(_history_entries(row for row in self.encounters if row[0] <= at),
                        self.consents, counts)


def _json_instant(text: str) -> datetime:
    """An instant as JSON carries it: PostgreSQL writes its offset, SQLite stores UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def patient_facts(patient: Patient) -> dict[str, Any]:
    """The `patient` part of a request, from the Patient row."""
    lives_in_korea = patient.residence_country == "KR"
    region = patient.residence_region if lives_in_korea else None
    flags = list(dict.fromkeys(patient.flags or []))
    # A recorded long-term-care grade is the fact the long_term_care flag stands for.
    if patient.long_term_care_grade is not None and PatientFlag.LONG_TERM_CARE not in flags:
        flags.append(PatientFlag.LONG_TERM_CARE.value)
    facts: dict[str, Any] = {
        "birth_date": patient.birth_date.isoformat(),
        "nationality": patient.nationality,
        "nhi_covered": patient.nhi_covered,
        "residence_region": region,
        "current_country": patient.current_country,
        "flags": flags,
    }
    if region and patient.residence_district:
        facts["residence_district"] = {"province": region, "district": patient.residence_district}
    return facts


def request_for_visit(
    db: Session,
    *,
    patient: Patient,
    institution: Institution,
    at: datetime,
    mode: str,
    condition: str,
    tri_party: bool = False,
    prescriptions: Iterable[Mapping[str, Any]] = (),
    documents: Iterable[str] = (),
    consent_recorded: bool | None = None,
    identity_verified: bool | None = None,
    lang: str,
) -> EvaluationRequest:
    """The evaluation request for a proposed visit, built from Jaejin's records.

    Arguments:
      patient, institution: the rows; the patient must be this institution's
        (`patient.institution_id == institution.id`), else ValueError.
      at: when the visit takes place (aware datetime; the pack is chosen by its Korean day).
      mode: "video", "phone" or "in_person" (`jaejin.policy.vocabulary.VisitMode`; the
        scheduling capability's "video"/"in_person" values are accepted as they are).
      condition: the KCD code the visit is about (e.g. "I10", "E11.9").
      tri_party: held with the patient's local physician (a patient abroad).
      prescriptions: `{"ingredient", "days", optional "atc", "controlled", "indication"}` each.
      documents: document kinds to be issued ("diagnosis_certificate", "referral_letter", ...).
      consent_recorded: None reads the Consent table: an active `telemedicine_limits` consent
        for a patient in Korea; active `pipa_sensitive` and `cross_border_transfer` consents
        for a patient abroad. True/False overrides (e.g. consent captured during the call).
      identity_verified: Jaejin keeps no standing identity check; None means not yet verified
        (the decision then lists IDENTITY_CHECK_REQUIRED). The visit passes True once the
        clinician has verified the patient on video.
      lang: language of the decision's messages.

    What it reads: the patient's encounters AT THIS INSTITUTION up to `at` (history, all with
    same_institution true; encounters elsewhere in the deployment are not visible), the
    patient's flags (a long-term-care grade adds `long_term_care`), residence region and
    district (only when living in Korea), nationality, insurance, current country, the
    consents, and the institution's telemedicine share over the 30 days before `at` (before
    now, for a visit in the future: the share the institution actually has).

    Raises pydantic.ValidationError naming the field when an argument or a record is invalid
    (an unknown flag stored on the patient is `patient.flags.0`, a bad condition
    `visit.condition`), ValueError for a naive `at` or a patient of another institution.
    """
    return _request(
        db, patient=patient, institution=institution, at=at, mode=mode, condition=condition,
        tri_party=tri_party, prescriptions=prescriptions, documents=documents,
        consent_recorded=consent_recorded, identity_verified=identity_verified, lang=lang,
        share_cache=None, registry=None,
    )


def _cache_scope(db: Session) -> str:
    """Which database the share cache's counts are of (an engine's URL, written once: every
    video booking asks)."""
    engine = db.get_bind().engine
    scope = _scopes.get(engine)
    if scope is None:
        scope = _scopes[engine] = str(engine.url)
    return scope


_scopes: WeakKeyDictionary[Engine, str] = WeakKeyDictionary()


def _share_cap_on(registry: PackRegistry, at: datetime) -> float | None:
    """The share cap of the domestic pack deciding a visit at `at` (None: no cap, no pack)."""
    compiled = registry.korean_rules_on(korean_date(at))
    return compiled.pack.parameters.share_cap.value if compiled else None


def _request(
    db: Session,
    *,
    patient: Patient,
    institution: Institution,
    at: datetime,
    mode: str,
    condition: str,
    tri_party: bool,
    prescriptions: Iterable[Mapping[str, Any]],
    documents: Iterable[str],
    consent_recorded: bool | None,
    identity_verified: bool | None,
    lang: str,
    share_cache: ShareCache | None,
    registry: PackRegistry | None,
    read: VisitRecords | None = None,
) -> EvaluationRequest:
    """`request_for_visit`; with a `share_cache` (and the `registry` deciding), a booking ahead
    may take the institution's counts from the cache where no decision can differ; with `read`
    (the records the caller's statement read for this patient and institution at `at`)
    nothing more is read unless the counts it left to the cache are no longer there."""
    _require_aware(at, "at")
    if patient.institution_id != institution.id:
        raise ValueError(
            f"patient {patient.id} belongs to institution {patient.institution_id}, "
            f"not {institution.id}"
        )
    abroad = patient.current_country != "KR"
    consent_kinds: Sequence[str] = ()
    if consent_recorded is None:
        consent_kinds = ABROAD_CONSENTS if abroad else DOMESTIC_CONSENTS
    now = utcnow()
    # A visit in the future is judged with the share the institution actually has: up to now.
    share_at = min(at, now)
    counts: tuple[int, int] | None = None
    cache_key: tuple[str, int] | None = None
    # Only a visit ahead may use cached counts; a decision for a past moment (a replay for an
    # audit, a visit already under way) is always counted exactly.
    if share_cache is not None and registry is not None and at >= now:
        cache_key = (_cache_scope(db), institution.id)
        counts = share_cache.counts(cache_key, _share_cap_on(registry, at))
    if read is not None and read.at == at:
        if counts is None:
            # Left out of the read for the cache, which has since let it go: counted now.
            counts = read.counts or telemedicine_counts(db, institution.id, share_at)
            if share_cache is not None and cache_key is not None:
                share_cache.store(cache_key, *counts)
        records = read.up_to(at, counts)
    else:
        records = _records(db, patient, institution, at, consent_kinds=consent_kinds,
                           share_at=share_at if counts is None else None)
        if counts is None:
            assert records.counts is not None  # the statement had its counting part
            counts = records.counts
            if share_cache is not None and cache_key is not None:
                share_cache.store(cache_key, *counts)
    if consent_recorded is None:
        consent_recorded = records.consents >= set(consent_kinds)
    total, remote = counts
    payload: dict[str, Any] = {
        "at": at.isoformat(),
        "lang": lang,
        "institution": {
            "kind": institution.kind,
            "region": institution.region,
            "telemedicine_share": remote / total if total else 0.0,
            "id": institution.code,
        },
        "patient": patient_facts(patient),
        "history": records.history,
        "visit": {"mode": str(mode), "condition": condition, "tri_party": tri_party},
        "prescriptions": [dict(item) for item in prescriptions],
        "documents": [{"kind": str(kind)} for kind in documents],
        "consent_recorded": consent_recorded,
        "identity_verified": bool(identity_verified),
    }
    return parse_request(payload)


def decide_for_visit(
    db: Session,
    *,
    patient: Patient,
    institution: Institution,
    at: datetime,
    mode: str,
    condition: str,
    tri_party: bool = False,
    prescriptions: Iterable[Mapping[str, Any]] = (),
    documents: Iterable[str] = (),
    consent_recorded: bool | None = None,
    identity_verified: bool | None = None,
    lang: str,
    registry: PackRegistry | None = None,
    records: VisitRecords | None = None,
) -> Decision:
    """Judge a proposed visit from the records: call it when booking, starting and prescribing.

    Same arguments as `request_for_visit` (read its docstring), plus `registry` (default: the
    packs loaded at start-up, `policy_registry()`) and `records`: the patient's records at this
    institution already read by the caller's statement (`visit_records_columns`; the decision
    is the same as when read here; records read for another moment than `at` are not used).
    Returns the engine's `Decision`: `decision.decision` is DecisionKind.ALLOWED / CONDITIONAL /
    DENIED, with `reasons`, `conditions`, `prescriptions`, `documents` and `alternatives`
    (render them with the template partial `policy/_decision.html`; refuse with
    `policy_denied_problem(decision)`).

    A denied visit must not be booked or started. A conditional one may be booked; before it
    starts, call again with the facts that meet the conditions (identity_verified=True, consent
    recorded, video) and require ALLOWED.

    Raises pydantic.ValidationError or jaejin.policy.RequestError (a record contradicting the
    reference data, e.g. a shortage-area flag with a district not on the list), both naming the
    field: show them as 422, never guess around them.
    """
    registry = registry or policy_registry()
    request = _request(
        db, patient=patient, institution=institution, at=at, mode=mode, condition=condition,
        tri_party=tri_party, prescriptions=prescriptions, documents=documents,
        consent_recorded=consent_recorded, identity_verified=identity_verified, lang=lang,
        share_cache=SHARE_CACHE, registry=registry, read=records,
    )
    return evaluate(request, registry)


def prescription_source(decision: Decision, verdict: PrescriptionVerdict) -> str:
    """The rule a prescription verdict rests on: the source of the decision's condition (or,
    with no pack in force, its reason) of the same code. Verdicts carry no source themselves
    because one rule judges every item of its kind."""
    for condition in decision.conditions:
        if condition.code is verdict.code:
            return condition.source
    for reason in decision.reasons:
        if reason.code is verdict.code:
            return reason.source
    return decision.pack or ""


def refused_prescription_reasons(decision: Decision,
                                 verdicts: Iterable[PrescriptionVerdict] | None = None,
                                 ) -> list[dict[str, str]]:
    """`{"code", "source", "message", "ingredient"}` of each refused prescription (all of the
    decision's, or those in `verdicts`), in the decision's language."""
    chosen = decision.prescriptions if verdicts is None else list(verdicts)
    return [
        {"code": str(verdict.code), "source": prescription_source(decision, verdict),
         "message": verdict.message, "ingredient": verdict.ingredient}
        for verdict in chosen if not verdict.allowed
    ]


VISIT_DENIED = N_("The telemedicine rules do not allow this visit: {reasons}")
PRESCRIPTION_DENIED = N_("The telemedicine rules do not allow this prescription: {reasons}")


def policy_denied_problem(decision: Decision,
                          prescriptions: Sequence[PrescriptionVerdict] = ()) -> Problem:
    """The one refusal for anything the telemedicine rules do not allow: 422 POLICY_DENIED.

    Booking (`jaejin.scheduling`), checking in to and starting a visit, and prescribing in one
    (`jaejin.visits`) all answer with it. The body carries, besides the translated `detail`:
      reasons: `[{"code", "source", "message"}]`, the rules that deny (for a prescription, also
        `ingredient`: each refused item of `prescriptions` with its rule's source);
      conditions: `[{"code", "source", "message"}]`, what the decision still asks for;
      alternatives: `[{"code", "message"}]`, what the patient can have instead;
      decision: the engine's whole decision (`Decision.model_dump(mode="json")`).
    Messages are in the decision's language (`lang` of the evaluation).

    `prescriptions` names the verdicts being refused (a prescription the decision does not
    allow); without them the decision itself must be a denial. ValueError when nothing is
    refused: an allowed decision is never a refusal.
    """
    refused = refused_prescription_reasons(decision, prescriptions)
    denying = [
        {"code": str(reason.code), "source": reason.source, "message": reason.message}
        for reason in decision.reasons if reason.effect is Effect.DENY
    ]
    if decision.decision is not DecisionKind.DENIED:
        denying = []
    if not denying and not refused:
        raise ValueError("only a denied decision or a refused prescription is a refusal")
    reasons = denying + refused
    return Problem(
        422,
        "POLICY_DENIED",
        PRESCRIPTION_DENIED if prescriptions else VISIT_DENIED,
        params={"reasons": " ".join(reason["message"] for reason in reasons)},
        extra={
            "reasons": reasons,
            "conditions": [{"code": str(item.code), "source": item.source,
                            "message": item.message} for item in decision.conditions],
            "alternatives": [{"code": str(item.code), "message": item.message}
                             for item in decision.alternatives],
            "decision": decision.model_dump(mode="json"),
        },
    )


# -- bad input ---------------------------------------------------------------------------------

# Messages for the request model's own checks (jaejin.policy.request), by pydantic error type.
_POLICY_MESSAGES: dict[str, str] = {
    "unknown_region": N_(
        "{value} is not a Korean province or metropolitan city (ISO 3166-2:KR, e.g. KR-11)."
    ),
    "unknown_country": N_("{value} is not an ISO 3166-1 alpha-2 country code."),
    "kcd_code": N_("{value} is not a KCD diagnosis code (e.g. I10 or E11.9)."),
    "atc_code": N_("{value} is not an ATC code (e.g. C08CA01)."),
    "unknown_language": N_("{value} is not a supported language ({supported})."),
    "model_type": N_("Must be an object."),
}
# The cross-field date checks say what is impossible; the field tells which check it was.
_BIRTH_DATE_IMPOSSIBLE = N_(
    "{value} is not a possible birth date for this visit: it is after the visit's day in Korea, "
    "or before 1880."
)
_HISTORY_DATE_IMPOSSIBLE = N_(
    "{value} is not a possible encounter date: history lists past encounters, from the birth "
    "date up to the visit's day in Korea."
)
_DISTRICT_OUTSIDE_REGION = N_("{value} is not the patient's residence_region.")
_CONTRADICTS_REFERENCE = N_("This contradicts Jaejin's reference data: {problem}")


def field_errors(error: ValidationError) -> list[FieldError]:
    """Each problem of a request's validation as a translatable FieldError naming the field."""
    described: list[FieldError] = []
    details = error.errors(include_url=False)
    for detail, generic in zip(details, field_errors_from_pydantic(details), strict=True):
        kind = detail["type"]
        location = [str(part) for part in detail["loc"]]
        field = ".".join(location) or "body"
        value = detail.get("input")
        params = {key: str(item) for key, item in (detail.get("ctx") or {}).items()}
        message: str | None = _POLICY_MESSAGES.get(kind)
        if kind == "invalid" and location:
            params = {"value": str(value)}
            if location[-1] == "birth_date":
                message = _BIRTH_DATE_IMPOSSIBLE
            elif location[-1] == "date":
                message = _HISTORY_DATE_IMPOSSIBLE
            elif location[-1] == "province":
                message = _DISTRICT_OUTSIDE_REGION
        if message is None:
            described.append(generic)
        else:
            described.append(FieldError(field, kind.upper(), message, params))
    return described


def bad_request_problem(error: ValidationError | RequestError) -> Problem:
    """The 422 for a request the rules cannot judge, each field named (API, pages, callers)."""
    if isinstance(error, RequestError):
        return Problem(
            422, "POLICY_REQUEST_INCONSISTENT",
            N_("The request contradicts the reference data the rules rely on."),
            errors=[FieldError(error.field, "CONTRADICTS_REFERENCE_DATA", _CONTRADICTS_REFERENCE,
                               {"problem": error.problem})],
        )
    return Problem(422, "VALIDATION_FAILED", N_("Some fields are not valid."),
                   errors=field_errors(error))
