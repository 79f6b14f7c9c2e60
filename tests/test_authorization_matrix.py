"""The authorisation matrix: every route of the app, called by every kind of caller.

How it works
------------
Each capability declares its routes in `tests/<capability>/authz_cases.py`:

    from tests.authz import EVERYONE, SIGNED_IN, RouteCase, WebSocketCase, World

    CASES = [
        RouteCase("GET", "/api/v1/widgets/{widget_id}", frozenset({Role.CLINICIAN}),
                  path_params=lambda world: {"widget_id": world.extra["widgets"]["a"]},
                  own_institution_check=True, markers=lambda world: ["WIDGET-A"]),
        ...
    ]

    def setup(world: World) -> None:      # optional: records the cases point at
        with world.session() as db:
            ...
            world.extra["widgets"] = {"a": widget_of_a.id}

RouteCase and WebSocketCase are documented in tests/authz.py. The matrix then proves:

1. Every route the app serves (API and pages; not static files, /healthz or the OpenAPI
   documents) has exactly one case: a route without one fails
   `test_every_route_of_the_app_has_a_case`, listing it. Adding a router to ROUTER_MODULES
   without declaring its routes here fails the suite, by design.
2. For every case and every caller (anonymous, patient, clinician, coordinator, interpreter,
   institution_admin, auditor: signed in through the real sign-in and two-factor pages;
   system_client: a bearer token from the real token endpoint), all of institution A:
   callers not allowed get 401/403 (pages may redirect to /login) and never a 2xx nor the
   case's markers; allowed callers get an answer below 400 that is no redirect to sign-in.
3. For cases with `own_institution_check`, institution B's caller of every allowed kind asks
   for A's record and gets 404 (or 403) without A's markers; for cases with `markers`,
   B's allowed callers are served but never see A's markers.

The world (two institutions, a person in every role at each, their records, every case
module's `setup`) is built once per module and each caller signs in once.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlencode

import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from jaejin.core.accounts import Role
from tests.authz import (
    ANONYMOUS,
    CALLERS,
    Caller,
    Case,
    RouteCase,
    WebSocketCase,
    Who,
    World,
    assert_no_markers,
    assert_refused,
    assert_reported_absent,
    assert_served,
    make_request,
    who_name,
)
from tests.core.helpers import empty_database, fast_password_hashing
from tests.support import Actors

# One worker builds the world once and runs every case (--dist loadgroup; tests/conftest.py
# makes sure the grouping is in effect). Run without xdist's grouping, each worker would build
# its own world for the cases it runs, which the cases must (and do) tolerate.
pytestmark = pytest.mark.xdist_group("authorization_matrix")

TESTS = Path(__file__).resolve().parent
#: Served by the framework or for operations, not by a capability: no case needed.
UNGUARDED_PATHS = frozenset({"/healthz"})


def _case_modules() -> list[ModuleType]:
    return [importlib.import_module(f"tests.{path.parent.name}.authz_cases")
            for path in sorted(TESTS.glob("*/authz_cases.py"))]


CASE_MODULES = _case_modules()
ALL_CASES: list[Case] = [case for module in CASE_MODULES for case in module.CASES]
ROUTE_CASES = [case for case in ALL_CASES if isinstance(case, RouteCase)]
SOCKET_CASES = [case for case in ALL_CASES if isinstance(case, WebSocketCase)]


# ------------------------------------------------------------------------- the app's routes


def _flatten(routes: list[BaseRoute]) -> Iterator[tuple[BaseRoute, str]]:
    """Every route with its full path; FastAPI >= 0.16x keeps included routers unflattened."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI flattens included routers into app.routes
        for route in routes:
            yield route, getattr(route, "path", "")
        return
    for context in iter_route_contexts(routes):
        yield context.original_route, context.path or ""


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route a capability serves: API routes, pages, WebSockets."""
    framework = {app.openapi_url, app.docs_url, app.redoc_url,
                 app.swagger_ui_oauth2_redirect_url} - {None}
    found: set[tuple[str, str]] = set()
    for route, path in _flatten(list(app.routes)):
        if isinstance(route, Mount) or path in framework or path in UNGUARDED_PATHS:
            continue
        if isinstance(route, APIWebSocketRoute | WebSocketRoute):
            found.add(("WEBSOCKET", path))
        elif isinstance(route, APIRoute | Route):
            found |= {(method, path) for method in route.methods or () if method != "HEAD"}
        else:
            found.add((type(route).__name__, path))  # an unknown kind: it needs a case type
    return found


def test_every_route_of_the_app_has_a_case(app):
    declared = {(case.method, case.path) for case in ALL_CASES}
    missing = sorted(served_routes(app) - declared)
    assert not missing, (
        "routes without an authorisation case (declare them in tests/<capability>/"
        "authz_cases.py):\n" + "\n".join(f"  {method} {path}" for method, path in missing))


def test_every_case_names_a_route_the_app_serves_once(app):
    labels = [(case.method, case.path) for case in ALL_CASES]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    assert not duplicates, f"declared twice: {duplicates}"
    stale = sorted(set(labels) - served_routes(app))
    assert not stale, f"cases for routes the app does not serve: {stale}"


def test_the_route_census_sees_routes_of_included_routers_and_websockets():
    router = APIRouter(prefix="/api/v1/census")

    @router.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @router.websocket("/live")
    async def live(websocket: WebSocket) -> None:
        return None

    toy = FastAPI(openapi_url="/api/v1/openapi.json")
    toy.include_router(router)
    assert served_routes(toy) == {("GET", "/api/v1/census/items/{item_id}"),
                                  ("WEBSOCKET", "/api/v1/census/live")}


# ---------------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def world(app, engine, settings) -> Iterator[World]:
    with fast_password_hashing():
        empty_database(engine)
        with Session(engine, expire_on_commit=False) as db:
            actors = Actors.create(db, settings)
        built = World(actors=actors, app=app, engine=engine, settings=settings)
        for module in CASE_MODULES:
            if hasattr(module, "setup"):
                module.setup(built)
        with TestClient(app):  # the app's lifespan, for the duration of the module
            for who in CALLERS:
                for institution in ((None,) if who == ANONYMOUS else ("a", "b")):
                    built.callers[(who, institution)] = built.sign_in(who, institution)
            yield built
        for caller in built.callers.values():
            caller.client.close()
        empty_database(engine)


def caller_for(world: World, case: RouteCase, who: Who, institution: str | None) -> Caller:
    if case.throwaway_caller:
        return world.throwaway(who, institution)
    return world.callers[(who, institution)]


def _route_params() -> list[object]:
    return [pytest.param(case, who, id=f"{case.label} as {who_name(who)}")
            for case in ROUTE_CASES for who in CALLERS]


def _other_institution_params() -> list[object]:
    return [pytest.param(case, who, id=f"{case.label} as {who_name(who)} of B")
            for case in ROUTE_CASES if case.own_institution_check or case.markers
            for who in CALLERS if who != ANONYMOUS and who in case.allowed]


@pytest.mark.parametrize(("case", "who"), _route_params())
def test_each_caller_gets_only_what_its_role_allows(world, case: RouteCase, who: Who):
    caller = caller_for(world, case, who, None if who == ANONYMOUS else "a")
    response = make_request(world, case, caller)
    if who in case.allowed:
        assert_served(case, response)
        if case.public:
            assert_no_markers(world, case, response)
    else:
        assert_refused(case, response)
        assert_no_markers(world, case, response)


@pytest.mark.parametrize(("case", "who"), _other_institution_params())
def test_another_institutions_caller_never_gets_its_records(world, case: RouteCase, who: Who):
    response = make_request(world, case, caller_for(world, case, who, "b"))
    if case.own_institution_check:
        assert_reported_absent(case, response)
    else:
        assert_served(case, response)
    assert_no_markers(world, case, response)


# ------------------------------------------------------------------------------- WebSockets


def handshake_completes(url: str, client: TestClient, headers: dict[str, str]) -> bool:
    """Whether the server accepted the connection; what it does after accepting (send, close)
    is the route's business."""
    connection = client.websocket_connect(url, headers=dict(headers))
    try:
        connection.__enter__()
    except WebSocketDisconnect:
        return False
    with contextlib.suppress(WebSocketDisconnect):
        connection.__exit__(None, None, None)
    return True


def _socket_url(world: World, case: WebSocketCase) -> str:
    url = case.path.format(**(case.path_params(world) if case.path_params else {}))
    return url + ("?" + urlencode(case.query(world)) if case.query else "")


def test_each_caller_may_open_only_the_live_channels_its_role_allows(world):
    wrong: list[str] = []
    for case in SOCKET_CASES:
        url = _socket_url(world, case)
        for who in CALLERS:
            caller = world.callers[(who, None if who == ANONYMOUS else "a")]
            opened = handshake_completes(url, caller.client, caller.auth_headers())
            if opened != (who in case.allowed):
                wrong.append(f"{case.label} as {who_name(who)}: "
                             f"{'opened' if opened else 'refused'}")
            if case.own_institution_check and who != ANONYMOUS and who in case.allowed:
                other = world.callers[(who, "b")]
                if handshake_completes(url, other.client, other.auth_headers()):
                    wrong.append(f"{case.label} as {who_name(who)} of B: opened A's channel")
    assert not wrong, "\n".join(wrong)


def test_a_live_channel_refused_before_the_handshake_counts_as_refused():
    toy = FastAPI()

    @toy.websocket("/live")
    async def live(websocket: WebSocket) -> None:
        if websocket.headers.get("authorization") != "Bearer good":
            await websocket.close(code=4403)
            return
        await websocket.accept()
        await websocket.close()

    client = TestClient(toy)
    assert handshake_completes("/live", client, {"Authorization": "Bearer good"})
    assert not handshake_completes("/live", client, {"Authorization": "Bearer bad"})


def test_the_matrix_tries_every_kind_of_caller():
    assert set(CALLERS) == {ANONYMOUS, *Role}
