"""The policy API other systems and auditors depend on: judge a proposed visit, list the packs.

    POST /api/v1/policy/evaluate   body: EvaluationRequest (docs/policy.md)  -> Decision
    GET  /api/v1/policy/packs      every pack with its parameters (?in_force_on=YYYY-MM-DD)

The module's `router` also carries the policy pages (`jaejin.policy.pages`), so the capability
is mounted by one entry in `jaejin.app.ROUTER_MODULES`.

Any authenticated user, or a system client with the scope `policy.evaluate`. The packs are
loaded when this module is imported (that is, when the application is built), so a malformed
pack stops the service at start instead of being discovered by the first request.

Bad input is a 422 problem naming each field (`errors: [{field, code, message}]`, in the
caller's language: the request's `lang` when it is valid, else the caller's own); a request the
rules cannot judge because it contradicts the reference data is a 422 too. Nothing is guessed.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from jaejin.core.authn import CurrentPrincipal, Principal
from jaejin.core.errors import FieldError, Problem
from jaejin.core.i18n import N_, normalise_language
from jaejin.core.openapi import inline_schema
from jaejin.policy import pages
from jaejin.policy.decision import Decision
from jaejin.policy.engine import evaluate
from jaejin.policy.errors import RequestError
from jaejin.policy.packs import PackRegistry
from jaejin.policy.records import bad_request_problem, policy_registry
from jaejin.policy.request import EvaluationRequest, parse_request

#: Loaded at import: raises PackError (file and field named) when a pack is malformed.
REGISTRY: PackRegistry = policy_registry()

json_routes = APIRouter(prefix="/api/v1/policy", tags=["policy"])

SCOPE = "policy.evaluate"


async def policy_caller(principal: CurrentPrincipal) -> Principal:
    """Any signed-in user, or a system client holding the scope `policy.evaluate`.

    `CurrentPrincipal` looks the caller up in one statement, in a worker thread, on a
    connection of its own: these routes read no other table and take no request session.
    """
    if not principal.has_scope(SCOPE):
        raise Problem(403, "INSUFFICIENT_SCOPE", N_("This client lacks the scope {scope}."),
                      params={"scope": SCOPE})
    return principal


Evaluator = Annotated[Principal, Depends(policy_caller)]

JSON_MEDIA_TYPE = "application/json"


def _answer_in_requested_language(request: Request, payload: object) -> None:
    """Errors are written in the request's `lang` when it names a supported language."""
    if isinstance(payload, dict):
        language = payload.get("lang")
        if isinstance(language, str) and (normalised := normalise_language(language)):
            request.state.language = normalised


def decision_json(decision: Decision) -> bytes:
    """The response body: the same JSON as `decision.model_dump(mode="json")`, built faster.

    orjson serialises the decision's dataclasses, enums and dates itself, in field order.
    """
    return orjson.dumps(dict(decision))


_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {JSON_MEDIA_TYPE: {"schema": inline_schema(EvaluationRequest)}},
    }
}


@json_routes.post(
    "/evaluate",
    summary="Judge a proposed telemedicine visit under the rules in force on its day",
    response_model=Decision,
    responses={422: {"description": "Bad input: problem+json naming each field"}},
    openapi_extra=_REQUEST_BODY,
)
async def evaluate_visit(request: Request, principal: Evaluator) -> Response:
    """The decision for the visit described in the body: `allowed`, `conditional` or `denied`,
    with the pack that decided, each reason and its source, what is still outstanding, a verdict
    per prescription and document, and what is allowed instead. An auditor replays a past visit
    by sending it with its original `at`."""
    # Stateless: the body carries every fact and nothing is read from or written to the
    # patient records, so no audit entry is needed (the records-backed path audits in pages).
    body = await request.body()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Problem(
            422, "VALIDATION_FAILED", N_("Some fields are not valid."),
            errors=[FieldError("body", "JSON_INVALID", N_("The body is not valid JSON."))],
        ) from None
    _answer_in_requested_language(request, payload)
    try:
        decision = evaluate(parse_request(payload), REGISTRY)
    except (ValidationError, RequestError) as error:
        raise bad_request_problem(error) from None
    return Response(decision_json(decision), media_type=JSON_MEDIA_TYPE)


_DESCRIBED = REGISTRY.describe()
_ALL_PACKS = orjson.dumps(_DESCRIBED)


@json_routes.get("/packs", summary="Every rule pack: parameters, sources, in-force dates")
async def list_packs(
    principal: Evaluator,
    in_force_on: Annotated[
        date | None,
        Query(description="Only the packs in force on this Korean calendar day (YYYY-MM-DD)."),
    ] = None,
) -> Response:
    if in_force_on is None:
        return Response(_ALL_PACKS, media_type=JSON_MEDIA_TYPE)
    in_force = [pack for pack in _DESCRIBED if _covers(pack, in_force_on)]
    return Response(orjson.dumps(in_force), media_type=JSON_MEDIA_TYPE)


def _covers(described: dict[str, Any], day: date) -> bool:
    in_force = described["in_force"]
    starts = date.fromisoformat(in_force["from"])
    ends = date.fromisoformat(in_force["until"]) if in_force.get("until") else None
    return starts <= day and (ends is None or day <= ends)


#: What `jaejin.app` mounts (one ROUTER_MODULES entry): these JSON routes and the policy pages.
router = APIRouter()
router.include_router(json_routes)
router.include_router(pages.router)
