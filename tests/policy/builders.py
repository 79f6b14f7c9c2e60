"""Request builders for the policy tests: a neutral baseline plus readable overrides."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta
from typing import Any

from jaejin.policy.korean_time import KST

# A Wednesday morning under kr-msa-2026: a 50-year-old insured Seoul resident, seen in person at
# this Seoul clinic ten days ago for the same condition, on video, consent and identity done.
BASE: dict[str, Any] = {
    "at": "2027-03-10T10:00:00+09:00",
    "lang": "en",
    "institution": {"kind": "clinic", "region": "KR-11", "telemedicine_share": 0.1},
    "patient": {
        "birth_date": "1977-01-01", "nationality": "KR", "nhi_covered": True,
        "residence_region": "KR-11", "current_country": "KR", "flags": [],
    },
    "history": [{"days_before": 10, "condition": "J30"}],
    "visit": {"mode": "video", "condition": "J30", "tri_party": False},
    "prescriptions": [],
    "documents": [],
    "consent_recorded": True,
    "identity_verified": True,
}

EXAMPLE: dict[str, Any] = {
    "at": "2027-01-15T19:30:00+09:00", "lang": "en",
    "institution": {"kind": "clinic", "region": "KR-11", "telemedicine_share": 0.12},
    "patient": {"birth_date": "1950-03-02", "nationality": "KR", "nhi_covered": True,
                "residence_region": "KR-11", "current_country": "KR",
                "flags": ["long_term_care", "island_remote"]},
    "history": [{"date": "2026-12-01", "mode": "in_person", "kind": "visit",
                 "condition": "I10", "same_institution": True}],
    "visit": {"mode": "video", "condition": "I10", "tri_party": False},
    "prescriptions": [{"ingredient": "amlodipine", "atc": "C08CA01", "days": 30}],
    "documents": [], "consent_recorded": True, "identity_verified": True,
}


def seen(days_before: int, condition: str | None = "J30", *, mode: str = "in_person",
         kind: str = "visit", same_institution: bool = True) -> dict[str, Any]:
    """A history entry `days_before` the visit's Korean calendar day."""
    entry: dict[str, Any] = {"days_before": days_before, "mode": mode, "kind": kind,
                             "same_institution": same_institution}
    if condition is not None:
        entry["condition"] = condition
    return entry


def drug(ingredient: str, days: int = 7, **extra: Any) -> dict[str, Any]:
    return {"ingredient": ingredient, "days": days, **extra}


def build(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """BASE with dotted-path overrides; `age` sets the birth date; relative history resolved."""
    data = copy.deepcopy(BASE)
    age: int | None = None
    for dotted, value in (overrides or {}).items():
        if dotted == "age":
            age = value
            continue
        target = data
        *parents, last = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = copy.deepcopy(value)
    try:
        moment = datetime.fromisoformat(data["at"])
    except ValueError:
        moment = datetime.fromisoformat(BASE["at"])  # the request tests an unparseable `at`
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=KST)  # the request tests a naive `at`
    visit_day = moment.astimezone(KST).date()
    if age is not None:
        data["patient"]["birth_date"] = years_before(visit_day, age).isoformat()
    for entry in data["history"]:
        if "days_before" in entry:
            entry["date"] = (visit_day - timedelta(days=entry.pop("days_before"))).isoformat()
            entry.setdefault("mode", "in_person")
            entry.setdefault("kind", "visit")
            entry.setdefault("same_institution", True)
    return data


def years_before(day: date, years: int) -> date:
    """A birth date making the patient `years` old on `day`: 1 January of that year."""
    return date(day.year - years, 1, 1)
