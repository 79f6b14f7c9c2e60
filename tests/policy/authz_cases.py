"""Who may call the policy routes (tests/test_authorization_matrix.py).

The evaluate and packs API is open to anyone signed in and to system clients with the scope
`policy.evaluate`: a request carries every fact itself and reads no record. The pages read
records: the rules overview shows the caller's institutions' telemedicine share (admins and
auditors), the visit check reads one of the clinician's patients.
"""

from __future__ import annotations

from typing import Any

from jaejin.core.accounts import Role
from tests.authz import SIGNED_IN, Caller, RouteCase, World
from tests.policy.builders import build


def _evaluation(world: World, caller: Caller) -> dict[str, Any]:
    return build()


def _proposed_visit(world: World, caller: Caller) -> dict[str, Any]:
    return {
        "patient_id": str(world.actors.patients["a"].id), "at": "2027-03-10T10:00",
        "time_zone": "Asia/Seoul", "mode": "video", "condition": "I10",
    }


def _institution_a(world: World) -> list[str]:
    return [f'data-institution="{world.actors.a.code}"']


def _patient_a(world: World) -> list[str]:
    return [world.actors.patients["a"].mrn]


CASES = [
    RouteCase("POST", "/api/v1/policy/evaluate", SIGNED_IN, json=_evaluation),
    RouteCase("GET", "/api/v1/policy/packs", SIGNED_IN),
    RouteCase("GET", "/policy", frozenset({Role.INSTITUTION_ADMIN, Role.AUDITOR}),
              markers=_institution_a),
    RouteCase("GET", "/policy/check", frozenset({Role.CLINICIAN}), markers=_patient_a),
    RouteCase("POST", "/policy/check", frozenset({Role.CLINICIAN}), form=_proposed_visit,
              own_institution_check=True, markers=_patient_a),
]
