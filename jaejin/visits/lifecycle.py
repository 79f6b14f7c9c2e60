"""The life of one video visit, as a transition table with the checks that guard the way in.

A visit is judged by the rules in force at the visit's own time, and those rules can change
between booking and the day of the visit (a new pack, a share cap reached), so the policy engine
is consulted again at check-in and when the call starts. Its decision arrives here as a value:
this module never computes policy, it only refuses to move a visit the decision does not allow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from jaejin.core.i18n import N_, translate


class VisitState(StrEnum):
    SCHEDULED = "scheduled"
    CHECKED_IN = "checked_in"
    WAITING_ROOM = "waiting_room"
    IN_CALL = "in_call"
    WRAP_UP = "wrap_up"
    CLOSED = "closed"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"


class VisitEvent(StrEnum):
    CHECK_IN = "check_in"
    ENTER_WAITING_ROOM = "enter_waiting_room"
    START_CALL = "start_call"
    #: The call dropped or was paused; the participants are back in the waiting room and the
    #: clinician's time stops counting until `START_CALL` resumes it.
    INTERRUPT_CALL = "interrupt_call"
    END_CALL = "end_call"
    CLOSE = "close"
    MARK_NO_SHOW = "mark_no_show"
    CANCEL = "cancel"


class IdentityVerificationMethod(StrEnum):
    """How the clinician confirmed on video that the patient is who they say they are."""

    ID_DOCUMENT_ON_VIDEO = "id_document_on_video"
    FACE_MATCHES_PHOTO_ON_FILE = "face_matches_photo_on_file"


_S, _E = VisitState, VisitEvent

#: Every allowed move. A (state, event) pair that is not here is refused.
TRANSITIONS: Mapping[tuple[VisitState, VisitEvent], VisitState] = {
    (_S.SCHEDULED, _E.CHECK_IN): _S.CHECKED_IN,
    (_S.SCHEDULED, _E.CANCEL): _S.CANCELLED,
    (_S.SCHEDULED, _E.MARK_NO_SHOW): _S.NO_SHOW,
    (_S.CHECKED_IN, _E.ENTER_WAITING_ROOM): _S.WAITING_ROOM,
    (_S.CHECKED_IN, _E.CANCEL): _S.CANCELLED,
    (_S.CHECKED_IN, _E.MARK_NO_SHOW): _S.NO_SHOW,
    (_S.WAITING_ROOM, _E.START_CALL): _S.IN_CALL,
    (_S.WAITING_ROOM, _E.CANCEL): _S.CANCELLED,
    (_S.WAITING_ROOM, _E.MARK_NO_SHOW): _S.NO_SHOW,
    (_S.IN_CALL, _E.INTERRUPT_CALL): _S.WAITING_ROOM,
    (_S.IN_CALL, _E.END_CALL): _S.WRAP_UP,
    (_S.WRAP_UP, _E.CLOSE): _S.CLOSED,
}

TERMINAL_STATES: frozenset[VisitState] = frozenset(
    {VisitState.CLOSED, VisitState.NO_SHOW, VisitState.CANCELLED}
)

#: The policy engine's decision kinds (`jaejin.policy.vocabulary.DecisionKind`).
ALLOWED_DECISION = "allowed"
CONDITIONAL_DECISION = "conditional"


class PolicyDecisionLike(Protocol):
    """What the lifecycle needs from a policy evaluation made for the visit's own time."""

    @property
    def decision(self) -> str: ...

    @property
    def reasons(self) -> Sequence[object]: ...


@dataclass(frozen=True, slots=True)
class TransitionContext:
    """Facts the caller gathered just before asking for a transition.

    `policy` is the policy engine's decision evaluated for the visit's scheduled time; it is
    required for check-in and start, and a missing one is treated as a refusal (fail closed).
    A `conditional` decision lets the visit go ahead only once the caller says its conditions
    are met; consent, identity and the local physician are checked here in any case.
    """

    policy: PolicyDecisionLike | None = None
    #: For a `conditional` decision: the caller has met every condition the decision listed.
    policy_conditions_met: bool = False
    consent_recorded: bool = False
    identity_verified_by: IdentityVerificationMethod | None = None
    local_physician_required: bool = False
    local_physician_connected: bool = False


class VisitErrorCode(StrEnum):
    INVALID_TRANSITION = "INVALID_TRANSITION"
    POLICY_DENIED_AT_START = "POLICY_DENIED_AT_START"
    LOCAL_PHYSICIAN_REQUIRED = "LOCAL_PHYSICIAN_REQUIRED"
    CONSENT_REQUIRED = "CONSENT_REQUIRED"
    IDENTITY_NOT_VERIFIED = "IDENTITY_NOT_VERIFIED"


_MESSAGES: Mapping[VisitErrorCode, str] = {
    VisitErrorCode.INVALID_TRANSITION: N_("A visit that is {state} cannot {event}."),
    VisitErrorCode.POLICY_DENIED_AT_START: N_(
        "The telemedicine rules in force for this visit's time no longer allow it."
    ),
    VisitErrorCode.LOCAL_PHYSICIAN_REQUIRED: N_(
        "This visit needs the patient's local physician connected before it can start."
    ),
    VisitErrorCode.CONSENT_REQUIRED: N_(
        "The patient's consent to telemedicine must be recorded before the call starts."
    ),
    VisitErrorCode.IDENTITY_NOT_VERIFIED: N_(
        "The patient's identity must be verified on video before the call starts."
    ),
}


class VisitTransitionError(Exception):
    """A refused move. `code` is stable for programs; `message` is an English msgid."""

    def __init__(
        self,
        code: VisitErrorCode,
        state: VisitState,
        event: VisitEvent,
        reasons: Sequence[str] = (),
    ) -> None:
        self.code = code
        self.state = state
        self.event = event
        self.reasons: tuple[str, ...] = tuple(reasons)
        super().__init__(str(self))

    @property
    def message(self) -> str:
        return _MESSAGES[self.code]

    def translated(self, language: str) -> str:
        return translate(language, self.message, state=self.state.value, event=self.event.value)

    def __str__(self) -> str:
        text = f"{self.code}: " + self.message.format(
            state=self.state.value, event=self.event.value
        )
        if self.reasons:
            text += " (" + "; ".join(self.reasons) + ")"
        return text


def allowed_events(state: VisitState) -> frozenset[VisitEvent]:
    return frozenset(event for (origin, event) in TRANSITIONS if origin == state)


def is_terminal(state: VisitState) -> bool:
    return state in TERMINAL_STATES


_EMPTY_CONTEXT = TransitionContext()


def transition(
    visit_state: VisitState, event: VisitEvent, context: TransitionContext = _EMPTY_CONTEXT
) -> VisitState:
    """The state after `event`, or `VisitTransitionError` saying why the visit cannot move."""
    target = TRANSITIONS.get((visit_state, event))
    if target is None:
        raise VisitTransitionError(VisitErrorCode.INVALID_TRANSITION, visit_state, event)
    if event in (VisitEvent.CHECK_IN, VisitEvent.START_CALL):
        _require_policy_allows(visit_state, event, context)
    if event is VisitEvent.START_CALL:
        _require_ready_to_start(visit_state, event, context)
    return target


def _require_policy_allows(
    state: VisitState, event: VisitEvent, context: TransitionContext
) -> None:
    policy = context.policy
    if policy is None:
        raise VisitTransitionError(
            VisitErrorCode.POLICY_DENIED_AT_START,
            state,
            event,
            ("no policy decision was evaluated for this visit",),
        )
    kind = str(policy.decision).lower()
    if kind == ALLOWED_DECISION:
        return
    if kind == CONDITIONAL_DECISION and context.policy_conditions_met:
        return
    reasons = list(policy.reasons)
    denying = [reason for reason in reasons if str(getattr(reason, "effect", "")) == "deny"]
    described = [_describe(reason) for reason in (denying or reasons)]
    if kind == CONDITIONAL_DECISION:
        described.insert(0, "the decision's conditions are not met yet")
    raise VisitTransitionError(VisitErrorCode.POLICY_DENIED_AT_START, state, event, described)


def _describe(reason: object) -> str:
    """`CODE: message` for the policy engine's reasons, or the text of anything else."""
    message = getattr(reason, "message", None)
    code = getattr(reason, "code", None)
    if isinstance(message, str) and message:
        return f"{code}: {message}" if code is not None else message
    return str(reason)


def _require_ready_to_start(
    state: VisitState, event: VisitEvent, context: TransitionContext
) -> None:
    if not context.consent_recorded:
        raise VisitTransitionError(VisitErrorCode.CONSENT_REQUIRED, state, event)
    if context.identity_verified_by is None:
        raise VisitTransitionError(VisitErrorCode.IDENTITY_NOT_VERIFIED, state, event)
    if context.local_physician_required and not context.local_physician_connected:
        raise VisitTransitionError(VisitErrorCode.LOCAL_PHYSICIAN_REQUIRED, state, event)


def prescribing_open(state: VisitState, *, call_started: bool, note_signed: bool) -> bool:
    """Whether the clinician may still write or withdraw prescriptions on the visit's note.

    From the moment the call has started (in the call, or back in the waiting room after a
    pause) through the wrap-up, until the note is signed: a prescription is part of the note,
    and a signed note is final. Never before the patient has been seen, nor once the visit is
    over (closed, missed, cancelled).
    """
    if note_signed:
        return False
    if state in (VisitState.IN_CALL, VisitState.WRAP_UP):
        return True
    return state is VisitState.WAITING_ROOM and call_started


# --------------------------------------------------------------------------- clinician time


@dataclass(frozen=True, slots=True)
class CallInterval:
    """One stretch of the call. `ended_at` is None while the call is still going."""

    started_at: datetime
    ended_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_aware(self.started_at, "started_at")
        if self.ended_at is not None:
            _require_aware(self.ended_at, "ended_at")
            if self.ended_at < self.started_at:
                raise ValueError(
                    f"call interval ends ({self.ended_at.isoformat()}) before it starts "
                    f"({self.started_at.isoformat()})"
                )


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")


def call_duration(intervals: Iterable[CallInterval], now: datetime | None = None) -> timedelta:
    """Time spent in the call: the union of the intervals, so overlaps are counted once.

    An open interval (still in the call) runs until `now`, which must then be given.
    """
    closed: list[tuple[datetime, datetime]] = []
    for interval in intervals:
        end = interval.ended_at
        if end is None:
            if now is None:
                raise ValueError("an interval is still open: pass `now` to measure it")
            _require_aware(now, "now")
            end = max(now, interval.started_at)
        closed.append((interval.started_at, end))
    closed.sort()
    total = timedelta(0)
    current_start: datetime | None = None
    current_end: datetime | None = None
    for start, end in closed:
        if current_start is None or current_end is None or start > current_end:
            if current_start is not None and current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        elif end > current_end:
            current_end = end
    if current_start is not None and current_end is not None:
        total += current_end - current_start
    return total


def clinician_minutes(intervals: Iterable[CallInterval], now: datetime | None = None) -> int:
    """Whole minutes of clinician time, a started minute counting as a minute."""
    seconds = call_duration(intervals, now).total_seconds()
    return math.ceil(seconds / 60) if seconds > 0 else 0
