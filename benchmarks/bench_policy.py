"""Policy engine throughput in process, on one core.

    .venv/bin/python -m benchmarks.bench_policy [--seconds 2]

Measures, on a realistic mix of requests (follow-ups and first visits under every Korean pack,
hospitals, night and holiday hours, prescriptions with banned drugs, patients abroad, Korean and
English):

* baseline: validating the request model alone (`parse_request`), the cost every caller pays;
* decisions: `evaluate` on already-validated requests (the engine itself; goal >= 20,000/s);
* end to end: validate + evaluate + `model_dump(mode="json")`, what the API route will do.

Each figure is the best of several rounds, timed by default in process CPU time (so other work
sharing the core does not count against the engine; `--clock wall` for elapsed time), printed with
its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from jaejin.policy import default_registry, evaluate, parse_request
from jaejin.policy.korean_time import KST
from jaejin.policy.request import EvaluationRequest

GOAL_DECISIONS_PER_SECOND = 20_000

BASE: dict[str, Any] = {
    "at": "2027-03-10T10:00:00+09:00", "lang": "ko",
    "institution": {"kind": "clinic", "region": "KR-11", "telemedicine_share": 0.12},
    "patient": {"birth_date": "1960-05-05", "nationality": "KR", "nhi_covered": True,
                "residence_region": "KR-11", "current_country": "KR", "flags": []},
    "history": [{"days_before": 18, "mode": "in_person", "kind": "visit", "condition": "I10",
                 "same_institution": True}],
    "visit": {"mode": "video", "condition": "I10", "tri_party": False},
    "prescriptions": [{"ingredient": "amlodipine", "atc": "C08CA01", "days": 30}],
    "documents": [], "consent_recorded": True, "identity_verified": True,
}

# (share of the mix, changes to BASE): mostly follow-ups, as in practice, then the rest.
VARIANTS: list[tuple[int, dict[str, Any]]] = [
    (30, {}),
    (10, {"lang": "en", "at": "2026-03-11T10:00:00+09:00"}),
    (8, {"history": [], "at": "2023-09-13T19:30:00+09:00",
         "patient.birth_date": "2015-02-01"}),
    (8, {"history": [], "at": "2024-01-21T11:00:00+09:00",
         "patient.residence_district": {"province": "KR-11", "district": "강남구"}}),
    (6, {"institution.kind": "general_hospital", "patient.flags": ["rare_disease"],
         "at": "2023-10-02T10:00:00+09:00"}),
    (6, {"history": [], "patient.residence_region": "KR-41"}),
    (6, {"prescriptions": [{"ingredient": "zolpidem", "days": 7},
                           {"ingredient": "semaglutide", "days": 28, "indication": "E66"},
                           {"ingredient": "metformin", "days": 30}],
         "at": "2025-03-12T10:00:00+09:00"}),
    (6, {"visit.condition": "L20", "visit.mode": "phone", "consent_recorded": False,
         "documents": [{"kind": "diagnosis_certificate"}]}),
    (6, {"patient.current_country": "JP", "patient.residence_region": None,
         "patient.nationality": "JP", "patient.nhi_covered": False}),
    (4, {"patient.current_country": "US", "visit.tri_party": True, "lang": "en"}),
    (4, {"institution.telemedicine_share": 0.45, "at": "2025-11-05T20:00:00+09:00"}),
    (3, {"visit.mode": "in_person"}),
    (3, {"at": "2022-05-01T10:00:00+09:00"}),
]


def _apply(changes: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split(".")
        for key in parents:
            target = target[key]
        target[last] = copy.deepcopy(value)
    visit_day = datetime.fromisoformat(data["at"]).astimezone(KST).date()
    for entry in data["history"]:
        entry["date"] = (visit_day - timedelta(days=entry.pop("days_before"))).isoformat()
    return data


def realistic_mix() -> list[dict[str, Any]]:
    mix: list[dict[str, Any]] = []
    for weight, changes in VARIANTS:
        mix.extend(_apply(changes) for _ in range(weight))
    return mix


def best_rate(
    run: Callable[[], int], seconds: float, clock: Callable[[], float], rounds: int = 5
) -> float:
    """Operations per second of `clock`: the best of `rounds`, each about seconds / rounds."""
    best = 0.0
    budget = seconds / rounds
    for _ in range(rounds):
        done = 0
        start = clock()
        while True:
            done += run()
            elapsed = clock() - start
            if elapsed >= budget:
                break
        best = max(best, done / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu",
        help="cpu: process CPU time, fair on a shared machine (default); wall: elapsed time",
    )
    arguments = parser.parse_args()
    seconds = arguments.seconds
    clock = time.process_time if arguments.clock == "cpu" else time.perf_counter

    registry = default_registry()
    payloads = realistic_mix()
    requests: list[EvaluationRequest] = [parse_request(payload) for payload in payloads]
    outcomes: dict[str, int] = {}
    for request in requests:  # warm caches (holiday calendars, translators) before timing
        kind = evaluate(request, registry).decision.value
        outcomes[kind] = outcomes.get(kind, 0) + 1

    def validate_only() -> int:
        for payload in payloads:
            parse_request(payload)
        return len(payloads)

    def decide_only() -> int:
        for request in requests:
            evaluate(request, registry)
        return len(requests)

    def end_to_end() -> int:
        for payload in payloads:
            evaluate(parse_request(payload), registry).model_dump(mode="json")
        return len(payloads)

    baseline = best_rate(validate_only, seconds, clock)
    decisions = best_rate(decide_only, seconds, clock)
    full = best_rate(end_to_end, seconds, clock)

    print(f"policy engine, one core, {arguments.clock} clock, mix of {len(payloads)} requests "
          f"({', '.join(f'{count} {kind}' for kind, count in sorted(outcomes.items()))})")
    print(f"  baseline  request validation only      {baseline:>10,.0f} /s   1.00x")
    print(f"  decisions evaluate (validated input)   {decisions:>10,.0f} /s   "
          f"{decisions / baseline:.2f}x")
    print(f"  end to end validate+evaluate+dump     {full:>10,.0f} /s   {full / baseline:.2f}x")
    verdict = "meets" if decisions >= GOAL_DECISIONS_PER_SECOND else "MISSES"
    print(f"  goal {GOAL_DECISIONS_PER_SECOND:,} decisions/s: {verdict} "
          f"({decisions / GOAL_DECISIONS_PER_SECOND:.2f}x of goal)")


if __name__ == "__main__":
    main()
