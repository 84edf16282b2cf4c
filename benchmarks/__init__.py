"""Benchmarks of FractalMIDI, outside the library package: `python -m benchmarks.bench` (speed against
an autoregressive baseline, `benchmarks/baseline.py`). Run from the repository root."""
