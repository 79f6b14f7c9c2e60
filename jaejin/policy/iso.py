"""ISO 3166 and ISO 4217 code tables from pycountry, read once into plain typed look-ups."""

from __future__ import annotations

import pycountry

#: alpha-2 code -> (official name, common name)
COUNTRIES: dict[str, tuple[str, str]] = {
    country.alpha_2: (country.name, getattr(country, "common_name", country.name))
    for country in pycountry.countries
}
#: ISO 3166-2:KR code -> romanised name (provinces and metropolitan cities, 시·도)
KOREAN_REGIONS: dict[str, str] = {
    subdivision.code: subdivision.name
    for subdivision in pycountry.subdivisions
    if subdivision.country_code == "KR"
}
CURRENCIES = frozenset(currency.alpha_3 for currency in pycountry.currencies)
