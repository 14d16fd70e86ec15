"""Benchmarks (docs/ARCHITECTURE.md §8): `python -m backend bench convergence|sensitivity|report|step`.

suite.py names the prompts, convergence.py runs schedules x seeds x prompts, metrics.py turns the
runs into the reported numbers, plots.py and report.py draw and tabulate them; step.py times one
training step against its floor.
"""
