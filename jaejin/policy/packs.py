"""Policy packs: versioned rule sets as TOML data files, validated and compiled once at load.

Three kinds of pack live in `jaejin/policy/packs/`, one file per pack, the file named after the
pack id:

* `korea`: the domestic rules, one pack per version, chosen by the visit's date in Korean time;
* `overseas`: the Korean rules for a patient who is outside Korea at the time of the visit;
* `country`: facts about the patient's current country (emergency numbers, whether a
  foreign-licensed doctor may treat a patient there directly, languages, currency), with one
  group pack for EU members and one fallback.

Every rule parameter is a table `{value, source, provisional}` so the engine can say which rule
and which source decided, and whether the figure is final. `load_packs` refuses a malformed pack
with `PackError` naming the file and the field.
"""

from __future__ import annotations

import tomllib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeAlias, TypeVar

import holidays
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from jaejin.policy.errors import PackError
from jaejin.policy.iso import COUNTRIES, CURRENCIES
from jaejin.policy.korean_time import KST
from jaejin.policy.reference import (
    ChronicDiseaseList,
    DataList,
    DrugList,
    DrugMatcher,
    ShortageAreaList,
    load_data_lists,
)
from jaejin.policy.units import CalendarPeriod, expand_kcd_ranges
from jaejin.policy.vocabulary import DocumentKind, HistoryKind, InstitutionKind, PatientFlag

PACKAGE_DIRECTORY = Path(__file__).resolve().parent
DEFAULT_PACK_DIRECTORY = PACKAGE_DIRECTORY / "packs"
DEFAULT_DATA_DIRECTORY = PACKAGE_DIRECTORY / "data"
NONE_LITERAL = "none"
NARCOTIC_GROUP = "narcotic_psychotropic"
EU_MEMBERS = frozenset(
    {
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
    }
)

T = TypeVar("T")


def _none_literal(value: object) -> object:
    # TOML has no null: a parameter that does not apply in a version is written "none".
    return None if value == NONE_LITERAL else value


def _parse_period(value: object) -> CalendarPeriod:
    if isinstance(value, CalendarPeriod):
        return value
    if not isinstance(value, str):
        raise ValueError('a period is written as text, e.g. "P30D", "P6M" or "P1Y"')
    return CalendarPeriod.parse(value)


def _check_kcd_range(value: str) -> str:
    expand_kcd_ranges([value])
    return value.upper()


def _check_country(value: str) -> str:
    if value not in COUNTRIES:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return value


def _check_currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return value


Nullable: TypeAlias = Annotated[T | None, BeforeValidator(_none_literal)]
Period = Annotated[
    CalendarPeriod, PlainValidator(_parse_period), PlainSerializer(str, return_type=str)
]
KcdRange = Annotated[str, AfterValidator(_check_kcd_range)]
CountryCode = Annotated[str, AfterValidator(_check_country)]
CurrencyCode = Annotated[str, AfterValidator(_check_currency)]
LanguageTag = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z][a-z]{3})?$")]
PackId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Param(BaseModel, Generic[T]):
    """One rule parameter with the source it comes from."""

    model_config = _STRICT

    value: T
    source: str = Field(min_length=1)
    provisional: bool


class InForce(BaseModel):
    """Dates (Korean calendar days, inclusive) a pack is in force; `until` omitted: open-ended."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    starts: date = Field(alias="from")
    ends: date | None = Field(default=None, alias="until")
    source: str = Field(min_length=1)
    provisional: bool

    @model_validator(mode="after")
    def _ends_after_start(self) -> InForce:
        if self.ends is not None and self.ends < self.starts:
            raise ValueError("until is before from")
        return self

    def covers(self, day: date) -> bool:
        return self.starts <= day and (self.ends is None or day <= self.ends)

    def overlaps(self, other: InForce) -> bool:
        return (self.ends is None or other.starts <= self.ends) and (
            other.ends is None or self.starts <= other.ends
        )

    def describe(self) -> str:
        return f"{self.starts.isoformat()} – {self.ends.isoformat() if self.ends else '…'}"


class Title(BaseModel):
    model_config = _STRICT

    en: str = Field(min_length=1)
    ko: str = Field(min_length=1)


class NightHours(BaseModel):
    """When "night" starts (weekdays, Saturdays) and when it ends the next morning, in KST."""

    model_config = _STRICT

    weekday_from: time
    saturday_from: time
    ends: time


FollowUpMatch = Literal["same_condition", "any_condition"]
FirstVisitScope = Literal["exceptions_only", "everyone", "own_region"]
NightHolidayFirstVisit = Literal["none", "minors_only", "everyone"]


class KoreanRules(BaseModel):
    """Every parameter of a domestic pack; each version states all of them explicitly."""

    model_config = _STRICT

    rule_basis: Param[str]
    nhi_coverage_required: Param[bool]
    clinic_level_kinds: Param[list[InstitutionKind]]
    hospital_level_open_to_all: Param[bool]
    hospital_level_flags: Param[list[PatientFlag]]
    hospital_level_rare_disease_window: Param[Nullable[Period]]
    hospital_level_treatment_window: Param[Nullable[Period]]
    hospital_level_treatment_kinds: Param[list[HistoryKind]]
    share_cap: Param[Nullable[Annotated[float, Field(gt=0, le=1)]]]
    follow_up_match: Param[FollowUpMatch]
    follow_up_window: Param[Period]
    follow_up_chronic_window: Param[Nullable[Period]]
    chronic_disease_list: Param[Nullable[str]]
    first_visit_scope: Param[FirstVisitScope]
    first_visit_exception_flags: Param[list[PatientFlag]]
    first_visit_long_term_care_min_age: Param[Nullable[Annotated[int, Field(ge=0, le=130)]]]
    first_visit_region_exempt_flags: Param[list[PatientFlag]]
    emergency_shortage_area_list: Param[str]
    first_visit_night_holiday: Param[NightHolidayFirstVisit]
    night_hours: Param[Nullable[NightHours]]
    holiday_calendar: Param[str]
    minor_age_under: Param[Annotated[int, Field(ge=1, le=30)]]
    minor_night_holiday_prescription_allowed: Param[bool]
    prohibited_drug_list: Param[str]
    prohibited_drug_groups: Param[list[str]]
    days_supply_limit_without_in_person: Param[Nullable[Annotated[int, Field(ge=1)]]]
    prohibited_documents: Param[list[DocumentKind]]
    video_required_conditions: Param[list[KcdRange]]
    identity_check_required: Param[bool]
    consent_required: Param[bool]
    drug_delivery_flags: Param[list[PatientFlag]]

    @model_validator(mode="after")
    def _consistent(self) -> KoreanRules:
        if self.first_visit_night_holiday.value != "none" and self.night_hours.value is None:
            raise ValueError("night_hours must be given when first_visit_night_holiday is not none")
        if (
            self.follow_up_chronic_window.value is not None
            and self.chronic_disease_list.value is None
        ):
            raise ValueError("chronic_disease_list must be given with follow_up_chronic_window")
        return self


class OverseasRules(BaseModel):
    model_config = _STRICT

    rule_basis: Param[str]
    tri_party_allowed: Param[bool]
    direct_care_allowed: Param[bool]
    prohibited_drug_list: Param[str]
    prohibited_drug_groups: Param[list[str]]
    identity_check_required: Param[bool]
    consent_required: Param[bool]


class CountryRules(BaseModel):
    model_config = _STRICT

    foreign_doctor_direct_allowed: Param[bool]
    tri_party_allowed: Param[bool]
    languages: Param[list[LanguageTag]]
    currency: Param[Nullable[CurrencyCode]]
    languages_by_country: Param[dict[CountryCode, list[LanguageTag]]] | None = None
    currency_by_country: Param[dict[CountryCode, CurrencyCode]] | None = None


EmergencyService = Literal[
    "medical", "police", "fire", "general", "medical_advice", "tourist_police", "rescue"
]


class EmergencyRow(BaseModel):
    model_config = _STRICT

    service: EmergencyService
    number: str = Field(pattern=r"^[0-9]{2,6}$")
    source: str = Field(min_length=1)
    provisional: bool


class KoreanPack(BaseModel):
    model_config = _STRICT

    id: PackId
    kind: Literal["korea"]
    jurisdiction: Literal["KR"]
    title: Title
    in_force: InForce
    parameters: KoreanRules


class OverseasPack(BaseModel):
    model_config = _STRICT

    id: PackId
    kind: Literal["overseas"]
    jurisdiction: Literal["KR"]
    title: Title
    in_force: InForce
    parameters: OverseasRules


class CountryPack(BaseModel):
    model_config = _STRICT

    id: PackId
    kind: Literal["country"]
    jurisdiction: str = Field(pattern=r"^([A-Z]{2}|EU|ANY)$")
    title: Title
    in_force: InForce
    countries: list[CountryCode]
    fallback: bool = False
    parameters: CountryRules
    emergency: list[EmergencyRow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fallback_has_no_countries(self) -> CountryPack:
        if self.fallback and self.countries:
            raise ValueError("a fallback pack lists no countries")
        if not self.fallback and not self.countries:
            raise ValueError("countries must list at least one country (or set fallback = true)")
        if self.fallback and self.jurisdiction != "ANY":
            raise ValueError('a fallback pack has jurisdiction "ANY"')
        if not self.fallback and not any(row.service == "medical" for row in self.emergency):
            raise ValueError(
                "a country pack gives its medical emergency number ([[emergency]] "
                'with service = "medical")'
            )
        return self

    def languages_for(self, country_code: str) -> list[str]:
        by_country = self.parameters.languages_by_country
        if by_country is not None and country_code in by_country.value:
            return by_country.value[country_code]
        return self.parameters.languages.value

    def currency_for(self, country_code: str) -> str | None:
        by_country = self.parameters.currency_by_country
        if by_country is not None and country_code in by_country.value:
            return by_country.value[country_code]
        return self.parameters.currency.value


Pack = KoreanPack | OverseasPack | CountryPack
_PACK_ADAPTER: TypeAdapter[Pack] = TypeAdapter(
    Annotated[KoreanPack | OverseasPack | CountryPack, Field(discriminator="kind")]
)


@dataclass(frozen=True)
class CompiledKoreanPack:
    """A domestic pack with its lists turned into the sets the engine looks things up in."""

    pack: KoreanPack
    clinic_kinds: frozenset[InstitutionKind]
    hospital_flags: frozenset[PatientFlag]
    treatment_kinds: frozenset[HistoryKind]
    exception_flags: tuple[PatientFlag, ...]
    region_exempt_flags: frozenset[PatientFlag]
    delivery_flags: frozenset[PatientFlag]
    chronic: ChronicDiseaseList | None
    shortage: ShortageAreaList
    drugs: DrugMatcher
    video_categories: frozenset[str]
    prohibited_documents: frozenset[DocumentKind]


@dataclass(frozen=True)
class CompiledOverseasPack:
    pack: OverseasPack
    drugs: DrugMatcher


def _dotted(location: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in location)


def _pack_error(file: str, raw: dict[str, Any], error: ValidationError) -> PackError:
    errors = error.errors(include_url=False)
    first = errors[0]
    location = list(first["loc"])
    # A discriminated union puts the pack kind first in the location; the file has no such level.
    if location and location[0] == raw.get("kind"):
        location = location[1:]
    if first["type"] in {"union_tag_invalid", "union_tag_not_found"}:
        location = ["kind"]
    more = (
        f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        if len(errors) > 1
        else ""
    )
    return PackError(file, _dotted(location), f"{first['msg']}{more}")


def parse_pack(file_name: str, text: str) -> Pack:
    """Parse and validate one pack file's text; `file_name` is used in error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PackError(file_name, "", f"not valid TOML: {error}") from None
    try:
        pack = _PACK_ADAPTER.validate_python(raw)
    except ValidationError as error:
        raise _pack_error(file_name, raw, error) from None
    stem = file_name.rsplit(".", 1)[0]
    if pack.id != stem:
        raise PackError(
            file_name,
            "id",
            f"is {pack.id!r} but the file is named {stem!r}; name each file after its pack id",
        )
    return pack


class PackRegistry:
    """Every loaded pack, checked against each other and against the data lists."""

    def __init__(
        self,
        packs: Iterable[Pack],
        data_lists: dict[str, DataList],
        files: dict[str, str] | None = None,
    ) -> None:
        self._files = dict(files or {})
        self._data_lists = data_lists
        all_packs = list(packs)
        seen: set[str] = set()
        for pack in all_packs:
            if pack.id in seen:
                raise PackError(self._file(pack.id), "id", f"{pack.id!r} is defined twice")
            seen.add(pack.id)
        self._by_id: dict[str, Pack] = {pack.id: pack for pack in all_packs}
        self._korean = sorted(
            (pack for pack in all_packs if isinstance(pack, KoreanPack)),
            key=lambda pack: pack.in_force.starts,
        )
        self._overseas = sorted(
            (pack for pack in all_packs if isinstance(pack, OverseasPack)),
            key=lambda pack: pack.in_force.starts,
        )
        self._countries = [pack for pack in all_packs if isinstance(pack, CountryPack)]
        self._check_no_overlap(self._korean, "Korean packs")
        self._check_no_overlap(self._overseas, "overseas packs")
        self._check_countries()
        self._by_country: dict[str, list[CountryPack]] = {}
        for country_pack in self._countries:
            for code in country_pack.countries:
                self._by_country.setdefault(code, []).append(country_pack)
        self._fallbacks = [pack for pack in self._countries if pack.fallback]
        self._korean_starts = [pack.in_force.starts for pack in self._korean]
        self._overseas_starts = [pack.in_force.starts for pack in self._overseas]
        self._compiled_korean = {pack.id: self._compile_korean(pack) for pack in self._korean}
        self._compiled_overseas = {
            pack.id: CompiledOverseasPack(
                pack=pack,
                drugs=self._drug_matcher(
                    pack.id,
                    pack.parameters.prohibited_drug_list.value,
                    pack.parameters.prohibited_drug_groups.value,
                ),
            )
            for pack in self._overseas
        }

    # -- look-ups -----------------------------------------------------------------------------

    @property
    def packs(self) -> tuple[Pack, ...]:
        return tuple(self._by_id.values())

    def pack(self, pack_id: str) -> Pack:
        return self._by_id[pack_id]

    def korean_pack_for(self, moment: datetime) -> KoreanPack | None:
        """The domestic pack in force on the Korean calendar day of `moment` (aware datetime)."""
        compiled = self.korean_rules_on(korean_date(moment))
        return compiled.pack if compiled else None

    def overseas_pack_for(self, moment: datetime) -> OverseasPack | None:
        compiled = self.overseas_rules_on(korean_date(moment))
        return compiled.pack if compiled else None

    def korean_rules_on(self, day: date) -> CompiledKoreanPack | None:
        found = _in_force_on(self._korean, self._korean_starts, day)
        return self._compiled_korean[found.id] if found else None

    def overseas_rules_on(self, day: date) -> CompiledOverseasPack | None:
        found = _in_force_on(self._overseas, self._overseas_starts, day)
        return self._compiled_overseas[found.id] if found else None

    def country_pack_for(self, country_code: str, on: date | None = None) -> CountryPack:
        """The pack for a country: its own, else the EU group pack, else the fallback.

        `on` is a Korean calendar day; None means the latest version of each pack. Raises
        LookupError when no country pack is in force that day.
        """
        found = self.country_pack_on(country_code, on)
        if found is None:
            raise LookupError(f"no country pack covers {country_code} on {on}")
        return found

    def country_pack_on(self, country_code: str, on: date | None) -> CountryPack | None:
        """Like country_pack_for, but None when no country pack is in force on that day."""
        code = country_code.upper()
        candidates = [pack for pack in self._by_country.get(code, ()) if _active(pack, on)]
        if not candidates:
            candidates = [pack for pack in self._fallbacks if _active(pack, on)]
        if not candidates:
            return None
        return max(candidates, key=lambda pack: pack.in_force.starts)

    def describe(self) -> list[dict[str, Any]]:
        """Every pack with its parameters, as JSON-ready data (the pack listing)."""
        return [
            pack.model_dump(mode="json", by_alias=True)
            for pack in sorted(self._by_id.values(), key=lambda pack: (pack.kind, pack.id))
        ]

    # -- load-time checks and compilation -----------------------------------------------------

    def _file(self, pack_id: str) -> str:
        return self._files.get(pack_id, f"{pack_id}.toml")

    def _check_no_overlap(
        self, ordered: Sequence[KoreanPack | OverseasPack], what: str
    ) -> None:
        for earlier, later in pairwise(ordered):
            if earlier.in_force.overlaps(later.in_force):
                raise PackError(
                    self._file(later.id),
                    "in_force",
                    f"{later.in_force.describe()} overlaps {earlier.id} "
                    f"({earlier.in_force.describe()}); {what} must not overlap",
                )

    def _check_countries(self) -> None:
        claimed: dict[str, list[CountryPack]] = {}
        for pack in self._countries:
            for code in pack.countries if not pack.fallback else ["*"]:
                for other in claimed.get(code, []):
                    if other.in_force.overlaps(pack.in_force):
                        what = "the fallback" if code == "*" else code
                        raise PackError(
                            self._file(pack.id),
                            "countries",
                            f"{what} is also covered by {other.id} on overlapping dates",
                        )
                claimed.setdefault(code, []).append(pack)
        if "*" not in claimed:
            raise PackError(
                "country packs", "fallback", "exactly one country pack must set fallback = true"
            )

    def _data_list(self, pack_id: str, field: str, name: str) -> DataList:
        try:
            return self._data_lists[name]
        except KeyError:
            raise PackError(
                self._file(pack_id),
                f"parameters.{field}.value",
                f"no data list named {name!r} (known: {', '.join(sorted(self._data_lists))})",
            ) from None

    def _drug_matcher(self, pack_id: str, list_name: str, groups: list[str]) -> DrugMatcher:
        drug_list = self._data_list(pack_id, "prohibited_drug_list", list_name)
        if not isinstance(drug_list, DrugList):
            raise PackError(
                self._file(pack_id),
                "parameters.prohibited_drug_list.value",
                f"{list_name!r} is not a drug list",
            )
        if NARCOTIC_GROUP not in groups:
            raise PackError(
                self._file(pack_id),
                "parameters.prohibited_drug_groups.value",
                f"must include {NARCOTIC_GROUP!r}: narcotics are never prescribed by telemedicine",
            )
        unknown = sorted(set(groups) - drug_list.groups)
        if unknown:
            raise PackError(
                self._file(pack_id),
                "parameters.prohibited_drug_groups.value",
                f"unknown group {', '.join(unknown)} (the list has "
                f"{', '.join(sorted(drug_list.groups))})",
            )
        return drug_list.matcher(groups)

    def _check_ban_dates(self, pack: KoreanPack) -> None:
        drug_list = self._data_lists[pack.parameters.prohibited_drug_list.value]
        assert isinstance(drug_list, DrugList)
        banned = set(pack.parameters.prohibited_drug_groups.value)
        for entry, _names in drug_list.entries:
            if entry.group not in banned:
                continue
            first = self._by_id.get(entry.from_pack)
            if not isinstance(first, KoreanPack):
                raise PackError(
                    f"{drug_list.name}.csv",
                    "from_pack",
                    f"{entry.ingredient_en}: {entry.from_pack!r} is not a Korean pack",
                )
            if first.in_force.starts > pack.in_force.starts:
                raise PackError(
                    self._file(pack.id),
                    "parameters.prohibited_drug_groups.value",
                    f"bans {entry.group}, but {drug_list.name} lists {entry.ingredient_en} as "
                    f"banned only from {entry.from_pack}",
                )

    def _compile_korean(self, pack: KoreanPack) -> CompiledKoreanPack:
        rules = pack.parameters
        chronic: ChronicDiseaseList | None = None
        if rules.chronic_disease_list.value is not None:
            found = self._data_list(
                pack.id, "chronic_disease_list", rules.chronic_disease_list.value
            )
            if not isinstance(found, ChronicDiseaseList):
                raise PackError(
                    self._file(pack.id),
                    "parameters.chronic_disease_list.value",
                    "is not a chronic-disease list",
                )
            chronic = found
        shortage = self._data_list(
            pack.id, "emergency_shortage_area_list", rules.emergency_shortage_area_list.value
        )
        if not isinstance(shortage, ShortageAreaList):
            raise PackError(
                self._file(pack.id),
                "parameters.emergency_shortage_area_list.value",
                "is not an emergency-care shortage-area list",
            )
        if not _holiday_calendar_exists(rules.holiday_calendar.value):
            raise PackError(
                self._file(pack.id),
                "parameters.holiday_calendar.value",
                f"{rules.holiday_calendar.value!r} is not a holidays calendar",
            )
        drugs = self._drug_matcher(
            pack.id, rules.prohibited_drug_list.value, rules.prohibited_drug_groups.value
        )
        self._check_ban_dates(pack)
        return CompiledKoreanPack(
            pack=pack,
            clinic_kinds=frozenset(rules.clinic_level_kinds.value),
            hospital_flags=frozenset(rules.hospital_level_flags.value),
            treatment_kinds=frozenset(rules.hospital_level_treatment_kinds.value),
            exception_flags=tuple(rules.first_visit_exception_flags.value),
            region_exempt_flags=frozenset(rules.first_visit_region_exempt_flags.value),
            delivery_flags=frozenset(rules.drug_delivery_flags.value),
            chronic=chronic,
            shortage=shortage,
            drugs=drugs,
            video_categories=expand_kcd_ranges(rules.video_required_conditions.value),
            prohibited_documents=frozenset(rules.prohibited_documents.value),
        )


def _in_force_on(
    ordered: list[KoreanPack] | list[OverseasPack], starts: list[date], day: date
) -> KoreanPack | OverseasPack | None:
    index = bisect_right(starts, day) - 1
    if index < 0:
        return None
    candidate = ordered[index]
    return candidate if candidate.in_force.covers(day) else None


def _active(pack: CountryPack, on: date | None) -> bool:
    return on is None or pack.in_force.covers(on)


def korean_date(moment: datetime) -> date:
    """The calendar day in Korea at `moment`; rules change at midnight KST."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a naive datetime has no place in Korean time; give a UTC offset")
    return moment.astimezone(KST).date()


@lru_cache(maxsize=8)
def _holiday_calendar_exists(code: str) -> bool:
    return code in holidays.list_supported_countries()


def load_packs(
    directory: Path | str = DEFAULT_PACK_DIRECTORY,
    data_directory: Path | str = DEFAULT_DATA_DIRECTORY,
) -> PackRegistry:
    """Read, validate and cross-check every `*.toml` pack in `directory`.

    Raises PackError (file and field named) on the first problem, so a service started with a bad
    pack stops instead of deciding on partial rules.
    """
    pack_directory = Path(directory)
    if not pack_directory.is_dir():
        raise PackError(str(pack_directory), "", "the pack directory does not exist")
    data_lists = load_data_lists(Path(data_directory))
    packs: list[Pack] = []
    files: dict[str, str] = {}
    for path in sorted(pack_directory.glob("*.toml")):
        pack = parse_pack(path.name, path.read_text(encoding="utf-8"))
        packs.append(pack)
        files[pack.id] = path.name
    if not any(isinstance(pack, KoreanPack) for pack in packs):
        raise PackError(str(pack_directory), "", "no Korean pack found")
    return PackRegistry(packs, data_lists, files)


@lru_cache(maxsize=1)
def default_registry() -> PackRegistry:
    """The packs shipped with Jaejin, loaded once per process."""
    return load_packs()
