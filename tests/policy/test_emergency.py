"""Emergency numbers and country facts for the patient's current country."""

from __future__ import annotations

import pytest

from jaejin.policy import RequestError, country_profile, emergency_numbers, service_label

MEDICAL = {"KR": "119", "JP": "119", "CN": "120", "US": "911", "CA": "911", "TW": "119",
           "TH": "1669", "MN": "103", "VN": "115", "RU": "103", "KZ": "103", "AE": "998",
           "GB": "999", "FR": "112", "DE": "112"}


@pytest.mark.parametrize(("country", "number"), sorted(MEDICAL.items()))
def test_the_medical_emergency_number_is_that_of_the_current_country(
    country: str, number: str,
) -> None:
    assert emergency_numbers(country).medical == number


def test_every_number_carries_its_source() -> None:
    numbers = emergency_numbers("TH")
    assert [(row.service, row.number) for row in numbers.numbers] == [
        ("medical", "1669"), ("police", "191"), ("tourist_police", "1155"),
    ]
    assert all(row.source and row.provisional for row in numbers.numbers)
    assert numbers.pack == "country-th"


def test_korea_lists_the_medical_advice_line() -> None:
    numbers = {row.service: row.number for row in emergency_numbers("kr").numbers}
    assert numbers["medical_advice"] == "1339"
    assert numbers["police"] == "112"


def test_a_country_without_a_pack_gets_no_invented_number() -> None:
    numbers = emergency_numbers("BR")
    assert numbers.pack == "country-fallback"
    assert numbers.medical is None and numbers.numbers == []


def test_an_unknown_country_code_is_refused() -> None:
    with pytest.raises(RequestError, match="country_code"):
        emergency_numbers("XX")


def test_country_profile_gives_languages_and_currency_per_member_state() -> None:
    poland = country_profile("PL")
    assert (poland.pack, poland.languages, poland.currency) == ("country-eu", ["pl"], "PLN")
    assert country_profile("DE").currency == "EUR"
    japan = country_profile("JP")
    assert (japan.languages, japan.currency, japan.foreign_doctor_direct_allowed) == (
        ["ja"], "JPY", False
    )
    assert country_profile("BR").currency is None


def test_service_labels_are_translated() -> None:
    assert service_label("ko", "medical") == "응급 의료"
    assert service_label("en", "tourist_police") == "Tourist police"
