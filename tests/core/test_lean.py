"""The lean lane (`jaejin.core.lean`): hot routes answered outside the FastAPI stack, with the
stack's contract (problems in the caller's language, the body limit, compression, 405, path
parameter validation, the logged 500), and everything else left to the stack."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Receive, Scope, Send

from jaejin.core.errors import (
    BodySizeLimit,
    forbidden,
    install_error_handlers,
    validation_problem,
)
from jaejin.core.i18n import translate
from jaejin.core.lean import LeanLane, install_lean_lane, lean_routes
from tests.scheduling.test_booking_fixtures import SchedulingWorld
from tests.support import problem

pytest_plugins = ("tests.scheduling.test_booking_fixtures",)

BODY_LIMIT = 64
BIG = b"[" + b"0," * 3000 + b"0]"


class Item(BaseModel):
    name: str


async def echo(item_id: int, request: Request) -> Response:
    try:
        item = Item.model_validate_json(await request.body())
    except ValidationError as error:
        raise validation_problem(error.errors()) from None
    return Response(f'{{"id": {item_id}, "name": "{item.name}"}}', status_code=201,
                    media_type="application/json", headers={"Location": f"/items/{item_id}"})


async def tagged(request: Request, tag: str) -> Response:
    return Response(tag, media_type="text/plain")


async def refused(request: Request) -> Response:
    raise forbidden()


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug with a secret in it")


async def late(request: Request) -> Response:
    return Response("late")


async def big(request: Request) -> Response:
    return Response(BIG, media_type="application/json")


def _small_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(GZipMiddleware, minimum_size=2048)
    app.add_middleware(BodySizeLimit, max_bytes=BODY_LIMIT)
    router = APIRouter(prefix="/api/v1")
    router.post("/items/{item_id}")(echo)
    router.get("/tags/{tag}")(tagged)
    router.get("/refused")(refused)
    router.get("/broken")(broken)
    router.get("/big")(big)
    app.include_router(router)
    install_lean_lane(app, lean_routes(echo, tagged, refused, broken, big))
    return app


class Counted:
    """The stack behind the lane, counting the requests that reach it."""

    def __init__(self, lane: LeanLane) -> None:
        self.stack = lane.stack
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.stack(scope, receive, send)


def _lane(app: FastAPI, client: TestClient) -> LeanLane:
    client.get("/no-such-thing")  # the middleware stack is built at the first request
    lane = app.middleware_stack
    assert isinstance(lane, LeanLane)
    return lane


@pytest.fixture
def small() -> Iterator[tuple[TestClient, Counted]]:
    app = _small_app()
    with TestClient(app, raise_server_exceptions=False) as client:
        lane = _lane(app, client)
        counted = lane.stack = Counted(lane)
        yield client, counted


def test_a_lean_route_is_answered_without_the_stack(small):
    client, stack = small
    response = client.post("/api/v1/items/7", content=b'{"name": "x"}')
    assert response.status_code == 201
    assert response.json() == {"id": 7, "name": "x"}
    assert response.headers["location"] == "/items/7"
    assert client.get("/api/v1/tags/blue").text == "blue"
    assert stack.calls == 0


def test_paths_and_methods_not_in_the_table_fall_through_to_the_stack(small):
    client, stack = small
    missing = client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404
    assert problem(missing)["code"] == "NOT_FOUND"
    redirected = client.post("/api/v1/items/7/", content=b'{"name": "x"}',
                             follow_redirects=False)
    assert redirected.status_code == 307
    assert stack.calls == 2


def test_a_problem_is_answered_in_the_callers_language(small):
    client, _stack = small
    korean = problem(client.get("/api/v1/refused", headers={"Accept-Language": "ko"}))
    assert korean["code"] == "FORBIDDEN"
    assert korean["detail"] == translate("ko", "Your role does not allow this.")
    assert korean["detail"] != "Your role does not allow this."
    assert korean["instance"] == "/api/v1/refused"
    russian = problem(client.get("/api/v1/refused?lang=ru"))
    assert russian["detail"] == translate("ru", "Your role does not allow this.")
    assert russian["detail"] not in (korean["detail"], "Your role does not allow this.")


def test_a_bad_body_is_a_validation_problem_in_the_callers_language(small):
    client, stack = small
    response = client.post("/api/v1/items/7", content=b'{"nom": 1}',
                           headers={"Accept-Language": "ko"})
    assert response.status_code == 422
    body = problem(response)
    assert body["code"] == "VALIDATION_FAILED"
    assert body["detail"] == translate("ko", "Some fields are not valid.")
    assert [error["field"] for error in body["errors"]] == ["name"]
    assert stack.calls == 0


def test_an_oversized_body_is_refused_whether_announced_or_streamed(small):
    client, stack = small
    announced = client.post("/api/v1/items/7", content=b"x" * (BODY_LIMIT + 1),
                            headers={"Accept-Language": "ko"})
    assert announced.status_code == 413
    assert problem(announced)["code"] == "BODY_TOO_LARGE"
    assert problem(announced)["detail"] == translate("ko", "The request body is too large.")

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        yield b"x" * BODY_LIMIT
        yield b'"}'

    streamed = client.post("/api/v1/items/7", content=chunks())
    assert streamed.status_code == 413
    assert problem(streamed)["code"] == "BODY_TOO_LARGE"
    assert stack.calls == 0


def test_another_method_is_the_stacks_405_with_allow(small):
    client, stack = small
    response = client.put("/api/v1/items/7", content=b"{}")
    assert response.status_code == 405
    assert problem(response)["code"] == "METHOD_NOT_ALLOWED"
    assert response.headers["allow"] == "POST"
    # FastAPI answers HEAD only where a route declares it: the stack's 405, as before.
    assert client.head("/api/v1/tags/blue").status_code == 405
    assert stack.calls == 2


@pytest.mark.parametrize("item_id", ["abc", "-1", "1e3", "\u0663", "1" * 30, "%20"])
def test_a_path_parameter_not_in_plain_form_is_the_stacks_to_validate(small, item_id):
    client, stack = small
    response = client.post(f"/api/v1/items/{item_id}", content=b'{"name": "x"}')
    assert stack.calls == 1
    if response.status_code == 422:
        assert problem(response)["errors"][0]["field"] == "path.item_id"
    else:  # -1 and 30 digits are whole numbers for FastAPI too
        assert response.status_code == 201


def test_an_id_with_leading_zeros_is_the_same_number_as_for_fastapi(small):
    client, stack = small
    assert client.post("/api/v1/items/007", content=b'{"name": "x"}').json()["id"] == 7
    assert stack.calls == 0


def test_an_unexpected_error_is_a_logged_500_problem_without_a_traceback(small, caplog):
    client, _stack = small
    with caplog.at_level(logging.ERROR, logger="jaejin.core.errors"):
        response = client.get("/api/v1/broken", headers={"Accept-Language": "ko"})
    assert response.status_code == 500
    body = problem(response)
    assert body["code"] == "INTERNAL_ERROR"
    assert body["detail"] == translate("ko", "Something went wrong on our side.")
    assert "secret" not in response.text and "Traceback" not in response.text
    logged = [record for record in caplog.records
              if record.getMessage() == "unhandled error on GET /api/v1/broken"]
    assert logged and logged[0].exc_info is not None


def test_an_unexpected_error_still_reaches_the_server_as_with_the_stack():
    with TestClient(_small_app()) as client, pytest.raises(RuntimeError, match="a bug"):
        client.get("/api/v1/broken")


def test_a_large_answer_is_compressed_by_the_applications_middleware(small):
    client, stack = small
    response = client.get("/api/v1/big", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == BIG  # decoded by the client
    raw = client.get("/api/v1/big", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert stack.calls == 0


def test_compression_answers_as_the_stacks_middleware_whatever_the_size(small):
    client, stack = small
    lane = client.app.middleware_stack
    reference = TestClient(_stack_of(client.app, stack.stack), raise_server_exceptions=False)
    for path in ("/api/v1/big", "/api/v1/tags/blue", "/api/v1/refused"):
        for encoding in ("gzip", "identity", "br"):
            headers = {"Accept-Encoding": encoding}
            _same(client.get(path, headers=headers), reference.get(path, headers=headers))
    assert stack.calls == 0 and isinstance(lane, LeanLane)


def test_a_route_added_later_joins_the_table_until_the_application_starts():
    app = _small_app()
    app.get("/api/v1/late")(late)
    install_lean_lane(app, [late])
    with TestClient(app) as client:
        assert client.get("/api/v1/late").text == "late"
        lane = _lane(app, client)
        assert lane.match({"method": "GET", "path": "/api/v1/late", "root_path": ""})
        with pytest.raises(RuntimeError, match="first request"):
            install_lean_lane(app, [late])


# --------------------------------------------------------------------------- registration


async def _principal() -> str:
    return "someone"


async def with_dependency(request: Request, who: Annotated[str, Depends(_principal)]) -> Response:
    return Response(who)


async def with_query(request: Request, limit: int = 10) -> Response:
    return Response(str(limit))


async def without_request(tag: str) -> Response:
    return Response(tag)


def synchronous(request: Request) -> Response:
    return Response("")


async def shadowed(request: Request) -> Response:
    return Response("never")


async def first(request: Request, tag: str) -> Response:
    return Response("first")


def test_only_async_routes_of_the_request_and_plain_path_parameters_may_register():
    with pytest.raises(TypeError, match="async"):
        lean_routes(synchronous)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="request once"):
        lean_routes(without_request)
    with pytest.raises(TypeError, match="who"):
        lean_routes(with_dependency)
    with pytest.raises(TypeError, match="limit"):
        lean_routes(with_query)


def test_a_route_shadowed_by_one_mounted_earlier_is_refused():
    app = FastAPI()
    app.get("/api/v1/tags/{tag}")(first)
    app.get("/api/v1/tags/shadowed")(shadowed)
    with pytest.raises(TypeError, match="mounted earlier"):
        install_lean_lane(app, [shadowed])


def test_a_route_fastapi_would_give_dependencies_is_refused():
    app = FastAPI()
    app.get("/api/v1/tags/{tag}", dependencies=[Depends(_principal)])(first)
    with pytest.raises(TypeError, match="dependencies"):
        install_lean_lane(app, [first])


def test_a_route_not_mounted_is_refused():
    with pytest.raises(TypeError, match="mounted 0 times"):
        install_lean_lane(FastAPI(), [first])


# --------------------------------------------------------------------------- the application


def test_the_lean_table_and_the_openapi_agree(app):
    table = {(route.method, route.path) for route in app.state.lean_routes}
    assert table >= {("POST", "/api/v1/appointments"),
                     ("GET", "/api/v1/practitioners/{practitioner_id}/slots")}
    paths = app.openapi()["paths"]
    for method, path in table:
        assert method.lower() in paths[path], (method, path)


def _stack_of(app: FastAPI, stack: Any) -> Any:
    """The application without the lane, as Starlette calls its middleware stack."""

    async def without_lane(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        await stack(scope, receive, send)

    return without_lane


@pytest.fixture
def stack_only(app: FastAPI, client: TestClient) -> TestClient:
    """A client of the same application without the lane: its answers are the reference."""
    return TestClient(_stack_of(app, _lane(app, client).stack), base_url="http://testserver",
                      raise_server_exceptions=False)


def _same(lean: Any, reference: Any) -> None:
    assert lean.status_code == reference.status_code, (lean.text, reference.text)
    assert dict(lean.headers) == dict(reference.headers)
    assert lean.content == reference.content


def _slots_query(world: SchedulingWorld, days: int = 0) -> dict[str, str]:
    return {"start": world.day.isoformat(),
            "end": (world.day + timedelta(days=days)).isoformat(), "tz": "Asia/Seoul",
            "visit_type": "follow_up", "mode": "video"}


def test_the_scheduling_routes_answer_as_the_stack_does(app, client, stack_only, world,
                                                        system_a):
    lane = app.middleware_stack
    counted = lane.stack = Counted(lane)
    slots = f"/api/v1/practitioners/{world.practitioner_a}/slots"
    korean = {**system_a, "Accept-Language": "ko", "Accept-Encoding": "gzip"}
    served_by_lane = [
        ("GET", slots, {"params": _slots_query(world, days=20), "headers": korean}),
        ("GET", slots, {"params": _slots_query(world), "headers": system_a}),
        ("GET", slots, {"params": {**_slots_query(world), "tz": "Mars/Base"},
                        "headers": korean}),
        ("GET", slots, {"params": {"start": "soon"}, "headers": korean}),
        ("GET", slots, {"params": _slots_query(world)}),
        ("POST", "/api/v1/appointments", {"json": world.booking("10:00"),
                                          "headers": {"Accept-Language": "ko"}}),
        ("POST", "/api/v1/appointments", {"content": b"{", "headers": korean}),
        ("POST", "/api/v1/appointments", {"json": {"patient_id": "x"}, "headers": korean}),
        ("POST", "/api/v1/appointments", {"json": world.booking("10:00", visit_type="massage"),
                                          "headers": korean}),
    ]
    for method, path, arguments in served_by_lane:
        _same(client.request(method, path, **arguments),
              stack_only.request(method, path, **arguments))
    assert counted.calls == 0
    etag = client.get(slots, params=_slots_query(world), headers=system_a).headers["etag"]
    not_modified = {"params": _slots_query(world), "headers": {**system_a, "If-None-Match": etag}}
    _same(client.get(slots, **not_modified), stack_only.get(slots, **not_modified))

    left_to_the_stack = [
        ("PUT", "/api/v1/appointments", {"json": {}, "headers": korean}),
        ("POST", "/api/v1/appointments/", {"json": {}, "headers": korean}),
        ("HEAD", slots, {"params": _slots_query(world), "headers": system_a}),
        ("OPTIONS", slots, {"headers": system_a}),
        ("DELETE", slots, {"headers": korean}),
        *[("GET", f"/api/v1/practitioners/{bad}/slots",
           {"params": _slots_query(world), "headers": korean})
          for bad in ("abc", "-1", "1.0", "\u0663", "9" * 30)],
    ]
    for method, path, arguments in left_to_the_stack:
        _same(client.request(method, path, follow_redirects=False, **arguments),
              stack_only.request(method, path, follow_redirects=False, **arguments))
    assert counted.calls == len(left_to_the_stack)


def test_an_oversized_booking_is_refused_as_the_stack_refuses_it(app, client, stack_only,
                                                                  system_a):
    limit = app.state.settings.max_request_body_bytes
    headers = {**system_a, "Accept-Language": "ko", "Content-Type": "application/json"}
    body = b" " * (limit + 1)
    lean = client.post("/api/v1/appointments", content=body, headers=headers)
    assert lean.status_code == 413
    assert problem(lean)["code"] == "BODY_TOO_LARGE"
    _same(lean, stack_only.post("/api/v1/appointments", content=body, headers=headers))


def test_a_booking_made_through_the_lane_is_the_stacks_answer_in_shape(client, stack_only,
                                                                       world, system_a):
    lean = client.post("/api/v1/appointments", json=world.booking("10:00"), headers=system_a)
    reference = stack_only.post("/api/v1/appointments", json=world.booking("11:00"),
                                headers=system_a)
    assert lean.status_code == reference.status_code == 201
    assert set(lean.headers) == set(reference.headers)
    assert lean.headers["location"] == f"/api/v1/appointments/{lean.json()['id']}"
    assert set(lean.json()) == set(reference.json())
    taken = {**system_a, "Accept-Language": "ko"}
    _same(client.post("/api/v1/appointments", json=world.booking("10:00"), headers=taken),
          stack_only.post("/api/v1/appointments", json=world.booking("10:00"), headers=taken))
