"""Prescribing in a video visit: each prescription judged by the telemedicine rules first.

A prescription goes on the visit's note only if the rules in force on the visit's day allow it
(`jaejin.policy.records.decide_for_visit`, asked for the visit's patient, institution, condition
and scheduled time, with the prescriptions already on the note and the proposed one). A refused
one is answered 422 POLICY_DENIED (`policy_denied_problem`: each reason's code, its rule's
source and a message in the clinician's language) and nothing is stored but the refusal's audit
entry. An allowed one is stored with the code that allowed it and the pack in force, so an
auditor can replay it (`VisitPrescription`).

Only the visit's own clinician prescribes, while the visit is a telemedicine one (its
appointment still by video) and the note is open (`lifecycle.prescribing_open`). Every read,
check, addition and withdrawal is audited as health data, refusals included; the caller commits
(`service.committed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from jaejin.core.accounts import CARE_TEAM
from jaejin.core.database import utcnow
from jaejin.core.errors import Problem, not_found
from jaejin.core.i18n import N_
from jaejin.policy.decision import Decision, PrescriptionVerdict
from jaejin.policy.korean_time import KST
from jaejin.policy.records import policy_denied_problem
from jaejin.policy.vocabulary import DecisionKind
from jaejin.visits import store
from jaejin.visits.lifecycle import prescribing_open
from jaejin.visits.service import (
    Actor,
    Refusal,
    VisitContext,
    _audit,
    _require_role,
    decision_for,
)
from jaejin.visits.signalling import ParticipantRole
from jaejin.visits.store import VisitPrescription

RESOURCE = "visit_prescription"
#: What a visit's note may hold: far more than any real prescription, few enough that judging
#: the whole note again for each new item stays cheap.
MAX_PRESCRIPTIONS_PER_VISIT = 30


@dataclass(frozen=True, slots=True)
class PrescriptionInput:
    """One proposed prescription, as the clinician wrote it (validated at the edge)."""

    ingredient: str
    days_supply: int
    atc: str | None = None
    strength: str = ""
    frequency: str = ""
    quantity: int | None = None
    instructions: str = ""
    controlled: bool = False
    indication: str | None = None

    def policy_item(self) -> dict[str, Any]:
        """The item of the policy request (`jaejin.policy.request.Prescription`)."""
        return _policy_item(self.ingredient, self.days_supply, self.atc, self.controlled,
                            self.indication)


def _policy_item(ingredient: str, days: int, atc: str | None, controlled: bool,
                 indication: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"ingredient": ingredient, "days": days, "controlled": controlled}
    if atc:
        item["atc"] = atc
    if indication:
        item["indication"] = indication
    return item


def stored_item(row: VisitPrescription) -> dict[str, Any]:
    """A stored prescription as the policy request item it was judged as (for replay)."""
    return _policy_item(row.ingredient, row.days_supply, row.atc, row.controlled,
                        row.indication)


@dataclass(frozen=True, slots=True)
class Judgement:
    """The rules' answer for one proposed prescription on this visit."""

    decision: Decision
    verdict: PrescriptionVerdict

    @property
    def allowed(self) -> bool:
        # A visit the rules deny allows no prescription, whatever the item's own verdict.
        return self.verdict.allowed and self.decision.decision is not DecisionKind.DENIED

    def refusal(self) -> Problem:
        """422 POLICY_DENIED with the item's reason (code, source, message) and the visit's."""
        return policy_denied_problem(self.decision, [self.verdict])

    def reasons(self) -> list[dict[str, str]]:
        """The refusal's reasons (empty when allowed), as the API and the page show them."""
        if self.allowed:
            return []
        reasons: list[dict[str, str]] = self.refusal().extra["reasons"]
        return reasons


# --------------------------------------------------------------------------- who, when


def _require_prescriber(db: Session, context: VisitContext, actor: Actor, action: str) -> None:
    """The visit's clinician, on a telemedicine visit whose note is still open."""
    _require_role(db, context, actor, action, ParticipantRole.CLINICIAN)
    if context.appointment.mode != "video":
        _audit(db, actor.audit_actor, context, action,
               {"refused": "NOT_A_TELEMEDICINE_VISIT", "mode": context.appointment.mode},
               outcome="refused", resource_type=RESOURCE)
        raise Refusal(Problem(409, "NOT_A_TELEMEDICINE_VISIT",
                              N_("This visit is no longer a telemedicine visit: prescribe "
                                 "in person, outside the telemedicine rules.")))
    note = store.note_of(db, context.visit.id)
    if not prescribing_open(context.state,
                            call_started=context.visit.first_call_started_at is not None,
                            note_signed=note is not None and note.signed_at is not None):
        _audit(db, actor.audit_actor, context, action,
               {"refused": "PRESCRIBING_NOT_OPEN", "state": context.state.value},
               outcome="refused", resource_type=RESOURCE)
        raise Refusal(Problem(409, "PRESCRIBING_NOT_OPEN",
                              N_("Prescriptions are written once the call has started, until "
                                 "the note is signed."),
                              extra={"state": context.state.value}))


def _judge(db: Session, context: VisitContext, actor: Actor, action: str,
           item: PrescriptionInput) -> Judgement:
    """The rules for the visit's time, asked with the note's prescriptions and `item` last."""
    existing = store.prescriptions_of(db, context.visit.id)
    if len(existing) >= MAX_PRESCRIPTIONS_PER_VISIT:
        _audit(db, actor.audit_actor, context, action, {"refused": "TOO_MANY_PRESCRIPTIONS"},
               outcome="refused", resource_type=RESOURCE)
        raise Refusal(Problem(409, "TOO_MANY_PRESCRIPTIONS",
                              N_("A visit note holds at most {limit} prescriptions."),
                              params={"limit": MAX_PRESCRIPTIONS_PER_VISIT}))
    items = [stored_item(row) for row in existing] + [item.policy_item()]
    try:
        decision = decision_for(db, context, actor.language, prescriptions=items)
    except Problem as problem:
        _audit(db, actor.audit_actor, context, action, {"refused": problem.code},
               outcome="refused", resource_type=RESOURCE)
        raise Refusal(problem) from None
    # The engine answers the items in the order asked: the proposed one is the last.
    return Judgement(decision, decision.prescriptions[len(existing)])


def _detail(item: PrescriptionInput, judgement: Judgement) -> dict[str, Any]:
    return {"ingredient": item.ingredient, "atc": item.atc, "days_supply": item.days_supply,
            "code": str(judgement.verdict.code), "pack": judgement.decision.pack,
            "decided_on": judgement.decision.decided_on.isoformat()}


# --------------------------------------------------------------------------- actions


def check_prescription(db: Session, context: VisitContext, actor: Actor,
                       item: PrescriptionInput) -> Judgement:
    """What the rules would say, stored nowhere: the page's "allowed / not allowed, and why"."""
    _require_prescriber(db, context, actor, "read")
    judgement = _judge(db, context, actor, "read", item)
    _audit(db, actor.audit_actor, context, "read",
           {"dry_run": True, "allowed": judgement.allowed, **_detail(item, judgement)},
           resource_type=RESOURCE)
    return judgement


def add_prescription(db: Session, context: VisitContext, actor: Actor,
                     item: PrescriptionInput, now: datetime | None = None,
                     ) -> tuple[VisitPrescription, Judgement]:
    """Put `item` on the note if the rules allow it; else a Refusal (422 POLICY_DENIED)."""
    now = now or utcnow()
    _require_prescriber(db, context, actor, "create")
    judgement = _judge(db, context, actor, "create", item)
    if not judgement.allowed:
        _audit(db, actor.audit_actor, context, "create",
               {"refused": "POLICY_DENIED", **_detail(item, judgement)},
               outcome="refused", resource_type=RESOURCE)
        raise Refusal(judgement.refusal())
    row = VisitPrescription(
        visit_id=context.visit.id, institution_id=context.institution.id,
        patient_id=context.patient.id, ingredient=item.ingredient, atc=item.atc,
        strength=item.strength, frequency=item.frequency, days_supply=item.days_supply,
        quantity=item.quantity, instructions=item.instructions, controlled=item.controlled,
        indication=item.indication, policy_code=str(judgement.verdict.code),
        policy_pack=judgement.decision.pack, policy_day=judgement.decision.decided_on,
        created_by_user_id=actor.user_id, created_at=now,
    )
    db.add(row)
    db.flush()
    _audit(db, actor.audit_actor, context, "create", _detail(item, judgement),
           resource_type=RESOURCE, resource_id=str(row.id))
    return row, judgement


def remove_prescription(db: Session, context: VisitContext, actor: Actor, prescription_id: int,
                        now: datetime | None = None) -> VisitPrescription:
    """Withdraw a prescription from the open note (the row stays, marked removed)."""
    now = now or utcnow()
    _require_prescriber(db, context, actor, "delete")
    row = db.get(VisitPrescription, prescription_id)
    if row is None or row.visit_id != context.visit.id or row.removed_at is not None:
        raise not_found("prescription")
    row.removed_at = now
    row.removed_by_user_id = actor.user_id
    _audit(db, actor.audit_actor, context, "delete",
           {"ingredient": row.ingredient, "days_supply": row.days_supply},
           resource_type=RESOURCE, resource_id=str(row.id))
    return row


def list_prescriptions(db: Session, context: VisitContext, actor: Actor,
                       ) -> list[VisitPrescription]:
    """The note's prescriptions, for its clinician and the institution's care team."""
    _require_role(db, context, actor, "read", ParticipantRole.CLINICIAN, staff=tuple(CARE_TEAM))
    rows = store.prescriptions_of(db, context.visit.id)
    _audit(db, actor.audit_actor, context, "read", {"prescriptions": len(rows)},
           resource_type=RESOURCE)
    return rows


def visit_day(context: VisitContext) -> date:
    """The Korean calendar day whose rules judge the visit's prescriptions."""
    return context.appointment.start_at.astimezone(KST).date()


def is_open(db: Session, context: VisitContext) -> bool:
    """Whether prescriptions can be written on this visit now (for showing the form)."""
    note = store.note_of(db, context.visit.id)
    return context.appointment.mode == "video" and prescribing_open(
        context.state, call_started=context.visit.first_call_started_at is not None,
        note_signed=note is not None and note.signed_at is not None)
