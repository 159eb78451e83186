"""atwu-regress: reference scores vs results.json (exit 0 ok / 1 drift / 2 malformed)."""

import json
import statistics

import pytest

from atwu_plugin.cli.regress import main
from atwu_plugin.leaderboard.regress import (RegressionError, compare, make_reference, mean_scores,
                                             tolerance_for)

SEEDS = {
    "ATWU": [(0.40, 0.52, 0.90), (0.44, 0.54, 0.94), (0.42, 0.50, 0.92)],
    "GradDiff": [(0.010, 0.47, None), (0.012, 0.45, None), (0.008, 0.46, None)],
}


def results_doc(shift=None):
    """One-benchmark results.json; ``shift = (method, metric, delta)`` moves every seed."""
    runs = []
    for m, rows in SEEDS.items():
        for seed, (fq, mu, auroc) in enumerate(rows):
            metrics = {"forget_quality": fq, "model_utility": mu, "span_auroc": auroc}
            if shift and shift[0] == m:
                metrics[shift[1]] += shift[2]
            runs.append({"method": m, "seed": seed, "config": {}, "metrics": metrics, "wall_s": 1.0})
    return {"benchmark": "synthetic", "model": "tiny", "runs": runs}


@pytest.fixture
def files(tmp_path):
    res = tmp_path / "results.json"
    res.write_text(json.dumps(results_doc()))
    ref = tmp_path / "REF.json"
    ref.write_text(json.dumps(make_reference(results_doc(), {"default": 0.05, "forget_quality": 0.01})))
    return ref, res


def run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_make_reference_means_and_schema():
    ref = make_reference(results_doc(), {"default": 0.02})
    assert ref["tolerances"] == {"default": 0.02}
    atwu = ref["benchmarks"]["synthetic"]["ATWU"]
    assert atwu["model_utility"] == pytest.approx(statistics.mean([0.52, 0.54, 0.50]))
    assert atwu["span_auroc"] == pytest.approx(0.92)
    assert ref["benchmarks"]["synthetic"]["GradDiff"]["span_auroc"] is None


def test_identical_exit_0(files, capsys):
    ref, res = files
    code, out, err = run(capsys, "--reference", ref, "--results", res)
    assert code == 0, out + err
    assert "OK: 6 scores within tolerance" in out


def test_drift_beyond_tolerance_exit_1_names_it(files, tmp_path, capsys):
    ref, _ = files
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(results_doc(("GradDiff", "model_utility", -0.08))))
    code, out, err = run(capsys, "--reference", ref, "--results", moved)
    assert code == 1
    assert "synthetic/GradDiff/model_utility" in out
    row = [line for line in out.splitlines() if line.startswith("synthetic") and "model_utility" in line]
    assert len(row) == 1 and "GradDiff" in row[0] and "DRIFT" in row[0]
    assert "0.380000" in row[0] and "0.460000" in row[0] and "-0.080000" in row[0] and "0.050000" in row[0]
    assert "forget_quality" not in out.split("DRIFT:")[1]  # only the drifted score is named


def test_within_tolerance_and_per_metric_tolerance(files, tmp_path, capsys):
    ref, _ = files
    small = tmp_path / "small.json"
    small.write_text(json.dumps(results_doc(("ATWU", "model_utility", 0.03))))
    assert run(capsys, "--reference", ref, "--results", small)[0] == 0
    # forget_quality has its own tolerance 0.01 in REF: 0.02 drifts although default is 0.05
    fq = tmp_path / "fq.json"
    fq.write_text(json.dumps(results_doc(("ATWU", "forget_quality", 0.02))))
    code, out, _ = run(capsys, "--reference", ref, "--results", fq)
    assert code == 1 and "synthetic/ATWU/forget_quality" in out
    # --tol changes the fallback only, never a metric's explicit tolerance
    assert tolerance_for("forget_quality", {"default": 0.05, "forget_quality": 0.01}, 0.5) == 0.01
    assert tolerance_for("model_utility", {"default": 0.05, "forget_quality": 0.01}, 0.001) == 0.001
    assert run(capsys, "--reference", ref, "--results", small, "--tol", "0.001")[0] == 1


def test_null_becoming_a_value_is_drift(files, tmp_path, capsys):
    ref, _ = files
    doc = results_doc()
    for r in doc["runs"]:
        if r["method"] == "GradDiff":
            r["metrics"]["span_auroc"] = 0.5
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "--reference", ref, "--results", p)
    assert code == 1 and "synthetic/GradDiff/span_auroc" in out and "null" in out


def test_malformed_json_exit_2(files, tmp_path, capsys):
    ref, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text('{"benchmark": "synthetic", "runs": [')
    code, out, err = run(capsys, "--reference", ref, "--results", bad)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "invalid JSON" in lines[0]
    code, _, err = run(capsys, "--reference", bad, "--results", bad)
    assert code == 2 and str(bad) in err
    code, _, err = run(capsys, "--reference", tmp_path / "nope.json", "--results", bad)
    assert code == 2 and "nope.json: cannot read" in err
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"benchmark": "synthetic", "runs": [{"method": "A", "seed": "0", "metrics": {}}]}))
    code, _, err = run(capsys, "--reference", ref, "--results", wrong)
    assert code == 2 and "runs[0].seed is '0'; expected an integer" in err


def test_missing_method_or_metric_exit_2(files, tmp_path, capsys):
    ref, _ = files
    doc = results_doc()
    doc["runs"] = [r for r in doc["runs"] if r["method"] != "GradDiff"]
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    code, out, err = run(capsys, "--reference", ref, "--results", p)
    assert code == 2 and "method 'GradDiff' of the reference is missing" in err and str(p) in err
    doc = results_doc()
    for r in doc["runs"]:
        del r["metrics"]["model_utility"]
    p.write_text(json.dumps(doc))
    code, _, err = run(capsys, "--reference", ref, "--results", p)
    assert code == 2 and "metric 'model_utility' of the reference is missing" in err
    p.write_text(json.dumps({**results_doc(), "benchmark": "other"}))
    code, _, err = run(capsys, "--reference", ref, "--results", p)
    assert code == 2 and "benchmark 'synthetic' of the reference is missing" in err


def test_update_rewrites_reference_keeping_tolerances(files, tmp_path, capsys):
    ref, _ = files
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(results_doc(("GradDiff", "model_utility", -0.08))))
    assert run(capsys, "--reference", ref, "--results", moved)[0] == 1
    code, out, _ = run(capsys, "--reference", ref, "--results", moved, "--update")
    assert code == 0 and "1 new or changed" in out
    new = json.loads(ref.read_text())
    assert new["tolerances"] == {"default": 0.05, "forget_quality": 0.01}
    assert new["benchmarks"]["synthetic"]["GradDiff"]["model_utility"] == pytest.approx(0.38)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert run(capsys, "--reference", ref, "--results", moved)[0] == 0
    # creating a reference from scratch
    fresh = tmp_path / "fresh" / "REF.json"
    assert run(capsys, "--reference", fresh, "--results", moved, "--update", "--tol", "0.02")[0] == 0
    assert json.loads(fresh.read_text())["tolerances"] == {"default": 0.02}


def test_combined_multi_benchmark_results_accepted(files, tmp_path, capsys):
    ref, _ = files
    combined = {"name": "lb", "benchmarks": [results_doc(), {**results_doc(), "benchmark": "rwku"}]}
    p = tmp_path / "combined.json"
    p.write_text(json.dumps(combined))
    code, out, _ = run(capsys, "--reference", ref, "--results", p)
    assert code == 0 and "rwku (benchmark)" in out  # extra benchmark is reported, not checked
    assert set(mean_scores(combined)) == {"synthetic", "rwku"}
    with pytest.raises(RegressionError, match="appears twice"):
        mean_scores({"benchmarks": [results_doc(), results_doc()]})


def test_compare_api(files):
    ref, res = files
    from atwu_plugin.leaderboard.regress import load_reference

    report = compare(load_reference(ref), res)
    assert report.exit_code == 0 and len(report.comparisons) == 6
