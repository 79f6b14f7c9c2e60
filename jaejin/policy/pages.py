"""Policy pages: the rules in force and each institution's telemedicine share against its cap
(institution admins and auditors), and checking a proposed visit for one of your patients
(clinicians).

The decision is shown by the partial `policy/_decision.html`, which the booking and visit pages
include too (its expected context is documented at the top of the template).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEvent
from jaejin.core.authn import DbSession, Principal, audit, requires
from jaejin.core.database import utcnow
from jaejin.core.errors import not_found, request_language
from jaejin.core.i18n import N_, translate
from jaejin.directory.model import check_time_zone
from jaejin.directory.store import Institution, Patient
from jaejin.policy import messages as text
from jaejin.policy.decision import Decision
from jaejin.policy.engine import evaluate
from jaejin.policy.errors import RequestError
from jaejin.policy.korean_time import KST
from jaejin.policy.packs import (
    KoreanPack,
    NightHours,
    OverseasPack,
    Pack,
    Param,
)
from jaejin.policy.records import (
    DayShare,
    bad_request_problem,
    daily_shares,
    field_errors,
    policy_registry,
    request_for_visit,
    telemedicine_counts,
)
from jaejin.policy.request import EvaluationRequest, KcdCode
from jaejin.policy.units import CalendarPeriod
from jaejin.policy.vocabulary import (
    DocumentKind,
    InstitutionKind,
    PatientFlag,
    VisitMode,
)
from jaejin.web import navigation
from jaejin.web.templating import render

router = APIRouter(include_in_schema=False)

OVERSIGHT = (Role.INSTITUTION_ADMIN, Role.AUDITOR)
Overseer = Annotated[Principal, Depends(requires(*OVERSIGHT))]
Clinician = Annotated[Principal, Depends(requires(Role.CLINICIAN))]

navigation.register(
    "/policy", N_("Telemedicine rules"),
    N_("The rule packs in force with their sources, and each institution's telemedicine share "
       "against the cap."),
    set(OVERSIGHT), order=60,
)
navigation.register(
    "/policy/check", N_("Check a telemedicine visit"),
    N_("See whether the rules allow a proposed visit for one of your patients, and why."),
    {Role.CLINICIAN}, order=35,
)

#: Prescription rows on the check form.
PRESCRIPTION_ROWS = 3
#: Patients offered in the check form's list (narrow it with the search box).
PATIENT_CHOICES = 200
TREND_DAYS = 30

# -- the rules in force ------------------------------------------------------------------------

PARAMETER_LABELS: dict[str, str] = {
    "rule_basis": N_("Legal basis"),
    "nhi_coverage_required": N_("National health insurance coverage required"),
    "clinic_level_kinds": N_("Clinic-level institution kinds"),
    "hospital_level_open_to_all": N_("Hospital-level institutions open to every patient"),
    "hospital_level_flags": N_("Patient groups allowed at hospital-level institutions"),
    "hospital_level_rare_disease_window": N_(
        "Rare disease at hospital level: in-person visit there within"
    ),
    "hospital_level_treatment_window": N_(
        "Hospital level after surgery or a procedure there: within"
    ),
    "hospital_level_treatment_kinds": N_("Treatments that qualify at hospital level"),
    "share_cap": N_("Cap on the institution's telemedicine share (30 days)"),
    "follow_up_match": N_("Follow-up: which earlier in-person visit counts"),
    "follow_up_window": N_("Follow-up window"),
    "follow_up_chronic_window": N_("Follow-up window for chronic diseases"),
    "chronic_disease_list": N_("Chronic-disease list"),
    "first_visit_scope": N_("First visits"),
    "first_visit_exception_flags": N_("First-visit exceptions (patient groups)"),
    "first_visit_long_term_care_min_age": N_(
        "First visit with a long-term-care grade: minimum age"
    ),
    "first_visit_region_exempt_flags": N_("Groups exempt from the regional limit"),
    "emergency_shortage_area_list": N_("Emergency-care shortage area list"),
    "first_visit_night_holiday": N_("First visits at night and on holidays"),
    "night_hours": N_("Night hours (Korean time)"),
    "holiday_calendar": N_("Public holiday calendar"),
    "minor_age_under": N_("Children: under this age"),
    "minor_night_holiday_prescription_allowed": N_(
        "Children's night or holiday first visits: prescriptions allowed"
    ),
    "prohibited_drug_list": N_("Prohibited-drug list"),
    "prohibited_drug_groups": N_("Prohibited drug groups"),
    "days_supply_limit_without_in_person": N_("Days' supply limit without an in-person record"),
    "prohibited_documents": N_("Documents not issued by telemedicine"),
    "video_required_conditions": N_("Conditions that must be seen on video (KCD)"),
    "identity_check_required": N_("Identity check required"),
    "consent_required": N_("Consent to telemedicine required"),
    "drug_delivery_flags": N_("Groups whose medicines may be delivered home"),
    "tri_party_allowed": N_("Tri-party consultation with the local physician allowed"),
    "direct_care_allowed": N_("Direct telemedicine to a patient abroad allowed"),
}
CHOICE_LABELS: dict[str, str] = {
    "same_condition": N_("only for the same condition (KCD category)"),
    "any_condition": N_("for any condition"),
    "exceptions_only": N_("only for the listed exceptions"),
    "everyone": N_("everyone"),
    "own_region": N_("only with an institution in the patient's own region"),
    "minors_only": N_("children only"),
    "none": N_("not allowed"),
}
KIND_TITLES: dict[str, str] = {
    "korea": N_("Korea"),
    "overseas": N_("Patients abroad"),
    "country": N_("Patient's country"),
}
NOT_IN_VERSION = N_("— (no such rule in this version)")


@dataclass(frozen=True, slots=True)
class ParameterRow:
    name: str
    label: str
    value: str
    source: str
    provisional: bool


def _enum_label(language: str, value: str) -> str:
    if value in PatientFlag.__members__.values():
        return text.flag_label(language, PatientFlag(value))
    if value in InstitutionKind.__members__.values():
        return text.kind_label(language, InstitutionKind(value))
    if value in DocumentKind.__members__.values():
        return text.document_label(language, DocumentKind(value))
    if value in text.DRUG_GROUP_LABELS:
        return text.drug_group_label(language, value)
    if value in text.HISTORY_KIND_LABELS:
        return text.history_kind_label(language, value)
    if value in CHOICE_LABELS:
        return translate(language, CHOICE_LABELS[value])
    return value


def parameter_value(language: str, name: str, value: object) -> str:
    """A parameter's value as a reader understands it, in `language`."""
    if value is None:
        return translate(language, NOT_IN_VERSION)
    if isinstance(value, bool):
        return translate(language, "Yes") if value else translate(language, "No")
    if name == "share_cap" and isinstance(value, float):
        return f"{value:.0%}"
    if isinstance(value, CalendarPeriod):
        return f"{text.period_label(language, value)} ({value})"
    if isinstance(value, NightHours):
        return translate(
            language, N_("weekdays from {weekday}, Saturdays from {saturday}, until {ends}"),
            weekday=value.weekday_from.strftime("%H:%M"),
            saturday=value.saturday_from.strftime("%H:%M"), ends=value.ends.strftime("%H:%M"),
        )
    if isinstance(value, list):
        if not value:
            return translate(language, N_("none"))
        return ", ".join(_enum_label(language, str(item)) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {item}" for key, item in value.items())
    if isinstance(value, str):
        return _enum_label(language, value)
    return str(value)


def parameter_rows(pack: Pack, language: str) -> list[ParameterRow]:
    rows: list[ParameterRow] = []
    parameters = pack.parameters
    for name in type(parameters).model_fields:
        parameter = getattr(parameters, name)
        if not isinstance(parameter, Param):
            continue
        rows.append(
            ParameterRow(
                name=name,
                label=translate(language, PARAMETER_LABELS.get(name, name)),
                value=parameter_value(language, name, parameter.value),
                source=parameter.source,
                provisional=parameter.provisional,
            )
        )
    return rows


def pack_title(pack: Pack, language: str) -> str:
    return pack.title.ko if language == "ko" else pack.title.en


def provisional_count(pack: Pack) -> int:
    parameters = [getattr(pack.parameters, name) for name in type(pack.parameters).model_fields]
    return sum(1 for parameter in parameters if isinstance(parameter, Param)
               and parameter.provisional)


# -- the share chart ---------------------------------------------------------------------------

GAUGE_WIDTH = 560
TREND_WIDTH = 560
TREND_HEIGHT = 160


@dataclass(frozen=True, slots=True)
class TrendPoint:
    day: date
    x: float
    y: float
    share: float
    encounters: int
    telemedicine: int


@dataclass(frozen=True, slots=True)
class ShareChart:
    """One institution's share over the last 30 days against the cap, with chart geometry."""

    institution: Institution
    share: float
    encounters: int
    telemedicine: int
    cap: float | None
    cap_source: str | None
    cap_provisional: bool
    share_x: float
    cap_x: float | None
    trend: list[TrendPoint]
    trend_top: float
    trend_cap_y: float | None
    trend_ticks: list[tuple[float, str]]

    @property
    def over_cap(self) -> bool:
        return self.cap is not None and self.share > self.cap

    @property
    def trend_points(self) -> str:
        return " ".join(f"{point.x:.1f},{point.y:.1f}" for point in self.trend)


def _trend_y(share: float, top: float) -> float:
    return TREND_HEIGHT - share / top * TREND_HEIGHT


def share_chart(db: Session, institution: Institution, cap: Param[Any] | None,
                now: datetime) -> ShareChart:
    encounters, telemedicine = telemedicine_counts(db, institution.id, now)
    share = telemedicine / encounters if encounters else 0.0
    cap_value: float | None = cap.value if cap is not None else None
    days: list[DayShare] = daily_shares(db, institution.id, days=TREND_DAYS, until=now)
    highest = max([day.rolling_share for day in days] + [share, cap_value or 0.0, 0.1])
    # The trend's scale: the next 10 % above everything drawn, so the cap line is never clipped.
    top = min(1.0, math.ceil(highest * 1.2 * 10) / 10)
    step = TREND_WIDTH / max(1, len(days) - 1)
    trend = [
        TrendPoint(day.day, index * step, _trend_y(day.rolling_share, top), day.rolling_share,
                   day.encounters, day.telemedicine)
        for index, day in enumerate(days)
    ]
    tick_values = [top * fraction for fraction in (0.0, 0.5, 1.0)]
    return ShareChart(
        institution=institution,
        share=share,
        encounters=encounters,
        telemedicine=telemedicine,
        cap=cap_value,
        cap_source=cap.source if cap is not None else None,
        cap_provisional=cap.provisional if cap is not None else False,
        share_x=share * GAUGE_WIDTH,
        cap_x=cap_value * GAUGE_WIDTH if cap_value is not None else None,
        trend=trend,
        trend_top=top,
        trend_cap_y=_trend_y(cap_value, top) if cap_value is not None else None,
        trend_ticks=[(_trend_y(value, top), f"{value:.0%}") for value in tick_values],
    )


# -- /policy -----------------------------------------------------------------------------------


@router.get("/policy", response_class=HTMLResponse)
def policy_overview(
    request: Request,
    principal: Overseer,
    db: DbSession,
    day: Annotated[date | None, Query(description="A Korean calendar day, YYYY-MM-DD.")] = None,
) -> Response:
    registry = policy_registry()
    language = request_language(request)
    now = utcnow()
    today = now.astimezone(KST).date()
    chosen = day or today
    korean = registry.korean_rules_on(chosen)
    overseas = registry.overseas_rules_on(chosen)
    in_force: list[tuple[Pack, list[ParameterRow]]] = [
        (compiled.pack, parameter_rows(compiled.pack, language))
        for compiled in (korean, overseas) if compiled is not None
    ]
    all_packs = sorted(registry.packs, key=lambda pack: (
        {"korea": 0, "overseas": 1, "country": 2}[pack.kind], pack.in_force.starts, pack.id))
    today_rules = registry.korean_rules_on(today)
    cap = today_rules.pack.parameters.share_cap if today_rules is not None else None
    institution_ids = principal.institutions_where(*OVERSIGHT)
    institutions = db.execute(
        select(Institution).where(Institution.id.in_(institution_ids)).order_by(Institution.id)
    ).scalars()
    # Counts per institution only, no patient is identified: this is not a read of patient data.
    charts = [share_chart(db, institution, cap, now) for institution in institutions]
    return render(
        request, "policy/overview.html", principal,
        chosen_day=chosen, today=today, korean_pack=korean.pack if korean else None,
        in_force=in_force, all_packs=all_packs, charts=charts,
        today_pack=today_rules.pack if today_rules else None,
        pack_title=pack_title, provisional_count=provisional_count, kind_titles=KIND_TITLES,
        gauge_width=GAUGE_WIDTH, trend_width=TREND_WIDTH, trend_height=TREND_HEIGHT,
        is_korean=lambda pack: isinstance(pack, KoreanPack),
        is_overseas=lambda pack: isinstance(pack, OverseasPack),
    )


# -- /policy/check -----------------------------------------------------------------------------


class PrescriptionLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ingredient: str = Field(min_length=1, max_length=200)
    days: int = Field(ge=1, le=365)


class VisitProposal(BaseModel):
    """The check form, validated before any record is read."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    patient_id: int
    at: datetime
    time_zone: str
    mode: VisitMode
    condition: KcdCode
    tri_party: bool = False
    prescriptions: list[PrescriptionLine] = Field(default_factory=list)
    documents: list[DocumentKind] = Field(default_factory=list)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_time_zone(value)

    @model_validator(mode="after")
    def _local_time_exists(self) -> VisitProposal:
        if self.at.tzinfo is not None:
            return self
        zone = ZoneInfo(self.time_zone)
        first = self.at.replace(tzinfo=zone, fold=0)
        second = self.at.replace(tzinfo=zone, fold=1)
        if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != self.at:
            raise ValueError(f"at: {self.at:%Y-%m-%d %H:%M} does not exist in {self.time_zone} "
                             "(the clocks skip it)")
        if first.utcoffset() != second.utcoffset():
            raise ValueError(f"at: {self.at:%Y-%m-%d %H:%M} happens twice in {self.time_zone} "
                             "(the clocks go back); choose a time outside that hour")
        return self

    @property
    def moment(self) -> datetime:
        """The visit's instant (UTC); a time without an offset is read in `time_zone`."""
        local = self.at if self.at.tzinfo else self.at.replace(tzinfo=ZoneInfo(self.time_zone))
        return local.astimezone(UTC)


NONEXISTENT_TIME = N_("This time does not exist in {zone}: the clocks skip it.")
NOT_A_TIME = N_("Must be a real date and time (YYYY-MM-DD HH:MM).")
AMBIGUOUS_TIME = N_("This time happens twice in {zone}: choose a time outside that hour.")


@dataclass
class CheckForm:
    """What the form shows: the values as typed, and an error per field."""

    values: dict[str, Any]
    errors: dict[str, str]
    summary: list[tuple[str, str]]


def _form_values(raw: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """The proposal's input from the posted form; rows of the prescription table kept."""
    rows: list[int] = []
    prescriptions: list[dict[str, Any]] = []
    for row in range(PRESCRIPTION_ROWS):
        ingredient = str(raw.get(f"prescription_{row}_ingredient", "")).strip()
        days = str(raw.get(f"prescription_{row}_days", "")).strip()
        if ingredient or days:
            rows.append(row)
            prescriptions.append({"ingredient": ingredient, "days": days})
    values: dict[str, Any] = {
        "patient_id": raw.get("patient_id", ""),
        "at": raw.get("at", ""),
        "time_zone": raw.get("time_zone", ""),
        "mode": raw.get("mode", ""),
        "condition": raw.get("condition", ""),
        "tri_party": raw.get("tri_party") in {"on", "true", "1"},
        "prescriptions": prescriptions,
        "documents": raw.get("documents", []),
    }
    return values, rows


def _form_field(location: tuple[int | str, ...], rows: list[int]) -> str:
    """The form control a validation problem belongs to."""
    if location and location[0] == "prescriptions" and len(location) >= 3:
        return f"prescription_{rows[int(location[1])]}_{location[2]}"
    if location and location[0] == "documents":
        return "documents"
    return str(location[0]) if location else "form"


def _proposal_errors(language: str, error: ValidationError, rows: list[int],
                     zone: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    errors: dict[str, str] = {}
    for detail, described in zip(error.errors(include_url=False), field_errors(error),
                                 strict=True):
        location = tuple(detail["loc"])
        message = str(detail.get("msg", ""))
        field = _form_field(location, rows)
        if message.startswith("Value error, at:"):
            field = "at"
            template = NONEXISTENT_TIME if "does not exist" in message else AMBIGUOUS_TIME
            rendered = translate(language, template, zone=zone)
        elif field == "at":
            rendered = translate(language, NOT_A_TIME)
        else:
            rendered = described.rendered(language)["message"]
        errors.setdefault(field, rendered)
    return errors, list(errors.items())


def _patient_choices(db: Session, principal: Principal, q: str) -> list[Patient]:
    scope = principal.institutions_where(Role.CLINICIAN)
    query = select(Patient).where(Patient.institution_id.in_(scope))
    if q:
        query = query.where(or_(
            Patient.mrn == q,
            (Patient.family_name_latin + " " + Patient.given_name_latin).ilike(f"%{q}%"),
            (Patient.family_name_native + Patient.given_name_native).like(f"%{q}%"),
        ))
    query = query.order_by(Patient.family_name_latin, Patient.given_name_latin, Patient.id)
    return list(db.execute(query.limit(PATIENT_CHOICES)).scalars())


def _default_time(principal: Principal) -> str:
    zone = ZoneInfo(principal.time_zone)
    local = utcnow().astimezone(zone)
    # The next quarter hour: a visit proposed now is booked a little ahead.
    rounded = local.replace(second=0, microsecond=0) + timedelta(minutes=15 - local.minute % 15)
    return rounded.strftime("%Y-%m-%dT%H:%M")


def _render_check(request: Request, principal: Principal, db: Session, *, form: CheckForm,
                  q: str = "", decision: Decision | None = None,
                  facts: EvaluationRequest | None = None, patient: Patient | None = None,
                  status_code: int = 200) -> Response:
    patients = _patient_choices(db, principal, q)
    if patient is not None and all(choice.id != patient.id for choice in patients):
        patients.insert(0, patient)
    audit(db, principal, AuditEvent("search", "patient", None, purpose="treatment",
                                    detail={"query": bool(q), "results": len(patients),
                                            "page": "policy_check"}))
    db.commit()
    return render(
        request, "policy/check.html", principal, status_code=status_code,
        form=form, q=q, patients=patients, decision=decision, facts=facts,
        patient=patient, modes=list(VisitMode), document_kinds=list(DocumentKind),
        document_label=text.document_label, prescription_rows=range(PRESCRIPTION_ROWS),
        last_in_person=_last_in_person(facts),
    )


def _last_in_person(facts: EvaluationRequest | None) -> date | None:
    if facts is None:
        return None
    days = [entry.date for entry in facts.history if entry.mode is VisitMode.IN_PERSON]
    return max(days) if days else None


@router.get("/policy/check", response_class=HTMLResponse)
def check_form(
    request: Request,
    principal: Clinician,
    db: DbSession,
    q: Annotated[str, Query(max_length=100)] = "",
    patient_id: Annotated[int | None, Query()] = None,
) -> Response:
    values: dict[str, Any] = {
        "patient_id": patient_id or "", "at": _default_time(principal),
        "time_zone": principal.time_zone, "mode": VisitMode.VIDEO.value, "condition": "",
        "tri_party": False, "prescriptions": [], "documents": [],
    }
    return _render_check(request, principal, db, form=CheckForm(values, {}, []), q=q)


FormText = Annotated[str, Form(max_length=200)]


@router.post("/policy/check", response_class=HTMLResponse)
def check_visit(
    request: Request,
    principal: Clinician,
    db: DbSession,
    patient_id: FormText = "",
    at: FormText = "",
    time_zone: FormText = "",
    mode: FormText = "",
    condition: FormText = "",
    tri_party: FormText = "",
    prescription_0_ingredient: FormText = "",
    prescription_0_days: FormText = "",
    prescription_1_ingredient: FormText = "",
    prescription_1_days: FormText = "",
    prescription_2_ingredient: FormText = "",
    prescription_2_days: FormText = "",
    documents: Annotated[list[str] | None, Form(max_length=len(DocumentKind))] = None,
) -> Response:
    # Every field arrives as text and is checked by VisitProposal, so a bad value comes back
    # on the form beside its field instead of as a bare error page.
    raw: dict[str, Any] = {
        "patient_id": patient_id, "at": at, "time_zone": time_zone, "mode": mode,
        "condition": condition, "tri_party": tri_party,
        "prescription_0_ingredient": prescription_0_ingredient,
        "prescription_0_days": prescription_0_days,
        "prescription_1_ingredient": prescription_1_ingredient,
        "prescription_1_days": prescription_1_days,
        "prescription_2_ingredient": prescription_2_ingredient,
        "prescription_2_days": prescription_2_days,
        "documents": documents or [],
    }
    return _judge(request, principal, db, raw)


def _judge(request: Request, principal: Principal, db: Session, raw: dict[str, Any]) -> Response:
    language = request_language(request)
    values, rows = _form_values(raw)
    try:
        proposal = VisitProposal.model_validate(values)
    except ValidationError as error:
        errors, summary = _proposal_errors(language, error, rows,
                                           str(values.get("time_zone") or ""))
        # Bad input: nothing is read or written; the form comes back with each field explained.
        return render(
            request, "policy/check.html", principal, status_code=422,
            form=CheckForm(values, errors, summary), q="", patients=[], decision=None,
            facts=None, patient=None, modes=list(VisitMode), document_kinds=list(DocumentKind),
            document_label=text.document_label, prescription_rows=range(PRESCRIPTION_ROWS),
            last_in_person=None, bad_input=True,
        )
    patient = db.get(Patient, proposal.patient_id)
    if patient is None or not principal.can_act_for(patient.institution_id, Role.CLINICIAN):
        raise not_found("patient")
    institution = db.get(Institution, patient.institution_id)
    if institution is None:
        raise not_found("institution")
    try:
        facts = request_for_visit(
            db, patient=patient, institution=institution, at=proposal.moment,
            mode=proposal.mode.value, condition=proposal.condition,
            tri_party=proposal.tri_party,
            prescriptions=[line.model_dump() for line in proposal.prescriptions],
            documents=[kind.value for kind in proposal.documents], lang=language,
        )
        decision = evaluate(facts, policy_registry())
    except (ValidationError, RequestError) as error:
        # The patient's records (not the form) contradict the rules' vocabulary: say which.
        problem = bad_request_problem(error)
        audit(db, principal, AuditEvent("evaluate_policy", "patient", str(patient.id),
                                        patient.id, patient.institution_id, outcome="failure",
                                        detail={"code": problem.code}))
        summary = [(item.field, item.rendered(language)["message"]) for item in problem.errors]
        return _render_check(request, principal, db, form=CheckForm(values, {}, summary),
                             patient=patient, status_code=422)
    audit(db, principal, AuditEvent("evaluate_policy", "patient", str(patient.id), patient.id,
                                    patient.institution_id,
                                    detail={"decision": decision.decision.value,
                                            "pack": decision.pack,
                                            "at": proposal.moment.isoformat()}))
    return _render_check(request, principal, db, form=CheckForm(values, {}, []),
                         decision=decision, facts=facts, patient=patient)

