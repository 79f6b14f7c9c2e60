"""Sign-in, two-factor, invitation acceptance, language switch: the pages every user meets first."""

from __future__ import annotations

import secrets
from datetime import date
from typing import Annotated
from urllib.parse import quote, urlencode, urlparse
from zoneinfo import available_timezones

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from jaejin.accounts import service
from jaejin.core.accounts import Role, User, WebSession
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.authn import (
    SESSION_COOKIE,
    AppSettings,
    DbSession,
    MaybePrincipal,
    Principal,
    client_address,
    resolve_principal,
    start_web_session,
)
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem, request_language
from jaejin.core.i18n import N_, SUPPORTED_LANGUAGES, normalise_language, translate
from jaejin.core.security import (
    new_token,
    new_totp_secret,
    totp_provisioning_uri,
)
from jaejin.directory.store import Institution, Patient
from jaejin.web import navigation
from jaejin.web.templating import render

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "jaejin_csrf"
COMMON_TIME_ZONES = sorted(available_timezones())

navigation.register("/", N_("Home"), N_("Your start page."), set(Role), order=0)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect would make a convincing phishing link.

    Browsers read a backslash as a slash and drop tabs and newlines, so `/\\evil.example` or
    `/<TAB>/evil.example` would become `//evil.example`: such targets are refused outright.
    """
    if (not target or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(character) < 0x20 or ord(character) == 0x7F
                                     for character in target)):
        return "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not parsed.path.startswith("/"):
        return "/"
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


def _with_next(path: str, target: str) -> str:
    return f"{path}?{urlencode({'next': _safe_next(target)}, safe='/', quote_via=quote)}"


def _anonymous_actor(request: Request) -> AuditActor:
    return AuditActor("guest", "anonymous", "anonymous", client_address(request),
                      request.headers.get("user-agent"))


def _check_anonymous_csrf(request: Request, supplied: str | None) -> None:
    """Before sign-in there is no session: a double-submit cookie protects the form instead."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not supplied or supplied != expected:
        raise Problem(403, "CSRF_FAILED",
                      N_("This form has expired or did not come from Jaejin. Reload and retry."))


def _check_session_csrf(principal: Principal, supplied: str | None) -> None:
    """Forms posted in a session carry its token; the field is optional so that a caller
    without a session hears 401 (who are you?) before 403 (where does this form come from?)."""
    if not supplied or not principal.csrf_token or not secrets.compare_digest(
            supplied.encode(), principal.csrf_token.encode()):
        raise Problem(403, "CSRF_FAILED",
                      N_("This form has expired or did not come from Jaejin. Reload and retry."))


def _with_login_csrf(request: Request, response: Response, settings: AppSettings) -> Response:
    if not request.cookies.get(LOGIN_CSRF_COOKIE):
        response.set_cookie(LOGIN_CSRF_COOKIE, request.state.login_csrf, httponly=True,
                            samesite="lax", secure=settings.secure_cookies)
    return response


def _login_csrf_value(request: Request) -> str:
    value = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token(24)
    request.state.login_csrf = value
    return value


def _page_with_problem(request: Request, template: str, principal: Principal | None,
                       problem: Problem, **context: object) -> Response:
    """The form again, with the problem as its error message, status and headers."""
    page = render(request, template, principal, status_code=problem.status,
                  error=translate(request_language(request), problem.message, **problem.params),
                  **context)
    page.headers.update(problem.headers or {})
    return page


def _set_session_cookie(response: Response, token: str, settings: AppSettings) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.secure_cookies,
                        max_age=settings.session_lifetime_minutes * 60)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, principal: MaybePrincipal) -> Response:
    if principal is None:
        return render(request, "web/landing.html")
    if principal.needs_two_factor and not principal.two_factor_passed:
        return RedirectResponse("/login/two-factor", status_code=303)
    return render(request, "web/home.html", principal)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, settings: AppSettings, next: str = "/") -> Response:
    csrf = _login_csrf_value(request)
    response = render(request, "accounts/login.html", csrf_token=csrf, next=_safe_next(next))
    return _with_login_csrf(request, response, settings)


@router.post("/login")
def login(
    request: Request, db: DbSession, settings: AppSettings,
    email: Annotated[str, Form(max_length=254)], password: Annotated[str, Form(max_length=500)],
    csrf_token: Annotated[str | None, Form()] = None, next: Annotated[str, Form()] = "/",
) -> Response:
    _check_anonymous_csrf(request, csrf_token)
    try:
        user = service.authenticate(db, settings, email, password, _anonymous_actor(request))
    except Problem as problem:
        request.state.login_csrf = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        return _page_with_problem(request, "accounts/login.html", None, problem,
                                  csrf_token=request.state.login_csrf, next=_safe_next(next),
                                  email=email)
    token, _session = start_web_session(db, user, request, settings,
                                        two_factor_passed=not user.needs_two_factor)
    record(db, AuditActor("user", str(user.id), user.display_name, client_address(request),
                          request.headers.get("user-agent")),
           AuditEvent("login", "account", str(user.id), purpose="security"))
    db.commit()
    if user.needs_two_factor:
        target = _with_next(
            "/login/two-factor" if user.totp_enabled else "/account/two-factor/setup", next)
    else:
        target = _safe_next(next)
    response = RedirectResponse(target, status_code=303)
    _set_session_cookie(response, token, settings)
    response.set_cookie("jaejin_lang", user.language, samesite="lax",
                        secure=settings.secure_cookies)
    return response


def _pending_principal(request: Request, db: DbSession) -> Principal:
    """The signed-in person, second factor passed or not; system clients have no second
    factor, so these pages are not theirs."""
    principal = resolve_principal(request, db)
    if principal is None or principal.kind != "user":
        raise Problem(401, "UNAUTHENTICATED", N_("Please sign in."))
    return principal


@router.get("/login/two-factor", response_class=HTMLResponse)
def two_factor_form(request: Request, db: DbSession, next: str = "/") -> Response:
    principal = _pending_principal(request, db)
    if principal.two_factor_passed:
        return RedirectResponse(_safe_next(next), status_code=303)
    user = db.get(User, principal.subject_id)
    if user is not None and not user.totp_enabled:
        # No authenticator yet: asking for its code would leave the user stuck here.
        return RedirectResponse(_with_next("/account/two-factor/setup", next), status_code=303)
    return render(request, "accounts/two_factor.html", principal, next=_safe_next(next))


@router.post("/login/two-factor")
def two_factor(
    request: Request, db: DbSession, settings: AppSettings,
    code: Annotated[str, Form(max_length=12)],
    csrf_token: Annotated[str | None, Form()] = None, next: Annotated[str, Form()] = "/",
) -> Response:
    principal = _pending_principal(request, db)
    _check_session_csrf(principal, csrf_token)
    user = db.get(User, principal.subject_id)
    assert user is not None
    try:
        passed = service.check_second_factor(db, settings, user, code, utcnow())
    except Problem as throttled:
        record(db, principal.audit_actor,
               AuditEvent("two_factor", "account", str(user.id), outcome="throttled",
                          purpose="security"))
        db.commit()
        return _page_with_problem(request, "accounts/two_factor.html", principal, throttled,
                                  next=_safe_next(next))
    if not passed:
        record(db, principal.audit_actor,
               AuditEvent("two_factor", "account", str(user.id), outcome="failure",
                          purpose="security"))
        db.commit()
        return render(request, "accounts/two_factor.html", principal, next=_safe_next(next),
                      status_code=401,
                      error=translate(request_language(request),
                                      N_("That code is not right. Use the newest code.")))
    web_session = db.get(WebSession, principal.session_id)
    assert web_session is not None
    web_session.two_factor_passed = True
    record(db, principal.audit_actor,
           AuditEvent("two_factor", "account", str(user.id), purpose="security"))
    db.commit()
    return RedirectResponse(_safe_next(next), status_code=303)


@router.get("/account/two-factor/setup", response_class=HTMLResponse)
def two_factor_setup_form(request: Request, db: DbSession, next: str = "/") -> Response:
    principal = _pending_principal(request, db)
    user = db.get(User, principal.subject_id)
    assert user is not None
    if user.totp_enabled and not principal.two_factor_passed:
        # Replacing a working second factor needs that factor first.
        return RedirectResponse("/login/two-factor", status_code=303)
    if not user.totp_secret or not user.totp_enabled:
        user.totp_secret = user.totp_secret or new_totp_secret()
        db.commit()
    uri = totp_provisioning_uri(user.totp_secret, user.email)
    qr_svg = segno.make(uri, error="m").svg_inline(scale=4, title="QR")
    return render(request, "accounts/two_factor_setup.html", principal, secret=user.totp_secret,
                  qr_svg=qr_svg, next=_safe_next(next))


@router.post("/account/two-factor/setup")
def two_factor_setup(
    request: Request, db: DbSession, settings: AppSettings,
    code: Annotated[str, Form(max_length=12)],
    csrf_token: Annotated[str | None, Form()] = None, next: Annotated[str, Form()] = "/",
) -> Response:
    principal = _pending_principal(request, db)
    _check_session_csrf(principal, csrf_token)
    user = db.get(User, principal.subject_id)
    assert user is not None
    if user.totp_enabled and not principal.two_factor_passed:
        raise Problem(403, "TWO_FACTOR_REQUIRED",
                      N_("Finish signing in with your two-factor code."))
    uri = totp_provisioning_uri(user.totp_secret or "", user.email)
    qr_svg = segno.make(uri, error="m").svg_inline(scale=4, title="QR")
    try:
        passed = service.check_second_factor(db, settings, user, code, utcnow())
    except Problem as throttled:
        return _page_with_problem(request, "accounts/two_factor_setup.html", principal,
                                  throttled, secret=user.totp_secret, qr_svg=qr_svg,
                                  next=_safe_next(next))
    if not passed:
        db.commit()
        return render(request, "accounts/two_factor_setup.html", principal,
                      secret=user.totp_secret, next=_safe_next(next), status_code=422,
                      qr_svg=qr_svg,
                      error=translate(request_language(request),
                                      N_("That code is not right. Check your phone's clock.")))
    user.totp_enabled = True
    web_session = db.get(WebSession, principal.session_id)
    assert web_session is not None
    web_session.two_factor_passed = True
    record(db, principal.audit_actor,
           AuditEvent("enable_two_factor", "account", str(user.id), purpose="security"))
    db.commit()
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, db: DbSession,
           csrf_token: Annotated[str | None, Form()] = None) -> Response:
    principal = resolve_principal(request, db)
    if principal is not None and principal.session_id is not None:
        _check_session_csrf(principal, csrf_token)
        web_session = db.get(WebSession, principal.session_id)
        if web_session is not None:
            db.delete(web_session)
        record(db, principal.audit_actor,
               AuditEvent("logout", "account", str(principal.subject_id), purpose="security"))
        db.commit()
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post("/language")
def switch_language(
    request: Request, db: DbSession, settings: AppSettings,
    language: Annotated[str, Form(max_length=16)], next: Annotated[str, Form()] = "/",
    csrf_token: Annotated[str | None, Form()] = None,
) -> Response:
    chosen = normalise_language(language)
    if chosen is None:
        raise Problem(422, "UNKNOWN_LANGUAGE", N_("Unknown language: {language}."),
                      params={"language": language})
    principal = resolve_principal(request, db)
    if principal is not None and principal.kind == "user":
        _check_session_csrf(principal, csrf_token)
        user = db.get(User, principal.subject_id)
        assert user is not None
        user.language = chosen
        db.commit()
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie("jaejin_lang", chosen, samesite="lax", secure=settings.secure_cookies,
                        max_age=365 * 24 * 3600)
    return response


# ---------------------------------------------------------------------------------- invitations


@router.get("/invitation", response_class=HTMLResponse)
def invitation_form(request: Request, db: DbSession, settings: AppSettings,
                    token: str | None = None) -> Response:
    csrf = _login_csrf_value(request)
    invitation = service.find_invitation_by_token(db, token) if token else None
    if token and invitation is None:
        response = render(request, "accounts/invitation.html", csrf_token=csrf, status_code=410,
                          error=translate(request_language(request), N_(
                              "This invitation link has expired or was already used. "
                              "Ask your clinic for a new one.")))
        return _with_login_csrf(request, response, settings)
    patient = db.get(Patient, invitation.patient_id) if invitation else None
    institution = db.get(Institution, invitation.institution_id) if invitation else None
    if invitation is not None and "lang" not in request.query_params:
        request.state.language = invitation.language
    response = render(
        request, "accounts/invitation.html", csrf_token=csrf, token=token or "",
        patient=patient, institution=institution, time_zones=COMMON_TIME_ZONES,
        chosen_zone=patient.time_zone if patient else "Asia/Seoul",
        supported_languages=SUPPORTED_LANGUAGES,
    )
    return _with_login_csrf(request, response, settings)


@router.post("/invitation")
def accept_invitation(
    request: Request, db: DbSession, settings: AppSettings,
    email: Annotated[str, Form(max_length=254)], password: Annotated[str, Form(max_length=500)],
    language: Annotated[str, Form(max_length=16)], time_zone: Annotated[str, Form(max_length=64)],
    csrf_token: Annotated[str | None, Form()] = None, token: Annotated[str, Form()] = "",
    institution_code: Annotated[str, Form(max_length=40)] = "",
    mrn: Annotated[str, Form(max_length=40)] = "", birth_date: Annotated[str, Form()] = "",
    code: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    _check_anonymous_csrf(request, csrf_token)
    chosen_language = normalise_language(language)
    problem_language = chosen_language or request_language(request)

    def again(message: str, status: int, **params: object) -> Response:
        request.state.login_csrf = csrf_token
        request.state.language = problem_language
        return render(request, "accounts/invitation.html", csrf_token=csrf_token, token=token,
                      time_zones=COMMON_TIME_ZONES, chosen_zone=time_zone, email=email,
                      supported_languages=SUPPORTED_LANGUAGES, status_code=status,
                      error=translate(problem_language, message, **params))

    if chosen_language is None:
        return again(N_("Choose one of the listed languages."), 422)
    if time_zone not in COMMON_TIME_ZONES:
        return again(N_("Choose a time zone from the list."), 422)
    if token:
        invitation = service.find_invitation_by_token(db, token)
    else:
        try:
            born = date.fromisoformat(birth_date)
        except ValueError:
            return again(N_("Enter your birth date as YYYY-MM-DD."), 422)
        invitation = service.find_invitation_by_code(db, institution_code.strip(), mrn.strip(),
                                                     born, code)
        db.commit()  # failed attempts count even when the code was wrong
    if invitation is None:
        return again(N_("We could not find a valid invitation with these details."), 404)
    try:
        user = service.accept_invitation(
            db, invitation, email=email, password=password, language=chosen_language,
            time_zone=time_zone, actor=_anonymous_actor(request))
    except Problem as problem:
        db.rollback()
        if problem.errors:
            first = problem.errors[0]
            return again(first.message, 422, **first.params)
        return again(problem.message, problem.status, **problem.params)
    token_value, _session = start_web_session(db, user, request, settings,
                                              two_factor_passed=True)
    db.commit()
    response = RedirectResponse("/", status_code=303)
    _set_session_cookie(response, token_value, settings)
    response.set_cookie("jaejin_lang", chosen_language, samesite="lax",
                        secure=settings.secure_cookies)
    return response

