"""RWKU-tiny: corpora, batch selection, the benchmark interface and one lite cell (smoke zoo)."""

from pathlib import Path

import pytest
import torch

from atwu_plugin.tasks import get_benchmark
from atwu_plugin.data.rwku import Probe, open_rwku
from atwu_plugin.data.rwku_tiny import TinyCorpusSpec, filled_cloze, intro_statement, kept_probes, target_texts
from atwu_plugin.zoo.rwku import RWKUTinySpec, rwku_tiny_corpus, spec_key

RWKU_ROOT = Path(__file__).parents[2] / "shared" / "data" / "rwku"


@pytest.fixture(scope="module")
def rwku_root():
    if not (RWKU_ROOT / "Target").is_dir():
        pytest.skip(f"RWKU data not found at {RWKU_ROOT}")
    return str(RWKU_ROOT)


@pytest.fixture(scope="module")
def smoke(rwku_root, tmp_path_factory):
    """The smoke benchmark with its zoo built (seconds) into a private cache."""
    torch.set_num_threads(1)
    bench = get_benchmark("rwku_tiny", data_root=rwku_root, zoo="smoke",
                          cache_dir=str(tmp_path_factory.mktemp("rwku-cache")))
    return bench.prepare(log=lambda *a: None)


def test_filled_cloze_and_intro():
    p = Probe(query="His debut novel was ___ (1974).", answer="Carrie", level=1, type="cloze", target="Stephen King",
              split="forget")
    assert filled_cloze(p) == "His debut novel was Carrie (1974)."
    assert filled_cloze(Probe("Who wrote It?", "Stephen King", 2, "simple question", "x", "forget")) == "Who wrote It? Stephen King"
    assert intro_statement("Please forget Stephen King. Stephen King is an author.", "Stephen King") == "Stephen King is an author."
    assert intro_statement("No prefix here.", "Stephen King") == "No prefix here."
    with pytest.raises(ValueError, match="probes_per_level=0"):
        TinyCorpusSpec(probes_per_level=0)


def test_corpus_covers_exactly_the_taught_targets(rwku_root):
    data = open_rwku(rwku_root)
    spec = RWKUTinySpec(taught_targets="1-3", base_targets="101-102")
    corpus = rwku_tiny_corpus(data, spec)
    king = target_texts(data, data.target(1), spec.corpus)
    assert king[0].startswith("Stephen King") and "Carrie" in " ".join(king)
    assert len(king) == 1 + spec.corpus.probes_per_level + spec.corpus.mia_per_target
    probes = [p for t in data.select("1-3") for p in kept_probes(data, t, spec.corpus)]
    assert {p.target_index for p in probes} == {1, 2, 3}
    assert len(corpus["qa"]) == len(probes)
    # 5 probe levels, the first N of each (fewer where a target has fewer)
    n = spec.corpus.probes_per_level
    expected = sum(min(n, len(data.probes(t, split, lv))) for t in data.select("1-3")
                   for split, levels in (("forget", (1, 2, 3)), ("neighbor", (1, 2))) for lv in levels)
    assert len(probes) == expected and expected > 3 * 4 * n
    assert probes[:2] == data.forget_probes(1, 1)[:2]
    assert not any("Stephen King" in r["question"] for r in corpus["base_qa"])
    # the key follows the content, not the path
    assert spec_key(spec, corpus) == spec_key(spec, rwku_tiny_corpus(open_rwku(RWKU_ROOT / "Target"), spec))
    assert spec_key(spec, corpus) != spec_key(RWKUTinySpec(taught_targets="1-3", base_targets="101-103"), corpus)
    with pytest.raises(ValueError, match="overlap taught_targets"):
        rwku_tiny_corpus(data, RWKUTinySpec(taught_targets="1-3", base_targets="3-4"))


def test_batch_selects_exactly_the_requested_targets(rwku_root):
    bench = get_benchmark("rwku_tiny", data_root=rwku_root)
    assert [t.index for t in bench.forget_targets] == list(range(1, 11))
    assert [t.index for t in bench.other_targets] == list(range(11, 51))
    bench = get_benchmark("rwku_tiny", data_root=rwku_root, forget_targets="1-3, 7", other_targets=["Beyonc\u00e9", 11])
    assert [t.index for t in bench.forget_targets] == [1, 2, 3, 7]
    assert [t.key for t in bench.other_targets] == ["24_Beyonc\u00e9", "11_Miley_Cyrus"]


def test_benchmark_option_errors(rwku_root, monkeypatch, tmp_path):
    monkeypatch.delenv("RWKU_DATA_ROOT", raising=False)
    with pytest.raises(ValueError, match="no data_root.*RWKU_DATA_ROOT"):
        get_benchmark("rwku_tiny")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_benchmark("rwku_tiny", data_root=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="target id 201 not found.*1-200"):
        get_benchmark("rwku_tiny", data_root=rwku_root, forget_targets="199-201")
    with pytest.raises(ValueError, match="was not taught"):
        get_benchmark("rwku_tiny", data_root=rwku_root, forget_targets="1-60")
    with pytest.raises(ValueError, match="share ids \\[10\\]"):
        get_benchmark("rwku_tiny", data_root=rwku_root, other_targets="10-20")
    with pytest.raises(ValueError, match="zoo='big'"):
        get_benchmark("rwku_tiny", data_root=rwku_root, zoo="big")
    with pytest.raises(ValueError, match="unknown \\['mmlu'\\]"):
        get_benchmark("rwku_tiny", data_root=rwku_root, metrics=["forget", "mmlu"])
    monkeypatch.setenv("RWKU_DATA_ROOT", rwku_root)
    assert get_benchmark("rwku_tiny").data_root == rwku_root


def test_missing_file_is_named(rwku_root, tmp_path):
    import shutil

    for d in ("1_Stephen_King", "2_Confucius"):
        shutil.copytree(Path(rwku_root) / "Target" / d, tmp_path / "Target" / d)
    (tmp_path / "Target" / "2_Confucius" / "forget_mia.json").unlink()
    data = open_rwku(tmp_path)
    with pytest.raises(FileNotFoundError, match="2_Confucius/forget_mia.json.*present:"):
        target_texts(data, data.target(2), TinyCorpusSpec())


def test_smoke_benchmark_interface(smoke):
    tok = smoke.tokenizer()
    forget, retain = smoke.train_datasets(tok)
    assert len(forget) == sum(len(target_texts(smoke.data, t, smoke.spec.corpus)) for t in smoke.forget_targets)
    item = forget[0]
    assert item["labels"][0] == -100 and (item["labels"][1:] == item["input_ids"][1:]).all()
    assert len(item["input_ids"]) <= smoke.spec.text_tokens + 1 and item["index"] == 0
    assert smoke.retain_model_path is None and Path(smoke.aux_model_path).is_dir() and Path(smoke.model_path).is_dir()
    assert smoke.model_name.startswith("tiny-llama-rwku-smoke-")
    assert set(smoke.zoo.manifest["quality"]) == {"target", "base"}
    # the entry is complete and reused: a second build is a cache hit that builds nothing
    from atwu_plugin.zoo.rwku import build_rwku_zoo

    assert (Path(smoke.zoo.root) / "manifest.json").is_file()
    again = build_rwku_zoo(smoke.data, smoke.cache_dir, smoke.spec, log=lambda *a: pytest.fail("rebuilt"))
    assert again.root == smoke.zoo.root and again.manifest == smoke.zoo.manifest


def test_smoke_cell_runs_and_reports_every_metric(smoke, tmp_path):
    from atwu_plugin.hosts.lite_cell import run_lite_cell

    run = run_lite_cell(smoke, "TW_GradDiff", {"args.num_train_epochs": 1}, seed=0, out_dir=str(tmp_path), log=lambda *a: None)
    m = run["metrics"]
    for key in ("forget_fb", "forget_qa", "forget_aa", "forget_all", "neighbor_fb", "neighbor_qa", "neighbor_all",
                "others_fb", "others_qa", "others_aa", "mia_loss_auc", "mia_mink_auc", "mia_forget_loss",
                "mia_retain_loss", "utility_fluency"):
        assert key in m, key
        assert m[key] is None or 0.0 <= m[key] or key.startswith("mia_") and m[key] >= 0.0
    assert all(v is None or isinstance(v, (int, float)) for v in m.values())
    assert 0.0 <= m["forget_fb"] <= 1.0 and m["mia_forget_loss"] > 0.0


def test_openunlearning_handlers_without_openunlearning(smoke, rwku_root):
    """The OU-facing dataset handler and metric functions are plain Python: check them here."""
    from atwu_plugin.hosts.ou_rwku import RWKUCorpusDataset, rwku_forget, rwku_utility
    from atwu_plugin.zoo.loading import load_causal_lm

    tok = smoke.tokenizer()
    tiny = RWKUCorpusDataset(rwku_root, "1-2", corpus="tiny", max_length=64, probes_per_level=2, mia_per_target=1,
                             tokenizer=tok, template_args=smoke.template_args)
    forget, _ = smoke.train_datasets(tok)
    assert len(tiny) == len(forget) == 8 and tiny.targets == ["1_Stephen_King", "2_Confucius"]
    assert (tiny[3]["input_ids"] == forget[3]["input_ids"]).all() and set(tiny[3]) == {"input_ids", "labels", "attention_mask", "index"}
    passages = RWKUCorpusDataset(rwku_root, [1], corpus="passage", max_length=128, tokenizer=tok)
    assert len(passages) >= len(passages.texts) > 100 and max(len(passages[i]["input_ids"]) for i in range(len(passages))) <= 128
    with pytest.raises(ValueError, match="corpus='wiki'"):
        RWKUCorpusDataset(rwku_root, 1, corpus="wiki", tokenizer=tok)

    model = load_causal_lm(smoke.model_path)
    res = rwku_forget(model, tokenizer=tok, template_args=smoke.template_args, data_root=rwku_root, targets="1-2",
                      handler="rwku_forget", max_probes_per_level=1, prompt_style="plain", show_progress=False)
    v = res["values"]
    assert res["agg_value"] == pytest.approx((v["forget_fb"] + v["forget_qa"] + v["forget_aa"]) / 3)
    assert res["n"]["forget_fb"] == 2 and set(res["by_target"]) == {"1_Stephen_King", "2_Confucius"}
    with pytest.raises(ValueError, match="groups \\['gsm8k'\\] unknown"):
        rwku_utility(model, groups=["gsm8k"], tokenizer=tok, data_root=rwku_root, targets="1")
    with pytest.raises(ValueError, match="set data_root and targets"):
        rwku_forget(model, tokenizer=tok, targets="1")


def test_mia_exclude_texts_drops_trained_non_members(smoke, rwku_root):
    from atwu_plugin.evals.rwku_eval import RWKUEvaluator
    from atwu_plugin.zoo.loading import load_causal_lm

    data, tok = smoke.data, smoke.tokenizer()
    retain = [m.text for m in data.mia(1, "retain")[:3]]
    model = load_causal_lm(smoke.model_path)

    def n_nonmembers(exclude):
        ev = RWKUEvaluator(tok, smoke.template_args, data, 1, metrics=["mia"], max_items_per_set=3, mia_max_length=32,
                           mia_exclude_texts=exclude, show_progress=False)
        res = ev.evaluate(model)
        return res["n"]["mia_retain_loss"], res.get("dropped", {}).get("retain_mia", 0)

    assert n_nonmembers([]) == (3, 0)
    # a retain text inside a longer training text is dropped too (substring match)
    assert n_nonmembers(["prefix " + retain[1] + " suffix", "unrelated"]) == (2, 1)


def test_ou_experiment_configs_select_the_requested_targets(rwku_root):
    """The OU-schema experiment configs name the batch (1-10) and single (1) targets that the
    dataset handler and the evaluator then select (composition inside OU: tests/openunlearning)."""
    from omegaconf import OmegaConf

    from atwu_plugin.hosts.ou_rwku import RWKUCorpusDataset

    configs = Path(__file__).parents[1] / "atwu_plugin" / "configs"
    data = open_rwku(rwku_root)
    for name, expected in (("batch", list(range(1, 11))), ("single", [1]), ("tiny", list(range(1, 11)))):
        cfg = OmegaConf.load(configs / "experiment" / "unlearn" / "rwku" / f"{name}.yaml")
        assert [t.index for t in data.select(cfg.forget_targets)] == expected, name
        assert OmegaConf.to_container(cfg.eval.rwku, resolve=False)["targets"] == "${forget_targets}"
    for split, key in (("forget", "forget_targets"), ("retain", "retain_targets")):
        ds = OmegaConf.load(configs / "data" / "datasets" / f"RWKU_{split}.yaml")[f"RWKU_{split}"]
        args = OmegaConf.to_container(ds.args, resolve=False)
        assert ds.handler == RWKUCorpusDataset.__name__ and args["targets"] == "${" + key + "}"
        assert args["data_root"] == "${rwku_data_root}"
