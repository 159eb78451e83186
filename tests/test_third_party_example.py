"""The third-party example (examples/third_party_method, LastTokenGA) on the lite host, so that
CI, which has no OpenUnlearning, still runs its loss: the OU integration test only covers it
when OU is installed."""

import copy
from pathlib import Path

import pytest
import torch

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.hosts import lite
from atwu_plugin.losses.tokens import token_logprobs

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "third_party_method"


@pytest.fixture()
def last_token_ga(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from last_token_ga.trainer import LastTokenGA, last_answer_token_mask

    real = lite.get_trainer_class
    monkeypatch.setattr(lite, "get_trainer_class", lambda name: LastTokenGA if name == "LastTokenGA" else real(name))
    return last_answer_token_mask


def _trainer(micro, tmp_path, alpha):
    cfg = {"handler": "LastTokenGA", "method_args": {"alpha": alpha, "skip_eos": False},
           "args": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-2}}
    return lite.build_trainer(cfg, copy.deepcopy(micro["model"]), micro["tokenizer"], micro["forget"], micro["retain"],
                              str(tmp_path), seed=0)


def test_loss_is_last_token_logp_plus_retain_nll(micro, tmp_path, last_token_ga):
    tr = _trainer(micro, tmp_path, alpha=0.5)
    batch = TokenLabelCollator(micro["tokenizer"].pad_token_id)([tr.train_dataset[i] for i in range(4)])
    f, r = batch["forget"], batch["retain"]
    with torch.no_grad():
        loss = tr.compute_loss(tr.model, batch)
        logp = token_logprobs(tr.model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"])
        last = last_token_ga(f["labels"])
        retain_nll = tr.model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], labels=r["labels"]).loss
    assert int(last.sum()) == f["labels"].shape[0]  # one last answer token per row
    expected = (logp * last).sum() / last.sum() + 0.5 * retain_nll
    assert torch.isfinite(loss) and torch.allclose(loss, expected, atol=1e-5)


def test_training_runs_and_lowers_the_last_token(micro, tmp_path, last_token_ga):
    tr = _trainer(micro, tmp_path, alpha=1.0)
    items = TokenLabelCollator(micro["tokenizer"].pad_token_id)([micro["forget"][i] for i in range(len(micro["forget"]))])

    def last_logp(model):
        with torch.no_grad():
            lp = token_logprobs(model(input_ids=items["input_ids"], attention_mask=items["attention_mask"]).logits,
                                items["labels"])
        return float(lp[last_token_ga(items["labels"])].mean())

    before = last_logp(tr.model)
    tr.train()
    assert last_logp(tr.model) < before - 0.1
