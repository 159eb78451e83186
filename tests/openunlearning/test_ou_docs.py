"""docs/openunlearning.md's quickstart, run as written (issue 16).

The fenced ``bash`` blocks that follow a ``<!-- ou-doc-test: NAME -->`` line are read from the
doc itself and run with ``bash -euo pipefail``; only the documented placeholder paths are
substituted (the OU checkout -> a scratch copy of ``OPEN_UNLEARNING_ROOT``, ``/data`` -> a temp
dir, ``/path/to/atwu-plugin`` -> this checkout). The commands see OU's Python as ``python``
(``OPEN_UNLEARNING_PYTHON``'s directory first on PATH) with this checkout on PYTHONPATH, and
``atwu-export`` as the console script ``pip install`` would create. The environment block
(pip installs) is not run: the tier uses prepared environments.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# the OU fixtures of the integration tests
from test_ou_integration import OU_PYTHON, OU_ROOT, ou_env  # noqa: F401

pytestmark = [
    pytest.mark.openunlearning,
    pytest.mark.skipif(not OU_ROOT, reason="set OPEN_UNLEARNING_ROOT to an OpenUnlearning checkout to run these tests"),
]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "openunlearning.md"
MARKED_BLOCK = re.compile(r"<!-- ou-doc-test: (\w+) -->\s*\n```bash\n(.*?)\n```", re.S)


def documented_blocks() -> dict:
    return {name: body for name, body in MARKED_BLOCK.findall(DOC.read_text())}


def test_doc_has_the_tested_blocks():
    blocks = documented_blocks()
    assert sorted(blocks) == ["eval", "setup", "train"], sorted(blocks)
    assert "src/train.py" in blocks["train"] and "src/eval.py" in blocks["eval"]


def _substitute(text: str, paths: dict) -> str:
    for placeholder, real in paths.items():
        text = text.replace(placeholder, str(real))
    return text


@pytest.fixture(scope="module")
def doc_run(ou_env, tmp_path_factory):  # noqa: F811
    """A scratch copy of the OU checkout (the doc's commands write saves/ into it), a /data
    stand-in, and the environment the commands run in."""
    base = tmp_path_factory.mktemp("doc")
    checkout = base / "open-unlearning"
    shutil.copytree(ou_env["root"], checkout, ignore=shutil.ignore_patterns(".git", ".venv", "saves", "logs", "outputs"))
    (base / "data").mkdir()
    shim = base / "bin"
    shim.mkdir()
    (shim / "atwu-export").write_text(f'#!/bin/sh\nexec "{OU_PYTHON}" -m atwu_plugin.cli.export "$@"\n')
    (shim / "atwu-export").chmod(0o755)
    env = {**os.environ, **ou_env["env"]}
    env["PATH"] = os.pathsep.join([str(shim), str(Path(OU_PYTHON).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    paths = {"/path/to/open-unlearning": checkout, "/path/to/atwu-plugin": REPO, "/data/": f"{base / 'data'}/"}
    return {"checkout": checkout, "env": env, "paths": paths}


def _run_blocks(doc_run, names):
    blocks = documented_blocks()
    script = "\n".join(_substitute(blocks[n], doc_run["paths"]) for n in names)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=str(doc_run["checkout"]), env=doc_run["env"],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"documented blocks {names} failed:\n{script}\n---\n{(done.stdout + done.stderr)[-4000:]}"
    return done


@pytest.fixture(scope="module")
def trained(doc_run):
    _run_blocks(doc_run, ["setup", "train"])
    out = doc_run["checkout"] / "saves" / "unlearn" / "tofu_atwu"
    return out


def test_documented_train_commands_run_as_written(trained):
    import yaml

    assert (trained / "model.safetensors").is_file() and (trained / "tokenizer.json").is_file()
    composed = yaml.safe_load((trained / ".hydra" / "config.yaml").read_text())
    target = composed["model"]["path"]
    # the weights and the tokenizer really came from the local model, not the hub
    assert composed["model"]["model_args"]["pretrained_model_name_or_path"] == target
    assert composed["model"]["tokenizer_args"]["pretrained_model_name_or_path"] in (target, "${model.path}")
    assert Path(target).is_dir() and composed["trainer"]["handler"] == "ATWU"


@pytest.mark.slow
def test_documented_eval_command_runs_as_written(doc_run, trained):
    import json

    _run_blocks(doc_run, ["eval"])
    summary = json.loads((doc_run["checkout"] / "saves" / "eval" / "tofu_atwu_eval" / "TOFU_SUMMARY.json").read_text())
    assert summary["forget_Q_A_Prob"] is not None and summary["model_utility"] is not None
