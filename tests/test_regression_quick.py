"""CI guard of reported scores: the quick leaderboard (tests/regression/quick.yaml) must
reproduce the committed reference within its tolerances (atwu-regress exit 0)."""

from pathlib import Path

import pytest

from atwu_plugin.cli.regress import main as regress_main
from atwu_plugin.leaderboard.cells import default_run_cell
from atwu_plugin.leaderboard.runner import run_leaderboard
from atwu_plugin.leaderboard.spec import load_spec

HERE = Path(__file__).parent / "regression"
pytestmark = pytest.mark.slow


def test_quick_leaderboard_matches_reference(tmp_path, capsys):
    spec = load_spec(HERE / "quick.yaml", output_dir=tmp_path / "quick")
    outcome = run_leaderboard(spec, default_run_cell, progress=False)
    assert outcome.exit_code == 0, outcome.summary()
    code = regress_main(["--reference", str(HERE / "quick_reference.json"), "--results", str(tmp_path / "quick" / "results.json")])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
