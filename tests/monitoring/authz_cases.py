"""Authorisation cases of remote monitoring: readings in and out (JSON, uploads, Nightscout,
FHIR R4). Format: tests/authz.py and tests/test_authorization_matrix.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.directory.store import Patient
from jaejin.monitoring.ingest import IngestPatient, ingest_items, issue_nightscout_secret
from jaejin.monitoring.parsers import parse_batch
from jaejin.monitoring.store import NightscoutSecretRow, UploadRow
from tests.authz import EVERYONE, Caller, Case, RouteCase, World

#: May send readings: the patient themself, clinicians and coordinators, gateways.
WRITERS = frozenset({Role.PATIENT, Role.CLINICIAN, Role.COORDINATOR, Role.SYSTEM_CLIENT})
#: May read them: the patient, the care team (admins included), clients with monitoring.read.
READERS = frozenset({Role.PATIENT, Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN,
                     Role.SYSTEM_CLIENT})
DEVICE_MARKER = "MATRIX-DEVICE-OF-A"
UPLOAD_MARKER = "matrix-upload-of-a.csv"
_serial = count(1)


def setup(world: World) -> None:
    """A reading, an upload and a Nightscout secret of institution A's patient."""
    patient_id = world.actors.patients["a"].id
    with world.session() as db:
        patient_row = db.get(Patient, patient_id)
        assert patient_row is not None
        patient = IngestPatient.of(patient_row)
        now = datetime.now(UTC)
        items = parse_batch(
            {"readings": [{"idempotency_key": "matrix-seed", "metric": "blood_pressure",
                           "systolic": 128, "diastolic": 82, "unit": "mmHg",
                           "effective_at": (now - timedelta(hours=1)).isoformat(),
                           "device": DEVICE_MARKER}]},
            patient.context(now),
        )
        result = ingest_items(db, patient, items, "json", received_at=now)
        upload = UploadRow(patient_id=patient_id, institution_id=patient.institution_id,
                           kind="csv", filename=UPLOAD_MARKER, status="done", bytes_total=10,
                           bytes_read=10, problems=[], error_params={}, language="en",
                           created_by="user:0")
        db.add(upload)
        issue_nightscout_secret(db, patient_row, "user:0")
        db.flush()
        world.extra["monitoring"] = {"observation": min(result.items[0].reading_ids),
                                     "upload": upload.id}


def patient_a(world: World) -> dict[str, Any]:
    return {"patient_id": world.actors.patients["a"].id}


def markers(world: World) -> list[str]:
    return [DEVICE_MARKER, UPLOAD_MARKER]


def _recent(minutes: int = 0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=30 + minutes)).isoformat()


def batch(world: World, caller: Caller) -> dict[str, Any]:
    return {"readings": [{"idempotency_key": world.unique("matrix-key"), "metric": "heart_rate",
                          "value": 60 + next(_serial) % 40, "unit": "bpm",
                          "effective_at": _recent(next(_serial))}]}


def observation(world: World, caller: Caller) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{world.actors.patients['a'].id}"},
        "effectiveDateTime": _recent(next(_serial)),
        "valueQuantity": {"value": 60 + next(_serial) % 40, "unit": "/min",
                          "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def transaction(world: World, caller: Caller) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"resource": observation(world, caller),
                       "request": {"method": "POST", "url": "Observation"}}]}


def _secret(world: World) -> NightscoutSecretRow:
    """A's patient's current secret (other cases replace or revoke it: made anew if gone)."""
    patient_id = world.actors.patients["a"].id
    with world.session() as db:
        row = db.execute(select(NightscoutSecretRow)
                         .where(NightscoutSecretRow.patient_id == patient_id)).scalar_one_or_none()
        if row is None:
            patient_row = db.get(Patient, patient_id)
            assert patient_row is not None
            row = issue_nightscout_secret(db, patient_row, "user:0")
        db.expunge(row)
        return row


def upload_csv(world: World, caller: Caller, case: RouteCase) -> Any:
    url = case.path.format(**patient_a(world))
    data = f"effective_at,metric,value,unit\n{_recent(next(_serial))},heart_rate,61,bpm\n"
    return caller.client.post(url, files={"file": ("readings.csv", data.encode(), "text/csv")},
                              headers=caller.auth_headers(), follow_redirects=False)


def with_secret(world: World, caller: Caller, case: RouteCase) -> Any:
    """Whoever else is signed in, the uploader proves itself by the patient's API secret."""
    secret = _secret(world)
    url = case.path.format(url_token=secret.url_token)
    entry = {"type": "sgv", "sgv": 100 + next(_serial) % 50,
             "date": int((datetime.now(UTC) - timedelta(minutes=next(_serial))).timestamp()
                         * 1000)}
    return caller.client.post(url, json=[entry],
                              headers={**caller.auth_headers(),
                                       "api-secret": secret.secret_sha1},
                              follow_redirects=False)


def existing_secret(world: World, caller: Caller, case: RouteCase) -> Any:
    _secret(world)
    return caller.client.request(case.method, case.path.format(**patient_a(world)),
                                 headers=caller.auth_headers(), follow_redirects=False)


READINGS = "/api/v1/monitoring/patients/{patient_id}/readings"
UPLOADS = "/api/v1/monitoring/patients/{patient_id}/uploads"
NIGHTSCOUT = "/api/v1/monitoring/patients/{patient_id}/nightscout"

CASES: list[Case] = [
    RouteCase("POST", READINGS, WRITERS, path_params=patient_a, json=batch,
              own_institution_check=True, markers=markers),
    RouteCase("GET", READINGS, READERS, path_params=patient_a, own_institution_check=True,
              markers=markers),
    RouteCase("POST", UPLOADS, WRITERS, call=upload_csv, path_params=patient_a,
              own_institution_check=True, markers=markers),
    RouteCase("GET", UPLOADS, READERS, path_params=patient_a, own_institution_check=True,
              markers=markers),
    RouteCase("GET", "/api/v1/monitoring/uploads/{upload_id}", READERS,
              path_params=lambda world: {"upload_id": world.extra["monitoring"]["upload"]},
              own_institution_check=True, markers=markers),
    RouteCase("POST", NIGHTSCOUT, WRITERS, path_params=patient_a, own_institution_check=True),
    RouteCase("GET", NIGHTSCOUT, WRITERS, call=existing_secret, path_params=patient_a,
              own_institution_check=True),
    RouteCase("DELETE", NIGHTSCOUT, WRITERS, call=existing_secret, path_params=patient_a,
              own_institution_check=True),
    # Nightscout uploaders sign nothing in: the patient's API secret is the credential, so
    # every caller holding it is served (a wrong or missing secret: tests/monitoring).
    RouteCase("POST", "/api/v1/entries", EVERYONE, call=with_secret),
    RouteCase("POST", "/api/v1/entries.json", EVERYONE, call=with_secret),
    RouteCase("POST", "/nightscout/{url_token}/api/v1/entries", EVERYONE, call=with_secret),
    RouteCase("POST", "/nightscout/{url_token}/api/v1/entries.json", EVERYONE,
              call=with_secret),
    RouteCase("GET", "/api/v1/status.json", EVERYONE, public=True, markers=markers),
    RouteCase("GET", "/nightscout/{url_token}/api/v1/status.json", EVERYONE, public=True,
              path_params=lambda world: {"url_token": "any-token"}, markers=markers),
    RouteCase("POST", "/fhir/R4/Observation", WRITERS, json=observation,
              own_institution_check=True),
    RouteCase("POST", "/fhir/R4", WRITERS, json=transaction, own_institution_check=True),
    RouteCase("GET", "/fhir/R4/Observation", READERS,
              query=lambda world: {"subject": f"Patient/{world.actors.patients['a'].id}"},
              own_institution_check=True, markers=markers),
    RouteCase("GET", "/fhir/R4/Observation/{observation_id}", READERS,
              path_params=lambda world: {
                  "observation_id": world.extra["monitoring"]["observation"]},
              own_institution_check=True, markers=markers),
    RouteCase("GET", "/fhir/R4/metadata", EVERYONE, public=True, markers=markers),
]


# ------------------------------------------------------------------------ care-team workflow
# Care plans, alerts and their steps, escalation policy, the triage list (JSON and pages), and
# the patient's own monitoring page (jaejin.monitoring.workflow_api and jaejin.monitoring.pages).

#: May read monitoring workflow data of their institution's patients.
WORKFLOW_READERS = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN,
                              Role.SYSTEM_CLIENT})
#: May take alert steps (the pages: people only).
RESPONDERS = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.SYSTEM_CLIENT})
PAGE_RESPONDERS = frozenset({Role.CLINICIAN, Role.COORDINATOR})
STAFF_PAGES = frozenset({Role.CLINICIAN, Role.COORDINATOR, Role.INSTITUTION_ADMIN})
#: The explanation of institution A's alert and the MRN of its monitored patient.
ALERT_MARKER = "Oxygen saturation 81"
MRN_MARKER = "MRN-A-1"


def _signal_alert(world: World, patient_row: Patient, metric_item: dict[str, Any]) -> int:
    """An alert raised the way ingest raises it, from one reading stored for the patient."""
    with world.session() as db:
        patient = IngestPatient.of(patient_row)
        now = datetime.now(UTC)
        items = parse_batch({"readings": [metric_item]}, patient.context(now))
        result = ingest_items(db, patient, items, "json", received_at=now)
        assert result.alerts, result
        return result.alerts[0].alert_id


def _workflow(world: World) -> dict[str, int]:
    """A's patient on a care plan with one alert (made once, on first use)."""
    found: dict[str, int] | None = world.extra.get("monitoring_workflow")
    if found is not None:
        return found
    from jaejin.monitoring.store import CarePlanRow

    patient_id = world.actors.patients["a"].id
    with world.session() as db:
        patient_row = db.get(Patient, patient_id)
        assert patient_row is not None
        db.add(CarePlanRow(patient_id=patient_id, institution_id=patient_row.institution_id,
                           template="hypertension", overrides={}, created_by="user:0",
                           active=True))
        db.expunge(patient_row)
    alert_id = _signal_alert(world, patient_row, {
        "idempotency_key": "matrix-spo2", "metric": "spo2", "value": 81, "unit": "%",
        "effective_at": _recent(1)})
    found = {"patient": patient_id, "alert": alert_id}
    world.extra["monitoring_workflow"] = found
    return found


def workflow_markers(world: World) -> list[str]:
    _workflow(world)
    return [ALERT_MARKER, MRN_MARKER]


def fresh_alert(world: World) -> int:
    """A new open alert of A (a new patient each time: every step starts from `open`)."""
    from tests.support import make_patient

    with world.session() as db:
        patient_row = make_patient(db, world.actors.a, world.unique("MRN-STEP"))
        db.expunge(patient_row)
    return _signal_alert(world, patient_row, {
        "idempotency_key": "matrix-step", "metric": "heart_rate", "value": 150, "unit": "bpm",
        "effective_at": _recent(1)})


def alert_step(world: World, caller: Caller, case: RouteCase) -> Any:
    url = case.path.format(alert_id=fresh_alert(world), action="snooze")
    if case.path.endswith("/snooze"):
        return caller.client.post(url, json={"minutes": 60}, headers=caller.auth_headers(),
                                  follow_redirects=False)
    return caller.client.post(url, headers=caller.auth_headers(), follow_redirects=False)


def page_alert_step(world: World, caller: Caller, case: RouteCase) -> Any:
    url = case.path.format(alert_id=fresh_alert(world), action="acknowledge")
    data = {"csrf_token": caller.session_csrf or "", "next": "/monitoring/triage"}
    return caller.client.post(url, data=data, headers=caller.auth_headers(),
                              follow_redirects=False)


class _StreamStart:
    """The status, headers and first chunk of an event stream (it never ends by itself)."""

    def __init__(self, status_code: int, headers: Any, text: str) -> None:
        self.status_code, self.headers, self.text = status_code, headers, text


def event_stream(world: World, caller: Caller, case: RouteCase) -> Any:
    workflow_markers(world)
    with caller.client.stream("GET", case.path, headers=caller.auth_headers(),
                              follow_redirects=False) as response:
        text = next(response.iter_text(), "") if response.status_code == 200 else (
            response.read().decode())
        return _StreamStart(response.status_code, response.headers, text)


def institution_a(world: World) -> dict[str, Any]:
    return {"institution_id": world.actors.a.id}


def patient_of_workflow(world: World) -> dict[str, Any]:
    return {"patient_id": _workflow(world)["patient"]}


def manual_reading(world: World, caller: Caller) -> dict[str, Any]:
    return {"metric": "heart_rate", "value": str(60 + next(_serial) % 30),
            "measured_at": (datetime.now(UTC) - timedelta(minutes=next(_serial))).strftime(
                "%Y-%m-%dT%H:%M"), "entry_key": world.unique("matrix-manual")}


CARE_PLAN = "/api/v1/monitoring/patients/{patient_id}/care-plan"
ALERT = "/api/v1/monitoring/alerts/{alert_id}"
ESCALATION = "/api/v1/monitoring/institutions/{institution_id}/escalation"

CASES += [
    RouteCase("GET", CARE_PLAN, WORKFLOW_READERS, path_params=patient_of_workflow,
              own_institution_check=True),
    RouteCase("PUT", CARE_PLAN, frozenset({Role.CLINICIAN, Role.SYSTEM_CLIENT}),
              path_params=patient_of_workflow,
              json=lambda world, caller: {"template": "hypertension"},
              own_institution_check=True),
    RouteCase("GET", "/api/v1/monitoring/alerts", WORKFLOW_READERS, markers=workflow_markers),
    RouteCase("GET", ALERT, WORKFLOW_READERS,
              path_params=lambda world: {"alert_id": _workflow(world)["alert"]},
              own_institution_check=True, markers=workflow_markers),
    RouteCase("POST", ALERT + "/acknowledge", RESPONDERS, call=alert_step,
              own_institution_check=True),
    RouteCase("POST", ALERT + "/snooze", RESPONDERS, call=alert_step,
              own_institution_check=True),
    RouteCase("POST", ALERT + "/resolve", RESPONDERS, call=alert_step,
              own_institution_check=True),
    RouteCase("GET", "/api/v1/monitoring/triage", WORKFLOW_READERS, markers=workflow_markers),
    RouteCase("GET", ESCALATION, WORKFLOW_READERS, path_params=institution_a,
              own_institution_check=True),
    RouteCase("PUT", ESCALATION, frozenset({Role.CLINICIAN, Role.INSTITUTION_ADMIN}),
              path_params=institution_a,
              json=lambda world, caller: {"escalate_after_minutes": 15},
              own_institution_check=True),
    RouteCase("GET", "/monitoring/triage", STAFF_PAGES, markers=workflow_markers),
    RouteCase("GET", "/monitoring/triage/list", STAFF_PAGES, markers=workflow_markers),
    RouteCase("GET", "/monitoring/triage/events", STAFF_PAGES, call=event_stream,
              markers=workflow_markers),
    RouteCase("POST", "/monitoring/alerts/{alert_id}/{action}", PAGE_RESPONDERS,
              call=page_alert_step, own_institution_check=True),
    RouteCase("POST", "/monitoring/on-call", frozenset({Role.CLINICIAN}),
              form=lambda world, caller: {"institution_id": str(world.actors.a.id)},
              own_institution_check=True),
    RouteCase("GET", "/monitoring/patients/{patient_id}", STAFF_PAGES,
              path_params=patient_of_workflow, own_institution_check=True,
              markers=workflow_markers),
    RouteCase("POST", "/monitoring/patients/{patient_id}/care-plan",
              frozenset({Role.CLINICIAN}), path_params=patient_of_workflow,
              form=lambda world, caller: {"template": "hypertension"},
              own_institution_check=True),
    RouteCase("GET", "/monitoring/me", frozenset({Role.PATIENT}), markers=workflow_markers),
    RouteCase("POST", "/monitoring/me/readings", frozenset({Role.PATIENT}),
              form=manual_reading),
]


# ----------------------------------------------------------------------------- wound photos
# Sending, listing and viewing wound photos (jaejin.monitoring.photo_api) and sending one from
# the patient's or the care team's page (jaejin.monitoring.pages).

PHOTO_MARKER = "MATRIX-WOUND-SITE-OF-A"
PHOTOS = "/api/v1/patients/{patient_id}/wound-photos"


def _photo_file(shade: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (shade % 256, (shade // 256) % 256, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def _wound_photo(world: World) -> dict[str, int]:
    """A photo of A's patient (made once, on first use)."""
    found: dict[str, int] | None = world.extra.get("monitoring_photo")
    if found is not None:
        return found
    from jaejin.monitoring.photo_store import store_wound_photo
    from jaejin.monitoring.photos import prepare_photo

    patient_id = world.actors.patients["a"].id
    with world.session() as db:
        patient_row = db.get(Patient, patient_id)
        assert patient_row is not None
        now = datetime.now(UTC)
        stored = store_wound_photo(db, patient_row, prepare_photo(_photo_file(7)),
                                   taken_at=now, received_at=now, uploaded_by="user:0",
                                   body_site=PHOTO_MARKER)
        found = {"patient_id": patient_id, "photo_id": stored.row.id}
    world.extra["monitoring_photo"] = found
    return found


def photo_markers(world: World) -> list[str]:
    _wound_photo(world)
    return [PHOTO_MARKER]


def send_photo(world: World, caller: Caller, case: RouteCase) -> Any:
    url = case.path.format(**patient_a(world))
    # The patient's own page sends for the caller's own record (no patient named).
    data = {"csrf_token": caller.session_csrf} if caller.session_csrf else {}
    return caller.client.post(url, files={"file": ("wound.jpg", _photo_file(next(_serial)),
                                                   "image/jpeg")},
                              data=data, headers=caller.auth_headers(), follow_redirects=False)


CASES += [
    RouteCase("POST", PHOTOS, WRITERS, call=send_photo, path_params=patient_a,
              own_institution_check=True, markers=photo_markers),
    RouteCase("GET", PHOTOS, READERS, path_params=patient_a, own_institution_check=True,
              markers=photo_markers),
    RouteCase("GET", PHOTOS + "/{photo_id}", READERS, path_params=_wound_photo,
              own_institution_check=True, markers=photo_markers),
    RouteCase("GET", PHOTOS + "/{photo_id}/image", READERS, path_params=_wound_photo,
              own_institution_check=True, markers=photo_markers),
    RouteCase("GET", PHOTOS + "/{photo_id}/thumbnail", READERS, path_params=_wound_photo,
              own_institution_check=True, markers=photo_markers),
    RouteCase("POST", "/monitoring/me/wound-photos", frozenset({Role.PATIENT}),
              call=send_photo, markers=photo_markers),
    RouteCase("POST", "/monitoring/patients/{patient_id}/wound-photos",
              frozenset({Role.CLINICIAN, Role.COORDINATOR}), call=send_photo,
              path_params=patient_a, own_institution_check=True, markers=photo_markers),
    # The same photos as FHIR Media (jaejin.fhir.api), under the photo API's rules.
    RouteCase("GET", "/fhir/R4/Media", READERS,
              query=lambda world: {"subject": f"Patient/{_wound_photo(world)['patient_id']}"},
              own_institution_check=True, markers=photo_markers),
    RouteCase("GET", "/fhir/R4/Media/{media_id}", READERS,
              path_params=lambda world: {"media_id": _wound_photo(world)["photo_id"]},
              own_institution_check=True, markers=photo_markers),
]
