"""OU's own src/train.py under ``accelerate launch`` with the plugin's ZeRO-3 config (CPU twin,
2 processes, gloo): ATWU trains and OU saves the gathered model. The CPU rehearsal of the
paper-scale command in docs/scaling.md. Needs OPEN_UNLEARNING_ROOT (and DeepSpeed in OU's
Python); about 1 CPU minute, plus ~2 the first time (DeepSpeed JIT-builds its CPU comm op)."""

import os
import socket
import subprocess
import sys

import pytest

from atwu_plugin.hosts.accelerate import write_config

# the OU fixtures (checkout, offline env, tiny zoo, exported data) of the integration tests
from test_ou_integration import OU_PYTHON, OU_ROOT, data_dir, ou_env, zoo  # noqa: F401

pytestmark = [
    pytest.mark.openunlearning,
    pytest.mark.skipif(not OU_ROOT, reason="set OPEN_UNLEARNING_ROOT to an OpenUnlearning checkout to run these tests"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_atwu_under_zero3_inside_openunlearning(ou_env, zoo, data_dir, tmp_path):  # noqa: F811
    probe = subprocess.run([OU_PYTHON, "-c", "import deepspeed"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"DeepSpeed is not installed in {OU_PYTHON}")
    from atwu_plugin.hosts.openunlearning import CPU_OVERRIDES

    cfg = write_config("zero3_cpu", str(tmp_path / "zero3_cpu.yaml"), num_processes=2)
    out = tmp_path / "model"
    cpu = [o for o in CPU_OVERRIDES["train"] if "use_cpu" not in o]  # use_cpu=true would bypass DeepSpeed
    cmd = [OU_PYTHON, "-m", "accelerate.commands.launch", "--config_file", cfg, "--main_process_port", str(_free_port()),
           "src/train.py", "--config-name=unlearn.yaml", "experiment=unlearn/atwu_embedded/default", "trainer=ATWU",
           f"paths.local_data={data_dir}", f"model.path={zoo.target}", "task_name=ou_zero3", f"paths.output_dir={out}",
           "trainer.args.num_train_epochs=1", "trainer.args.do_eval=false", *cpu, "++trainer.args.ddp_backend=gloo"]
    env = {**ou_env["env"], "LOCAL_SIZE": "2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=str(ou_env["root"]), env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Initializing TorchBackend in DeepSpeed with backend gloo" in log  # it really ran DeepSpeed
    assert "'train_loss'" in log
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    sys.stdout.write(log[-500:])
