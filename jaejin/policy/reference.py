"""Reference data the packs name: prohibited drugs, chronic diseases, emergency-care shortage areas.

Each list is a CSV file in `jaejin/policy/data/` whose comment header names its sources. A pack
refers to a list by file stem, so a regulation update to a list is a data change only. Lists are
parsed once at load into lookup tables; nothing here touches the disk after that.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from jaejin.policy.errors import PackError
from jaejin.policy.iso import KOREAN_REGIONS
from jaejin.policy.units import ATC_CODE, KCD_CODE, expand_kcd_ranges

DRUG_COLUMNS = (
    "group",
    "ingredient_ko",
    "ingredient_en",
    "atc",
    "from_pack",
    "evidence",
    "aliases",
    "only_for_indication",
)
CHRONIC_COLUMNS = ("group_ko", "group_en", "kcd_ranges")
SHORTAGE_COLUMNS = ("province", "district_ko", "district_rr", "province_iso", "former_province_iso")

_PARENTHESISED = re.compile(r"\([^)]*\)")
_FIND_CACHE_SIZE = 8192
_COMBINATION_SEPARATORS = re.compile(r"\s*(?:/|\+|·|,| and )\s*")


def normalise_name(text: str) -> str:
    """Case- and spacing-insensitive key for ingredient and district names."""
    return " ".join(text.lower().split())


def normalise_kcd(code: str) -> str:
    return code.upper().replace(".", "").strip()


@dataclass(frozen=True, slots=True)
class DrugEntry:
    group: str
    ingredient_ko: str
    ingredient_en: str
    atc: str
    from_pack: str
    evidence: str
    only_for_indication: tuple[str, ...]

    def applies_to_indication(self, indication: str | None) -> bool:
        """Whether the ban covers a prescription for `indication` (None: the use is unknown)."""
        if not self.only_for_indication or indication is None:
            return True
        code = normalise_kcd(indication)
        return any(code.startswith(prefix) for prefix in self.only_for_indication)


@dataclass(frozen=True)
class DrugMatcher:
    """Finds list entries for a prescribed ingredient, by name (either language) or ATC code."""

    by_name: dict[str, tuple[DrugEntry, ...]]
    by_atc: dict[str, tuple[DrugEntry, ...]]
    atc_prefixes: tuple[tuple[str, DrugEntry], ...]
    _found: dict[tuple[str, str | None], tuple[DrugEntry, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, entries: Iterable[tuple[DrugEntry, tuple[str, ...]]]) -> DrugMatcher:
        by_name: dict[str, list[DrugEntry]] = {}
        by_atc: dict[str, list[DrugEntry]] = {}
        prefixes: list[tuple[str, DrugEntry]] = []
        for entry, names in entries:
            for name in names:
                by_name.setdefault(name, []).append(entry)
            if len(entry.atc) == 7:
                by_atc.setdefault(entry.atc, []).append(entry)
            elif entry.atc:
                prefixes.append((entry.atc, entry))
        return cls(
            by_name={key: tuple(value) for key, value in by_name.items()},
            by_atc={key: tuple(value) for key, value in by_atc.items()},
            atc_prefixes=tuple(prefixes),
        )

    def find(self, ingredient: str, atc: str | None) -> tuple[DrugEntry, ...]:
        key = (ingredient, atc)
        found = self._found.get(key)
        if found is None:
            if len(self._found) >= _FIND_CACHE_SIZE:
                self._found.clear()
            found = self._found[key] = self._search(ingredient, atc)
        return found

    def _search(self, ingredient: str, atc: str | None) -> tuple[DrugEntry, ...]:
        found: list[DrugEntry] = []
        key = normalise_name(ingredient)
        found.extend(self.by_name.get(key, ()))
        if not found:
            # A combination product is caught by any listed component it contains.
            for component in _COMBINATION_SEPARATORS.split(key):
                found.extend(self.by_name.get(component, ()))
        if atc:
            found.extend(self.by_atc.get(atc, ()))
            found.extend(entry for prefix, entry in self.atc_prefixes if atc.startswith(prefix))
        unique: dict[int, DrugEntry] = {id(entry): entry for entry in found}
        return tuple(unique.values())


@dataclass(frozen=True)
class DrugList:
    name: str
    entries: tuple[tuple[DrugEntry, tuple[str, ...]], ...]

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(entry.group for entry, _names in self.entries)

    def matcher(self, groups: Iterable[str]) -> DrugMatcher:
        wanted = frozenset(groups)
        return DrugMatcher.build(
            (entry, names) for entry, names in self.entries if entry.group in wanted
        )


@dataclass(frozen=True)
class ChronicDiseaseList:
    name: str
    group_of_category: dict[str, tuple[str, str]]

    def group(self, code: str) -> tuple[str, str] | None:
        """(English, Korean) group name of a KCD code, or None if it is not chronic."""
        return self.group_of_category.get(code[:3].upper())


@dataclass(frozen=True, slots=True)
class ShortageArea:
    province_iso: str
    district_ko: str
    district_rr: str


@dataclass(frozen=True)
class ShortageAreaList:
    name: str
    areas: dict[tuple[str, str], ShortageArea] = field(default_factory=dict)

    def lookup(self, province_iso: str, district: str) -> ShortageArea | None:
        return self.areas.get((province_iso, normalise_name(district)))


DataList = DrugList | ChronicDiseaseList | ShortageAreaList


def _read_rows(path: Path, expected: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    numbered = [(number, line) for number, line in enumerate(lines, 1) if not line.startswith("#")]
    reader = csv.reader(line for _number, line in numbered)
    try:
        header = next(reader)
    except StopIteration:
        raise PackError(path.name, "", "the file has no header row") from None
    if tuple(header) != expected:
        raise PackError(
            path.name,
            "header",
            f"expected columns {', '.join(expected)}; found {', '.join(header)}",
        )
    rows: list[tuple[int, dict[str, str]]] = []
    for (number, _line), values in zip(numbered[1:], reader, strict=True):
        if not values:
            continue
        if len(values) != len(expected):
            raise PackError(
                path.name,
                f"line {number}",
                f"expected {len(expected)} columns, found {len(values)}",
            )
        rows.append((number, dict(zip(expected, (value.strip() for value in values), strict=True))))
    return rows


def _drug_names(row: dict[str, str]) -> tuple[str, ...]:
    names = {normalise_name(row["ingredient_en"]), normalise_name(row["ingredient_ko"])}
    names.add(normalise_name(_PARENTHESISED.sub("", row["ingredient_ko"])))
    names.update(normalise_name(alias) for alias in row["aliases"].split(";") if alias.strip())
    return tuple(sorted(name for name in names if name))


def _load_drugs(path: Path) -> DrugList:
    entries: list[tuple[DrugEntry, tuple[str, ...]]] = []
    for number, row in _read_rows(path, DRUG_COLUMNS):
        where = f"line {number}"
        if not row["group"] or not row["ingredient_en"]:
            raise PackError(path.name, where, "group and ingredient_en are required")
        if row["atc"] and not ATC_CODE.match(row["atc"]):
            raise PackError(path.name, f"{where} atc", f"{row['atc']!r} is not an ATC code")
        indications = tuple(
            normalise_kcd(code) for code in row["only_for_indication"].split(";") if code.strip()
        )
        for code in indications:
            if not KCD_CODE.match(code):
                raise PackError(
                    path.name, f"{where} only_for_indication", f"{code!r} is not a KCD code"
                )
        entry = DrugEntry(
            group=row["group"],
            ingredient_ko=row["ingredient_ko"],
            ingredient_en=row["ingredient_en"],
            atc=row["atc"],
            from_pack=row["from_pack"],
            evidence=row["evidence"],
            only_for_indication=indications,
        )
        entries.append((entry, _drug_names(row)))
    return DrugList(name=path.stem, entries=tuple(entries))


def _load_chronic(path: Path) -> ChronicDiseaseList:
    group_of_category: dict[str, tuple[str, str]] = {}
    for number, row in _read_rows(path, CHRONIC_COLUMNS):
        try:
            categories = expand_kcd_ranges(row["kcd_ranges"].split(";"))
        except ValueError as error:
            raise PackError(path.name, f"line {number} kcd_ranges", str(error)) from None
        for category in categories:
            group_of_category[category] = (row["group_en"], row["group_ko"])
    return ChronicDiseaseList(name=path.stem, group_of_category=group_of_category)


def _korean_province(code: str) -> bool:
    return code in KOREAN_REGIONS


def _load_shortage(path: Path) -> ShortageAreaList:
    areas: dict[tuple[str, str], ShortageArea] = {}
    for number, row in _read_rows(path, SHORTAGE_COLUMNS):
        provinces = [row["province_iso"]]
        if row["former_province_iso"]:
            provinces.append(row["former_province_iso"])
        for province in provinces:
            if not _korean_province(province):
                raise PackError(
                    path.name, f"line {number}", f"{province!r} is not an ISO 3166-2:KR code"
                )
        area = ShortageArea(row["province_iso"], row["district_ko"], row["district_rr"])
        for province in provinces:
            for name in (row["district_ko"], row["district_rr"]):
                areas[(province, normalise_name(name))] = area
    return ShortageAreaList(name=path.stem, areas=areas)


def load_data_lists(directory: Path) -> dict[str, DataList]:
    """Every CSV list in `directory`, keyed by file stem; its kind is told by its columns."""
    lists: dict[str, DataList] = {}
    for path in sorted(directory.glob("*.csv")):
        header = next(
            (
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if not line.startswith("#")
            ),
            "",
        )
        columns = tuple(next(csv.reader([header]), []))
        if columns == DRUG_COLUMNS:
            lists[path.stem] = _load_drugs(path)
        elif columns == CHRONIC_COLUMNS:
            lists[path.stem] = _load_chronic(path)
        elif columns == SHORTAGE_COLUMNS:
            lists[path.stem] = _load_shortage(path)
        else:
            raise PackError(
                path.name,
                "header",
                "not a known list (drugs, chronic diseases, or emergency-care shortage areas)",
            )
    return lists
