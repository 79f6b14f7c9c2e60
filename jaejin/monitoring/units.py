"""UCUM units per metric: which spellings are accepted and how to reach the canonical unit.

A `Reading.value` is always in its metric's canonical UCUM unit (`readings.CANONICAL_UNITS`):
mm[Hg], mg/dL, kg, Cel, %, /min. Devices and people send other spellings (`mmHg`, `bpm`) and other
units (mmol/L, [lb_av], [degF]); `to_canonical` converts them and refuses anything it does not
know with a `UnitError` that says which units would have been accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from jaejin.core.i18n import N_, translate
from jaejin.monitoring.readings import CANONICAL_UNITS, Metric, metric_label

#: mg/dL in one mmol/L of glucose (molar mass 180.16 g/mol), the factor DOMAIN.md §4 fixes.
GLUCOSE_MG_DL_PER_MMOL_L = 18.016
KILOGRAMS_PER_POUND = 0.45359237


@dataclass(frozen=True, slots=True)
class UnitConversion:
    """How to go between one accepted UCUM unit and the metric's canonical unit."""

    ucum: str
    to_canonical: Callable[[float], float]
    from_canonical: Callable[[float], float]


def _identity(value: float) -> float:
    return value


def _same(ucum: str) -> UnitConversion:
    return UnitConversion(ucum, _identity, _identity)


def _scaled(ucum: str, factor: float) -> UnitConversion:
    """A unit worth `factor` canonical units."""
    return UnitConversion(ucum, lambda value: value * factor, lambda value: value / factor)


_FAHRENHEIT = UnitConversion(
    "[degF]",
    lambda value: (value - 32.0) * 5.0 / 9.0,
    lambda value: value * 9.0 / 5.0 + 32.0,
)

_BLOOD_PRESSURE_UNITS = {"mm[Hg]": _same("mm[Hg]")}

#: Accepted UCUM codes per metric. The canonical unit is always among them.
UNIT_CONVERSIONS: Mapping[Metric, Mapping[str, UnitConversion]] = MappingProxyType(
    {
        Metric.SYSTOLIC: MappingProxyType(_BLOOD_PRESSURE_UNITS),
        Metric.DIASTOLIC: MappingProxyType(_BLOOD_PRESSURE_UNITS),
        Metric.GLUCOSE: MappingProxyType(
            {
                "mg/dL": _same("mg/dL"),
                "mmol/L": _scaled("mmol/L", GLUCOSE_MG_DL_PER_MMOL_L),
            }
        ),
        Metric.BODY_WEIGHT: MappingProxyType(
            {
                "kg": _same("kg"),
                "g": _scaled("g", 0.001),
                "[lb_av]": _scaled("[lb_av]", KILOGRAMS_PER_POUND),
                "[stone_av]": _scaled("[stone_av]", 14 * KILOGRAMS_PER_POUND),
            }
        ),
        Metric.BODY_TEMPERATURE: MappingProxyType({"Cel": _same("Cel"), "[degF]": _FAHRENHEIT}),
        Metric.SPO2: MappingProxyType({"%": _same("%")}),
        Metric.HEART_RATE: MappingProxyType({"/min": _same("/min")}),
        Metric.WOUND_PHOTO: MappingProxyType({"1": _same("1")}),
    }
)

#: Spellings seen from devices, spreadsheets and people, mapped to the UCUM code. Looked up
#: case-insensitively after trimming; UCUM codes themselves are matched exactly first.
_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "mmhg": "mm[Hg]",
        "mm hg": "mm[Hg]",
        "mm[hg]": "mm[Hg]",
        "mg/dl": "mg/dL",
        "mmol/l": "mmol/L",
        "kg": "kg",
        "kilogram": "kg",
        "kilograms": "kg",
        "g": "g",
        "[lb_av]": "[lb_av]",
        "lb": "[lb_av]",
        "lbs": "[lb_av]",
        "pound": "[lb_av]",
        "pounds": "[lb_av]",
        "[stone_av]": "[stone_av]",
        "st": "[stone_av]",
        "stone": "[stone_av]",
        "cel": "Cel",
        "°c": "Cel",
        "degc": "Cel",
        "c": "Cel",
        "[degf]": "[degF]",
        "°f": "[degF]",
        "degf": "[degF]",
        "f": "[degF]",
        "%": "%",
        "percent": "%",
        "/min": "/min",
        "{beats}/min": "/min",
        "{beat}/min": "/min",
        "beats/min": "/min",
        "bpm": "/min",
        "count/min": "/min",
        "1/min": "/min",
        "1": "1",
    }
)

UNKNOWN_UNIT_MESSAGE = N_("“{unit}” is not a unit Jaejin knows; for {metric} use {accepted}")
MISMATCHED_UNIT_MESSAGE = N_("“{unit}” is not a unit of {metric}; use {accepted}")


class UnitError(ValueError):
    """A unit that is unknown, or known but not a unit of the metric it came with."""

    def __init__(self, metric: Metric, unit: str, *, known_elsewhere: bool) -> None:
        self.metric = metric
        self.unit = unit
        self.known_elsewhere = known_elsewhere
        self.accepted = tuple(UNIT_CONVERSIONS[metric])
        super().__init__(self.message("en"))

    @property
    def code(self) -> str:
        """Stable code: UNIT_MISMATCH for a real unit of another metric, else UNKNOWN_UNIT."""
        return "UNIT_MISMATCH" if self.known_elsewhere else "UNKNOWN_UNIT"

    def message(self, language: str) -> str:
        template = MISMATCHED_UNIT_MESSAGE if self.known_elsewhere else UNKNOWN_UNIT_MESSAGE
        return translate(
            language,
            template,
            unit=self.unit,
            metric=metric_label(self.metric, language),
            accepted=", ".join(self.accepted),
        )


def ucum_code(unit: str) -> str | None:
    """The UCUM code for a spelling (`mmHg` -> `mm[Hg]`, `bpm` -> `/min`), None if unknown."""
    stripped = unit.strip()
    for conversions in UNIT_CONVERSIONS.values():
        if stripped in conversions:
            return stripped
    return _ALIASES.get(stripped.lower())


def conversion_for(metric: Metric, unit: str) -> UnitConversion:
    """The conversion for `unit` as a unit of `metric`; `UnitError` when it is not one."""
    code = ucum_code(unit)
    conversions = UNIT_CONVERSIONS[metric]
    if code is not None and code in conversions:
        return conversions[code]
    raise UnitError(metric, unit, known_elsewhere=code is not None)


def normalise_unit(metric: Metric, unit: str) -> str:
    """The UCUM code of `unit` as a unit of `metric` (`mmHg` -> `mm[Hg]`)."""
    return conversion_for(metric, unit).ucum


def to_canonical(metric: Metric, value: float, unit: str) -> float:
    """`value` in `unit` expressed in the metric's canonical unit (`CANONICAL_UNITS[metric]`)."""
    return conversion_for(metric, unit).to_canonical(float(value))


def from_canonical(metric: Metric, value: float, unit: str) -> float:
    """A canonical `value` of `metric` expressed in `unit` (for display and export)."""
    return conversion_for(metric, unit).from_canonical(float(value))


def canonical_unit(metric: Metric) -> str:
    return CANONICAL_UNITS[metric]
