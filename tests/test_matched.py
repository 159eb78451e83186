"""Matched-forgetting comparison (spec ``matched``, trajectories, report) and parallel cells."""

import json
import math
from types import SimpleNamespace

import pytest

from atwu_plugin.evals.trajectory import EvaluatorTrajectory
from atwu_plugin.leaderboard.matched import plot_matched, render_matched_markdown, run_values_at, summarize_matched
from atwu_plugin.leaderboard.runner import expand_grid, run_leaderboard
from atwu_plugin.leaderboard.spec import SpecError, parse_spec
from test_leaderboard import fake_metrics, make_spec


def trajectory_for(cell):
    """Deterministic trajectory: x falls linearly; NPO loses generic prob twice as fast."""
    slope = {"NPO": 1.0, "GradDiff": 0.8, "ATWU": 0.2}[cell.method]
    pts = []
    for step in range(0, 11):
        x = 1.0 - 0.09 * step  # 1.0 -> 0.1
        pts.append({"step": step, "forget_specific_prob": x, "forget_generic_prob": 1.0 - slope * (1.0 - x),
                    "forget_quality": 10 ** (-10 * x)})
    return pts


def run_cell_with_trajectory(cell):  # module level: picklable for jobs > 1
    return {"metrics": fake_metrics(cell), "trajectory": trajectory_for(cell), "wall_s": 1.0,
            "bootstrap": {"span_auroc": {"n_samples": 3, "seed": 0, "values": [0.5, None]}}}


MATCHED = {"x": "forget_specific_prob", "levels": [0.5, 0.25], "points": 4,
           "metrics": ["forget_generic_prob", "forget_quality"]}


def test_matched_spec_validation_and_hash():
    spec = make_spec("/tmp/x", matched=MATCHED)
    assert spec.matched.levels == (0.5, 0.25) and spec.matched.points == 4
    plain = make_spec("/tmp/x")
    # a trajectory changes what a cell records: its hash must differ from the plain cell's
    assert {c.hash for c in expand_grid(spec)}.isdisjoint({c.hash for c in expand_grid(plain)})
    assert all(c.trajectory_points == 4 for c in expand_grid(spec))
    for bad, field in [({"levels": [1.5]}, "matched.levels"), ({"points": 1}, "matched.points"),
                       ({"x": 3}, "matched.x"), ({"typo": 1}, "unknown key 'typo'"), ("yes", "matched")]:
        with pytest.raises(SpecError) as e:
            make_spec("/tmp/x", matched=bad)
        assert field in str(e.value)


def test_values_at_level_interpolate_and_log_scale():
    run = {"trajectory": [
        {"step": 0, "x": 0.8, "y": 1.0, "forget_quality": 1e-40},
        {"step": 5, "x": 0.6, "y": 0.5, "forget_quality": 1e-20},
        {"step": 9, "x": 0.2, "y": 0.1, "forget_quality": 1e-10},
    ]}
    # 0.5 * 0.8 = 0.4: halfway between the 2nd and 3rd point
    v = run_values_at(run, "x", 0.5, ["y", "forget_quality"])
    assert v["y"] == pytest.approx(0.3)
    assert math.log10(v["forget_quality"]) == pytest.approx(-15.0)  # interpolated in log space
    # never reached (0.1 * 0.8 = 0.08 < 0.2) and no trajectory at all
    assert run_values_at(run, "x", 0.1, ["y"]) == {"y": None}
    assert run_values_at({"metrics": {}}, "x", 0.5, ["y"]) == {"y": None}


def test_matched_report_from_leaderboard_in_parallel(tmp_path):
    spec = make_spec(tmp_path / "lb", matched=MATCHED, seeds=(0, 1))
    out = run_leaderboard(spec, run_cell_with_trajectory, progress=False, jobs=2)
    assert out.exit_code == 0 and len(out.ran) == 6
    results = json.loads((tmp_path / "lb" / "results.json").read_text())
    assert results["matched"]["levels"] == [0.5, 0.25]
    assert all(len(r["trajectory"]) == 11 for r in results["runs"])
    # a run's span-AUROC replicates reach results.json (leaderboard/paired.py reads them there)
    assert all(r["bootstrap"]["span_auroc"]["values"] == [0.5, None] for r in results["runs"])
    rows = {(r["method"], r["level"]): r for r in summarize_matched(results)}
    # x reaches 0.5 exactly -> generic = 1 - slope * 0.5
    assert rows[("NPO", 0.5)]["stats"]["forget_generic_prob"][0] == pytest.approx(0.5)
    assert rows[("ATWU", 0.5)]["stats"]["forget_generic_prob"][0] == pytest.approx(0.9)
    assert rows[("ATWU", 0.25)]["n_reached"] == 2
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "Matched forgetting" in md and "**0.9000" in md  # ATWU best at level 0.5
    png = tmp_path / "lb" / "matched.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the rerun reuses every cell
    again = run_leaderboard(spec, run_cell_with_trajectory, progress=False, jobs=2)
    assert len(again.cached) == 6 and not again.ran


def test_parallel_equals_serial_and_records_failures(tmp_path):
    serial = run_leaderboard(make_spec(tmp_path / "a", matched=MATCHED), run_cell_with_trajectory,
                             progress=False, reports=False)
    par = run_leaderboard(make_spec(tmp_path / "b", matched=MATCHED), run_cell_with_trajectory,
                          progress=False, reports=False, jobs=2)
    a = json.loads((tmp_path / "a" / "results.json").read_text())["runs"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["runs"]
    assert serial.exit_code == par.exit_code == 0
    strip = lambda runs: [{k: r[k] for k in ("method", "seed", "metrics", "trajectory")} for r in runs]  # noqa: E731
    assert strip(a) == strip(b)
    with pytest.raises(ValueError, match="picklable"):
        run_leaderboard(make_spec(tmp_path / "c"), lambda c: {"metrics": {}}, progress=False, jobs=2)
    with pytest.raises(ValueError, match="jobs"):
        run_leaderboard(make_spec(tmp_path / "c"), run_cell_with_trajectory, progress=False, jobs=0)


def failing_cell(cell):
    if cell.method == "NPO":
        raise RuntimeError("boom in NPO")
    return run_cell_with_trajectory(cell)


def test_parallel_failure_is_recorded_and_others_finish(tmp_path):
    out = run_leaderboard(make_spec(tmp_path / "f", seeds=(0,)), failing_cell, progress=False, reports=False, jobs=2)
    assert out.exit_code == 1
    assert [f.key for f in out.failures] == ["synthetic/NPO/seed0"]
    assert "boom in NPO" in out.failures[0].error and "RuntimeError" in out.failures[0].traceback
    assert sorted(out.ran) == ["synthetic/ATWU/seed0", "synthetic/GradDiff/seed0"]


def test_evaluator_trajectory_schedule():
    calls = []

    class FakeEvaluator:
        def evaluate(self, model, generate=True, utility_terms=True, forget_truth_ratio=True):
            calls.append((generate, utility_terms, forget_truth_ratio))
            return {"forget_specific_prob": 0.5, "model_utility": None, "ou": {}, "details": {}, "n": 3}

    cb = EvaluatorTrajectory(FakeEvaluator(), points=4)
    state = SimpleNamespace(max_steps=10, global_step=0)
    cb.on_train_begin(None, state, None, model=object())
    for step in range(1, 11):
        state.global_step = step
        cb.on_step_end(None, state, None, model=object())
    assert [p["step"] for p in cb.trajectory] == [0, 2, 5, 8, 10]  # round(10 * i / 4)
    assert calls == [(False, False, True)] * 5  # never generates, never computes utility-only terms
    assert cb.trajectory[0] == {"step": 0, "forget_specific_prob": 0.5, "model_utility": None}
    calls.clear()
    EvaluatorTrajectory(FakeEvaluator(), points=1, forget_truth_ratio=False).on_train_begin(None, state, None, model=object())
    assert calls == [(False, False, False)]


def test_evaluator_trajectory_takes_its_last_point_from_the_host():
    """last_point_from_host: no pass at the last step; the host's full evaluation is that point."""
    calls = []

    class FakeEvaluator:
        def evaluate(self, model, generate=True, utility_terms=True, forget_truth_ratio=True):
            calls.append(generate)
            return {"forget_prob": 0.5, "ou": {}}

    cb = EvaluatorTrajectory(FakeEvaluator(), points=2, last_point_from_host=True)
    state = SimpleNamespace(max_steps=10, global_step=0)
    cb.on_train_begin(None, state, None, model=object())
    for step in range(1, 11):
        state.global_step = step
        cb.on_step_end(None, state, None, model=object())
    assert [p["step"] for p in cb.trajectory] == [0, 5] and calls == [False, False]
    cb.add_final(10, {"forget_prob": 0.25, "model_utility": 0.7, "ou": {}, "details": {}})
    cb.add_final(10, {"forget_prob": 0.0})  # once only
    assert cb.trajectory[-1] == {"step": 10, "forget_prob": 0.25, "model_utility": 0.7}
    assert len(cb.trajectory) == 3
    plain = EvaluatorTrajectory(FakeEvaluator(), points=2)
    plain.add_final(10, {"forget_prob": 0.1})  # the default measures the last step itself
    assert plain.trajectory == []


def test_plot_matched_without_trajectories_is_none(tmp_path):
    bench = {"benchmark": "b", "matched": MATCHED, "runs": [{"method": "A", "seed": 0, "metrics": {}}]}
    assert plot_matched(bench, tmp_path / "m.png") is None
    assert "not reached" in render_matched_markdown(bench)


def test_lite_cell_runner_reads_registered_benchmark_option(monkeypatch, tmp_path):
    from atwu_plugin.leaderboard import cells

    seen = {}
    monkeypatch.setattr(cells, "get_benchmark", lambda name, **opts: seen.update(name=name, opts=opts) or "BENCH")
    monkeypatch.setattr(cells, "run_lite_cell", lambda bench, *a, **kw: {"metrics": {}, "bench": bench,
                                                                           "points": kw["trajectory_points"]})
    spec = parse_spec({"name": "t", "output_dir": str(tmp_path), "seeds": [0],
                       "benchmarks": [{"name": "tofu05", "benchmark": "tofu_tiny", "forget_split": "forget05"},
                                      {"name": "embedded"}],
                       "methods": [{"name": "NPO", "trainer": "TW_NPO"}], "matched": {"points": 3}}, source="S")
    first, second = expand_grid(spec)
    assert cells.default_run_cell(first) == {"metrics": {}, "bench": "BENCH", "points": 3}
    assert seen == {"name": "tofu_tiny", "opts": {"forget_split": "forget05"}}
    cells.default_run_cell(second)
    assert seen == {"name": "embedded", "opts": {}}


def test_trajectory_skips_forget_truth_ratio_only_when_no_matched_metric_reads_it(monkeypatch, tmp_path):
    from atwu_plugin.leaderboard import cells

    base = {"name": "t", "output_dir": str(tmp_path), "seeds": [0], "benchmarks": [{"name": "embedded"}],
            "methods": [{"name": "NPO", "trainer": "TW_NPO"}]}
    with_fq = expand_grid(parse_spec({**base, "matched": {"points": 3}}, source="S"))[0]  # default metrics: forget_quality
    without = expand_grid(parse_spec({**base, "matched": {"points": 3, "metrics": ["kl_to_retain"]}}, source="S"))[0]
    assert with_fq.trajectory_forget_truth_ratio and "trajectory_forget_truth_ratio" not in with_fq.config
    assert not without.trajectory_forget_truth_ratio and without.config["trajectory_forget_truth_ratio"] is False
    assert with_fq.hash != without.hash  # the trajectories record different metrics
    seen = {}
    monkeypatch.setattr(cells, "get_benchmark", lambda name, **opts: "BENCH")
    monkeypatch.setattr(cells, "run_lite_cell", lambda bench, *a, **kw: seen.update(kw) or {})
    cells.default_run_cell(without)
    assert seen["trajectory_forget_truth_ratio"] is False


def test_method_colors_distinct_and_in_spec_order():
    from atwu_plugin.leaderboard.colors import method_colors

    for n in (3, 14, 25):
        names = [f"M{i}" for i in range(n)]
        bench = {"runs": [{"method": m, "seed": s} for m in names for s in (0, 1)]}
        colors = method_colors(bench)
        assert list(colors) == names
        assert len({tuple(c) for c in colors.values()}) == n  # no two methods share a colour
