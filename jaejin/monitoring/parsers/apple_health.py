"""Apple Health export (`export.zip` or its `apple_health_export/export.xml`), read as a stream.

An export of years of Apple Watch data is hundreds of megabytes, so the XML is never loaded whole:
`iterparse` hands over one top-level element at a time and each is cleared once read. `defusedxml`
refuses entity declarations and external references (billion-laughs and XXE attacks) while still
allowing the internal DTD Apple writes at the top of every export.

Record types read (others, such as step counts, are passed over):

* BloodPressureSystolic / BloodPressureDiastolic (mmHg): systolic and diastolic, paired as a panel;
* BloodGlucose (mg/dL or mmol<180.155…>/L): blood glucose, LOINC 2339-0;
* HeartRate (count/min); OxygenSaturation (a fraction 0-1 labelled "%": stored as a percentage);
* BodyMass (kg, lb, st); BodyTemperature (degC, degF).

Blood-pressure halves are paired by their `HKCorrelationTypeIdentifierBloodPressure` element, or
else by identical start date and source; a half left without its partner is reported as refused.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Final
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as safe_element_tree

from jaejin.core.i18n import N_
from jaejin.monitoring.parsers.items import (
    ImportContext,
    ImportProblem,
    ImportProblemCode,
    Measurement,
    ParsedItem,
    ReadingPointers,
    UnreadableInputError,
    build_item,
    refuse,
)
from jaejin.monitoring.readings import (
    LOINC_BODY_TEMPERATURE,
    LOINC_BODY_WEIGHT,
    LOINC_DIASTOLIC,
    LOINC_GLUCOSE_BLOOD_MASS,
    LOINC_HEART_RATE,
    LOINC_SPO2_PULSE_OXIMETRY,
    LOINC_SYSTOLIC,
    Metric,
)

ProgressCallback = Callable[[int, int], None]

EXPORT_XML_NAME: Final = "export.xml"
BLOOD_PRESSURE_CORRELATION: Final = "HKCorrelationTypeIdentifierBloodPressure"
SYSTOLIC_TYPE: Final = "HKQuantityTypeIdentifierBloodPressureSystolic"
DIASTOLIC_TYPE: Final = "HKQuantityTypeIdentifierBloodPressureDiastolic"
OXYGEN_SATURATION_TYPE: Final = "HKQuantityTypeIdentifierOxygenSaturation"

#: HealthKit quantity type -> (metric, LOINC).
RECORD_TYPES: Final[dict[str, tuple[Metric, str]]] = {
    SYSTOLIC_TYPE: (Metric.SYSTOLIC, LOINC_SYSTOLIC),
    DIASTOLIC_TYPE: (Metric.DIASTOLIC, LOINC_DIASTOLIC),
    "HKQuantityTypeIdentifierBloodGlucose": (Metric.GLUCOSE, LOINC_GLUCOSE_BLOOD_MASS),
    "HKQuantityTypeIdentifierHeartRate": (Metric.HEART_RATE, LOINC_HEART_RATE),
    OXYGEN_SATURATION_TYPE: (Metric.SPO2, LOINC_SPO2_PULSE_OXIMETRY),
    "HKQuantityTypeIdentifierBodyMass": (Metric.BODY_WEIGHT, LOINC_BODY_WEIGHT),
    "HKQuantityTypeIdentifierBodyTemperature": (Metric.BODY_TEMPERATURE, LOINC_BODY_TEMPERATURE),
}

#: HealthKit unit strings that are not UCUM spellings `units` already knows.
_HEALTHKIT_UNITS: Final = {"count/min": "/min", "degC": "Cel", "degF": "[degF]"}
_HEALTHKIT_MOLAR_UNIT = re.compile(r"^mmol<[0-9.]+>/L$")
_DEVICE_NAME = re.compile(r"\bname:([^,>]+)")

_CORRUPT_ZIP = N_("The file is not a readable zip archive ({reason}); export it again from Health")
_NO_EXPORT_XML = N_(
    "The zip archive has no apple_health_export/export.xml; upload the export.zip the Health "
    "app created"
)
_CORRUPT_XML = N_(
    "The Apple Health file is damaged or cut off (line {line}, column {column}); export it again"
)
_UNSAFE_XML = N_("The file declares XML entities or external references, which are refused")
_NOT_AN_EXPORT = N_("This is not an Apple Health export (its root element is <{root}>)")


class _ProgressReader:
    """A read-only stream wrapper reporting how much of the XML was consumed."""

    def __init__(self, stream: IO[bytes], total: int, on_progress: ProgressCallback | None):
        self._stream = stream
        self._total = total
        self._read = 0
        self._on_progress = on_progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._read += len(chunk)
        if self._on_progress is not None and chunk:
            self._on_progress(self._read, max(self._total, self._read))
        return chunk


@dataclass(frozen=True, slots=True)
class _Half:
    """One blood-pressure record waiting for the other half of its panel."""

    record_type: str
    start: str
    source: str
    value_text: str
    unit: str
    device: str | None


def _device_name(element: Element) -> str | None:
    device = element.get("device") or ""
    found = _DEVICE_NAME.search(device)
    if found and found.group(1).strip():
        return found.group(1).strip()[:200]
    source = (element.get("sourceName") or "").strip()
    return source[:200] or None


def _pointer(record_type: str, start: str) -> str:
    return f"Record[@type='{record_type}'][@startDate='{start}']"


def _healthkit_unit(unit: str) -> str:
    if _HEALTHKIT_MOLAR_UNIT.match(unit):
        return "mmol/L"
    return _HEALTHKIT_UNITS.get(unit, unit)


def _apple_instant(text: str) -> datetime | None:
    try:
        moment = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment


class _ExportReader:
    """Turns a stream of top-level elements into items, pairing blood-pressure halves."""

    def __init__(self, context: ImportContext) -> None:
        self._context = context
        self._count = 0
        self._pending: dict[tuple[str, str, str], _Half] = {}
        self._paired: set[_Half] = set()

    def _next_index(self) -> int:
        index = self._count
        self._count += 1
        return index

    def _measurement(
        self, record_type: str, value_text: str, unit: str, pointer: str
    ) -> Measurement | ImportProblem:
        metric, loinc = RECORD_TYPES[record_type]
        try:
            value = float(value_text)
        except ValueError:
            return ImportProblem.of(
                ImportProblemCode.INVALID_NUMBER, f"{pointer}/@value", field="value",
                value=value_text[:60],
            )
        if record_type == OXYGEN_SATURATION_TYPE and unit == "%" and value <= 1.0:
            # HealthKit stores saturation as a fraction even when it labels the unit "%".
            value *= 100.0
        return Measurement(
            metric, value, _healthkit_unit(unit), loinc, f"{pointer}/@value", f"{pointer}/@unit"
        )

    def _item(self, records: list[_Half]) -> ParsedItem:
        index = self._next_index()
        first = records[0]
        pointer = _pointer(first.record_type, first.start)
        effective_at = _apple_instant(first.start)
        if effective_at is None:
            return refuse(
                index,
                ImportProblem.of(
                    ImportProblemCode.INVALID_TIMESTAMP, f"{pointer}/@startDate",
                    value=first.start,
                ),
            )
        measurements: list[Measurement] = []
        for record in records:
            found = self._measurement(
                record.record_type, record.value_text, record.unit,
                _pointer(record.record_type, record.start),
            )
            if isinstance(found, ImportProblem):
                return refuse(index, found)
            measurements.append(found)
        pointers = ReadingPointers(item=pointer, time=f"{pointer}/@startDate", code=pointer)
        return build_item(
            index, measurements, effective_at, first.device, self._context, pointers
        )

    @staticmethod
    def _half(element: Element) -> _Half:
        return _Half(
            record_type=element.get("type", ""),
            start=element.get("startDate", ""),
            source=element.get("sourceName", ""),
            value_text=element.get("value", ""),
            unit=element.get("unit", ""),
            device=_device_name(element),
        )

    def _panel(self, systolic: _Half, diastolic: _Half) -> ParsedItem | None:
        if systolic in self._paired and diastolic in self._paired:
            return None
        self._paired.update((systolic, diastolic))
        for half in (systolic, diastolic):
            key = (half.record_type, half.start, half.source)
            if self._pending.get(key) == half:
                del self._pending[key]
        return self._item([systolic, diastolic])

    def record(self, element: Element) -> ParsedItem | None:
        record_type = element.get("type", "")
        if record_type not in RECORD_TYPES:
            return None
        half = self._half(element)
        if record_type not in (SYSTOLIC_TYPE, DIASTOLIC_TYPE):
            return self._item([half])
        if half in self._paired:
            return None
        partner_type = DIASTOLIC_TYPE if record_type == SYSTOLIC_TYPE else SYSTOLIC_TYPE
        partner = self._pending.pop((partner_type, half.start, half.source), None)
        if partner is None:
            self._pending[(record_type, half.start, half.source)] = half
            return None
        if record_type == SYSTOLIC_TYPE:
            return self._panel(half, partner)
        return self._panel(partner, half)

    def correlation(self, element: Element) -> ParsedItem | None:
        if element.get("type") != BLOOD_PRESSURE_CORRELATION:
            return None
        halves = {
            child.get("type"): self._half(child)
            for child in element.iter("Record")
            if child.get("type") in (SYSTOLIC_TYPE, DIASTOLIC_TYPE)
        }
        systolic = halves.get(SYSTOLIC_TYPE)
        diastolic = halves.get(DIASTOLIC_TYPE)
        if systolic is None or diastolic is None:
            return None
        return self._panel(systolic, diastolic)

    def leftovers(self) -> Iterator[ParsedItem]:
        """Halves that never met their partner: refused, not half-stored."""
        for half in self._pending.values():
            yield refuse(
                self._next_index(),
                ImportProblem.of(
                    ImportProblemCode.UNPAIRED_BLOOD_PRESSURE,
                    _pointer(half.record_type, half.start), RECORD_TYPES[half.record_type][0],
                ),
            )
        self._pending.clear()


def _items_from_xml(
    stream: IO[bytes], total: int, context: ImportContext, on_progress: ProgressCallback | None
) -> Iterator[ParsedItem]:
    reader = _ExportReader(context)
    depth = 0
    root: Element | None = None
    try:
        for event, element in safe_element_tree.iterparse(
            _ProgressReader(stream, total, on_progress), events=("start", "end")
        ):
            if event == "start":
                if root is None:
                    root = element
                    if element.tag != "HealthData":
                        raise UnreadableInputError(
                            "NOT_AN_EXPORT", _NOT_AN_EXPORT, root=str(element.tag)[:40]
                        )
                depth += 1
                continue
            depth -= 1
            if depth != 1:
                continue
            if element.tag == "Record":
                item = reader.record(element)
            elif element.tag == "Correlation":
                item = reader.correlation(element)
            else:
                item = None
            assert root is not None
            # Drop what was read: the root would otherwise keep every element of the file.
            root.clear()
            if item is not None:
                yield item
    except ParseError as error:
        line, column = getattr(error, "position", (0, 0))
        raise UnreadableInputError(
            "CORRUPT_XML", _CORRUPT_XML, line=str(line), column=str(column)
        ) from error
    except defusedxml.DefusedXmlException as error:
        raise UnreadableInputError("UNSAFE_XML", _UNSAFE_XML) from error
    yield from reader.leftovers()


def _export_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    candidates = [
        info
        for info in archive.infolist()
        if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == EXPORT_XML_NAME
    ]
    if not candidates:
        raise UnreadableInputError("NOT_AN_EXPORT", _NO_EXPORT_XML)
    # `apple_health_export/export.xml` is the export; shortest path wins over stray copies.
    return min(candidates, key=lambda info: (info.filename.count("/"), info.filename))


def _items_from_zip(
    stream: IO[bytes], context: ImportContext, on_progress: ProgressCallback | None
) -> Iterator[ParsedItem]:
    try:
        with zipfile.ZipFile(stream) as archive:
            member = _export_member(archive)
            with archive.open(member) as xml_stream:
                yield from _items_from_xml(xml_stream, member.file_size, context, on_progress)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise UnreadableInputError("CORRUPT_ZIP", _CORRUPT_ZIP, reason=str(error)[:120]) from error


def _stream_size(stream: IO[bytes]) -> int:
    try:
        position = stream.tell()
        size = stream.seek(0, os.SEEK_END)
        stream.seek(position)
        return size - position
    except (OSError, ValueError):
        return 0


def parse_apple_health_export(
    source: Path | IO[bytes],
    context: ImportContext,
    on_progress: ProgressCallback | None = None,
) -> Iterator[ParsedItem]:
    """Items of an Apple Health `export.zip` or `export.xml`, yielded as the file is read.

    `on_progress(bytes_read, total_bytes)` is called as the XML is consumed (for a zip, bytes of
    the uncompressed export.xml). A damaged file raises `UnreadableInputError` part-way through,
    after some items were yielded: store the items in one transaction and discard it on that
    error, so a broken upload imports nothing.
    """
    if isinstance(source, Path):
        with source.open("rb") as stream:
            yield from parse_apple_health_export(stream, context, on_progress)
        return
    head = source.read(4)
    source.seek(-len(head), os.SEEK_CUR)
    if head.startswith(b"PK"):
        yield from _items_from_zip(source, context, on_progress)
    else:
        yield from _items_from_xml(source, _stream_size(source), context, on_progress)
