"""The institution's 30-day share, cached per process without ever changing a decision.

`decide_for_visit` reuses an institution's counts for a short time, but only where they are
at least a safety margin below the pack's cap; near or over the cap, and for any decision
about a past moment, it counts exactly. The property: for any history, cap and any change of
at most `margin * total` encounters since the counts were taken, the cached decision is the
exact decision. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, insert, select
from sqlalchemy.orm import Session

from jaejin.core.database import utcnow
from jaejin.directory.store import Encounter, Institution, Patient
from jaejin.policy import Code
from jaejin.policy.records import (
    SHARE_CACHE,
    SHARE_CACHE_MINIMUM_ENCOUNTERS,
    SHARE_SAFETY_MARGIN,
    ShareCache,
    _share_cap_on,
    cached_counts_usable,
    decide_for_visit,
    policy_registry,
)
from tests.support import make_institution, make_patient

# -- the rule itself, for any counts and caps ---------------------------------------------------


def _denied(total: int, remote: int, cap: float | None) -> bool:
    """The engine's share-cap test (`jaejin.policy.engine._share_cap`): above the cap denies."""
    share = remote / total if total else 0.0
    return cap is not None and share > cap


@settings(max_examples=400, deadline=None)
@given(data=st.data(),
       total=st.integers(min_value=0, max_value=20_000),
       cap=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
       margin=st.sampled_from([0.0, 0.005, SHARE_SAFETY_MARGIN, 0.05, 0.2]),
       minimum=st.sampled_from([0, 1, 50, SHARE_CACHE_MINIMUM_ENCOUNTERS]))
def test_usable_cached_counts_decide_as_the_exact_counts_after_any_small_change(
    data: st.DataObject, total: int, cap: float | None, margin: float, minimum: int
):
    remote = data.draw(st.integers(min_value=0, max_value=total), label="remote")
    # What happened since the counts were taken: encounters recorded or entering the window
    # (added), deleted or leaving it (removed), at most margin * total of them in all.
    budget = int(Fraction(margin) * total)
    added_remote = data.draw(st.integers(0, budget), label="added_remote")
    added_in_person = data.draw(st.integers(0, budget - added_remote), label="added_in_person")
    left = budget - added_remote - added_in_person
    removed_remote = data.draw(st.integers(0, min(left, remote)), label="removed_remote")
    removed_in_person = data.draw(
        st.integers(0, min(left - removed_remote, total - remote)), label="removed_in_person")
    now_total = total + added_remote + added_in_person - removed_remote - removed_in_person
    now_remote = remote + added_remote - removed_remote

    if cached_counts_usable(total, remote, cap, margin=margin, minimum=minimum):
        assert total >= minimum
        assert _denied(total, remote, cap) is False
        assert _denied(now_total, now_remote, cap) is False


@settings(max_examples=300, deadline=None)
@given(total=st.integers(min_value=0, max_value=20_000), data=st.data(),
       cap=st.floats(min_value=0.0, max_value=1.0))
def test_counts_above_or_near_the_cap_are_never_used(data: st.DataObject, total: int,
                                                     cap: float):
    remote = data.draw(st.integers(min_value=0, max_value=total))
    if total and Fraction(remote, total) > Fraction(cap) - Fraction(SHARE_SAFETY_MARGIN):
        assert not cached_counts_usable(total, remote, cap, minimum=0)


def test_the_cache_forgets_after_its_lifetime_and_can_be_turned_off():
    moments = [0.0]
    cache = ShareCache(60, clock=lambda: moments[-1])
    key = ("sqlite://", 1)
    cache.store(key, 1000, 100)
    assert cache.counts(key, 0.3) == (1000, 100)
    moments.append(60.0)
    assert cache.counts(key, 0.3) == (1000, 100)
    moments.append(60.5)
    assert cache.counts(key, 0.3) is None
    cache.store(key, 10, 1)  # too few encounters to be worth caching, or to absorb a change
    assert cache.counts(key, 0.3) is None
    off = ShareCache(0, clock=lambda: 0.0)
    off.store(key, 1000, 100)
    assert off.counts(key, 0.3) is None
    assert off.counts(key, None) is None


# -- decisions from the records -------------------------------------------------------------------

AHEAD = timedelta(days=2)


@pytest.fixture
def share_cache() -> Iterator[ShareCache]:
    """The process cache with a small minimum and a wide margin, so a few dozen encounters (a
    fast test) exercise it; restored and emptied afterwards."""
    saved = SHARE_CACHE.margin, SHARE_CACHE.minimum
    SHARE_CACHE.clear()
    SHARE_CACHE.margin, SHARE_CACHE.minimum = 0.1, 20
    yield SHARE_CACHE
    SHARE_CACHE.margin, SHARE_CACHE.minimum = saved
    SHARE_CACHE.clear()


@pytest.fixture
def clinic(db: Session) -> Institution:
    return make_institution(db, "CLINIC-CACHE", kind="clinic", region="KR-11")


@pytest.fixture
def patient(db: Session, clinic: Institution) -> Patient:
    return make_patient(db, clinic, "P-CACHE", birth_date=date(1970, 3, 2))


@pytest.fixture
def other(db: Session, clinic: Institution) -> Patient:
    return make_patient(db, clinic, "P-OTHERS")


def _cap_ahead() -> float:
    cap = _share_cap_on(policy_registry(), utcnow() + AHEAD)
    # The packs in force now and for years ahead carry a cap; a pack without one would leave
    # these tests nothing to check, so say so rather than skip.
    assert cap is not None, "no share cap in force for a visit two days ahead"
    return cap


def _record(db: Session, institution: Institution, patient: Patient,
            encounters: list[tuple[str, datetime]]) -> None:
    if encounters:
        db.execute(insert(Encounter), [
            {"institution_id": institution.id, "patient_id": patient.id, "mode": mode,
             "kind": "visit", "started_at": started_at, "conditions": ["J06"]}
            for mode, started_at in encounters
        ])


def _month(now: datetime, in_person: int, remote: int) -> list[tuple[str, datetime]]:
    """Encounters spread over the last 29 days (inside the window for the next minutes)."""
    return [("in_person" if index < in_person else "video",
             now - timedelta(days=1 + index % 28, minutes=index % 50))
            for index in range(in_person + remote)]


def _decide(db: Session, patient: Patient, institution: Institution, at: datetime) -> Any:
    return decide_for_visit(db, patient=patient, institution=institution, at=at, mode="video",
                            condition="J30", lang="en", identity_verified=True,
                            consent_recorded=True)


class _Statements:
    def __init__(self, db: Session) -> None:
        self.seen: list[str] = []
        self._engine = db.get_bind().engine

    def __enter__(self) -> _Statements:
        event.listen(self._engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement)

    @property
    def counted(self) -> bool:
        return any("count(" in statement.lower() for statement in self.seen)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_person=st.integers(0, 60), remote=st.integers(0, 30),
       changes=st.lists(st.sampled_from(["add_video", "add_in_person", "delete", "age_out"]),
                        max_size=12))
def test_a_booking_ahead_decides_the_same_with_cached_counts_as_with_exact_counts(
    db: Session, clinic: Institution, patient: Patient, other: Patient,
    share_cache: ShareCache, in_person: int, remote: int, changes: list[str]
):
    db.execute(delete(Encounter))
    share_cache.clear()
    now = utcnow()
    _record(db, clinic, patient, [("in_person", now - timedelta(days=40))])  # outside window
    _record(db, clinic, other, _month(now, in_person, remote))
    at = now + AHEAD
    first = _decide(db, patient, clinic, at)  # counts exactly and keeps the counts

    total = in_person + remote
    cap = _cap_ahead()
    usable = cached_counts_usable(total, remote, cap, margin=share_cache.margin,
                                  minimum=share_cache.minimum)
    # Within what the margin absorbs, anything may happen to the window meanwhile.
    allowed = int(Fraction(share_cache.margin) * total) if usable else len(changes)
    for change in changes[:allowed]:
        if change == "add_video":
            _record(db, clinic, other, [("video", now - timedelta(hours=1))])
        elif change == "add_in_person":
            _record(db, clinic, other, [("in_person", now - timedelta(hours=1))])
        else:
            victim = db.scalars(select_one_in_window(clinic, now)).first()
            if victim is not None:
                if change == "delete":
                    db.delete(victim)
                else:
                    victim.started_at = now - timedelta(days=31)
                db.flush()

    with _Statements(db) as statements:
        cached = _decide(db, patient, clinic, at)
    assert statements.counted is not usable  # the cache served exactly when it may
    share_cache.clear()
    exact = _decide(db, patient, clinic, at)
    assert cached.model_dump() == exact.model_dump()
    assert first.decided_on == exact.decided_on


def select_one_in_window(institution: Institution, now: datetime) -> Any:
    return select(Encounter).where(Encounter.institution_id == institution.id,
                                   Encounter.started_at >= now - timedelta(days=30)).limit(1)


def test_near_the_cap_every_booking_is_counted_exactly(
    db: Session, clinic: Institution, patient: Patient, other: Patient, share_cache: ShareCache
):
    cap = _cap_ahead()
    now = utcnow()
    total = 100
    remote = int(cap * total) - 1  # under the cap, but within the margin of it
    _record(db, clinic, other, _month(now, total - remote, remote))
    at = now + AHEAD
    assert Code.SHARE_CAP_EXCEEDED not in [r.code for r in _decide(db, patient, clinic, at).reasons]
    # Far more telemedicine than any margin absorbs: the stale counts would allow the booking.
    _record(db, clinic, other, [("video", now - timedelta(hours=2))] * 20)
    with _Statements(db) as statements:
        decision = _decide(db, patient, clinic, at)
    assert statements.counted
    assert Code.SHARE_CAP_EXCEEDED in [reason.code for reason in decision.reasons]


def test_a_decision_for_a_past_moment_is_always_counted_exactly(
    db: Session, clinic: Institution, patient: Patient, other: Patient, share_cache: ShareCache
):
    _cap_ahead()
    now = utcnow()
    _record(db, clinic, other, _month(now, 100, 0))
    _decide(db, patient, clinic, now + AHEAD)  # the cache now holds a share of 0
    _record(db, clinic, other, [("video", now - timedelta(hours=3))] * 100)
    with _Statements(db) as statements:
        replayed = _decide(db, patient, clinic, now - timedelta(minutes=1))
    assert statements.counted
    assert Code.SHARE_CAP_EXCEEDED in [reason.code for reason in replayed.reasons]


def test_one_decision_is_one_statement(db: Session, clinic: Institution, patient: Patient,
                                       other: Patient, share_cache: ShareCache):
    now = utcnow()
    _record(db, clinic, other, _month(now, 40, 2))
    _record(db, clinic, patient, [("in_person", now - timedelta(days=3))])
    db.flush()
    for consent_recorded in (None, True):
        for at in (now - timedelta(days=1), now + AHEAD, now + AHEAD):
            with _Statements(db) as statements:
                decide_for_visit(db, patient=patient, institution=clinic, at=at, mode="video",
                                 condition="J30", lang="en", consent_recorded=consent_recorded)
            assert len(statements.seen) == 1, statements.seen


def test_each_part_of_the_statement_reads_through_its_own_index(
    db: Session, clinic: Institution, patient: Patient, other: Patient, share_cache: ShareCache
):
    """The patient's history through the patient index (not the institution's whole past
    through the share index), the counts from the share index alone. SQLite only: it plans
    without statistics, so the plan is fixed; PostgreSQL plans by its statistics."""
    if db.get_bind().dialect.name != "sqlite":
        pytest.skip("SQLite's plan does not depend on table statistics")
    now = utcnow()
    _record(db, clinic, other, _month(now, 30, 3))
    captured: list[tuple[str, Any]] = []
    engine = db.get_bind().engine

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        _decide(db, patient, clinic, now + AHEAD)
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    [(statement, parameters)] = captured
    cursor = db.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    plan = [row[3] for row in cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
    searches = [step for step in plan if step.startswith("SEARCH encounters")]
    assert searches[0].startswith("SEARCH encounters USING INDEX ix_encounters_patient_started")
    assert searches[1].startswith(
        "SEARCH encounters USING COVERING INDEX ix_encounters_institution_started_mode")
