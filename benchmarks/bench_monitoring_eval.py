"""Speed of the monitoring alert pipeline, against the naive per-reading check in the same run.

Run: .venv/bin/python -m benchmarks.bench_monitoring_eval [patients] [days]

Prints, for the same simulated readings:
- the ingest path (`evaluate_on_ingest` with a 3-day recent history) per reading, and the naive
  out-of-range check per reading (the baseline), with the ratio between them;
- one scheduled evaluation (`evaluate_scheduled`) per patient-day, CGM and other plans apart
  (the call only, not the slicing of its window);
- the whole `run_evaluation` (simulation included), wall-clock and CPU time.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from datetime import timedelta

from jaejin.monitoring.alerts import evaluate_on_ingest, evaluate_scheduled, scheduled_window
from jaejin.monitoring.evaluation import naive_out_of_range, run_evaluation
from jaejin.monitoring.simulation import simulate_cohort


def _per_reading(patients: int, days: int) -> None:
    cohort = simulate_cohort(patients=patients, days=days, seed=1)
    streams = [(patient, cohort.readings_for(patient)) for patient in cohort.patients]
    count = sum(len(readings) for _patient, readings in streams)

    started = time.perf_counter()
    for patient, readings in streams:
        for item in readings:
            naive_out_of_range(item, patient.plan)
    naive_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for patient, readings in streams:
        recent: deque = deque()
        for item in readings:
            horizon = item.effective_ts - 3 * 86400
            while recent and recent[0].effective_ts < horizon:
                recent.popleft()
            evaluate_on_ingest(item, patient.plan, recent)
            recent.append(item)
    ingest_seconds = time.perf_counter() - started

    naive_us = naive_seconds / count * 1e6
    ingest_us = ingest_seconds / count * 1e6
    print(f"readings: {count}")
    print(f"naive out-of-range check (baseline): {naive_us:.2f} µs/reading")
    print(f"evaluate_on_ingest:                  {ingest_us:.2f} µs/reading "
          f"({ingest_us / naive_us:.1f}× the baseline)")

    for label, chosen in (
        ("CGM plans", [item for item in streams if item[0].uses_cgm]),
        ("other plans", [item for item in streams if not item[0].uses_cgm]),
    ):
        runs = 0
        seconds = 0.0
        for patient, readings in chosen:
            lookback = scheduled_window(patient.plan)
            for day in range(1, days + 1):
                now = patient.monitoring_start + timedelta(days=day)
                if now > patient.monitoring_end:
                    break
                window = [item for item in readings
                          if now - lookback <= item.effective_at <= now]
                started = time.perf_counter()
                evaluate_scheduled(window, patient.plan, now, patient_ref=patient.patient_ref,
                                   monitoring_since=patient.monitoring_start)
                seconds += time.perf_counter() - started
                runs += 1
        if runs:
            print(f"evaluate_scheduled, {label}: {seconds / runs * 1e3:.2f} ms per "
                  f"patient-day ({runs} runs)")


def main() -> None:
    patients = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    days = int(sys.argv[2]) if len(sys.argv) > 2 else 90
    _per_reading(min(patients, 40), min(days, 30))
    wall = time.perf_counter()
    cpu = time.process_time()
    report = run_evaluation(patients=patients, days=days, seed=0)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    print(f"run_evaluation({patients} patients, {days} days): {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU, {report.readings} readings")
    print(f"alerts per patient-week: pipeline {report.alerts_per_patient_week:.2f}, "
          f"naive {report.naive_alerts_per_patient_week:.2f} "
          f"(ratio {report.reduction_ratio:.1f}×; without CGM "
          f"{report.reduction_ratio_without_cgm or 0:.1f}×)")
    print(f"critical sensitivity: {report.critical_sensitivity}")


if __name__ == "__main__":
    main()
