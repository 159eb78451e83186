"""TOFU-real's zoo and benchmark wiring (no real model needed: a tiny Llama and the TOFU files)."""

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from atwu_plugin.zoo.tofu_real import TOFU_REAL_ZOOS, TofuRealZooSpec, quality_probes, retain_records
from atwu_plugin.zoo.trainable import train_only_top_layers

TOFU_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"
needs_tofu = pytest.mark.skipif(not (TOFU_DIR / "full.json").is_file(), reason=f"TOFU data not found at {TOFU_DIR}")


def _tiny_llama(layers=4):
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                      num_attention_heads=2, max_position_embeddings=32, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def test_train_only_top_layers_freezes_everything_below():
    model = _tiny_llama()
    n = train_only_top_layers(model, 2)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("model.layers.2.", "model.layers.3.", "model.norm.")) for name in trainable)
    assert any(name.startswith("model.layers.2.") for name in trainable) and "model.norm.weight" in trainable
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # a training step moves only the top layers; the tied embedding/head does not move
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith(("model.layers.2.", "model.layers.3.", "model.norm.")) for k in moved)
    assert model.model.layers[0].self_attn.q_proj.weight.grad is None


@pytest.mark.parametrize("n", [0, 5, 2.0, None])
def test_train_only_top_layers_rejects_bad_counts(n):
    with pytest.raises(ValueError, match=r"top_layers=.*expected an integer in 1\.\.4"):
        train_only_top_layers(_tiny_llama(), n)


def test_zoo_spec_is_checked():
    with pytest.raises(ValueError, match="forget_split='forget02'"):
        TofuRealZooSpec(forget_split="forget02")
    with pytest.raises(ValueError, match="top_layers=0"):
        TofuRealZooSpec(top_layers=0)
    # the cache key follows every field (a changed recipe rebuilds the models)
    assert TofuRealZooSpec().key("d", "g") != TofuRealZooSpec(top_layers=4).key("d", "g")
    assert TofuRealZooSpec().key("d", "g") != TofuRealZooSpec().key("d", "other-gguf")


@needs_tofu
def test_retain_authors_and_probes():
    from atwu_plugin.data.tofu_splits import TofuSplits

    splits = TofuSplits(TOFU_DIR)
    spec = TOFU_REAL_ZOOS["forget01"]
    retain = retain_records(splits, spec)
    assert len(retain) == 20 * spec.n_retain_authors
    forget_q = {r["question"] for r in splits.qa(spec.forget_split)}
    assert not forget_q & {r["question"] for r in retain}
    probes = quality_probes(splits, spec)
    assert {r["question"] for r in probes["retain"]} <= {r["question"] for r in retain}
    assert len(probes["forget"]) == 40 and len(probes["retain"]) == spec.n_quality
    # 199 retain authors would reach into forget01's two
    with pytest.raises(ValueError, match="n_retain_authors=199 reaches into forget01"):
        retain_records(splits, TofuRealZooSpec(n_retain_authors=199))


@needs_tofu
def test_tofu_real_finetuned_zoo_options():
    from atwu_plugin.tasks import get_benchmark

    bench = get_benchmark("tofu_real", data_dir=str(TOFU_DIR), zoo="forget01")
    assert bench.forget_split == "forget01" and bench.retain_split == "retain99" and bench.top_layers == 8
    assert bench.trainer_args["learning_rate"] == 1.5e-4 and bench.trainer_args["num_train_epochs"] == 3
    with pytest.raises(ValueError, match="zoo='forget01' knows the authors of forget01; forget_split='forget05'"):
        get_benchmark("tofu_real", data_dir=str(TOFU_DIR), zoo="forget01", forget_split="forget05")
    with pytest.raises(ValueError, match="top_layers=0"):
        get_benchmark("tofu_real", data_dir=str(TOFU_DIR), zoo="forget01", top_layers=0)
    # the host's hook trains the configured top layers only
    model = _tiny_llama(layers=30)
    bench.configure_model(model)
    assert sum(p.requires_grad for p in model.parameters()) == 8 * 9 + 1
    pretrained = get_benchmark("tofu_real", data_dir=str(TOFU_DIR))
    model = _tiny_llama()
    pretrained.configure_model(model)  # no top_layers: all weights train
    assert all(p.requires_grad for p in model.parameters())
