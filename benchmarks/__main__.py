"""`python -m benchmarks` (or `make bench`): every benchmark in turn, each printing its figures
beside a baseline measured in the same run. Run one alone with `python -m benchmarks.bench_<name>`.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    "benchmarks.bench_policy",
    "benchmarks.bench_audit",
    "benchmarks.bench_policy_http",
    "benchmarks.bench_scheduling",
    "benchmarks.bench_signalling",
    "benchmarks.bench_visit_join",
    "benchmarks.bench_monitoring_eval",
    "benchmarks.bench_monitoring_ingest",
)


def main() -> int:
    failures = 0
    for module in BENCHMARKS:
        print(f"\n=== {module}", flush=True)
        failures += subprocess.run([sys.executable, "-m", module], check=False).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
