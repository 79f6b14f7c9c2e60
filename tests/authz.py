"""Vocabulary of the authorisation matrix (tests/test_authorization_matrix.py).

Each capability declares, in `tests/<capability>/authz_cases.py`, a module-level
`CASES: list[RouteCase | WebSocketCase]` (one case per method and route of its routers) and,
if its routes need records of their own, `setup(world: World) -> None`, run once when the
matrix builds its world. See the matrix test's docstring for the rules the cases are held to.

One world serves every capability's cases in turn (core first, then alphabetically): a call
that creates records should create the least consequential kind (an in-person encounter rather
than a video one, a unique MRN), so that it does not change what later cases rely on (the
telemedicine share of institution A, a free slot).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from jaejin.accounts.service import create_user
from jaejin.core.accounts import Role, User, WebSession
from jaejin.core.authn import SESSION_COOKIE
from jaejin.core.config import Settings
from jaejin.core.database import session_factory, utcnow
from jaejin.core.security import new_token, new_totp_secret, token_digest
from tests.support import PASSWORD, Actors, Person, bearer, client_token, sign_in

#: Who calls: a role, or nobody signed in.
ANONYMOUS: Literal["anonymous"] = "anonymous"
Who = Role | Literal["anonymous"]

PEOPLE: tuple[Role, ...] = (Role.PATIENT, Role.CLINICIAN, Role.COORDINATOR, Role.INTERPRETER,
                            Role.INSTITUTION_ADMIN, Role.AUDITOR)
#: Every caller the matrix tries, in the order it tries them.
CALLERS: tuple[Who, ...] = (ANONYMOUS, *PEOPLE, Role.SYSTEM_CLIENT)
EVERYONE: frozenset[Who] = frozenset(CALLERS)
SIGNED_IN: frozenset[Who] = EVERYONE - {ANONYMOUS}
SIGNED_IN_PEOPLE: frozenset[Who] = frozenset(PEOPLE)

#: Path prefixes answered as an API (problem+json); everything else is a page.
API_PREFIXES = ("/api/", "/oauth2/", "/fhir/")
REDIRECTS = frozenset({301, 302, 303, 307, 308})


def who_name(who: Who) -> str:
    return who if isinstance(who, str) and who == ANONYMOUS else Role(who).value


# --------------------------------------------------------------------------------- the world


@dataclass
class Caller:
    """One caller of the matrix: a signed-in person (session cookie), the institution's system
    client (bearer token), or a browser with nobody signed in."""

    who: Who
    institution: str | None  # "a", "b", or None for anonymous
    client: TestClient
    person: Person | None = None
    token: str | None = None
    session_csrf: str | None = None

    @property
    def login_csrf(self) -> str | None:
        """The double-submit token the sign-in and invitation forms need."""
        return self.client.cookies.get("jaejin_csrf")

    def auth_headers(self) -> dict[str, str]:
        if self.token:
            return bearer(self.token)
        if self.session_csrf:
            return {"X-CSRF-Token": self.session_csrf}
        return {}


@dataclass
class World:
    """Institution A's and B's people and records (tests.support.Actors), the app, and what
    each capability's `setup` adds under `extra`. Targets of the cases belong to institution A;
    the matrix asks institution B's callers for them too."""

    actors: Actors
    app: FastAPI
    engine: Engine
    settings: Settings
    extra: dict[str, Any] = field(default_factory=dict)
    callers: dict[tuple[Who, str | None], Caller] = field(default_factory=dict)
    _serial: Iterator[int] = field(default_factory=itertools.count)

    def unique(self, prefix: str = "X") -> str:
        """A fresh value (MRN, licence, e-mail part...) for a call that creates something."""
        return f"{prefix}-{next(self._serial)}"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session that commits at the end of the block."""
        with session_factory(self.engine)() as db:
            yield db
            db.commit()

    def browser(self) -> TestClient:
        client = TestClient(self.app, base_url="http://testserver")
        client.get("/login")  # the double-submit CSRF cookie of the public forms
        return client

    def new_person(self, institution: str, role: Role) -> Person:
        """A person of `role` at the institution, created just now (own password, own second
        factor): for calls that would spend a shared person's session or one-time code."""
        target = self.actors.a if institution == "a" else self.actors.b
        email = f"{self.unique(role.value)}.{institution}@matrix.example"
        with self.session() as db:
            user = create_user(db, email=email, password=PASSWORD, display_name=email,
                               language="en", memberships=[(target.id, role)])
            secret = None
            if user.needs_two_factor:
                secret = new_totp_secret()
                user.totp_secret, user.totp_enabled = secret, True
        return Person(user, role, target, secret)

    def sign_in(self, who: Who, institution: str | None) -> Caller:
        """The shared caller: signed in once through the real pages (people), or with a token
        from the real token endpoint (system clients)."""
        client = self.browser()
        if who == ANONYMOUS:
            return Caller(ANONYMOUS, None, client)
        assert institution is not None
        if who == Role.SYSTEM_CLIENT:
            return Caller(who, institution, client,
                          token=client_token(client, self.actors.clients[institution]))
        person = self.actors.person(institution, Role(who))
        csrf = sign_in(client, person)  # visits /login first: the public forms' cookie is set
        return Caller(who, institution, client, person=person, session_csrf=csrf)

    def throwaway(self, who: Who, institution: str | None) -> Caller:
        """A caller nobody else uses: a new person with a fresh session (second factor
        passed), a new browser, or the system client in a new browser."""
        client = self.browser()
        if who == ANONYMOUS:
            return Caller(ANONYMOUS, None, client)
        assert institution is not None
        if who == Role.SYSTEM_CLIENT:
            shared = self.callers[(who, institution)]
            return Caller(who, institution, client, token=shared.token)
        person = self.new_person(institution, Role(who))
        cookie, csrf = self.start_session(person.user)
        client.cookies.set(SESSION_COOKIE, cookie)
        return Caller(who, institution, client, person=person, session_csrf=csrf)

    def start_session(self, user: User, *, two_factor_passed: bool = True) -> tuple[str, str]:
        """A web session as the sign-in pages would start it: (cookie value, CSRF token)."""
        cookie, csrf = new_token(), new_token(24)
        with self.session() as db:
            db.add(WebSession(token_hash=token_digest(cookie), user_id=user.id, csrf_token=csrf,
                              two_factor_passed=two_factor_passed,
                              expires_at=utcnow() + timedelta(hours=1)))
        return cookie, csrf


# --------------------------------------------------------------------------------- the cases

PathParams = Callable[[World], dict[str, Any]]
Builder = Callable[[World, Caller], Any]


@dataclass(frozen=True)
class RouteCase:
    """How to call one (method, route) and who may.

    method, path: exactly as the route is declared (`/api/v1/patients/{patient_id}`).
    allowed: the callers that may use it (`EVERYONE` for public routes). Institution A's caller
        of each allowed kind must get an answer below 400 that is no redirect to sign-in;
        everyone else 401/403 (or, on pages, a redirect to /login).
    path_params, query: values for the path template and the query string (A's records).
    json, form: the body, built per call (so it can be unique). A form gets `csrf_token` added:
        the caller's session token (form_csrf="session") or the double-submit token of the
        public forms (form_csrf="login").
    headers: extra headers; they override the caller's own (e.g. HTTP Basic for /oauth2/token).
    own_institution_check: the route names one of A's records (in the path, query or body), so
        institution B's caller of each allowed kind must get 404 (or 403) and none of `markers`.
    markers: text of A's records that must never reach a caller refused the route, nor any
        caller from institution B (lists must filter, not refuse). With public=True, no caller
        at all may see them (public pages are checked not to leak).
    throwaway_caller: the call spends or replaces the caller's session or one-time code
        (sign-in, sign-out, two-factor, accepting an invitation): it is made by a new person of
        that role (or a new browser) instead of the shared caller.
    call: a custom way to make the request (streams, uploads); gets (world, caller, case) and
        returns the response (anything with status_code, headers and text).
    """

    method: str
    path: str
    allowed: frozenset[Who]
    path_params: PathParams | None = None
    query: PathParams | None = None
    json: Builder | None = None
    form: Builder | None = None
    form_csrf: Literal["session", "login", "none"] = "session"
    headers: Builder | None = None
    own_institution_check: bool = False
    markers: Callable[[World], list[str]] | None = None
    public: bool = False
    throwaway_caller: bool = False
    call: Callable[[World, Caller, RouteCase], Any] | None = None

    def __post_init__(self) -> None:
        assert self.method == self.method.upper(), self
        assert self.allowed, f"{self.label}: nobody allowed? Declare it, or drop the route."
        assert not (self.public and self.allowed != EVERYONE), f"{self.label}: public for all"
        assert not (self.own_institution_check and ANONYMOUS in self.allowed), (
            f"{self.label}: a route open to anonymous callers cannot be scoped to institutions")

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def is_page(self) -> bool:
        return not self.path.startswith(API_PREFIXES)


@dataclass(frozen=True)
class WebSocketCase:
    """A WebSocket route: callers not allowed must be refused before the handshake completes
    (close before accept); allowed callers from A complete it; with own_institution_check,
    B's allowed callers are refused too."""

    path: str
    allowed: frozenset[Who]
    path_params: PathParams | None = None
    query: PathParams | None = None
    own_institution_check: bool = False

    method = "WEBSOCKET"

    @property
    def label(self) -> str:
        return f"WEBSOCKET {self.path}"


Case = RouteCase | WebSocketCase


# ------------------------------------------------------------------------------ the requests


def make_request(world: World, case: RouteCase, caller: Caller) -> Any:
    if case.call is not None:
        return case.call(world, caller, case)
    url = case.path.format(**(case.path_params(world) if case.path_params else {}))
    headers = caller.auth_headers() | (case.headers(world, caller) if case.headers else {})
    kwargs: dict[str, Any] = {}
    if case.json is not None:
        kwargs["json"] = case.json(world, caller)
    if case.form is not None:
        data = dict(case.form(world, caller))
        token = {"session": caller.session_csrf, "login": caller.login_csrf,
                 "none": None}[case.form_csrf]
        if token and "csrf_token" not in data:
            data["csrf_token"] = token
        kwargs["data"] = data
    return caller.client.request(case.method, url, params=case.query(world) if case.query
                                 else None, headers=headers, follow_redirects=False, **kwargs)


def _redirects_to_sign_in(response: Any) -> bool:
    location = response.headers.get("location", "")
    return response.status_code in REDIRECTS and location.startswith("/login")


def describe(response: Any) -> str:
    return f"{response.status_code} {response.headers.get('location', '')} {response.text[:300]}"


def assert_refused(case: RouteCase, response: Any) -> None:
    refused = response.status_code in (401, 403) or (
        case.is_page and _redirects_to_sign_in(response))
    assert refused, f"{case.label} should be refused: {describe(response)}"


def assert_served(case: RouteCase, response: Any) -> None:
    served = response.status_code < 400 and not _redirects_to_sign_in(response)
    assert served, f"{case.label} should be served: {describe(response)}"


def assert_reported_absent(case: RouteCase, response: Any) -> None:
    assert response.status_code in (403, 404), (
        f"{case.label}: another institution's record must be absent: {describe(response)}")


def assert_no_markers(world: World, case: RouteCase, response: Any) -> None:
    for marker in case.markers(world) if case.markers else []:
        assert marker not in response.text, f"{case.label} leaked {marker!r}"
