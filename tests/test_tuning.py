"""Sweeps: method grids and methods_from in specs, and the selection rule (leaderboard/tuning.py)."""

import json
import os
from pathlib import Path

import pytest

from atwu_plugin.leaderboard.spec import SpecError, load_spec, parse_spec
from atwu_plugin.leaderboard.tuning import chosen_methods, render_tuning_markdown, select

MATCHED = {"x": "forget_specific_prob", "levels": [0.75, 0.5], "points": 4,
           "metrics": ["kl_to_retain", "forget_generic_prob"]}
SELECTION = {"metric": "kl_to_retain", "levels": [0.5, 0.75]}


def sweep_spec(methods, **extra):
    data = {"name": "sweep", "output_dir": "/tmp/sweep", "benchmarks": [{"name": "embedded"}],
            "methods": methods, "seeds": [0, 1], "matched": MATCHED, "selection": SELECTION, **extra}
    return parse_spec(data, source="SWEEP.yaml")


GRID = {"args.learning_rate": [2.5e-4, 5.0e-4], "method_args.forget_loss.beta": [0.1, 0.5]}


def test_grid_expands_to_named_trials_with_family_and_point():
    spec = sweep_spec([{"name": "NPO", "trainer": "TW_NPO", "overrides": {"method_args.gamma": 1.0}, "grid": GRID},
                       {"name": "ATWU", "trainer": "ATWU"}])
    names = [m.name for m in spec.methods]
    assert names == ["NPO+lr_0.00025+beta_0.1", "NPO+lr_0.00025+beta_0.5", "NPO+lr_0.0005+beta_0.1",
                     "NPO+lr_0.0005+beta_0.5", "ATWU"]
    third = spec.methods[2]
    assert third.family == "NPO" and third.point == {"args.learning_rate": 5e-4, "method_args.forget_loss.beta": 0.1}
    assert third.overrides == {"method_args.gamma": 1.0, **third.point}
    assert spec.methods[-1].family == "" and spec.selection.levels == (0.5, 0.75)


@pytest.mark.parametrize("grid, message", [
    ({}, "a non-empty mapping"),
    ({"args.learning_rate": []}, "a non-empty list of scalars"),
    ({"args.learning_rate": [{"a": 1}]}, "a non-empty list of scalars"),
    ({"args.learning_rate": [1e-4], "x.learning_rate": [1]}, "keys whose last parts differ"),
    ({"method_args.gamma": [1.0]}, "not also in overrides"),
])
def test_grid_errors_name_the_field(grid, message):
    with pytest.raises(SpecError) as e:
        sweep_spec([{"name": "NPO", "trainer": "TW_NPO", "overrides": {"method_args.gamma": 1.0}, "grid": grid}])
    assert "methods[0].grid" in str(e.value) and message in str(e.value)


def test_grid_trial_names_must_not_collide_with_other_methods():
    with pytest.raises(SpecError, match="unique method name"):
        sweep_spec([{"name": "NPO+lr_0.0001", "trainer": "TW_NPO"},
                    {"name": "NPO", "trainer": "TW_NPO", "grid": {"args.learning_rate": [1e-4]}}])


def test_selection_must_refer_to_the_matched_section():
    with pytest.raises(SpecError) as e:
        sweep_spec([{"name": "NPO", "trainer": "TW_NPO"}], selection={"metric": "model_utility", "levels": [0.25]})
    assert "selection.metric" in str(e.value) and "selection.levels" in str(e.value)
    data = {"name": "s", "output_dir": "/tmp/s", "benchmarks": [{"name": "b"}],
            "methods": [{"name": "NPO", "trainer": "TW_NPO"}], "seeds": [0], "selection": SELECTION}
    with pytest.raises(SpecError, match="a spec with a matched section"):
        parse_spec(data, source="S.yaml")


def test_methods_from_reads_a_file_next_to_the_spec(tmp_path):
    (tmp_path / "chosen.yaml").write_text("methods:\n  - {name: NPO, trainer: TW_NPO, overrides: {args.learning_rate: 1.5e-4}}\n")
    (tmp_path / "spec.yaml").write_text("name: t\noutput_dir: out\nbenchmarks: [{name: b}]\nmethods_from: chosen.yaml\n"
                                        "methods: [{name: ATWU, trainer: ATWU}]\nseeds: [0]\n")
    spec = load_spec(tmp_path / "spec.yaml")
    assert [m.name for m in spec.methods] == ["NPO", "ATWU"]
    assert spec.methods[0].overrides == {"args.learning_rate": 1.5e-4}  # YAML 1.2 float
    (tmp_path / "spec.yaml").write_text("name: t\noutput_dir: out\nbenchmarks: [{name: b}]\nmethods_from: nope.yaml\nseeds: [0]\n")
    with pytest.raises(SpecError, match="methods_from.*nope.yaml"):
        load_spec(tmp_path / "spec.yaml")


def run(method, seed, kl_at, reach=1.0):
    """A trajectory whose x falls linearly from 1 to ``1 - reach``; kl rises linearly so that at
    x = 0.5 it equals ``kl_at``."""
    pts = []
    for step in range(5):
        frac = step / 4
        x = 1.0 - reach * frac
        pts.append({"step": step, "forget_specific_prob": x, "kl_to_retain": 2 * kl_at * (1 - x),
                    "forget_generic_prob": 0.9})
    return {"method": method, "seed": seed, "trajectory": pts}


def test_select_applies_the_rule():
    spec = sweep_spec([{"name": "NPO", "trainer": "TW_NPO", "grid": GRID}])
    t = [m.name for m in spec.methods]
    runs = [run(t[0], 0, 0.4), run(t[0], 1, 0.4),
            run(t[1], 0, 0.125), run(t[1], 1, 0.175),   # best mean (0.15)
            run(t[2], 0, 0.05), run(t[2], 1, 0.05, reach=0.3),  # better, but seed 1 never reaches 0.5
            run(t[3], 0, 0.15), run(t[3], 1, 0.15)]     # ties with t[1]: the earlier trial wins
    bench = {"benchmark": "embedded", "matched": MATCHED, "runs": runs}
    (choice,) = select(bench, spec.methods, spec.selection)
    assert choice.level == 0.5 and choice.chosen.name == t[1]
    assert choice.chosen.values[0.5] == pytest.approx(0.15)
    assert choice.trials[2].values[0.5] is None and choice.trials[2].values[0.75] is not None
    page = render_tuning_markdown([choice], spec.selection, "forget_specific_prob")
    assert "`beta` = 0.5" in page and "not reached" in page and page.count(" ★ |") == 1
    rows = chosen_methods([choice], spec.methods, lr_scale=0.6)
    assert rows == [{"name": "NPO", "trainer": "TW_NPO",
                     "overrides": {"args.learning_rate": 1.5e-4, "method_args.forget_loss.beta": 0.5}}]


def test_select_falls_back_to_the_next_level_and_reports_no_choice():
    spec = sweep_spec([{"name": "NPO", "trainer": "TW_NPO", "grid": {"args.learning_rate": [1e-4, 2e-4]}},
                       {"name": "GA", "trainer": "TW_GA", "grid": {"args.learning_rate": [1e-4]}}])
    n = [m.name for m in spec.methods]
    runs = [run(n[0], s, 0.3, reach=0.3) for s in (0, 1)] + [run(n[1], s, 0.1, reach=0.4) for s in (0, 1)]
    runs += [run(n[2], s, 0.1, reach=0.1) for s in (0, 1)]
    bench = {"benchmark": "embedded", "matched": MATCHED, "runs": runs}
    npo, ga = select(bench, spec.methods, spec.selection)
    assert npo.level == 0.75 and npo.chosen.name == n[1]
    assert ga.level is None and ga.chosen is None
    assert "none (no trial reached any level)" in render_tuning_markdown([npo, ga], spec.selection, "x")
    assert [r["name"] for r in chosen_methods([npo, ga], spec.methods)] == ["NPO"]


def test_select_needs_a_matched_benchmark():
    spec = sweep_spec([{"name": "NPO", "trainer": "TW_NPO", "grid": GRID}])
    with pytest.raises(ValueError, match="no matched section"):
        select({"benchmark": "b", "runs": []}, spec.methods, spec.selection)


def test_tuning_doc_script_writes_page_and_methods(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import tuning_doc

    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(json.dumps({"name": "sweep", "output_dir": "out", "benchmarks": [{"name": "embedded"}],
                                     "methods": [{"name": "NPO", "trainer": "TW_NPO", "grid": GRID}],
                                     "seeds": [0], "matched": MATCHED, "selection": SELECTION}))
    spec = load_spec(spec_path)
    runs = [dict(run(m.name, 0, 0.1 * (i + 1)), wall_s=60.0) for i, m in enumerate(spec.methods)]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text(json.dumps(
        {"benchmarks": [{"benchmark": "embedded", "matched": MATCHED, "runs": runs}]}))
    tuning_doc.main([str(spec_path), str(tmp_path / "out"), str(tmp_path / "page.md"), "--command", "make x",
                     "--methods-yaml", str(tmp_path / "chosen.yaml"), "--lr-scale", "0.6"])
    page = (tmp_path / "page.md").read_text()
    assert "Trials per method: NPO 4." in page and "| NPO | `learning_rate` = 0.00025, `beta` = 0.1 | 0.5 | 0.1 |" in page
    (tmp_path / "s2.yaml").write_text("name: t\noutput_dir: o\nbenchmarks: [{name: b}]\nmethods_from: chosen.yaml\nseeds: [0]\n")
    (m,) = load_spec(tmp_path / "s2.yaml").methods
    assert m.name == "NPO" and m.overrides["args.learning_rate"] == pytest.approx(1.5e-4)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LEADERBOARDS = sorted((Path(__file__).parents[1] / "atwu_plugin" / "configs" / "leaderboards").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in LEADERBOARDS if p.name != "tuned_methods.yaml"], ids=lambda p: p.stem)
def test_every_committed_spec_validates(path, monkeypatch):
    """Typos in a committed spec (a grid key, a methods_from path, a trainer override) fail here,
    not an hour into a run."""
    from atwu_plugin.leaderboard.spec import check_lite_cells

    text = path.read_text()
    for var, default in (("TOFU_DATA", "tofu"), ("RWKU_DATA_ROOT", "rwku")):
        where = Path(os.environ.get(var) or SHARED_DATA / default)
        if (var == "TOFU_DATA" and "TOFU_DATA" in text) or (var == "RWKU_DATA_ROOT" and "rwku" in path.stem):
            if not where.is_dir():
                pytest.skip(f"{path.name} reads {var}; no data at {where} (set {var})")
            monkeypatch.setenv(var, str(where))
    spec = load_spec(path)
    if spec.host == "lite":
        check_lite_cells(spec)


def test_tuning_sweep_gives_every_method_the_same_budget():
    spec = load_spec(LEADERBOARDS[0].parent / "tuning_dev.yaml")
    families = {}
    for m in spec.methods:
        families.setdefault(m.family, []).append(m)
    assert "" not in families and len(families) >= 8
    assert {len(v) for v in families.values()} == {6}
    lrs = {tuple(sorted({t.point["args.learning_rate"] for t in v})) for v in families.values()}
    assert lrs == {(2.5e-4, 5e-4, 1e-3)}  # the same learning-rate trials for every method
    tuned = load_spec(LEADERBOARDS[0].parent / "heldout_tofu.yaml")
    assert sorted(m.name for m in tuned.methods) == sorted(families)  # every tuned method, nothing untuned
