"""Benchmarks: `python -m benchmarks.bench_<capability>`."""
