"""Which RWKU targets a model knows (atwu_plugin/evals/rwku_known.py, scripts/rwku_known_targets.py),
on a tiny Llama and a three-target RWKU directory written to tmp_path."""

import json
import math
import runpy
from pathlib import Path

import pytest
import torch

from atwu_plugin.data.rwku import Probe, open_rwku, probe_prompt
from atwu_plugin.evals.rwku_eval import RWKUEvaluator
from atwu_plugin.evals.rwku_known import (
    answer_probabilities,
    pick_targets,
    probe_features,
    probe_kind,
    rank_targets,
    target_knowledge,
)
from atwu_plugin.tokens import IGNORE_INDEX
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SCRIPT = Path(__file__).parents[1] / "scripts" / "rwku_known_targets.py"

# (id, name, {file kind: number of probes}); target 3 has fewer probes than the script's cap of 2
FILES = ("forget_level1", "forget_level2", "neighbor_level1", "neighbor_level2")
TARGETS = [(1, "Ada Lovelace", dict(zip(FILES, (5, 3, 4, 2)))),
           (2, "Alan Turing", dict(zip(FILES, (3, 4, 3, 3)))),
           (3, "Grace Hopper", dict(zip(FILES, (1, 2, 1, 2))))]


def _record(name, kind, i):
    level = kind[-1]
    rec = {"subject": name, "level": level, "type": "cloze" if level == "1" else "simple question",
           "query": (f"{name} fact {i} is ___." if level == "1" else f"What is fact {i} about {name}?"),
           "answer": f"answer {i} of {name.split()[0]}"}
    return {**rec, "neighbor": "Somebody Else"} if kind.startswith("neighbor") else rec


@pytest.fixture(scope="module")
def rwku_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rwku")
    for index, name, counts in TARGETS:
        d = root / "Target" / f"{index}_{name.replace(' ', '_')}"
        d.mkdir(parents=True)
        for kind, n in counts.items():
            (d / f"{kind}.json").write_text(json.dumps([_record(name, kind, i) for i in range(n)]))
    return root


@pytest.fixture(scope="module")
def data(rwku_root):
    return open_rwku(rwku_root)


@pytest.fixture(scope="module")
def tiny(data):
    from atwu_plugin.zoo.build import TinyLlamaSpec
    from atwu_plugin.zoo.tokenizer import train_tokenizer

    probes = [p for t in (1, 2, 3) for lv in (1, 2) for split in ("forget", "neighbor")
              for p in data.probes(t, split, lv)]
    texts = [p.query + " " + p.answer for p in probes] + ["Please complete the blank briefly answer"]
    tok = train_tokenizer(texts, vocab_size=300)
    model = TinyLlamaSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          max_position_embeddings=512).build(tok, seed=0).eval()
    return tok, model, probes


def _direct_probability(model, tok, data, probe, prompt_style):
    """The probability by hand, on the prompt of a fully built RWKUEvaluator, one probe at a time."""
    ev = RWKUEvaluator(tok, TINY_TEMPLATE_ARGS, data, [probe.target_index], metrics=["forget"],
                       show_progress=False)
    prompt = ev.render(*probe_prompt(probe, prompt_style))
    sep = "" if prompt.endswith(("\n", " ")) else " "
    ids = ev.encode(prompt + sep + probe.answer)
    n_prompt = len(ev.encode(prompt))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    nll = [-logp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids))]
    return math.exp(-sum(nll) / len(nll))


def test_probabilities_match_a_direct_computation(tiny, data):
    tok, model, probes = tiny
    # several lengths in one call, batch 3: length sorting and padding must not change a value
    for style in ("rwku", "plain"):
        got = answer_probabilities(model, tok, TINY_TEMPLATE_ARGS, probes, batch_size=3, prompt_style=style)
        assert got.shape == (len(probes),)
        for i in (0, 7, len(probes) - 1):
            assert got[i] == pytest.approx(_direct_probability(model, tok, data, probes[i], style), rel=1e-5)
    alone = answer_probabilities(model, tok, TINY_TEMPLATE_ARGS, probes[7:8], batch_size=1)
    assert alone[0] == pytest.approx(_direct_probability(model, tok, data, probes[7], "rwku"), rel=1e-5)
    assert answer_probabilities(model, tok, TINY_TEMPLATE_ARGS, []).shape == (0,)


def test_labels_cover_exactly_the_answer(tiny):
    tok, _, probes = tiny
    p = probes[0]
    for style, text in (("rwku", " " + p.answer), ("plain", p.answer)):  # "...Answer:" vs "...Answer:\n"
        (feat,) = probe_features(tok, TINY_TEMPLATE_ARGS, [p], style)
        answer_ids = feat["labels"][feat["labels"] != IGNORE_INDEX]
        assert tok.decode(answer_ids) == text
        assert feat["input_ids"][-len(answer_ids):].tolist() == answer_ids.tolist()


def _probe(index, split, level, target=None):
    return Probe(query="q", answer="a", level=level, type="", target=target or f"T{index}", split=split,
                 target_index=index)


# hand-made probabilities: target -> kind -> values
HAND = {1: {("forget", 1): [0.2, 0.4], ("forget", 2): [0.6], ("neighbor", 1): [0.1], ("neighbor", 2): [0.3]},
        2: {("forget", 1): [0.9], ("forget", 2): [0.5, 0.7], ("neighbor", 1): [0.05],
            ("neighbor", 2): [0.05]},
        3: {("forget", 1): [0.1], ("neighbor", 2): [0.5]},  # no forget QA probes
        4: {("forget", 2): [0.4]}}  # no neighbour probes


def _hand_rows():
    probes, probs = [], []
    for index in (3, 1, 4, 2):  # not in id order: rows must come back by id
        for (split, level), values in HAND[index].items():
            probes += [_probe(index, split, level) for _ in values]
            probs += values
    return target_knowledge(probes, probs)


def test_aggregation_by_target_and_kind():
    rows = _hand_rows()
    assert [r.index for r in rows] == [1, 2, 3, 4]
    t1, t2, t3, t4 = rows
    assert t1.prob == pytest.approx(dict(forget_fb=0.3, forget_qa=0.6, neighbor_fb=0.1, neighbor_qa=0.3))
    assert t1.n == {"forget_fb": 2, "forget_qa": 1, "neighbor_fb": 1, "neighbor_qa": 1}
    assert t1.known == pytest.approx(0.45) and t1.neighbor == pytest.approx(0.2)
    assert t2.known == pytest.approx(0.75) and t2.neighbor == pytest.approx(0.05)
    assert t3.prob["forget_qa"] is None and t3.known == pytest.approx(0.1)  # mean of the kinds present
    assert t4.neighbor is None and t4.n["neighbor_fb"] == 0
    assert t1.as_dict()["known"] == pytest.approx(0.45)


def test_ranking_and_the_neighbour_flag():
    ranked, threshold = rank_targets(_hand_rows())
    assert [r.index for r in ranked] == [2, 1, 4, 3]  # known 0.75, 0.45, 0.4, 0.1
    assert threshold == pytest.approx(0.2)  # median of the neighbour scores 0.2, 0.05, 0.5
    assert [r.neighbor_known for r in ranked] == [False, True, None, True]
    assert [r.index for r in pick_targets(ranked, 3)] == [1, 3]
    assert [r.index for r in pick_targets(ranked, 1)] == [1]
    ranked, threshold = rank_targets(_hand_rows(), neighbor_threshold=0.01)
    assert threshold == 0.01 and [r.index for r in pick_targets(ranked, 3)] == [2, 1, 3]
    # equal known scores keep id order
    tied = target_knowledge([_probe(5, "forget", 1), _probe(2, "forget", 1)], [0.3, 0.3])
    assert [r.index for r in rank_targets(tied)[0]] == [2, 5]


def test_bad_inputs_are_refused(tiny):
    tok, model, probes = tiny
    with pytest.raises(ValueError, match="level 3"):
        probe_kind(_probe(1, "forget", 3))
    with pytest.raises(ValueError, match="2 probes but 1 probabilities"):
        target_knowledge([_probe(1, "forget", 1)] * 2, [0.5])
    with pytest.raises(ValueError, match="not finite"):
        target_knowledge([_probe(1, "forget", 1)], [float("nan")])
    with pytest.raises(ValueError, match="no target id"):
        target_knowledge([Probe("q", "a", 1, "", "T", "forget")], [0.5])
    with pytest.raises(ValueError, match="empty answer"):
        probe_features(tok, TINY_TEMPLATE_ARGS, [Probe("q", "  ", 1, "", "T", "forget", target_index=1)])
    with pytest.raises(ValueError, match="batch_size"):
        answer_probabilities(model, tok, TINY_TEMPLATE_ARGS, probes[:1], batch_size=0)


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(SCRIPT), run_name="rwku_known_targets")


@pytest.fixture(scope="module")
def model_dir(tiny, tmp_path_factory):
    tok, model, _ = tiny
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path


def _argv(rwku_root, model_dir, out, *extra):
    return ["--data-dir", str(rwku_root), "--model-path", str(model_dir), "--template-args",
            json.dumps(TINY_TEMPLATE_ARGS), "--out", str(out), "--no-progress", *extra]


def test_script_end_to_end(script, rwku_root, model_dir, tiny, tmp_path):
    tok, model, every_probe = tiny
    out, page = tmp_path / "known.json", tmp_path / "known.md"
    argv = _argv(rwku_root, model_dir, out, "--max-probes-per-kind", "2", "--batch-size", "3",
                 "--page", str(page), "--pick", "1")
    assert script["main"](argv) == 0
    res = json.loads(out.read_text())
    # at most 2 probes per target and kind, evenly spaced: of 5 forget FB probes of target 1, numbers 0 and 2
    expected = dict(forget_fb=2 + 2 + 1, forget_qa=2 + 2 + 2, neighbor_fb=2 + 2 + 1, neighbor_qa=2 + 2 + 2)
    assert res["n_probes"] == expected
    fb1 = [p["query"] for p in res["probes"] if (p["target"], p["split"], p["level"]) == (1, "forget", 1)]
    assert fb1 == ["Ada Lovelace fact 0 is ___.", "Ada Lovelace fact 2 is ___."]
    # the script's numbers are the module's on the same probes
    by_query = {(p.target_index, p.split, p.query): p for p in every_probe}
    probes = [by_query[(p["target"], p["split"], p["query"])] for p in res["probes"]]
    direct = answer_probabilities(model, tok, TINY_TEMPLATE_ARGS, probes)
    assert [p["prob"] for p in res["probes"]] == pytest.approx(direct.tolist(), rel=1e-5)
    knowns = [r["known"] for r in res["targets"]]
    assert knowns == sorted(knowns, reverse=True) and [r["rank"] for r in res["targets"]] == [1, 2, 3]
    for r in res["targets"]:
        assert r["neighbor_known"] == (r["neighbor"] >= res["neighbor_threshold"])
    assert res["pick"] == [r for r in res["targets"] if r["neighbor_known"]][:1] and res["pick"]
    text = page.read_text()
    assert "| rank | target | known |" in text and "## Pick" in text and "Wall time" in text
    first = res["targets"][0]
    assert f"| 1 | {first['index']} {first['name']} | **{first['known']:.4f}** |" in text
    assert "--max-probes-per-kind 2" in text and "22 scored over 3 targets" in text


def test_script_errors(script, rwku_root, model_dir, tmp_path, capsys):
    out = tmp_path / "x.json"
    assert script["main"](_argv(tmp_path / "nowhere", model_dir, out)) == 2
    assert "does not exist" in capsys.readouterr().err
    assert script["main"](_argv(rwku_root, model_dir, out, "--targets", "1, 9")) == 2
    assert "RWKU target id 9 not found" in capsys.readouterr().err
    assert script["main"](_argv(rwku_root, model_dir, out, "--targets", "Nobody Known")) == 2
    assert "'Nobody Known' not found" in capsys.readouterr().err
    assert not out.exists()
    for bad in (["--max-probes-per-kind", "0"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit) as stop:
            script["main"](_argv(rwku_root, model_dir, out, *bad))
        assert stop.value.code == 2
    with pytest.raises(SystemExit):
        script["main"](["--data-dir", str(rwku_root), "--model-path", str(model_dir), "--out", str(out)])
    assert "--model-path needs --template-args" in capsys.readouterr().err
