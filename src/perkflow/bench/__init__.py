"""Benchmarks behind `perkflow bench ...`: each prints one JSON line as its last line."""
