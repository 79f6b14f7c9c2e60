"""What every parser returns: one `ParsedItem` per logical item of the input, never half an item.

A batch (a FHIR Bundle, a JSON array, a CSV file, an Apple Health export) is reported item by item:
an item is either all its readings (a blood-pressure measurement is two readings sharing a
`panel_id`) or the problems that refuse it, or a note that it was skipped on purpose (a Nightscout
calibration entry). One bad item never stops the others; only input that cannot be read at all
raises `UnreadableInputError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from functools import lru_cache
from hashlib import sha256
from types import MappingProxyType

from jaejin.core.i18n import N_, translate
from jaejin.monitoring.readings import (
    BLOOD_PRESSURE_PANEL_LOINC,
    CANONICAL_UNITS,
    LOINC_DIASTOLIC,
    LOINC_GLUCOSE_BLOOD_MASS,
    LOINC_GLUCOSE_BLOOD_MOLES,
    LOINC_GLUCOSE_CGM,
    LOINC_SYSTOLIC,
    METRIC_SPECS,
    Metric,
    ProblemCode,
    Reading,
    ReadingProblem,
    metric_for_loinc,
    metric_label,
    validate_readings,
)
from jaejin.monitoring.units import (
    MISMATCHED_UNIT_MESSAGE,
    UNKNOWN_UNIT_MESSAGE,
    UnitConversion,
    UnitError,
    conversion_for,
)


class ImportProblemCode(StrEnum):
    """Stable codes for why an input item was refused before its values could be judged.

    Problems found in a well-formed reading keep `readings.ProblemCode` (IMPOSSIBLE_VALUE,
    FUTURE_TIMESTAMP, DIASTOLIC_ABOVE_SYSTOLIC, ...); both sets share one namespace of strings.
    """

    MALFORMED_ITEM = "MALFORMED_ITEM"
    MISSING_FIELD = "MISSING_FIELD"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    INVALID_NUMBER = "INVALID_NUMBER"
    INVALID_TEXT = "INVALID_TEXT"
    INVALID_VALUE = "INVALID_VALUE"
    UNKNOWN_CODE = "UNKNOWN_CODE"
    CONFLICTING_CODE = "CONFLICTING_CODE"
    UNKNOWN_METRIC = "UNKNOWN_METRIC"
    UNSUPPORTED_METRIC = "UNSUPPORTED_METRIC"
    UNKNOWN_UNIT = "UNKNOWN_UNIT"
    UNIT_MISMATCH = "UNIT_MISMATCH"
    NAIVE_TIMESTAMP = "NAIVE_TIMESTAMP"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    UNSUPPORTED_RESOURCE = "UNSUPPORTED_RESOURCE"
    UNSUPPORTED_STATUS = "UNSUPPORTED_STATUS"
    WRONG_PATIENT = "WRONG_PATIENT"
    UNSUPPORTED_REQUEST = "UNSUPPORTED_REQUEST"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    UNPAIRED_BLOOD_PRESSURE = "UNPAIRED_BLOOD_PRESSURE"


_IMPORT_MESSAGES: Mapping[ImportProblemCode, str] = MappingProxyType(
    {
        ImportProblemCode.MALFORMED_ITEM: N_("This item is not a {expected}"),
        ImportProblemCode.MISSING_FIELD: N_("“{field}” is required"),
        ImportProblemCode.UNKNOWN_FIELD: N_("“{field}” is not a field Jaejin accepts here"),
        ImportProblemCode.INVALID_NUMBER: N_("“{field}” must be a number, not “{value}”"),
        ImportProblemCode.INVALID_TEXT: N_("“{field}” must be text of at most {limit} characters"),
        ImportProblemCode.INVALID_VALUE: N_("“{field}” has a value Jaejin cannot use"),
        ImportProblemCode.UNKNOWN_CODE: N_("The code {code} is not a measurement Jaejin records"),
        ImportProblemCode.CONFLICTING_CODE: N_("The code {code} does not measure {metric}"),
        ImportProblemCode.UNKNOWN_METRIC: N_(
            "“{metric}” is not a measurement Jaejin records; use one of {accepted}"
        ),
        ImportProblemCode.UNSUPPORTED_METRIC: N_("{metric} cannot be imported this way"),
        ImportProblemCode.UNKNOWN_UNIT: UNKNOWN_UNIT_MESSAGE,
        ImportProblemCode.UNIT_MISMATCH: MISMATCHED_UNIT_MESSAGE,
        ImportProblemCode.NAIVE_TIMESTAMP: N_(
            "The time “{value}” has no UTC offset; add one, for example 2024-05-01T08:30:00+09:00"
        ),
        ImportProblemCode.INVALID_TIMESTAMP: N_(
            "“{value}” is not a date and time; use ISO 8601, for example "
            "2024-05-01T08:30:00+09:00"
        ),
        ImportProblemCode.UNSUPPORTED_RESOURCE: N_(
            "A {resource_type} cannot be recorded here; send an Observation"
        ),
        ImportProblemCode.UNSUPPORTED_STATUS: N_(
            "An Observation with status “{status}” cannot be recorded; use final, amended, "
            "corrected or preliminary"
        ),
        ImportProblemCode.WRONG_PATIENT: N_(
            "The reading is for “{reference}”, not for the patient this upload belongs to"
        ),
        ImportProblemCode.UNSUPPORTED_REQUEST: N_(
            "“{method} {url}” is not supported in a bundle; use POST Observation"
        ),
        ImportProblemCode.DUPLICATE_KEY: N_(
            "The key “{key}” was already used by item {first} of this batch"
        ),
        ImportProblemCode.UNPAIRED_BLOOD_PRESSURE: N_(
            "{metric} has no reading of the other half of the blood pressure at the same time"
        ),
    }
)


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """Why one item was refused: a stable `code`, where (`pointer`), and `message(language)`.

    `pointer` is in the input's own terms: a JSON pointer (`/3/unit`) for JSON, a FHIRPath
    expression (`Observation.valueQuantity.code`) for FHIR, `line 12, unit` for CSV.
    """

    code: str
    pointer: str
    template: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    #: Named in the reader's language as the `{metric}` parameter.
    metric: Metric | None = None
    reading_problem: ReadingProblem | None = None

    def message(self, language: str) -> str:
        if self.reading_problem is not None:
            return self.reading_problem.message(language)
        params = dict(self.params)
        if self.metric is not None:
            params["metric"] = metric_label(self.metric, language)
        return translate(language, self.template, **params)

    @classmethod
    def of(
        cls,
        problem_code: ImportProblemCode,
        pointer: str,
        metric: Metric | None = None,
        /,
        **params: str,
    ) -> ImportProblem:
        return cls(
            problem_code.value,
            pointer,
            _IMPORT_MESSAGES[problem_code],
            MappingProxyType(dict(params)),
            metric,
        )

    @classmethod
    def from_unit_error(cls, error: UnitError, pointer: str) -> ImportProblem:
        code = (
            ImportProblemCode.UNIT_MISMATCH
            if error.known_elsewhere
            else ImportProblemCode.UNKNOWN_UNIT
        )
        return cls.of(
            code, pointer, error.metric, unit=error.unit, accepted=", ".join(error.accepted)
        )

    @classmethod
    def from_reading_problem(cls, problem: ReadingProblem, pointer: str) -> ImportProblem:
        return cls(problem.code.value, pointer, metric=problem.metric, reading_problem=problem)


class UnreadableInputError(ValueError):
    """The whole input cannot be read (not JSON, not a zip, corrupt XML): nothing was imported."""

    def __init__(self, code: str, template: str, **params: str) -> None:
        self.code = code
        self.template = template
        self.params = params
        super().__init__(self.message("en"))

    def message(self, language: str) -> str:
        return translate(language, self.template, **self.params)


@dataclass(frozen=True, slots=True)
class ParsedItem:
    """One logical item of an input and what became of it.

    Exactly one holds: `readings` (all of the item), `problems` (why it is refused), or `skipped`
    (a stable reason code for input that is deliberately not a reading). `key` is the sender's
    idempotency key when the format has one.
    """

    index: int
    readings: tuple[Reading, ...] = ()
    problems: tuple[ImportProblem, ...] = ()
    key: str | None = None
    skipped: str | None = None

    def __post_init__(self) -> None:
        if bool(self.readings) + bool(self.problems) + (self.skipped is not None) != 1:
            raise ValueError(
                "a parsed item has exactly one of readings, problems or a skip reason"
            )

    @property
    def accepted(self) -> bool:
        return bool(self.readings)


@dataclass(frozen=True, slots=True)
class ImportContext:
    """Who the readings belong to and when they arrived.

    `received_at` is also "now" for refusing readings from the future (beyond `clock_skew`).
    `default_zone`, when set, is the zone for timestamps sent without an offset (a spreadsheet
    typed by the patient); without it such timestamps are refused.
    """

    patient_ref: str
    received_at: datetime
    clock_skew: timedelta = timedelta(minutes=5)
    default_zone: tzinfo | None = None

    def __post_init__(self) -> None:
        if self.received_at.tzinfo is None or self.received_at.utcoffset() is None:
            raise ValueError("received_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Measurement:
    """A value as sent, before unit conversion: the parsers' common intermediate form."""

    metric: Metric
    value: float
    unit: str
    loinc: str
    #: Where the value and unit came from, for problem pointers.
    value_pointer: str
    unit_pointer: str


def glucose_loinc_after_conversion(loinc: str) -> str:
    """Blood glucose stored in mg/dL carries the mass-concentration code, whatever was sent."""
    return LOINC_GLUCOSE_BLOOD_MASS if loinc == LOINC_GLUCOSE_BLOOD_MOLES else loinc


def panel_identifier(patient_ref: str, effective_at: datetime, device: str | None,
                     values: Sequence[float]) -> str:
    """A stable panel id: re-sending the same measurement yields the same id.

    Stored with the readings: the text hashed must stay exactly as first released.
    """
    material = "|".join((patient_ref, effective_at.isoformat(), device or "", *map(repr, values)))
    return "bp-" + sha256(material.encode()).hexdigest()[:20]


def reading_fingerprint(reading: Reading) -> str:
    """Identity of an exact duplicate: same patient, measurement, instant, value and source.

    The instant is compared in UTC (the same moment sent with another offset is the same
    reading) and the value after conversion to the canonical unit, rounded to 6 decimals so the
    same value sent in mmol/L twice does not differ by floating-point noise.
    """
    return reading_digest(reading).hex()


#: A metric's text (an enum's `.value` is a Python-level descriptor call, per reading).
_METRIC_TEXT: Mapping[Metric, str] = MappingProxyType({metric: metric.value for metric in Metric})


def reading_digest(reading: Reading) -> bytes:
    """`reading_fingerprint` as the 32 bytes of the digest.

    Stored with every reading: the text hashed must stay exactly as first released (a test pins
    it), or a re-sent reading would no longer match the copy stored before.
    """
    moment = reading.effective_at
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return sha256(
        f"{reading.patient_ref}|{_METRIC_TEXT[reading.metric]}|{reading.loinc}|"
        f"{moment.isoformat()}|{round(reading.value, 6)!r}|{reading.source_device or ''}"
        .encode()
    ).digest()


def parse_instant(text: str, default_zone: tzinfo | None = None) -> datetime:
    """An ISO 8601 date-time with offset; raises `ValueError` with the problem code as message.

    Date-only values are refused like naive ones: a reading needs an instant.
    """
    stripped = text.strip()
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(ImportProblemCode.INVALID_TIMESTAMP.value) from None
    if len(stripped) <= 10:
        raise ValueError(ImportProblemCode.NAIVE_TIMESTAMP.value)
    if moment.tzinfo is None or moment.utcoffset() is None:
        if default_zone is None:
            raise ValueError(ImportProblemCode.NAIVE_TIMESTAMP.value)
        moment = moment.replace(tzinfo=default_zone)
    return moment


def instant_problem(text: str, default_zone: tzinfo | None, pointer: str) -> (
    tuple[datetime | None, ImportProblem | None]
):
    """`parse_instant` as a value or a problem pointing at `pointer`."""
    try:
        return parse_instant(text, default_zone), None
    except ValueError as error:
        return None, ImportProblem.of(ImportProblemCode(str(error)), pointer, value=text)


def _reading_problem_pointer(problem: ReadingProblem, pointers: ReadingPointers) -> str:
    if problem.code is ProblemCode.FUTURE_TIMESTAMP:
        return pointers.time
    if problem.code is ProblemCode.UNIT_MISMATCH:
        return pointers.unit.get(problem.metric, pointers.item)
    if problem.code is ProblemCode.UNKNOWN_CODE:
        return pointers.code
    return pointers.value.get(problem.metric, pointers.item)


@dataclass(frozen=True, slots=True)
class ReadingPointers:
    """Where each part of an item sits in the input, so a refusal points at the right field."""

    item: str
    time: str
    code: str
    value: Mapping[Metric, str] = field(default_factory=dict)
    unit: Mapping[Metric, str] = field(default_factory=dict)


@lru_cache(maxsize=1024)
def known_conversion(metric: Metric, unit: str) -> UnitConversion | None:
    """`units.conversion_for`, remembered (every reading of a batch asks): None when `unit` is
    not a unit of `metric` (`conversion_for` then says why)."""
    try:
        return conversion_for(metric, unit)
    except UnitError:
        return None


def assemble_readings(
    converted: Sequence[tuple[Metric, float, str]],
    effective_at: datetime,
    device: str | None,
    context: ImportContext,
) -> tuple[Reading, ...]:
    """An item's readings from its (metric, canonical value, LOINC code) triples.

    Two values (systolic and diastolic) become a panel sharing a `panel_id`.
    """
    panel_id = None
    if len(converted) > 1:
        panel_id = panel_identifier(
            context.patient_ref, effective_at, device, [value for _, value, _ in converted]
        )
    patient_ref, received_at = context.patient_ref, context.received_at
    return tuple([
        Reading(
            patient_ref=patient_ref,
            metric=metric,
            value=value,
            unit=CANONICAL_UNITS[metric],
            loinc=loinc,
            effective_at=effective_at,
            source_device=device,
            received_at=received_at,
            panel_id=panel_id,
        )
        for metric, value, loinc in converted
    ])


def build_item(
    index: int,
    measurements: Sequence[Measurement],
    effective_at: datetime,
    device: str | None,
    context: ImportContext,
    pointers: ReadingPointers,
    key: str | None = None,
) -> ParsedItem:
    """Convert, assemble and validate an item's measurements into readings, or refuse it whole.

    Two measurements (systolic and diastolic) become a panel sharing a `panel_id`.
    """
    problems: list[ImportProblem] = []
    converted: list[tuple[Metric, float, str]] = []
    for measurement in measurements:
        conversion = known_conversion(measurement.metric, measurement.unit)
        if conversion is None:
            try:
                conversion_for(measurement.metric, measurement.unit)
            except UnitError as error:
                problems.append(ImportProblem.from_unit_error(error, measurement.unit_pointer))
            continue
        converted.append(
            (
                measurement.metric,
                conversion.to_canonical(measurement.value),
                glucose_loinc_after_conversion(measurement.loinc),
            )
        )
    if problems:
        return ParsedItem(index, problems=tuple(problems), key=key)
    readings = assemble_readings(converted, effective_at, device, context)
    found = validate_readings(readings, context.received_at, context.clock_skew)
    if found:
        value_pointers = dict(pointers.value)
        for measurement in measurements:
            value_pointers.setdefault(measurement.metric, measurement.value_pointer)
        located = ReadingPointers(
            pointers.item, pointers.time, pointers.code, value_pointers, pointers.unit
        )
        refusals = tuple(
            ImportProblem.from_reading_problem(problem, _reading_problem_pointer(problem, located))
            for position in sorted(found)
            for problem in found[position]
        )
        return ParsedItem(index, problems=refusals, key=key)
    return ParsedItem(index, readings=readings, key=key)


def refuse(index: int, *problems: ImportProblem, key: str | None = None) -> ParsedItem:
    return ParsedItem(index, problems=problems, key=key)


def mark_duplicate_keys(items: Sequence[ParsedItem], pointer: Callable[[int], str]) -> list[
    ParsedItem
]:
    """Refuse every later item that reuses an earlier item's idempotency key in one batch."""
    first_by_key: dict[str, int] = {}
    marked: list[ParsedItem] = []
    for item in items:
        if item.key is None:
            marked.append(item)
            continue
        first = first_by_key.setdefault(item.key, item.index)
        if first == item.index:
            marked.append(item)
            continue
        marked.append(
            refuse(
                item.index,
                ImportProblem.of(
                    ImportProblemCode.DUPLICATE_KEY, pointer(item.index), key=item.key,
                    first=str(first),
                ),
                key=item.key,
            )
        )
    return marked


def metric_of_loinc(code: str) -> Metric | None:
    """The metric of a LOINC code; the blood-pressure panel code is not one metric."""
    if code == BLOOD_PRESSURE_PANEL_LOINC:
        return None
    return metric_for_loinc(code)


#: Name of a blood-pressure measurement (a systolic and a diastolic value) in JSON and CSV input.
BLOOD_PRESSURE_NAME = "blood_pressure"
#: Name of a continuous glucose monitor value in JSON and CSV input (LOINC 99504-3).
CGM_GLUCOSE_NAME = "cgm_glucose"


@dataclass(frozen=True, slots=True)
class MeasurementKind:
    """What one JSON or CSV item measures: one metric, or the blood-pressure pair."""

    name: str
    metrics: tuple[Metric, ...]
    loincs: tuple[str, ...]

    @property
    def is_blood_pressure(self) -> bool:
        return len(self.metrics) == 2


def _kinds() -> dict[str, MeasurementKind]:
    kinds = {
        BLOOD_PRESSURE_NAME: MeasurementKind(
            BLOOD_PRESSURE_NAME, (Metric.SYSTOLIC, Metric.DIASTOLIC),
            (LOINC_SYSTOLIC, LOINC_DIASTOLIC),
        ),
        CGM_GLUCOSE_NAME: MeasurementKind(
            CGM_GLUCOSE_NAME, (Metric.GLUCOSE,), (LOINC_GLUCOSE_CGM,)
        ),
    }
    for metric, spec in METRIC_SPECS.items():
        if metric is not Metric.WOUND_PHOTO:
            kinds[metric.value] = MeasurementKind(metric.value, (metric,), (spec.primary_loinc,))
    return kinds


#: Measurement names accepted in JSON and CSV input, in documentation order.
MEASUREMENT_KINDS: Mapping[str, MeasurementKind] = MappingProxyType(_kinds())


def kind_for(
    name: str | None, loinc: str | None, name_pointer: str, loinc_pointer: str
) -> MeasurementKind | ImportProblem:
    """Resolve an item's `metric` name or `loinc` code (both may be given if they agree)."""
    from_name: MeasurementKind | None = None
    if name:
        from_name = MEASUREMENT_KINDS.get(name.strip().lower())
        if from_name is None:
            known_metric = name.strip().lower() == Metric.WOUND_PHOTO.value
            if known_metric:
                return ImportProblem.of(
                    ImportProblemCode.UNSUPPORTED_METRIC, name_pointer, Metric.WOUND_PHOTO
                )
            return ImportProblem.of(
                ImportProblemCode.UNKNOWN_METRIC, name_pointer, metric=name,
                accepted=", ".join(MEASUREMENT_KINDS),
            )
    if not loinc:
        if from_name is None:
            return ImportProblem.of(ImportProblemCode.MISSING_FIELD, name_pointer, field="metric")
        return from_name
    code = loinc.strip()
    if code == BLOOD_PRESSURE_PANEL_LOINC:
        from_code = MEASUREMENT_KINDS[BLOOD_PRESSURE_NAME]
    else:
        metric = metric_for_loinc(code)
        if metric is None:
            return ImportProblem.of(ImportProblemCode.UNKNOWN_CODE, loinc_pointer, code=code)
        if metric is Metric.WOUND_PHOTO:
            return ImportProblem.of(ImportProblemCode.UNSUPPORTED_METRIC, loinc_pointer, metric)
        from_code = MeasurementKind(metric.value, (metric,), (code,))
    if from_name is not None and from_name.metrics != from_code.metrics:
        return ImportProblem.of(
            ImportProblemCode.CONFLICTING_CODE, loinc_pointer, from_name.metrics[0], code=code
        )
    return from_code
