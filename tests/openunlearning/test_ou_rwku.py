"""RWKU inside a real OpenUnlearning checkout: OU's own src/train.py and src/eval.py, unchanged,
with the plugin's RWKU dataset handler, metrics and evaluator (registered through its entry
points) on the smoke RWKU-tiny model and on the real model (slow). Needs OPEN_UNLEARNING_ROOT, a Python with OU's
requirements and this package installed (OPEN_UNLEARNING_PYTHON) and the RWKU data. About a
CPU minute:

    OPEN_UNLEARNING_ROOT=/path/to/open-unlearning OPEN_UNLEARNING_PYTHON=/path/to/ou-venv/bin/python \\
        python -m pytest -m openunlearning tests/openunlearning/test_ou_rwku.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OU_ROOT = os.environ.get("OPEN_UNLEARNING_ROOT")
OU_PYTHON = os.environ.get("OPEN_UNLEARNING_PYTHON") or sys.executable
RWKU_ROOT = Path(__file__).parents[3] / "shared" / "data" / "rwku"

pytestmark = [
    pytest.mark.openunlearning,
    pytest.mark.skipif(not OU_ROOT, reason="set OPEN_UNLEARNING_ROOT to an OpenUnlearning checkout to run these tests"),
]

# the smoke zoo's batch: targets 1-2 forgotten, 3-6 retained (atwu_plugin.tasks.rwku_tiny.ZOOS["smoke"])
SMOKE = ["forget_targets=1-2", "retain_targets=3-6", "probes_per_level=2", "mia_per_target=1"]


@pytest.fixture(scope="module")
def ou(tmp_path_factory):
    from atwu_plugin.hosts.openunlearning import find_openunlearning_root

    root = find_openunlearning_root(OU_ROOT)
    if not (RWKU_ROOT / "Target").is_dir():
        pytest.skip(f"RWKU data not found at {RWKU_ROOT}")
    probe = subprocess.run([OU_PYTHON, "-c", "import atwu_plugin, hydra_plugins.atwu_plugin_searchpath"],
                           capture_output=True, text=True, cwd=str(root))
    if probe.returncode != 0:
        pytest.skip(f"{OU_PYTHON} lacks atwu-plugin (pip install -e .): {probe.stderr.strip().splitlines()[-1:]}")
    home = tmp_path_factory.mktemp("hf")
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home),
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return {"root": root, "env": env, "saves": tmp_path_factory.mktemp("saves")}


@pytest.fixture(scope="module")
def zoo():
    from atwu_plugin.zoo.rwku import SMOKE_RWKU_SPEC, build_rwku_zoo

    return build_rwku_zoo(str(RWKU_ROOT), os.environ.get("ATWU_CACHE_DIR"), SMOKE_RWKU_SPEC, log=lambda *a: None)


def _run(ou, script, overrides):
    from atwu_plugin.hosts.openunlearning import run_openunlearning

    done = run_openunlearning(script, overrides, ou_root=str(ou["root"]), cpu=True, python=OU_PYTHON, env=ou["env"],
                              capture_output=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        pytest.fail(f"OpenUnlearning {script} failed (exit {done.returncode}):\n{tail}")
    return done


def test_rwku_tiny_unlearn_and_evaluate_in_openunlearning(ou, zoo):
    out = ou["saves"] / "rwku_graddiff"
    _run(ou, "train", ["--config-name=unlearn.yaml", "experiment=unlearn/rwku/tiny", "trainer=TW_GradDiff",
                       f"rwku_data_root={RWKU_ROOT}", f"model.path={zoo.target}", "task_name=rwku_graddiff",
                       f"paths.output_dir={out}", "trainer.args.num_train_epochs=1",
                       "trainer.args.per_device_train_batch_size=4", "trainer.args.do_eval=false", *SMOKE])
    assert (out / "model.safetensors").is_file()
    # the forget set is RWKUCorpusDataset over targets 1-2: 2 x (intro + 2 clozes + 1 MIA text) = 8 texts
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # 8 forget items / batch 4, one epoch

    ev = ou["saves"] / "eval_rwku_graddiff"
    _run(ou, "eval", ["experiment=eval/rwku/tiny", f"rwku_data_root={RWKU_ROOT}", f"model.path={out}",
                      "task_name=eval_rwku_graddiff", f"paths.output_dir={ev}", *SMOKE[:1], *SMOKE[2:]])
    summary = json.loads((ev / "RWKU_SUMMARY.json").read_text())
    for key in ("forget_fb", "forget_qa", "forget_aa", "neighbor_fb", "neighbor_qa", "mia_loss_auc",
                "mia_forget_loss", "mia_retain_loss", "utility_fluency", "forget", "neighbor", "mia", "utility"):
        assert key in summary, key
    for key in ("forget_fb", "forget_qa", "forget_aa", "neighbor_fb", "neighbor_qa", "mia_loss_auc"):
        assert 0.0 <= summary[key] <= 1.0, (key, summary[key])
    assert summary["forget"] == pytest.approx((summary["forget_fb"] + summary["forget_qa"] + summary["forget_aa"]) / 3)
    logs = json.loads((ev / "RWKU_EVAL.json").read_text())
    assert logs["forget"]["settings"]["targets"] == ["1_Stephen_King", "2_Confucius"]
    assert logs["forget"]["n"]["forget_fb"] == 4  # 2 probes per level x 2 targets
    assert set(logs["forget"]["by_target"]) == {"1_Stephen_King", "2_Confucius"}


@pytest.mark.slow
def test_rwku_real_unlearn_and_evaluate_in_openunlearning(ou):
    """The lite host's rwku_real run inside OU (experiment=unlearn/rwku/real): the real model
    (SmolLM2-135M, converted by the zoo), the plugin's chat-format passage corpus and RWKU
    evaluator, one target, two ATWU steps on small sets (a few CPU minutes)."""
    pytest.importorskip("gguf", reason="the real model needs the [real] extra (make real-model)")
    from atwu_plugin.zoo.real import real_model

    entry = real_model("smollm2-135m", os.environ.get("ATWU_CACHE_DIR"), log=lambda *a: None)
    out = ou["saves"] / "rwku_real_atwu"
    small = ["n_passages=8", "passage_tokens=32", "probes_per_level=2", "mia_per_target=2"]
    _run(ou, "train", ["--config-name=unlearn.yaml", "experiment=unlearn/rwku/real", "trainer=ATWU",
                       f"rwku_data_root={RWKU_ROOT}", f"model.path={entry.path}", "task_name=rwku_real_atwu",
                       f"paths.output_dir={out}", "+trainer.args.max_steps=2", "trainer.args.per_device_train_batch_size=4",
                       "trainer.args.do_eval=false", *small])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "model.safetensors").is_file()

    ev = ou["saves"] / "eval_rwku_real_atwu"
    _run(ou, "eval", ["experiment=eval/rwku/default", "model=smollm2_135m", f"rwku_data_root={RWKU_ROOT}",
                      f"model.path={out}", "forget_targets=109", "task_name=eval_rwku_real_atwu",
                      f"paths.output_dir={ev}", "eval.rwku.max_probes_per_level=2", "eval.rwku.max_items_per_set=2",
                      "eval.rwku.batch_size=8", "eval.rwku.max_new_tokens=8", "eval.rwku.aggregate=mean",
                      "eval.rwku.utility_groups=[]"])
    summary = json.loads((ev / "RWKU_SUMMARY.json").read_text())
    for key in ("forget_fb", "forget_qa", "forget_aa", "neighbor_fb", "neighbor_qa", "mia_loss_auc"):
        assert 0.0 <= summary[key] <= 1.0, (key, summary[key])
    logs = json.loads((ev / "RWKU_EVAL.json").read_text())
    assert logs["forget"]["settings"]["targets"] == ["109_Ulysses_S._Grant"]
    assert logs["forget"]["n"]["forget_fb"] == 2
