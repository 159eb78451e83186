"""LoRA adapters (peft) on the lite host: ``method_args.peft`` trains only adapter weights (the
base weights stay bit-identical), the frozen reference is the base model behind the adapter
(no copy, exact), checkpoints hold the adapter + ATWU state and resume exactly, the adapter
saves as safetensors, merges into a full model, and that model evaluates like the adapter."""

import copy
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.evals.tofu_eval import TofuEvaluator
from atwu_plugin.hosts.lite import build_trainer, load_trainer_config, parse_lite_overrides
from atwu_plugin.trainers.adapters import ADAPTER_WEIGHTS, BaseModelView, adapter_spec
from atwu_plugin.trainers.base import last_complete_checkpoint
from atwu_plugin.zoo.loading import load_causal_lm
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

pytest.importorskip("peft")
from test_interruption import work  # noqa: E402,F401  (fixture: the micro model saved + its records)

BASE = {"args.num_train_epochs": 1, "args.per_device_train_batch_size": 4, "args.learning_rate": 1e-2,
        "method_args.peft": "lora"}


def _trainer(micro, name, out, overrides=None, seed=0):
    cfg = load_trainer_config(name, {**BASE, **(overrides or {})})
    return build_trainer(cfg, copy.deepcopy(micro["model"]), micro["tokenizer"], micro["forget"], micro["retain"],
                         str(out), seed)


def _batch(micro, n=8):
    return TokenLabelCollator(micro["tokenizer"].pad_token_id)([micro["forget"][i] for i in range(n)])


def _base_weights(peft_model) -> dict:
    """The base model's parameters under their original names (peft renames the wrapped
    linears' weights ``...q_proj.base_layer.weight``)."""
    sd = peft_model.get_base_model().state_dict()
    return {k.replace(".base_layer", ""): v for k, v in sd.items() if "lora_" not in k}


@pytest.mark.parametrize("name", ["TW_NPO", "ATWU"])
def test_lora_trains_only_the_adapter_and_resumes_merges_evaluates(micro, tmp_path, name):
    original = {k: v.clone() for k, v in micro["model"].state_dict().items()}
    over = {"args.num_train_epochs": 2, "args.save_strategy": "steps", "args.save_steps": 2, "args.seed": 3}
    full = _trainer(micro, name, tmp_path / "full", over, seed=3)
    n_trainable = sum(p.numel() for p in full.model.parameters() if p.requires_grad)
    assert 0 < n_trainable < 0.5 * sum(p.numel() for p in micro["model"].parameters())
    full.train()

    # only adapter weights changed: every base weight is bit-identical to the original model's
    base = _base_weights(full.model)
    assert base.keys() == original.keys()
    for k, v in original.items():
        assert torch.equal(base[k], v), k
    lora_b = [p for n, p in full.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at 0: the adapter trained

    # the frozen initial model is the base behind the adapter, not a copy, and it is exact
    batch = _batch(micro)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        want = micro["model"](**inputs).logits
        trained = full.model(**inputs).logits
        base_logits = BaseModelView(full.model)(**inputs).logits
    assert torch.equal(base_logits, want)
    assert not torch.allclose(trained, want)
    if name == "TW_NPO":
        assert isinstance(full.ref_model, BaseModelView)

    # checkpoints hold the adapter (safetensors, no full model) + ATWU's state; resume is exact
    ckpt = tmp_path / "full" / "checkpoint-2"
    assert (ckpt / ADAPTER_WEIGHTS).exists() and not (ckpt / "model.safetensors").exists()
    if name == "ATWU":
        assert (ckpt / "atwu_state.safetensors").exists()
    part = _trainer(micro, name, tmp_path / "part", {**over, "args.max_steps": 2}, seed=3)
    part.train()
    resumed = _trainer(micro, name, tmp_path / "part", over, seed=3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    for (n, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), n

    # save the adapter, merge it (the console script's function), load and evaluate the result
    model_dir, adapter_dir, merged_dir = tmp_path / "base", tmp_path / "adapter", tmp_path / "merged"
    micro["model"].save_pretrained(str(model_dir), safe_serialization=True)
    micro["tokenizer"].save_pretrained(str(model_dir))
    full.model.get_base_model().config._name_or_path = str(model_dir)  # the base as a saved directory
    full.model.peft_config["default"].base_model_name_or_path = str(model_dir)
    full.save_model(str(adapter_dir))
    assert {"adapter_config.json", ADAPTER_WEIGHTS} <= set(os.listdir(adapter_dir))
    from atwu_plugin.cli.merge_adapter import main as merge_main

    assert merge_main([str(adapter_dir), "--out", str(merged_dir)]) == 0
    assert (merged_dir / "model.safetensors").exists() and not (merged_dir / "adapter_config.json").exists()
    merged = load_causal_lm(str(merged_dir))
    assert "lora" not in " ".join(n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(**inputs).logits, trained, atol=1e-5)
    splits = micro["splits"]
    evaluator = TofuEvaluator(micro["tokenizer"], TINY_TEMPLATE_ARGS,
                              {"forget": splits["forget10"][:8], "retain": splits["retain90"][:8]},
                              max_new_tokens=4, batch_size=4, progress=False)
    got = evaluator.evaluate(merged)
    via_adapter = evaluator.evaluate(load_causal_lm(str(adapter_dir)))  # an adapter dir loads merged too
    before = evaluator.evaluate(micro["model"])
    assert got["forget_prob"] == pytest.approx(via_adapter["forget_prob"], abs=1e-6)
    assert got["forget_prob"] < before["forget_prob"]  # the unlearning is in the merged model


def test_lora_atwu_sigkill_then_resume_equals_uninterrupted(work, tmp_path):
    """As tests/test_interruption.py, with an adapter: a run killed (SIGKILL) after its first
    complete checkpoint and resumed from it ends with the uninterrupted run's adapter."""
    from test_interruption import _run

    full = _run([work, tmp_path / "full", "ATWU", "--peft", "lora"])
    assert full.wait(timeout=600) == 0, full.stderr.read().decode()[-2000:]
    part_dir = tmp_path / "part"
    part = _run([work, part_dir, "ATWU", "--peft", "lora", "--step-sleep", "0.3"])
    deadline = time.time() + 600
    while last_complete_checkpoint(str(part_dir)) is None:
        assert part.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.1)
    part.send_signal(signal.SIGKILL)
    part.wait()
    assert not (part_dir / "final.safetensors").exists(), "killed too late: the run had finished"
    last = Path(last_complete_checkpoint(str(part_dir)))
    assert (last / ADAPTER_WEIGHTS).exists() and (last / "atwu_state.safetensors").exists()
    resumed = _run([work, part_dir, "ATWU", "--peft", "lora", "--resume", last])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:]
    a, b = load_file(str(tmp_path / "full" / "final.safetensors")), load_file(str(part_dir / "final.safetensors"))
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_merge_refuses_a_non_empty_output_and_a_missing_adapter(tmp_path, capsys):
    from atwu_plugin.cli.merge_adapter import main as merge_main

    assert merge_main([str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x").write_text("keep me")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/nope"}))
    assert merge_main([str(tmp_path / "a"), "--out", str(tmp_path / "m")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "m" / "x").read_text() == "keep me"


@pytest.mark.parametrize("name", ["TW_GradDiff", "TW_WGA", "TW_SimNPO", "TW_SatImp"])
def test_every_trainer_config_trains_an_adapter(micro, tmp_path, name):
    original = {k: v.clone() for k, v in micro["model"].state_dict().items()}
    tr = _trainer(micro, name, tmp_path, {"args.max_steps": 2})
    tr.train()
    base = _base_weights(tr.model)
    assert all(torch.equal(base[k], v) for k, v in original.items())
    assert any(p.abs().sum() > 0 for n, p in tr.model.named_parameters() if "lora_B" in n)


def test_adapter_spec_presets_fields_and_errors():
    assert adapter_spec(None) is None and adapter_spec("none") is None
    lora = adapter_spec("lora")
    assert lora["r"] == 8 and lora["target_modules"] == "all-linear"
    assert adapter_spec({"r": 4, "target_modules": ["q_proj"]}) == {**lora, "r": 4, "target_modules": ["q_proj"]}
    with pytest.raises(ValueError, match="unknown adapter preset"):
        adapter_spec("qlora9")
    with pytest.raises(ValueError, match=r"method_args.peft.r=0: expected an integer >= 1"):
        adapter_spec({"r": 0})
    with pytest.raises(ValueError, match=r"method_args.peft.dropout=1.5"):
        adapter_spec({"dropout": 1.5})
    with pytest.raises(ValueError, match=r"unknown keys \['rank'\]"):
        adapter_spec({"rank": 4})
    # the trainer config is checked before any model is loaded
    with pytest.raises(ValueError, match=r"method_args.peft.alpha=-1"):
        load_trainer_config("ATWU", {"method_args.peft": {"alpha": -1}})


def test_missing_target_module_is_a_clear_error(micro, tmp_path):
    with pytest.raises(ValueError, match=r"target_modules=\['qkv_proj'\].*linear modules of this model: .*q_proj"):
        _trainer(micro, "TW_NPO", tmp_path, {"method_args.peft": {"target_modules": ["qkv_proj"]}})


def test_lite_override_model_peft_reaches_method_args():
    for override in ("model.peft=lora", "+peft=lora"):  # the second as in OpenUnlearning
        cfg = parse_lite_overrides(["trainer=ATWU", override])
        assert cfg["trainer_overrides"] == {"method_args.peft": "lora"}
    cfg = parse_lite_overrides(["trainer=TW_NPO", "model.peft.r=4"])
    assert load_trainer_config("TW_NPO", cfg["trainer_overrides"])["method_args"]["peft"] == {"r": 4}


def test_hydra_override_peft_lora_sets_model_and_trainer(tmp_path):
    """``+peft=lora`` (the plugin's config group, as OpenUnlearning composes it) puts the
    spec under ``model.peft`` and hands it to the trainer as ``method_args.peft``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from atwu_plugin.hosts.lite import CONFIG_DIR

    (tmp_path / "main.yaml").write_text("defaults:\n  - trainer: ATWU\n  - _self_\nmodel:\n  path: x\n")
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "finetune.yaml").write_text("args: {seed: 0}\n")
    (tmp_path / "trainer" / "ATWU.yaml").write_text((CONFIG_DIR / "trainer" / "ATWU.yaml").read_text())
    (tmp_path / "peft").mkdir()
    (tmp_path / "peft" / "lora.yaml").write_text((CONFIG_DIR / "peft" / "lora.yaml").read_text())
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose("main", overrides=["+peft=lora", "++model.peft.r=4"])
        plain = compose("main")
    method_args = OmegaConf.to_container(cfg.trainer.method_args, resolve=True)
    assert method_args["peft"] == {"r": 4, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    assert adapter_spec(method_args["peft"])["r"] == 4
    assert "peft" not in plain.trainer.method_args and "peft" not in plain.model
