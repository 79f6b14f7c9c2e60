"""Who is asking: principals from session cookies or OAuth bearer tokens, as typed dependencies.

Routes name what they need in their signature (`CurrentPrincipal`, `requires(Role.AUDITOR)`),
so a reader sees the access rule where the route is declared.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, Engine, Table, bindparam, select
from sqlalchemy.orm import Session

from jaejin.core.accounts import (
    CARE_TEAM,
    TWO_FACTOR_REQUIRED,
    ApiClient,
    Membership,
    Role,
    User,
    WebSession,
)
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.config import Settings, get_settings
from jaejin.core.database import get_engine, read_connection, session_factory, utcnow
from jaejin.core.errors import Problem, not_found
from jaejin.core.i18n import N_, negotiate_language
from jaejin.core.security import decode_access_token, new_token, token_digest

SESSION_COOKIE = "jaejin_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FORM_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_app_settings(request: Request) -> Settings:
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    return settings


async def get_db(request: Request) -> AsyncIterator[Session]:
    """A session per request. Routes commit what they change; anything uncommitted rolls back.

    Async, so that opening and closing it cost no trips to the thread pool: creating a session
    does no I/O, nor does closing one whose work was committed; a transaction still open (a
    read-only route) is rolled back in a worker thread, never on the event loop.
    """
    session = session_factory(_engine_of(request))()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


DbSession = Annotated[Session, Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user or system client, with its roles per institution."""

    kind: str  # "user" or "client"
    subject_id: int
    label: str
    language: str
    time_zone: str
    memberships: frozenset[tuple[int, Role]]
    scopes: frozenset[str] = frozenset()
    session_id: int | None = None
    csrf_token: str | None = None
    two_factor_passed: bool = True
    needs_two_factor: bool = False
    ip_address: str | None = None
    user_agent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user_id(self) -> int | None:
        return self.subject_id if self.kind == "user" else None

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(role for _institution, role in self.memberships)

    def institutions_where(self, *roles: Role) -> set[int]:
        wanted = set(roles) if roles else set(Role)
        return {institution for institution, role in self.memberships if role in wanted}

    def has_role(self, role: Role, institution_id: int | None = None) -> bool:
        return any(
            member_role == role and (institution_id is None or institution == institution_id)
            for institution, member_role in self.memberships
        )

    def can_act_for(self, institution_id: int, *roles: Role) -> bool:
        return institution_id in self.institutions_where(*roles)

    def require_institution(self, institution_id: int, *roles: Role, resource: str) -> None:
        """Another institution's data is reported as absent, not as forbidden: no probing."""
        if not self.can_act_for(institution_id, *(roles or tuple(CARE_TEAM))):
            raise not_found(resource)

    def has_scope(self, scope: str) -> bool:
        return self.kind != "client" or scope in self.scopes

    @property
    def audit_actor(self) -> AuditActor:
        return AuditActor(self.kind, str(self.subject_id), self.label, self.ip_address,
                          self.user_agent)


def client_address(request: Request) -> str | None:
    """The caller's address; X-Forwarded-For is only believed from configured proxies.

    Each proxy appends the address it saw, so the list is read from the right: the first
    address that is not one of our proxies is the caller. Entries further left were written
    by the caller itself and prove nothing (believing them would let anyone forge the audit
    trail's "from where" and dodge the per-address sign-in throttle).
    """
    peer = request.client.host if request.client else None
    trusted = get_app_settings(request).trusted_proxies
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded or peer not in trusted:
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop[:64]
    return hops[0][:64] if hops else peer


def _principal_from_user(user: User, request: Request, web_session: WebSession | None,
                         scopes: frozenset[str] = frozenset()) -> Principal:
    """A principal from ORM objects (pages that have just signed someone in)."""
    memberships = frozenset((m.institution_id, Role(m.role)) for m in user.memberships)
    return Principal(
        kind="user",
        subject_id=user.id,
        label=user.display_name,
        language=user.language,
        time_zone=user.time_zone,
        memberships=memberships,
        scopes=scopes,
        session_id=web_session.id if web_session else None,
        csrf_token=web_session.csrf_token if web_session else None,
        two_factor_passed=web_session.two_factor_passed if web_session else True,
        needs_two_factor=user.needs_two_factor,
        ip_address=client_address(request),
        user_agent=request.headers.get("user-agent"),
    )


# One statement per caller, no ORM objects: the principal is looked up on every request.
_SESSIONS = cast(Table, WebSession.__table__)
_USERS = cast(Table, User.__table__)
_MEMBERSHIPS = cast(Table, Membership.__table__)
_CLIENTS = cast(Table, ApiClient.__table__)
#: The session, its user and the user's memberships: one row per membership (at least one).
_SESSION_LOOKUP = (
    select(_SESSIONS.c.id, _SESSIONS.c.csrf_token, _SESSIONS.c.two_factor_passed,
           _SESSIONS.c.expires_at, _USERS.c.id.label("user_id"), _USERS.c.display_name,
           _USERS.c.language, _USERS.c.time_zone, _USERS.c.active,
           _MEMBERSHIPS.c.institution_id, _MEMBERSHIPS.c.role)
    .select_from(_SESSIONS.join(_USERS, _USERS.c.id == _SESSIONS.c.user_id)
                 .outerjoin(_MEMBERSHIPS, _MEMBERSHIPS.c.user_id == _USERS.c.id))
    .where(_SESSIONS.c.token_hash == bindparam("token_hash"))
)
_CLIENT_LOOKUP = (
    select(_CLIENTS.c.id, _CLIENTS.c.name, _CLIENTS.c.institution_id)
    .where(_CLIENTS.c.client_id == bindparam("client_id"), _CLIENTS.c.active)
)


def _principal_from_session_cookie(cookie: str, request: Request,
                                   connection: Connection) -> Principal | None:
    rows = connection.execute(_SESSION_LOOKUP, {"token_hash": token_digest(cookie)}).all()
    if not rows:
        return None
    first = rows[0]
    if first.expires_at <= utcnow() or not first.active:
        return None
    memberships = frozenset((row.institution_id, Role(row.role)) for row in rows
                            if row.institution_id is not None)
    return Principal(
        kind="user",
        subject_id=first.user_id,
        label=first.display_name,
        language=first.language,
        time_zone=first.time_zone,
        memberships=memberships,
        session_id=first.id,
        csrf_token=first.csrf_token,
        two_factor_passed=first.two_factor_passed,
        needs_two_factor=any(role in TWO_FACTOR_REQUIRED for _institution, role in memberships),
        ip_address=client_address(request),
        user_agent=request.headers.get("user-agent"),
    )


class ClientTokenCache:
    """System clients' verified bearer tokens, kept a few seconds by each process.

    A hospital system or device gateway calls many times a second with one token; checking its
    signature and looking its client up on every call cost more than most of those calls, and
    the look-up needs a thread and a connection. A token is kept until its own expiry or `ttl`
    seconds, whichever comes first, so deactivating a client takes effect on every worker within
    `JAEJIN_API_CLIENT_CACHE_SECONDS` (0 turns the cache off). User sessions are never cached:
    signing out ends a session at once.
    """

    #: Differently answered requests remembered per token (see `for_request`).
    MAX_LOOKS = 16

    def __init__(self, ttl: float, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        # token -> (good until, principal, the principal as requests that look alike see it)
        self._entries: dict[str, tuple[float, Principal, dict[tuple[str | None, ...],
                                                              Principal]]] = {}

    def _fresh(self, token: str) -> tuple[float, Principal, dict[tuple[str | None, ...],
                                                                 Principal]] | None:
        entry = self._entries.get(token)
        if entry is not None and time.time() >= entry[0]:
            self._entries.pop(token, None)
            return None
        return entry

    def get(self, token: str) -> Principal | None:
        entry = self._fresh(token)
        return entry[1] if entry is not None else None

    def for_request(self, token: str, request: Request) -> Principal | None:
        """The principal as this request sees it (`_for_this_request`): the same object for
        every request with the same Accept-Language, address and User-Agent, because a copy
        of the dataclass and a language negotiation cost more than the rest of the look-up."""
        entry = self._fresh(token)
        if entry is None:
            return None
        _good_until, principal, looks = entry
        headers = request.headers
        look = (headers.get("accept-language"), client_address(request),
                headers.get("user-agent"))
        seen = looks.get(look)
        if seen is None:
            if len(looks) >= self.MAX_LOOKS:
                looks.clear()
            seen = looks[look] = _for_this_request(principal, request)
        return seen

    def keep(self, token: str, principal: Principal, expires_at: float) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            # Oldest first (dicts keep insertion order): a burst of new tokens evicts old ones.
            for stale in list(self._entries)[: self.max_entries // 4]:
                self._entries.pop(stale, None)
        self._entries[token] = (min(expires_at, time.time() + self.ttl), principal, {})

    def clear(self) -> None:
        self._entries.clear()


def client_token_cache(app: Any) -> ClientTokenCache:
    """The application's cache (one per app: tests build several apps in one process)."""
    cache: ClientTokenCache | None = getattr(app.state, "client_tokens", None)
    if cache is None:
        settings: Settings = getattr(app.state, "settings", None) or get_settings()
        cache = ClientTokenCache(settings.api_client_cache_seconds)
        app.state.client_tokens = cache
    return cache


def _for_this_request(known: Principal, request: Request) -> Principal:
    # A system has no profile to keep a language in: answer in the one it asks for.
    return replace(
        known,
        language=negotiate_language(request.headers.get("accept-language"), default="en"),
        ip_address=client_address(request),
        user_agent=request.headers.get("user-agent"),
    )


def _bearer_token(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def _known_client(request: Request) -> Principal | None:
    token = _bearer_token(request)
    if token is None:
        return None
    return client_token_cache(request.app).for_request(token, request)


def known_principal(request: Request) -> Principal | None:
    """The caller when known without the database: already resolved for this request, or a
    system client whose token was verified a moment ago (`ClientTokenCache`). None otherwise."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    known = _known_client(request)
    return _remember(request, known) if known is not None else None


def _principal_from_bearer(token: str, request: Request,
                           connection: Connection) -> Principal | None:
    cache = client_token_cache(request.app)
    known = cache.get(token)
    if known is not None:
        return _for_this_request(known, request)
    claims = decode_access_token(get_app_settings(request).secret_key, token)
    if claims is None or claims.get("kind") != "client":
        return None
    client = connection.execute(_CLIENT_LOOKUP, {"client_id": claims["sub"]}).first()
    if client is None:
        return None
    principal = _client_principal(client, claims)
    cache.keep(token, principal, float(claims.get("exp", 0)))
    return _for_this_request(principal, request)


def _client_principal(client: Any, claims: dict[str, Any]) -> Principal:
    """What a client's token says whatever the request (`_for_this_request` adds the rest)."""
    return Principal(
        kind="client",
        subject_id=client.id,
        label=f"client:{client.name}",
        language="en",
        time_zone="UTC",
        memberships=frozenset({(client.institution_id, Role.SYSTEM_CLIENT)}),
        scopes=frozenset(claims.get("scope", "").split()),
    )


def _look_up(request: Request, connection: Connection) -> Principal | None:
    token = _bearer_token(request)
    if token is not None:
        principal = _principal_from_bearer(token, request, connection)
        if principal is None:
            raise Problem(401, "INVALID_TOKEN", N_("The access token is invalid or expired."),
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    return _principal_from_session_cookie(cookie, request, connection) if cookie else None


def _remember(request: Request, principal: Principal | None) -> Principal | None:
    if principal is not None:
        request.state.principal = principal
        request.state.language = principal.language
    return principal


def resolve_principal(request: Request, db: Session | None = None) -> Principal | None:
    """The caller, or None; a bad bearer token is a 401. Cached on the request.

    With `db`, read through that session's transaction (pages that look the caller up inside
    their own work); without, through a short read of its own (`read_connection`).
    """
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    if db is not None:
        return _remember(request, _look_up(request, db.connection()))
    with read_connection(_engine_of(request)) as connection:
        return _remember(request, _look_up(request, connection))


def _engine_of(request: Request) -> Engine:
    engine: Engine = getattr(request.app.state, "engine", None) or get_engine()
    return engine


async def _check_csrf(request: Request, principal: Principal) -> None:
    if principal.session_id is None or request.method in SAFE_METHODS:
        return
    supplied = request.headers.get(CSRF_HEADER)
    if supplied is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FORM_FIELD)
            supplied = value if isinstance(value, str) else None
    if not supplied or supplied != principal.csrf_token:
        raise Problem(403, "CSRF_FAILED",
                      N_("This form has expired or did not come from Jaejin. Reload and retry."))


async def _looked_up_principal(request: Request) -> Principal | None:
    # A system client's token seen a moment ago is answered here, on the loop. Anything else is
    # looked up in the thread pool, so the database I/O never blocks the event loop (on SQLite
    # a blocked loop cannot let the lock's holder finish), on a connection of its own returned
    # to the pool at once: the request's session (`DbSession`) is not opened for it.
    known = known_principal(request)
    if known is not None:
        return known
    return await run_in_threadpool(resolve_principal, request)


async def optional_principal(
    request: Request,
    principal: Annotated[Principal | None, Depends(_looked_up_principal)],
) -> Principal | None:
    if principal is not None:
        await _check_csrf(request, principal)
    return principal


def _checked(principal: Principal | None) -> Principal:
    if principal is None:
        raise Problem(401, "UNAUTHENTICATED", N_("Please sign in."),
                      headers={"WWW-Authenticate": "Bearer"})
    if principal.needs_two_factor and not principal.two_factor_passed:
        raise Problem(401, "TWO_FACTOR_REQUIRED",
                      N_("Finish signing in with your two-factor code."))
    return principal


async def _current_principal(request: Request) -> Principal:
    # `optional_principal` and `_looked_up_principal` inlined, not declared as dependencies:
    # each level of FastAPI's dependency solving costs every authenticated request microseconds.
    principal = await _looked_up_principal(request)
    if principal is not None:
        await _check_csrf(request, principal)
    return _checked(principal)


async def require_principal(request: Request, db: Session | None = None) -> Principal:
    """The signed-in caller (CSRF and second factor checked), for code outside dependencies.

    Call it after `resolve_principal` has run off the event loop (the result is cached on the
    request); otherwise the look-up runs here, on the loop.
    """
    principal = resolve_principal(request, db)
    if principal is not None:
        await _check_csrf(request, principal)
    return _checked(principal)


CurrentPrincipal = Annotated[Principal, Depends(_current_principal)]
MaybePrincipal = Annotated[Principal | None, Depends(optional_principal)]


def requires(*roles: Role, scope: str | None = None) -> Callable[..., Any]:
    """Dependency: the principal must hold one of `roles` somewhere (and the client `scope`)."""

    async def dependency(request: Request) -> Principal:
        # The caller found by a call, not by a sub-dependency: one level of solving less.
        principal = await _current_principal(request)
        if roles and not principal.roles & set(roles):
            raise Problem(403, "FORBIDDEN", N_("Your role does not allow this."))
        if scope and not principal.has_scope(scope):
            raise Problem(403, "INSUFFICIENT_SCOPE",
                          N_("This client lacks the scope {scope}."), params={"scope": scope})
        return principal

    return dependency


def audit(db: Session, principal: Principal, event: AuditEvent) -> None:
    record(db, principal.audit_actor, event)


# ------------------------------------------------------------------ sessions for the web pages


def start_web_session(db: Session, user: User, request: Request, settings: Settings,
                      *, two_factor_passed: bool) -> tuple[str, WebSession]:
    token = new_token()
    web_session = WebSession(
        token_hash=token_digest(token),
        user_id=user.id,
        csrf_token=new_token(24),
        two_factor_passed=two_factor_passed,
        expires_at=utcnow() + timedelta(minutes=settings.session_lifetime_minutes),
        ip_address=client_address(request),
        user_agent=(request.headers.get("user-agent") or "")[:300],
    )
    db.add(web_session)
    return token, web_session
