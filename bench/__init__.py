"""Benchmarks (`make bench`). Each `bench/bench_<area>.py` exposes `run(ctx) -> list[dict]`."""
