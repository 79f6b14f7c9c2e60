"""The engine's answer: `Decision.model_dump(mode="json")` is the API response body.

The items of a decision are plain frozen dataclasses, cheap to build thousands of times a second;
the Decision around them is a pydantic model, so it serialises, validates a stored decision back
(`Decision.model_validate`) and documents itself (`Decision.model_json_schema()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pydantic import BaseModel, ConfigDict

from jaejin.policy.vocabulary import Code, DecisionKind, DocumentKind, Effect


@dataclass(frozen=True, slots=True)
class Reason:
    """Why: one rule that applied, the source it comes from, and its effect on the decision."""

    code: Code
    effect: Effect
    source: str
    provisional: bool
    message: str


@dataclass(frozen=True, slots=True)
class Condition:
    """What must still be done (or changed) for the visit to go ahead."""

    code: Code
    source: str
    provisional: bool
    message: str


@dataclass(frozen=True, slots=True)
class PrescriptionVerdict:
    ingredient: str
    atc: str | None
    allowed: bool
    code: Code
    message: str
    group: str | None = None
    max_days: int | None = None


@dataclass(frozen=True, slots=True)
class DocumentVerdict:
    kind: DocumentKind
    allowed: bool
    code: Code
    message: str


@dataclass(frozen=True, slots=True)
class Alternative:
    """What the patient can have instead when telemedicine is denied or restricted."""

    code: Code
    message: str


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

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
