"""Benchmarks (`python -m rlsel.bench.<name>`); each prints its figures and a last line `name=value`."""
