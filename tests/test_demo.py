"""``atwu-demo`` (issue 25, issue 18 items on the demo): bad arguments and specs fail in a second
with one line, before any model is built; the headline table and paragraph come from
results.json; the demo's own run (smoke zoo) is quiet, writes its outputs and phase times, and
its cells give the same numbers with --jobs 2 as one at a time. The demo zoo's quality gates
(the same as the default zoo's in test_zoo_slow.py) are a slow test."""

import json
from pathlib import Path

import pytest

import atwu_plugin.zoo.build as zoo_build
from atwu_plugin.cli import demo
from atwu_plugin.leaderboard.headline import headline_rows, headline_summary, render_headline_table
from atwu_plugin.leaderboard.matched import run_values_at


@pytest.fixture
def no_model_build(monkeypatch):
    """Any model build fails the test (the demo must reject bad input before building)."""
    def refuse(*a, **k):
        raise AssertionError("a model build started before the input was checked")

    monkeypatch.setattr(zoo_build, "_build_into", refuse)


def _one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("atwu-demo: error: "), err
    for n in needles:
        assert n in lines[0], err


@pytest.mark.parametrize("flag", ["--threads", "--jobs"])
def test_nonpositive_threads_or_jobs_is_a_one_line_error(flag, capsys, no_model_build, tmp_path):
    code = demo.main([flag, "-1", "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    _one_error_line(capsys.readouterr().err, f"{flag} -1", "positive integer")


def test_missing_spec_fails_before_any_model_is_built(capsys, no_model_build, tmp_path):
    missing = tmp_path / "nope.yaml"
    code = demo.main(["--spec", str(missing), "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    _one_error_line(capsys.readouterr().err, str(missing), "cannot read spec")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.replace("trainer: TW_NPO}", "trainer: TW_NPOO}"), "TW_NPOO"),
    (lambda s: s.replace("zoo: demo", "zoo: nope"), "zoo='nope'"),
    (lambda s: s.replace("forget_split: forget10", "forget_split: forget10\n    colour: red"), "colour"),
    (lambda s: s.replace("matched:", "matched:\n  typo: 1"), "typo"),
])
def test_bad_spec_fails_before_any_model_is_built(edit, needle, capsys, no_model_build, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(edit(demo.DEMO_SPEC.read_text()))
    code = demo.main(["--spec", str(spec), "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    err = capsys.readouterr().err
    assert all(ln.startswith("atwu-demo: error: ") for ln in err.splitlines()), err
    assert needle in err and str(spec) in err, err


def test_demo_specs_are_valid_and_full_reuses_the_demo_cells():
    from atwu_plugin.leaderboard.runner import expand_grid
    from atwu_plugin.leaderboard.spec import load_spec

    small, full = (load_spec(p, output_dir="/tmp/x") for p in (demo.DEMO_SPEC, demo.FULL_SPEC))
    assert len(full.methods) == 13 and {m.name for m in small.methods} < {m.name for m in full.methods}
    assert {"NPO", "GradDiff", "ATWU", "Oracle", "RetainFrequency", "SameToken", "Reference"} <= {m.name for m in small.methods}
    assert small.matched.levels == (0.5,) and set(small.matched.metrics) == {"forget_generic_prob", "kl_to_retain"}
    assert {c.hash for c in expand_grid(small)} <= {c.hash for c in expand_grid(full)}


# ----------------------------------------------------------------------------- headline

def _trajectory(generic_slope: float, kl_slope: float, n: int = 6):
    """x falls linearly from 0.8 to 0.1; generic prob and KL move with it."""
    pts = []
    for i in range(n):
        x = 0.8 - 0.7 * i / (n - 1)
        pts.append({"step": 10 * i, "forget_specific_prob": x, "forget_generic_prob": 0.95 - generic_slope * (0.8 - x),
                    "kl_to_retain": 4.0 + kl_slope * (0.8 - x)})
    return pts


def _results(tmp_path) -> Path:
    runs = []
    for method, trainer, gs, ks in [("ATWU", "ATWU", 0.05, 0.3), ("Oracle", "TW_Oracle", 0.04, 0.4),
                                    ("NPO", "TW_NPO", 0.3, 1.0), ("GradDiff", "TW_GradDiff", 0.35, 1.5),
                                    ("SameToken", "TW_SameToken", 0.2, 0.8)]:
        runs.append({"method": method, "seed": 0, "config": {"method": {"name": method, "trainer": trainer}},
                     "metrics": {}, "wall_s": 1.0, "trajectory": _trajectory(gs, ks)})
    runs.append({"method": "Reference", "seed": 0, "config": {"method": {"name": "Reference", "trainer": "TW_Reference"}},
                 "metrics": {}, "wall_s": 1.0, "trajectory": _trajectory(0.1, 0.2)[:2]})  # never gets to 50 %
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"benchmark": "embedded", "model": "m", "runs": runs,
                                "matched": {"x": "forget_specific_prob", "levels": [0.5], "points": 5,
                                            "metrics": ["forget_generic_prob", "kl_to_retain"]}}))
    return path


def _numbers(bench, method):
    run = next(r for r in bench["runs"] if r["method"] == method)
    v = run_values_at(run, "forget_specific_prob", 0.5, ["forget_generic_prob", "kl_to_retain"])
    return f"{v['forget_generic_prob']:.3f}", f"{v['kl_to_retain']:.2f}"


def test_headline_numbers_come_from_results_json(tmp_path):
    path = _results(tmp_path)
    bench = json.loads(path.read_text())
    text = headline_summary(bench)
    table = render_headline_table(headline_rows(bench), 0.5)
    for method in ("ATWU", "Oracle", "NPO", "GradDiff", "SameToken"):
        g, k = _numbers(bench, method)
        assert f"{method} {g} / {k}" in text
        assert f"| {g} | {k} |" in table.split(f"| {method} |")[1].splitlines()[0]
    assert "Reference never forgot that much" in text and "| Reference |" in table
    assert "ATWU keeps more of the generic tokens than every uniform and heuristic method" in text
    assert "Its KL to the retain model is lower than 3 of those 3 methods' (all of them)." in text
    # the oracle is ahead of ATWU and of uniform by the amounts computed from the same numbers
    g = {m: float(_numbers(bench, m)[0]) for m in ("ATWU", "Oracle", "SameToken")}
    g_uniform = max(float(_numbers(bench, m)[0]) for m in ("NPO", "GradDiff"))
    assert f"+{g['ATWU'] - g['SameToken']:.3f} over the best of them, SameToken" in text
    assert f"ATWU closes {(g['ATWU'] - g_uniform) / (g['Oracle'] - g_uniform):.0%}" in text

    # perturb results.json: ATWU now loses generic tokens fastest and drifts furthest
    data = json.loads(path.read_text())
    atwu = next(r for r in data["runs"] if r["method"] == "ATWU")
    atwu["trajectory"] = _trajectory(0.5, 3.0)
    path.write_text(json.dumps(data))
    bench2 = json.loads(path.read_text())
    text2 = headline_summary(bench2)
    g2, k2 = _numbers(bench2, "ATWU")
    assert (g2, k2) != _numbers(bench, "ATWU")
    assert f"ATWU {g2} / {k2}" in text2 and f"ATWU {_numbers(bench, 'ATWU')[0]}" not in text2
    assert "ATWU keeps more of the generic tokens than 0 of the 3 uniform and heuristic methods" in text2
    assert "lower than 0 of those 3 methods'." in text2


def test_headline_without_matched_section_says_so():
    assert "No matched-forgetting comparison" in headline_summary({"benchmark": "b", "runs": []})


# ----------------------------------------------------------------------------- the demo itself (smoke zoo)

SMOKE_DEMO = """
name: demo-smoke
output_dir: out
host: lite
benchmarks:
  - {name: embedded, zoo: smoke, forget_split: forget10}
methods:
  - {name: ATWU, trainer: ATWU}
  - {name: NPO, trainer: TW_NPO}
  - {name: Oracle, trainer: TW_Oracle}
seeds: [0]
matched: {x: forget_specific_prob, levels: [0.5], points: 3, metrics: [forget_generic_prob, kl_to_retain]}
"""

NOISE = ("Could not estimate the number of tokens", "ds_accelerator", "Setting accelerator to CPU",
         "Starting from v4.46")


@pytest.mark.slow
def test_demo_run_is_quiet_writes_its_outputs_and_jobs_do_not_change_numbers(tmp_path, capfd):
    from atwu_plugin.leaderboard.cells import default_run_cell
    from atwu_plugin.leaderboard.runner import run_leaderboard
    from atwu_plugin.leaderboard.spec import load_spec

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SMOKE_DEMO)
    out = tmp_path / "demo"
    code = demo.main(["--spec", str(spec_path), "--output-dir", str(out), "--jobs", "2", "--no-progress"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    for noise in NOISE:  # hidden in this process and in the spawned workers
        assert noise not in captured.out + captured.err, noise
    results = json.loads((out / "results.json").read_text())
    summary = headline_summary(results)
    assert summary in captured.out and summary in (out / "summary.md").read_text()
    assert (out / "matched.png").exists() and (out / "tradeoff.png").exists()
    assert "matched.png (the headline" in captured.out
    phases = json.loads((out / "phases.json").read_text())["phases"]
    assert set(phases) >= {"start", "models", "methods", "report", "total"}
    assert "time per phase" in captured.out

    # the same cells one at a time, in this process: the same numbers
    serial = run_leaderboard(load_spec(spec_path, output_dir=tmp_path / "serial"), default_run_cell,
                             progress=False, reports=False, jobs=1)
    assert serial.exit_code == 0
    timing = {"train_s"}

    def strip(runs):
        return [{"method": r["method"], "trajectory": r["trajectory"],
                 "metrics": {k: v for k, v in r["metrics"].items() if k not in timing}} for r in runs]

    assert strip(json.loads((tmp_path / "serial" / "results.json").read_text())["runs"]) == strip(results["runs"])


@pytest.mark.slow
def test_demo_zoo_quality_gates():
    """The demo zoo (half the authors of the default one) passes the default zoo's gates."""
    from atwu_plugin.tasks.embedded import EmbeddedBenchmark
    from atwu_plugin.zoo.quality import model_quality

    bench = EmbeddedBenchmark(zoo="demo").prepare(log=lambda *a: None)
    target = model_quality(bench.model_path, bench.zoo.data_dir, bench.template_args)
    retain = model_quality(bench.retain_model_path, bench.zoo.data_dir, bench.template_args)
    assert target["forget_rouge"] >= 0.9, target
    assert retain["forget_rouge"] <= 0.5, retain
    assert retain["retain_rouge"] >= 0.9, retain
    assert target["world_rouge"] >= 0.9 and retain["world_rouge"] >= 0.9
    assert bench.zoo.manifest["quality"]["target"] == pytest.approx(target)  # recorded by the build itself
