"""Scheduling pages: a patient books a follow-up, coordinators see the week's calendar across
practitioners and interpreters, practitioners and interpreters see their day and week.

The patient's booking flow (htmx, and plain links and forms without JavaScript):
1. `/appointments/book`: choose the doctor, the kind of visit and, if wanted, an interpreter;
2. the week's free times load below (`/appointments/book/slots`), grouped by day in the zone the
   browser reports, each labelled in both zones ("Tue 09:00 Seoul = Mon 20:00 New York"); when
   the doctor does not speak the patient's language, an interpreter is included automatically
   and only times with a free interpreter are listed;
3. `/appointments/book/confirm`: the summary and, for a video visit, what the telemedicine rules
   say (the policy partial); a denied visit offers the alternatives instead of a button;
4. POST `/appointments/book` books through `jaejin.scheduling.service` and shows the
   confirmation with "Add to calendar" (the .ics file). A time taken meanwhile shows the next
   free times.

Every sentence the pages show is a msgid in `TEXT` (templates translate it with `t`), so the
capability's catalogue covers them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from babel.dates import format_skeleton
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEvent
from jaejin.core.authn import AppSettings, DbSession, Principal, audit, requires
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem, not_found, request_language
from jaejin.core.i18n import LANGUAGE_NAMES, LANGUAGE_TAG_LENGTH, N_, normalise_language, translate
from jaejin.directory.store import Institution, Interpreter, Patient, Practitioner, PractitionerRole
from jaejin.policy.decision import Decision
from jaejin.policy.vocabulary import DecisionKind
from jaejin.scheduling import service
from jaejin.scheduling.appointments import STATUS_NAMES, AppointmentStatus
from jaejin.scheduling.display import (
    babel_locale,
    dual_zone_label,
    format_local_time,
    zone_label,
)
from jaejin.scheduling.errors import SchedulingError
from jaejin.scheduling.model import MODE_NAMES, VISIT_TYPES, VisitMode, visit_type_by_code
from jaejin.scheduling.store import Appointment, AvailabilityRow, OwnerKind, appointments_between
from jaejin.scheduling.zones import canonical_zone_name, local_day_start, resolve_zone
from jaejin.web import navigation
from jaejin.web.templating import render

router = APIRouter(include_in_schema=False)

PATIENTS = (Role.PATIENT, *service.BOOKING_STAFF)
VIEWERS = (Role.PATIENT, *service.VIEWING_STAFF, Role.INTERPRETER)
COORDINATORS = service.COORDINATING_STAFF
OWN_SCHEDULE = (Role.CLINICIAN, Role.INTERPRETER)

Booker = Annotated[Principal, Depends(service.released(requires(*PATIENTS)))]
Viewer = Annotated[Principal, Depends(service.released(requires(*VIEWERS)))]
Coordinator = Annotated[Principal, Depends(service.released(requires(*COORDINATORS)))]
OwnScheduleViewer = Annotated[Principal, Depends(service.released(requires(*OWN_SCHEDULE)))]

navigation.register("/appointments", N_("Appointments"),
                    N_("Book, move or cancel your follow-up visits, and add them to your "
                       "calendar."), {Role.PATIENT}, order=25)
navigation.register("/scheduling/calendar", N_("Calendar"),
                    N_("The week's appointments across practitioners and interpreters; assign "
                       "interpreters."), set(COORDINATORS), order=25)
navigation.register("/scheduling/my", N_("My schedule"),
                    N_("Your day and week of appointments, in your own time zone."),
                    set(OWN_SCHEDULE), order=25)

#: Every sentence of the scheduling templates (msgids; the templates call t()).
TEXT: dict[str, str] = {
    "appointments": N_("Appointments"),
    "my_appointments": N_("My appointments"),
    "book_title": N_("Book a follow-up"),
    "book_another": N_("Book a follow-up"),
    "no_upcoming": N_("You have no upcoming appointments."),
    "past": N_("Earlier appointments"),
    "doctor": N_("Doctor"),
    "visit_kind": N_("Kind of visit"),
    "interpreter_need": N_("Do you need an interpreter?"),
    "interpreter_auto": N_("Only if my doctor does not speak my language"),
    "interpreter_language": N_("Interpreter for {language}"),
    "show_times": N_("Show free times"),
    "times_in_zone": N_("Times are shown in {zone} and at the clinic ({clinic_zone})."),
    "week_of": N_("Free times from {first} to {last}"),
    "earlier": N_("Earlier"),
    "later": N_("Later"),
    "no_slots": N_("No free times this week. Try the next week."),
    "interpreter_included": N_(
        "{doctor} does not speak {language}: an interpreter joins the visit. Only times when "
        "one is free are shown."),
    "interpreter_requested": N_(
        "An interpreter for {language} joins the visit. Only times when one is free are shown."),
    "no_interpreter_language": N_(
        "No interpreter here offers {language}. Choose another language or contact the clinic."),
    "confirm_title": N_("Confirm your appointment"),
    "confirm": N_("Book this time"),
    "choose_other": N_("Choose another time"),
    "when": N_("When"),
    "at_clinic": N_("At the clinic"),
    "your_time": N_("Your time"),
    "interpreter": N_("Interpreter"),
    "interpreter_joins": N_("An interpreter ({language}) joins the visit."),
    "no_interpreter": N_("No interpreter"),
    "status": N_("Status"),
    "policy_denied_hint": N_(
        "This visit cannot be booked by video. Choose an in-person visit or ask the clinic "
        "about a consultation with your local doctor."),
    "book_in_person": N_("Book an in-person visit instead"),
    "booked_title": N_("Your appointment is booked"),
    "appointment_title": N_("Appointment"),
    "add_to_calendar": N_("Add to calendar"),
    "add_to_calendar_hint": N_(
        "Downloads an invitation (.ics) for your calendar app; it updates when the visit "
        "moves."),
    "reminders_hint": N_("We remind you by e-mail (and text message) before the visit."),
    "cancel": N_("Cancel this appointment"),
    "cancel_reason": N_("Reason (optional)"),
    "reschedule": N_("Move to another time"),
    "reschedule_title": N_("Move your appointment"),
    "cutoff_hint": N_("You can move or cancel until {hours} hours before the visit."),
    "taken_title": N_("That time is no longer free"),
    "next_free": N_("The next free times:"),
    "patient": N_("Patient"),
    "practitioner": N_("Practitioner"),
    "calendar_title": N_("Calendar: week of {first}"),
    "calendar_zone": N_("Times in {zone}, the institution's zone."),
    "previous_week": N_("Previous week"),
    "next_week": N_("Next week"),
    "practitioners": N_("Practitioners"),
    "interpreters": N_("Interpreters"),
    "assign": N_("Assign"),
    "assign_interpreter": N_("Interpreter for appointment {id}"),
    "my_schedule": N_("My schedule"),
    "schedule_zone": N_("Times in {zone}, your own zone; the patient's time is beside it."),
    "day": N_("Day"),
    "week": N_("Week"),
    "previous": N_("Previous"),
    "next": N_("Next"),
    "no_appointments": N_("No appointments."),
    "for_patient": N_("Booking for {patient}"),
    "notifications": N_("Messages"),
    "message_state": N_("{kind} by {channel} to {recipient}: {state}"),
}


def _say(lang: str, key: str, **params: Any) -> str:
    """A sentence of `TEXT` in `lang`."""
    return translate(lang, TEXT[key], **params)


def _problem_text(problem: Problem, lang: str) -> str:
    return str(problem.body(lang)["detail"])


# --------------------------------------------------------------------------- shared


def _browser_zone(value: str | None, fallback: str) -> ZoneInfo:
    """The zone the page shows times in: the browser's when it told us one, else `fallback`."""
    for candidate in (value, fallback, "Asia/Seoul"):
        if candidate:
            try:
                return resolve_zone(candidate)
            except SchedulingError:
                continue
    return ZoneInfo("Asia/Seoul")


def day_heading(day: date, lang: str) -> str:
    """ "Tue, Mar 10" / "3월 10일 (화)": a local date as a heading."""
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return str(format_skeleton("MMMEd", noon, tzinfo=UTC, locale=babel_locale(lang)))


def _practitioner_name(practitioner: Practitioner, lang: str) -> str:
    if lang == "ko":
        return practitioner.name_native
    return practitioner.name_latin


def _language_name(code: str | None) -> str:
    if not code:
        return ""
    return LANGUAGE_NAMES.get(normalise_language(code) or code, code)


@dataclass(frozen=True)
class AppointmentView:
    """An appointment as the pages show it, in the viewer's language and zone."""

    appointment: Appointment
    patient: Patient
    practitioner: Practitioner
    institution: Institution
    interpreter: Interpreter | None
    label: str
    local: str
    clinic: str
    visit: str
    mode: str
    status: str

    @property
    def id(self) -> int:
        return self.appointment.id


def appointment_view(db: Session, appointment: Appointment, lang: str, zone: ZoneInfo
                     ) -> AppointmentView:
    patient = db.get(Patient, appointment.patient_id)
    practitioner = db.get(Practitioner, appointment.practitioner_id)
    institution = db.get(Institution, appointment.institution_id)
    assert patient is not None and practitioner is not None and institution is not None
    interpreter = (db.get(Interpreter, appointment.interpreter_id)
                   if appointment.interpreter_id is not None else None)
    clinic_zone = resolve_zone(institution.time_zone)
    return AppointmentView(
        appointment=appointment, patient=patient, practitioner=practitioner,
        institution=institution, interpreter=interpreter,
        label=dual_zone_label(appointment.start_at, clinic_zone, zone, lang),
        local=zone_label(appointment.start_at, zone, lang),
        clinic=zone_label(appointment.start_at, clinic_zone, lang),
        visit=visit_type_by_code(appointment.visit_type).display_name(lang),
        mode=translate(lang, MODE_NAMES[appointment.visit_mode]),
        status=translate(lang, STATUS_NAMES[appointment.appointment_status]),
    )


def _render(request: Request, template: str, principal: Principal, status_code: int = 200,
            **context: Any) -> HTMLResponse:
    return render(request, template, principal, status_code=status_code, text=TEXT,
                  language_name=_language_name, **context)


# --------------------------------------------------------------------------- booking


@dataclass(frozen=True)
class VisitChoice:
    value: str
    code: str
    mode: VisitMode
    label: str


def visit_choices(lang: str) -> list[VisitChoice]:
    return [
        VisitChoice(f"{visit.code}:{mode.value}", visit.code, mode,
                    f"{visit.display_name(lang)} ({translate(lang, MODE_NAMES[mode])})")
        for visit in VISIT_TYPES for mode in sorted(visit.modes)
    ]


def _parse_visit(value: str) -> tuple[str, VisitMode]:
    code, _, mode = value.partition(":")
    try:
        return code, VisitMode(mode or VisitMode.VIDEO.value)
    except ValueError:
        raise Problem(422, "MODE_NOT_OFFERED", N_("Unknown kind of visit: {value}."),
                      params={"value": value}) from None


def _booking_patient(db: Session, principal: Principal, patient_id: int | None) -> Patient:
    if patient_id is not None:
        return service.patient_for_booking(db, principal, patient_id)
    own = service.own_patient_rows(db, principal)
    if not own:
        raise Problem(422, "PATIENT_REQUIRED", N_("Say which patient the appointment is for."))
    return own[0]


def bookable_practitioners(db: Session, institution_id: int) -> list[Practitioner]:
    """The institution's practitioners who have published hours."""
    with_hours = select(AvailabilityRow.owner_id).where(
        AvailabilityRow.owner_kind == OwnerKind.PRACTITIONER.value,
        AvailabilityRow.institution_id == institution_id)
    return list(db.execute(
        select(Practitioner).join(PractitionerRole).where(
            PractitionerRole.institution_id == institution_id, PractitionerRole.active,
            Practitioner.id.in_(with_hours)).order_by(Practitioner.name_latin)).scalars())


def _interpreter_language(value: str | None) -> str | None:
    """The form's interpreter choice: "" means "only if needed"."""
    return (value or "").strip() or None


def interpreter_languages(db: Session, institution_id: int) -> list[str]:
    found: set[str] = set()
    for interpreter in db.execute(select(Interpreter).where(
            Interpreter.institution_id == institution_id, Interpreter.active)).scalars():
        found.update(code for code in interpreter.languages or [] if code != "ko")
    return sorted(found)


@router.get("/appointments", response_class=HTMLResponse)
@service.ends_transaction
def my_appointments(request: Request, principal: Viewer, db: DbSession,
                    tz: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    lang = request_language(request)
    own = service.own_patient_rows(db, principal)
    zone = _browser_zone(tz, own[0].time_zone if own else principal.time_zone)
    rows = list(db.execute(select(Appointment).where(
        Appointment.patient_id.in_([row.id for row in own])).order_by(Appointment.start_at)
    ).scalars()) if own else []
    now = utcnow()
    upcoming = [appointment_view(db, row, lang, zone) for row in rows
                if row.end_at >= now and row.status != AppointmentStatus.CANCELLED.value]
    past = [appointment_view(db, row, lang, zone) for row in rows
            if row.end_at < now or row.status == AppointmentStatus.CANCELLED.value]
    for institution_id in sorted({row.institution_id for row in rows}):
        audit(db, principal, AuditEvent("search", "appointment", None, None, institution_id,
                                        detail={"results": len(rows)}))
    db.commit()
    return _render(request, "scheduling/appointments.html", principal, upcoming=upcoming,
                   past=past[-20:], is_patient=bool(own))


@router.get("/appointments/book", response_class=HTMLResponse)
@service.ends_transaction
def book_form(request: Request, principal: Booker, db: DbSession,
              patient_id: int | None = None,
              practitioner_id: int | None = None,
              visit: Annotated[str, Query(max_length=60)] = "follow_up:video",
              interpreter: Annotated[str, Query(max_length=LANGUAGE_TAG_LENGTH)] = "",
              tz: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    lang = request_language(request)
    patient = _booking_patient(db, principal, patient_id)
    practitioners = bookable_practitioners(db, patient.institution_id)
    chosen = practitioner_id or (practitioners[0].id if practitioners else None)
    zone = _browser_zone(tz, patient.time_zone)
    audit(db, principal, AuditEvent("read", "patient", str(patient.id), patient.id,
                                    patient.institution_id, detail={"page": "booking"}))
    db.commit()
    return _render(request, "scheduling/book.html", principal, patient=patient,
                   practitioners=practitioners, chosen=chosen, visits=visit_choices(lang),
                   visit=visit, interpreter=interpreter, zone=zone.key,
                   languages=interpreter_languages(db, patient.institution_id),
                   for_other=patient.user_id != principal.user_id,
                   practitioner_name=lambda item: _practitioner_name(item, lang))


@dataclass(frozen=True)
class DaySlots:
    heading: str
    slots: list[dict[str, str]]


def _slot_listing(db: Session, principal: Principal, lang: str, *, patient: Patient,
                  practitioner_id: int, visit: str, interpreter: str | None, zone: ZoneInfo,
                  first: date, days: int = 7, excluding: Appointment | None = None
                  ) -> dict[str, Any]:
    """What the slot partial shows: the free times of `days` days from `first` (in `zone`)."""
    institution = db.get(Institution, patient.institution_id)
    assert institution is not None
    practitioner = service.practitioner_at(db, practitioner_id, institution.id)
    code, mode = _parse_visit(visit)
    language = service.interpreter_language_needed(practitioner, patient, interpreter)
    context: dict[str, Any] = {
        "days": [], "notice": None, "error": None, "first": first, "days_count": days,
        "last_day": first + timedelta(days=days - 1),
        "previous_start": first - timedelta(days=days), "next_start": first + timedelta(days=days),
        "zone": zone, "clinic_zone": resolve_zone(institution.time_zone),
        "practitioner": practitioner, "visit": visit, "interpreter": interpreter or "",
        "patient": patient, "language": language,
    }
    doctor = _practitioner_name(practitioner, lang)
    try:
        schedule = service.schedule_for(db, practitioner, institution, code, mode)
        if language is not None:
            service.require_interpreter_language(db, institution.id, language)
            context["notice"] = _say(
                lang, "interpreter_requested" if interpreter else "interpreter_included",
                doctor=doctor, language=_language_name(language))
        slots = service.find_slots(db, schedule, first, first + timedelta(days=days - 1), zone,
                                   now=utcnow(), interpreter_language=language, patient=patient,
                                   excluding=excluding.id if excluding else None)
    except SchedulingError as error:
        if error.code.value == "INTERPRETER_LANGUAGE_UNAVAILABLE":
            context["error"] = _say(lang, "no_interpreter_language",
                                    language=_language_name(language))
        else:
            context["error"] = error.translated(lang)
        return context
    grouped: dict[date, list[dict[str, str]]] = defaultdict(list)
    for slot in slots:
        local = slot.start.astimezone(zone)
        grouped[local.date()].append({
            "start": slot.start.astimezone(schedule.zone).isoformat(),
            "label": dual_zone_label(slot.start, schedule.zone, zone, lang),
            "time": format_local_time(slot.start, zone, lang, date_style="none"),
        })
    context["days"] = [
        DaySlots(day_heading(day, lang), grouped[day])
        for day in sorted(grouped)]
    return context


@router.get("/appointments/book/slots", response_class=HTMLResponse)
@service.ends_transaction
def book_slots(request: Request, principal: Booker, db: DbSession,
               practitioner_id: int,
               visit: Annotated[str, Query(max_length=60)] = "follow_up:video",
               interpreter: Annotated[str, Query(max_length=LANGUAGE_TAG_LENGTH)] = "",
               tz: Annotated[str | None, Query(max_length=64)] = None,
               start: date | None = None,
               patient_id: int | None = None) -> Response:
    lang = request_language(request)
    patient = _booking_patient(db, principal, patient_id)
    zone = _browser_zone(tz, patient.time_zone)
    first = start or utcnow().astimezone(zone).date()
    listing = _slot_listing(db, principal, lang, patient=patient,
                            practitioner_id=practitioner_id, visit=visit,
                            interpreter=_interpreter_language(interpreter), zone=zone,
                            first=first)
    audit(db, principal, AuditEvent("search", "slot", None, patient.id, patient.institution_id,
                                    detail={"practitioner_id": practitioner_id}))
    db.commit()
    return _render(request, "scheduling/_slots.html", principal, target="/appointments/book/"
                   "confirm", **listing)


def _policy_preview(db: Session, patient: Patient, institution: Institution, start: datetime,
                    mode: VisitMode, code: str, lang: str) -> Decision | None:
    if mode is not VisitMode.VIDEO:
        return None
    condition = service.visit_condition(db, patient, institution, None)
    if condition is None:
        return None
    try:
        return service.judge_telemedicine(db, patient=patient, institution=institution,
                                          at=start, condition=condition,
                                          tri_party=code == "tri_party_consultation", lang=lang)
    except Problem as refusal:
        decision = refusal.extra.get("decision")
        return Decision.model_validate(decision) if decision else None


def _parse_start(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Problem(422, "VALIDATION_FAILED", N_("Some fields are not valid.")) from None
    if parsed.tzinfo is None:
        raise Problem(422, "NAIVE_DATETIME",
                      N_("Include a time-zone offset, e.g. 2026-11-20T09:30:00+09:00."))
    return parsed.astimezone(UTC)


@router.get("/appointments/book/confirm", response_class=HTMLResponse)
@service.ends_transaction
def book_confirm(request: Request, principal: Booker, db: DbSession,
                 practitioner_id: int, start: Annotated[str, Query(max_length=40)],
                 visit: Annotated[str, Query(max_length=60)] = "follow_up:video",
                 interpreter: Annotated[str, Query(max_length=LANGUAGE_TAG_LENGTH)] = "",
                 tz: Annotated[str | None, Query(max_length=64)] = None,
                 patient_id: int | None = None) -> Response:
    lang = request_language(request)
    patient = _booking_patient(db, principal, patient_id)
    institution = db.get(Institution, patient.institution_id)
    assert institution is not None
    practitioner = service.practitioner_at(db, practitioner_id, institution.id)
    zone = _browser_zone(tz, patient.time_zone)
    instant = _parse_start(start)
    code, mode = _parse_visit(visit)
    decision = _policy_preview(db, patient, institution, instant, mode, code, lang)
    language = service.interpreter_language_needed(practitioner, patient,
                                                   _interpreter_language(interpreter))
    audit(db, principal, AuditEvent("read", "patient", str(patient.id), patient.id,
                                    institution.id, detail={"page": "booking-confirm"}))
    db.commit()
    clinic_zone = resolve_zone(institution.time_zone)
    return _render(request, "scheduling/confirm.html", principal, patient=patient,
                   practitioner=practitioner, doctor=_practitioner_name(practitioner, lang),
                   institution=institution, start=instant.astimezone(clinic_zone).isoformat(),
                   label=dual_zone_label(instant, clinic_zone, zone, lang),
                   local=zone_label(instant, zone, lang),
                   clinic=zone_label(instant, clinic_zone, lang),
                   visit=visit, visit_name=visit_type_by_code(code).display_name(lang),
                   mode_name=translate(lang, MODE_NAMES[mode]), interpreter=interpreter,
                   language=language, decision=decision, zone=zone.key,
                   denied=decision is not None and decision.decision is DecisionKind.DENIED,
                   error=None, next_free=[])


@router.post("/appointments/book", response_class=HTMLResponse)
@service.ends_transaction
def book_submit(request: Request, principal: Booker, db: DbSession, settings: AppSettings,
                practitioner_id: Annotated[int, Form()],
                start: Annotated[str, Form(max_length=40)],
                visit: Annotated[str, Form(max_length=60)] = "follow_up:video",
                interpreter: Annotated[str, Form(max_length=LANGUAGE_TAG_LENGTH)] = "",
                tz: Annotated[str, Form(max_length=64)] = "",
                patient_id: Annotated[int | None, Form()] = None) -> Response:
    lang = request_language(request)
    patient = _booking_patient(db, principal, patient_id)
    code, mode = _parse_visit(visit)
    instant = _parse_start(start)
    zone = _browser_zone(tz, patient.time_zone)
    patient_ref = patient.id
    try:
        appointment = service.book(db, principal, service.BookingRequest(
            patient_id=patient_ref, practitioner_id=practitioner_id, start=instant,
            visit_type=code, mode=mode,
            interpreter_language=_interpreter_language(interpreter)), settings=settings)
    except Problem as refusal:
        db.rollback()
        return _refused_booking(request, principal, db, refusal, lang=lang,
                                patient_id=patient_ref, practitioner_id=practitioner_id,
                                instant=instant, visit=visit, interpreter=interpreter,
                                zone=zone)
    db.commit()
    return RedirectResponse(f"/appointments/{appointment.id}?booked=1&tz={zone.key}",
                            status_code=303)


def _refused_booking(request: Request, principal: Principal, db: Session, refusal: Problem, *,
                     lang: str, patient_id: int, practitioner_id: int, instant: datetime,
                     visit: str, interpreter: str, zone: ZoneInfo) -> Response:
    """The confirmation page again, saying why, with other times or the alternatives."""
    patient = service.patient_for_booking(db, principal, patient_id)
    institution = db.get(Institution, patient.institution_id)
    assert institution is not None
    practitioner = service.practitioner_at(db, practitioner_id, institution.id)
    clinic_zone = resolve_zone(institution.time_zone)
    code, mode = _parse_visit(visit)
    decision_data = refusal.extra.get("decision")
    next_free = [
        {"start": item["start"],
         "label": dual_zone_label(datetime.fromisoformat(item["start"]), clinic_zone, zone,
                                  lang)}
        for item in refusal.extra.get("next_free_slots", [])]
    db.rollback()
    return _render(request, "scheduling/confirm.html", principal,
                   status_code=refusal.status, patient=patient, practitioner=practitioner,
                   doctor=_practitioner_name(practitioner, lang), institution=institution,
                   start=instant.astimezone(clinic_zone).isoformat(),
                   label=dual_zone_label(instant, clinic_zone, zone, lang),
                   local=zone_label(instant, zone, lang),
                   clinic=zone_label(instant, clinic_zone, lang), visit=visit,
                   visit_name=visit_type_by_code(code).display_name(lang)
                   if code in {item.code for item in VISIT_TYPES} else code,
                   mode_name=translate(lang, MODE_NAMES[mode]), interpreter=interpreter,
                   language=None,
                   decision=Decision.model_validate(decision_data) if decision_data else None,
                   denied=refusal.code == "POLICY_DENIED", zone=zone.key,
                   error=_problem_text(refusal, lang), taken=refusal.status == 409,
                   next_free=next_free)


# --------------------------------------------------------------------------- one appointment


def _viewer_zone(db: Session, principal: Principal, access: service.AppointmentAccess,
                 tz: str | None) -> ZoneInfo:
    if access.as_patient:
        patient = db.get(Patient, access.appointment.patient_id)
        return _browser_zone(tz, patient.time_zone if patient else principal.time_zone)
    return _browser_zone(tz, principal.time_zone)


@router.get("/appointments/{appointment_id}", response_class=HTMLResponse)
@service.ends_transaction
def appointment_page(request: Request, appointment_id: int, principal: Viewer, db: DbSession,
                     booked: bool = False,
                     tz: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    lang = request_language(request)
    access = service.appointment_access(db, principal, appointment_id)
    zone = _viewer_zone(db, principal, access, tz)
    view = appointment_view(db, access.appointment, lang, zone)
    decision = (Decision.model_validate(access.appointment.policy_decision)
                if access.appointment.policy_decision else None)
    messages = []
    if access.as_staff:
        from jaejin.scheduling.notifications import outbox_status

        messages = outbox_status(db, access.appointment.id)
    audit(db, principal, AuditEvent("read", "appointment", str(appointment_id),
                                    access.appointment.patient_id,
                                    access.appointment.institution_id))
    db.commit()
    can_change = (access.as_patient or service.is_staff_of(
        principal, access.appointment.institution_id, *service.BOOKING_STAFF,
        Role.INSTITUTION_ADMIN)) and access.appointment.is_active \
        and access.appointment.start_at > utcnow()
    return _render(request, "scheduling/appointment.html", principal, view=view,
                   booked=booked, decision=decision, can_change=can_change,
                   cutoff_hours=view.institution.cancellation_cutoff_hours,
                   as_patient=access.as_patient, messages=messages,
                   doctor=_practitioner_name(view.practitioner, lang), zone=zone.key)


@router.post("/appointments/{appointment_id}/cancel", response_class=HTMLResponse)
@service.ends_transaction
def appointment_cancel(request: Request, appointment_id: int, principal: Viewer,
                       db: DbSession, settings: AppSettings,
                       reason: Annotated[str, Form(max_length=500)] = "") -> Response:
    appointment, by_staff = service.changeable_appointment(db, principal, appointment_id)
    service.cancel(db, principal, appointment, by_staff=by_staff, reason=reason or None,
                   settings=settings)
    db.commit()
    return RedirectResponse(f"/appointments/{appointment_id}", status_code=303)


@router.get("/appointments/{appointment_id}/reschedule", response_class=HTMLResponse)
@service.ends_transaction
def reschedule_form(request: Request, appointment_id: int, principal: Viewer, db: DbSession,
                    tz: Annotated[str | None, Query(max_length=64)] = None,
                    start: date | None = None) -> Response:
    lang = request_language(request)
    appointment, _by_staff = service.changeable_appointment(db, principal, appointment_id)
    access = service.appointment_access(db, principal, appointment_id)
    zone = _viewer_zone(db, principal, access, tz)
    patient = db.get(Patient, appointment.patient_id)
    assert patient is not None
    first = start or utcnow().astimezone(zone).date()
    listing = _slot_listing(db, principal, lang, patient=patient,
                            practitioner_id=appointment.practitioner_id,
                            visit=f"{appointment.visit_type}:{appointment.mode}",
                            interpreter=appointment.interpreter_language, zone=zone,
                            first=first, excluding=appointment)
    view = appointment_view(db, appointment, lang, zone)
    audit(db, principal, AuditEvent("read", "appointment", str(appointment_id), patient.id,
                                    appointment.institution_id, detail={"page": "reschedule"}))
    db.commit()
    partial = request.headers.get("hx-request") == "true"
    return _render(request, "scheduling/_slots.html" if partial else "scheduling/reschedule.html",
                   principal, view=view, move_target=f"/appointments/{appointment_id}/reschedule",
                   **listing)


@router.post("/appointments/{appointment_id}/reschedule", response_class=HTMLResponse)
@service.ends_transaction
def reschedule_submit(request: Request, appointment_id: int, principal: Viewer, db: DbSession,
                      settings: AppSettings, start: Annotated[str, Form(max_length=40)],
                      tz: Annotated[str, Form(max_length=64)] = "") -> Response:
    appointment, by_staff = service.changeable_appointment(db, principal, appointment_id)
    instant = _parse_start(start)
    try:
        service.reschedule(db, principal, appointment, instant, by_staff=by_staff,
                           settings=settings)
    except Problem as refusal:
        db.rollback()
        lang = request_language(request)
        zone = _browser_zone(tz, principal.time_zone)
        return _render(request, "web/error.html", principal, status_code=refusal.status,
                       title=_say(lang, "taken_title"),
                       detail=_problem_text(refusal, lang), code=refusal.code, errors=[],
                       zone=zone.key)
    db.commit()
    suffix = f"?tz={tz}" if tz else ""
    return RedirectResponse(f"/appointments/{appointment_id}{suffix}", status_code=303)


# --------------------------------------------------------------------------- staff calendars


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _coordinated_institution(principal: Principal, requested: int | None) -> int:
    allowed = principal.institutions_where(*COORDINATORS)
    if requested is not None:
        if requested not in allowed:
            raise not_found("institution")
        return requested
    return min(allowed)


@router.get("/scheduling/calendar", response_class=HTMLResponse)
@service.ends_transaction
def coordinator_calendar(request: Request, principal: Coordinator, db: DbSession,
                         week: date | None = None, institution_id: int | None = None
                         ) -> Response:
    lang = request_language(request)
    institution = db.get(Institution, _coordinated_institution(principal, institution_id))
    assert institution is not None
    zone = resolve_zone(institution.time_zone)
    first = _week_start(week or utcnow().astimezone(zone).date())
    days = [first + timedelta(days=offset) for offset in range(7)]
    begin, end = local_day_start(first, zone), local_day_start(first + timedelta(days=7), zone)
    appointments = appointments_between(db, institution_id=institution.id, start=begin, end=end)
    practitioners = list(db.execute(
        select(Practitioner).join(PractitionerRole).where(
            PractitionerRole.institution_id == institution.id, PractitionerRole.active)
        .order_by(Practitioner.name_latin)).scalars())
    interpreters = list(db.execute(select(Interpreter).where(
        Interpreter.institution_id == institution.id, Interpreter.active)
        .order_by(Interpreter.name)).scalars())
    cells: dict[tuple[str, int, date], list[AppointmentView]] = defaultdict(list)
    now = utcnow()
    for appointment in appointments:
        view = appointment_view(db, appointment, lang, zone)
        day = appointment.start_at.astimezone(zone).date()
        cells[("practitioner", appointment.practitioner_id, day)].append(view)
        if appointment.interpreter_id is not None:
            cells[("interpreter", appointment.interpreter_id, day)].append(view)
    assignable = {
        appointment.id: [item for item in interpreters
                         if appointment.interpreter_language is None
                         or (appointment.interpreter_language.split("-")[0]
                             in {code.split("-")[0] for code in item.languages or []})]
        for appointment in appointments
        if appointment.is_active and appointment.start_at > now}
    audit(db, principal, AuditEvent("search", "appointment", None, None, institution.id,
                                    detail={"page": "calendar", "results": len(appointments)}))
    db.commit()
    return _render(
        request, "scheduling/calendar.html", principal, institution=institution,
        days=days, day_names=[day_heading(day, lang) for day in days],
        practitioners=practitioners, interpreters=interpreters, cells=cells,
        assignable=assignable, first=first, zone_name=zone.key,
        previous_week=first - timedelta(days=7), next_week=first + timedelta(days=7),
        practitioner_name=lambda item: _practitioner_name(item, lang),
        time_of=lambda view: format_local_time(view.appointment.start_at, zone, lang,
                                               date_style="none"))


@router.post("/scheduling/appointments/{appointment_id}/interpreter",
             response_class=HTMLResponse)
@service.ends_transaction
def calendar_assign_interpreter(request: Request, appointment_id: int, principal: Coordinator,
                                db: DbSession, settings: AppSettings,
                                interpreter_id: Annotated[str, Form(max_length=20)] = "",
                                week: Annotated[str, Form(max_length=10)] = "") -> Response:
    access = service.appointment_access(db, principal, appointment_id)
    chosen: int | None = None
    if interpreter_id:
        # Only ASCII digits of a stored id: "²" passes str.isdigit and then fails int().
        if not (interpreter_id.isascii() and interpreter_id.isdigit()
                and 0 < int(interpreter_id) < 2**31):
            raise not_found("interpreter")
        chosen = int(interpreter_id)
    service.assign_interpreter(db, principal, access.appointment, chosen, settings=settings)
    db.commit()
    suffix = f"?week={week}" if week else ""
    return RedirectResponse(f"/scheduling/calendar{suffix}", status_code=303)


@router.get("/scheduling/my", response_class=HTMLResponse)
@service.ends_transaction
def own_schedule(request: Request, principal: OwnScheduleViewer, db: DbSession,
                 view: Annotated[str, Query(pattern="^(day|week)$")] = "week",
                 day: date | None = None) -> Response:
    lang = request_language(request)
    practitioner = service.own_practitioner(db, principal)
    interpreters = service.own_interpreters(db, principal)
    zone_name = (practitioner.time_zone if practitioner is not None
                 else interpreters[0].time_zone if interpreters else principal.time_zone)
    zone = resolve_zone(canonical_zone_name(zone_name))
    today = day or utcnow().astimezone(zone).date()
    first = today if view == "day" else _week_start(today)
    length = 1 if view == "day" else 7
    begin = local_day_start(first, zone)
    end = local_day_start(first + timedelta(days=length), zone)
    query = select(Appointment).where(Appointment.start_at < end, Appointment.end_at > begin,
                                      Appointment.status != AppointmentStatus.CANCELLED.value)
    owners = []
    if practitioner is not None:
        owners.append(Appointment.practitioner_id == practitioner.id)
    if interpreters:
        owners.append(Appointment.interpreter_id.in_([item.id for item in interpreters]))
    rows: list[Appointment] = []
    if owners:
        condition = owners[0] if len(owners) == 1 else owners[0] | owners[1]
        rows = list(db.execute(query.where(condition).order_by(Appointment.start_at)).scalars())
    grouped: dict[date, list[tuple[AppointmentView, str, str]]] = defaultdict(list)
    for row in rows:
        item = appointment_view(db, row, lang, zone)
        patient_zone = resolve_zone(item.patient.time_zone)
        grouped[row.start_at.astimezone(zone).date()].append((
            item, format_local_time(row.start_at, zone, lang, date_style="none"),
            zone_label(row.start_at, patient_zone, lang, date_style="weekday")))
    days = [first + timedelta(days=offset) for offset in range(length)]
    for institution_id in sorted({row.institution_id for row in rows}):
        audit(db, principal, AuditEvent("search", "appointment", None, None, institution_id,
                                        detail={"page": "own-schedule", "results": len(rows)}))
    db.commit()
    step = timedelta(days=length)
    return _render(
        request, "scheduling/my.html", principal, view=view, days=days, grouped=grouped,
        zone_name=zone.key, previous_day=first - step, next_day=first + step,
        day_names={day: day_heading(day, lang) for day in days},
        practitioner_name=lambda item: _practitioner_name(item, lang))
