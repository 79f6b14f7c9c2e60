"""Who is who, as the API accepts and returns it: validation of codes, zones and flags.

Pure: no database, no web. The wire contract is these schemas, never the tables.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import available_timezones

import pycountry
from babel import Locale, UnknownLocaleError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from jaejin.core.i18n import LANGUAGE_TAG_LENGTH, N_
from jaejin.policy.vocabulary import InstitutionKind, PatientFlag


class EncounterMode(StrEnum):
    IN_PERSON = "in_person"
    VIDEO = "video"
    AUDIO = "audio"
    CHAT = "chat"


class EncounterKind(StrEnum):
    VISIT = "visit"
    SURGERY = "surgery"
    PROCEDURE = "procedure"


class ConsentKind(StrEnum):
    PIPA_SENSITIVE = "pipa_sensitive"
    CROSS_BORDER_TRANSFER = "cross_border_transfer"
    TELEMEDICINE_LIMITS = "telemedicine_limits"


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


_CLOCK_SKEW = timedelta(minutes=5)
CONDITION_CODE = re.compile(r"^[A-Z][0-9]{2}(\.?[0-9A-Z]{1,4})?$")


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_time_zone(value: str) -> str:
    if value not in _time_zones():
        raise ValueError(f"Unknown time zone {value!r}: use an IANA name such as Asia/Seoul.")
    return value


def check_country(value: str) -> str:
    code = value.upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"Unknown country {value!r}: use an ISO 3166-1 alpha-2 code such as JP.")
    return code


def check_korean_region(value: str) -> str:
    code = value.upper()
    subdivision = pycountry.subdivisions.get(code=code)  # type: ignore[no-untyped-call]
    if subdivision is None or not code.startswith("KR-"):
        raise ValueError(
            f"Unknown Korean region {value!r}: use an ISO 3166-2:KR code such as KR-11 (Seoul)."
        )
    return code


def check_language(value: str) -> str:
    try:
        Locale.parse(value.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as error:
        raise ValueError(
            f"Unknown language {value!r}: use a BCP 47 tag such as ko or en."
        ) from error
    return value


def check_condition_code(value: str) -> str:
    code = value.strip().upper()
    if not CONDITION_CODE.match(code):
        raise ValueError(f"{value!r} is not a KCD/ICD-10 code (e.g. I10, E11.9).")
    return code


def check_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(N_("Include a time-zone offset, e.g. 2026-11-20T09:30:00+09:00."))
    return value.astimezone(UTC)


#: Primary keys are INTEGER columns: anything larger cannot name a record (and PostgreSQL or
#: SQLite would fail on it rather than find nothing).
MAX_RECORD_ID = 2_147_483_647
RecordId = Annotated[int, Field(ge=1, le=MAX_RECORD_ID)]

TimeZoneName = Annotated[str, AfterValidator(check_time_zone)]
CountryCode = Annotated[str, AfterValidator(check_country)]
KoreanRegion = Annotated[str, AfterValidator(check_korean_region)]
# Stored in 35-character columns (BCP 47's recommended minimum): "yue-Hant-HK" fits; a longer
# tag is refused, not truncated.
LanguageTag = Annotated[str, Field(max_length=LANGUAGE_TAG_LENGTH), AfterValidator(check_language)]
ConditionCode = Annotated[str, AfterValidator(check_condition_code)]
AwareDatetime = Annotated[datetime, AfterValidator(check_aware)]
EmailAddress = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
PhoneNumber = Annotated[str, Field(max_length=32, pattern=r"^\+[1-9][0-9]{6,14}$")]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
PersonName = Annotated[str, Field(min_length=1, max_length=100)]

#: C0 control characters other than tab, line feed and carriage return: PostgreSQL cannot store
#: NUL at all, and none of them belongs in a name, code or note.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and _CONTROL_CHARACTERS.search(text) for text in texts):
            raise ValueError(N_("Contains control characters that cannot be stored."))
        return value


def refuse_null(value: Any) -> Any:
    """For partial updates: a field left out keeps its value, but a stored value that may not
    be empty cannot be set to null either."""
    if value is None:
        raise ValueError(N_("This field cannot be emptied: leave it out to keep its value."))
    return value


def check_birth_date(value: date) -> date:
    if value > datetime.now(UTC).date():
        raise ValueError(N_("birth_date is in the future."))
    if value.year < 1900:
        raise ValueError(N_("birth_date is before 1900."))
    return value


def check_started_in_the_past(value: datetime) -> datetime:
    if value > datetime.now(UTC).replace(microsecond=0) + _CLOCK_SKEW:
        raise ValueError(N_("started_at is in the future: record encounters that happened."))
    return value


# ----------------------------------------------------------------------------- institutions


class InstitutionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name_ko: str
    name_en: str
    kind: InstitutionKind
    region: str
    designations: list[str]
    time_zone: str


# ----------------------------------------------------------------------------- practitioners


class PractitionerCreate(Strict):
    licence_number: Annotated[str, Field(min_length=3, max_length=40)]
    profession: Annotated[str, Field(min_length=2, max_length=40)] = "physician"
    specialty: Annotated[str | None, Field(max_length=80)] = None
    name_native: ShortText
    name_latin: ShortText
    languages: list[LanguageTag] = Field(default_factory=lambda: ["ko"], max_length=20)
    time_zone: TimeZoneName = "Asia/Seoul"
    department: Annotated[str | None, Field(max_length=80)] = None


class PractitionerUpdate(Strict):
    specialty: Annotated[str | None, Field(max_length=80)] = None
    name_native: ShortText | None = None
    name_latin: ShortText | None = None
    languages: list[LanguageTag] | None = Field(default=None, max_length=20)
    time_zone: TimeZoneName | None = None
    department: Annotated[str | None, Field(max_length=80)] = None
    active: bool | None = None

    _required_stay_filled = field_validator(
        "name_native", "name_latin", "languages", "time_zone", "active")(refuse_null)


class PractitionerPublic(BaseModel):
    id: int
    licence_number: str
    profession: str
    specialty: str | None
    name_native: str
    name_latin: str
    languages: list[str]
    time_zone: str
    institution_ids: list[int]


# ----------------------------------------------------------------------------------- patients


class PatientBase(Strict):
    family_name_native: PersonName
    given_name_native: PersonName
    family_name_latin: PersonName
    given_name_latin: PersonName
    birth_date: date
    sex: Sex
    nationality: CountryCode
    residence_country: CountryCode
    residence_region: KoreanRegion | None = None
    residence_district: Annotated[str | None, Field(max_length=60)] = None
    current_country: CountryCode
    languages: list[LanguageTag] = Field(min_length=1, max_length=10)
    preferred_language: LanguageTag = "ko"
    time_zone: TimeZoneName = "Asia/Seoul"
    nhi_covered: bool = False
    flags: list[PatientFlag] = Field(default_factory=list, max_length=len(PatientFlag))
    long_term_care_grade: Annotated[int | None, Field(ge=1, le=6)] = None
    email: EmailAddress | None = None
    phone: PhoneNumber | None = None

    _birth_date_is_past = field_validator("birth_date")(check_birth_date)

    @field_validator("residence_region")
    @classmethod
    def _region_only_for_residents(cls, value: str | None, info: ValidationInfo) -> str | None:
        # residence_country is declared first, so it is validated by now (absent if invalid).
        country = info.data.get("residence_country")
        if value and country is not None and country != "KR":
            raise ValueError(N_("residence_region applies only to residents of Korea."))
        return value


class PatientCreate(PatientBase):
    mrn: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9-]+$")]
    institution_id: RecordId | None = None


class PatientUpdate(Strict):
    """Partial update: only the fields sent change. Identity fields stay with the MRN owner."""

    family_name_latin: PersonName | None = None
    given_name_latin: PersonName | None = None
    residence_country: CountryCode | None = None
    residence_region: KoreanRegion | None = None
    residence_district: Annotated[str | None, Field(max_length=60)] = None
    current_country: CountryCode | None = None
    languages: list[LanguageTag] | None = Field(default=None, min_length=1, max_length=10)
    preferred_language: LanguageTag | None = None
    time_zone: TimeZoneName | None = None
    nhi_covered: bool | None = None
    flags: list[PatientFlag] | None = Field(default=None, max_length=len(PatientFlag))
    long_term_care_grade: Annotated[int | None, Field(ge=1, le=6)] = None
    email: EmailAddress | None = None
    phone: PhoneNumber | None = None

    _required_stay_filled = field_validator(
        "family_name_latin", "given_name_latin", "residence_country", "current_country",
        "languages", "preferred_language", "time_zone", "nhi_covered", "flags",
    )(refuse_null)


class PatientPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    institution_id: int
    mrn: str
    family_name_native: str
    given_name_native: str
    family_name_latin: str
    given_name_latin: str
    birth_date: date
    sex: str
    nationality: str
    residence_country: str
    residence_region: str | None
    residence_district: str | None
    current_country: str
    languages: list[str]
    preferred_language: str
    time_zone: str
    nhi_covered: bool
    flags: list[str]
    long_term_care_grade: int | None
    email: str | None
    phone: str | None
    has_account: bool = False


# ---------------------------------------------------------------------------- local physicians


class LocalPhysicianCreate(Strict):
    name: ShortText
    clinic: ShortText
    country: CountryCode
    email: EmailAddress | None = None
    phone: PhoneNumber | None = None
    languages: list[LanguageTag] = Field(default_factory=lambda: ["en"], max_length=10)


class LocalPhysicianUpdate(Strict):
    name: ShortText | None = None
    clinic: ShortText | None = None
    country: CountryCode | None = None
    email: EmailAddress | None = None
    phone: PhoneNumber | None = None
    languages: list[LanguageTag] | None = Field(default=None, max_length=10)

    _required_stay_filled = field_validator("name", "clinic", "country", "languages")(
        refuse_null)


class LocalPhysicianPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: int
    name: str
    clinic: str
    country: str
    email: str | None
    phone: str | None
    languages: list[str]


# ---------------------------------------------------------------------------------- encounters


class EncounterCreate(Strict):
    patient_id: RecordId
    practitioner_id: RecordId | None = None
    external_id: Annotated[str | None, Field(max_length=80)] = None
    mode: EncounterMode
    kind: EncounterKind = EncounterKind.VISIT
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    conditions: list[ConditionCode] = Field(default_factory=list, max_length=20)
    summary: Annotated[str | None, Field(max_length=10_000)] = None

    _started_in_the_past = field_validator("started_at")(check_started_in_the_past)

    @field_validator("ended_at")
    @classmethod
    def _ended_after_start(cls, value: datetime | None,
                           info: ValidationInfo) -> datetime | None:
        started = info.data.get("started_at")
        if value is not None and started is not None and value < started:
            raise ValueError(N_("ended_at is before started_at."))
        return value


class EncounterUpdate(Strict):
    ended_at: AwareDatetime | None = None
    conditions: list[ConditionCode] | None = Field(default=None, max_length=20)
    summary: Annotated[str | None, Field(max_length=10_000)] = None

    _required_stay_filled = field_validator("conditions")(refuse_null)


class EncounterPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    institution_id: int
    patient_id: int
    practitioner_id: int | None
    external_id: str | None
    mode: str
    kind: str
    started_at: datetime
    ended_at: datetime | None
    conditions: list[str]
    summary: str | None


# ------------------------------------------------------------------------------------ consents


class ConsentCreate(Strict):
    kind: ConsentKind
    text_version: Annotated[str, Field(min_length=1, max_length=40)]
    language: LanguageTag
    granted_at: AwareDatetime | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class ConsentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: int
    kind: str
    text_version: str
    language: str
    granted_at: datetime
    withdrawn_at: datetime | None

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None


class InvitationPublic(BaseModel):
    invitation_id: int
    link: str
    code: str
    expires_at: datetime


