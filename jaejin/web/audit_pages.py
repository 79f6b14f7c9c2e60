"""The auditors' view of the audit trail: search who touched which record, when and why."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import func, select

from jaejin.core.accounts import Role
from jaejin.core.audit import AuditEntry, AuditEvent, altered_entries, record_many, seal
from jaejin.core.authn import DbSession, Principal, requires
from jaejin.core.errors import validation_problem
from jaejin.core.i18n import N_
from jaejin.directory.model import MAX_RECORD_ID
from jaejin.web import navigation
from jaejin.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50

Auditor = Annotated[Principal, Depends(requires(Role.AUDITOR, Role.INSTITUTION_ADMIN))]
navigation.register("/audit", N_("Audit log"),
                    N_("Search every access to patient data: who, what, when, from where, why."),
                    {Role.AUDITOR, Role.INSTITUTION_ADMIN}, order=80)


class AuditFilters(BaseModel):
    """The search form's fields. The form sends every field, empty ones as "": those mean
    'any', not an invalid value."""

    patient_id: Annotated[int | None, Field(ge=1, le=MAX_RECORD_ID)] = None
    actor: Annotated[str, Field(max_length=80)] = ""
    action: Annotated[str, Field(max_length=40)] = ""
    start: date | None = None
    end: date | None = None
    page: Annotated[int, Field(ge=1, le=10_000)] = 1

    @field_validator("patient_id", "start", "end", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


def _filters(request: Request) -> AuditFilters:
    fields = {name: request.query_params[name] for name in AuditFilters.model_fields
              if name in request.query_params}
    if not fields.get("page", "x").strip():
        del fields["page"]
    try:
        return AuditFilters.model_validate(fields)
    except ValidationError as error:
        raise validation_problem(
            [{**detail, "loc": ("query", *detail["loc"])} for detail in error.errors()]
        ) from None


@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, principal: Auditor, db: DbSession,
              filters: Annotated[AuditFilters, Depends(_filters)]) -> Response:
    patient_id, actor, action = filters.patient_id, filters.actor, filters.action
    start, end, page = filters.start, filters.end, filters.page
    scope = principal.institutions_where(Role.AUDITOR, Role.INSTITUTION_ADMIN)
    # What is waiting is sealed first (in this transaction, committed before the page is
    # shown), so the entries listed are tamper-evident and can be checked.
    seal(db)
    query = select(AuditEntry).where(AuditEntry.institution_id.in_(scope))
    if patient_id:
        query = query.where(AuditEntry.patient_id == patient_id)
    if actor:
        query = query.where((AuditEntry.actor_id == actor)
                            | AuditEntry.actor_label.ilike(f"%{actor}%"))
    if action:
        query = query.where(AuditEntry.action == action)
    if start:
        query = query.where(AuditEntry.occurred_at >= datetime.combine(start, time(), UTC))
    if end:
        query = query.where(
            AuditEntry.occurred_at < datetime.combine(end + timedelta(days=1), time(), UTC))
    total = db.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    # Newest first (chain and sequence say where each is in its chain).
    entries = list(db.execute(query.order_by(AuditEntry.occurred_at.desc(), AuditEntry.id.desc())
                              .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).scalars())
    # The entries shown are checked against their seals (the whole trail: `jaejin audit verify`).
    altered = altered_entries(db, entries)
    # Recorded under each institution searched, so its other auditors see who looked (one
    # INSERT for all of them).
    record_many(db, principal.audit_actor, [
        AuditEvent("search", "audit_log", None, patient_id=patient_id,
                   institution_id=institution_id, purpose="audit", detail={"results": total})
        for institution_id in sorted(scope)])
    db.commit()
    return render(request, "audit/log.html", principal, entries=entries, total=total, page=page,
                  altered=altered,
                  pages=max(1, -(-total // PAGE_SIZE)), patient_id=patient_id or "", actor=actor,
                  action=action, start=start or "", end=end or "")
