"""Properties that hold for every request the engine can be given."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jaejin.policy import Decision, default_registry, evaluate, parse_request
from jaejin.policy.korean_time import KST
from jaejin.policy.vocabulary import (
    DocumentKind,
    HistoryKind,
    InstitutionKind,
    PatientFlag,
    VisitMode,
)

REGISTRY = default_registry()
REGIONS = ["KR-11", "KR-26", "KR-41", "KR-47", "KR-49"]
COUNTRIES = ["KR", "KR", "KR", "JP", "US", "FR", "BR", "TH"]
CONDITIONS = ["I10", "E11", "E66", "J30", "L20", "K29", "Z48", "S61", "E10.9", "F32"]
NARCOTICS = ["morphine", "oxycodone", "fentanyl", "zolpidem", "alprazolam", "propofol",
             "phentermine", "모르핀", "졸피뎀"]
ORDINARY = ["amlodipine", "metformin", "cetirizine", "amoxicillin", "semaglutide", "sildenafil",
            "levonorgestrel", "orlistat", "furosemide"]
OFFSETS = [timezone(timedelta(hours=hours)) for hours in (-10, -5, 0, 1, 5.5, 9, 14)]
SHARES = [None, 0.0, 0.12, 0.3, 0.31, 0.95, 1.0]
FIRST_SECOND = int(datetime(2015, 1, 1, tzinfo=UTC).timestamp())
LAST_SECOND = int(datetime(2028, 12, 31, tzinfo=UTC).timestamp())
SETTINGS = settings(max_examples=200, deadline=None)


@st.composite
def requests(draw: st.DrawFn, modes: list[str] | None = None,
             extra_drugs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    instant = datetime.fromtimestamp(draw(st.integers(FIRST_SECOND, LAST_SECOND)), UTC)
    moment = instant.astimezone(draw(st.sampled_from(OFFSETS)))
    visit_day = moment.astimezone(KST).date()
    age = draw(st.integers(min_value=0, max_value=100))
    birth = date(visit_day.year - age, 1, 1)
    lives_in_korea = draw(st.booleans())
    oldest = min(800, (visit_day - birth).days)
    history = [
        {
            "date": (visit_day - timedelta(days=draw(st.integers(0, oldest)))).isoformat(),
            "mode": draw(st.sampled_from([mode.value for mode in VisitMode])),
            "kind": draw(st.sampled_from([kind.value for kind in HistoryKind])),
            "condition": draw(st.sampled_from([*CONDITIONS, None])),
            "same_institution": draw(st.booleans()),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    prescriptions = [
        {"ingredient": draw(st.sampled_from(ORDINARY)), "days": draw(st.integers(1, 90))}
        for _ in range(draw(st.integers(0, 2)))
    ] + (extra_drugs or [])
    return {
        "at": moment.isoformat(),
        "lang": draw(st.sampled_from(["ko", "en"])),
        "institution": {
            "kind": draw(st.sampled_from([kind.value for kind in InstitutionKind])),
            "region": draw(st.sampled_from(REGIONS)),
            "telemedicine_share": draw(st.sampled_from(SHARES)),
        },
        "patient": {
            "birth_date": birth.isoformat(),
            "nationality": draw(st.sampled_from(["KR", "JP", "US"])),
            "nhi_covered": draw(st.booleans()),
            "residence_region": draw(st.sampled_from(REGIONS)) if lives_in_korea else None,
            "current_country": draw(st.sampled_from(COUNTRIES)),
            "flags": draw(st.lists(st.sampled_from([flag.value for flag in PatientFlag]),
                                   max_size=3, unique=True)),
        },
        "history": history,
        "visit": {
            "mode": draw(st.sampled_from(modes or [mode.value for mode in VisitMode])),
            "condition": draw(st.sampled_from(CONDITIONS)),
            "tri_party": draw(st.booleans()),
        },
        "prescriptions": prescriptions,
        "documents": [{"kind": kind} for kind in draw(st.lists(
            st.sampled_from([kind.value for kind in DocumentKind]), max_size=2, unique=True))],
        "consent_recorded": draw(st.booleans()),
        "identity_verified": draw(st.booleans()),
    }


def _decide(data: dict[str, Any]) -> dict[str, Any]:
    return evaluate(parse_request(data), REGISTRY).model_dump(mode="json")


@SETTINGS
@given(requests())
def test_the_same_request_always_gets_the_same_decision(data: dict[str, Any]) -> None:
    assert _decide(data) == _decide(data)


@SETTINGS
@given(requests())
def test_a_denial_always_has_a_reason_and_only_a_denying_reason_denies(
    data: dict[str, Any],
) -> None:
    decision = _decide(data)
    denying = [reason for reason in decision["reasons"] if reason["effect"] == "deny"]
    assert (decision["decision"] == "denied") == bool(denying)
    if decision["decision"] == "denied":
        assert decision["alternatives"], "a denial always offers something instead"
    if decision["decision"] == "conditional":
        assert decision["conditions"]
    for reason in decision["reasons"] + decision["conditions"]:
        assert reason["source"] and reason["message"]
        assert "{" not in reason["message"], "every placeholder is filled"


@SETTINGS
@given(
    requests(modes=["video", "phone"]),
    st.sampled_from(NARCOTICS),
    st.booleans(),
)
def test_narcotics_are_never_allowed_by_telemedicine(
    data: dict[str, Any], narcotic: str, by_classification_flag: bool,
) -> None:
    item: dict[str, Any] = (
        {"ingredient": "unlisted controlled product", "days": 3, "controlled": True}
        if by_classification_flag else {"ingredient": narcotic, "days": 3}
    )
    data["prescriptions"].append(item)
    verdict = _decide(data)["prescriptions"][-1]
    assert verdict["allowed"] is False
    assert verdict["code"] in {"PRESCRIPTION_PROHIBITED", "NO_POLICY_IN_FORCE"}


@SETTINGS
@given(requests(modes=["in_person"], extra_drugs=[{"ingredient": "morphine", "days": 30}]))
def test_in_person_care_is_never_restricted(data: dict[str, Any]) -> None:
    decision = _decide(data)
    assert decision["decision"] == "allowed"
    assert all(item["allowed"] for item in decision["prescriptions"])
    assert all(document["allowed"] for document in decision["documents"])


@SETTINGS
@given(requests(), st.sampled_from(OFFSETS))
def test_the_decision_depends_on_the_instant_not_on_the_offset_it_is_written_in(
    data: dict[str, Any], other_offset: timezone,
) -> None:
    moved = dict(data)
    moved["at"] = datetime.fromisoformat(data["at"]).astimezone(other_offset).isoformat()
    assert _decide(moved) == _decide(data)


@settings(max_examples=50, deadline=None)
@given(requests())
def test_a_stored_decision_reads_back_unchanged(data: dict[str, Any]) -> None:
    decision = evaluate(parse_request(data), REGISTRY)
    stored = decision.model_dump(mode="json")
    assert Decision.model_validate(stored).model_dump(mode="json") == stored


@SETTINGS
@given(requests(modes=["video", "phone"]),
       st.lists(st.fixed_dictionaries({"ingredient": st.sampled_from(ORDINARY + NARCOTICS),
                                       "days": st.integers(1, 120)}), min_size=1, max_size=4))
def test_a_prescriptions_verdict_is_the_same_alone_or_after_the_notes_others(
    data: dict[str, Any], note: list[dict[str, Any]],
) -> None:
    # Prescribing in a visit asks the note's items with the proposed one last and takes the last
    # verdict: that is the item's own verdict, whatever else the note holds.
    *earlier, proposed = note
    alone = dict(data, prescriptions=[proposed])
    together = dict(data, prescriptions=[*earlier, proposed])
    verdicts = _decide(together)["prescriptions"]
    assert len(verdicts) == len(note)
    assert verdicts[-1] == _decide(alone)["prescriptions"][0]
