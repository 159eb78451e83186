"""The ``tofu_tiny`` benchmark: data-dir checks, split structure, the smoke zoo (cache hit),
and the second label source (``token_kind_proxy``) through collator and trainer."""

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from atwu_plugin.tasks import get_benchmark
from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.data.proxy_kinds import PROXY_KEY, attach_proxy_kinds, proxy_kinds
from atwu_plugin.data.tofu_splits import TofuSplits, check_data_dir, evenly_spaced
from atwu_plugin.evals.span_alignment import span_alignment
from atwu_plugin.hosts.lite import build_trainer, load_trainer_config
from atwu_plugin.losses.tokens import answer_mask
from atwu_plugin.tokens import KIND_IGNORE, KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.trainers.token_log import SpanAlignmentCollector, span_bootstrap, span_metrics
from atwu_plugin.zoo.loading import load_causal_lm

torch.set_num_threads(1)
TOFU_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"
needs_tofu = pytest.mark.skipif(not (TOFU_DIR / "full.json").is_file(), reason=f"TOFU data not at {TOFU_DIR}")


# ----------------------------------------------------------------------------- options
def test_data_dir_is_required():
    with pytest.raises(ValueError, match="data_dir is required"):
        get_benchmark("tofu_tiny")


def test_data_dir_missing_or_incomplete(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        get_benchmark("tofu_tiny", data_dir=str(tmp_path / "nope"))
    (tmp_path / "full.json").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match=r"missing TOFU files retain90\.json"):
        get_benchmark("tofu_tiny", data_dir=str(tmp_path))


def test_data_dir_env_var(monkeypatch):
    monkeypatch.delenv("ATWU_TEST_TOFU", raising=False)
    with pytest.raises(ValueError, match="environment variable ATWU_TEST_TOFU is not set"):
        check_data_dir("${ATWU_TEST_TOFU}")
    if TOFU_DIR.is_dir():
        monkeypatch.setenv("ATWU_TEST_TOFU", str(TOFU_DIR))
        assert check_data_dir("${ATWU_TEST_TOFU}") == TOFU_DIR


@needs_tofu
@pytest.mark.parametrize("option, value, message", [
    ("forget_split", "forget20", "forget_split='forget20'; expected one of"),
    ("zoo", "huge", "zoo='huge'; expected one of"),
    ("n_forget_eval", 0, "n_forget_eval=0; expected a positive integer"),
])
def test_bad_options(option, value, message):
    with pytest.raises(ValueError, match=message):
        get_benchmark("tofu_tiny", data_dir=str(TOFU_DIR), **{option: value})


# ----------------------------------------------------------------------------- splits
@needs_tofu
def test_splits_structure():
    s = TofuSplits(TOFU_DIR)
    full, forget, retain = s.qa("full"), s.qa("forget10"), s.qa("retain90")
    assert len(full) == 4000 and len(forget) == 400 and len(retain) == 3600
    assert full[:3600] == retain and full[3600:] == forget  # TOFU: retain first, forget last
    fs = s.forget_with_spans("forget05")
    assert len(fs) == 200 and all("spans" in r for r in fs)
    smoke = TofuSplits(TOFU_DIR, author_stride=20)  # authors 199, 179, ..., 19
    assert len(smoke.qa("full")) == 200 and len(smoke.qa("forget10")) == 20
    assert smoke.qa("forget10") == smoke.qa("forget01") == full[3980:]
    assert len(smoke.holdout("holdout10")) == 20 and len(smoke.qa("retain90")) == 180


def test_evenly_spaced():
    assert evenly_spaced(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert evenly_spaced(list(range(3)), 5) == [0, 1, 2]
    with pytest.raises(ValueError):
        evenly_spaced(list(range(3)), 0)


# ----------------------------------------------------------------------------- proxy labels
def test_collator_pads_proxy_kinds():
    items = [{"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor([-100, 2, 3]),
              "token_kind": torch.tensor([KIND_NONE, 0, 1]), PROXY_KEY: torch.tensor([KIND_NONE, 1, -1])},
             {"input_ids": torch.tensor([1, 2]), "labels": torch.tensor([-100, 2]),
              "token_kind": torch.tensor([KIND_NONE, 0]), PROXY_KEY: torch.tensor([KIND_NONE, 0])}]
    batch = TokenLabelCollator(0)(items)
    assert batch[PROXY_KEY].tolist() == [[KIND_NONE, 1, -1], [KIND_NONE, 0, KIND_NONE]]


def test_proxy_kinds_follow_the_thresholds(micro):
    """Target = retain: d = 0 everywhere -> every answer token generic, nothing specific."""
    items = [micro["forget"][i] for i in range(6)]
    kinds = proxy_kinds(items, micro["model"], micro["model"], micro["tokenizer"].pad_token_id, batch_size=4)
    for it, row in zip(items, kinds):
        mask = answer_mask(it["labels"][None])[0]
        assert len(row) == len(it["labels"])
        assert all(k == KIND_TEMPLATE for k, m in zip(row, mask) if m)
        assert all(k == KIND_NONE for k, m in zip(row, mask) if not m)


def test_attach_proxy_kinds_checks_lengths(micro):
    ds = copy.deepcopy(micro["forget"])
    with pytest.raises(ValueError, match="proxy label rows"):
        attach_proxy_kinds(ds, [[0]])
    with pytest.raises(ValueError, match="item 0"):
        attach_proxy_kinds(ds, [[0]] * len(ds))


def _train_with_proxy(micro, tmp_path, make_proxy):
    forget = copy.deepcopy(micro["forget"])
    attach_proxy_kinds(forget, [make_proxy(it["token_kind"]).tolist() for it in forget.items])
    cfg = load_trainer_config("TW_WGA", {"args.num_train_epochs": 1, "args.per_device_train_batch_size": 4,
                                         "args.learning_rate": 1e-3})
    tr = build_trainer(cfg, copy.deepcopy(micro["model"]), micro["tokenizer"], forget, micro["retain"],
                       str(tmp_path), 0)
    tr.train()
    return tr


def _swap(k):
    out = k.clone()
    out[k == KIND_SPECIFIC], out[k == KIND_TEMPLATE] = KIND_TEMPLATE, KIND_SPECIFIC
    return out


def test_span_metrics_report_the_proxy_source(micro, tmp_path):
    # proxy == word labels: both sources give identical metrics
    same = span_metrics(_train_with_proxy(micro, tmp_path / "same", lambda k: k.clone()))
    assert same["span_auroc"] is not None
    for key in ("span_auroc", "span_ap", "span_precision_at_k", "span_n_pos", "span_n_neg"):
        assert same[f"{key}_proxy"] == same[key]
    # proxy = word labels with specific and generic swapped: the proxy metrics are those of the
    # same weights against the swapped kinds (weights and proxy kinds stay aligned), and differ
    tr = _train_with_proxy(micro, tmp_path / "swap", _swap)
    span = span_metrics(tr)
    collector = next(c for c in tr.callback_handler.callbacks if isinstance(c, SpanAlignmentCollector))
    expected = span_alignment(torch.cat(collector.weights["token_kind"]), _swap(torch.cat(collector.kinds["token_kind"])))
    assert {k: span[(k if k.startswith("span_") else f"span_{k}") + "_proxy"] for k in expected} == expected
    assert span["span_auroc_proxy"] != span["span_auroc"] and span["span_n_pos_proxy"] != span["span_n_pos"]
    # the fixed resamplings of the forget samples (evals/sample_bootstrap.py): one set per source,
    # over every forget sample, centred on the full-data AUROC
    boot = span_bootstrap(tr)
    assert set(boot) == {"span_auroc", "span_auroc_proxy"}
    for key in boot:
        assert boot[key]["n_samples"] == len(micro["forget"]) and len(boot[key]["values"]) == 1000
        values = [v for v in boot[key]["values"] if v is not None]
        assert len(values) > 900 and min(values) < span[key] < max(values)
        assert np.median(values) == pytest.approx(span[key], abs=0.05)


def test_no_proxy_keys_without_the_second_source(micro, tmp_path):
    cfg = load_trainer_config("TW_WGA", {"args.num_train_epochs": 1, "args.per_device_train_batch_size": 4})
    tr = build_trainer(cfg, copy.deepcopy(micro["model"]), micro["tokenizer"], micro["forget"], micro["retain"],
                       str(tmp_path), 0)
    tr.train()
    span = span_metrics(tr)
    assert span["span_auroc"] is not None and not any(k.endswith("_proxy") for k in span)


# ----------------------------------------------------------------------------- smoke zoo
@pytest.fixture(scope="module")
def smoke_bench(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tofu-cache")
    bench = get_benchmark("tofu_tiny", data_dir=str(TOFU_DIR), zoo="smoke", cache_dir=str(cache),
                          n_forget_eval=10, n_retain_eval=10, n_holdout_eval=10, max_new_tokens=16)
    return bench.prepare(log=lambda *a: None)


@needs_tofu
@pytest.mark.slow
def test_smoke_zoo_builds_then_hits_the_cache(smoke_bench):
    zoo = smoke_bench.zoo
    for path in (zoo.tokenizer, zoo.base, zoo.target, zoo.retain["retain90"]):
        assert os.path.isfile(os.path.join(path, "config.json" if path != zoo.tokenizer else "tokenizer.json"))
    q = zoo.manifest["models"]["target"]["quality"]
    assert 0 <= q["forget10_rouge"] <= 1 and 0 < q["forget10_prob"] < 1
    stamp = os.path.getmtime(os.path.join(zoo.target, "finetune.json"))
    again = get_benchmark("tofu_tiny", data_dir=str(TOFU_DIR), zoo="smoke", cache_dir=smoke_bench.cache_dir)
    again.prepare(log=lambda *a: pytest.fail(f"cache miss: {a}"))
    assert again.zoo.root == zoo.root and os.path.getmtime(os.path.join(zoo.target, "finetune.json")) == stamp


@needs_tofu
@pytest.mark.slow
def test_smoke_benchmark_datasets_carry_both_label_sources(smoke_bench):
    tok = smoke_bench.tokenizer()
    forget, retain = smoke_bench.train_datasets(tok)
    assert len(forget) == 20 and len(retain) == 180
    kinds = torch.cat([it["token_kind"] for it in forget.items])
    proxy = torch.cat([it[PROXY_KEY] for it in forget.items])
    assert (kinds == KIND_SPECIFIC).any() and (kinds == KIND_TEMPLATE).any()
    assert ((kinds == KIND_NONE) == (proxy == KIND_NONE)).all()  # the same answer positions
    assert set(proxy.unique().tolist()) <= {KIND_NONE, KIND_IGNORE, KIND_TEMPLATE, KIND_SPECIFIC}
    # cached: a second call reads the same labels back
    forget2, _ = smoke_bench.train_datasets(tok)
    assert all(torch.equal(a[PROXY_KEY], b[PROXY_KEY]) for a, b in zip(forget.items, forget2.items))
    metrics = smoke_bench.evaluator(tok).evaluate(load_causal_lm(smoke_bench.model_path))
    for key in ("forget_quality", "model_utility", "forget_rouge", "holdout_prob", "kl_to_retain", "ra_rouge"):
        assert metrics[key] is not None, key


# ----------------------------------------------------------------------------- class sizes
@needs_tofu
def test_class_sizes_match_label_stats_for_the_word_labels(tok):
    from atwu_plugin.data.label_class_sizes import class_sizes_by_type
    from atwu_plugin.data.qa_dataset import QADataset
    from atwu_plugin.data.tofu_labels import label_stats, tofu_records_with_spans
    from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

    records = tofu_records_with_spans(TOFU_DIR, "forget01")
    ds = QADataset(records, tok, TINY_TEMPLATE_ARGS, max_length=512)
    sizes = class_sizes_by_type(records, [it["token_kind"].tolist() for it in ds.items], tok, TINY_TEMPLATE_ARGS, 512)
    ref = label_stats(records, tok, TINY_TEMPLATE_ARGS, max_length=512)
    for t, row in ref["by_type"].items():
        assert (sizes[t]["specific"], sizes[t]["generic"], sizes[t]["unlabelled"], sizes[t]["total"]) == \
            (row["specific"], row["template"], row["ignore"], row["total"]), t
    assert sizes["eos"]["total"] == ref["eos"]["n"] == len(records)
    assert sizes["all"]["total"] == ref["n_tokens"]
