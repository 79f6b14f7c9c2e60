"""The engine's answer: `Decision.model_dump(mode="json")` is the API response body."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict

from jaejin.policy.vocabulary import Code, DecisionKind, DocumentKind, Effect

_OUT = ConfigDict(frozen=True)


class Reason(BaseModel):
    """Why: one rule that applied, the source it comes from, and its effect on the decision."""

    model_config = _OUT

    code: Code
    effect: Effect
    source: str
    provisional: bool
    message: str


class Condition(BaseModel):
    """What must still be done (or changed) for the visit to go ahead."""

    model_config = _OUT

    code: Code
    source: str
    provisional: bool
    message: str


class PrescriptionVerdict(BaseModel):
    model_config = _OUT

    ingredient: str
    atc: str | None
    allowed: bool
    code: Code
    message: str
    group: str | None = None
    max_days: int | None = None


class DocumentVerdict(BaseModel):
    model_config = _OUT

    kind: DocumentKind
    allowed: bool
    code: Code
    message: str


class Alternative(BaseModel):
    """What the patient can have instead when telemedicine is denied or restricted."""

    model_config = _OUT

    code: Code
    message: str


class Decision(BaseModel):
    model_config = _OUT

    decision: DecisionKind
    pack: str | None
    country_pack: str | None
    decided_on: date
    lang: str
    reasons: list[Reason]
    conditions: list[Condition]
    prescriptions: list[PrescriptionVerdict]
    documents: list[DocumentVerdict]
    alternatives: list[Alternative]
