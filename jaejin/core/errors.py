"""One error shape everywhere: RFC 9457 problem details, a stable code, the caller's language.

Routes raise `Problem`; nothing else should reach the client as an error. Pages get the same
information as an HTML page, FHIR routes as an OperationOutcome (see `jaejin.fhir`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jaejin.core.i18n import N_, negotiate_language, normalise_language, translate

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(slots=True)
class FieldError:
    field: str
    code: str
    message: str  # English msgid, translated when rendered
    params: dict[str, Any] = dataclass_field(default_factory=dict)

    def rendered(self, language: str) -> dict[str, str]:
        return {
            "field": self.field,
            "code": self.code,
            "message": translate(language, self.message, **self.params),
        }


class Problem(Exception):
    """An error the client can act on. `message` is an English msgid with `{named}` params."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        params: dict[str, Any] | None = None,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.params = params or {}
        self.errors = list(errors)
        self.headers = headers
        self.extra = extra or {}

    def body(self, language: str, instance: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": f"urn:jaejin:problem:{self.code.lower()}",
            "title": self.code.replace("_", " ").capitalize(),
            "status": self.status,
            "code": self.code,
            "detail": translate(language, self.message, **self.params),
        }
        if instance:
            payload["instance"] = instance
        if self.errors:
            payload["errors"] = [error.rendered(language) for error in self.errors]
        payload.update(self.extra)
        return payload


def not_found(resource: str = "resource") -> Problem:
    return Problem(404, "NOT_FOUND", N_("No such {resource}, or you may not see it."),
                   params={"resource": resource})


def forbidden() -> Problem:
    return Problem(403, "FORBIDDEN", N_("Your role does not allow this."))


def request_language(request: Request) -> str:
    """The language to answer in: explicit ?lang, then the user's setting, cookie, browser."""
    if request.scope.get("query_string"):  # most requests have none: nothing to parse
        explicit = normalise_language(request.query_params.get("lang"))
        if explicit:
            return explicit
    chosen = getattr(request.state, "language", None)
    if chosen:
        # A person's own tag (`yue-Hant-HK`) answered in the catalogue that serves it.
        return normalise_language(str(chosen)) or "en"
    cookie = normalise_language(request.cookies.get("jaejin_lang"))
    if cookie:
        return cookie
    return negotiate_language(request.headers.get("accept-language"))


# Pydantic error types translated into plain sentences; anything else falls back to pydantic's.
_VALIDATION_MESSAGES: dict[str, str] = {
    "missing": N_("This field is required."),
    "extra_forbidden": N_("This field is not allowed here."),
    "json_invalid": N_("The body is not valid JSON."),
    "string_type": N_("Must be text."),
    "int_type": N_("Must be a whole number."),
    "int_parsing": N_("Must be a whole number."),
    "float_type": N_("Must be a number."),
    "float_parsing": N_("Must be a number."),
    "bool_type": N_("Must be true or false."),
    "bool_parsing": N_("Must be true or false."),
    "date_from_datetime_parsing": N_("Must be a date (YYYY-MM-DD)."),
    "date_parsing": N_("Must be a date (YYYY-MM-DD)."),
    "date_type": N_("Must be a date (YYYY-MM-DD)."),
    "datetime_parsing": N_("Must be a date and time with an offset (ISO 8601)."),
    "datetime_from_date_parsing": N_("Must be a date and time with an offset (ISO 8601)."),
    "datetime_type": N_("Must be a date and time with an offset (ISO 8601)."),
    "timezone_aware": N_("Must include a time-zone offset."),
    "literal_error": N_("Must be one of: {expected}."),
    "enum": N_("Must be one of: {expected}."),
    "string_too_long": N_("Too long (at most {max_length} characters)."),
    "string_too_short": N_("Too short (at least {min_length} characters)."),
    "too_long": N_("Too many items (at most {max_length})."),
    "too_short": N_("Too few items (at least {min_length})."),
    "list_type": N_("Must be a list."),
    "dict_type": N_("Must be an object."),
    "model_attributes_type": N_("Must be an object."),
    "greater_than": N_("Must be greater than {gt}."),
    "greater_than_equal": N_("Must be at least {ge}."),
    "less_than": N_("Must be less than {lt}."),
    "less_than_equal": N_("Must be at most {le}."),
    "string_pattern_mismatch": N_("Has the wrong format."),
}


def field_errors_from_pydantic(errors: Sequence[Any]) -> list[FieldError]:
    result: list[FieldError] = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
        kind = str(error.get("type", "value_error"))
        context = {key: str(value) for key, value in (error.get("ctx") or {}).items()}
        message = _VALIDATION_MESSAGES.get(kind)
        if message is None:
            # Our own validators raise ValueError with an English sentence: keep it. It may
            # quote the input ("Unknown country '{'"), so it is never filled in as a template.
            message = str(error.get("msg", "Invalid value.")).removeprefix("Value error, ")
            context = {}
        else:
            try:
                message.format(**context)
            except (KeyError, IndexError):
                context, message = {}, str(error.get("msg", "Invalid value."))
        result.append(FieldError(".".join(location) or "body", kind.upper(), message, context))
    return result


def validation_problem(errors: Sequence[Any]) -> Problem:
    return Problem(
        422, "VALIDATION_FAILED", N_("Some fields are not valid."),
        errors=field_errors_from_pydantic(errors),
    )


ProblemRenderer = Callable[[Request, Problem], Awaitable[Response] | Response]
_renderers: list[tuple[Callable[[Request], bool], ProblemRenderer]] = []


def register_problem_renderer(applies: Callable[[Request], bool], render: ProblemRenderer) -> None:
    """Let a capability answer in its own format (HTML pages, FHIR OperationOutcome)."""
    if (applies, render) not in _renderers:
        _renderers.append((applies, render))


def request_path(scope: Scope) -> str:
    """`request.url.path` without building the URL (host, query, a parse: a few microseconds on
    every refusal): the path with the characters the URL escapes escaped alike."""
    path: str = scope["path"]
    if "?" in path or "#" in path or "\\" in path:
        path = path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    return path


async def render_problem(request: Request, problem: Problem) -> Response:
    for applies, render in _renderers:
        if applies(request):
            result = render(request, problem)
            return await result if isinstance(result, Awaitable) else result
    body = problem.body(request_language(request), request_path(request.scope))
    try:
        # orjson writes what JSONResponse writes (compact, UTF-8 as is) in a fraction of the time.
        content = orjson.dumps(body)
    except TypeError:  # an integer beyond 64 bits in `extra`: the standard library takes it
        return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE,
                            headers=problem.headers)
    return Response(content, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE,
                    headers=problem.headers)


_STATUS_CODES = {
    400: ("BAD_REQUEST", N_("The request could not be understood.")),
    401: ("UNAUTHENTICATED", N_("Please sign in.")),
    403: ("FORBIDDEN", N_("Your role does not allow this.")),
    404: ("NOT_FOUND", N_("Nothing is here.")),
    405: ("METHOD_NOT_ALLOWED", N_("This method is not allowed here.")),
    413: ("BODY_TOO_LARGE", N_("The request body is too large.")),
    415: ("UNSUPPORTED_MEDIA_TYPE", N_("This content type is not supported here.")),
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, problem: Problem) -> Response:
        return await render_problem(request, problem)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> Response:
        return await render_problem(request, validation_problem(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        code, message = _STATUS_CODES.get(error.status_code, ("HTTP_ERROR", N_("Request failed.")))
        headers = dict(error.headers) if error.headers else None
        return await render_problem(request, Problem(error.status_code, code, message,
                                                     headers=headers))

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def _unstorable(request: Request, error: Exception) -> Response:
        # The database refused a value the request carried (a number beyond its column, a NUL
        # byte, text longer than its column): bad input that validation let through.
        log.warning("unstorable value on %s %s: %s", request.method, request.url.path, error)
        return await render_problem(request, Problem(
            422, "VALUE_NOT_STORABLE",
            N_("A value in the request is out of range or cannot be stored.")))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return await render_problem(
            request, Problem(500, "INTERNAL_ERROR", N_("Something went wrong on our side."))
        )


class BodySizeLimit:
    """Refuses bodies over the limit before the application reads them (413)."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 overrides: Mapping[str | re.Pattern[str], int]
                 | Iterable[tuple[str | re.Pattern[str], int]] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides: dict[str | re.Pattern[str], int] = dict(overrides or {})

    def _limit_for(self, path: str) -> int:
        """The first override whose path prefix (a string) or pattern (matching the whole
        path: routes with an id inside) fits, else the default."""
        for key, limit in self.overrides.items():
            if path.startswith(key) if isinstance(key, str) else key.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(scope, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        from starlette.requests import Request as StarletteRequest

        request = StarletteRequest(scope)
        problem = Problem(413, "BODY_TOO_LARGE", N_("The request body is too large."))
        language = negotiate_language(request.headers.get("accept-language"))
        response = JSONResponse(problem.body(language, scope.get("path")), status_code=413,
                                media_type=PROBLEM_MEDIA_TYPE)
        await response(scope, _no_receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in. An HTTPException, so that FastAPI passes it on as a
    413 instead of wrapping it in its generic 400 'error parsing the body'."""

    def __init__(self) -> None:
        super().__init__(413)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


__all__ = [
    "BodySizeLimit", "FieldError", "Problem", "forbidden", "install_error_handlers",
    "not_found", "register_problem_renderer", "request_language", "validation_problem",
]
