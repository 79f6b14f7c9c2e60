"""Who is asking: principals from session cookies or OAuth bearer tokens, as typed dependencies.

Routes name what they need in their signature (`CurrentPrincipal`, `requires(Role.AUDITOR)`),
so a reader sees the access rule where the route is declared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from jaejin.core.accounts import CARE_TEAM, ApiClient, Role, User, WebSession
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.config import Settings, get_settings
from jaejin.core.database import get_engine, session_factory, utcnow
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


def get_db(request: Request) -> Iterator[Session]:
    """A session per request. Routes commit what they change; anything uncommitted rolls back."""
    engine = getattr(request.app.state, "engine", None) or get_engine()
    session = session_factory(engine)()
    try:
        yield session
    finally:
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
    return Principal(
        kind="user",
        subject_id=user.id,
        label=user.display_name,
        language=user.language,
        time_zone=user.time_zone,
        memberships=frozenset((m.institution_id, Role(m.role)) for m in user.memberships),
        scopes=scopes,
        session_id=web_session.id if web_session else None,
        csrf_token=web_session.csrf_token if web_session else None,
        two_factor_passed=web_session.two_factor_passed if web_session else True,
        needs_two_factor=user.needs_two_factor,
        ip_address=client_address(request),
        user_agent=request.headers.get("user-agent"),
    )


def _principal_from_bearer(token: str, request: Request, db: Session) -> Principal | None:
    claims = decode_access_token(get_app_settings(request).secret_key, token)
    if claims is None:
        return None
    if claims.get("kind") == "client":
        client = db.execute(
            select(ApiClient).where(ApiClient.client_id == claims["sub"], ApiClient.active)
        ).scalar_one_or_none()
        if client is None:
            return None
        return Principal(
            kind="client",
            subject_id=client.id,
            label=f"client:{client.name}",
            # A system has no profile to keep a language in: answer in the one it asks for.
            language=negotiate_language(request.headers.get("accept-language"), default="en"),
            time_zone="UTC",
            memberships=frozenset({(client.institution_id, Role.SYSTEM_CLIENT)}),
            scopes=frozenset(claims.get("scope", "").split()),
            ip_address=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    return None


def resolve_principal(request: Request, db: Session) -> Principal | None:
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    principal: Principal | None = None
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        principal = _principal_from_bearer(authorization[7:].strip(), request, db)
        if principal is None:
            raise Problem(401, "INVALID_TOKEN", N_("The access token is invalid or expired."),
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            web_session = db.execute(
                select(WebSession).where(WebSession.token_hash == token_digest(cookie))
            ).scalar_one_or_none()
            if web_session and web_session.expires_at > utcnow():
                user = db.get(User, web_session.user_id)
                if user and user.active:
                    principal = _principal_from_user(user, request, web_session)
    if principal is not None:
        request.state.principal = principal
        request.state.language = principal.language
    return principal


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


async def optional_principal(request: Request, db: DbSession) -> Principal | None:
    principal = resolve_principal(request, db)
    # End the read transaction now: on SQLite every transaction holds the write lock, and an
    # async route must not keep it while it awaits something else.
    db.commit()
    if principal is not None:
        await _check_csrf(request, principal)
    return principal


async def require_principal(request: Request, db: DbSession) -> Principal:
    principal = await optional_principal(request, db)
    if principal is None:
        raise Problem(401, "UNAUTHENTICATED", N_("Please sign in."),
                      headers={"WWW-Authenticate": "Bearer"})
    if principal.needs_two_factor and not principal.two_factor_passed:
        raise Problem(401, "TWO_FACTOR_REQUIRED",
                      N_("Finish signing in with your two-factor code."))
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
MaybePrincipal = Annotated[Principal | None, Depends(optional_principal)]


def requires(*roles: Role, scope: str | None = None) -> Callable[..., Any]:
    """Dependency: the principal must hold one of `roles` somewhere (and the client `scope`)."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
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
