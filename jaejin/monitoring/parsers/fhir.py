"""FHIR R4 Observations (vital-signs profile) in and out, Bundles, and OperationOutcome.

Validation is written by hand rather than with `fhir.resources`: that package models R4B/R5
rather than R4, checks the base structure but not the vital-signs profile, and reports errors in
English text without stable codes or element paths we could translate. What matters for a
reading is checked here, each failure with a FHIRPath `expression` and a stable code:

* `resourceType` is Observation, `status` is final/amended/corrected/preliminary;
* `code.coding` has a LOINC code monitoring records (or the blood-pressure panel 85354-9 with
  components 8480-6 and 8462-4);
* `valueQuantity` has a numeric `value` and a UCUM unit (`code`, else `unit`), and `system`, when
  present, is UCUM;
* `effectiveDateTime`, `effectiveInstant` or `effectivePeriod.start` is a date-time with offset;
* `subject.reference` is `Patient/<id>` of the patient the upload belongs to.

`category` is not required: many devices omit it and glucose is `laboratory`, not `vital-signs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl

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
    metric_of_loinc,
    refuse,
)
from jaejin.monitoring.readings import (
    BLOOD_PRESSURE_PANEL_LOINC,
    LOINC_DIASTOLIC,
    LOINC_SYSTOLIC,
    METRIC_SPECS,
    Metric,
    ProblemCode,
    Reading,
)

LOINC_SYSTEM: Final = "http://loinc.org"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
VITAL_SIGNS_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
BLOOD_PRESSURE_PANEL_DISPLAY: Final = "Blood pressure panel with all children optional"
ACCEPTED_STATUSES: Final = frozenset({"final", "amended", "corrected", "preliminary"})

#: FHIR `IssueType` for each problem code (http://hl7.org/fhir/R4/valueset-issue-type.html).
ISSUE_TYPE_BY_CODE: Mapping[str, str] = MappingProxyType(
    {
        ImportProblemCode.MALFORMED_ITEM: "structure",
        ImportProblemCode.MISSING_FIELD: "required",
        ImportProblemCode.UNKNOWN_FIELD: "structure",
        ImportProblemCode.INVALID_NUMBER: "value",
        ImportProblemCode.INVALID_TEXT: "value",
        ImportProblemCode.UNKNOWN_CODE: "code-invalid",
        ImportProblemCode.UNKNOWN_METRIC: "code-invalid",
        ImportProblemCode.CONFLICTING_CODE: "code-invalid",
        ImportProblemCode.INVALID_VALUE: "value",
        ImportProblemCode.UNSUPPORTED_METRIC: "not-supported",
        ImportProblemCode.UNKNOWN_UNIT: "code-invalid",
        ImportProblemCode.UNIT_MISMATCH: "code-invalid",
        ImportProblemCode.NAIVE_TIMESTAMP: "value",
        ImportProblemCode.INVALID_TIMESTAMP: "value",
        ImportProblemCode.UNSUPPORTED_RESOURCE: "not-supported",
        ImportProblemCode.UNSUPPORTED_STATUS: "value",
        ImportProblemCode.WRONG_PATIENT: "forbidden",
        ImportProblemCode.UNSUPPORTED_REQUEST: "not-supported",
        ImportProblemCode.DUPLICATE_KEY: "duplicate",
        ImportProblemCode.UNPAIRED_BLOOD_PRESSURE: "incomplete",
        ProblemCode.IMPOSSIBLE_VALUE: "value",
        ProblemCode.FUTURE_TIMESTAMP: "value",
        ProblemCode.UNKNOWN_CODE: "code-invalid",
        ProblemCode.UNIT_MISMATCH: "code-invalid",
        ProblemCode.DIASTOLIC_ABOVE_SYSTOLIC: "business-rule",
    }
)

_NOT_JSON_OBJECT = N_("The request body is not a FHIR resource (a JSON object)")
_NOT_A_BUNDLE = N_("Expected a Bundle of type transaction or batch, got {found}")

_CATEGORY_BY_METRIC: Mapping[Metric, str] = MappingProxyType(
    {Metric.GLUCOSE: "laboratory", Metric.WOUND_PHOTO: "imaging"}
)


# --------------------------------------------------------------------------------------------
# OperationOutcome


@dataclass(frozen=True, slots=True)
class OutcomeIssue:
    """One `OperationOutcome.issue`: `code` is a FHIR IssueType (`invalid`, `value`, ...)."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()


def issues_from_problems(problems: Sequence[ImportProblem], language: str) -> list[OutcomeIssue]:
    """OperationOutcome issues for refused items, explained in `language`."""
    return [
        OutcomeIssue(
            severity="error",
            code=ISSUE_TYPE_BY_CODE.get(problem.code, "invalid"),
            diagnostics=problem.message(language),
            expression=(problem.pointer,) if problem.pointer else (),
        )
        for problem in problems
    ]


def operation_outcome(issues: Sequence[OutcomeIssue]) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome resource for `issues` (at least one issue is required)."""
    if not issues:
        issues = [OutcomeIssue("information", "informational", "All OK")]
    rendered: list[dict[str, Any]] = []
    for issue in issues:
        entry: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            entry["expression"] = list(issue.expression)
        rendered.append(entry)
    return {"resourceType": "OperationOutcome", "issue": rendered}


# --------------------------------------------------------------------------------------------
# Observation in


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _loinc_codes(codeable: object) -> list[str]:
    if not isinstance(codeable, Mapping):
        return []
    codings = codeable.get("coding")
    if not isinstance(codings, list):
        return []
    return [
        coding["code"].strip()
        for coding in codings
        if isinstance(coding, Mapping)
        and coding.get("system") == LOINC_SYSTEM
        and isinstance(coding.get("code"), str)
    ]


def _quantity(
    holder: Mapping[str, Any], path: str, metric: Metric, loinc: str
) -> Measurement | ImportProblem:
    quantity = holder.get("valueQuantity")
    if quantity is None:
        if any(key.startswith("value") for key in holder):
            return ImportProblem.of(
                ImportProblemCode.MALFORMED_ITEM, f"{path}.value", expected="valueQuantity"
            )
        return ImportProblem.of(
            ImportProblemCode.MISSING_FIELD, f"{path}.valueQuantity", field="valueQuantity"
        )
    if not isinstance(quantity, Mapping):
        return ImportProblem.of(
            ImportProblemCode.MALFORMED_ITEM, f"{path}.valueQuantity", expected="Quantity"
        )
    value = quantity.get("value")
    if value is None:
        return ImportProblem.of(
            ImportProblemCode.MISSING_FIELD, f"{path}.valueQuantity.value",
            field="valueQuantity.value",
        )
    if not _is_number(value):
        return ImportProblem.of(
            ImportProblemCode.INVALID_NUMBER, f"{path}.valueQuantity.value",
            field="valueQuantity.value", value=str(value),
        )
    if quantity.get("comparator") is not None:
        # "<40" from a meter showing LO is not a value to chart or alert on.
        return ImportProblem.of(
            ImportProblemCode.INVALID_VALUE, f"{path}.valueQuantity.comparator",
            field="valueQuantity.comparator",
        )
    system = quantity.get("system")
    unit = quantity.get("code") if system is not None else None
    unit_pointer = f"{path}.valueQuantity.code"
    if system is not None and system != UCUM_SYSTEM:
        return ImportProblem.of(
            ImportProblemCode.UNKNOWN_UNIT, f"{path}.valueQuantity.system", metric,
            unit=str(quantity.get("code") or system), accepted=METRIC_SPECS[metric].unit,
        )
    if not isinstance(unit, str):
        unit = quantity.get("unit")
        unit_pointer = f"{path}.valueQuantity.unit"
    if not isinstance(unit, str) or not unit.strip():
        return ImportProblem.of(
            ImportProblemCode.MISSING_FIELD, f"{path}.valueQuantity.code",
            field="valueQuantity.code",
        )
    return Measurement(
        metric, float(value), unit, loinc, f"{path}.valueQuantity.value", unit_pointer
    )


def _device(resource: Mapping[str, Any]) -> str | None:
    device = resource.get("device")
    if not isinstance(device, Mapping):
        return None
    for key in ("display", "reference"):
        text = device.get(key)
        if isinstance(text, str) and text.strip():
            return text.strip()[:200]
    identifier = device.get("identifier")
    if isinstance(identifier, Mapping) and isinstance(identifier.get("value"), str):
        return str(identifier["value"]).strip()[:200] or None
    return None


def _effective(
    resource: Mapping[str, Any], context: ImportContext
) -> tuple[Any, ImportProblem | None]:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            text = resource[key]
            if not isinstance(text, str):
                return None, ImportProblem.of(
                    ImportProblemCode.INVALID_TIMESTAMP, f"Observation.{key}", value=str(text)
                )
            return instant_problem(text, None, f"Observation.{key}")
    period = resource.get("effectivePeriod")
    if isinstance(period, Mapping) and isinstance(period.get("start"), str):
        return instant_problem(period["start"], None, "Observation.effectivePeriod.start")
    return None, ImportProblem.of(
        ImportProblemCode.MISSING_FIELD, "Observation.effective[x]", field="effectiveDateTime"
    )


def subject_patient_id(resource: Mapping[str, Any]) -> str | None:
    """The `<id>` of `subject.reference = "Patient/<id>"` (absolute URLs too), else None."""
    subject = resource.get("subject")
    if not isinstance(subject, Mapping):
        return None
    reference = subject.get("reference")
    if not isinstance(reference, str):
        return None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return None


def _measurements(
    resource: Mapping[str, Any],
) -> list[Measurement] | ImportProblem:
    codes = _loinc_codes(resource.get("code"))
    if not codes:
        return ImportProblem.of(
            ImportProblemCode.UNKNOWN_CODE, "Observation.code", code=_any_code(resource)
        )
    if BLOOD_PRESSURE_PANEL_LOINC in codes:
        return _panel_measurements(resource)
    for code in codes:
        metric = metric_of_loinc(code)
        if metric is Metric.WOUND_PHOTO:
            return ImportProblem.of(
                ImportProblemCode.UNSUPPORTED_METRIC, "Observation.code", metric
            )
        if metric is not None:
            found = _quantity(resource, "Observation", metric, code)
            return found if isinstance(found, ImportProblem) else [found]
    return ImportProblem.of(
        ImportProblemCode.UNKNOWN_CODE, "Observation.code.coding", code=", ".join(codes)
    )


def _any_code(resource: Mapping[str, Any]) -> str:
    code = resource.get("code")
    if isinstance(code, Mapping) and isinstance(code.get("coding"), list):
        for coding in code["coding"]:
            if isinstance(coding, Mapping) and coding.get("code"):
                return f"{coding.get('system', '')}|{coding['code']}"
    return "-"


def _panel_measurements(resource: Mapping[str, Any]) -> list[Measurement] | ImportProblem:
    components = resource.get("component")
    if not isinstance(components, list):
        return ImportProblem.of(
            ImportProblemCode.MISSING_FIELD, "Observation.component", field="component"
        )
    found: dict[str, Measurement] = {}
    for position, component in enumerate(components):
        if not isinstance(component, Mapping):
            continue
        for code in _loinc_codes(component.get("code")):
            if code in (LOINC_SYSTOLIC, LOINC_DIASTOLIC) and code not in found:
                metric = Metric.SYSTOLIC if code == LOINC_SYSTOLIC else Metric.DIASTOLIC
                measured = _quantity(
                    component, f"Observation.component[{position}]", metric, code
                )
                if isinstance(measured, ImportProblem):
                    return measured
                found[code] = measured
    for code, field_name in ((LOINC_SYSTOLIC, "systolic"), (LOINC_DIASTOLIC, "diastolic")):
        if code not in found:
            return ImportProblem.of(
                ImportProblemCode.MISSING_FIELD,
                f"Observation.component.where(code.coding.code='{code}')",
                field=f"component ({field_name}, {code})",
            )
    return [found[LOINC_SYSTOLIC], found[LOINC_DIASTOLIC]]


def parse_observation(
    resource: object, context: ImportContext, index: int = 0, key: str | None = None
) -> ParsedItem:
    """One Observation as an item: its readings (two for a BP panel) or why it is refused."""
    if not isinstance(resource, Mapping):
        return refuse(
            index,
            ImportProblem.of(
                ImportProblemCode.MALFORMED_ITEM, "Observation", expected="JSON object"
            ),
            key=key,
        )
    resource_type = resource.get("resourceType")
    if resource_type != "Observation":
        return refuse(
            index,
            ImportProblem.of(
                ImportProblemCode.UNSUPPORTED_RESOURCE, "resourceType",
                resource_type=str(resource_type),
            ),
            key=key,
        )
    problems: list[ImportProblem] = []
    status = resource.get("status")
    if status is None:
        problems.append(
            ImportProblem.of(ImportProblemCode.MISSING_FIELD, "Observation.status", field="status")
        )
    elif status not in ACCEPTED_STATUSES:
        problems.append(
            ImportProblem.of(
                ImportProblemCode.UNSUPPORTED_STATUS, "Observation.status", status=str(status)
            )
        )
    patient_id = subject_patient_id(resource)
    if patient_id is None:
        problems.append(
            ImportProblem.of(
                ImportProblemCode.MISSING_FIELD, "Observation.subject", field="subject"
            )
        )
    elif patient_id != context.patient_ref:
        problems.append(
            ImportProblem.of(
                ImportProblemCode.WRONG_PATIENT, "Observation.subject",
                reference=f"Patient/{patient_id}",
            )
        )
    effective_at, time_problem = _effective(resource, context)
    if time_problem is not None:
        problems.append(time_problem)
    measurements = _measurements(resource)
    if isinstance(measurements, ImportProblem):
        problems.append(measurements)
    if problems or isinstance(measurements, ImportProblem):
        return refuse(index, *problems, key=key)
    pointers = ReadingPointers(
        item="Observation", time=time_pointer(resource), code="Observation.code"
    )
    return build_item(
        index, measurements, effective_at, _device(resource), context, pointers, key=key
    )


def time_pointer(resource: Mapping[str, Any]) -> str:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return f"Observation.{key}"
    return "Observation.effectivePeriod.start"


def parse_observation_request(body: object, context: ImportContext) -> ParsedItem:
    """`POST /fhir/R4/Observation`: the body must be a JSON object, else the request is refused."""
    if not isinstance(body, Mapping):
        raise UnreadableInputError("NOT_A_RESOURCE", _NOT_JSON_OBJECT)
    return parse_observation(body, context)


# --------------------------------------------------------------------------------------------
# Bundle


@dataclass(frozen=True, slots=True)
class BundleEntryRequest:
    """What an entry asks the server to do; the HTTP layer acts on it."""

    method: str
    url: str
    if_none_exist: str | None
    full_url: str | None

    @property
    def if_none_exist_params(self) -> list[tuple[str, str]]:
        """`If-None-Exist` as search parameters (`identifier=sys|123` -> [("identifier", ...)])."""
        if not self.if_none_exist:
            return []
        return parse_qsl(self.if_none_exist.lstrip("?"), keep_blank_values=True)


@dataclass(frozen=True, slots=True)
class ParsedBundleEntry:
    request: BundleEntryRequest
    item: ParsedItem


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    """A transaction is all-or-nothing (the HTTP layer stores none if any entry is refused);
    a batch stores each accepted entry and reports each refused one."""

    bundle_type: str
    entries: tuple[ParsedBundleEntry, ...]

    @property
    def is_transaction(self) -> bool:
        return self.bundle_type == "transaction"


def _entry_request(entry: Mapping[str, Any]) -> BundleEntryRequest:
    request = entry.get("request")
    request = request if isinstance(request, Mapping) else {}
    method = request.get("method")
    url = request.get("url")
    if_none_exist = request.get("ifNoneExist")
    full_url = entry.get("fullUrl")
    return BundleEntryRequest(
        method=method.upper() if isinstance(method, str) else "",
        url=url if isinstance(url, str) else "",
        if_none_exist=if_none_exist if isinstance(if_none_exist, str) else None,
        full_url=full_url if isinstance(full_url, str) else None,
    )


def _is_observation_create(request: BundleEntryRequest) -> bool:
    path = request.url.split("?", 1)[0].strip("/")
    return request.method == "POST" and path.rsplit("/", 1)[-1] == "Observation"


def parse_bundle(bundle: object, context: ImportContext) -> ParsedBundle:
    """Entries of a transaction or batch Bundle, each parsed as an Observation create.

    Only `POST Observation` entries are supported; others are refused as `not-supported` so the
    response can still say what happened to every entry. An entry's `key` is its `ifNoneExist`.
    """
    if not isinstance(bundle, Mapping):
        raise UnreadableInputError("NOT_A_RESOURCE", _NOT_JSON_OBJECT)
    bundle_type = bundle.get("type")
    if bundle.get("resourceType") != "Bundle" or bundle_type not in ("transaction", "batch"):
        found = f"{bundle.get('resourceType')} ({bundle_type})"
        raise UnreadableInputError("NOT_A_BUNDLE", _NOT_A_BUNDLE, found=found)
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise UnreadableInputError("NOT_A_BUNDLE", _NOT_A_BUNDLE, found="Bundle.entry")
    entries: list[ParsedBundleEntry] = []
    for index, entry in enumerate(raw_entries):
        if not isinstance(entry, Mapping):
            request = BundleEntryRequest("", "", None, None)
            item = refuse(
                index,
                ImportProblem.of(
                    ImportProblemCode.MALFORMED_ITEM, f"Bundle.entry[{index}]",
                    expected="Bundle entry",
                ),
            )
            entries.append(ParsedBundleEntry(request, item))
            continue
        request = _entry_request(entry)
        if not _is_observation_create(request):
            item = refuse(
                index,
                ImportProblem.of(
                    ImportProblemCode.UNSUPPORTED_REQUEST, f"Bundle.entry[{index}].request",
                    method=request.method or "-", url=request.url or "-",
                ),
                key=request.if_none_exist,
            )
        else:
            item = _prefix_pointers(
                parse_observation(
                    entry.get("resource"), context, index, key=request.if_none_exist
                ),
                f"Bundle.entry[{index}].resource.",
            )
        entries.append(ParsedBundleEntry(request, item))
    return ParsedBundle(str(bundle_type), tuple(entries))


def _prefix_pointers(item: ParsedItem, prefix: str) -> ParsedItem:
    if not item.problems:
        return item
    problems = tuple(
        ImportProblem(
            problem.code,
            prefix + problem.pointer.removeprefix("Observation.").removeprefix("Observation"),
            problem.template,
            problem.params,
            problem.metric,
            problem.reading_problem,
        )
        for problem in item.problems
    )
    return ParsedItem(item.index, problems=problems, key=item.key)


# --------------------------------------------------------------------------------------------
# Observation out


def _coding(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC_SYSTEM, "code": code, "display": display}], "text": display}


def _value_quantity(reading: Reading) -> dict[str, Any]:
    return {
        "value": reading.value,
        "unit": reading.unit,
        "system": UCUM_SYSTEM,
        "code": reading.unit,
    }


def _category(metric: Metric) -> list[dict[str, Any]]:
    code = _CATEGORY_BY_METRIC.get(metric, "vital-signs")
    return [{"coding": [{"system": OBSERVATION_CATEGORY_SYSTEM, "code": code}]}]


def reading_to_observation(
    reading: Reading, patient_id: str, observation_id: str
) -> dict[str, Any]:
    """One reading as an R4 Observation (for the search API); `parse_observation` reads it back."""
    spec = METRIC_SPECS[reading.metric]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id,
        "status": "final",
        "category": _category(reading.metric),
        "code": _coding(reading.loinc, spec.label),
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": reading.effective_at.isoformat(),
        "issued": reading.received_at.isoformat(),
        "valueQuantity": _value_quantity(reading),
    }
    if reading.metric is not Metric.GLUCOSE:
        resource["meta"] = {"profile": [VITAL_SIGNS_PROFILE]}
    if reading.source_device:
        resource["device"] = {"display": reading.source_device}
    return resource


def panel_to_observation(
    systolic: Reading, diastolic: Reading, patient_id: str, observation_id: str
) -> dict[str, Any]:
    """A blood-pressure pair as one 85354-9 panel Observation with two components."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id,
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/bp"]},
        "status": "final",
        "category": _category(Metric.SYSTOLIC),
        "code": _coding(BLOOD_PRESSURE_PANEL_LOINC, BLOOD_PRESSURE_PANEL_DISPLAY),
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": systolic.effective_at.isoformat(),
        "issued": systolic.received_at.isoformat(),
        "component": [
            {
                "code": _coding(reading.loinc, METRIC_SPECS[reading.metric].label),
                "valueQuantity": _value_quantity(reading),
            }
            for reading in (systolic, diastolic)
        ],
    }
    if systolic.source_device:
        resource["device"] = {"display": systolic.source_device}
    return resource
