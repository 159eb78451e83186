"""Killing a training run (SIGKILL, no clean-up) and resuming from its last checkpoint ends
with the same model as an uninterrupted run: model, optimizer, scheduler, RNG, data order and
ATWU's scorer/bank/caches all come back from the checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atwu_plugin.trainers.base import last_complete_checkpoint

SCRIPT = Path(__file__).with_name("_train_micro.py")


@pytest.fixture(scope="module")
def work(micro, tmp_path_factory):
    d = tmp_path_factory.mktemp("micro_saved")
    micro["model"].save_pretrained(str(d / "model"), safe_serialization=True)
    micro["tokenizer"].save_pretrained(str(d / "model"))
    splits = micro["splits"]
    (d / "records.json").write_text(json.dumps({"forget": splits["forget10"], "retain": splits["retain90"][:40]}))
    return d


def _run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("trainer", ["TW_NPO", "ATWU"])
def test_sigkill_then_resume_equals_uninterrupted(work, tmp_path, trainer):
    full = _run([work, tmp_path / "full", trainer])
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()[-2000:]

    part_dir = tmp_path / "part"
    part = _run([work, part_dir, trainer, "--step-sleep", "0.3"])
    deadline = time.time() + 300
    while last_complete_checkpoint(str(part_dir)) is None:  # wait for the first complete checkpoint
        assert part.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.1)
    time.sleep(1.0)
    part.send_signal(signal.SIGKILL)
    part.wait()
    assert not (part_dir / "final.safetensors").exists(), "killed too late: the run had finished"
    last = Path(last_complete_checkpoint(str(part_dir)))
    if trainer == "ATWU":
        assert (last / "atwu_state.safetensors").exists()
    resumed = _run([work, part_dir, trainer, "--resume", last])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]

    a, b = load_file(str(tmp_path / "full" / "final.safetensors")), load_file(str(part_dir / "final.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
