"""Benchmarks: `make bench` (benchmarks/harness.py) and the single-purpose scripts beside it."""
