"""Subprocess entry for tests/test_interruption.py: train a saved micro model on the lite host.

    python tests/_train_micro.py WORK_DIR OUT_DIR TRAINER [--resume CKPT] [--step-sleep S] [--peft lora]
"""

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import TrainerCallback

from atwu_plugin.data.qa_dataset import QADataset
from atwu_plugin.hosts.lite import build_trainer, load_trainer_config
from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS


class Sleep(TrainerCallback):
    def __init__(self, s):
        self.s = s

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.s)


def load_work(work: Path):
    """The saved micro model's tokenizer and its forget/retain datasets (``WORK_DIR`` layout:
    ``model/`` + ``records.json``, shared with tests/_train_zero.py)."""
    tok = load_tokenizer(str(work / "model"))
    records = json.loads((work / "records.json").read_text())
    forget = QADataset(records["forget"], tok, TINY_TEMPLATE_ARGS, max_length=128)
    retain = QADataset(records["retain"], tok, TINY_TEMPLATE_ARGS, max_length=128)
    return tok, forget, retain


def main():
    p = argparse.ArgumentParser()
    p.add_argument("work")
    p.add_argument("out")
    p.add_argument("trainer")
    p.add_argument("--resume", default=None)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--peft", default=None, help="method_args.peft, e.g. lora (tests/test_lora.py)")
    a = p.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work)
    tok, forget, retain = load_work(work)
    cfg = load_trainer_config(a.trainer, {"args.num_train_epochs": 3, "args.per_device_train_batch_size": 4,
                                          "args.learning_rate": 1e-2, "args.save_strategy": "steps",
                                          "args.save_steps": 3, "args.seed": 5,
                                          **({"method_args.peft": a.peft} if a.peft else {})})
    tr = build_trainer(cfg, load_causal_lm(str(work / "model")), tok, forget, retain, a.out, 5)
    if a.step_sleep:
        tr.add_callback(Sleep(a.step_sleep))
    tr.train(resume_from_checkpoint=a.resume)
    save_file({k: v.contiguous() for k, v in tr.model.state_dict().items()}, str(Path(a.out) / "final.safetensors"))


if __name__ == "__main__":
    main()
