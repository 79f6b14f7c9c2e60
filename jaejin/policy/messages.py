"""Every user-facing text of the policy engine, English as the msgid, and label helpers."""

from __future__ import annotations

import gettext
from datetime import time
from functools import lru_cache

import pycountry

from jaejin.core.i18n import N_, get_translator
from jaejin.policy.iso import COUNTRIES, KOREAN_REGIONS
from jaejin.policy.korean_time import OffHours, OffHoursFinding
from jaejin.policy.units import CalendarPeriod
from jaejin.policy.vocabulary import DocumentKind, InstitutionKind, PatientFlag

FLAG_LABELS: dict[PatientFlag, str] = {
    PatientFlag.LONG_TERM_CARE: N_("long-term-care grade"),
    PatientFlag.ISLAND_REMOTE: N_("island or remote-area resident"),
    PatientFlag.REGISTERED_DISABILITY: N_("registered disability"),
    PatientFlag.EMERGENCY_SHORTAGE_AREA: N_("resident of an emergency-care shortage area"),
    PatientFlag.RARE_DISEASE: N_("rare disease"),
    PatientFlag.TYPE1_DIABETES: N_("type 1 diabetes"),
    PatientFlag.INFECTIOUS_ISOLATION: N_("confirmed infectious disease in isolation"),
    PatientFlag.CORRECTIONAL_INMATE: N_("inmate of a correctional facility"),
    PatientFlag.MOBILITY_IMPAIRED: N_("limited mobility"),
}
KIND_LABELS: dict[InstitutionKind, str] = {
    InstitutionKind.CLINIC: N_("clinic"),
    InstitutionKind.HOSPITAL: N_("hospital"),
    InstitutionKind.GENERAL_HOSPITAL: N_("general hospital"),
    InstitutionKind.TERTIARY_HOSPITAL: N_("tertiary hospital"),
    InstitutionKind.PUBLIC_HEALTH_CENTRE: N_("public health centre"),
}
DOCUMENT_LABELS: dict[DocumentKind, str] = {
    DocumentKind.DIAGNOSIS_CERTIFICATE: N_("diagnosis certificate"),
    DocumentKind.MEDICAL_OPINION: N_("medical opinion"),
    DocumentKind.REFERRAL_LETTER: N_("referral letter"),
    DocumentKind.PRESCRIPTION_RECOMMENDATION: N_("prescription recommendation"),
    DocumentKind.MEDICAL_SUMMARY: N_("medical summary"),
    DocumentKind.RECEIPT: N_("receipt"),
}
DRUG_GROUP_LABELS: dict[str, str] = {
    "narcotic_psychotropic": N_("narcotic or psychotropic drug"),
    "misuse_potential": N_("drug with misuse potential"),
    "emergency_contraception": N_("emergency contraceptive"),
    "obesity": N_("obesity drug"),
}
HISTORY_KIND_LABELS: dict[str, str] = {
    "visit": N_("visit"),
    "surgery": N_("surgery"),
    "procedure": N_("procedure"),
}

# Reasons
NO_POLICY = N_(
    "No telemedicine rules are in force on {day} (Korean time): only in-person care is possible."
)
NO_OVERSEAS_POLICY = N_(
    "No rules for patients abroad are in force on {day} (Korean time): telemedicine to a patient "
    "outside Korea is not possible."
)
IN_PERSON = N_("In-person care is not restricted by the telemedicine rules.")
NOT_NHI = N_(
    "These rules cover only patients with Korean national health insurance or medical aid."
)
KIND_NOT_ALLOWED = N_(
    "A {kind} may offer telemedicine only to these patients: {groups}. This patient is not one "
    "of them."
)
HOSPITAL_GROUP_FLAG = N_("Telemedicine at a {kind} is allowed for this patient: {group}.")
HOSPITAL_GROUP_RARE = N_(
    "Telemedicine at a {kind} is allowed: rare-disease patient seen in person here on {day} "
    "(within {window})."
)
HOSPITAL_GROUP_TREATMENT = N_(
    "Telemedicine at a {kind} is allowed: care after {treatment} here on {day} (within {window})."
)
GROUP_RARE_WITHIN = N_("rare disease, seen in person here within {window}")
GROUP_TREATMENT_WITHIN = N_("within {window} after {treatments} here")
SHARE_EXCEEDED = N_(
    "Telemedicine is {share} of this institution's consultations, above the cap of {cap}: no "
    "more telemedicine until it is back under."
)
FOLLOW_UP_SAME = N_(
    "Follow-up: seen in person here on {day} for the same condition ({condition}), within {window}."
)
FOLLOW_UP_CHRONIC = N_(
    "Follow-up: seen in person here on {day} for the same chronic disease ({group}), within "
    "{window}."
)
FOLLOW_UP_ANY = N_("Follow-up: seen in person here on {day}, within {window}.")
FOLLOW_UP_BY_GROUP = N_(
    "Follow-up of the care that makes this institution eligible (seen on {day})."
)
FOLLOW_UP_EXPIRED = N_(
    "The last in-person visit here ({day}) is outside the follow-up window of {window}: this is "
    "a first visit."
)
FOLLOW_UP_OTHER = N_(
    "Seen in person here on {day}, but for another condition ({condition}); follow-up needs the "
    "same condition ({visit_condition}): this is a first visit."
)
FIRST_VISIT_ALLOWED = N_("First visits by telemedicine are allowed for every patient.")
FIRST_VISIT_IN_REGION = N_(
    "First visit with an institution in the patient's own region ({region})."
)
FIRST_VISIT_EXCEPTION = N_("First visit allowed as an exception: {exception}.")
FIRST_VISIT_NOT_ALLOWED = N_(
    "First visits by telemedicine are allowed only for: {exceptions}. None applies to this "
    "patient at this time."
)
FIRST_VISIT_OUTSIDE_REGION = N_(
    "A first visit must be with an institution in the patient's own region: the patient lives "
    "in {patient_region}, the institution is in {institution_region}."
)
FIRST_VISIT_NO_REGION = N_(
    "A first visit must be with an institution in the patient's own region, and this patient "
    "has no residence region in Korea."
)
EXCEPTION_LONG_TERM_CARE = N_("aged {age} or over with a long-term-care grade")
EXCEPTION_SHORTAGE_DISTRICT = N_("resident of an emergency-care shortage area ({district})")
EXCEPTION_OFF_HOURS = N_("night or holiday hours ({when})")
EXCEPTION_OFF_HOURS_MINOR = N_(
    "child under {age} at night or on a holiday ({when}), medical consultation only"
)
EXCEPTION_NO_REGIONAL_LIMIT = N_("{group}, no regional limit")
EXCEPTION_NIGHT_GENERIC = N_("night or holiday hours")
EXCEPTION_NIGHT_MINOR_GENERIC = N_("children under {age} at night or on holidays")
VIDEO_MET = N_("This condition needs a visual examination; the visit is by video, as required.")
DELIVERY_ALLOWED = N_("Medicines may be delivered to the patient's home ({group}).")
PHARMACY_PICKUP = N_(
    "Medicines are collected at a pharmacy the patient names; home delivery is not allowed for "
    "this patient."
)
TRI_PARTY_OK = N_(
    "Patient in {country}: a tri-party consultation with the patient's local physician is "
    "allowed; the local physician treats and prescribes."
)
DIRECT_OK = N_("Patient in {country}: direct telemedicine is allowed by both sets of rules.")
DIRECT_NOT_ALLOWED_KOREA = N_("Direct telemedicine from Korea to a patient abroad is not allowed.")
DIRECT_NOT_ALLOWED_COUNTRY = N_(
    "{country} does not let a foreign-licensed doctor treat a patient there directly."
)
CROSS_BORDER_NOT_ALLOWED = N_(
    "Telemedicine to a patient in {country} is not allowed, not even as a consultation with the "
    "local physician."
)

# Conditions
SHARE_UNKNOWN = N_(
    "Confirm that telemedicine is not above {cap} of this institution's consultations (the share "
    "was not given)."
)
VIDEO_REQUIRED = N_(
    "This condition needs a visual examination: hold the visit by video, not by phone."
)
CONSENT_REQUIRED = N_(
    "Explain the limits of telemedicine and record the patient's consent before starting."
)
IDENTITY_REQUIRED = N_(
    "Verify the patient's identity (insurance eligibility and a face or ID check) before starting."
)
TRI_PARTY_REQUIRED = N_(
    "The patient is in {country}: hold a tri-party consultation with the patient's local "
    "physician (and an interpreter if needed). The local physician re-issues any prescription."
)
PRESCRIPTIONS_PROHIBITED = N_(
    "Remove from the prescription: {ingredients}. They cannot be prescribed by telemedicine."
)
DAYS_LIMIT = N_("Without an in-person record, prescribe at most {limit} days of: {ingredients}.")
MINOR_NO_PRESCRIPTION = N_(
    "A child's first visit at night or on a holiday is a medical consultation only: issue no "
    "prescription."
)
CERTIFICATE_NOT_ALLOWED = N_(
    "A {document} cannot be issued by telemedicine; it needs an in-person visit."
)

# Per-item verdicts
ITEM_OK = N_("{ingredient} may be prescribed.")
ITEM_PROHIBITED = N_("{ingredient}: {group}, cannot be prescribed by telemedicine.")
ITEM_DAYS = N_(
    "{ingredient}: {days} days is over the {limit}-day limit without an in-person record."
)
ITEM_MINOR = N_("{ingredient}: no prescription at a child's night or holiday first visit.")
ITEM_RECOMMENDATION = N_(
    "{ingredient}: a recommendation to the local physician, who re-issues it locally."
)
ITEM_IN_PERSON = N_("{ingredient}: prescribed in person, outside the telemedicine rules.")
DOCUMENT_OK = N_("A {document} may be issued.")

# Alternatives
ALTERNATIVE_IN_PERSON = N_("Book an in-person visit.")
ALTERNATIVE_TRI_PARTY = N_(
    "Hold a tri-party consultation: advise the patient's local physician, with the patient present."
)
ALTERNATIVE_CLINIC = N_("Telemedicine with a clinic-level institution (의원급).")
ALTERNATIVE_REGIONAL = N_("Telemedicine with an institution in the patient's own region.")

OFF_HOURS_HOLIDAY = N_("public holiday: {name}")
OFF_HOURS_SUNDAY = N_("Sunday")
OFF_HOURS_SATURDAY = N_("Saturday from {time}")
OFF_HOURS_WEEKDAY = N_("weekday from {time}")
OFF_HOURS_EARLY = N_("before {time}")


@lru_cache(maxsize=4096)
def _template(translator: gettext.NullTranslations, message: str) -> str:
    # Keyed by the translator object, so recompiled catalogues (a new translator) are honoured.
    return translator.gettext(message)


def translated(language: str, message: str, **params: object) -> str:
    """`jaejin.core.i18n.translate`, with the catalogue look-up cached for the engine's hot path."""
    template = _template(get_translator(language), message)
    return template.format(**params) if params else template


@lru_cache(maxsize=1024)
def _period_label(translator: gettext.NullTranslations, period: CalendarPeriod) -> str:
    parts: list[str] = []
    if period.years:
        parts.append(translator.ngettext("{count} year", "{count} years", period.years))
    if period.months:
        parts.append(translator.ngettext("{count} month", "{count} months", period.months))
    if period.days or not parts:
        parts.append(translator.ngettext("{count} day", "{count} days", period.days))
    counts = [count for count in (period.years, period.months, period.days) if count] or [0]
    return " ".join(part.format(count=count) for part, count in zip(parts, counts, strict=True))


def period_label(language: str, period: CalendarPeriod) -> str:
    """"6 months", "6개월", "1 year 2 days"."""
    return _period_label(get_translator(language), period)


def join(items: list[str]) -> str:
    # Items may contain commas themselves ("rare disease, seen in person here within 1 year").
    return "; ".join(items)


def flag_label(language: str, flag: PatientFlag) -> str:
    return translated(language, FLAG_LABELS[flag])


def kind_label(language: str, kind: InstitutionKind) -> str:
    return translated(language, KIND_LABELS[kind])


def document_label(language: str, kind: DocumentKind) -> str:
    return translated(language, DOCUMENT_LABELS[kind])


def drug_group_label(language: str, group: str) -> str:
    message = DRUG_GROUP_LABELS.get(group)
    return translated(language, message) if message else group.replace("_", " ")


def history_kind_label(language: str, kind: str) -> str:
    return translated(language, HISTORY_KIND_LABELS.get(kind, kind))


def _clock(moment: time) -> str:
    return moment.strftime("%H:%M")


def off_hours_label(
    language: str, finding: OffHoursFinding, night_from: time, saturday_from: time, ends: time
) -> str:
    if finding.kind is OffHours.PUBLIC_HOLIDAY and finding.holiday is not None:
        name = finding.holiday.name_ko if language == "ko" else finding.holiday.name_en
        return translated(language, OFF_HOURS_HOLIDAY, name=name)
    if finding.kind is OffHours.SUNDAY:
        return translated(language, OFF_HOURS_SUNDAY)
    if finding.kind is OffHours.SATURDAY_AFTERNOON:
        return translated(language, OFF_HOURS_SATURDAY, time=_clock(saturday_from))
    if finding.kind is OffHours.WEEKDAY_NIGHT:
        return translated(language, OFF_HOURS_WEEKDAY, time=_clock(night_from))
    return translated(language, OFF_HOURS_EARLY, time=_clock(ends))


_PYCOUNTRY_LOCALES = {"zh-Hans": "zh_CN", "zh-Hant": "zh_TW"}


@lru_cache(maxsize=32)
def _iso_translations(domain: str, language: str) -> gettext.NullTranslations:
    locale = _PYCOUNTRY_LOCALES.get(language, language)
    try:
        return gettext.translation(domain, pycountry.LOCALES_DIR, languages=[locale])
    except OSError:
        return gettext.NullTranslations()


@lru_cache(maxsize=2048)
def country_name(language: str, code: str) -> str:
    names = COUNTRIES.get(code)
    if names is None:
        return code
    official, common = names
    if language == "en":
        return common
    return _iso_translations("iso3166-1", language).gettext(official)


@lru_cache(maxsize=512)
def region_name(language: str, code: str) -> str:
    name = KOREAN_REGIONS.get(code)
    if name is None:
        return code
    return f"{_iso_translations('iso3166-2', language).gettext(name)} ({code})"
