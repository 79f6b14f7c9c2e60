"""Demo video visits: today's queue for the demo clinicians, starting within the next two hours.

Every video appointment the scheduling demo booked for today gets its visit; then a few more are
booked for the stories the demo tells (each skipped if its time is already taken):
- Kim Young-su (Busan, hypertension) in 15 minutes, already in the waiting room with consent, so
  dr_park can verify his identity and start;
- Choi Ji-woo (type 1 diabetes) with dr_choi at the university hospital in 20 minutes;
- Sato Haruka (Osaka, melasma) with dr_kim in 45 minutes: a patient abroad, so a tri-party
  consultation; her local physician's guest link is queued in the outbox;
- Bat-Erdene (Ulaanbaatar, after bypass surgery) with dr_lee and the Mongolian interpreter.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jaejin.core.audit import AuditActor
from jaejin.core.config import get_settings
from jaejin.core.database import utcnow
from jaejin.demo import DemoContext
from jaejin.directory.store import Consent, Interpreter, Patient, Practitioner
from jaejin.scheduling.store import Appointment, bump_calendar, claim_occupancy
from jaejin.visits import service
from jaejin.visits.lifecycle import VisitState
from jaejin.visits.service import Actor
from jaejin.visits.signalling import ParticipantRole

log = logging.getLogger(__name__)
DEMO_ACTOR = AuditActor.system("demo")

#: (patient key, practitioner key, minutes from now, visit type, minutes long, condition,
#:  interpreter key or None)
STORIES: list[tuple[str, str, int, str, int, str, str | None]] = [
    ("kim_youngsu", "dr_park", 15, "follow_up", 15, "I10", None),
    ("choi_jiwoo", "dr_choi", 20, "follow_up", 15, "E10.9", None),
    ("sato_haruka", "dr_kim", 45, "tri_party_consultation", 45, "L81.4", None),
    ("bat_erdene", "dr_lee", 75, "international_follow_up", 30, "I25.1", "mn"),
]


def _next_five_minutes(moment: datetime) -> datetime:
    moment = moment.replace(second=0, microsecond=0)
    return moment + timedelta(minutes=(5 - moment.minute % 5) % 5)


def _book(db: Session, patient: Patient, practitioner: Practitioner, start: datetime,
          visit_type: str, minutes: int, condition: str,
          interpreter: Interpreter | None) -> Appointment | None:
    """An appointment with its occupancy, unless someone already holds that time."""
    appointment = Appointment(
        institution_id=patient.institution_id, patient_id=patient.id,
        practitioner_id=practitioner.id,
        interpreter_id=interpreter.id if interpreter else None,
        interpreter_language=interpreter.languages[0] if interpreter else None,
        visit_type=visit_type, mode="video", start_at=start,
        end_at=start + timedelta(minutes=minutes),
        occupied_until=start + timedelta(minutes=minutes), status="booked", sequence=0,
        booked_by="demo", condition_code=condition,
        tri_party=visit_type == "tri_party_consultation")
    try:
        with db.begin_nested():
            db.add(appointment)
            db.flush()
            claim_occupancy(db, appointment)
            bump_calendar(db, practitioner.id)
    except IntegrityError:
        log.info("demo: %s's visit at %s overlaps a booking; skipped", patient.mrn, start)
        return None
    return appointment


def load_demo(db: Session, demo: DemoContext) -> None:
    now = utcnow()
    base = _next_five_minutes(now)
    day_start, day_end = now - timedelta(hours=12), now + timedelta(hours=12)
    for appointment in db.execute(select(Appointment).where(
            Appointment.mode == "video", Appointment.status == "booked",
            Appointment.start_at >= day_start, Appointment.start_at < day_end)).scalars():
        service.open_visit(db, appointment, DEMO_ACTOR)

    for patient_key, practitioner_key, minutes, visit_type, length, condition, interpreter_key \
            in STORIES:
        patient = demo.patients[patient_key]
        interpreter = demo.interpreters.get(interpreter_key) if interpreter_key else None
        booked = _book(db, patient, demo.practitioners[practitioner_key],
                       base + timedelta(minutes=minutes), visit_type, length, condition,
                       interpreter)
        if booked is None:
            continue
        visit = service.open_visit(db, booked, DEMO_ACTOR)
        if patient_key == "kim_youngsu":
            consent = Consent(institution_id=patient.institution_id, patient_id=patient.id,
                              kind="telemedicine_limits",
                              text_version=service.CONSENT_TEXT_VERSION, language="ko",
                              granted_at=now, detail={"visit_id": visit.id,
                                                      "given": "on_pre_call_page"})
            db.add(consent)
            db.flush()
            visit.consent_id = consent.id
            visit.state = VisitState.WAITING_ROOM.value
            visit.checked_in_at = visit.waiting_since = now
        if visit.local_physician_required and visit.local_physician_id is not None:
            clinician = demo.practitioners[practitioner_key]
            context = service.load_context(db, visit)
            service.issue_guest_link(db, context, Actor(
                audit_actor=DEMO_ACTOR, language="ko", time_zone=clinician.time_zone,
                role=ParticipantRole.CLINICIAN,
                participant_id=service.user_participant_id(clinician.user_id or 0)),
                base_url=get_settings().public_base_url, now=now)
    db.flush()
