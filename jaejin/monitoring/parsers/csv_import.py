"""CSV upload of readings (format documented in docs/monitoring-import.md).

Header row required; columns in any order, names case-insensitive, unknown columns ignored:

    effective_at,metric,value,unit,device,systolic,diastolic
    2024-05-01T08:30:00+09:00,blood_pressure,,mmHg,Omron,128,82
    2024-05-01T08:35:00+09:00,glucose,5.6,mmol/L,,,

`effective_at`, `metric` and `unit` are required columns, and `value` or both `systolic` and
`diastolic`. `loinc` may replace `metric`. Problems name the file's line number (the header is
line 1). Files saved by Korean Excel in CP949 are read as well as UTF-8 (with or without BOM).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Final

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
    instant_problem,
    kind_for,
    refuse,
)

MAX_CSV_ROWS: Final = 100_000
REQUIRED_COLUMNS: Final = ("effective_at", "unit")
KNOWN_COLUMNS: Final = (
    "effective_at", "metric", "loinc", "value", "unit", "device", "systolic", "diastolic",
)
DEVICE_MAX_LENGTH: Final = 200

_NOT_TEXT = N_("The file is not a text CSV file (UTF-8 or CP949)")
_EMPTY = N_("The file is empty; the first line must name the columns")
_MISSING_COLUMNS = N_("The header is missing the column(s) {columns}")
_NO_VALUE_COLUMNS = N_("The header needs a “value” column, or “systolic” and “diastolic”")
_TOO_MANY_ROWS = N_("A file holds at most {limit} readings")
_NOT_CSV = N_("The file cannot be read as CSV: {reason}")


def decode_csv(data: bytes) -> str:
    """UTF-8 (BOM stripped), else CP949 (Korean Excel's default), else refused."""
    for encoding in ("utf-8-sig", "cp949"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UnreadableInputError("NOT_TEXT", _NOT_TEXT)


def _pointer(line: int, column: str) -> str:
    return f"line {line}, {column}"


def _number(
    row: Mapping[str, str], column: str, line: int
) -> float | ImportProblem | None:
    text = row.get(column, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return ImportProblem.of(
            ImportProblemCode.INVALID_NUMBER, _pointer(line, column), field=column,
            value=text[:60],
        )
    if value != value or value in (float("inf"), float("-inf")):
        return ImportProblem.of(
            ImportProblemCode.INVALID_NUMBER, _pointer(line, column), field=column,
            value=text[:60],
        )
    return value


def _row_item(
    index: int, line: int, row: Mapping[str, str], context: ImportContext
) -> ParsedItem:
    problems: list[ImportProblem] = []
    kind = kind_for(
        row.get("metric", "").strip() or None,
        row.get("loinc", "").strip() or None,
        _pointer(line, "metric"),
        _pointer(line, "loinc"),
    )
    if isinstance(kind, ImportProblem):
        problems.append(kind)
    effective_text = row.get("effective_at", "").strip()
    effective_at = None
    if not effective_text:
        problems.append(
            ImportProblem.of(
                ImportProblemCode.MISSING_FIELD, _pointer(line, "effective_at"),
                field="effective_at",
            )
        )
    else:
        effective_at, time_problem = instant_problem(
            effective_text, context.default_zone, _pointer(line, "effective_at")
        )
        if time_problem is not None:
            problems.append(time_problem)
    unit = row.get("unit", "").strip()
    if not unit:
        problems.append(
            ImportProblem.of(ImportProblemCode.MISSING_FIELD, _pointer(line, "unit"), field="unit")
        )
    if isinstance(kind, ImportProblem):
        return refuse(index, *problems)
    columns = ("systolic", "diastolic") if kind.is_blood_pressure else ("value",)
    values: list[float] = []
    for column in columns:
        found = _number(row, column, line)
        if found is None:
            problems.append(
                ImportProblem.of(
                    ImportProblemCode.MISSING_FIELD, _pointer(line, column), field=column
                )
            )
        elif isinstance(found, ImportProblem):
            problems.append(found)
        else:
            values.append(found)
    if problems or effective_at is None:
        return refuse(index, *problems)
    measurements = [
        Measurement(metric, value, unit, loinc, _pointer(line, column), _pointer(line, "unit"))
        for metric, loinc, value, column in zip(
            kind.metrics, kind.loincs, values, columns, strict=True
        )
    ]
    device = row.get("device", "").strip()[:DEVICE_MAX_LENGTH] or None
    pointers = ReadingPointers(
        item=f"line {line}", time=_pointer(line, "effective_at"), code=_pointer(line, "metric")
    )
    return build_item(index, measurements, effective_at, device, context, pointers)


def parse_readings_csv(data: bytes | str, context: ImportContext) -> list[ParsedItem]:
    """One item per data row (blank rows skipped); item `index` counts data rows from 0."""
    text = decode_csv(data) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            raise UnreadableInputError("EMPTY_FILE", _EMPTY)
        columns = [cell.strip().lower() for cell in header]
        missing = [
            name for name in REQUIRED_COLUMNS if name not in columns
        ] + ([] if "metric" in columns or "loinc" in columns else ["metric"])
        if missing:
            raise UnreadableInputError(
                "MISSING_COLUMNS", _MISSING_COLUMNS, columns=", ".join(missing)
            )
        if "value" not in columns and not {"systolic", "diastolic"} <= set(columns):
            raise UnreadableInputError("MISSING_COLUMNS", _NO_VALUE_COLUMNS)
        items: list[ParsedItem] = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(items) >= MAX_CSV_ROWS:
                raise UnreadableInputError("TOO_MANY_ROWS", _TOO_MANY_ROWS, limit=str(MAX_CSV_ROWS))
            row = {
                name: cell
                for name, cell in zip(columns, cells, strict=False)
                if name in KNOWN_COLUMNS
            }
            items.append(_row_item(len(items), reader.line_num, row, context))
    except csv.Error as error:
        raise UnreadableInputError("NOT_CSV", _NOT_CSV, reason=str(error)) from error
    return items
