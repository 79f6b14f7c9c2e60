"""The lean lane: a few measured hot routes answered without the FastAPI stack's per-request work.

Before its own work every request passes Starlette's and FastAPI's layers: the server-error and
telemetry middlewares, FastAPI's body limit, the exception middleware, an AsyncExitStack, the
route index, FastAPI's route handling (dependency solving, a validated copy of every parameter).
A route written without dependencies (`create_appointment`, `search_slots`) still pays all of it.

`LeanLane` sits outside that stack (the application's `build_middleware_stack` returns it
wrapped around the usual one). It answers a request itself only when the method and the path
match a registered route exactly and every path parameter is in its plain form (an int as ASCII
digits); then it runs the application's own user middleware (`BodySizeLimit`, GZip: the same
instances' configuration, in the same order) around a call of the route's endpoint, and answers
an exception with the application's own exception handlers, as Starlette's exception and
server-error middlewares would (an unexpected one: the logged 500 problem, then re-raised for
the server). Anything else (another method, HEAD, OPTIONS, a trailing slash, `/1e3/` for an id,
a request observed by FastAPI's telemetry) goes to the stack untouched, so its answer (405 with
Allow, 422 for a bad id, the redirect, the 404) is the stack's by construction.

A capability registers a route with one line next to its FastAPI declaration, which stays (the
OpenAPI, and the same answer by either way in)::

    LEAN_ROUTES = lean_routes(create_appointment, search_slots)

The route must be `async def endpoint(<request: Request, path params: int | str>) -> Response`
with no dependencies, query, body, header or cookie parameters (FastAPI would validate those;
the lane would not): `install_lean_lane` refuses any other, and one shadowed by a route mounted
earlier. Only routes shown by measurement to be hot belong here (docs/architecture.md).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute, _EffectiveRouteContext
from starlette._utils import get_route_path
from starlette.convertors import StringConvertor
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from jaejin.core.routing import _leaves as leaves

LeanEndpoint = Callable[..., Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response] | Response]

#: Ids longer than this go to the stack: past 64 bits the database, not the lane, has a say.
MAX_INTEGER_DIGITS: Final = 18
_PATH_PARAMETER_TYPES: Final = (int, str)
#: Where the matched route waits in the scope while the application's middleware runs.
_LEAN_ROUTE: Final = "jaejin.lean_route"
#: The endpoint's answer, on its way through the compression middleware.
_PREPARED: Final = "jaejin.lean_response"


def lean_routes(*endpoints: LeanEndpoint) -> tuple[LeanEndpoint, ...]:
    """The capability's hot endpoints, checked for the lane's shape at import."""
    for endpoint in endpoints:
        _signature(endpoint)
    return endpoints


def _signature(endpoint: LeanEndpoint) -> tuple[str, dict[str, type]]:
    """The name of the endpoint's request parameter, and the type of each path parameter."""
    if not inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{endpoint.__qualname__}: a lean route is an async function")
    hints = typing.get_type_hints(endpoint, include_extras=True)
    parameters = inspect.signature(endpoint).parameters.values()
    requests = [parameter.name for parameter in parameters if hints.get(parameter.name) is Request]
    if len(requests) != 1:
        raise TypeError(f"{endpoint.__qualname__}: a lean route takes the request once")
    kinds: dict[str, type] = {}
    for parameter in parameters:
        if parameter.name == requests[0]:
            continue
        kind = hints.get(parameter.name)
        if kind not in _PATH_PARAMETER_TYPES or parameter.default is not inspect.Parameter.empty:
            raise TypeError(f"{endpoint.__qualname__}: {parameter.name} is not a plain int or "
                            "str path parameter")
        kinds[parameter.name] = kind
    return requests[0], kinds


@dataclass(frozen=True, slots=True)
class LeanRoute:
    method: str
    path: str
    endpoint: LeanEndpoint
    request_name: str
    #: The route's own pattern (None for a path without parameters).
    regex: re.Pattern[str] | None
    integers: frozenset[str]
    route: Any  # the application's route (`request.scope["route"]`, as FastAPI sets it)

    def parameters(self, route_path: str) -> dict[str, Any] | None:
        """The path parameters when `route_path` is this route's in plain form, else None."""
        assert self.regex is not None
        match = self.regex.match(route_path)
        if match is None:
            return None
        found: dict[str, Any] = match.groupdict()
        for name in self.integers:
            value = found[name]
            if not (value.isascii() and value.isdigit() and len(value) <= MAX_INTEGER_DIGITS):
                return None
            found[name] = int(value)
        return found


def _api_route(route: Any) -> Any:
    if isinstance(route, _EffectiveRouteContext):
        return route if isinstance(route.original_route, APIRoute) else None
    return route if isinstance(route, APIRoute) else None


def _sample_path(route: Any, integers: Iterable[str]) -> str:
    path: str = route.path
    for name in route.param_convertors:
        path = path.replace("{" + name + "}", "1" if name in integers else "x")
    return path


def _checked(app: FastAPI, route: Any, endpoint: LeanEndpoint, method: str,
             kinds: dict[str, type]) -> None:
    """Refuse a route the lane would answer differently from the stack."""
    name = endpoint.__qualname__
    dependant = route.dependant
    skipped = (dependant.dependencies, dependant.query_params, dependant.body_params,
               dependant.header_params, dependant.cookie_params)
    if any(skipped) or set(kinds) != {param.name for param in dependant.path_params}:
        raise TypeError(f"{name}: FastAPI would solve dependencies or validate parameters "
                        "the lean lane skips")
    if route.max_body_size is not None or app.max_body_size is not None:
        raise TypeError(f"{name}: FastAPI's own body limit is not applied by the lean lane")
    if any(not isinstance(convertor, StringConvertor)
           for convertor in route.param_convertors.values()):
        raise TypeError(f"{name}: path convertors ({route.path}) are not applied by the lane")
    sample = _sample_path(route, [key for key, kind in kinds.items() if kind is int])
    scope = {"type": "http", "method": method, "path": sample, "root_path": ""}
    for leaf in leaves(app.router.routes):
        if leaf.matches(scope)[0] is Match.FULL:
            if getattr(leaf, "endpoint", None) is not endpoint:
                raise TypeError(f"{name}: {method} {sample} is answered by a route mounted "
                                "earlier")
            return


def resolve(app: FastAPI, endpoints: Sequence[LeanEndpoint]) -> list[LeanRoute]:
    """The lean table: each endpoint's method and path as the application mounted it."""
    table: list[LeanRoute] = []
    for endpoint in endpoints:
        request_name, kinds = _signature(endpoint)
        mounted = [route for leaf in leaves(app.router.routes)
                   if (route := _api_route(leaf)) is not None and route.endpoint is endpoint]
        if len(mounted) != 1:
            raise TypeError(f"{endpoint.__qualname__}: mounted {len(mounted)} times, not once")
        route = mounted[0]
        for method in sorted(route.methods - {"HEAD"}):  # HEAD: the stack's, as it is today
            _checked(app, route, endpoint, method, kinds)
            table.append(LeanRoute(
                method, route.path, endpoint, request_name,
                route.path_regex if route.param_convertors else None,
                frozenset(key for key, kind in kinds.items() if kind is int),
                getattr(route, "original_route", route)))
    return table


class LeanLane:
    """ASGI: the lean table's requests answered directly, everything else by `stack`."""

    def __init__(self, app: FastAPI, stack: ASGIApp, table: Sequence[LeanRoute]) -> None:
        self.stack = stack
        self.fixed: dict[tuple[str, str], LeanRoute] = {
            (route.method, route.path): route for route in table if route.regex is None}
        self.patterned: dict[str, list[LeanRoute]] = {}
        for route in table:
            if route.regex is not None:
                self.patterned.setdefault(route.method, []).append(route)
        # As Starlette splits them: the server error handler apart, the others by class/status.
        handlers: dict[Any, ExceptionHandler] = dict(app.exception_handlers)
        self.server_error: ExceptionHandler | None = (
            handlers.pop(500, None) or handlers.pop(Exception, None))
        handlers.pop(Exception, None)
        self.by_status = {key: value for key, value in handlers.items() if isinstance(key, int)}
        self.by_class = {key: value for key, value in handlers.items()
                         if not isinstance(key, int)}
        # The application's own middleware (body limit, compression) around the endpoint.
        middleware = list(app.user_middleware)
        # Compression, when innermost, only for the answers it would change: building its
        # responder for every request cost more than the rest of the lane (Starlette 1.10).
        self.compression: GZipMiddleware | None = None
        if middleware and middleware[-1].cls is typing.cast(Any, GZipMiddleware):
            _cls, args, kwargs = middleware.pop()
            self.compression = GZipMiddleware(_send_prepared, *args, **kwargs)
        served: ASGIApp = self._serve
        for cls, args, kwargs in reversed(middleware):
            served = cls(served, *args, **kwargs)
        self.served = served

    def match(self, scope: Scope) -> tuple[LeanRoute, dict[str, Any]] | None:
        method: str = scope["method"]
        route_path = get_route_path(scope)
        fixed = self.fixed.get((method, route_path))
        if fixed is not None:
            return fixed, {}
        for route in self.patterned.get(method, ()):
            parameters = route.parameters(route_path)
            if parameters is not None:
                return route, parameters
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A request FastAPI's telemetry observes keeps the stack (its exception observer).
        found = (self.match(scope) if scope["type"] == "http"
                 and scope.get("fastapi.telemetry") is None else None)
        if found is None:
            await self.stack(scope, receive, send)
            return
        route, parameters = found
        # What routing would have put there (request.path_params, url_for).
        scope["route"], scope["endpoint"], scope["path_params"] = (
            route.route, route.endpoint, parameters)
        scope[_LEAN_ROUTE] = route
        await self.served(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        route: LeanRoute = scope[_LEAN_ROUTE]
        try:
            response = await route.endpoint(**scope["path_params"],
                                            **{route.request_name: request})
        except Exception as error:
            handler = self._handler_for(error)
            if handler is None:
                await self._server_error(request, error, send)
                raise  # as ServerErrorMiddleware does: the server logs it too
            response = await _call(handler, request, error)
        if self.compression is None or _left_alone(response, self.compression.minimum_size):
            await response(scope, receive, send)
        else:
            scope[_PREPARED] = response
            await self.compression(scope, receive, send)

    def _handler_for(self, error: Exception) -> ExceptionHandler | None:
        if isinstance(error, HTTPException):
            handler = self.by_status.get(error.status_code)
            if handler is not None:
                return handler
        for cls in type(error).__mro__:
            if cls in self.by_class:
                return self.by_class[cls]
        return None

    async def _server_error(self, request: Request, error: Exception, send: Send) -> None:
        if self.server_error is None:
            response: Response = Response("Internal Server Error", status_code=500,
                                          media_type="text/plain")
        else:
            response = await _call(self.server_error, request, error)
        await response(request.scope, request.receive, send)


def _left_alone(response: Response, minimum_size: int) -> bool:
    """Whether GZipMiddleware would pass this answer on as it is: a whole body (a plain
    `Response`'s way of sending) below its minimum size, or already encoded."""
    if type(response).__call__ is not Response.__call__:
        return False  # streamed, a file: sent its own way
    return len(response.body) < minimum_size or any(
        name == b"content-encoding" for name, _value in response.raw_headers)


async def _send_prepared(scope: Scope, receive: Receive, send: Send) -> None:
    await scope.pop(_PREPARED)(scope, receive, send)


async def _call(handler: ExceptionHandler, request: Request, error: Exception) -> Response:
    """As Starlette calls an exception handler: a coroutine awaited, a function in a thread."""
    if inspect.iscoroutinefunction(handler):
        coroutine = typing.cast(Callable[[Request, Exception], Awaitable[Response]], handler)
        return await coroutine(request, error)
    return typing.cast(Response, await run_in_threadpool(handler, request, error))


def install_lean_lane(app: FastAPI, endpoints: Sequence[LeanEndpoint]) -> list[LeanRoute]:
    """Put the lane outside the application's middleware stack (built at its first request, as
    Starlette builds it, so middleware and handlers added until then are honoured). Call it
    once every router is included; called again (a benchmark's route), it adds to the table."""
    if app.middleware_stack is not None:
        raise RuntimeError("The lean lane is installed before the application's first request")
    table = resolve(app, endpoints)
    installed: list[LeanRoute] | None = getattr(app.state, "lean_routes", None)
    if installed is not None:
        installed.extend(table)
        return installed
    build_stack = app.build_middleware_stack

    def build_with_lane() -> ASGIApp:
        return LeanLane(app, build_stack(), app.state.lean_routes)

    app.build_middleware_stack = build_with_lane  # type: ignore[method-assign]
    app.state.lean_routes = table
    return table
