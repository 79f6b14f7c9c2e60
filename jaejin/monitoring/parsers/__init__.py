"""Readings in: FHIR R4, Jaejin's JSON batch, CSV, Apple Health exports and Nightscout entries.

Every parser turns its input into `ParsedItem`s (readings for one logical item, or the problems
that refuse it) and raises `UnreadableInputError` only when the input as a whole cannot be read.
Storing, idempotency and duplicate detection against stored readings belong to the store, which
uses `reading_fingerprint` for exact duplicates.
"""

from jaejin.monitoring.parsers.apple_health import parse_apple_health_export
from jaejin.monitoring.parsers.csv_import import parse_readings_csv
from jaejin.monitoring.parsers.fhir import (
    BundleEntryRequest,
    OutcomeIssue,
    ParsedBundle,
    ParsedBundleEntry,
    issues_from_problems,
    operation_outcome,
    panel_to_observation,
    parse_bundle,
    parse_observation,
    parse_observation_request,
    reading_to_observation,
)
from jaejin.monitoring.parsers.items import (
    MEASUREMENT_KINDS,
    ImportContext,
    ImportProblem,
    ImportProblemCode,
    ParsedItem,
    UnreadableInputError,
    reading_digest,
    reading_fingerprint,
)
from jaejin.monitoring.parsers.json_batch import ReadingBatchIn, ReadingItemIn, parse_batch
from jaejin.monitoring.parsers.nightscout import (
    generate_api_secret,
    parse_entries,
    verify_api_secret,
)

__all__ = [
    "MEASUREMENT_KINDS",
    "BundleEntryRequest",
    "ImportContext",
    "ImportProblem",
    "ImportProblemCode",
    "OutcomeIssue",
    "ParsedBundle",
    "ParsedBundleEntry",
    "ParsedItem",
    "ReadingBatchIn",
    "ReadingItemIn",
    "UnreadableInputError",
    "generate_api_secret",
    "issues_from_problems",
    "operation_outcome",
    "panel_to_observation",
    "parse_apple_health_export",
    "parse_batch",
    "parse_bundle",
    "parse_entries",
    "parse_observation",
    "parse_observation_request",
    "parse_readings_csv",
    "reading_digest",
    "reading_fingerprint",
    "reading_to_observation",
    "verify_api_secret",
]
