"""Loading packs: the shipped set, a pack added as data only, and malformed packs refused."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from jaejin.policy import PackError, PackRegistry, evaluate, load_packs, parse_request
from jaejin.policy.packs import (
    DEFAULT_DATA_DIRECTORY,
    DEFAULT_PACK_DIRECTORY,
    CountryPack,
    KoreanPack,
)
from tests.policy.builders import build

KOREAN_VERSIONS = [
    "kr-pilot-2023-06", "kr-pilot-2023-12", "kr-pilot-2024-02", "kr-pilot-2024-12",
    "kr-pilot-2025-10", "kr-msa-2026",
]
REQUIRED_COUNTRIES = ["JP", "CN", "US", "TW", "TH", "MN", "VN", "RU", "KZ", "AE", "GB"]


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    target = tmp_path / "packs"
    shutil.copytree(DEFAULT_PACK_DIRECTORY, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _section(path: Path, name: str) -> str:
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"\[parameters\.{name}\]\n(?:[^\[].*\n?)*", text)
    assert match, name
    return match.group(0)


def test_every_domain_version_ships_as_a_pack_with_its_dates(registry: PackRegistry) -> None:
    korean = sorted(
        (pack for pack in registry.packs if isinstance(pack, KoreanPack)),
        key=lambda pack: pack.in_force.starts,
    )
    assert [pack.id for pack in korean] == KOREAN_VERSIONS
    assert korean[0].in_force.starts == date(2023, 6, 1)
    for earlier, later in pairwise(korean):
        assert earlier.in_force.ends is not None
        assert (later.in_force.starts - earlier.in_force.ends).days == 1, "no gap, no overlap"
    assert korean[-1].in_force.ends is None and korean[-1].in_force.provisional


def test_country_packs_cover_the_main_countries_the_eu_and_a_fallback(
    registry: PackRegistry,
) -> None:
    for code in REQUIRED_COUNTRIES:
        assert registry.country_pack_for(code).countries == [code]
    assert registry.country_pack_for("DE").id == "country-eu"
    assert registry.country_pack_for("BR").fallback
    for pack in registry.packs:
        if isinstance(pack, CountryPack):
            assert pack.parameters.foreign_doctor_direct_allowed.value is False


def test_korean_pack_is_chosen_by_the_korean_date(registry: PackRegistry) -> None:
    late_utc = datetime(2023, 12, 14, 15, 0, tzinfo=UTC)
    pack = registry.korean_pack_for(late_utc)
    assert pack is not None and pack.id == "kr-pilot-2023-12"
    assert registry.korean_pack_for(datetime(2023, 5, 31, 14, 59, tzinfo=UTC)) is None


def test_the_pack_listing_has_every_parameter_with_source_and_flag(
    registry: PackRegistry,
) -> None:
    listing = {pack["id"]: pack for pack in registry.describe()}
    share_cap = listing["kr-msa-2026"]["parameters"]["share_cap"]
    assert share_cap == {"value": 0.3, "source": share_cap["source"], "provisional": True}
    assert listing["kr-pilot-2024-02"]["parameters"]["share_cap"]["value"] is None
    assert listing["kr-pilot-2023-06"]["parameters"]["follow_up_chronic_window"]["value"] == "P1Y"
    assert listing["kr-pilot-2023-06"]["in_force"]["from"] == "2023-06-01"


def test_a_new_version_is_a_data_change_only(pack_dir: Path) -> None:
    msa = pack_dir / "kr-msa-2026.toml"
    _edit(msa, "from = 2026-12-24\n", "from = 2026-12-24\nuntil = 2027-12-31\n")
    newer = msa.read_text(encoding="utf-8").replace('id = "kr-msa-2026"', 'id = "kr-msa-2028"')
    newer = newer.replace("from = 2026-12-24\nuntil = 2027-12-31\n", "from = 2028-01-01\n")
    newer = newer.replace(
        "[parameters.share_cap]\nvalue = 0.3", "[parameters.share_cap]\nvalue = 0.5"
    )
    (pack_dir / "kr-msa-2028.toml").write_text(newer, encoding="utf-8")
    registry = load_packs(pack_dir)

    overrides = {"institution.telemedicine_share": 0.4}
    in_2027 = evaluate(parse_request(build({"at": "2027-06-02T10:00:00+09:00", **overrides})),
                       registry)
    in_2028 = evaluate(parse_request(build({"at": "2028-06-07T10:00:00+09:00", **overrides})),
                       registry)
    assert (in_2027.pack, in_2027.decision.value) == ("kr-msa-2026", "denied")
    assert (in_2028.pack, in_2028.decision.value) == ("kr-msa-2028", "allowed")


def test_a_changed_parameter_changes_the_decision(pack_dir: Path) -> None:
    _edit(pack_dir / "kr-msa-2026.toml", "value = 7\n", "value = 30\n")
    registry = load_packs(pack_dir)
    data = build({"history": [], "prescriptions": [{"ingredient": "cetirizine", "days": 30}]})
    assert evaluate(parse_request(data), registry).decision.value == "allowed"


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("kr-msa-2026.toml", "[parameters.share_cap]\nvalue = 0.3",
         "[parameters.share_cap]\nvalue = \"thirty\"", "parameters.share_cap.value"),
        ("kr-msa-2026.toml", "[parameters.share_cap]\nvalue = 0.3",
         "[parameters.share_cap]\nvalue = 1.3", "parameters.share_cap.value"),
        ("kr-pilot-2023-06.toml", 'value = "P30D"', 'value = "30 days"',
         "parameters.hospital_level_treatment_window.value"),
        ("kr-pilot-2023-06.toml", 'value = ["island_remote", "registered_disability"',
         'value = ["island", "registered_disability"',
         "parameters.first_visit_exception_flags.value.0"),
        ("kr-msa-2026.toml", 'value = ["L00-L99"', 'value = ["L00-K99"',
         "parameters.video_required_conditions.value.0"),
        ("country-jp.toml", 'number = "119"', 'number = "one-one-nine"', "emergency.0.number"),
        ("country-jp.toml", 'countries = ["JP"]', 'countries = ["JA"]', "countries.0"),
        ("country-jp.toml", 'value = "JPY"', 'value = "YEN"', "parameters.currency.value"),
        ("kr-pilot-2023-12.toml", 'kind = "korea"', 'kind = "korean"', "kind"),
        ("kr-pilot-2023-12.toml", "until = 2024-02-22", "until = 2023-01-01", "in_force"),
    ],
)
def test_a_malformed_value_is_refused_naming_file_and_field(
    pack_dir: Path, file: str, old: str, new: str, expected: str,
) -> None:
    _edit(pack_dir / file, old, new)
    with pytest.raises(PackError) as caught:
        load_packs(pack_dir)
    assert caught.value.file == file
    assert caught.value.field.startswith(expected), str(caught.value)
    assert str(caught.value).startswith(f"{file}: ")


def test_a_missing_parameter_is_refused(pack_dir: Path) -> None:
    path = pack_dir / "kr-pilot-2024-02.toml"
    _edit(path, _section(path, "share_cap"), "")
    expected = r"kr-pilot-2024-02.toml: parameters.share_cap: Field required"
    with pytest.raises(PackError, match=expected):
        load_packs(pack_dir)


def test_a_parameter_without_source_or_provisional_flag_is_refused(pack_dir: Path) -> None:
    path = pack_dir / "kr-pilot-2024-12.toml"
    section = _section(path, "consent_required")
    _edit(path, section, re.sub(r"provisional = \w+\n?", "", section))
    with pytest.raises(PackError, match=r"parameters.consent_required.provisional: Field required"):
        load_packs(pack_dir)


def test_an_unknown_key_is_refused_rather_than_ignored(pack_dir: Path) -> None:
    _edit(pack_dir / "kr-msa-2026.toml", "[parameters.share_cap]\n",
          "[parameters.share_kap]\nvalue = 0.3\nsource = \"typo\"\nprovisional = false\n\n"
          "[parameters.share_cap]\n")
    with pytest.raises(PackError, match=r"parameters.share_kap: Extra inputs are not permitted"):
        load_packs(pack_dir)


def test_broken_toml_is_refused_with_the_file_name(pack_dir: Path) -> None:
    (pack_dir / "kr-pilot-2023-06.toml").write_text("id = \"kr-pilot-2023-06\n", encoding="utf-8")
    with pytest.raises(PackError, match=r"^kr-pilot-2023-06.toml: not valid TOML"):
        load_packs(pack_dir)


def test_a_pack_must_be_named_after_its_id(pack_dir: Path) -> None:
    (pack_dir / "kr-pilot-2023-06.toml").rename(pack_dir / "pilot-first.toml")
    with pytest.raises(PackError, match=r"pilot-first.toml: id: is 'kr-pilot-2023-06'"):
        load_packs(pack_dir)


def test_overlapping_korean_versions_are_refused(pack_dir: Path) -> None:
    _edit(pack_dir / "kr-pilot-2023-12.toml", "from = 2023-12-15", "from = 2023-12-10")
    expected = r"kr-pilot-2023-12.toml: in_force: .*overlaps kr-pilot-2023-06"
    with pytest.raises(PackError, match=expected):
        load_packs(pack_dir)


def test_a_country_claimed_twice_is_refused(pack_dir: Path) -> None:
    _edit(pack_dir / "country-gb.toml", 'countries = ["GB"]', 'countries = ["GB", "JP"]')
    with pytest.raises(PackError, match=r"countries: JP is also covered"):
        load_packs(pack_dir)


def test_the_fallback_country_pack_is_required(pack_dir: Path) -> None:
    (pack_dir / "country-fallback.toml").unlink()
    with pytest.raises(PackError, match="fallback = true"):
        load_packs(pack_dir)


def test_an_unknown_data_list_is_refused(pack_dir: Path) -> None:
    _edit(pack_dir / "kr-pilot-2023-06.toml", 'value = "kr-chronic-disease-codes"',
          'value = "kr-chronic-diseases"')
    with pytest.raises(PackError, match=r"chronic_disease_list.value: no data list named"):
        load_packs(pack_dir)


def test_an_unknown_drug_group_is_refused(pack_dir: Path) -> None:
    _edit(pack_dir / "kr-pilot-2024-12.toml", '"obesity"]', '"obesity", "antibiotics"]')
    with pytest.raises(PackError, match=r"unknown group antibiotics"):
        load_packs(pack_dir)


def test_a_pack_that_would_allow_narcotics_is_refused(pack_dir: Path) -> None:
    _edit(pack_dir / "kr-msa-2026.toml", 'value = ["narcotic_psychotropic", ', "value = [")
    with pytest.raises(PackError, match=r"kr-msa-2026.toml: parameters.prohibited_drug_groups"):
        load_packs(pack_dir)


def test_a_ban_earlier_than_the_list_says_is_refused(pack_dir: Path) -> None:
    _edit(pack_dir / "kr-pilot-2023-06.toml", '"misuse_potential"]',
          '"misuse_potential", "obesity"]')
    with pytest.raises(PackError, match=r"banned only from kr-pilot-2024-12"):
        load_packs(pack_dir)


def test_a_malformed_data_list_is_refused(tmp_path: Path, pack_dir: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIRECTORY, data)
    path = data / "kr-chronic-disease-codes.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("I10-I13;I15", "I10-X"),
                    encoding="utf-8")
    with pytest.raises(PackError, match=r"kr-chronic-disease-codes.csv: line \d+ kcd_ranges"):
        load_packs(pack_dir, data)


def test_a_missing_pack_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="does not exist"):
        load_packs(tmp_path / "nowhere")


def test_a_country_that_forbids_even_tri_party_care_is_denied_as_data_says(
    pack_dir: Path,
) -> None:
    path = pack_dir / "country-mn.toml"
    section = _section(path, "tri_party_allowed")
    _edit(path, section, section.replace("value = true", "value = false"))
    registry = load_packs(pack_dir)
    for tri_party in (True, False):
        data = build({"patient.current_country": "MN", "visit.tri_party": tri_party})
        decision = evaluate(parse_request(data), registry)
        assert decision.decision.value == "denied"
        assert "CROSS_BORDER_NOT_ALLOWED" in [reason.code.value for reason in decision.reasons]
        assert [item.code.value for item in decision.alternatives] == ["IN_PERSON_VISIT"]
