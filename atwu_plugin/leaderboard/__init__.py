"""Leaderboards: spec (SPEC.yaml), resumable runner, reports, score regression checks.

Pure Python + matplotlib/rich; the cell runner that trains and evaluates is injected.
"""
