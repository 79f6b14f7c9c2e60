"""The telemedicine policy engine: a pure function from a proposed visit to an explained decision.

`evaluate(request, registry)` picks the rules in force on the visit's day in Korean time (the
domestic pack, or the overseas pack and the patient's country pack when the patient is abroad),
applies every rule of that version and returns a `Decision`:

* `denied` when at least one reason has effect `deny`;
* `conditional` when nothing denies but conditions remain (consent, identity, video, tri-party,
  prescription changes): the visit may go ahead once they are met;
* `allowed` otherwise.

Every reason names the pack parameter (and so the source) that produced it. No I/O happens here:
packs, lists and holiday calendars are loaded and cached before the first call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from jaejin.policy import messages as text
from jaejin.policy.decision import (
    Alternative,
    Condition,
    Decision,
    DocumentVerdict,
    PrescriptionVerdict,
    Reason,
)
from jaejin.policy.errors import RequestError
from jaejin.policy.korean_time import KST, age_on, off_hours
from jaejin.policy.packs import (
    NARCOTIC_GROUP,
    CompiledKoreanPack,
    CompiledOverseasPack,
    CountryPack,
    PackRegistry,
)
from jaejin.policy.reference import DrugMatcher, ShortageArea
from jaejin.policy.request import EvaluationRequest, HistoryEntry, Prescription, parse_request
from jaejin.policy.units import CalendarPeriod, kcd_category
from jaejin.policy.vocabulary import (
    Code,
    DecisionKind,
    DocumentKind,
    Effect,
    PatientFlag,
    VisitMode,
)


class Sourced(Protocol):
    """Anything that carries a rule's source: a pack parameter or a fixed statutory basis."""

    @property
    def source(self) -> str: ...

    @property
    def provisional(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Basis:
    source: str
    provisional: bool = False


NO_POLICY_BASIS = Basis(
    "Medical Service Act art. 34: outside a pilot programme or the telemedicine statute, "
    "telemedicine is allowed only between medical personnel"
)
IN_PERSON_BASIS = Basis(
    "The telemedicine rules restrict telemedicine only; in-person care is governed by the Medical "
    "Service Act"
)
ALL_FLAGS = tuple(PatientFlag)
_ALTERNATIVE_MESSAGES = {
    Code.IN_PERSON_VISIT: text.ALTERNATIVE_IN_PERSON,
    Code.TRI_PARTY_CONSULTATION: text.ALTERNATIVE_TRI_PARTY,
    Code.CLINIC_TELEMEDICINE: text.ALTERNATIVE_CLINIC,
    Code.REGIONAL_TELEMEDICINE: text.ALTERNATIVE_REGIONAL,
}


class _Outcome:
    """Collects reasons, conditions and verdicts, then turns them into a Decision."""

    def __init__(self, language: str, day: date) -> None:
        self.language = language
        self.day = day
        self.reasons: list[Reason] = []
        self.conditions: list[Condition] = []
        self.prescriptions: list[PrescriptionVerdict] = []
        self.documents: list[DocumentVerdict] = []
        self.alternatives: list[Code] = []
        self.denied = False

    def t(self, message: str, **params: object) -> str:
        return text.translated(self.language, message, **params)

    def reason(
        self, code: Code, effect: Effect, basis: Sourced, message: str, *, at: int | None = None
    ) -> None:
        reason = Reason(
            code=code,
            effect=effect,
            source=basis.source,
            provisional=basis.provisional,
            message=message,
        )
        self.reasons.insert(len(self.reasons) if at is None else at, reason)
        if effect is Effect.DENY:
            self.denied = True

    def condition(self, code: Code, basis: Sourced, message: str) -> None:
        self.conditions.append(
            Condition(
                code=code,
                source=basis.source,
                provisional=basis.provisional,
                message=message,
            )
        )

    def alternative(self, *codes: Code) -> None:
        for code in codes:
            if code not in self.alternatives:
                self.alternatives.append(code)

    def finish(self, pack: str | None, country_pack: str | None) -> Decision:
        if self.denied:
            kind = DecisionKind.DENIED
            self.alternative(Code.IN_PERSON_VISIT)
        elif self.conditions:
            kind = DecisionKind.CONDITIONAL
        else:
            kind = DecisionKind.ALLOWED
        return Decision.model_construct(
            decision=kind,
            pack=pack,
            country_pack=country_pack,
            decided_on=self.day,
            lang=self.language,
            reasons=self.reasons,
            conditions=self.conditions,
            prescriptions=self.prescriptions,
            documents=self.documents,
            alternatives=[
                Alternative(code=code, message=self.t(_ALTERNATIVE_MESSAGES[code]))
                for code in self.alternatives
            ],
        )


def evaluate(request: EvaluationRequest, registry: PackRegistry) -> Decision:
    """Judge a proposed visit under the rules in force on its day in Korean time.

    Raises RequestError when the request contradicts the reference data (for example a declared
    shortage-area flag for a district that is not on the list).
    """
    local = request.at.astimezone(KST)
    outcome = _Outcome(request.lang, local.date())
    if request.visit.mode is VisitMode.IN_PERSON:
        return _in_person(request, registry, outcome)
    if request.patient.current_country != "KR":
        return _abroad(request, registry, outcome)
    return _domestic(request, registry, local, outcome)


# -- in person ---------------------------------------------------------------------------------


def _in_person(request: EvaluationRequest, registry: PackRegistry, out: _Outcome) -> Decision:
    compiled = registry.korean_rules_on(out.day)
    out.reason(Code.IN_PERSON_NOT_RESTRICTED, Effect.ALLOW, IN_PERSON_BASIS, out.t(text.IN_PERSON))
    for item in request.prescriptions:
        out.prescriptions.append(
            _verdict(
                item,
                True,
                Code.NOT_RESTRICTED_IN_PERSON,
                out.t(text.ITEM_IN_PERSON, ingredient=item.ingredient),
            )
        )
    _documents(request, frozenset(), None, out)
    country = registry.country_pack_on(request.patient.current_country, out.day)
    return out.finish(compiled.pack.id if compiled else None, country.id if country else None)


# -- patient in Korea --------------------------------------------------------------------------


def _domestic(
    request: EvaluationRequest, registry: PackRegistry, local: datetime, out: _Outcome
) -> Decision:
    country = registry.country_pack_on("KR", out.day)
    country_id = country.id if country else None
    compiled = registry.korean_rules_on(out.day)
    if compiled is None:
        _no_policy(request, out, text.NO_POLICY)
        return out.finish(None, country_id)
    rules = compiled.pack.parameters
    patient = request.patient
    flags, shortage_area = _effective_flags(request, compiled)
    age = age_on(patient.birth_date, out.day)

    if rules.nhi_coverage_required.value and not patient.nhi_covered:
        out.reason(
            Code.NOT_NHI_COVERED, Effect.DENY, rules.nhi_coverage_required, out.t(text.NOT_NHI)
        )
    institution_basis = _institution_kind(request, compiled, flags, out)
    _share_cap(request, compiled, out)
    first_visit, consultation_only = _follow_up_or_first_visit(
        request, compiled, flags, age, local, shortage_area, institution_basis, out
    )
    _video(request, compiled, out)
    days_limit = rules.days_supply_limit_without_in_person.value if first_visit else None
    any_prescribable = _prescriptions(
        request,
        compiled.drugs,
        rules.prohibited_drug_groups,
        out,
        consultation_only=consultation_only,
        consultation_basis=rules.minor_night_holiday_prescription_allowed,
        days_limit=days_limit,
        days_basis=rules.days_supply_limit_without_in_person,
        recommendation_only=False,
    )
    if any_prescribable and not out.denied:
        delivery = [
            flag for flag in ALL_FLAGS if flag in flags and flag in compiled.delivery_flags
        ]
        if delivery:
            out.reason(
                Code.DRUG_DELIVERY_ALLOWED,
                Effect.INFO,
                rules.drug_delivery_flags,
                out.t(text.DELIVERY_ALLOWED, group=text.flag_label(out.language, delivery[0])),
            )
        else:
            out.reason(
                Code.DRUG_PHARMACY_PICKUP,
                Effect.INFO,
                rules.drug_delivery_flags,
                out.t(text.PHARMACY_PICKUP),
            )
    _documents(request, compiled.prohibited_documents, rules.prohibited_documents, out)
    if rules.identity_check_required.value and not request.identity_verified:
        out.condition(
            Code.IDENTITY_CHECK_REQUIRED,
            rules.identity_check_required,
            out.t(text.IDENTITY_REQUIRED),
        )
    if rules.consent_required.value and not request.consent_recorded:
        out.condition(Code.CONSENT_REQUIRED, rules.consent_required, out.t(text.CONSENT_REQUIRED))
    return out.finish(compiled.pack.id, country_id)


def _no_policy(request: EvaluationRequest, out: _Outcome, message: str) -> None:
    out.reason(
        Code.NO_POLICY_IN_FORCE,
        Effect.DENY,
        NO_POLICY_BASIS,
        out.t(message, day=out.day.isoformat()),
    )
    for item in request.prescriptions:
        out.prescriptions.append(
            _verdict(item, False, Code.NO_POLICY_IN_FORCE, out.t(message, day=out.day.isoformat()))
        )


def _effective_flags(
    request: EvaluationRequest, compiled: CompiledKoreanPack
) -> tuple[frozenset[PatientFlag], ShortageArea | None]:
    """The patient's flags, with the shortage-area flag derived from the district when given."""
    flags = set(request.patient.flags)
    district = request.patient.residence_district
    if district is None:
        return frozenset(flags), None
    area = compiled.shortage.lookup(district.province, district.district)
    if area is not None:
        flags.add(PatientFlag.EMERGENCY_SHORTAGE_AREA)
    elif PatientFlag.EMERGENCY_SHORTAGE_AREA in flags:
        raise RequestError(
            "patient.flags",
            f"emergency_shortage_area is given, but {district.district} ({district.province}) is "
            f"not on the list {compiled.shortage.name}; drop the flag or correct the district",
        )
    return frozenset(flags), area


def _in_person_here(request: EvaluationRequest) -> list[HistoryEntry]:
    """In-person encounters at this institution, most recent first."""
    return sorted(
        (
            entry
            for entry in request.history
            if entry.mode is VisitMode.IN_PERSON and entry.same_institution
        ),
        key=lambda entry: entry.date,
        reverse=True,
    )


def _within(period: CalendarPeriod, start: date, day: date) -> bool:
    return day <= period.after(start)


def _institution_kind(
    request: EvaluationRequest,
    compiled: CompiledKoreanPack,
    flags: frozenset[PatientFlag],
    out: _Outcome,
) -> tuple[Sourced, HistoryEntry] | None:
    """Check institution kind against patient group; returns the history that made it eligible."""
    rules = compiled.pack.parameters
    kind = request.institution.kind
    if kind in compiled.clinic_kinds or rules.hospital_level_open_to_all.value:
        return None
    language = out.language
    kind_text = text.kind_label(language, kind)
    for flag in ALL_FLAGS:
        if flag in flags and flag in compiled.hospital_flags:
            out.reason(
                Code.HOSPITAL_LEVEL_GROUP,
                Effect.ALLOW,
                rules.hospital_level_flags,
                out.t(
                    text.HOSPITAL_GROUP_FLAG, kind=kind_text, group=text.flag_label(language, flag)
                ),
            )
            return None
    here = _in_person_here(request)
    rare_window = rules.hospital_level_rare_disease_window.value
    if rare_window is not None and PatientFlag.RARE_DISEASE in flags:
        for entry in here:
            if _within(rare_window, entry.date, out.day):
                out.reason(
                    Code.HOSPITAL_LEVEL_GROUP,
                    Effect.ALLOW,
                    rules.hospital_level_rare_disease_window,
                    out.t(
                        text.HOSPITAL_GROUP_RARE,
                        kind=kind_text,
                        day=entry.date.isoformat(),
                        window=text.period_label(language, rare_window),
                    ),
                )
                return rules.hospital_level_rare_disease_window, entry
    treatment_window = rules.hospital_level_treatment_window.value
    if treatment_window is not None:
        for entry in here:
            if entry.kind in compiled.treatment_kinds and _within(
                treatment_window, entry.date, out.day
            ):
                out.reason(
                    Code.HOSPITAL_LEVEL_GROUP,
                    Effect.ALLOW,
                    rules.hospital_level_treatment_window,
                    out.t(
                        text.HOSPITAL_GROUP_TREATMENT,
                        kind=kind_text,
                        treatment=text.history_kind_label(language, entry.kind),
                        day=entry.date.isoformat(),
                        window=text.period_label(language, treatment_window),
                    ),
                )
                return rules.hospital_level_treatment_window, entry
    groups = [
        text.flag_label(language, flag) for flag in ALL_FLAGS if flag in compiled.hospital_flags
    ]
    if rare_window is not None:
        groups.append(
            out.t(text.GROUP_RARE_WITHIN, window=text.period_label(language, rare_window))
        )
    if treatment_window is not None:
        treatments = "/".join(
            text.history_kind_label(language, kind)
            for kind in rules.hospital_level_treatment_kinds.value
        )
        groups.append(
            out.t(
                text.GROUP_TREATMENT_WITHIN,
                treatments=treatments,
                window=text.period_label(language, treatment_window),
            )
        )
    out.reason(
        Code.INSTITUTION_KIND_NOT_ALLOWED,
        Effect.DENY,
        rules.hospital_level_open_to_all,
        out.t(text.KIND_NOT_ALLOWED, kind=kind_text, groups=text.join(groups)),
    )
    out.alternative(Code.CLINIC_TELEMEDICINE, Code.IN_PERSON_VISIT)
    return None


def _share_cap(request: EvaluationRequest, compiled: CompiledKoreanPack, out: _Outcome) -> None:
    rules = compiled.pack.parameters
    cap = rules.share_cap.value
    if cap is None:
        return
    share = request.institution.telemedicine_share
    if share is None:
        out.condition(
            Code.SHARE_CAP_CHECK_REQUIRED,
            rules.share_cap,
            out.t(text.SHARE_UNKNOWN, cap=f"{cap:.0%}"),
        )
    elif share > cap:
        out.reason(
            Code.SHARE_CAP_EXCEEDED,
            Effect.DENY,
            rules.share_cap,
            out.t(text.SHARE_EXCEEDED, share=f"{share:.0%}", cap=f"{cap:.0%}"),
        )
        out.alternative(Code.IN_PERSON_VISIT)


@dataclass(frozen=True, slots=True)
class _FollowUp:
    found: HistoryEntry | None
    expired: HistoryEntry | None
    other_condition: HistoryEntry | None
    window: CalendarPeriod
    basis: Sourced
    chronic_group: tuple[str, str] | None


def _find_follow_up(
    request: EvaluationRequest, compiled: CompiledKoreanPack, day: date
) -> _FollowUp:
    rules = compiled.pack.parameters
    same_condition = rules.follow_up_match.value == "same_condition"
    category = kcd_category(request.visit.condition)
    window = rules.follow_up_window.value
    basis: Sourced = rules.follow_up_window
    chronic_group = None
    chronic_window = rules.follow_up_chronic_window.value
    if same_condition and chronic_window is not None and compiled.chronic is not None:
        chronic_group = compiled.chronic.group(request.visit.condition)
        if chronic_group is not None:
            window, basis = chronic_window, rules.follow_up_chronic_window
    expired: HistoryEntry | None = None
    other: HistoryEntry | None = None
    for entry in _in_person_here(request):
        if same_condition and (
            entry.condition is None or kcd_category(entry.condition) != category
        ):
            if other is None and _within(window, entry.date, day):
                other = entry
            continue
        if _within(window, entry.date, day):
            return _FollowUp(entry, None, None, window, basis, chronic_group)
        if expired is None:
            expired = entry
    return _FollowUp(None, expired, other, window, basis, chronic_group)


def _follow_up_or_first_visit(
    request: EvaluationRequest,
    compiled: CompiledKoreanPack,
    flags: frozenset[PatientFlag],
    age: int,
    local: datetime,
    shortage_area: ShortageArea | None,
    institution_basis: tuple[Sourced, HistoryEntry] | None,
    out: _Outcome,
) -> tuple[bool, bool]:
    """Add the follow-up or first-visit reasons; returns (is first visit, consultation only)."""
    rules = compiled.pack.parameters
    language = out.language
    follow_up = _find_follow_up(request, compiled, out.day)
    window_text = text.period_label(language, follow_up.window)
    if follow_up.found is not None:
        seen = follow_up.found.date.isoformat()
        if follow_up.chronic_group is not None:
            group = follow_up.chronic_group[1] if language == "ko" else follow_up.chronic_group[0]
            message = out.t(text.FOLLOW_UP_CHRONIC, day=seen, group=group, window=window_text)
        elif rules.follow_up_match.value == "same_condition":
            message = out.t(
                text.FOLLOW_UP_SAME, day=seen, condition=request.visit.condition, window=window_text
            )
        else:
            message = out.t(text.FOLLOW_UP_ANY, day=seen, window=window_text)
        out.reason(Code.FOLLOW_UP_OK, Effect.ALLOW, follow_up.basis, message)
        return False, False
    if institution_basis is not None:
        basis, entry = institution_basis
        out.reason(
            Code.FOLLOW_UP_OK,
            Effect.ALLOW,
            basis,
            out.t(text.FOLLOW_UP_BY_GROUP, day=entry.date.isoformat()),
        )
        return False, False

    position = len(out.reasons)
    denied, consultation_only = _first_visit(
        request, compiled, flags, age, local, shortage_area, out
    )
    effect = Effect.DENY if denied else Effect.INFO
    # The follow-up finding explains why this is a first visit, so it goes before that verdict.
    if follow_up.expired is not None:
        out.reason(
            Code.FOLLOW_UP_EXPIRED,
            effect,
            follow_up.basis,
            out.t(
                text.FOLLOW_UP_EXPIRED, day=follow_up.expired.date.isoformat(), window=window_text
            ),
            at=position,
        )
    elif follow_up.other_condition is not None:
        out.reason(
            Code.FOLLOW_UP_OTHER_CONDITION,
            effect,
            rules.follow_up_match,
            out.t(
                text.FOLLOW_UP_OTHER,
                day=follow_up.other_condition.date.isoformat(),
                condition=follow_up.other_condition.condition or "",
                visit_condition=request.visit.condition,
            ),
            at=position,
        )
    return True, consultation_only


def _first_visit(
    request: EvaluationRequest,
    compiled: CompiledKoreanPack,
    flags: frozenset[PatientFlag],
    age: int,
    local: datetime,
    shortage_area: ShortageArea | None,
    out: _Outcome,
) -> tuple[bool, bool]:
    """Add the first-visit reasons; returns (denied, consultation only)."""
    rules = compiled.pack.parameters
    scope = rules.first_visit_scope.value
    language = out.language
    if scope == "everyone":
        out.reason(
            Code.FIRST_VISIT_ALLOWED,
            Effect.ALLOW,
            rules.first_visit_scope,
            out.t(text.FIRST_VISIT_ALLOWED),
        )
        return False, False
    if scope == "own_region":
        return _first_visit_in_region(request, compiled, flags, out), False

    found_exception = False
    for flag in compiled.exception_flags:
        if flag in flags:
            if flag is PatientFlag.EMERGENCY_SHORTAGE_AREA and shortage_area is not None:
                district = (
                    shortage_area.district_ko if language == "ko" else shortage_area.district_rr
                )
                exception = out.t(text.EXCEPTION_SHORTAGE_DISTRICT, district=district)
            else:
                exception = text.flag_label(language, flag)
            out.reason(
                Code.FIRST_VISIT_EXCEPTION,
                Effect.ALLOW,
                rules.first_visit_exception_flags,
                out.t(text.FIRST_VISIT_EXCEPTION, exception=exception),
            )
            found_exception = True
    min_age = rules.first_visit_long_term_care_min_age.value
    if min_age is not None and PatientFlag.LONG_TERM_CARE in flags and age >= min_age:
        out.reason(
            Code.FIRST_VISIT_EXCEPTION,
            Effect.ALLOW,
            rules.first_visit_long_term_care_min_age,
            out.t(
                text.FIRST_VISIT_EXCEPTION,
                exception=out.t(text.EXCEPTION_LONG_TERM_CARE, age=min_age),
            ),
        )
        found_exception = True

    consultation_only = False
    night_rule = rules.first_visit_night_holiday.value
    hours = rules.night_hours.value
    minor_age = rules.minor_age_under.value
    if night_rule != "none" and hours is not None:
        finding = off_hours(
            local,
            weekday_from=hours.weekday_from,
            saturday_from=hours.saturday_from,
            ends=hours.ends,
            calendar_code=rules.holiday_calendar.value,
        )
        is_minor = age < minor_age
        if finding is not None and (night_rule == "everyone" or is_minor):
            when = text.off_hours_label(
                language, finding, hours.weekday_from, hours.saturday_from, hours.ends
            )
            minor_limited = is_minor and not rules.minor_night_holiday_prescription_allowed.value
            if minor_limited:
                exception = out.t(text.EXCEPTION_OFF_HOURS_MINOR, age=minor_age, when=when)
            else:
                exception = out.t(text.EXCEPTION_OFF_HOURS, when=when)
            out.reason(
                Code.FIRST_VISIT_EXCEPTION,
                Effect.ALLOW,
                rules.first_visit_night_holiday,
                out.t(text.FIRST_VISIT_EXCEPTION, exception=exception),
            )
            # Only a child whose sole ground is the night/holiday exception is limited to advice.
            consultation_only = minor_limited and not found_exception
            found_exception = True
    if found_exception:
        return False, consultation_only

    available = [text.flag_label(language, flag) for flag in compiled.exception_flags]
    if min_age is not None:
        available.append(out.t(text.EXCEPTION_LONG_TERM_CARE, age=min_age))
    if night_rule == "everyone":
        available.append(out.t(text.EXCEPTION_NIGHT_GENERIC))
    elif night_rule == "minors_only":
        available.append(out.t(text.EXCEPTION_NIGHT_MINOR_GENERIC, age=minor_age))
    out.reason(
        Code.FIRST_VISIT_NOT_ALLOWED,
        Effect.DENY,
        rules.first_visit_scope,
        out.t(text.FIRST_VISIT_NOT_ALLOWED, exceptions=text.join(available)),
    )
    out.alternative(Code.IN_PERSON_VISIT)
    return True, False


def _first_visit_in_region(
    request: EvaluationRequest,
    compiled: CompiledKoreanPack,
    flags: frozenset[PatientFlag],
    out: _Outcome,
) -> bool:
    """The statutory regional rule; returns whether it denies."""
    rules = compiled.pack.parameters
    language = out.language
    exempt = [
        flag for flag in ALL_FLAGS if flag in flags and flag in compiled.region_exempt_flags
    ]
    if exempt:
        exception = out.t(
            text.EXCEPTION_NO_REGIONAL_LIMIT, group=text.flag_label(language, exempt[0])
        )
        out.reason(
            Code.FIRST_VISIT_EXCEPTION,
            Effect.ALLOW,
            rules.first_visit_region_exempt_flags,
            out.t(text.FIRST_VISIT_EXCEPTION, exception=exception),
        )
        return False
    home = request.patient.residence_region
    institution_region = request.institution.region
    if home == institution_region:
        out.reason(
            Code.FIRST_VISIT_IN_REGION,
            Effect.ALLOW,
            rules.first_visit_scope,
            out.t(text.FIRST_VISIT_IN_REGION, region=text.region_name(language, home)),
        )
        return False
    if home is None:
        message = out.t(text.FIRST_VISIT_NO_REGION)
    else:
        message = out.t(
            text.FIRST_VISIT_OUTSIDE_REGION,
            patient_region=text.region_name(language, home),
            institution_region=text.region_name(language, institution_region),
        )
        out.alternative(Code.REGIONAL_TELEMEDICINE)
    out.reason(Code.FIRST_VISIT_OUTSIDE_REGION, Effect.DENY, rules.first_visit_scope, message)
    out.alternative(Code.IN_PERSON_VISIT)
    return True


def _video(request: EvaluationRequest, compiled: CompiledKoreanPack, out: _Outcome) -> None:
    if kcd_category(request.visit.condition) not in compiled.video_categories:
        return
    basis = compiled.pack.parameters.video_required_conditions
    if request.visit.mode is VisitMode.VIDEO:
        out.reason(Code.VIDEO_REQUIRED, Effect.INFO, basis, out.t(text.VIDEO_MET))
    else:
        out.condition(Code.VIDEO_REQUIRED, basis, out.t(text.VIDEO_REQUIRED))


def _verdict(
    item: Prescription,
    allowed: bool,
    code: Code,
    message: str,
    group: str | None = None,
    max_days: int | None = None,
) -> PrescriptionVerdict:
    return PrescriptionVerdict(
        ingredient=item.ingredient,
        atc=item.atc,
        allowed=allowed,
        code=code,
        message=message,
        group=group,
        max_days=max_days,
    )


def _banned_group(item: Prescription, drugs: DrugMatcher, visit_condition: str) -> str | None:
    if item.controlled:
        return NARCOTIC_GROUP
    indication = item.indication or visit_condition
    for entry in drugs.find(item.ingredient, item.atc):
        if entry.applies_to_indication(indication):
            return entry.group
    return None


def _prescriptions(
    request: EvaluationRequest,
    drugs: DrugMatcher,
    banned_basis: Sourced,
    out: _Outcome,
    *,
    consultation_only: bool,
    consultation_basis: Sourced,
    days_limit: int | None,
    days_basis: Sourced,
    recommendation_only: bool,
) -> bool:
    """Judge each prescription; add one condition per problem kind. Returns whether any passes."""
    language = out.language
    prohibited: list[str] = []
    over_limit: list[str] = []
    any_allowed = False
    for item in request.prescriptions:
        group = _banned_group(item, drugs, request.visit.condition)
        if group is not None:
            prohibited.append(item.ingredient)
            out.prescriptions.append(
                _verdict(
                    item,
                    False,
                    Code.PRESCRIPTION_PROHIBITED,
                    out.t(
                        text.ITEM_PROHIBITED,
                        ingredient=item.ingredient,
                        group=text.drug_group_label(language, group),
                    ),
                    group=group,
                )
            )
        elif consultation_only:
            out.prescriptions.append(
                _verdict(
                    item,
                    False,
                    Code.MINOR_NO_PRESCRIPTION,
                    out.t(text.ITEM_MINOR, ingredient=item.ingredient),
                )
            )
        elif days_limit is not None and item.days > days_limit:
            over_limit.append(item.ingredient)
            out.prescriptions.append(
                _verdict(
                    item,
                    False,
                    Code.DAYS_SUPPLY_LIMIT,
                    out.t(
                        text.ITEM_DAYS, ingredient=item.ingredient, days=item.days, limit=days_limit
                    ),
                    max_days=days_limit,
                )
            )
        elif recommendation_only:
            any_allowed = True
            out.prescriptions.append(
                _verdict(
                    item,
                    True,
                    Code.PRESCRIPTION_RECOMMENDATION_ONLY,
                    out.t(text.ITEM_RECOMMENDATION, ingredient=item.ingredient),
                )
            )
        else:
            any_allowed = True
            out.prescriptions.append(
                _verdict(
                    item,
                    True,
                    Code.PRESCRIPTION_OK,
                    out.t(text.ITEM_OK, ingredient=item.ingredient),
                    max_days=days_limit,
                )
            )
    if prohibited:
        out.condition(
            Code.PRESCRIPTION_PROHIBITED,
            banned_basis,
            out.t(text.PRESCRIPTIONS_PROHIBITED, ingredients=text.join(prohibited)),
        )
    if consultation_only and len(prohibited) < len(request.prescriptions):
        out.condition(
            Code.MINOR_NO_PRESCRIPTION, consultation_basis, out.t(text.MINOR_NO_PRESCRIPTION)
        )
    if over_limit:
        out.condition(
            Code.DAYS_SUPPLY_LIMIT,
            days_basis,
            out.t(text.DAYS_LIMIT, limit=days_limit, ingredients=text.join(over_limit)),
        )
    return any_allowed


def _documents(
    request: EvaluationRequest,
    prohibited: frozenset[DocumentKind],
    basis: Sourced | None,
    out: _Outcome,
) -> None:
    refused: list[DocumentKind] = []
    for document in request.documents:
        name = text.document_label(out.language, document.kind)
        if document.kind in prohibited:
            out.documents.append(
                DocumentVerdict(
                    kind=document.kind,
                    allowed=False,
                    code=Code.CERTIFICATE_NOT_ALLOWED,
                    message=out.t(text.CERTIFICATE_NOT_ALLOWED, document=name),
                )
            )
            if document.kind not in refused:
                refused.append(document.kind)
        else:
            out.documents.append(
                DocumentVerdict(
                    kind=document.kind,
                    allowed=True,
                    code=Code.DOCUMENT_OK,
                    message=out.t(text.DOCUMENT_OK, document=name),
                )
            )
    for kind in refused:
        assert basis is not None
        out.condition(
            Code.CERTIFICATE_NOT_ALLOWED,
            basis,
            out.t(text.CERTIFICATE_NOT_ALLOWED, document=text.document_label(out.language, kind)),
        )


# -- patient abroad ----------------------------------------------------------------------------


def _abroad(request: EvaluationRequest, registry: PackRegistry, out: _Outcome) -> Decision:
    country_code = request.patient.current_country
    found_country = registry.country_pack_on(country_code, out.day)
    compiled = registry.overseas_rules_on(out.day)
    if compiled is None or found_country is None:
        _no_policy(request, out, text.NO_OVERSEAS_POLICY)
        return out.finish(None, found_country.id if found_country else None)
    country = found_country
    rules = compiled.pack.parameters
    country_text = text.country_name(out.language, country_code)
    tri_party_possible = (
        rules.tri_party_allowed.value and country.parameters.tri_party_allowed.value
    )
    direct_possible = (
        rules.direct_care_allowed.value and country.parameters.foreign_doctor_direct_allowed.value
    )
    direct = False
    if request.visit.tri_party:
        if tri_party_possible:
            out.reason(
                Code.CROSS_BORDER_TRI_PARTY_OK,
                Effect.ALLOW,
                rules.tri_party_allowed,
                out.t(text.TRI_PARTY_OK, country=country_text),
            )
        else:
            _cross_border_refused(compiled, country, country_text, out)
    elif direct_possible:
        direct = True
        out.reason(
            Code.CROSS_BORDER_DIRECT_OK,
            Effect.ALLOW,
            Basis(
                f"{rules.direct_care_allowed.source}; "
                f"{country.parameters.foreign_doctor_direct_allowed.source}",
                rules.direct_care_allowed.provisional
                or country.parameters.foreign_doctor_direct_allowed.provisional,
            ),
            out.t(text.DIRECT_OK, country=country_text),
        )
    else:
        effect = Effect.CONDITION if tri_party_possible else Effect.DENY
        if not rules.direct_care_allowed.value:
            out.reason(
                Code.CROSS_BORDER_DIRECT_NOT_ALLOWED,
                effect,
                rules.direct_care_allowed,
                out.t(text.DIRECT_NOT_ALLOWED_KOREA),
            )
        if not country.parameters.foreign_doctor_direct_allowed.value:
            out.reason(
                Code.CROSS_BORDER_DIRECT_NOT_ALLOWED,
                effect,
                country.parameters.foreign_doctor_direct_allowed,
                out.t(text.DIRECT_NOT_ALLOWED_COUNTRY, country=country_text),
            )
        if tri_party_possible:
            out.condition(
                Code.CROSS_BORDER_TRI_PARTY_REQUIRED,
                rules.tri_party_allowed,
                out.t(text.TRI_PARTY_REQUIRED, country=country_text),
            )
            out.alternative(Code.TRI_PARTY_CONSULTATION)
        else:
            _cross_border_refused(compiled, country, country_text, out)

    _prescriptions(
        request,
        compiled.drugs,
        rules.prohibited_drug_groups,
        out,
        consultation_only=False,
        consultation_basis=rules.prohibited_drug_groups,
        days_limit=None,
        days_basis=rules.prohibited_drug_groups,
        recommendation_only=not direct,
    )
    korean = registry.korean_rules_on(out.day)
    if korean is not None:
        _documents(
            request, korean.prohibited_documents, korean.pack.parameters.prohibited_documents, out
        )
    else:
        _documents(request, frozenset(), None, out)
    if rules.identity_check_required.value and not request.identity_verified:
        out.condition(
            Code.IDENTITY_CHECK_REQUIRED,
            rules.identity_check_required,
            out.t(text.IDENTITY_REQUIRED),
        )
    if rules.consent_required.value and not request.consent_recorded:
        out.condition(Code.CONSENT_REQUIRED, rules.consent_required, out.t(text.CONSENT_REQUIRED))
    return out.finish(compiled.pack.id, country.id)


def _cross_border_refused(
    compiled: CompiledOverseasPack, country: CountryPack, country_text: str, out: _Outcome
) -> None:
    korean_allows = compiled.pack.parameters.tri_party_allowed
    basis: Sourced = (
        korean_allows if not korean_allows.value else country.parameters.tri_party_allowed
    )
    out.reason(
        Code.CROSS_BORDER_NOT_ALLOWED,
        Effect.DENY,
        basis,
        out.t(text.CROSS_BORDER_NOT_ALLOWED, country=country_text),
    )
    out.alternative(Code.IN_PERSON_VISIT)


def evaluate_json(data: object, registry: PackRegistry) -> dict[str, object]:
    """Validate decoded JSON, judge it and return the JSON-ready response body.

    Raises pydantic.ValidationError (bad input, field named) or RequestError.
    """
    decision = evaluate(parse_request(data), registry)
    return decision.model_dump(mode="json")
