"""Country facts other capabilities need: emergency numbers, languages and currency of a country.

Read from the country packs (the patient's *current* country, not their nationality), so pages
that show "call this number in an emergency" and the policy engine agree on one source.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict

from jaejin.core.i18n import N_, translate
from jaejin.policy.errors import RequestError
from jaejin.policy.iso import COUNTRIES
from jaejin.policy.packs import PackRegistry, default_registry

SERVICE_LABELS: dict[str, str] = {
    "medical": N_("Medical emergency"),
    "police": N_("Police"),
    "fire": N_("Fire"),
    "general": N_("Emergency (all services)"),
    "medical_advice": N_("Medical advice line"),
    "tourist_police": N_("Tourist police"),
    "rescue": N_("Rescue"),
}


class EmergencyNumber(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    number: str
    source: str
    provisional: bool


class EmergencyNumbers(BaseModel):
    """The numbers to show a patient who is in `country_code` now; `medical` None: unknown."""

    model_config = ConfigDict(frozen=True)

    country_code: str
    pack: str
    medical: str | None
    numbers: list[EmergencyNumber]


class CountryProfile(BaseModel):
    model_config = ConfigDict(frozen=True)

    country_code: str
    pack: str
    languages: list[str]
    currency: str | None
    foreign_doctor_direct_allowed: bool
    emergency: EmergencyNumbers


def _known_country(country_code: str) -> str:
    code = country_code.strip().upper()
    if code not in COUNTRIES:
        raise RequestError(
            "country_code", f"{country_code!r} is not an ISO 3166-1 alpha-2 country code"
        )
    return code


def emergency_numbers(
    country_code: str, registry: PackRegistry | None = None, on: date | None = None
) -> EmergencyNumbers:
    """Emergency numbers for a patient currently in `country_code`, each with its source.

    `on` is a Korean calendar day (None: the latest data). Raises RequestError for a code that is
    not ISO 3166-1 alpha-2.
    """
    code = _known_country(country_code)
    pack = (registry or default_registry()).country_pack_for(code, on)
    numbers = [
        EmergencyNumber(
            service=row.service,
            number=row.number,
            source=row.source,
            provisional=row.provisional,
        )
        for row in pack.emergency
    ]
    medical = next((row.number for row in pack.emergency if row.service == "medical"), None)
    return EmergencyNumbers(country_code=code, pack=pack.id, medical=medical, numbers=numbers)


def country_profile(
    country_code: str, registry: PackRegistry | None = None, on: date | None = None
) -> CountryProfile:
    """Languages, currency and emergency numbers of the patient's current country."""
    code = _known_country(country_code)
    chosen = registry or default_registry()
    pack = chosen.country_pack_for(code, on)
    return CountryProfile(
        country_code=code,
        pack=pack.id,
        languages=pack.languages_for(code),
        currency=pack.currency_for(code),
        foreign_doctor_direct_allowed=pack.parameters.foreign_doctor_direct_allowed.value,
        emergency=emergency_numbers(code, chosen, on),
    )


def service_label(language: str, service: str) -> str:
    """A translated name for an emergency service code ("medical", "police", ...)."""
    message = SERVICE_LABELS.get(service)
    return translate(language, message) if message else service
