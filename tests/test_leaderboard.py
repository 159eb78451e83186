"""Leaderboard framework: spec validation, grid/hashing, atomic + resumable runner, reports, CLI.

All cells are fake (no model): the real cell runner is injected later.
"""

import csv
import hashlib
import io
import json
import random
import statistics
import sys
from pathlib import Path

import pytest

from atwu_plugin.leaderboard import report as rep
from atwu_plugin.leaderboard.runner import (CellSpec, config_hash, expand_grid, run_leaderboard)
from atwu_plugin.leaderboard.spec import MetricSpec, SpecError, load_spec, parse_spec
from atwu_plugin.utils.atomic import atomic_write_json, atomic_write_text

METHODS = ["GradDiff", "NPO", "ATWU"]


def make_spec(out, benchmarks=("synthetic",), seeds=(0, 1, 2), methods=METHODS, **extra):
    data = {
        "name": "test-lb",
        "output_dir": str(out),
        "benchmarks": [{"name": b, "model": "tiny"} for b in benchmarks],
        "methods": [{"name": m, "trainer": m, "overrides": {"trainer.args.learning_rate": 1e-5}} for m in methods],
        "seeds": list(seeds),
        **extra,
    }
    return parse_spec(data, source="SPEC.yaml")


def fake_metrics(cell: CellSpec):
    """Deterministic metrics from the cell identity (not from the call order)."""
    rng = random.Random(f"{cell.benchmark}/{cell.method}/{cell.seed}")
    return {
        "forget_quality": rng.uniform(0.01, 0.9),
        "model_utility": rng.uniform(0.3, 0.6),
        "kl_to_retain": rng.uniform(0.1, 2.0),
        "span_auroc": rng.uniform(0.5, 1.0) if cell.method == "ATWU" else None,
    }


def fake_run_cell(cell: CellSpec):
    cell.on_step(1, 2, loss=0.5)
    cell.on_step(2, 2, loss=0.25)
    return {"metrics": fake_metrics(cell), "wall_s": 1.5}


def stray_temp_files(root: Path):
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def cell_files(root: Path):
    return sorted(p for p in (root / "cells").rglob("*.json"))


# ----------------------------------------------------------------------------- spec


def test_spec_valid_and_defaults(tmp_path):
    spec = make_spec(tmp_path / "out")
    assert [m.name for m in spec.methods] == METHODS
    assert spec.seeds == (0, 1, 2) and spec.host == "lite"
    assert spec.metrics[0] == MetricSpec("forget_quality", "higher")
    assert {m.name: m.direction for m in spec.metrics}["kl_to_retain"] == "lower"
    spec2 = make_spec(tmp_path, metrics={"model_utility": "higher", "my_loss": "lower"})
    assert [(m.name, m.direction) for m in spec2.metrics] == [("model_utility", "higher"), ("my_loss", "lower")]


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"method": [1]}, "unknown key 'method'"),
        ({"methods": []}, "methods: got []; expected a non-empty list"),
        ({"seeds": []}, "seeds: got []"),
        ({"seeds": [0, "1"]}, "seeds[1]: got '1'; expected a non-negative integer"),
        ({"seeds": [0, True]}, "seeds[1]: got True"),
        ({"seeds": [0, 1.5]}, "seeds[1]: got 1.5"),
        ({"host": "cloud"}, "host: got 'cloud'; expected lite or openunlearning"),
        ({"metrics": [{"name": "mystery"}]}, "metrics[0].direction: got None; expected 'higher' or 'lower'"),
        ({"benchmarks": [{"model": "x"}]}, "benchmarks[0].name: got None"),
    ],
)
def test_spec_errors_name_file_field_value(tmp_path, patch, fragment):
    data = {"name": "x", "output_dir": "o", "benchmarks": [{"name": "b"}],
            "methods": [{"name": "A", "trainer": "GradDiff"}], "seeds": [0]}
    data.update(patch)
    with pytest.raises(SpecError) as ei:
        parse_spec(data, source="SPEC.yaml")
    msg = str(ei.value)
    assert fragment in msg, msg
    assert all(line.startswith("SPEC.yaml: ") for line in msg.splitlines())


def test_spec_duplicate_methods_and_unknown_method_key():
    data = {"name": "x", "output_dir": "o", "benchmarks": ["b"], "seeds": [0],
            "methods": [{"name": "A", "trainer": "GradDiff"}, {"name": "A", "trainer": "NPO", "lr": 1}]}
    with pytest.raises(SpecError) as ei:
        parse_spec(data, source="S.yaml")
    lines = ei.value.errors
    assert any("methods[1].name: got 'A'; expected a unique method name (also methods[0])" in x for x in lines)
    assert any("methods[1]: unknown key 'lr'" in x for x in lines)


def test_load_spec_yaml_floats_relative_output_and_bad_yaml(tmp_path):
    d = tmp_path / "specs"
    d.mkdir()
    p = d / "lb.yaml"
    p.write_text("name: y\noutput_dir: out\nbenchmarks: [synthetic]\nseeds: [0]\n"
                 "methods:\n  - {name: A, trainer: GradDiff, overrides: {trainer.args.learning_rate: 1e-5}}\n")
    spec = load_spec(p)
    assert spec.methods[0].overrides["trainer.args.learning_rate"] == 1e-5  # YAML 1.2 float, not '1e-5'
    assert spec.output_dir == (d / "out").absolute()
    assert load_spec(p, output_dir=tmp_path / "elsewhere").output_dir == (tmp_path / "elsewhere").absolute()
    p.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"lb\.yaml: invalid YAML \(line \d+"):
        load_spec(p)


# ----------------------------------------------------------------------------- grid + hashing


def test_grid_expansion_order_paths_and_hash_stability(tmp_path):
    spec = make_spec(tmp_path / "a", benchmarks=("b1", "b2"), seeds=(0, 1))
    cells = expand_grid(spec)
    assert len(cells) == 2 * 3 * 2
    assert [c.key for c in cells[:4]] == ["b1/GradDiff/seed0", "b1/GradDiff/seed1", "b1/NPO/seed0", "b1/NPO/seed1"]
    c = cells[0]
    assert c.path == tmp_path / "a" / "cells" / "b1" / "GradDiff" / f"seed0-{c.hash[:12]}.json"
    assert c.config == {"benchmark": {"name": "b1", "model": "tiny"},
                        "method": {"name": "GradDiff", "trainer": "GradDiff",
                                   "overrides": {"trainer.args.learning_rate": 1e-5}},
                        "seed": 0, "host": "lite"}
    # pinned: canonical JSON (sorted keys, compact separators) -> sha256. Changing the
    # canonicalization would silently invalidate every finished cell of every leaderboard.
    assert c.hash == "028f9d5f2d1e31d068aaf058fcd3a6b714480fdbb9af5b13b813092f5963e415"
    assert config_hash({"b": 1, "a": [1.5, "x"]}) == config_hash({"a": [1.5, "x"], "b": 1})
    assert config_hash({"b": 1, "a": [1.5, "é"]}) == hashlib.sha256('{"a":[1.5,"é"],"b":1}'.encode()).hexdigest()
    # independent of output_dir and of re-expansion; sensitive to overrides of that method only
    again = expand_grid(make_spec(tmp_path / "elsewhere", benchmarks=("b1", "b2"), seeds=(0, 1)))
    assert [x.hash for x in again] == [x.hash for x in cells]
    data = {"name": "t", "output_dir": str(tmp_path / "a"), "seeds": [0, 1],
            "benchmarks": [{"name": b, "model": "tiny"} for b in ("b1", "b2")],
            "methods": [{"name": m, "trainer": m, "overrides": {"trainer.args.learning_rate": 1e-5}}
                        for m in METHODS]}
    data["methods"][1]["overrides"] = {"trainer.args.learning_rate": 2e-5}
    changed = expand_grid(parse_spec(data))
    assert [x.hash != y.hash for x, y in zip(changed, cells)] == [x.method == "NPO" for x in cells]


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "r.json"
    atomic_write_json(target, {"v": 1})
    assert json.loads(target.read_text()) == {"v": 1}

    import atwu_plugin.utils.atomic as atomic

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "partial")
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    assert stray_temp_files(tmp_path) == []
    with pytest.raises(ValueError):  # NaN is not JSON: rejected before touching the file
        atomic_write_json(target, {"v": float("nan")})
    assert json.loads(target.read_text()) == {"v": 1}


def test_failing_cell_leaves_no_partial_file_and_others_run(tmp_path):
    spec = make_spec(tmp_path / "lb", seeds=(0, 1))

    def run_cell(cell):
        if cell.key == "synthetic/NPO/seed1":
            (cell.artifact_dir / "half.bin").write_bytes(b"x")  # artifact written before the crash
            raise RuntimeError("CUDA out of memory\nsecond line")
        return fake_run_cell(cell)

    out = run_leaderboard(spec, run_cell, progress=False, reports=False)
    assert out.exit_code == 1
    assert [f.key for f in out.failures] == ["synthetic/NPO/seed1"]
    assert out.failures[0].error == "RuntimeError: CUDA out of memory"
    assert "failed" in out.summary() and "synthetic/NPO/seed1" in out.summary()
    bad = [c for c in expand_grid(spec) if c.key == "synthetic/NPO/seed1"][0]
    assert not bad.path.exists()
    assert len(cell_files(spec.output_dir)) == 5
    assert stray_temp_files(spec.output_dir) == []
    fails = json.loads((spec.output_dir / "failures.json").read_text())
    assert fails["failed"][0]["cell"] == "synthetic/NPO/seed1" and "Traceback" in fails["failed"][0]["traceback"]
    results = json.loads((spec.output_dir / "results.json").read_text())
    assert len(results["runs"]) == 5

    # the retry runs only the failed cell and clears failures.json
    calls = []
    out2 = run_leaderboard(spec, lambda c: calls.append(c.key) or fake_run_cell(c), progress=False, reports=False)
    assert calls == ["synthetic/NPO/seed1"] and out2.exit_code == 0 and len(out2.cached) == 5
    assert not (spec.output_dir / "failures.json").exists()


def test_fail_fast_stops_at_first_failure(tmp_path):
    spec = make_spec(tmp_path / "lb", seeds=(0, 1))
    calls = []

    def run_cell(cell):
        calls.append(cell.key)
        if len(calls) == 2:
            raise ValueError("bad config")
        return fake_run_cell(cell)

    out = run_leaderboard(spec, run_cell, progress=False, fail_fast=True, reports=False)
    assert len(calls) == 2 and out.exit_code == 1 and len(out.not_run) == 4
    assert "not run (fail-fast)" in out.summary()


def test_run_cell_must_return_metrics(tmp_path):
    spec = make_spec(tmp_path / "lb", seeds=(0,), methods=["A"])
    out = run_leaderboard(spec, lambda c: {"forget_quality": 0.1}, progress=False, reports=False)
    assert out.failures and "expected a dict with a 'metrics' mapping" in out.failures[0].error


# ----------------------------------------------------------------------------- resume


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    full = make_spec(tmp_path / "full")
    run_leaderboard(full, fake_run_cell, progress=False, reports=False)
    expected = (full.output_dir / "results.json").read_text()

    spec = make_spec(tmp_path / "resumed")
    k = 4
    calls = []

    def interrupted(cell):
        if len(calls) == k:
            raise KeyboardInterrupt
        calls.append(cell.key)
        return fake_run_cell(cell)

    with pytest.raises(KeyboardInterrupt):
        run_leaderboard(spec, interrupted, progress=False, reports=False)
    assert len(cell_files(spec.output_dir)) == k
    assert stray_temp_files(spec.output_dir) == []
    assert not (spec.output_dir / "results.json").exists()

    rerun = []
    out = run_leaderboard(spec, lambda c: rerun.append(c.key) or fake_run_cell(c), progress=True, reports=False)
    all_keys = [c.key for c in expand_grid(spec)]
    assert rerun == all_keys[k:]
    assert out.cached == all_keys[:k] and out.exit_code == 0
    assert (spec.output_dir / "results.json").read_text() == expected

    # a third run executes nothing
    out3 = run_leaderboard(spec, lambda c: pytest.fail("should be cached"), progress=False, reports=False)
    assert len(out3.cached) == len(all_keys)


def test_changed_overrides_rerun_only_that_method(tmp_path):
    spec = make_spec(tmp_path / "lb", seeds=(0,))
    run_leaderboard(spec, fake_run_cell, progress=False, reports=False)
    from dataclasses import replace

    methods = list(spec.methods)
    methods[2] = replace(methods[2], overrides={"trainer.args.learning_rate": 3e-5})
    calls = []
    run_leaderboard(replace(spec, methods=tuple(methods)), lambda c: calls.append(c.key) or fake_run_cell(c),
                    progress=False, reports=False)
    assert calls == ["synthetic/ATWU/seed0"]


# ----------------------------------------------------------------------------- reports


def test_reports_numbers_ranks_png_heatmap(tmp_path):
    spec = make_spec(tmp_path / "lb", metrics=[{"name": "forget_quality", "direction": "higher"},
                                               "model_utility", "kl_to_retain", "span_auroc"])

    def run_cell(cell):
        if cell.method == "ATWU":
            cell.artifact_dir.mkdir(parents=True, exist_ok=True)
            with open(cell.token_weights_path, "w") as f:
                f.write(json.dumps({"sample": 0, "tokens": ["The", " <script>alert(1)</script>", " Oslo", " & co"],
                                    "weights": [0.1, 0.5, 2.0, 0.0], "kinds": [0, -1, 1, 2]}) + "\n")
        return fake_run_cell(cell)

    out = run_leaderboard(spec, run_cell, progress=False)
    assert out.exit_code == 0, out.summary()
    d = spec.output_dir
    for name in ("results.json", "leaderboard.md", "leaderboard.csv", "tradeoff.png", "heatmap_ATWU.html"):
        assert (d / name).is_file(), name
    assert not (d / "heatmap_GradDiff.html").exists()

    # independent mean/std per method
    cells = expand_grid(spec)
    exp = {}
    for m in METHODS:
        for metric in ("forget_quality", "model_utility", "kl_to_retain"):
            vals = [fake_metrics(c)[metric] for c in cells if c.method == m]
            exp[m, metric] = (statistics.mean(vals), statistics.stdev(vals))
    md = (d / "leaderboard.md").read_text()
    for (m, metric), (mean, std) in exp.items():
        assert f"{mean:.4f} ± {std:.4f}" in md, (m, metric)
    assert "| n/a |" in md  # span_auroc of baselines

    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((d / "leaderboard.csv").read_text()))}
    for (m, metric), (mean, std) in exp.items():
        assert float(rows[m][f"{metric}_mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(rows[m][f"{metric}_std"]) == pytest.approx(std, rel=1e-12)
    # ranks respect direction: kl_to_retain is lower-is-better
    by_kl = sorted(METHODS, key=lambda m: exp[m, "kl_to_retain"][0])
    assert [int(rows[m]["kl_to_retain_rank"]) for m in by_kl] == [1, 2, 3]
    by_fq = sorted(METHODS, key=lambda m: -exp[m, "forget_quality"][0])
    assert [int(rows[m]["forget_quality_rank"]) for m in by_fq] == [1, 2, 3]
    assert rows["GradDiff"]["span_auroc_mean"] == "" and rows["ATWU"]["span_auroc_rank"] == "1"
    # pareto column agrees with an independent dominance check
    for m in METHODS:
        dom = any(exp[o, "forget_quality"][0] >= exp[m, "forget_quality"][0]
                  and exp[o, "model_utility"][0] >= exp[m, "model_utility"][0] for o in METHODS if o != m)
        assert rows[m]["pareto"] == ("false" if dom else "true")
        assert (f"★ {m} |" in md) == (not dom)

    png = (d / "tradeoff.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    page = (d / "heatmap_ATWU.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&amp; co" in page
    assert 'class="t k1"' in page and "Oslo" in page and "legend" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page  # self-contained


def test_pareto_handmade_and_single_seed_std():
    points = {"A": (0.9, 0.1), "B": (0.5, 0.5), "C": (0.1, 0.9), "D": (0.4, 0.4), "E": (0.5, 0.5),
              "F": (0.9, 0.05), "G": (None, 1.0)}
    assert sorted(rep.pareto_front(points)) == ["A", "B", "C", "E"]  # D dominated by B; F by A; ties kept
    runs = [{"method": m, "seed": 0, "metrics": {"forget_quality": x, "model_utility": y}}
            for m, (x, y) in points.items() if x is not None]
    bench = {"benchmark": "b", "model": "", "runs": runs}
    metrics = [MetricSpec("forget_quality", "higher"), MetricSpec("model_utility", "higher")]
    md = rep.render_markdown([bench], metrics)
    assert "| ★ A | 1 |" in md and "| D | 1 |" in md and "| ★ E |" in md
    assert "0.9000 ± –" in md  # one seed: std undefined
    csv_rows = list(csv.DictReader(io.StringIO(rep.render_csv([bench], metrics))))
    assert {r["method"]: r["pareto"] for r in csv_rows} == {"A": "true", "B": "true", "C": "true", "D": "false",
                                                           "E": "true", "F": "false"}
    # competition ranks with ties: B and E tie on both metrics
    assert {r["method"]: r["forget_quality_rank"] for r in csv_rows}["B"] == "3"
    assert {r["method"]: r["forget_quality_rank"] for r in csv_rows}["E"] == "3"


def test_no_pareto_marks_or_tradeoff_plot_when_the_table_hides_its_axes(tmp_path):
    # a span-AUROC-only spec: forget quality / model utility exist in the runs but are not shown
    runs = [{"method": m, "seed": 0, "metrics": {"forget_quality": 0.2, "model_utility": 0.0, "span_auroc": a}}
            for m, a in (("A", 0.9), ("B", 0.6))]
    bench = {"benchmark": "b", "model": "", "runs": runs}
    shown = [MetricSpec("span_auroc", "higher")]
    md = rep.render_markdown([bench], shown)
    assert "★" not in md and "| A | 1 |" in md
    written = rep.write_reports({"benchmark": "b", "model": "", "runs": runs}, tmp_path / "hidden", metrics=shown)
    assert "tradeoff.png" not in written and not (tmp_path / "hidden" / "tradeoff.png").exists()
    both = shown + [MetricSpec("forget_quality", "higher"), MetricSpec("model_utility", "higher")]
    assert "| ★ A | 1 |" in rep.render_markdown([bench], both)
    assert "tradeoff.png" in rep.write_reports({"benchmark": "b", "model": "", "runs": runs}, tmp_path / "shown",
                                               metrics=both)


def test_heatmap_validation_and_escape(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_text(json.dumps({"sample": 3, "tokens": ["a", "b"], "weights": [1.0], "kinds": [0, 1]}) + "\n")
    with pytest.raises(rep.ResultsError, match=r"w\.jsonl:1: tokens/weights/kinds lengths differ"):
        rep.write_heatmap(p, tmp_path / "h.html", "M")
    html = rep.render_heatmap(rep.read_token_records(
        [{"sample": 0, "tokens": ["<b>", "\"q\"", "Ġx"], "weights": [0.0, 1.0, 0.5], "kinds": [1, 0, 2]}]),
        method="M<1>")
    assert "<b>" not in html.replace("<b>n/a</b>", "").replace("<b>1.000</b>", "").replace("<b>0.000</b>", "")
    assert "&lt;b&gt;" in html and "&quot;q&quot;" in html and "M&lt;1&gt;" in html


def test_multi_benchmark_layout_and_load_both_shapes(tmp_path):
    spec = make_spec(tmp_path / "lb", benchmarks=("b1", "b2"), seeds=(0, 1), methods=["A", "B"])
    out = run_leaderboard(spec, fake_run_cell, progress=False, reports=False)
    assert out.exit_code == 0
    combined = json.loads((spec.output_dir / "results.json").read_text())
    assert [b["benchmark"] for b in combined["benchmarks"]] == ["b1", "b2"] and combined["name"] == "test-lb"
    for b in ("b1", "b2"):
        single = json.loads((spec.output_dir / b / "results.json").read_text())
        assert single["benchmark"] == b and single["model"] == "tiny" and len(single["runs"]) == 4
        assert set(single["runs"][0]) == {"method", "seed", "config", "metrics", "wall_s"}
        assert rep.load_results(spec.output_dir / b / "results.json")[0]["benchmark"] == b
    assert [b["benchmark"] for b in rep.load_results(spec.output_dir / "results.json")] == ["b1", "b2"]
    md = rep.render_markdown(combined["benchmarks"], spec.metrics)
    assert "## b1" in md and "## b2" in md


# ----------------------------------------------------------------------------- CLI


def test_cli_leaderboard_errors_and_only_report(tmp_path, monkeypatch, capsys):
    from atwu_plugin.cli.leaderboard import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noutput_dir: o\nbenchmarks: [b]\nmethods: []\nseeds: [0, one]\n")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(str(bad) in line for line in err)
    assert any("seeds[1]: got 'one'" in line for line in err)

    good = tmp_path / "lb.yaml"
    good.write_text("name: x\noutput_dir: out\nbenchmarks: [b]\nseeds: [0]\n"
                    "methods: [{name: A, trainer: GradDiff}]\nmetrics: [forget_quality, model_utility]\n")
    monkeypatch.setitem(sys.modules, "atwu_plugin.leaderboard.cells", None)  # cell runner unavailable
    assert main([str(good), "--no-progress"]) == 2
    assert "no cell runner" in capsys.readouterr().err

    # finished cells from the Python API, then the CLI rebuilds the reports without running
    run_leaderboard(load_spec(good), fake_run_cell, progress=False, reports=False)
    assert main([str(good), "--only-report", "--no-progress"]) == 0
    assert (tmp_path / "out" / "leaderboard.md").is_file()
    assert main([str(good), "--only-report", "--no-progress", "--output-dir", str(tmp_path / "empty")]) == 1
    assert "have no result yet" in capsys.readouterr().err


def test_heatmap_training_log_keeps_last_step_and_text_tokens(tmp_path):
    """Records as written by atwu_plugin.trainers.token_log (step, text_tokens, kinds may be null)."""
    p = tmp_path / "token_weights.jsonl"
    recs = [
        {"step": 10, "sample": 7, "tokens": ["ĠOslo"], "text_tokens": [" Oslo"], "weights": [0.1], "kinds": [1]},
        {"step": 10, "sample": 8, "tokens": ["Ġx"], "text_tokens": [" x"], "weights": [0.2], "kinds": None},
        {"step": 20, "sample": 7, "tokens": ["ĠOslo"], "text_tokens": [" Oslo"], "weights": [0.9], "kinds": [1]},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep.write_heatmap(p, tmp_path / "h.html", "ATWU")
    page = (tmp_path / "h.html").read_text()
    assert "sample 7 · step 20" in page and "step 10 · 1 tokens" in page  # sample 8 only logged at step 10
    assert "sample 7 · step 10" not in page
    assert "Ġ" not in page and "w = 0.9 " in page
