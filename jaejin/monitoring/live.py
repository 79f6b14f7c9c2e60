"""What an accepted batch of readings changes for the care team, and telling their open pages.

A normal reading raises no alert, yet it changes the triage list: it ends a "no reading for 3
days" alert of its metric, and moves the 7-day means every item explains itself with. So after
every batch that stored readings (`ingest.ingest_items` calls `readings_accepted`):

1. the patient's open missing-data alerts of the batch's metrics resolve when the plan's
   condition no longer holds (`triage.missing_data_ended`), audit-logged as the system's step;
2. a `monitoring.triage_refresh` event for the patient is queued on the session and, after the
   commit only, handed to `TRIAGE_REFRESHES`, which publishes on the institution's
   `triage:<institution_id>` channel at most once per patient per `REFRESH_INTERVAL`: the first
   batch at once, every later one within the interval folded into one event at its end. A
   device sending a reading a second, or an upload committing chunk after chunk, costs each open
   page one list reload per second, never one per reading.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, event, select, text
from sqlalchemy.orm import Session

from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.events import current_bus
from jaejin.monitoring.alerts import AlertKind, AlertState, episode_key_for
from jaejin.monitoring.readings import Metric, Reading
from jaejin.monitoring.store import AlertRow, AlertStatus, active_plan
from jaejin.monitoring.triage import missing_data_ended

log = logging.getLogger(__name__)

#: At most one triage refresh per patient per this many seconds.
REFRESH_INTERVAL: Final = 1.0
REFRESH_EVENT: Final = "monitoring.triage_refresh"
_TRIAGE_CHANNEL: Final = "triage:{institution_id}"
_PENDING_KEY: Final = "jaejin_triage_refresh"
DATA_ARRIVED_ACTOR: Final = AuditActor.system("monitoring-ingest")

Publish = Callable[[str, dict[str, Any]], None]


def _publish_on_bus(channel: str, message: dict[str, Any]) -> None:
    bus = current_bus()
    if bus is not None:
        bus.publish(channel, message)


class RefreshCoalescer:
    """Publishes at most one message per key per `interval`: the first at once, later ones in
    the interval folded into one (the newest) at the interval's end.

    Thread-safe; a daemon thread sends the deferred ones. Tests pass their own `clock` and
    call `send_due` themselves (`start_thread=False`).
    """

    def __init__(self, publish: Publish = _publish_on_bus, interval: float = REFRESH_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, *,
                 start_thread: bool = True) -> None:
        self._publish = publish
        self._interval = interval
        self._clock = clock
        self._lock = threading.Condition()
        self._last_sent: dict[Any, float] = {}
        self._pending: dict[Any, tuple[str, dict[str, Any]]] = {}
        self._due: list[tuple[float, int, Any]] = []
        self._serial = 0
        self._start_thread = start_thread
        self._thread: threading.Thread | None = None

    def request(self, key: Any, channel: str, message: dict[str, Any]) -> None:
        with self._lock:
            now = self._clock()
            if key in self._pending:
                self._pending[key] = (channel, message)
                return
            last = self._last_sent.get(key)
            if last is not None and now - last < self._interval:
                self._pending[key] = (channel, message)
                self._serial += 1
                heapq.heappush(self._due, (last + self._interval, self._serial, key))
                self._ensure_thread()
                self._lock.notify()
                return
            self._last_sent[key] = now
            self._forget_old(now)
        self._send(channel, message)

    def send_due(self) -> float | None:
        """Send every deferred message whose time has come; seconds until the next, if any."""
        ready: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            now = self._clock()
            while self._due and self._due[0][0] <= now:
                _due, _serial, key = heapq.heappop(self._due)
                found = self._pending.pop(key, None)
                if found is not None:
                    self._last_sent[key] = now
                    ready.append(found)
            wait = self._due[0][0] - now if self._due else None
        for channel, message in ready:
            self._send(channel, message)
        return wait

    def _send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            self._publish(channel, message)
        except Exception:  # a live nicety must never fail the request that committed
            log.exception("could not publish the triage refresh on %s", channel)

    def _forget_old(self, now: float) -> None:
        if len(self._last_sent) > 10_000:
            self._last_sent = {key: moment for key, moment in self._last_sent.items()
                               if now - moment < self._interval or key in self._pending}

    def _ensure_thread(self) -> None:
        if not self._start_thread or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._run, name="triage-refresh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            wait = self.send_due()
            with self._lock:
                if not self._due:
                    self._lock.wait()
                else:
                    self._lock.wait(max(0.0, wait if wait is not None else 0.0))


#: The process's coalescer of triage refreshes.
TRIAGE_REFRESHES = RefreshCoalescer()


def queue_triage_refresh(db: Session, institution_id: int, patient_id: int) -> None:
    """Ask for a triage refresh of `patient_id` once `db` commits (never if it rolls back)."""
    pending: dict[tuple[int, int], None] = db.info.setdefault(_PENDING_KEY, {})
    pending[(institution_id, patient_id)] = None


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    for institution_id, patient_id in pending or ():
        TRIAGE_REFRESHES.request(
            (institution_id, patient_id), _TRIAGE_CHANNEL.format(institution_id=institution_id),
            {"type": REFRESH_EVENT, "patient_id": patient_id},
        )


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


#: The patient's open missing-data alerts: `status <> 'resolved'` literally, so PostgreSQL
#: uses the partial index of open episodes (`uq_monitoring_alerts_open_episode`).
_OPEN_MISSING_DATA: Final = text(
    f"SELECT id, metric FROM {AlertRow.__tablename__} "  # noqa: S608 - constants only
    f"WHERE patient_id = :patient_id AND status <> '{AlertStatus.RESOLVED}' "
    f"AND kind = '{AlertKind.MISSING_DATA.value}'"
)


def end_missing_data(db: Session, patient_id: int, readings: Sequence[Reading],
                     now: datetime) -> list[AlertRow]:
    """Resolve the patient's open missing-data alerts that these readings end."""
    newest: dict[Metric, datetime] = {}
    for reading in readings:
        known = newest.get(reading.metric)
        if known is None or reading.effective_at > known:
            newest[reading.metric] = reading.effective_at
    # Nearly always nothing is open: one cheap cached statement (the open-episode partial
    # index) decides, and only a hit loads and locks rows.
    open_ids = [alert_id for alert_id, metric in db.execute(
        _OPEN_MISSING_DATA, {"patient_id": patient_id}) if metric in newest]
    if not open_ids:
        return []
    keys = [episode_key_for(str(patient_id), AlertKind.MISSING_DATA, metric)
            for metric in newest]
    rows = list(db.execute(
        select(AlertRow).where(
            AlertRow.id.in_(open_ids), AlertRow.episode_key.in_(keys),
            AlertRow.status != AlertStatus.RESOLVED,
        ).with_for_update()
    ).scalars())
    plan = active_plan(db, patient_id)
    ended: list[AlertRow] = []
    for row in rows:
        if row.metric is None:
            continue
        metric = Metric(row.metric)
        if metric not in newest or not missing_data_ended(
                newest[metric], plan.missing_after.get(metric), now):
            continue
        row.status = AlertState.RESOLVED.value
        row.resolved_at = now
        row.resolved_by = None
        row.unacknowledged_since = None
        row.snoozed_until = None
        record(db, DATA_ARRIVED_ACTOR, AuditEvent(
            "update", "monitoring_alert", str(row.id), row.patient_id, row.institution_id,
            detail={"step": "data_arrived", "kind": row.kind, "metric": row.metric},
        ))
        ended.append(row)
    return ended


def readings_accepted(db: Session, institution_id: int, patient_id: int,
                      readings: Sequence[Reading], received_at: datetime) -> None:
    """What a stored batch changes beyond its own alerts (see the module's docstring). The
    caller commits."""
    readings_accepted_many(db, [AcceptedReadings(institution_id, patient_id, readings,
                                                 received_at)])


@dataclass(frozen=True, slots=True)
class AcceptedReadings:
    """Readings one request stored for one patient."""

    institution_id: int
    patient_id: int
    readings: Sequence[Reading]
    received_at: datetime
    #: Whether the patient has an open missing-data alert, when the caller read it already
    #: (with the patient); None: looked up here.
    missing_data_open: bool | None = None


def _patients_with_open_missing_data(patients: str) -> str:
    return (
        f"SELECT DISTINCT patient_id FROM {AlertRow.__tablename__} "  # noqa: S608 - constants
        f"WHERE patient_id {patients} AND status <> '{AlertStatus.RESOLVED}' "
        f"AND kind = '{AlertKind.MISSING_DATA.value}'"
    )


#: `_OPEN_MISSING_DATA` of several patients at once (a group commit's), per dialect: on
#: PostgreSQL one statement text whatever the number of patients (prepared once).
_PATIENTS_WITH_OPEN_MISSING_DATA: Final = {
    "postgresql": text(_patients_with_open_missing_data(
        "= ANY(CAST(:patient_ids AS integer[]))")),
    "sqlite": text(_patients_with_open_missing_data("IN :patient_ids")).bindparams(
        bindparam("patient_ids", expanding=True)),
}


def readings_accepted_many(db: Session, accepted: Sequence[AcceptedReadings]) -> None:
    """`readings_accepted` for several requests in one transaction: one query tells which of
    their patients have an open missing-data alert at all (nearly always none), unless the
    caller knows already."""
    accepted = [one for one in accepted if one.readings]
    unknown = {one.patient_id for one in accepted if one.missing_data_open is None}
    if len(unknown) > 1:
        statement = _PATIENTS_WITH_OPEN_MISSING_DATA[db.get_bind().dialect.name]
        unknown &= set(db.execute(statement, {"patient_ids": sorted(unknown)}).scalars())
    # A single unknown patient is left for `end_missing_data`'s own query to decide.
    for one in accepted:
        if one.missing_data_open or (one.missing_data_open is None
                                     and one.patient_id in unknown):
            end_missing_data(db, one.patient_id, one.readings, one.received_at)
        queue_triage_refresh(db, one.institution_id, one.patient_id)


__all__ = [
    "REFRESH_EVENT", "REFRESH_INTERVAL", "TRIAGE_REFRESHES", "AcceptedReadings",
    "RefreshCoalescer", "end_missing_data", "queue_triage_refresh", "readings_accepted",
    "readings_accepted_many",
]
