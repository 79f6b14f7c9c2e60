"""A visit moves only along the table, and cannot start unless the rules allow it on its own day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.policy.decision import Decision as PolicyDecision
from jaejin.policy.decision import Reason
from jaejin.policy.vocabulary import Code, DecisionKind, Effect
from jaejin.visits.lifecycle import (
    TERMINAL_STATES,
    TRANSITIONS,
    CallInterval,
    IdentityVerificationMethod,
    TransitionContext,
    VisitErrorCode,
    VisitEvent,
    VisitState,
    VisitTransitionError,
    allowed_events,
    call_duration,
    clinician_minutes,
    is_terminal,
    transition,
)


@dataclass(frozen=True)
class Decision:
    decision: str
    reasons: tuple[str, ...] = ()


ALLOWED = Decision("allowed", ("kr-pilot-2025-10: follow-up at a clinic",))
DENIED = Decision("denied", ("kr-pilot-2025-10: institution over the 30 % share cap",))
READY = TransitionContext(
    policy=ALLOWED,
    consent_recorded=True,
    identity_verified_by=IdentityVerificationMethod.FACE_MATCHES_PHOTO_ON_FILE,
)


def test_a_visit_goes_from_scheduled_to_closed_through_the_call() -> None:
    state = VisitState.SCHEDULED
    state = transition(state, VisitEvent.CHECK_IN, READY)
    assert state is VisitState.CHECKED_IN
    state = transition(state, VisitEvent.ENTER_WAITING_ROOM)
    state = transition(state, VisitEvent.START_CALL, READY)
    assert state is VisitState.IN_CALL
    state = transition(state, VisitEvent.INTERRUPT_CALL)
    assert state is VisitState.WAITING_ROOM
    state = transition(state, VisitEvent.START_CALL, READY)
    state = transition(state, VisitEvent.END_CALL)
    assert state is VisitState.WRAP_UP
    assert transition(state, VisitEvent.CLOSE) is VisitState.CLOSED


@pytest.mark.parametrize(
    "state", [VisitState.SCHEDULED, VisitState.CHECKED_IN, VisitState.WAITING_ROOM]
)
def test_a_visit_not_yet_in_call_can_be_cancelled_or_marked_no_show(state: VisitState) -> None:
    assert transition(state, VisitEvent.CANCEL) is VisitState.CANCELLED
    assert transition(state, VisitEvent.MARK_NO_SHOW) is VisitState.NO_SHOW


@settings(max_examples=200, deadline=None)
@given(state=st.sampled_from(VisitState), event=st.sampled_from(VisitEvent))
def test_every_move_outside_the_table_is_refused_as_an_invalid_transition(
    state: VisitState, event: VisitEvent
) -> None:
    if (state, event) in TRANSITIONS:
        assert transition(state, event, READY) is TRANSITIONS[(state, event)]
        return
    with pytest.raises(VisitTransitionError) as refused:
        transition(state, event, READY)
    assert refused.value.code is VisitErrorCode.INVALID_TRANSITION


def test_closed_no_show_and_cancelled_visits_can_never_move_again() -> None:
    assert {VisitState.CLOSED, VisitState.NO_SHOW, VisitState.CANCELLED} == TERMINAL_STATES
    for state in TERMINAL_STATES:
        assert is_terminal(state) and allowed_events(state) == frozenset()
    assert allowed_events(VisitState.IN_CALL) == {VisitEvent.INTERRUPT_CALL, VisitEvent.END_CALL}


@pytest.mark.parametrize(
    ("state", "event"),
    [(VisitState.SCHEDULED, VisitEvent.CHECK_IN), (VisitState.WAITING_ROOM, VisitEvent.START_CALL)],
)
def test_a_visit_the_rules_no_longer_allow_cannot_check_in_or_start(
    state: VisitState, event: VisitEvent
) -> None:
    context = TransitionContext(
        policy=DENIED, consent_recorded=True,
        identity_verified_by=IdentityVerificationMethod.ID_DOCUMENT_ON_VIDEO,
    )
    with pytest.raises(VisitTransitionError) as refused:
        transition(state, event, context)
    assert refused.value.code is VisitErrorCode.POLICY_DENIED_AT_START
    assert refused.value.reasons == DENIED.reasons
    assert "share cap" in str(refused.value)


def test_a_conditional_decision_starts_only_once_its_conditions_are_met() -> None:
    conditional = Decision("conditional", ("video is mandatory for a wound check",))
    pending = TransitionContext(
        policy=conditional, consent_recorded=True,
        identity_verified_by=IdentityVerificationMethod.ID_DOCUMENT_ON_VIDEO,
    )
    with pytest.raises(VisitTransitionError) as refused:
        transition(VisitState.WAITING_ROOM, VisitEvent.START_CALL, pending)
    assert refused.value.code is VisitErrorCode.POLICY_DENIED_AT_START
    assert "conditions are not met" in refused.value.reasons[0]
    met = TransitionContext(
        policy=conditional, policy_conditions_met=True, consent_recorded=True,
        identity_verified_by=IdentityVerificationMethod.ID_DOCUMENT_ON_VIDEO,
    )
    assert transition(VisitState.WAITING_ROOM, VisitEvent.START_CALL, met) is VisitState.IN_CALL


def test_the_policy_engines_own_decision_is_accepted_and_its_denial_reasons_quoted() -> None:
    denied = PolicyDecision(
        decision=DecisionKind.DENIED, pack="kr-pilot-2025-10", country_pack=None,
        decided_on=date(2026, 3, 2), lang="en",
        reasons=[
            Reason(Code.IN_PERSON_NOT_RESTRICTED, Effect.INFO, "Medical Service Act", False,
                   "In-person care is always possible."),
            Reason(Code.INSTITUTION_KIND_NOT_ALLOWED, Effect.DENY, "kr-pilot-2025-10", False,
                   "Hospitals may not see this patient by telemedicine."),
        ],
        conditions=[], prescriptions=[], documents=[], alternatives=[],
    )
    with pytest.raises(VisitTransitionError) as refused:
        transition(VisitState.SCHEDULED, VisitEvent.CHECK_IN, TransitionContext(policy=denied))
    assert refused.value.reasons == (
        "INSTITUTION_KIND_NOT_ALLOWED: Hospitals may not see this patient by telemedicine.",
    )
    allowed = denied.model_copy(update={"decision": DecisionKind.ALLOWED})
    assert transition(
        VisitState.SCHEDULED, VisitEvent.CHECK_IN, TransitionContext(policy=allowed)
    ) is VisitState.CHECKED_IN


def test_without_a_policy_decision_the_visit_does_not_start() -> None:
    with pytest.raises(VisitTransitionError) as refused:
        transition(VisitState.SCHEDULED, VisitEvent.CHECK_IN, TransitionContext())
    assert refused.value.code is VisitErrorCode.POLICY_DENIED_AT_START


def test_the_call_needs_recorded_consent_then_verified_identity() -> None:
    no_consent = TransitionContext(policy=ALLOWED)
    with pytest.raises(VisitTransitionError) as refused:
        transition(VisitState.WAITING_ROOM, VisitEvent.START_CALL, no_consent)
    assert refused.value.code is VisitErrorCode.CONSENT_REQUIRED

    no_identity = TransitionContext(policy=ALLOWED, consent_recorded=True)
    with pytest.raises(VisitTransitionError) as refused:
        transition(VisitState.WAITING_ROOM, VisitEvent.START_CALL, no_identity)
    assert refused.value.code is VisitErrorCode.IDENTITY_NOT_VERIFIED


def test_a_tri_party_visit_cannot_start_until_the_local_physician_is_connected() -> None:
    waiting = TransitionContext(
        policy=ALLOWED, consent_recorded=True,
        identity_verified_by=IdentityVerificationMethod.ID_DOCUMENT_ON_VIDEO,
        local_physician_required=True, local_physician_connected=False,
    )
    with pytest.raises(VisitTransitionError) as refused:
        transition(VisitState.WAITING_ROOM, VisitEvent.START_CALL, waiting)
    assert refused.value.code is VisitErrorCode.LOCAL_PHYSICIAN_REQUIRED

    connected = TransitionContext(
        policy=ALLOWED, consent_recorded=True,
        identity_verified_by=IdentityVerificationMethod.ID_DOCUMENT_ON_VIDEO,
        local_physician_required=True, local_physician_connected=True,
    )
    assert transition(VisitState.WAITING_ROOM, VisitEvent.START_CALL, connected) is (
        VisitState.IN_CALL
    )


def test_refusals_are_worded_in_korean_and_english() -> None:
    error = VisitTransitionError(
        VisitErrorCode.LOCAL_PHYSICIAN_REQUIRED, VisitState.WAITING_ROOM, VisitEvent.START_CALL
    )
    assert error.translated("en").startswith("This visit needs the patient's local physician")
    assert "현지" in error.translated("ko")


T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_an_interrupted_and_resumed_call_counts_only_the_time_in_call() -> None:
    intervals = [
        CallInterval(T0, T0 + timedelta(minutes=7, seconds=30)),
        CallInterval(T0 + timedelta(minutes=10), T0 + timedelta(minutes=15)),
    ]
    assert call_duration(intervals) == timedelta(minutes=12, seconds=30)
    assert clinician_minutes(intervals) == 13


def test_a_call_still_running_is_measured_up_to_now_in_any_time_zone() -> None:
    seoul = timezone(timedelta(hours=9))
    started = datetime(2026, 3, 2, 18, 0, tzinfo=seoul)
    now = datetime(2026, 3, 2, 9, 4, tzinfo=UTC)
    assert clinician_minutes([CallInterval(started)], now=now) == 4
    with pytest.raises(ValueError, match="still open"):
        clinician_minutes([CallInterval(started)])


def test_naive_or_backwards_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CallInterval(datetime(2026, 3, 2, 9, 0))  # noqa: DTZ001
    with pytest.raises(ValueError, match="before it starts"):
        CallInterval(T0, T0 - timedelta(seconds=1))
    assert clinician_minutes([]) == 0


interval_strategy = st.tuples(
    st.integers(min_value=0, max_value=3 * 3600), st.integers(min_value=0, max_value=3600)
).map(lambda pair: CallInterval(
    T0 + timedelta(seconds=pair[0]), T0 + timedelta(seconds=pair[0] + pair[1])
))


@settings(max_examples=200, deadline=None)
@given(intervals=st.lists(interval_strategy, max_size=8), data=st.data())
def test_clinician_time_is_the_union_of_the_intervals(intervals, data) -> None:
    covered: set[int] = set()
    for interval in intervals:
        assert interval.ended_at is not None
        start = int((interval.started_at - T0).total_seconds())
        end = int((interval.ended_at - T0).total_seconds())
        covered.update(range(start, end))
    assert call_duration(intervals) == timedelta(seconds=len(covered))
    shuffled = data.draw(st.permutations(intervals))
    assert call_duration(shuffled + intervals[:1]) == call_duration(intervals)
    minutes = clinician_minutes(intervals)
    assert (minutes - 1) * 60 < len(covered) <= minutes * 60 or minutes == len(covered) == 0
