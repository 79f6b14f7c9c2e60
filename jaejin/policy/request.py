"""The evaluation request: a proposed visit, validated strictly so the engine never guesses.

Unknown fields, unknown flags, impossible or contradictory dates, unknown regions and countries
are refused with a pydantic `ValidationError` whose location names the field
(`patient.flags.0`, `history.1.date`). `describe_validation_error` turns it into
`[{"field", "message"}]` for the API and the CLI.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from jaejin.core.i18n import SUPPORTED_LANGUAGES, normalise_language
from jaejin.policy.iso import COUNTRIES, KOREAN_REGIONS
from jaejin.policy.korean_time import KST
from jaejin.policy.units import ATC_CODE, KCD_CODE
from jaejin.policy.vocabulary import (
    DocumentKind,
    HistoryKind,
    InstitutionKind,
    PatientFlag,
    VisitMode,
)

EARLIEST_BIRTH_DATE = date(1880, 1, 1)


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _korean_region(value: str) -> str:
    if value not in KOREAN_REGIONS:
        raise PydanticCustomError(
            "unknown_region",
            "{value} is not a Korean province or metropolitan city (ISO 3166-2:KR, e.g. KR-11)",
            {"value": repr(value)},
        )
    return value


def _country(value: str) -> str:
    if value not in COUNTRIES:
        raise PydanticCustomError(
            "unknown_country",
            "{value} is not an ISO 3166-1 alpha-2 country code",
            {"value": repr(value)},
        )
    return value


def _kcd(value: str) -> str:
    if not KCD_CODE.match(value):
        raise PydanticCustomError(
            "kcd_code",
            "{value} is not a KCD diagnosis code (e.g. I10 or E11.9)",
            {"value": repr(value)},
        )
    return value


def _atc(value: str) -> str:
    if not ATC_CODE.match(value):
        raise PydanticCustomError(
            "atc_code", "{value} is not an ATC code (e.g. C08CA01)", {"value": repr(value)}
        )
    return value


def _language(value: str) -> str:
    language = normalise_language(value)
    if language is None:
        raise PydanticCustomError(
            "unknown_language",
            "{value} is not a supported language ({supported})",
            {"value": repr(value), "supported": ", ".join(SUPPORTED_LANGUAGES)},
        )
    return language


KoreanRegion = Annotated[str, BeforeValidator(_upper), AfterValidator(_korean_region)]
CountryCode = Annotated[str, BeforeValidator(_upper), AfterValidator(_country)]
KcdCode = Annotated[str, BeforeValidator(_upper), AfterValidator(_kcd)]
AtcCode = Annotated[str, BeforeValidator(_upper), AfterValidator(_atc)]
Language = Annotated[str, AfterValidator(_language)]

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _field_error(location: tuple[str | int, ...], message: str, value: object) -> ValidationError:
    return ValidationError.from_exception_data(
        "EvaluationRequest",
        [InitErrorDetails(type=PydanticCustomError("invalid", message), loc=location, input=value)],
    )


class Institution(BaseModel):
    model_config = _STRICT

    kind: InstitutionKind
    region: KoreanRegion
    telemedicine_share: Annotated[float, Field(ge=0, le=1)] | None = None
    id: str | None = Field(default=None, max_length=100)


class ResidenceDistrict(BaseModel):
    """Where in the province the patient lives: a 시·군·구 in Korean or Revised Romanization."""

    model_config = _STRICT

    province: KoreanRegion
    district: str = Field(min_length=1, max_length=40)


class Patient(BaseModel):
    model_config = _STRICT

    birth_date: date
    nationality: CountryCode
    nhi_covered: bool
    residence_region: KoreanRegion | None
    current_country: CountryCode
    flags: list[PatientFlag] = Field(default_factory=list)
    residence_district: ResidenceDistrict | None = None

    @model_validator(mode="after")
    def _district_in_region(self) -> Patient:
        district = self.residence_district
        if district is not None and district.province != self.residence_region:
            raise _field_error(
                ("residence_district", "province"),
                f"{district.province} is not the patient's residence_region "
                f"({self.residence_region or 'none: not living in Korea'})",
                district.province,
            )
        return self


class HistoryEntry(BaseModel):
    """An earlier encounter: the follow-up and hospital-level rules look for in-person ones."""

    model_config = _STRICT

    date: date
    mode: VisitMode
    kind: HistoryKind = HistoryKind.VISIT
    condition: KcdCode | None = None
    same_institution: bool


class Visit(BaseModel):
    model_config = _STRICT

    mode: VisitMode
    condition: KcdCode
    tri_party: bool = False


class Prescription(BaseModel):
    model_config = _STRICT

    ingredient: str = Field(min_length=1, max_length=200)
    atc: AtcCode | None = None
    days: int = Field(ge=1, le=365)
    controlled: bool = Field(
        default=False,
        description="Narcotic or psychotropic (마약류) by the regulator's product classification.",
    )
    indication: KcdCode | None = Field(
        default=None, description="What it is prescribed for; the visit's condition if omitted."
    )


class Document(BaseModel):
    model_config = _STRICT

    kind: DocumentKind


class EvaluationRequest(BaseModel):
    """A proposed visit to judge; the JSON contract of `POST /api/v1/policy/evaluate`."""

    model_config = _STRICT

    at: AwareDatetime
    lang: Language = "ko"
    institution: Institution
    patient: Patient
    history: list[HistoryEntry] = Field(default_factory=list, max_length=500)
    visit: Visit
    prescriptions: list[Prescription] = Field(default_factory=list, max_length=100)
    documents: list[Document] = Field(default_factory=list, max_length=50)
    consent_recorded: bool = False
    identity_verified: bool = False

    @model_validator(mode="after")
    def _dates_possible(self) -> EvaluationRequest:
        visit_day = self.at.astimezone(KST).date()
        birth = self.patient.birth_date
        if birth > visit_day:
            raise _field_error(
                ("patient", "birth_date"),
                f"{birth.isoformat()} is after the visit day {visit_day.isoformat()} (KST)",
                birth.isoformat(),
            )
        if birth < EARLIEST_BIRTH_DATE:
            raise _field_error(
                ("patient", "birth_date"),
                f"{birth.isoformat()} is not a plausible birth date",
                birth.isoformat(),
            )
        for index, entry in enumerate(self.history):
            if entry.date > visit_day:
                raise _field_error(
                    ("history", index, "date"),
                    f"{entry.date.isoformat()} is after the visit day {visit_day.isoformat()} "
                    "(KST); history lists past encounters only",
                    entry.date.isoformat(),
                )
            if entry.date < birth:
                raise _field_error(
                    ("history", index, "date"),
                    f"{entry.date.isoformat()} is before the patient's birth date",
                    entry.date.isoformat(),
                )
        return self


def describe_validation_error(error: ValidationError) -> list[dict[str, str]]:
    """`[{"field": "patient.flags.0", "message": ...}]`, one entry per problem."""
    described: list[dict[str, str]] = []
    for problem in error.errors(include_url=False):
        field = ".".join(str(part) for part in problem["loc"]) or "(request)"
        described.append({"field": field, "message": problem["msg"]})
    return described


def parse_request(data: Any) -> EvaluationRequest:
    """Validate decoded JSON into a request; raises ValidationError naming the field."""
    return EvaluationRequest.model_validate(data)
