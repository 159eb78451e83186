"""Bad-input matrix: every row is one user mistake (or one hostile input) and asserts the ONE
error line the user sees, the exit code (CLI rows), and that nothing was written.

docs/reliability.md lists the same rows with the messages copied from these tests.
Data-file rows go through the loaders (``load_split`` / ``QADataset``), CLI rows through
``atwu_plugin.cli.unlearn.main`` / ``atwu_plugin.cli.eval.main`` with inputs that fail before
any benchmark model is built, and training rows through the ``micro`` fixture (seconds).
"""

import copy
import json
import logging
import os
import re

import pytest
import torch
from transformers import TrainerCallback

from atwu_plugin.cli import eval as eval_cli
from atwu_plugin.cli import unlearn as unlearn_cli
from atwu_plugin.data.encoding import encode_qa
from atwu_plugin.data.generator import load_split
from atwu_plugin.data.qa_dataset import ForgetRetainDataset, QADataset
from atwu_plugin.hosts.checks import validate_trainer_config
from atwu_plugin.trainers.checks import check_has_answer_tokens, check_vocab
from atwu_plugin.hosts.lite import build_trainer, load_trainer_config, parse_lite_overrides
from atwu_plugin.registry import UnknownNameError
from atwu_plugin.trainers.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

ARGS = TINY_TEMPLATE_ARGS
OU = "OPEN_UNLEARNING_ROOT"


@pytest.fixture(autouse=True)
def _no_openunlearning(monkeypatch):
    monkeypatch.delenv(OU, raising=False)  # CLI rows must not pick up a developer's checkout


def tiny_llama(vocab_size: int, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, **kw)
    return LlamaForCausalLM(cfg)


def run_cli(main, argv, capsys):
    """Exit code and the stderr lines of one CLI call."""
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def assert_one_error(err, prog, *fragments):
    assert len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: "), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


def assert_nothing_written(out_dir):
    assert not os.path.exists(out_dir) or os.listdir(out_dir) == [], os.listdir(out_dir)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---- data files -------------------------------------------------------------------------------
def test_missing_data_file(tmp_path, tok):
    missing = tmp_path / "forget10.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing}: benchmark split not found")):
        load_split(missing)
    with pytest.raises(FileNotFoundError, match="forget10.json: benchmark split not found"):
        QADataset(missing, tok, ARGS)


def test_data_path_is_a_directory(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path}: is a directory; expected a benchmark split file")):
        load_split(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root reads any file")
def test_unreadable_data_file(tmp_path):
    path = write(tmp_path / "forget10.json", '[{"question": "q", "answer": "a"}]')
    path.chmod(0)
    try:
        msg = f"{path}: cannot read benchmark split (permission denied)"
        with pytest.raises(PermissionError, match=re.escape(msg)):
            load_split(path)
    finally:
        path.chmod(0o644)


def test_data_file_not_utf8(tmp_path):
    path = tmp_path / "forget10.json"
    path.write_bytes(b'[{"question": "q",\n "answer": "caf\xe9"}]')  # latin-1, not UTF-8
    with pytest.raises(ValueError, match=re.escape(f"{path}: not UTF-8 text (invalid byte 0xe9 at line 2)")):
        load_split(path)


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path / "forget10.json", '[{"question": "q", "answer": "a"},\n {"question": "q", "answer": }]')
    with pytest.raises(ValueError, match=re.escape(f"{path}: malformed JSON at line 2, column 30: Expecting value")):
        load_split(path)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    lines = ['{"question": "q", "answer": "a"}'] * 2 + ['{"question": "q", "answer": "a"'] + ['{}']
    path = write(tmp_path / "forget10.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: malformed JSON at line 3, column 32")):
        load_split(path)
    pretty = write(tmp_path / "pretty.jsonl", json.dumps({"data": [{"question": "q", "answer": "a"}]}, indent=1))
    with pytest.raises(ValueError, match="pretty.jsonl: expected a JSON list of records or JSON Lines, got a single "):
        load_split(pretty)


@pytest.mark.parametrize("missing", ["question", "answer"])
def test_record_missing_field(tmp_path, tok, missing):
    good = {"question": "Who?", "answer": "Ada."}
    bad = {k: v for k, v in good.items() if k != missing}
    listed = write(tmp_path / "split.json", json.dumps([good, bad]))
    with pytest.raises(ValueError) as err:
        load_split(listed)
    assert str(err.value) == f"{listed}: record 1: missing field {missing!r} (expected keys: question, answer)"
    lines = write(tmp_path / "split.jsonl", "\n".join(json.dumps(r) for r in (good, good, bad)))
    with pytest.raises(ValueError, match=re.escape(f"{lines}: record 2 (line 3): missing field {missing!r}")):
        load_split(lines)
    with pytest.raises(ValueError, match=re.escape(f"forget: record 1: missing field {missing!r}")):
        QADataset([good, bad], tok, ARGS, name="forget")  # records from code, not from a file


def test_empty_split_file(tmp_path):
    for name, text in (("forget10.json", "[]"), ("retain90.jsonl", "\n\n")):
        path = write(tmp_path / name, text)
        with pytest.raises(ValueError, match=re.escape(f"{path}: empty split (no records)")):
            load_split(path)


def test_empty_forget_or_retain_dataset(tok, bench):
    ds = QADataset(bench["forget10"][:2], tok, ARGS)
    with pytest.raises(ValueError, match=r"^ForgetRetainDataset: the forget dataset is empty \(nothing to unlearn\)$"):
        ForgetRetainDataset([], ds)
    with pytest.raises(ValueError, match=r"^ForgetRetainDataset: the retain dataset is empty$"):
        ForgetRetainDataset(ds, [])
    with pytest.raises(ValueError, match=r"^retain dataset is empty: expected at least one sample$"):
        check_has_answer_tokens([], "retain")


def test_truncated_answers_are_counted_in_a_warning(tok, bench, caplog):
    records = bench["forget10"]
    with caplog.at_level(logging.WARNING, logger="atwu_plugin.data.qa_dataset"):
        ds = QADataset(records, tok, ARGS, max_length=40, name="forget10")
    assert 0 < ds.n_truncated <= len(records) and ds.n_answer_lost == 0
    messages = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert messages == [f"forget10: {ds.n_truncated} of {len(records)} samples were truncated to max_length=40 "
                        "tokens: the end of the answer is cut; raise max_length to keep it"]
    caplog.clear()
    long_question = [{"question": "Where " * 40 + "?", "answer": "In Lisbon."}]
    with caplog.at_level(logging.WARNING, logger="atwu_plugin.data.qa_dataset"):
        QADataset(long_question, tok, ARGS, max_length=16, name="forget")
    assert caplog.records[0].getMessage() == ("forget: 1 of 1 samples were truncated to max_length=16 tokens: the end "
                                              "of the answer is cut, 1 of them entirely (only the eos is left); raise "
                                              "max_length to keep it")


def _items(tok, bench, n=6):
    records = bench["forget10"][:n]
    return [encode_qa(tok, ARGS, r["question"], r["answer"], 64).as_item(i) for i, r in enumerate(records)]


def test_all_masked_labels_fail_before_training(tok, bench):
    items = _items(tok, bench)
    items[4]["labels"] = torch.full_like(items[4]["labels"], -100)
    pairs = ForgetRetainDataset(items, _items(tok, bench, 3))
    with pytest.raises(ValueError) as err:
        check_has_answer_tokens(pairs)
    n = len(items[4]["labels"])
    assert str(err.value) == (f"forget dataset: sample 4 (index 4) has no answer token: all {n} labels are -100 "
                              "(masked). The prompt probably fills max_length; raise max_length or remove the sample")
    nested = [{0: items[0], 1: items[4]}]  # list-valued answers (perturbed options)
    with pytest.raises(ValueError, match=r"^retain dataset: sample 0\[1\] \(index 4\) has no answer token"):
        check_has_answer_tokens(nested, "retain")


def test_all_masked_labels_stop_build_trainer(micro, tmp_path):
    forget = [dict(micro["forget"][i]) for i in range(len(micro["forget"]))]
    forget[3]["labels"] = torch.full_like(forget[3]["labels"], -100)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"^forget dataset: sample 3 \(index 3\) has no answer token"):
        build_trainer(load_trainer_config("TW_GA"), copy.deepcopy(micro["model"]), micro["tokenizer"], forget,
                      micro["retain"], str(out), seed=0, template_args=ARGS)
    assert not out.exists()


def test_vocabulary_mismatch(micro, tmp_path):
    tok = micro["tokenizer"]
    small = tiny_llama(len(tok) - 12)
    msg = (f"tokenizer/model vocabulary mismatch: the tokenizer has {len(tok)} tokens (ids 0..{len(tok) - 1}) but "
           f"the model's input embedding has {len(tok) - 12} rows (config.vocab_size={len(tok) - 12}); "
           f"ids >= {len(tok) - 12} would index out of range")
    with pytest.raises(ValueError, match=re.escape(msg)):
        check_vocab(tok, small)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=re.escape(msg)):
        build_trainer(load_trainer_config("TW_GA"), small, tok, micro["forget"], micro["retain"], str(out), 0, ARGS)
    assert not out.exists()
    check_vocab(tok, tiny_llama(len(tok) + 64))  # a padded (larger) embedding table is fine


# ---- names and ranges (API) -------------------------------------------------------------------
def _known(kind: str) -> str:
    """The registry's names as the error lists them: adding a weighter or loss to the package
    must not mean editing this test."""
    from atwu_plugin.registry import REGISTRIES

    return ", ".join(REGISTRIES[kind].names())


@pytest.mark.parametrize("override, error, message", [
    ({"handler": "Nope"}, UnknownNameError, "unknown trainer 'Nope'; expected one of: {trainers}"),
    ({"method_args.weighter": "nope"}, UnknownNameError, "unknown token weighter 'nope'; expected one of: {weighters}"),
    ({"method_args.forget_loss.name": "nope"}, UnknownNameError, "unknown forget loss 'nope'; expected one of: {forget_losses}"),
    ({"method_args.retain_loss": "nope"}, UnknownNameError, "unknown retain loss 'nope'; expected one of: {retain_losses}"),
    ({"method_args.normalizer": "mean"}, ValueError,
     "method_args.normalizer: unknown normalizer 'mean'; expected one of: batch_tokens, weight_sum, sequence_mean"),
    ({"method_args.alpah": 1.0}, ValueError, "method_args of TokenWeightedUnlearn: unknown key(s) ['alpah']; expected "
     "some of: alpha, aux_model_path, forget_loss, gamma, normalizer, on_nonfinite, peft, retain_loss, token_log, weighter "
     "(did you mean 'alpha' for 'alpah'?)"),
    ({"args.learning_rat": 1.0}, ValueError, "args: unknown key(s) ['learning_rat']; expected fields of "
     "transformers.TrainingArguments (did you mean 'learning_rate' for 'learning_rat'?)"),
])
def test_unknown_names_list_the_known_ones(override, error, message):
    with pytest.raises(error) as err:
        load_trainer_config("TW_GA", override)
    kinds = ("trainers", "weighters", "forget_losses", "retain_losses")
    assert str(err.value) == message.format(**{k: _known(k) for k in kinds if "{" + k + "}" in message})



def test_the_registries_hold_every_builtin():
    from atwu_plugin.hosts.components import register_builtins
    from atwu_plugin.registry import REGISTRIES

    register_builtins()
    builtin = {
        "trainers": {"ATWU", "PluginRMU", "TokenWeightedUnlearn"},
        "weighters": {"atwu", "oracle", "reference", "retain_frequency", "retain_word_frequency", "same_token", "satimp", "token_unlearn",
                      "token_unlearn_hard", "token_unlearn_soft", "uniform", "wga"},
        "forget_losses": {"ga", "npo", "npo_token", "saturated_prob", "simnpo", "simnpo_token"},
        "retain_losses": {"kl", "nll"},
    }
    for kind, names in builtin.items():
        assert names <= set(REGISTRIES[kind].names()), kind


def test_unknown_trainer_config_and_metric_names():
    with pytest.raises(UnknownNameError, match=r"^unknown trainer config 'TW_Nope'; expected one of: .*\bTW_GA, "):
        load_trainer_config("TW_Nope")
    from atwu_plugin.evals.rwku_eval import RWKUEvaluator
    from atwu_plugin.evals.tofu_metrics import aggregate_truth_ratio

    with pytest.raises(ValueError, match=re.escape("unknown truth ratio aggregator 'median'; expected one of "
                                                   "['closer_to_1_better', 'prob_mean', 'true_better']")):
        aggregate_truth_ratio([1.0], [2.0], "median")
    with pytest.raises(ValueError, match=re.escape("unknown RWKU metric(s) ['rouge']; expected a subset of ['forget'")):
        RWKUEvaluator(None, ARGS, "/nonexistent", ["x"], metrics=["forget", "rouge"])


@pytest.mark.parametrize("trainer, override, message", [
    ("TW_NPO", {"method_args.forget_loss.beta": -1.0}, "method_args.forget_loss: npo: beta must be a number in "
     "(0, inf), got -1.0"),
    ("TW_NPO", {"method_args.forget_loss.beta": 0}, "method_args.forget_loss: npo: beta must be a number in "
     "(0, inf), got 0"),
    ("TW_TokenUnlearnHard", {"method_args.weighter.top_k_fraction": 1.5}, "method_args.weighter: token_unlearn: "
     "top_k_fraction must be a number in (0, 1], got 1.5"),
    ("TW_TokenUnlearnHard", {"method_args.weighter.top_k_fraction": 0.0}, "method_args.weighter: token_unlearn: "
     "top_k_fraction must be a number in (0, 1], got 0.0"),
    ("ATWU", {"method_args.rho": 1.0}, "ATWU method_args.rho=1.0: expected a number in (0, 1)"),
    ("ATWU", {"method_args.rho": 0.0}, "ATWU method_args.rho=0.0: expected a number in (0, 1)"),
    ("TW_GradDiff", {"method_args.alpha": -0.5}, "method_args: alpha must be a number in [0, inf), got -0.5"),
    ("TW_GA", {"args.learning_rate": "1e-4"}, "args: learning_rate must be a number in [0, inf), got '1e-4'"),
    ("TW_GA", {"args.per_device_train_batch_size": 0}, "args: per_device_train_batch_size must be an integer in "
     "[1, inf), got 0"),
    ("TW_GA", {"method_args.on_nonfinite": "ignore"}, "method_args.on_nonfinite='ignore': expected one of stop, skip"),
])
def test_out_of_range_values(trainer, override, message):
    with pytest.raises(ValueError) as err:
        load_trainer_config(trainer, override)
    assert str(err.value) == message


def test_every_shipped_config_validates():
    from atwu_plugin.hosts.lite import trainer_config_names

    for name in trainer_config_names():
        validate_trainer_config(load_trainer_config(name, validate=False), source=name)


# ---- CLI rows: exit 2, one line, nothing written -------------------------------------------------
@pytest.mark.parametrize("argv, fragments", [
    (["trainer=TW_Nope"], ["unknown trainer config 'TW_Nope'; expected one of: ", "TW_GA, TW_GradDiff"]),
    (["trainer=TW_GA", "trainer.method_args.weighter=nope"],
     ["unknown token weighter 'nope'; expected one of: ", "oracle"]),
    (["trainer=TW_NPO", "trainer.method_args.forget_loss.beta=-1"],
     ["method_args.forget_loss: npo: beta must be a number in (0, inf), got -1"]),
    (["trainer=TW_TokenUnlearnSoft", "trainer.method_args.weighter.top_k_fraction=1.5"],
     ["top_k_fraction must be a number in (0, 1], got 1.5"]),
    (["trainer=ATWU", "trainer.method_args.rho=1"], ["ATWU method_args.rho=1: expected a number in (0, 1)"]),
    (["trainer=TW_GA", "trainer.args.learning_rate=-1e-4"],
     ["args: learning_rate must be a number in [0, inf), got -0.0001"]),
    (["trainer=TW_GA", "seed=abc"], ["seed='abc': expected a non-negative integer"]),
    (["trainer=TW_GA", "lr=1"], ["override 'lr=1': unknown key 'lr' for the lite host; expected trainer=, benchmark="]),
    (["trainer=TW_GA", "learning_rate"], ["override 'learning_rate': expected KEY=VALUE"]),
    (["trainer=TW_GA", "trainer.lr=1"], ["trainer override 'lr': expected a key under handler, method_args or args"]),
    (["trainer=TW_GA", "benchmark.zoo=huge"], ["benchmark embedded: zoo='huge'; expected one of ['default', 'demo', 'smoke']"]),
    (["trainer=TW_GA", "benchmark.forget=forget05"], ["benchmark embedded: unknown option(s) benchmark.forget; "
                                                      "expected some of: benchmark.forget_split, benchmark.zoo"]),
    ([], ["missing trainer=NAME; expected one of: ", "TW_GA"]),
])
def test_cli_usage_errors(tmp_path, capsys, argv, fragments):
    out = tmp_path / "out"
    code, err = run_cli(unlearn_cli.main, ["--lite", *argv, f"output_dir={out}"], capsys)
    assert code == 2
    assert_one_error(err, "atwu-unlearn", *fragments)
    assert_nothing_written(out)


def test_cli_unknown_trainer_without_openunlearning(tmp_path, capsys):
    code, err = run_cli(unlearn_cli.main, ["trainer=GradDiff", f"output_dir={tmp_path / 'out'}"], capsys)
    assert code == 2
    assert_one_error(err, "atwu-unlearn", "'trainer=GradDiff' needs OpenUnlearning: set OPEN_UNLEARNING_ROOT",
                     "(without it, trainer= is one of this package's configs: ATWU, PluginRMU, TW_GA,")
    assert_nothing_written(tmp_path / "out")


def test_openunlearning_requested_but_not_found(tmp_path, capsys, monkeypatch):
    argv = ["experiment=unlearn/tofu/default", "trainer=ATWU", "task_name=t"]
    code, err = run_cli(unlearn_cli.main, argv, capsys)
    assert code == 2
    assert_one_error(err, "atwu-unlearn", "'experiment=unlearn/tofu/default' needs OpenUnlearning: set "
                     "OPEN_UNLEARNING_ROOT (or --ou-root) to a checkout of github.com/locuslab/open-unlearning")
    not_ou = tmp_path / "not-ou"
    (not_ou / "src").mkdir(parents=True)
    monkeypatch.setenv(OU, str(not_ou))
    for main, prog in ((unlearn_cli.main, "atwu-unlearn"), (eval_cli.main, "atwu-eval")):
        code, err = run_cli(main, argv, capsys)
        assert code == 2
        assert_one_error(err, prog, f"OPEN_UNLEARNING_ROOT={not_ou} is not an OpenUnlearning checkout: missing "
                         "src/train.py, src/eval.py, configs (expected the root of "
                         "github.com/locuslab/open-unlearning)")
    assert sorted(os.listdir(not_ou)) == ["src"]


def test_yaml_exponents_are_numbers():
    cfg = parse_lite_overrides(["trainer=TW_GA", "trainer.args.learning_rate=1e-4", "trainer.method_args.alpha=2E0"])
    assert cfg["trainer_overrides"] == {"args.learning_rate": 1e-4, "method_args.alpha": 2.0}


# ---- non-finite loss ------------------------------------------------------------------------------
def _micro_trainer(micro, out, **overrides):
    torch.set_num_threads(1)
    cfg = load_trainer_config("TW_GA", {"args.max_steps": 4, "args.per_device_train_batch_size": 4,
                                        "args.save_strategy": "steps", "args.save_steps": 1,
                                        "args.logging_steps": 1, **overrides})
    model = copy.deepcopy(micro["model"])
    trainer = build_trainer(cfg, model, micro["tokenizer"], micro["forget"], micro["retain"], str(out), 0, ARGS)
    return trainer, model


def _poison_logits(trainer, model, steps):
    """Forward hook: NaN logits while the trainer is taking one of ``steps`` (1-based)."""
    def hook(module, inputs, output):
        if trainer.state.global_step + 1 in steps:
            return output * float("nan")
    return model.lm_head.register_forward_hook(hook)


def test_nonfinite_loss_stops_with_step_and_checkpoint(micro, tmp_path):
    out = tmp_path / "run"
    trainer, model = _micro_trainer(micro, out)
    guards = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, NonFiniteLossGuard)]
    assert len(guards) == 1 and guards[0].on_nonfinite == "stop"  # build_trainer installs it
    _poison_logits(trainer, model, steps={3, 4})
    with pytest.raises(NonFiniteLossError) as err:
        trainer.train()
    assert str(err.value) == (
        f"non-finite loss/gradients (NaN or inf) at step 3; last good checkpoint: {out / 'checkpoint-2'}. The update "
        "of step 3 was not applied. Lower the learning rate, check the data, or set method_args.on_nonfinite=skip "
        "to skip such steps")
    assert not (out / "checkpoint-3").exists() and not (out / "results.json").exists()
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN update never happened


def test_nonfinite_loss_without_checkpoint(micro, tmp_path):
    trainer, model = _micro_trainer(micro, tmp_path / "run", **{"args.save_strategy": "no"})
    _poison_logits(trainer, model, steps={1})
    with pytest.raises(NonFiniteLossError, match=re.escape(
            f"at step 1; no checkpoint saved before it in {tmp_path / 'run'} (save_strategy=no)")):
        trainer.train()


def test_nonfinite_steps_skipped_when_configured(micro, tmp_path, caplog):
    trainer, model = _micro_trainer(micro, tmp_path / "via-config", **{"method_args.on_nonfinite": "skip"})
    modes = [cb.on_nonfinite for cb in trainer.callback_handler.callbacks if isinstance(cb, NonFiniteLossGuard)]
    assert modes == ["skip"]

    trainer, model = _micro_trainer(micro, tmp_path / "run", **{"args.save_strategy": "no"})
    trainer.remove_callback(NonFiniteLossGuard)
    guard = NonFiniteLossGuard(on_nonfinite="skip")
    trainer.add_callback(guard)
    _poison_logits(trainer, model, steps={2, 3})
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append(model.lm_head.weight.detach().clone())
    trainer.add_callback(Snapshot())
    with caplog.at_level(logging.WARNING, logger="atwu_plugin.trainers.nonfinite"):
        trainer.train()
    assert guard.n_skipped == 2 and guard.skipped_steps == [2, 3]
    assert torch.equal(snapshots[0], snapshots[1]) and torch.equal(snapshots[1], snapshots[2])  # no update
    assert not torch.equal(snapshots[2], snapshots[3])  # step 4 trains again
    assert all(torch.isfinite(p).all() for p in model.parameters())
    messages = [r.getMessage() for r in caplog.records]
    assert ("non-finite loss/gradients at step 2: update skipped (on_nonfinite=skip; 1 step(s) skipped so far)"
            in messages)
    assert "NonFiniteLossGuard: skipped 2 of 4 step(s) with a non-finite loss/gradients (steps 2, 3)" in messages


def test_skip_mode_can_be_capped(micro, tmp_path):
    trainer, model = _micro_trainer(micro, tmp_path / "run", **{"args.save_strategy": "no"})
    trainer.remove_callback(NonFiniteLossGuard)
    trainer.add_callback(NonFiniteLossGuard(on_nonfinite="skip", max_skips=1))
    _poison_logits(trainer, model, steps={1, 2})
    with pytest.raises(NonFiniteLossError, match=r"at step 2 after skipping 1 step\(s\) \(max_skips=1\)"):
        trainer.train()


# ---- safe loading -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pickled_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pickled")
    tiny_llama(32).save_pretrained(path, safe_serialization=False)
    assert (path / "pytorch_model.bin").exists() and not list(path.glob("*.safetensors"))
    return path


def test_pickled_checkpoint_refused_unless_allowed(pickled_model_dir):
    with pytest.raises(ValueError) as err:
        load_causal_lm(str(pickled_model_dir))
    assert str(err.value) == (
        f"{pickled_model_dir}: only pickled weights found (pytorch_model.bin); refusing to unpickle (it can run "
        "arbitrary code). Convert to safetensors (model.save_pretrained(dir, safe_serialization=True)) or pass "
        "allow_pickle=True if you trust the file.")
    model = load_causal_lm(str(pickled_model_dir), allow_pickle=True)
    assert model.config.vocab_size == 32


def test_cli_eval_refuses_pickle_and_missing_model_before_building_anything(pickled_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(eval_cli.main, ["--lite", f"model_path={pickled_model_dir}", f"output_dir={out}"], capsys)
    assert code == 2
    assert_one_error(err, "atwu-eval", f"{pickled_model_dir}: only pickled weights found (pytorch_model.bin); "
                     "refusing to unpickle")
    missing = tmp_path / "no-such-model"
    code, err = run_cli(eval_cli.main, [f"model_path={missing}", f"output_dir={out}"], capsys)
    assert code == 2
    assert_one_error(err, "atwu-eval", f"{missing}: model directory not found")
    assert_nothing_written(out)


def test_safetensors_preferred_and_missing_paths(tmp_path):
    both = tmp_path / "both"
    tiny_llama(32).save_pretrained(both)  # safetensors
    (both / "pytorch_model.bin").write_bytes(b"not a pickle: must never be opened")
    assert load_causal_lm(str(both)).config.vocab_size == 32
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nope'}: model directory not found")):
        load_causal_lm(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'tok'}: tokenizer directory not found")):
        load_tokenizer(str(tmp_path / "tok"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{empty}: no model weights found (expected *.safetensors)")):
        load_causal_lm(str(empty))


def test_trust_remote_code_is_off_by_default(tmp_path):
    import inspect

    assert inspect.signature(load_causal_lm).parameters["trust_remote_code"].default is False
    assert inspect.signature(load_causal_lm).parameters["allow_pickle"].default is False
    assert inspect.signature(load_tokenizer).parameters["trust_remote_code"].default is False
    repo = tmp_path / "remote"
    repo.mkdir()
    marker = tmp_path / "code-ran"
    (repo / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    (repo / "config.json").write_text(json.dumps({
        "model_type": "evil_model", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "configuration_evil.Evil"},
    }))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(repo / "model.safetensors"))  # complete, so the config is what is refused
    with pytest.raises(ValueError, match=r"set the option `trust_remote_code=True` to remove this error"):
        load_causal_lm(str(repo))
    assert not marker.exists()
