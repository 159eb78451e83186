"""Matched forgetting across targets: fraction of a metric kept, per target and averaged."""

import pytest

from atwu_plugin.leaderboard.matched_across import fraction_kept, render_fraction_kept_markdown


def run(method, seed, keep_slope, start=0.2, reaches=True):
    """x falls 1.0 -> 0.6 (or only to 0.9); y = start * (1 - keep_slope * (1 - x))."""
    xs = [1.0, 0.8, 0.6] if reaches else [1.0, 0.95, 0.9]
    return {"method": method, "seed": seed,
            "trajectory": [{"step": i, "x": x, "y": start * (1 - keep_slope * (1 - x))} for i, x in enumerate(xs)]}


def bench(name, runs):
    return {"benchmark": name, "matched": {"x": "x", "levels": [0.75], "metrics": ["y"]}, "runs": runs}


def test_fraction_kept_is_relative_to_each_runs_start_and_averages_seeds():
    a = bench("t1", [run("A", 0, 1.0, start=0.2), run("A", 1, 0.0, start=0.2), run("B", 0, 2.0, reaches=False)])
    b = bench("t2", [run("A", 0, 1.0, start=0.05), run("B", 0, 2.0, start=0.05)])
    methods, table = fraction_kept([a, b], "y", 0.75)
    assert methods == ["A", "B"]
    # at x = 0.75: slope 1 keeps 0.75, slope 0 keeps 1.0 (seed mean 0.875); the start cancels
    assert table["A"] == {"t1": pytest.approx(0.875), "t2": pytest.approx(0.75)}
    assert table["B"] == {"t1": None, "t2": pytest.approx(0.5)}
    md = render_fraction_kept_markdown([a, b], "y", [0.75])
    row_a = next(line for line in md.splitlines() if line.startswith("| A |"))
    row_b = next(line for line in md.splitlines() if line.startswith("| B |"))
    assert "0.875 | 0.750 | **0.812 [0.750, 0.875]** | 2/2" in row_a
    # B reached one target only: its (lower) mean is shown but never bold, and counted 1/2
    assert "not reached | 0.500 | 0.500 [0.500, 0.500] | 1/2" in row_b


def test_end_of_run_fraction_needs_no_crossing():
    b = bench("t", [run("A", 0, 2.0, reaches=False), run("Start", 0, 0.0)])
    b["runs"][1]["trajectory"] = b["runs"][1]["trajectory"][:1]  # one point: no run to speak of
    methods, table = fraction_kept([b], "y", None)
    # x ends at 0.9: y = 0.2 * (1 - 2 * 0.1) = 0.16 of 0.2
    assert table == {"A": {"t": pytest.approx(0.8)}, "Start": {"t": None}}
    md = render_fraction_kept_markdown([b], "y", [None])
    assert "at the end of the run" in md and "**" not in md.split("\n", 1)[1]  # no best at unequal forgetting


def test_needs_the_matched_section():
    with pytest.raises(ValueError, match="benchmark 't' has no 'matched' section"):
        fraction_kept([{"benchmark": "t", "runs": []}], "y", 0.5)
