"""Schemathesis sweep of the JSON API: no operation answers a server error, whatever it is sent.

Every operation of /api/v1/openapi.json gets generated requests, sent in-process to the app
(Schemathesis' ASGI transport: nothing leaves the process) as a signed-in clinician, a signed-in
patient and an institution's system client: requests that fit the schema, requests that fit it
with every id in the path naming a record that exists (so the route gets past "not found" into
its real work), and, as the clinician, requests that break it. Each answer must be below 500
(Schemathesis' `not_a_server_error`); a failure shows the request and the server's traceback.

Reproducible: hypothesis is derandomized and keeps no example database, so CI sends the same
requests every run (945 on SQLite and PostgreSQL alike). A deeper sweep, e.g. 25 examples per
operation (about 5 minutes):
    JAEJIN_FUZZ_EXAMPLES=25 JAEJIN_FUZZ_REPORT=/tmp/fuzz.txt pytest tests/test_api_fuzz.py \
        --timeout=1500
(pytest's own 300 s timeout would otherwise interrupt it mid-request, which hypothesis reports
as a flaky failure); JAEJIN_FUZZ_REPORT gets the slowest operations and every failure,
JAEJIN_FUZZ_ONLY=<part of a label> sweeps only the operations whose label contains it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Err
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import Role
from jaejin.directory.store import Encounter
from tests.core.helpers import fast_password_hashing
from tests.scheduling.test_booking_fixtures import build_world
from tests.support import Actors, bearer, client_token, sign_in
from tests.visits.conftest import add_local_physician, make_visit

EXAMPLES_PER_OPERATION = int(os.environ.get("JAEJIN_FUZZ_EXAMPLES", "2"))
#: A request still unanswered after this long is a failure too (a hang, not a slow machine).
REQUEST_TIMEOUT_SECONDS = 30

#: Operations that still answer 500 for a reason being fixed elsewhere: the sweep reports them
#: as expected failures (and fails if one of them starts passing, so the entry is removed).
KNOWN_SERVER_ERRORS: Mapping[str, str] = {}


@pytest.fixture(autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    with fast_password_hashing():
        yield


@dataclass(frozen=True)
class Caller:
    name: str
    headers: dict[str, str]
    cookies: dict[str, str]


def _session_caller(client: Any, actors: Actors, role: Role) -> Caller:
    csrf = sign_in(client, actors.person("a", role))
    caller = Caller(role.value, {"X-CSRF-Token": csrf}, dict(client.cookies))
    client.cookies.clear()
    return caller


def _callers(client: Any, actors: Actors) -> list[Caller]:
    return [
        _session_caller(client, actors, Role.CLINICIAN),
        _session_caller(client, actors, Role.PATIENT),
        Caller("system client", bearer(client_token(client, actors.clients["a"])), {}),
    ]


def _records(db: Session, actors: Actors) -> dict[str, int]:
    """Institution A's records of every kind a path can name, by the path parameter's name."""
    world = build_world(db, actors)
    visit = make_visit(db, actors, "a", consent=True)
    physician = add_local_physician(db, actors, "a")
    encounter_id = db.execute(select(Encounter.id).where(
        Encounter.patient_id == actors.patients["a"].id).limit(1)).scalar_one()
    assert visit.consent_id is not None
    records = {
        "institution_id": actors.a.id, "patient_id": actors.patients["a"].id,
        "practitioner_id": actors.practitioners["a"].id, "interpreter_id": world.interpreter.id,
        "appointment_id": visit.appointment_id, "visit_id": visit.id,
        "consent_id": visit.consent_id, "physician_id": physician.id,
        "encounter_id": encounter_id,
    }
    db.commit()  # and no transaction left open: SQLite would lock the app's writes out
    return records


@dataclass
class ServerError:
    caller: str
    operation: str
    failure: str
    traceback: str


def _described(error: BaseException) -> str:
    """The failure, and each of a group's failures (hypothesis groups a flaky one's)."""
    parts = [f"{type(error).__name__}: {error}"]
    if isinstance(error, BaseExceptionGroup):
        parts.extend(_described(inner) for inner in error.exceptions)
    return "\n".join(parts)


class NothingToGenerate(Exception):
    """No request can be generated: nothing in the schema to break (no parameters, or any
    string is valid). Known after the first caller, so the others are skipped."""


def _sweep(operation: Any, caller: Caller, strategy: Any, answered: Counter[tuple[str, int]],
           caplog: pytest.LogCaptureFixture) -> ServerError | None:
    @given(case=strategy)
    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None,
              deadline=None, phases=(Phase.explicit, Phase.generate),
              suppress_health_check=list(HealthCheck))
    def answers_below_500(case: Any) -> None:
        response = case.call(headers=caller.headers, cookies=caller.cookies,
                             timeout=REQUEST_TIMEOUT_SECONDS)
        answered[caller.name, response.status_code // 100] += 1
        case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])

    caplog.clear()
    try:
        answers_below_500()
    except Unsatisfiable:
        raise NothingToGenerate from None
    except Exception as error:  # every failure is collected, all reported at the end
        logged = "\n".join(f"{record.getMessage()}\n{record.exc_text or ''}"
                           for record in caplog.records if record.levelno >= logging.ERROR)
        return ServerError(caller.name, operation.label, _described(error), logged)
    return None


def _operations(schema: Any, label_part: str) -> list[Any]:
    """Every operation of the schema (or those whose label contains `label_part`)."""
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the app's own schema is broken: that is a failure too
        if label_part in result.ok().label:
            operations.append(result.ok())
    return operations


def _plan(operation: Any, records: Mapping[str, int],
          callers: Sequence[Caller]) -> list[tuple[Any, Sequence[Caller]]]:
    """What to generate for the operation, and for whom. Requests breaking the schema are sent
    by the first caller only: they are refused by validation, which is the same for everyone
    who gets past authentication (the clinician reaches the most routes)."""
    plan: list[tuple[Any, Sequence[Caller]]] = [
        (operation.as_strategy(generation_mode=GenerationMode.POSITIVE), callers),
        (operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), callers[:1]),
    ]
    known = {parameter.name: records[parameter.name] for parameter in operation.path_parameters
             if parameter.name in records}
    if known:
        plan.append((operation.as_strategy(generation_mode=GenerationMode.POSITIVE,
                                           path_parameters=known), callers))
    return plan


def test_no_operation_answers_a_server_error(app, client, db, actors, caplog):
    caplog.set_level(logging.ERROR)
    records = _records(db, actors)
    callers = _callers(client, actors)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    only = os.environ.get("JAEJIN_FUZZ_ONLY", "")
    operations = _operations(schema, only)
    assert operations, "the schema has no operations"
    started = time.perf_counter()
    answered: Counter[tuple[str, int]] = Counter()
    found: list[ServerError] = []
    timings: list[tuple[float, str]] = []
    for operation in operations:
        for strategy, callers_of_strategy in _plan(operation, records, callers):
            for caller in callers_of_strategy:
                one = time.perf_counter()
                try:
                    error = _sweep(operation, caller, strategy, answered, caplog)
                except NothingToGenerate:
                    break
                timings.append((time.perf_counter() - one, f"{operation.label} as {caller.name}"))
                if error is not None:
                    found.append(error)
    elapsed = time.perf_counter() - started
    unexpected = [error for error in found if error.operation not in KNOWN_SERVER_ERRORS]
    report = "\n\n".join(f"== {error.operation} as {error.caller}\n{error.failure}\n"
                         f"{error.traceback}" for error in found)
    if os.environ.get("JAEJIN_FUZZ_REPORT"):
        with open(os.environ["JAEJIN_FUZZ_REPORT"], "w", encoding="utf-8") as out:
            out.write(f"{len(operations)} operations swept in {elapsed:.1f} s: "
                      f"{sum(answered.values())} requests, {dict(answered)}\n")
            out.writelines(f"{seconds:.2f} {label}\n"
                           for seconds, label in sorted(timings, reverse=True)[:30])
            out.write(report)
    assert not unexpected, report
    if not only:
        # Signed in for real: every caller got past authentication into routes' work somewhere.
        assert all(answered[caller.name, 2] for caller in callers), answered
    fixed = set(KNOWN_SERVER_ERRORS) - {error.operation for error in found}
    assert not fixed, f"no longer answering 500, remove from KNOWN_SERVER_ERRORS: {fixed}"
