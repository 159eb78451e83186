"""CI guard of reported scores: the quick leaderboard (tests/regression/quick.yaml) must
reproduce the committed reference within its tolerances (atwu-regress exit 0), and the check
must bite: the same spec with a plausible regression injected into one method
(tests/regression/mutations.py) must exit 1 naming that method's moved metrics.

The mutated cells run for real (config overrides or code patches around the cell); only the
assembling of "this method mutated, the others unchanged" picks runs from the two real
leaderboard outputs. docs/regression.md lists what each mutation moves, by how many tolerances.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from atwu_plugin.tasks import get_benchmark
from atwu_plugin.cli.regress import main as regress_main
from atwu_plugin.leaderboard.cells import default_run_cell
from atwu_plugin.leaderboard.runner import run_leaderboard
from atwu_plugin.leaderboard.spec import load_spec

HERE = Path(__file__).parent / "regression"
REFERENCE = HERE / "quick_reference.json"
sys.path.insert(0, str(HERE))  # `mutations`, importable by name in the spawned workers too
import mutations  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """results.json of the unchanged quick spec and of the mutated one (one cell per method).

    ATWU_REGRESSION_OUTPUT=<dir> runs them there instead of in a fresh temporary folder, so
    that a developer's rerun reuses the finished cells (never set it in CI: reused cells
    would check old code's numbers)."""
    out = Path(os.environ.get("ATWU_REGRESSION_OUTPUT") or tmp_path_factory.mktemp("regression"))
    spec = load_spec(HERE / "quick.yaml", output_dir=out / "quick")
    for b in spec.benchmarks:  # build/load the models once, before the workers start
        get_benchmark(b.name, **b.options).prepare(log=lambda *a: None)
    # two cells at a time, one thread each: the same numbers as one at a time (cells are
    # single-threaded either way), in about half the wall time on CI's 2 cores
    outcome = run_leaderboard(spec, default_run_cell, progress=False, jobs=2)
    assert outcome.exit_code == 0, outcome.summary()
    mutated = run_leaderboard(mutations.mutated_spec(spec, out / "mutated"), mutations.run_mutated_cell,
                              progress=False, jobs=2, reports=False)
    assert mutated.exit_code == 0, mutated.summary()
    return {"dir": out, "unchanged": outcome.results_path, "mutated": mutated.results_path}


def regress(capsys, results):
    code = regress_main(["--reference", str(REFERENCE), "--results", str(results), "--show-all"])
    out = capsys.readouterr().out
    print(out)
    return code, out


def test_quick_leaderboard_matches_reference(quick, capsys):
    code, out = regress(capsys, quick["unchanged"])
    assert code == 0, out
    assert "OK:" in out


@pytest.mark.parametrize("mutation", mutations.MUTATIONS, ids=lambda m: m.name)
def test_mutation_is_caught(quick, capsys, mutation):
    """The unchanged run with ``mutation.method``'s run replaced by its mutated run: exit 1, and
    every flagged score belongs to that method."""
    unchanged = json.loads(Path(quick["unchanged"]).read_text())
    mutated = json.loads(Path(quick["mutated"]).read_text())
    doc = mutations.with_mutated_run(unchanged, mutated, mutation.method)
    path = quick["dir"] / f"{mutation.name}.json"
    path.write_text(json.dumps(doc))
    code, out = regress(capsys, path)
    assert code == 1, f"{mutation.what} ({mutation.method}) was not caught:\n{out}"
    flagged = out.split("DRIFT:")[1].splitlines()[0]
    names = [n.strip() for n in flagged.split(":", 1)[1].split(",")]
    assert names and all(n.startswith(f"embedded/{mutation.method}/") for n in names), flagged
