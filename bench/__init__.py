"""Benchmarks: `make bench` (python -m bench) and each module on its own."""
