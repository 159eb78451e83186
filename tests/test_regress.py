"""atwu-regress: reference scores vs results.json (exit 0 ok / 1 drift / 2 malformed)."""

import json
import math
import statistics

import pytest

from atwu_plugin.cli.regress import main
from atwu_plugin.leaderboard.regress import (RegressionError, compare, distance, load_reference, make_reference,
                                             mean_scores, tolerance_for, tolerance_spec)

SEEDS = {
    "ATWU": [(0.40, 0.52, 0.90), (0.44, 0.54, 0.94), (0.42, 0.50, 0.92)],
    "GradDiff": [(0.010, 0.47, None), (0.012, 0.45, None), (0.008, 0.46, None)],
}
TOLS = {"forget_quality": {"kind": "absolute", "tol": 0.01}, "model_utility": {"kind": "absolute", "tol": 0.05},
        "span_auroc": {"kind": "absolute", "tol": 0.05}}


def results_doc(shift=None, extra=None):
    """One-benchmark results.json; ``shift = (method, metric, delta)`` moves every seed;
    ``extra`` = {metric: value} added to every run."""
    runs = []
    for m, rows in SEEDS.items():
        for seed, (fq, mu, auroc) in enumerate(rows):
            metrics = {"forget_quality": fq, "model_utility": mu, "span_auroc": auroc, **(extra or {})}
            if shift and shift[0] == m:
                metrics[shift[1]] += shift[2]
            runs.append({"method": m, "seed": seed, "config": {"method": m, "seed": seed}, "metrics": metrics,
                         "wall_s": 1.0})
    return {"benchmark": "synthetic", "model": "tiny", "runs": runs}


def write(path, doc):
    path.write_text(json.dumps(doc))  # json.dumps writes NaN as the (non-standard) literal NaN
    return path


@pytest.fixture
def files(tmp_path):
    res = write(tmp_path / "results.json", results_doc())
    ref = write(tmp_path / "REF.json", make_reference(results_doc(), TOLS))
    return ref, res


def run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_make_reference_means_seeds_and_schema():
    ref = make_reference(results_doc(), {"model_utility": {"kind": "absolute", "tol": 0.02}})
    assert ref["schema"] == "atwu-reference/2"
    assert ref["tolerances"]["model_utility"] == {"kind": "absolute", "tol": 0.02}
    assert ref["tolerances"]["forget_quality"]["kind"] == "log10"  # built-in default for the rest
    atwu = ref["benchmarks"]["synthetic"]["ATWU"]
    assert atwu["seeds"] == [0, 1, 2]
    assert atwu["metrics"]["model_utility"] == pytest.approx(statistics.mean([0.52, 0.54, 0.50]))
    assert atwu["metrics"]["span_auroc"] == pytest.approx(0.92)
    assert ref["benchmarks"]["synthetic"]["GradDiff"]["metrics"]["span_auroc"] is None


def test_identical_exit_0(files, capsys):
    ref, res = files
    code, out, err = run(capsys, "--reference", ref, "--results", res)
    assert code == 0, out + err
    assert "OK: 6 scores within tolerance" in out


def test_drift_beyond_tolerance_exit_1_table_names_it(files, tmp_path, capsys):
    ref, _ = files
    moved = write(tmp_path / "moved.json", results_doc(("GradDiff", "model_utility", -0.08)))
    code, out, err = run(capsys, "--reference", ref, "--results", moved)
    assert code == 1
    assert "synthetic/GradDiff/model_utility" in out
    head = out.splitlines()[0].split()
    assert head == ["benchmark", "method", "metric", "reference", "result", "tolerance", "x", "tol", "status"]
    row = [line for line in out.splitlines() if line.startswith("synthetic") and "model_utility" in line]
    assert len(row) == 1 and "GradDiff" in row[0] and "DRIFT" in row[0]
    # reference, result, tolerance and its kind, how many tolerances away (0.08 / 0.05)
    assert "0.460000" in row[0] and "0.380000" in row[0] and "±0.05 abs" in row[0] and " 1.6 " in row[0]
    assert "forget_quality" not in out.split("DRIFT:")[1]  # only the drifted score is named


def test_within_tolerance_and_per_metric_tolerance(files, tmp_path, capsys):
    ref, _ = files
    small = write(tmp_path / "small.json", results_doc(("ATWU", "model_utility", 0.03)))
    assert run(capsys, "--reference", ref, "--results", small)[0] == 0
    fq = write(tmp_path / "fq.json", results_doc(("ATWU", "forget_quality", 0.02)))
    code, out, _ = run(capsys, "--reference", ref, "--results", fq)
    assert code == 1 and "synthetic/ATWU/forget_quality" in out
    # --tol changes the fallback only, never a metric's explicit tolerance
    tols = {"default": 0.05, "forget_quality": 0.01}
    assert tolerance_for("forget_quality", tols, 0.5) == 0.01
    assert tolerance_for("model_utility", tols, 0.001) == 0.001
    assert tolerance_for("model_utility", tols) == 0.05


def test_tolerance_kinds_match_the_metric_scale():
    """The issue's examples: absolute +-0.01/+-0.05 could not see a method losing all its
    forgetting or a doubled holdout probability; the scale-aware kinds do."""
    ref = make_reference({"benchmark": "b", "runs": [{"method": "M", "seed": 0, "metrics": {
        "forget_quality": 2.4e-6, "holdout_prob": 0.02, "retain_prob": 0.9, "retain_rouge": 0.7,
        "kl_to_retain": 5.0, "train_s": 12.0}}]})
    assert {k: v["kind"] for k, v in ref["tolerances"].items()} == {
        "forget_quality": "log10", "holdout_prob": "relative", "retain_prob": "relative",
        "retain_rouge": "absolute", "kl_to_retain": "relative"}

    def check(**metrics):
        base = {"forget_quality": 2.4e-6, "holdout_prob": 0.02, "retain_prob": 0.9, "retain_rouge": 0.7,
                "kl_to_retain": 5.0}
        doc = {"benchmark": "b", "runs": [{"method": "M", "seed": 0, "metrics": {**base, **metrics}}]}
        return {c.metric: c for c in compare(ref, doc).comparisons}

    assert all(c.ok for c in check().values())
    assert not check(forget_quality=2.4e-8)["forget_quality"].ok  # 2 decades: forgetting changed
    assert check(forget_quality=2.4e-8)["forget_quality"].distance == pytest.approx(2.0)
    assert not check(holdout_prob=0.04)["holdout_prob"].ok  # doubled; |delta| = 0.02 < old +-0.05
    assert check(holdout_prob=0.02 * 1.001)["holdout_prob"].ok
    assert not check(retain_rouge=0.68)["retain_rouge"].ok
    assert distance("log10", 0.0, 1e-300) == 0.0 and math.isinf(distance("relative", 1.0, 0.0))


def test_nan_or_null_in_one_seed_fails_naming_seed(files, tmp_path, capsys):
    """Issue 18 item 9: a NaN in one seed was dropped from the mean and passed."""
    ref, _ = files
    for bad in (float("nan"), None, float("inf")):
        doc = results_doc()
        doc["runs"][1]["metrics"]["forget_quality"] = bad  # ATWU, seed 1
        p = write(tmp_path / "nan.json", doc)
        code, out, _ = run(capsys, "--reference", ref, "--results", p)
        assert code == 1, out
        row = [line for line in out.splitlines() if line.startswith("synthetic") and "forget_quality" in line]
        assert len(row) == 1 and "ATWU" in row[0] and "seed 1" in row[0] and "FAIL" in row[0], out
        assert "synthetic/ATWU/forget_quality (seed 1: " in out.split("DRIFT:")[1]


def test_missing_seed_or_value_fails_naming_seed(files, tmp_path, capsys):
    ref, _ = files
    doc = results_doc()
    doc["runs"] = [r for r in doc["runs"] if not (r["method"] == "GradDiff" and r["seed"] == 2)]
    code, out, _ = run(capsys, "--reference", ref, "--results", write(tmp_path / "r.json", doc))
    assert code == 1
    for metric in ("forget_quality", "model_utility", "span_auroc"):
        assert f"synthetic/GradDiff/{metric} (seed 2: no run)" in out
    doc = results_doc()
    del doc["runs"][0]["metrics"]["model_utility"]  # ATWU seed 0
    code, out, _ = run(capsys, "--reference", ref, "--results", write(tmp_path / "r.json", doc))
    assert code == 1 and "synthetic/ATWU/model_utility (seed 0: missing)" in out
    # extra seeds are reported, not averaged in
    doc = results_doc()
    doc["runs"].append({**doc["runs"][0], "seed": 7, "metrics": {**doc["runs"][0]["metrics"], "model_utility": 0.0}})
    code, out, _ = run(capsys, "--reference", ref, "--results", write(tmp_path / "r.json", doc))
    assert code == 0 and "synthetic/ATWU seed(s) 7" in out


def test_null_becoming_a_value_is_drift(files, tmp_path, capsys):
    ref, _ = files
    doc = results_doc()
    for r in doc["runs"]:
        if r["method"] == "GradDiff":
            r["metrics"]["span_auroc"] = 0.5
    code, out, _ = run(capsys, "--reference", ref, "--results", write(tmp_path / "r.json", doc))
    assert code == 1 and "synthetic/GradDiff/span_auroc" in out and "null" in out


def test_timings_never_stored_nor_checked(tmp_path, capsys):
    """Issue 18 item 9: --update stored wall-clock train_s, so the next identical run drifted."""
    res = write(tmp_path / "results.json", results_doc(extra={"train_s": 30.0}))
    ref = tmp_path / "REF.json"
    assert run(capsys, "--reference", ref, "--results", res, "--update")[0] == 0
    stored = json.loads(ref.read_text())
    assert all("train_s" not in e["metrics"] for e in stored["benchmarks"]["synthetic"].values())
    assert "train_s" not in stored["tolerances"]
    slower = write(tmp_path / "slower.json", results_doc(extra={"train_s": 95.0}))
    code, out, _ = run(capsys, "--reference", ref, "--results", slower)
    assert code == 0, out
    # an older reference that did store a timing: reported as not checked, never a drift
    old = {"tolerances": {"default": 0.05}, "benchmarks": {"synthetic": {
        m: {"model_utility": statistics.mean(r[1] for r in rows), "train_s": 30.0} for m, rows in SEEDS.items()}}}
    old_ref = write(tmp_path / "old.json", old)
    code, out, _ = run(capsys, "--reference", old_ref, "--results", slower)
    assert code == 0 and "timings are not checked: train_s" in out


def test_non_utf8_files_one_line_error(files, tmp_path, capsys):
    """Issue 18 item 9: non-UTF-8 results gave a raw UnicodeDecodeError."""
    ref, res = files
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"benchmark": "caf\u00e9", "runs": []}'.encode("latin-1"))
    code, out, err = run(capsys, "--reference", ref, "--results", bad)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "not UTF-8" in lines[0], err
    code, _, err = run(capsys, "--reference", bad, "--results", res)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(bad) in err and "not UTF-8" in err
    code, _, err = run(capsys, "--reference", ref, "--results", bad, "--update")
    assert code == 2 and str(bad) in err and "not UTF-8" in err


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
    wrong = write(tmp_path / "wrong.json", {"benchmark": "synthetic", "runs": [{"method": "A", "seed": "0", "metrics": {}}]})
    code, _, err = run(capsys, "--reference", ref, "--results", wrong)
    assert code == 2 and "runs[0].seed is '0'; expected an integer" in err
    kind = write(tmp_path / "kind.json", {**json.loads(ref.read_text()), "tolerances": {"model_utility": {"kind": "ratio", "tol": 1}}})
    code, _, err = run(capsys, "--reference", kind, "--results", bad)
    assert code == 2 and "tolerances.model_utility.kind is 'ratio'; expected one of absolute, relative, log10, none" in err


def test_missing_method_or_metric_exit_2(files, tmp_path, capsys):
    ref, _ = files
    doc = results_doc()
    doc["runs"] = [r for r in doc["runs"] if r["method"] != "GradDiff"]
    p = write(tmp_path / "r.json", doc)
    code, out, err = run(capsys, "--reference", ref, "--results", p)
    assert code == 2 and "method 'GradDiff' of the reference is missing" in err and str(p) in err
    doc = results_doc()
    for r in doc["runs"]:
        del r["metrics"]["model_utility"]
    code, _, err = run(capsys, "--reference", ref, "--results", write(p, doc))
    assert code == 2 and "metric 'model_utility' of the reference is missing" in err
    code, _, err = run(capsys, "--reference", ref, "--results", write(p, {**results_doc(), "benchmark": "other"}))
    assert code == 2 and "benchmark 'synthetic' of the reference is missing" in err


def test_update_rewrites_reference_keeping_tolerances_with_provenance(files, tmp_path, capsys):
    ref, _ = files
    moved = write(tmp_path / "moved.json", results_doc(("GradDiff", "model_utility", -0.08)))
    assert run(capsys, "--reference", ref, "--results", moved)[0] == 1
    code, out, _ = run(capsys, "--reference", ref, "--results", moved, "--update")
    assert code == 0 and "1 new or changed" in out
    new = json.loads(ref.read_text())
    assert new["tolerances"] == TOLS
    assert new["benchmarks"]["synthetic"]["GradDiff"]["metrics"]["model_utility"] == pytest.approx(0.38)
    prov = new["provenance"]
    assert len(prov["spec_hash"]) == 64 and {"atwu_plugin", "torch", "transformers", "python"} <= set(prov)
    import torch
    import transformers

    assert prov["torch"] == torch.__version__ and prov["transformers"] == transformers.__version__
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert prov["cpu_numerics"] == "portable-avx2"  # the suite runs with ATWU_PORTABLE_NUMERICS=1
    code, out, _ = run(capsys, "--reference", ref, "--results", moved)
    assert code == 0 and "CPU numerics" not in out
    # a reference made with native kernels (an --update from before the field existed): said, not failed
    native = {**new, "provenance": {k: v for k, v in prov.items() if k != "cpu_numerics"}}
    code, out, _ = run(capsys, "--reference", write(tmp_path / "native.json", native), "--results", moved)
    assert code == 0 and "CPU numerics: reference native, this check portable-avx2" in out
    # other cell configs than the reference's: said, not failed
    doc = results_doc(("GradDiff", "model_utility", -0.08))
    doc["runs"][0]["config"]["lr"] = 1
    code, out, _ = run(capsys, "--reference", ref, "--results", write(tmp_path / "other.json", doc))
    assert code == 0 and "other cell configs than the reference's" in out
    # creating a reference from scratch: --tol for every metric, in its default kind
    fresh = tmp_path / "fresh" / "REF.json"
    assert run(capsys, "--reference", fresh, "--results", moved, "--update", "--tol", "0.02")[0] == 0
    tols = json.loads(fresh.read_text())["tolerances"]
    assert tols["forget_quality"] == {"kind": "log10", "tol": 0.02} and tols["model_utility"]["tol"] == 0.02


def test_update_refuses_fewer_seeds_or_failures_unless_forced(files, tmp_path, capsys):
    ref, _ = files
    before = ref.read_text()
    one_seed = results_doc()
    one_seed["runs"] = [r for r in one_seed["runs"] if r["seed"] == 0]
    p = write(tmp_path / "one.json", one_seed)
    code, out, err = run(capsys, "--reference", ref, "--results", p, "--update")
    assert code == 2 and "synthetic/ATWU has seeds [0] but the reference has [0, 1, 2]" in err and "--force" in err
    assert ref.read_text() == before
    nan = results_doc()
    nan["runs"][4]["metrics"]["model_utility"] = float("nan")  # GradDiff seed 1
    code, _, err = run(capsys, "--reference", ref, "--results", write(tmp_path / "nan.json", nan), "--update")
    assert code == 2 and "synthetic/GradDiff/model_utility: seed 1: NaN" in err and ref.read_text() == before
    # failed cells of the leaderboard run (failures.json beside results.json)
    lb = tmp_path / "lb"
    lb.mkdir()
    write(lb / "failures.json", {"failed": [{"cell": "synthetic/ATWU/seed2", "error": "ValueError: x"}], "not_run": []})
    code, _, err = run(capsys, "--reference", ref, "--results", write(lb / "results.json", results_doc()), "--update")
    assert code == 2 and "failed or unfinished cells: synthetic/ATWU/seed2" in err and ref.read_text() == before
    assert run(capsys, "--reference", ref, "--results", p, "--force")[0] == 2  # --force needs --update
    code, out, _ = run(capsys, "--reference", ref, "--results", p, "--update", "--force")
    assert code == 0 and json.loads(ref.read_text())["benchmarks"]["synthetic"]["ATWU"]["seeds"] == [0]


def test_version1_reference_still_read(files, tmp_path, capsys):
    _, res = files
    v1 = {"schema": "atwu-reference/1", "tolerances": {"default": 0.05, "forget_quality": 0.01},
          "benchmarks": {"synthetic": {"ATWU": {"forget_quality": 0.42, "model_utility": 0.52}}}}
    ref = load_reference(write(tmp_path / "v1.json", v1))
    assert tolerance_spec(ref, "forget_quality") == ("absolute", 0.01)
    assert tolerance_spec(ref, "model_utility") == ("absolute", 0.05)
    assert run(capsys, "--reference", tmp_path / "v1.json", "--results", res)[0] == 0


def test_help_explains_tolerance_kinds(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("absolute", "relative", "log10", "|log10 x - log10 r|", "timings", "docs/regression.md", "--force"):
        assert text in out


def test_combined_multi_benchmark_results_accepted(files, tmp_path, capsys):
    ref, _ = files
    combined = {"name": "lb", "benchmarks": [results_doc(), {**results_doc(), "benchmark": "rwku"}]}
    code, out, _ = run(capsys, "--reference", ref, "--results", write(tmp_path / "combined.json", combined))
    assert code == 0 and "rwku (benchmark)" in out  # extra benchmark is reported, not checked
    assert set(mean_scores(combined)) == {"synthetic", "rwku"}
    with pytest.raises(RegressionError, match="appears twice"):
        mean_scores({"benchmarks": [results_doc(), results_doc()]})


def test_compare_api(files):
    ref, res = files
    report = compare(load_reference(ref), res)
    assert report.exit_code == 0 and len(report.comparisons) == 6
