"""Jaejin's own JSON batch of readings, sent by Jaejin's apps with an idempotency key per reading.

Body: `{"readings": [item, ...]}` (or a bare array). One item:

    {"idempotency_key": "a1f3...", "metric": "blood_pressure", "systolic": 128, "diastolic": 82,
     "unit": "mmHg", "effective_at": "2024-05-01T08:30:00+09:00", "device": "Omron HEM-7155T"}

`metric` is a name from `MEASUREMENT_KINDS` (or give `loinc` instead); `value` for every metric
but blood pressure, which takes `systolic` and `diastolic`. `effective_at` must carry a UTC offset.
Each item is validated on its own: the response reports every item, keyed by its idempotency key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from math import isfinite
from typing import Annotated, Any, Final, TypeGuard

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails

from jaejin.core.i18n import N_
from jaejin.monitoring.parsers.items import (
    MEASUREMENT_KINDS,
    ImportContext,
    ImportProblem,
    ImportProblemCode,
    Measurement,
    MeasurementKind,
    ParsedItem,
    ReadingPointers,
    UnreadableInputError,
    assemble_readings,
    build_item,
    glucose_loinc_after_conversion,
    kind_for,
    known_conversion,
    mark_duplicate_keys,
    panel_identifier,
    refuse,
)
from jaejin.monitoring.readings import METRIC_SPECS, Metric, Reading, validate_readings

MAX_BATCH_ITEMS: Final = 1000
KEY_MAX_LENGTH: Final = 200
DEVICE_MAX_LENGTH: Final = 200
UNIT_MAX_LENGTH: Final = 40

_NOT_A_BATCH = N_(
    "The request body must be a JSON object with a “readings” array, or a JSON array"
)
_TOO_MANY_ITEMS = N_("A batch holds at most {limit} readings; this one has {count}")

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _iso_text(value: object) -> object:
    """Epoch numbers are refused: an ISO 8601 text is the only form that carries the offset.

    A text with an offset is read by `datetime.fromisoformat`, whose fixed-offset zone is the
    standard library's: every later step (validation, fingerprint, storing) asks a reading for
    its offset several times, and pydantic's own zone answers each call through Python.
    Anything else goes on to pydantic, which explains what is wrong with it.
    """
    if not isinstance(value, str):
        raise ValueError("effective_at must be an ISO 8601 date-time text with a UTC offset")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return value
    return parsed if parsed.tzinfo is not None and len(value.strip()) > 10 else value


class ReadingItemIn(BaseModel):
    """One reading in a batch, as sent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    idempotency_key: Annotated[str, Field(min_length=1, max_length=KEY_MAX_LENGTH)]
    metric: Annotated[str | None, Field(max_length=40)] = None
    loinc: Annotated[str | None, Field(max_length=20)] = None
    value: Number | None = None
    systolic: Number | None = None
    diastolic: Number | None = None
    unit: Annotated[str, Field(min_length=1, max_length=UNIT_MAX_LENGTH)]
    effective_at: Annotated[AwareDatetime, BeforeValidator(_iso_text)]
    device: Annotated[str | None, Field(max_length=DEVICE_MAX_LENGTH)] = None


class ReadingBatchIn(BaseModel):
    """The batch body, for the API schema; items are validated one by one by `parse_batch`."""

    readings: Annotated[list[ReadingItemIn], Field(max_length=MAX_BATCH_ITEMS)]


_TEXT_LIMITS: Mapping[str, int] = {
    "idempotency_key": KEY_MAX_LENGTH,
    "metric": 40,
    "loinc": 20,
    "unit": UNIT_MAX_LENGTH,
    "device": DEVICE_MAX_LENGTH,
}


def _problem_from_error(error: ErrorDetails, base: str) -> ImportProblem:
    location = [str(part) for part in error["loc"]]
    field = location[0] if location else "-"
    pointer = f"{base}/{field}" if location else base
    kind = error["type"]
    raw = error.get("input")
    shown = str(raw)[:60]
    if kind == "missing":
        return ImportProblem.of(ImportProblemCode.MISSING_FIELD, pointer, field=field)
    if kind == "extra_forbidden":
        return ImportProblem.of(ImportProblemCode.UNKNOWN_FIELD, pointer, field=field)
    if field == "effective_at":
        code = (
            ImportProblemCode.NAIVE_TIMESTAMP
            if kind == "timezone_aware"
            else ImportProblemCode.INVALID_TIMESTAMP
        )
        return ImportProblem.of(code, pointer, value=shown)
    if field in ("value", "systolic", "diastolic"):
        return ImportProblem.of(
            ImportProblemCode.INVALID_NUMBER, pointer, field=field, value=shown
        )
    if field in _TEXT_LIMITS:
        return ImportProblem.of(
            ImportProblemCode.INVALID_TEXT, pointer, field=field, limit=str(_TEXT_LIMITS[field])
        )
    return ImportProblem.of(ImportProblemCode.INVALID_VALUE, pointer, field=field)


def _measurements(
    item: ReadingItemIn, kind: MeasurementKind, base: str
) -> list[Measurement] | list[ImportProblem]:
    if kind.is_blood_pressure:
        problems = [
            ImportProblem.of(ImportProblemCode.MISSING_FIELD, f"{base}/{name}", field=name)
            for name, given in (("systolic", item.systolic), ("diastolic", item.diastolic))
            if given is None
        ]
        if item.value is not None:
            problems.append(
                ImportProblem.of(ImportProblemCode.UNKNOWN_FIELD, f"{base}/value", field="value")
            )
        if problems or item.systolic is None or item.diastolic is None:
            return problems
        return [
            Measurement(metric, value, item.unit, loinc, f"{base}/{name}", f"{base}/unit")
            for metric, loinc, value, name in zip(
                kind.metrics, kind.loincs, (item.systolic, item.diastolic),
                ("systolic", "diastolic"), strict=True,
            )
        ]
    problems = [
        ImportProblem.of(ImportProblemCode.UNKNOWN_FIELD, f"{base}/{name}", field=name)
        for name, given in (("systolic", item.systolic), ("diastolic", item.diastolic))
        if given is not None
    ]
    if item.value is None:
        problems.append(
            ImportProblem.of(ImportProblemCode.MISSING_FIELD, f"{base}/value", field="value")
        )
    if problems or item.value is None:
        return problems
    return [
        Measurement(
            kind.metrics[0], item.value, item.unit, kind.loincs[0], f"{base}/value",
            f"{base}/unit",
        )
    ]


def parse_batch_item(
    raw: object, index: int, context: ImportContext, base: str | None = None
) -> ParsedItem:
    """One item of a batch; `base` is its JSON pointer (default `/readings/<index>`)."""
    base = base if base is not None else f"/readings/{index}"
    key = raw.get("idempotency_key") if isinstance(raw, Mapping) else None
    key = key if isinstance(key, str) and key.strip() else None
    if not isinstance(raw, Mapping):
        return refuse(
            index,
            ImportProblem.of(ImportProblemCode.MALFORMED_ITEM, base, expected="JSON object"),
        )
    try:
        item = ReadingItemIn.model_validate(raw)
    except ValidationError as invalid:
        return refuse(
            index, *(_problem_from_error(error, base) for error in invalid.errors()), key=key
        )
    return _validated_item(item, index, context, base)


def plain_item(item: ReadingItemIn, index: int, context: ImportContext) -> ParsedItem | None:
    """The readings of a well-formed item named by `metric` whose values pass every check,
    equal to what `explained_item` builds, without the pointers and intermediate objects it
    needs to explain a refusal; None for any other item (it goes the long way)."""
    if item.loinc is not None or item.metric is None:
        return None
    kind = MEASUREMENT_KINDS.get(item.metric.lower())
    if kind is None:
        return None
    values: tuple[float, ...]
    if kind.is_blood_pressure:
        if item.value is not None or item.systolic is None or item.diastolic is None:
            return None
        values = (item.systolic, item.diastolic)
    else:
        if item.value is None or item.systolic is not None or item.diastolic is not None:
            return None
        values = (item.value,)
    converted: list[tuple[Metric, float, str]] = []
    for metric, loinc, value in zip(kind.metrics, kind.loincs, values, strict=True):
        conversion = known_conversion(metric, item.unit)
        if conversion is None:
            return None
        converted.append(
            (metric, conversion.to_canonical(value), glucose_loinc_after_conversion(loinc))
        )
    readings = assemble_readings(converted, item.effective_at, item.device or None, context)
    if validate_readings(readings, context.received_at, context.clock_skew):
        return None
    return ParsedItem(index, readings=readings, key=item.idempotency_key)


def _validated_item(
    item: ReadingItemIn, index: int, context: ImportContext, base: str
) -> ParsedItem:
    """An item whose fields are well-formed: its readings, or why its values are refused."""
    plain = plain_item(item, index, context)
    return plain if plain is not None else explained_item(item, index, context, base)


def explained_item(
    item: ReadingItemIn, index: int, context: ImportContext, base: str
) -> ParsedItem:
    """`_validated_item` the long way: every problem found, with a pointer to its field."""
    kind = kind_for(item.metric, item.loinc, f"{base}/metric", f"{base}/loinc")
    if isinstance(kind, ImportProblem):
        return refuse(index, kind, key=item.idempotency_key)
    measured = _measurements(item, kind, base)
    if not measured or isinstance(measured[0], ImportProblem):
        problems = [one for one in measured if isinstance(one, ImportProblem)]
        return refuse(index, *problems, key=item.idempotency_key)
    measurements = [one for one in measured if isinstance(one, Measurement)]
    pointers = ReadingPointers(item=base, time=f"{base}/effective_at", code=f"{base}/metric")
    return build_item(
        index, measurements, item.effective_at, item.device or None, context, pointers,
        key=item.idempotency_key,
    )


#: The whole list validated in one call: where the quick check declines several items, pydantic-core
#: walks their list faster than one call per item.
_ITEMS: Final = TypeAdapter(list[ReadingItemIn])


def _validated_items(items: Sequence[Any]) -> dict[int, ReadingItemIn]:
    """The well-formed items by index (the others are judged one by one, with reasons)."""
    try:
        return dict(enumerate(_ITEMS.validate_python(items)))
    except ValidationError as invalid:
        refused = {error["loc"][0] for error in invalid.errors() if error["loc"]}
    kept = [index for index in range(len(items)) if index not in refused]
    try:
        return dict(zip(kept, _ITEMS.validate_python([items[index] for index in kept]),
                        strict=True))
    except ValidationError:
        return {}


# ---------------------------------------------------------------------------- the quick check
#
# Nearly every item an app sends is a plain dict of exact JSON types whose texts need no
# trimming and whose values pass every check. `quick_item` builds such an item's readings
# straight from the dict, without a pydantic model, the pointers a refusal needs or the general
# validation; it declines (None) anything else, which then goes the general way (pydantic, then
# `plain_item` or `explained_item`) and is answered exactly as before. Declining is always safe,
# so every condition below errs towards it.

_FIELDS: Final = frozenset(ReadingItemIn.model_fields)
#: Integers pydantic turns into exactly `float(value)` (a float holds them without rounding).
_EXACT_INTEGER: Final = 2**53


@dataclass(frozen=True, slots=True)
class _Half:
    """One reading an item of a (metric name, unit) pair becomes, with what judges its value."""

    metric: Metric
    to_canonical: Callable[[float], float]
    loinc: str
    unit: str
    low: float
    high: float

    def canonical(self, sent: object) -> float | None:
        """`sent` in the canonical unit when pydantic reads it as exactly `float(sent)` (a strict
        float: an int or a finite float) and the result is within the physiological limits;
        None otherwise, where the general way answers."""
        if type(sent) is int and -_EXACT_INTEGER <= sent <= _EXACT_INTEGER:
            value = self.to_canonical(float(sent))
        elif type(sent) is float and isfinite(sent):
            value = self.to_canonical(sent)
        else:
            return None
        return value if self.low <= value <= self.high else None


#: Plans by (metric name, unit) exactly as sent. Only pairs that resolve are kept, and at most
#: `_PLANS_KEPT` of them, so odd spellings sent on purpose cannot grow it without bound.
_PLANS: dict[tuple[str, str], tuple[_Half, ...]] = {}
_PLANS_KEPT: Final = 4096


def _plan(metric_name: str, unit: str) -> tuple[_Half, ...] | None:
    """How `plain_item` turns a value of `metric_name` in `unit` into readings; None when it
    does not (an unknown name or a unit of another metric)."""
    kind = MEASUREMENT_KINDS.get(metric_name.lower())
    if kind is None:
        return None
    halves = []
    for metric, loinc in zip(kind.metrics, kind.loincs, strict=True):
        conversion = known_conversion(metric, unit)
        spec = METRIC_SPECS[metric]
        stored_loinc = glucose_loinc_after_conversion(loinc)
        if (conversion is None or spec.physiological_limits is None
                or stored_loinc not in spec.loinc_codes):
            return None
        low, high = spec.physiological_limits
        halves.append(
            _Half(metric, conversion.to_canonical, stored_loinc, spec.unit, low, high)
        )
    plan = tuple(halves)
    if len(_PLANS) < _PLANS_KEPT:
        _PLANS[(metric_name, unit)] = plan
    return plan


def _plain_text(value: object, longest: int) -> TypeGuard[str]:
    """A text pydantic keeps as it is: nothing to trim (Python trims every character pydantic
    trims, and more), and at most `longest` characters."""
    return type(value) is str and len(value) <= longest and value.strip() == value


def quick_item(
    raw: object, index: int, context: ImportContext, latest: datetime
) -> ParsedItem | None:
    """The item's readings, equal to what the general way builds, when the item is plain and
    every value passes; None for anything else. `latest` is `received_at` plus the clock skew."""
    if type(raw) is not dict or not raw.keys() <= _FIELDS:
        return None
    key, metric_name, unit = raw.get("idempotency_key"), raw.get("metric"), raw.get("unit")
    device, sent_at = raw.get("device"), raw.get("effective_at")
    if not (
        _plain_text(key, KEY_MAX_LENGTH) and key
        and _plain_text(metric_name, 40)
        and _plain_text(unit, UNIT_MAX_LENGTH) and unit
        and (device is None or _plain_text(device, DEVICE_MAX_LENGTH))
        and type(sent_at) is str
        and raw.get("loinc") is None
    ):
        return None
    plan = _PLANS.get((metric_name, unit)) or _plan(metric_name, unit)
    if plan is None:
        return None
    value, systolic, diastolic = raw.get("value"), raw.get("systolic"), raw.get("diastolic")
    if len(plan) == 1:
        if systolic is not None or diastolic is not None:
            return None
        first, second = plan[0].canonical(value), None
    else:
        if value is not None:
            return None
        first, second = plan[0].canonical(systolic), plan[1].canonical(diastolic)
        if second is None or (first is not None and second >= first):
            return None  # not a number, or diastolic not below systolic
    if first is None:
        return None
    # Read as `_iso_text` reads it; pydantic keeps the datetime that returns.
    stripped = sent_at.strip()
    try:
        effective_at = datetime.fromisoformat(stripped)
    except ValueError:
        return None
    if effective_at.tzinfo is None or len(stripped) <= 10 or effective_at > latest:
        return None
    device_name = device or None
    patient_ref, received_at = context.patient_ref, context.received_at
    half = plan[0]
    if second is None:
        return ParsedItem(index, (
            Reading(patient_ref, half.metric, first, half.unit, half.loinc, effective_at,
                    device_name, received_at),
        ), (), key)
    other = plan[1]
    panel_id = panel_identifier(patient_ref, effective_at, device_name, (first, second))
    return ParsedItem(index, (
        Reading(patient_ref, half.metric, first, half.unit, half.loinc, effective_at,
                device_name, received_at, panel_id),
        Reading(patient_ref, other.metric, second, other.unit, other.loinc, effective_at,
                device_name, received_at, panel_id),
    ), (), key)


def parse_batch(body: object, context: ImportContext) -> list[ParsedItem]:
    """Every item of a batch body, in order; a later item reusing a key is refused."""
    base = "/readings"
    items: Sequence[Any]
    if isinstance(body, Mapping) and isinstance(body.get("readings"), list):
        items = body["readings"]
    elif isinstance(body, list):
        items = body
        base = ""
    else:
        raise UnreadableInputError("NOT_A_BATCH", _NOT_A_BATCH)
    if len(items) > MAX_BATCH_ITEMS:
        raise UnreadableInputError(
            "TOO_MANY_ITEMS", _TOO_MANY_ITEMS, limit=str(MAX_BATCH_ITEMS), count=str(len(items))
        )
    latest = context.received_at + context.clock_skew
    parsed = [quick_item(raw, index, context, latest) for index, raw in enumerate(items)]
    declined = [index for index, item in enumerate(parsed) if item is None]
    if declined:
        validated = _validated_items([items[index] for index in declined])
        for position, index in enumerate(declined):
            item = validated.get(position)
            parsed[index] = (
                _validated_item(item, index, context, f"{base}/{index}")
                if item is not None
                else parse_batch_item(items[index], index, context, f"{base}/{index}")
            )
    return mark_duplicate_keys(
        [item for item in parsed if item is not None],
        lambda index: f"{base}/{index}/idempotency_key",
    )
