"""Benchmarks of execstore against the driver calls it makes.

See docs/performance.md for what is measured, the targets and the results.
"""
