"""RWKU on a real model (atwu_plugin/tasks/rwku_real.py, atwu_plugin/evals/rwku_real_eval.py), on a
tiny Llama standing in for the real model and a three-target RWKU directory written to tmp_path."""

import json
import math

import numpy as np
import pytest

from atwu_plugin.data.rwku import open_rwku
from atwu_plugin.evals.rwku_known import answer_probabilities
from atwu_plugin.evals.rwku_real_eval import RWKURealEvaluator
from atwu_plugin.tasks import get_benchmark
from atwu_plugin.tasks.tofu_real import RealTofuZoo
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = {1: "Ada Lovelace", 2: "Alan Turing", 3: "Grace Hopper"}


def _probes(name, split, level, n):
    out = []
    for i in range(n):
        rec = {"subject": name, "level": str(level), "type": "cloze" if level == 1 else "simple question",
               "query": f"{name} fact {i} is ___." if level == 1 else f"What is fact {i} about {name}?",
               "answer": f"answer {i} of {name.split()[0]}"}
        out.append({**rec, "neighbor": "Somebody Else"} if split == "neighbor" else rec)
    return out


@pytest.fixture(scope="module")
def rwku_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rwku")
    for index, name in NAMES.items():
        d = root / "Target" / f"{index}_{name.replace(' ', '_')}"
        d.mkdir(parents=True)
        first = name.split()[0]
        files = {f"forget_level{lv}": _probes(name, "forget", lv, 4 + lv) for lv in (1, 2, 3)}
        files.update({f"neighbor_level{lv}": _probes(name, "neighbor", lv, 3) for lv in (1, 2)})
        files["passage"] = [{"subject": name, "text": f"Passage {i}: {name} did thing {i} in the year {1800 + i}. "
                                                      f"{first} is known for thing {i}."} for i in range(10)]
        files["forget_mia"] = [{"subject": name, "text": f"{name} wrote note {i} about thing {i}.", "ngram": 5}
                               for i in range(6)]
        files["retain_mia"] = [{"subject": name, "text": f"The river {i} flows past town {i} every year.",
                                "ngram": 5} for i in range(6)]
        for kind, records in files.items():
            (d / f"{kind}.json").write_text(json.dumps(records))
    return root


@pytest.fixture(scope="module")
def tiny(rwku_root, tmp_path_factory):
    """A tiny Llama saved to disk (tokenizer included), as the zoo would hand it to the host."""
    from atwu_plugin.zoo.build import TinyLlamaSpec
    from atwu_plugin.zoo.tokenizer import train_tokenizer

    data = open_rwku(rwku_root)
    texts = [p.query + " " + p.answer for t in NAMES for split, lv in (("forget", 1), ("forget", 2), ("forget", 3),
                                                                       ("neighbor", 1), ("neighbor", 2))
             for p in data.probes(t, split, lv)]
    texts += data.passages(list(NAMES)) + [m.text for t in NAMES for w in ("forget", "retain") for m in data.mia(t, w)]
    texts += ["Please complete the blank briefly answer Question"]
    tok = train_tokenizer(texts, vocab_size=400)
    model = TinyLlamaSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                          max_position_embeddings=512).build(tok, seed=0).eval()
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return tok, model, str(path), data


def _bench(rwku_root, tiny_path, **options):
    bench = get_benchmark("rwku_real", target=1, data_root=str(rwku_root), retain_targets="2-3",
                          n_forget=6, n_retain=4, max_tokens=24, n_probes=3, n_mia=4, top_layers=1,
                          trainer_args={"num_train_epochs": 1, "per_device_train_batch_size": 3}, **options)
    bench.zoo = RealTofuZoo(root=tiny_path, tokenizer=tiny_path, base=tiny_path, target=tiny_path, retain={},
                            template_args=TINY_TEMPLATE_ARGS, manifest={"quantisation": "none", "gguf_sha256": "0" * 64})
    return bench


def test_probability_tier_is_the_answer_probability_of_the_same_probes(tiny):
    tok, model, _, data = tiny
    ev = RWKURealEvaluator(tok, TINY_TEMPLATE_ARGS, data, 1, n_probes=3, n_mia=4, mia_max_length=24, batch_size=2)
    assert {k: len(v) for k, v in ev.probes.items()} == {"forget_fb": 3, "forget_qa": 3, "forget_aa": 3,
                                                         "neighbor_fb": 3, "neighbor_qa": 3}
    # the first n probes of each level, as RWKUEvaluator takes them
    assert ev.probes["forget_qa"] == data.probes(1, "forget", 2)[:3]
    fast = ev.evaluate(model, generate=False, utility_terms=False, forget_truth_ratio=False)
    by_hand = {k: float(np.mean(answer_probabilities(model, tok, TINY_TEMPLATE_ARGS, ps, batch_size=1)))
               for k, ps in ev.probes.items()}
    for k, v in by_hand.items():
        assert fast[f"{k}_prob"] == pytest.approx(v, rel=1e-5)
    assert fast["forget_prob"] == pytest.approx((by_hand["forget_fb"] + by_hand["forget_qa"]) / 2, rel=1e-5)
    assert fast["neighbor_prob"] == pytest.approx((by_hand["neighbor_fb"] + by_hand["neighbor_qa"]) / 2, rel=1e-5)
    # no generation in the fast tier: no ROUGE keys; the MIA keys are teacher-forced and present
    assert "forget_fb" not in fast and "neighbor_all" not in fast
    assert 0.0 <= fast["mia_loss_auc"] <= 1.0 and math.isfinite(fast["mia_forget_loss"])
    full = ev.evaluate(model)
    for k in ("forget_fb", "forget_qa", "forget_aa", "neighbor_fb", "neighbor_qa", "mia_loss_auc"):
        assert full[k] is not None and math.isfinite(full[k]), k
    assert full["mia_loss_auc"] == fast["mia_loss_auc"] and full["forget_prob"] == fast["forget_prob"]


def test_evaluator_rejects_bad_sizes_and_targets_without_forget_probes(tiny, tmp_path):
    tok, _, _, data = tiny
    with pytest.raises(ValueError, match="n_probes=0; expected a positive integer"):
        RWKURealEvaluator(tok, TINY_TEMPLATE_ARGS, data, 1, n_probes=0)
    d = tmp_path / "Target" / "9_No_Probes"
    d.mkdir(parents=True)
    (d / "passage.json").write_text(json.dumps([{"subject": "No Probes", "text": "x"}]))
    with pytest.raises(ValueError, match="9_No_Probes has no forget FB or QA probes"):
        RWKURealEvaluator(tok, TINY_TEMPLATE_ARGS, open_rwku(tmp_path), 9)


def test_benchmark_corpora_and_option_checks(rwku_root, tiny, monkeypatch):
    tok, _, path, data = tiny
    bench = _bench(rwku_root, path, forget_format="text")
    # forget: evenly spaced passages of the target; retain: of the other targets, never the target's
    assert bench.forget_passages() == [("Ada Lovelace", data.passages(1)[i]) for i in (0, 1, 3, 5, 6, 8)]
    retain_names = [who for who, _ in bench.retain_passages()]
    assert len(retain_names) == 4 and set(retain_names) == {"Alan Turing", "Grace Hopper"}
    forget, retain = bench.train_datasets(tok)
    assert len(forget) == 6 and len(retain) == 4
    assert all(len(x["input_ids"]) <= 25 for x in list(forget) + list(retain))
    assert all((x["labels"][1:] != -100).all() for x in forget)  # text: every token after the first
    # chat: the passage is the answer to a request about its subject; the loss is on the passage only
    chat, _ = _bench(rwku_root, path, forget_format="chat").train_datasets(tok)
    first = chat[0]
    answer = first["labels"][first["labels"] != -100]
    assert tok.decode(answer).startswith("Passage 0")
    assert "Please tell me about Ada Lovelace." in tok.decode(first["input_ids"][:len(first["input_ids"]) - len(answer)])
    with pytest.raises(ValueError, match="forget_format='qa'; expected one of"):
        get_benchmark("rwku_real", target=1, data_root=str(rwku_root), retain_targets="2", forget_format="qa")
    assert bench.retain_model_path is None and bench.aux_model_path is None
    assert "RWKU target 1_Ada_Lovelace, top 1 layers trained" in bench.model_name
    with pytest.raises(ValueError, match="retain_targets='1-2' includes the forget target 1_Ada_Lovelace"):
        get_benchmark("rwku_real", target=1, data_root=str(rwku_root), retain_targets="1-2")
    with pytest.raises(ValueError, match="n_forget=0; expected a positive integer"):
        get_benchmark("rwku_real", target=1, data_root=str(rwku_root), retain_targets="2", n_forget=0)
    monkeypatch.delenv("RWKU_DATA_ROOT", raising=False)
    with pytest.raises(ValueError, match="no data_root"):
        get_benchmark("rwku_real", target=1)


def test_a_lite_cell_unlearns_and_logs_the_forgetting_trajectory(rwku_root, tiny, tmp_path):
    from atwu_plugin.hosts.lite_cell import run_lite_cell

    _, _, path, _ = tiny
    bench = _bench(rwku_root, path)
    run = run_lite_cell(bench, "ATWU", {"args.learning_rate": 1e-2}, seed=0, out_dir=str(tmp_path / "cell"),
                        log=lambda *a: None, trajectory_points=1)
    m = run["metrics"]
    for k in ("forget_prob", "neighbor_prob", "forget_fb", "neighbor_all", "mia_loss_auc"):
        assert m[k] is not None and math.isfinite(m[k]), k
    steps = [p["step"] for p in run["trajectory"]]
    assert steps == [0, 2]  # 6 forget passages at batch 3: 2 steps; the last point is the final evaluation
    assert run["trajectory"][-1]["forget_prob"] == m["forget_prob"]
    # unlearning moved the forget answers down from the start
    assert m["forget_prob"] < run["trajectory"][0]["forget_prob"]


def test_openunlearning_handler_gives_the_lite_corpus(rwku_root, tiny):
    """RWKUCorpusDataset(corpus=passage_chat), the dataset of experiment=unlearn/rwku/real, holds
    the same items as the lite benchmark's forget and retain sets (no OU needed)."""
    from atwu_plugin.hosts.ou_rwku import RWKUCorpusDataset

    tok, _, path, _ = tiny
    forget, retain = _bench(rwku_root, path).train_datasets(tok)
    for lite, targets, n in ((forget, "1", 6), (retain, "2-3", 4)):
        ou = RWKUCorpusDataset(str(rwku_root), targets, corpus="passage_chat", max_length=24, n_passages=n,
                               tokenizer=tok, template_args=TINY_TEMPLATE_ARGS)
        assert len(ou) == len(lite)
        for i in range(len(ou)):
            assert set(ou[i]) == {"input_ids", "labels", "attention_mask", "index"}
            assert all(ou[i][k].tolist() == lite[i][k].tolist() for k in ("input_ids", "labels", "attention_mask"))
    with pytest.raises(ValueError, match="passage_chat needs the model's template_args"):
        RWKUCorpusDataset(str(rwku_root), "1", corpus="passage_chat", tokenizer=tok)
