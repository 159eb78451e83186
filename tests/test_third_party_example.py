"""The third-party example (examples/third_party_method: the LastTokenGA trainer and the
``last_token`` weighter) on the lite host, loaded the way a user loads them, through
``--plugins`` / ``ATWU_PLUGIN_MODULES``, with nothing patched into the host. CI has no
OpenUnlearning: the OU integration test only covers the example when OU is installed."""

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from atwu_plugin import plugins
from atwu_plugin.cli import unlearn as unlearn_cli
from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.hosts import lite
from atwu_plugin.hosts.lite_cell import run_lite_cell
from atwu_plugin.losses.tokens import token_logprobs

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "third_party_method"
MODULES = "last_token_ga.trainer,last_token_ga.weighter"  # what `--plugins` names
TW_LAST_TOKEN = str(EXAMPLE / "last_token_ga" / "configs" / "trainer" / "TW_LastToken.yaml")
LAST_TOKEN_GA = str(EXAMPLE / "last_token_ga" / "configs" / "trainer" / "LastTokenGA.yaml")


@pytest.fixture()
def fresh_plugins(isolated_plugins, monkeypatch):
    """The example importable (as after `pip install -e examples/third_party_method`, without
    its entry points), no plugin loaded yet; the one registry is restored afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in [m for m in sys.modules if m.split(".")[0] == "last_token_ga"]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh: their decorators run again
    monkeypatch.setenv(plugins.ENV_MODULES, "")


@pytest.fixture()
def with_plugins(fresh_plugins, monkeypatch):
    monkeypatch.setenv(plugins.ENV_MODULES, MODULES)  # = atwu-unlearn --plugins MODULES
    from last_token_ga.weighter import last_answer_token_mask

    return last_answer_token_mask


def _trainer(micro, tmp_path, alpha):
    cfg = {"handler": "LastTokenGA", "method_args": {"alpha": alpha, "skip_eos": False},
           "args": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-2}}
    return lite.build_trainer(cfg, copy.deepcopy(micro["model"]), micro["tokenizer"], micro["forget"], micro["retain"],
                              str(tmp_path), seed=0)


def test_loss_is_last_token_logp_plus_retain_nll(micro, tmp_path, with_plugins):
    tr = _trainer(micro, tmp_path, alpha=0.5)
    batch = TokenLabelCollator(micro["tokenizer"].pad_token_id)([tr.train_dataset[i] for i in range(4)])
    f, r = batch["forget"], batch["retain"]
    with torch.no_grad():
        loss = tr.compute_loss(tr.model, batch)
        logp = token_logprobs(tr.model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"])
        last = with_plugins(f["labels"])
        retain_nll = tr.model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], labels=r["labels"]).loss
    assert int(last.sum()) == f["labels"].shape[0]  # one last answer token per row
    expected = (logp * last).sum() / last.sum() + 0.5 * retain_nll
    assert torch.isfinite(loss) and torch.allclose(loss, expected, atol=1e-5)


def test_training_runs_and_lowers_the_last_token(micro, tmp_path, with_plugins):
    tr = _trainer(micro, tmp_path, alpha=1.0)
    items = TokenLabelCollator(micro["tokenizer"].pad_token_id)([micro["forget"][i] for i in range(len(micro["forget"]))])

    def last_logp(model):
        with torch.no_grad():
            lp = token_logprobs(model(input_ids=items["input_ids"], attention_mask=items["attention_mask"]).logits,
                                items["labels"])
        return float(lp[with_plugins(items["labels"])].mean())

    before = last_logp(tr.model)
    tr.train()
    assert last_logp(tr.model) < before - 0.1


def test_plugin_weighter_equals_the_plugin_trainer(micro, tmp_path, with_plugins):
    """TokenWeightedUnlearn + the `last_token` weighter (ga, sequence_mean) computes LastTokenGA's
    forget term: a weighter is one file + one YAML."""
    cfg = lite.load_trainer_config(TW_LAST_TOKEN, {"method_args.alpha": 0.0, "args.per_device_train_batch_size": 4})
    tw = lite.build_trainer(cfg, copy.deepcopy(micro["model"]), micro["tokenizer"], micro["forget"], micro["retain"],
                            str(tmp_path / "tw"), seed=0)
    assert type(tw.weighter).__name__ == "LastTokenWeighter"
    ga = _trainer(micro, tmp_path / "ga", alpha=0.0)
    batch = TokenLabelCollator(micro["tokenizer"].pad_token_id)([tw.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        assert torch.allclose(tw.compute_loss(tw.model, batch), ga.compute_loss(ga.model, batch), atol=1e-6)


class _MicroBenchmark:
    """The `micro` fixture behind the benchmark interface a lite cell reads."""

    num_threads, template_args, aux_model_path, model_name = 1, None, None, "micro"

    def __init__(self, micro, model_dir):
        self.micro, self.model_path = micro, str(model_dir)
        self.trainer_args = {"num_train_epochs": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-2}

    def prepare(self, log=print):
        pass

    def tokenizer(self):
        return self.micro["tokenizer"]

    def train_datasets(self, tokenizer):
        return self.micro["forget"], self.micro["retain"]

    def evaluator(self, tokenizer):
        return type("E", (), {"evaluate": staticmethod(lambda model: {"evaluated": 1.0})})()


@pytest.mark.parametrize("config", [LAST_TOKEN_GA, TW_LAST_TOKEN], ids=["trainer", "weighter"])
def test_lite_cell_runs_the_plugins(micro, tmp_path, with_plugins, config):
    """A whole lite cell (what atwu-unlearn and atwu-leaderboard run) with the plugin trainer,
    and with the plugin weighter; the trainer classes declare what the host fills in."""
    micro["model"].save_pretrained(str(tmp_path / "model"), safe_serialization=True)
    bench = _MicroBenchmark(micro, tmp_path / "model")
    run = run_lite_cell(bench, config, {}, 0, str(tmp_path / "cell"), token_log_path=str(tmp_path / "log.jsonl"),
                        log=lambda *a: None, save_model_dir=str(tmp_path / "saved"))
    assert run["metrics"]["evaluated"] == 1.0 and run["metrics"]["train_s"] >= 0
    saved = json.loads((tmp_path / "saved" / "atwu_run.json").read_text())["trainer_config"]
    # TokenWeightedUnlearn declares needs_from_host = (aux_model, token_log); LastTokenGA nothing
    assert ("token_log" in saved["method_args"]) == (config == TW_LAST_TOKEN)


def test_cli_plugins_flag_feeds_the_lite_host(fresh_plugins, capsys, tmp_path):
    """`atwu-unlearn --lite --plugins ...`: the plugin weighter resolves (the run stops at the
    next check, a negative alpha, before any model is built); without the flag it does not."""
    argv = ["--lite", f"trainer={TW_LAST_TOKEN}", "trainer.method_args.alpha=-1", f"output_dir={tmp_path / 'out'}"]
    assert unlearn_cli.main(argv) == 2
    assert "unknown token weighter 'last_token'" in capsys.readouterr().err
    assert unlearn_cli.main(["--plugins", MODULES, *argv]) == 2
    err = capsys.readouterr().err
    assert "alpha must be a number in [0, inf), got -1" in err and "weighter" not in err
