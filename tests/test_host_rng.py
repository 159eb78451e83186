"""The plugin's setup passes leave the host's global RNG streams alone (issue 16).

OpenUnlearning's ``ForgetRetainDataset.__getitem__`` draws the retain sample paired with each
forget sample from torch's *global* RNG, and transformers' Trainer fetches batches ahead of
the loss. A setup pass that drew from that stream (the old ``setup_batches`` created a
DataLoader iterator, which draws its base seed from it) gave a plugin run other retain samples
than the stock method from the third batch on. Here the lite host gets a pair dataset that
draws the way OU's does, and runs are compared batch by batch."""

import copy
import random

import numpy as np
import pytest
import torch

from atwu_plugin.data.qa_dataset import ForgetRetainDataset
from atwu_plugin.hosts.lite import build_trainer, load_trainer_config


class GlobalRNGPairs(ForgetRetainDataset):
    """Pairs like OpenUnlearning's ForgetRetainDataset: the retain index comes from torch's
    global RNG at every ``__getitem__``."""

    def __getitem__(self, idx):
        return {"forget": self.forget[idx], "retain": self.retain[torch.randint(0, len(self.retain), (1,)).item()]}


def _trainer(micro, name, tmp_path, overrides=None):
    cfg = load_trainer_config(name, {"args.num_train_epochs": 1, "args.per_device_train_batch_size": 4,
                                     "args.learning_rate": 1e-2, "args.max_steps": 5, **(overrides or {})})
    tr = build_trainer(cfg, copy.deepcopy(micro["model"]), micro["tokenizer"], micro["forget"], micro["retain"],
                       str(tmp_path), seed=3)
    tr.train_dataset = GlobalRNGPairs(micro["forget"], micro["retain"])
    return tr


def _record_batches(trainer):
    """Wrap the trainer's loss so that every batch it trains on is recorded."""
    seen = []
    loss_fn = trainer.unlearning_loss

    def recording(model, inputs):
        seen.append({part: inputs[part]["input_ids"].clone() for part in ("forget", "retain")})
        return loss_fn(model, inputs)

    trainer.unlearning_loss = recording
    return seen


def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _same_states(a, b):
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_uniform_graddiff_draws_the_same_batches_as_a_run_without_setup(micro, tmp_path):
    runs = []
    for with_setup in (True, False):
        tr = _trainer(micro, "TW_GradDiff", tmp_path / str(with_setup))
        if not with_setup:  # the reference: the setup pass removed altogether
            tr._setup_weighter = lambda model, tr=tr: setattr(tr, "_weighter_ready", True)
        seen = _record_batches(tr)
        tr.train()
        runs.append((seen, _rng_states(), [h["loss"] for h in tr.state.log_history if "loss" in h]))
    (with_setup, rng_a, loss_a), (without, rng_b, loss_b) = runs
    assert len(with_setup) == len(without) == 5
    for step, (a, b) in enumerate(zip(with_setup, without), 1):
        for part in ("forget", "retain"):
            assert torch.equal(a[part], b[part]), f"step {step}: the {part} batch differs"
    assert _same_states(rng_a, rng_b)
    assert loss_a == loss_b


@pytest.mark.parametrize("name", ["TW_SameToken", "TW_RetainFrequency", "ATWU"])
def test_setup_pass_leaves_global_rng_streams_unchanged(micro, tmp_path, name):
    """Weighters that do need a setup pass (retain statistics, initial-model features; ATWU
    also builds its scorer, whose nn.Linear initialization draws) run it on a copy of the
    streams: torch's, numpy's and Python's RNG are where they were before."""
    tr = _trainer(micro, name, tmp_path)
    batch = tr._prepare_inputs(tr.data_collator([tr.train_dataset[i] for i in range(4)]))
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    before = _rng_states()
    tr.unlearning_loss(tr.model, batch)  # the first loss runs the setup pass
    assert tr._weighter_ready
    assert _same_states(before, _rng_states())


def test_setup_batches_is_one_ordered_pass(micro, tmp_path):
    tr = _trainer(micro, "TW_RetainFrequency", tmp_path)
    retain = micro["retain"]
    batches = list(tr.setup_batches(retain, 7))
    assert [len(b["input_ids"]) for b in batches] == [7] * (len(retain) // 7) + ([len(retain) % 7] if len(retain) % 7 else [])
    expected = tr.data_collator([retain[i] for i in range(7, 14)])
    assert torch.equal(batches[1]["input_ids"], expected["input_ids"])
