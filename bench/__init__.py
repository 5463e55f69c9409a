"""Benchmarks: `python -m bench [name ...]` prints figures; targets are printed, never asserted."""
