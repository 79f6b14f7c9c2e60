"""OAuth 2.0 client credentials (RFC 6749 §4.4) for hospital systems and device gateways."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from typing import Annotated
from urllib.parse import unquote

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from jaejin.accounts import service
from jaejin.core.audit import AuditActor, AuditEvent, record
from jaejin.core.authn import AppSettings, DbSession, client_address
from jaejin.core.security import issue_access_token

router = APIRouter(tags=["oauth"])


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    # RFC 6749 §5.2 fixes this error shape for token endpoints; clients' libraries parse it.
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="jaejin"'
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers=headers)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, separator, secret = decoded.partition(":")
    if not separator:
        return None
    return unquote(client_id), unquote(secret)


@router.post("/oauth2/token", summary="Issue a short-lived bearer token to a system client")
def token(
    request: Request, db: DbSession, settings: AppSettings,
    grant_type: Annotated[str, Form()], scope: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    credentials = _basic_credentials(request)
    if credentials is None:
        return _oauth_error("invalid_client", "Use HTTP Basic client authentication.", 401)
    if grant_type != "client_credentials":
        return _oauth_error("unsupported_grant_type", "Only client_credentials is supported.")
    client = service.authenticate_client(db, *credentials)
    actor = AuditActor("client", credentials[0], credentials[0], client_address(request),
                       request.headers.get("user-agent"))
    if client is None:
        record(db, actor, AuditEvent("token", "api_client", credentials[0][:80],
                                     outcome="failure", purpose="security"))
        db.commit()
        return _oauth_error("invalid_client", "Unknown client or wrong secret.", 401)
    granted = set(client.scopes)
    if scope:
        requested = set(scope.split())
        if not requested <= granted:
            return _oauth_error("invalid_scope",
                                f"Not granted: {' '.join(sorted(requested - granted))}.")
        granted = requested
    access_token, _expires = issue_access_token(
        settings.secret_key, client.client_id,
        {"kind": "client", "inst": client.institution_id, "scope": " ".join(sorted(granted))},
        timedelta(seconds=settings.access_token_lifetime_seconds),
    )
    record(db, actor, AuditEvent("token", "api_client", client.client_id,
                                 institution_id=client.institution_id, purpose="security"))
    db.commit()
    return JSONResponse(
        {"access_token": access_token, "token_type": "Bearer",
         "expires_in": settings.access_token_lifetime_seconds, "scope": " ".join(sorted(granted))},
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
