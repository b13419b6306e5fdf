"""Benchmarks: long-running sweeps and measurements with their own commands (see the README)."""
