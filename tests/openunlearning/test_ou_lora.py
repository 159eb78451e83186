"""LoRA inside OpenUnlearning: ``trainer=ATWU +peft=lora`` (the plugin's ``peft/lora.yaml``
config group) trains an adapter with OU's own src/train.py, which saves it as
``adapter_model.safetensors``; OU's src/eval.py evaluates the adapter directory (transformers
loads base + adapter) and the model ``atwu-merge-adapter`` writes, with the same result.

Needs what tests/openunlearning/test_ou_integration.py needs, plus ``peft`` in OU's Python
(``pip install -c requirements/ci.txt peft``)."""

import json
import subprocess

import pytest

from test_ou_integration import (  # noqa: F401  (module-scoped fixtures)
    OU_PYTHON,
    OU_ROOT,
    _evaluate,
    _run,
    data_dir,
    ou_env,
    target_forget_prob,
    zoo,
)

pytestmark = [
    pytest.mark.openunlearning,
    pytest.mark.skipif(not OU_ROOT, reason="set OPEN_UNLEARNING_ROOT to an OpenUnlearning checkout to run these tests"),
]


@pytest.fixture(scope="module")
def ou_has_peft(ou_env):
    probe = subprocess.run([OU_PYTHON, "-c", "import peft"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{OU_PYTHON} lacks peft (pip install -c requirements/ci.txt peft)")


def test_atwu_lora_inside_openunlearning(ou_env, ou_has_peft, zoo, data_dir, target_forget_prob, tmp_path):
    out = ou_env["saves"] / "unlearn_ATWU_lora"
    _run(ou_env, "train", [
        "--config-name=unlearn.yaml", "experiment=unlearn/atwu_embedded/default", "trainer=ATWU", "+peft=lora",
        f"paths.local_data={data_dir}", f"model.path={zoo.target}", "task_name=unlearn_ATWU_lora",
        f"paths.output_dir={out}", "trainer.args.num_train_epochs=2", "trainer.args.do_eval=false",
        # LoRA takes a larger step than full fine-tuning: at the experiment's 1e-3 the adapter
        # moved the smoke model's forget probability by only ~10 % in 2 epochs (0.096 -> 0.086)
        "trainer.args.learning_rate=1e-2",
    ])
    # OU's train.py saved what the trainer trained: the adapter only, as safetensors
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA" and adapter_cfg["r"] == 8
    assert adapter_cfg["base_model_name_or_path"] == str(zoo.target)

    via_adapter = _evaluate(ou_env, data_dir, out, "ATWU_lora_adapter")["forget_Q_A_Prob"]
    merged = tmp_path / "merged"
    from atwu_plugin.cli.merge_adapter import main as merge_main

    assert merge_main([str(out), "--out", str(merged)]) == 0
    via_merged = _evaluate(ou_env, data_dir, merged, "ATWU_lora_merged")["forget_Q_A_Prob"]
    assert via_adapter < 0.8 * target_forget_prob, (target_forget_prob, via_adapter)
    assert via_merged == pytest.approx(via_adapter, rel=1e-4)
