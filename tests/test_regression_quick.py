"""CI guard of reported scores: the quick leaderboard (tests/regression/quick.yaml) must
reproduce the committed reference within its tolerances (atwu-regress exit 0)."""

from pathlib import Path

import pytest

from atwu_plugin.benchmarks import get_benchmark
from atwu_plugin.cli.regress import main as regress_main
from atwu_plugin.leaderboard.cells import default_run_cell
from atwu_plugin.leaderboard.runner import run_leaderboard
from atwu_plugin.leaderboard.spec import load_spec

HERE = Path(__file__).parent / "regression"
pytestmark = pytest.mark.slow


def test_quick_leaderboard_matches_reference(tmp_path, capsys):
    spec = load_spec(HERE / "quick.yaml", output_dir=tmp_path / "quick")
    for b in spec.benchmarks:  # build/load the models once, before the workers start
        get_benchmark(b.name, **b.options).prepare(log=lambda *a: None)
    # two cells at a time, one thread each: the same numbers as one at a time (cells are
    # single-threaded either way), in about half the wall time on CI's 2 cores
    outcome = run_leaderboard(spec, default_run_cell, progress=False, jobs=2)
    assert outcome.exit_code == 0, outcome.summary()
    code = regress_main(["--reference", str(HERE / "quick_reference.json"), "--results", str(tmp_path / "quick" / "results.json")])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
