"""The paper-scale leaderboard specs (OU host, GPUs) parse and validate here, without a GPU,
and the OU cell runner builds the right commands and reads OU's summary files (fake OU)."""

import os
from pathlib import Path

import pytest
import yaml

from atwu_plugin.hosts.openunlearning_cells import cell_commands, check_options, run_openunlearning_cell
from atwu_plugin.leaderboard.runner import expand_grid
from atwu_plugin.leaderboard.spec import load_spec

CONFIGS = Path(__file__).parents[1] / "atwu_plugin" / "configs"
SPECS = {"paper_tofu_llama31_8b": ("Llama-3.1-8B-Instruct", "zero3", 8),
         "paper_rwku_phi3_mini": ("Phi-3.5-mini-instruct", "zero2", 4)}
OU_ROOT = Path(os.environ.get("OPEN_UNLEARNING_ROOT", "/tmp/ou"))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_paper_spec_validates(name):
    spec = load_spec(CONFIGS / "leaderboards" / f"{name}.yaml")
    model, stage, n = SPECS[name]
    assert spec.host == "openunlearning"
    for b in spec.benchmarks:
        check_options(b.name, b.options)
        assert b.options["accelerate"] == stage and b.options["num_processes"] == n
        assert f"model={model}" in b.options["train_overrides"] and f"model={model}" in b.options["eval_overrides"]
    plugin_trainers = {p.stem for p in (CONFIGS / "trainer").glob("*.yaml")}
    ou_trainers = {p.stem for p in (OU_ROOT / "configs" / "trainer").glob("*.yaml")}
    for m in spec.methods:
        assert m.trainer in plugin_trainers or not ou_trainers or m.trainer in ou_trainers, m.trainer
    assert "ATWU" in {m.trainer for m in spec.methods}


def test_paper_specs_reference_existing_experiments():
    """Plugin experiments are checked always, OU's when a checkout is present."""
    for name in SPECS:
        for b in load_spec(CONFIGS / "leaderboards" / f"{name}.yaml").benchmarks:
            for key in ("experiment", "eval_experiment"):
                rel = Path("experiment") / f"{b.options[key]}.yaml"
                in_plugin = (CONFIGS / rel).exists()
                if not in_plugin and not (OU_ROOT / "configs").is_dir():
                    continue
                assert in_plugin or (OU_ROOT / "configs" / rel).exists(), f"{name}: {key}={b.options[key]}"
            for o in b.options["train_overrides"] + b.options["eval_overrides"]:
                if o.startswith("model=") and (OU_ROOT / "configs").is_dir():
                    assert (OU_ROOT / "configs" / "model" / f"{o[6:]}.yaml").exists(), o


def test_cell_commands_accelerate_launch(tmp_path):
    spec = load_spec(CONFIGS / "leaderboards" / "paper_tofu_llama31_8b.yaml", output_dir=tmp_path)
    cell = next(c for c in expand_grid(spec) if c.method == "ATWU" and c.seed == 1)
    cmds = cell_commands(cell, Path("/ou"), python="py")
    train, ev = cmds["train"], cmds["eval"]
    assert train[:3] == ["py", "-m", "accelerate.commands.launch"]
    cfg = yaml.safe_load(Path(train[train.index("--config_file") + 1]).read_text())
    assert cfg["num_processes"] == 8 and cfg["deepspeed_config"]["deepspeed_config_file"].endswith("zero3.json")
    assert "/ou/src/train.py" in train and "experiment=unlearn/tofu/default" in train and "trainer=ATWU" in train
    assert "trainer.args.seed=1" in train and f"paths.output_dir={cell.artifact_dir.resolve() / 'model'}" in train
    assert ev[:2] == ["py", "/ou/src/eval.py"] and "experiment=eval/tofu/default" in ev
    assert f"model.model_args.pretrained_model_name_or_path={cell.artifact_dir.resolve() / 'model'}" in ev


@pytest.mark.parametrize("options, field", [
    ({"experiment": "e", "eval_experiment": "v"}, "summary"),
    ({"experiment": "e", "eval_experiment": "v", "summary": "S.json", "accelerate": "zero7"}, "accelerate"),
    ({"experiment": "e", "eval_experiment": "v", "summary": "S.json", "train_overrides": ["noequals"]}, "train_overrides"),
    ({"experiment": "e", "eval_experiment": "v", "summary": "S.json", "num_processes": 8}, "num_processes"),
    ({"experiment": "e", "eval_experiment": "v", "summary": "S.json", "gpus": 8}, "gpus"),
])
def test_bad_ou_benchmark_options_name_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        check_options("b", options)


FAKE_EVAL = """import json, sys, pathlib
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
out = pathlib.Path(args["paths.output_dir"]); out.mkdir(parents=True)
json.dump({"forget_quality": 0.5, "model_utility": 0.6, "forget_Q_A_ROUGE": 0.1, "privleak": -3.0,
           "seed": int(args["seed"])}, open(out / "TOFU_SUMMARY.json", "w"))
"""


def test_run_cell_on_a_fake_openunlearning(tmp_path, monkeypatch):
    root = tmp_path / "ou"
    (root / "src").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "src" / "train.py").write_text("import sys; print('train', sys.argv[1:])\n")
    (root / "src" / "eval.py").write_text(FAKE_EVAL)
    monkeypatch.setenv("OPEN_UNLEARNING_ROOT", str(root))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "fake", "output_dir": "out", "host": "openunlearning", "seeds": [3],
        "benchmarks": [{"name": "tofu", "experiment": "unlearn/tofu/default", "eval_experiment": "eval/tofu/default",
                        "summary": "TOFU_SUMMARY.json", "train_overrides": ["model=M"]}],
        "methods": [{"name": "ATWU", "trainer": "ATWU", "overrides": {"trainer.method_args.rho": 0.2}}],
    }))
    cell = expand_grid(load_spec(spec_path))[0]
    res = run_openunlearning_cell(cell)
    assert res["model"] == "M" and res["ou_metrics"]["seed"] == 3
    m = res["metrics"]
    assert m["forget_quality"] == 0.5 and m["model_utility"] == 0.6 and m["forget_rouge"] == 0.1 and m["privleak"] == -3.0
    assert "trainer.method_args.rho=0.2" in (cell.artifact_dir / "train.log").read_text()


def test_run_cell_reports_a_failing_train(tmp_path, monkeypatch):
    root = tmp_path / "ou"
    (root / "src").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "src" / "train.py").write_text("import sys; print('CUDA out of memory'); sys.exit(3)\n")
    (root / "src" / "eval.py").write_text("")
    monkeypatch.setenv("OPEN_UNLEARNING_ROOT", str(root))
    spec = load_spec(CONFIGS / "leaderboards" / "paper_rwku_phi3_mini.yaml", output_dir=tmp_path / "o")
    cell = expand_grid(spec)[0]
    opts = {k: v for k, v in cell.benchmark_options.items() if k not in ("accelerate", "num_processes")}
    cell.benchmark_options.clear()
    cell.benchmark_options.update(opts)  # plain python: no accelerate needed for the fake
    with pytest.raises(RuntimeError, match=r"(?s)train.py failed \(exit 3\).*CUDA out of memory"):
        run_openunlearning_cell(cell)


def test_ou_spec_with_bad_benchmark_options_fails_at_load(tmp_path):
    from atwu_plugin.leaderboard.spec import SpecError

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "name": "bad", "output_dir": "out", "host": "openunlearning", "seeds": [0],
        "benchmarks": [{"name": "tofu", "experiment": "unlearn/tofu/default", "eval_experiment": "eval/tofu/default",
                        "accelerate": "zero9"}],
        "methods": [{"name": "ATWU", "trainer": "ATWU"}],
    }))
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert str(path) in msg and "benchmarks[0]" in msg and "summary" in msg
