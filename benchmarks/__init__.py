"""Benchmarks of the real operator against the in-process emulator and simulators: ``python -m benchmarks.run``."""
