"""RWKU loaders, metrics and evaluator (pure parts; tiny random model only)."""

import json
import math
import shutil
import sys
import types
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atwu_plugin.data.rwku import (
    Probe,
    RWKUDataError,
    RWKUDirectory,
    RWKUHub,
    RWKUProbeDataset,
    RWKUTextDataset,
    format_ranges,
    open_rwku,
    probe_prompt,
)
from atwu_plugin.evals import rwku_metrics as M
from atwu_plugin.evals.rwku_eval import RWKUEvaluator, bbh_prompt, mmlu_prompt

RWKU_ROOT = Path(__file__).parents[2] / "shared" / "data" / "rwku"
BEYONCE = "24_Beyonc\u00e9"  # NFC, as on disk
SOFIA = "153_Sof\u00eda_Vergara"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rwku_root():
    if not (RWKU_ROOT / "Target").is_dir():
        pytest.skip(f"RWKU data not found at {RWKU_ROOT}")
    return RWKU_ROOT


@pytest.fixture(scope="module")
def data(rwku_root):
    return open_rwku(rwku_root)


# ----------------------------------------------------------------------------------------------
# ROUGE-L recall
# ----------------------------------------------------------------------------------------------

# Expected values checked against the ``rouge`` package 1.0.1 that RWKU uses
# (Rouge().get_scores(hyp, ref)[0]["rouge-l"]["r"]).
ROUGE_CASES = [
    ("It was Carrie", "Carrie", 1.0),
    ("carrie", "Carrie", 0.0),  # case-sensitive
    ("Carrie,", "Carrie", 0.0),  # punctuation stays on the word
    ("New York", "New York New York", 1.0),  # distinct-word (set) semantics
    ("John Rockefeller", "John D. Rockefeller", 2 / 3),  # "." splits sentences
    ("b a", "a b", 0.5),
    ("Richard Bachman is his pen name. He also wrote It.", "Richard Bachman", 1.0),
    ("Bachman Richard", "Richard Bachman", 0.5),
    ("the King of Horror", "King of Horror", 1.0),
    ("a b a", "a a b", 1.0),
    ("NOANSWER", "Carrie", 0.0),
    ("Dr Dre", "Dr. Dre", 1.0),
    ("x. y z", "y x z", 1.0),  # union of LCSs over prediction sentences
]


@pytest.mark.parametrize("pred,ref,expected", ROUGE_CASES)
def test_rouge_l_recall_matches_rwku(pred, ref, expected):
    assert M.rouge_l_recall(pred, ref) == pytest.approx(expected)


def test_rouge_edge_cases_and_backends():
    assert M.rouge_l_recall("", "Carrie") == 0.0
    assert M.rouge_l_recall("...", "Carrie") == 0.0
    with pytest.raises(ValueError, match="reference"):
        M.rouge_l_recall("x", ".")
    with pytest.raises(ValueError, match="backend"):
        M.rouge_l_recall("x", "x", backend="nope")
    # rouge_score lower-cases and strips punctuation: not RWKU's numbers
    assert M.rouge_l_recall("carrie,", "Carrie", backend="rouge_score") == 1.0
    assert M.rouge_l_recall("New York", "New York New York", backend="rouge_score") == 0.5
    assert M.mean_rouge_l_recall(["Carrie", "x"], ["Carrie", "y z"]) == 0.5


_word = st.sampled_from(["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"])


@settings(max_examples=60, deadline=None)
@given(ref=st.lists(_word, min_size=1, max_size=6, unique=True), hyp=st.lists(_word, min_size=1, max_size=8))
def test_rouge_rwku_agrees_with_rouge_score_on_plain_text(ref, hyp):
    r, h = " ".join(ref), " ".join(hyp)
    a = M.rouge_l_recall(h, r, backend="rwku")
    assert a == pytest.approx(M.rouge_l_recall(h, r, backend="rouge_score_whitespace"))
    assert a == pytest.approx(M.rouge_l_recall(h, r, backend="rouge_score"))


def test_probe_level_scores_and_prediction_cleanup():
    assert M.truncate_at_newline("Carrie\nQuestion: next") == "Carrie"
    assert M.clean_prediction("  \n") == M.NOANSWER
    assert M.clean_prediction("  Carrie ") == "Carrie"
    recs = [
        ("forget", 1, "author", "author"),
        ("forget", 1, "nothing", "author"),
        ("forget", 2, "Richard Bachman", "Richard Bachman"),
        ("forget", 3, "Bachman", "Richard Bachman"),
        ("neighbor", 1, "Tim", "Tim"),
        ("neighbor", 2, "no", "Shawshank"),
    ]
    out = M.probe_level_scores(recs)
    assert out["forget_fb"] == 0.5 and out["forget_qa"] == 1.0 and out["forget_aa"] == 0.5
    assert out["forget_all"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert out["neighbor_fb"] == 1.0 and out["neighbor_qa"] == 0.0 and out["neighbor_all"] == 0.5
    with pytest.raises(ValueError):
        M.probe_level_scores([("neighbor", 3, "a", "a")])


# ----------------------------------------------------------------------------------------------
# MIA
# ----------------------------------------------------------------------------------------------


def test_mia_scores():
    lp = [-1.0, -2.0, -3.0, -4.0, -10.0]
    assert M.mia_loss_score(lp) == pytest.approx(-4.0)
    import zlib

    assert M.mia_zlib_score(lp, "hello") == pytest.approx(-4.0 / len(zlib.compress(b"hello")))
    assert M.mia_mink_score(lp, k=0.2) == -10.0  # int(5 * 0.2) = 1 lowest
    assert M.mia_mink_score(lp, k=0.4) == -7.0
    assert M.mia_mink_score(lp, k=1.0) == -4.0
    assert M.mia_mink_score([-1.0, -2.0], k=0.2) == -2.0  # at least one token kept
    mu, sd = [-1.0] * 5, [2.0] * 5
    assert M.mia_minkpp_score(lp, mu, sd, k=0.4) == pytest.approx(np.mean([(-10 + 1) / 2, (-4 + 1) / 2]))
    with pytest.raises(ValueError):
        M.mia_loss_score([])


def test_mia_auc_direction():
    # members (forget_mia) have larger scores -> AUC 1; the reverse -> 0; ties -> 0.5
    assert M.mia_auc([-1.0, -2.0], [-3.0, -4.0]) == 1.0
    assert M.mia_auc([-3.0, -4.0], [-1.0, -2.0]) == 0.0
    assert M.mia_auc([-1.0], [-1.0]) == 0.5
    assert M.mia_auc([0.9, 0.1], [0.5]) == 0.5
    with pytest.raises(ValueError):
        M.mia_auc([], [1.0])


# ----------------------------------------------------------------------------------------------
# Utility metrics
# ----------------------------------------------------------------------------------------------


def test_em_f1_normalisation():
    assert M.normalize_answer("The  Cat, sat!") == "cat sat"
    assert M.exact_match("the Estimate.", ["Estimated", "Estimate"]) == 1.0
    assert M.exact_match("estimates", ["Estimate"]) == 0.0
    assert M.token_f1("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)
    assert M.token_f1("x", ["cat", "x y"]) == pytest.approx(2 / 3)
    assert M.token_f1("", "") == 1.0 and M.token_f1("a", "b") == 0.0
    assert M.token_f1("the", "cat") == 0.0  # empty after normalisation vs non-empty


def test_bbh():
    assert M.extract_bbh_answer("Let's think. So the answer is (B). Done") == "(B)"
    assert M.extract_bbh_answer("  no marker here ") == "no marker here"
    assert M.extract_bbh_answer("The answer is .") == M.NOANSWER
    assert M.bbh_exact_match("False", "False") == 1.0
    assert M.bbh_exact_match("(A)", "(A)") == 1.0
    # RWKU's character-wise quirk
    assert M.bbh_exact_match("False", "False", rwku_compat=True) == 0.0
    assert M.bbh_exact_match("A", "(A)", rwku_compat=True) == 1.0
    assert M.bbh_exact_match("12", "12", rwku_compat=True) == 0.0


def test_multiple_choice_and_truthfulqa():
    scores = [[0.1, 2.0, -1.0, 0.0], [3.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]]
    assert M.multiple_choice_predictions(scores) == [1, 0, 3]  # first max on ties
    assert M.multiple_choice_accuracy(scores, [1, 1, 3]) == pytest.approx(2 / 3)
    assert M.truthfulqa_mc1([-1.0, -2.0, -3.0], [1, 0, 0]) == 1.0
    assert M.truthfulqa_mc1([-2.0, -2.0], [1, 0]) == 0.0  # ties are wrong
    assert M.truthfulqa_mc1([-3.0, -1.0], [1, 0]) == 0.0
    mc2 = M.truthfulqa_mc2([math.log(0.3), math.log(0.1), math.log(0.6)], [1, 1, 0])
    assert mc2 == pytest.approx(0.4)
    assert M.truthfulqa_mc2([-1000.0, -1001.0], [1, 0]) == pytest.approx(1 / (1 + math.exp(-1)))


def test_fluency_entropy():
    split = str.split
    h = M.ngram_entropy("a b c d", tokenize=split)
    assert h == pytest.approx((2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2)
    assert M.ngram_entropy("a a a a a", tokenize=split) == 0.0
    assert M.ngram_entropy("a", tokenize=split) == 0.0
    assert M.word_tokenize("Don't go. He said: fine!") == ["Do", "n't", "go", ".", "He", "said", ":", "fine", "!"]
    assert M.fluency_entropy(["a b c d", "a a a a"], tokenize=split) == pytest.approx(h / 2)
    assert M.fluency_entropy(["a b c d", "a a a a"], agg="geom", tokenize=split) == 0.0
    assert M.nan_to_none({"x": float("nan"), "y": [np.float32(1.5)]}) == {"x": None, "y": [1.5]}


# ----------------------------------------------------------------------------------------------
# Loaders on the real files
# ----------------------------------------------------------------------------------------------


def test_targets_and_non_ascii_names(data):
    ts = data.targets()
    assert [t.index for t in ts] == list(range(1, 201))
    names = {t.index: t.name for t in ts}
    assert names[1] == "Stephen King" and names[10] == "Prince Harry, Duke of Sussex"
    assert names[24] == "Beyonc\u00e9" and names[153] == "Sof\u00eda Vergara"
    for spec in (BEYONCE, unicodedata.normalize("NFD", BEYONCE), "beyonc\u00e9", 24, "24"):
        assert data.target(spec).index == 24
    assert data.target(unicodedata.normalize("NFD", "Sof\u00eda Vergara")).index == 153
    assert data.target("Prince Harry, Duke of Sussex").index == 10
    all_intro = data.all_intro()
    assert len(all_intro) == 200 and "Beyonc\u00e9" in all_intro


@pytest.mark.parametrize(
    "spec,counts",
    [
        (BEYONCE, (20, 18, 40, 30, 30, 60, 35, 50, 145)),
        (SOFIA, (17, 13, 23, 30, 30, 7, 37, 50, 13)),
        ("1_Stephen_King", (8, 10, 29, 30, 30, 55, 37, 50, 128)),
    ],
)
def test_per_target_loaders(data, spec, counts):
    t = data.target(spec)
    got = (
        len(data.forget_probes(t, 1)),
        len(data.forget_probes(t, 2)),
        len(data.forget_probes(t, 3)),
        len(data.neighbor_probes(t, 1)),
        len(data.neighbor_probes(t, 2)),
        len(data.mia(t, "forget")),
        len(data.mia(t, "retain")),
        len(data.fluency(t)),
        len(data.passages(t)),
    )
    assert got == counts
    p = data.forget_probes(t, 1)[0]
    assert isinstance(p, Probe) and p.level == 1 and p.type == "cloze" and "___" in p.query
    assert p.target == t.name and p.split == "forget" and p.target_index == t.index
    n = data.neighbor_probes(t, 2)[0]
    assert n.level == 2 and n.split == "neighbor" and n.neighbor
    assert all(m.member for m in data.mia(t, "forget")) and not any(m.member for m in data.mia(t, "retain"))
    assert data.intro(t).startswith("Please forget")


def test_utility_loaders_and_inventory(data):
    mmlu = data.mmlu(1)
    assert len(mmlu) == 171 and all(len(q.choices) == 4 and 0 <= q.answer < 4 for q in mmlu)
    assert len(mmlu[0].examples) == 5
    assert len(data.bbh(1)) == 81 and data.bbh(1)[0].cot
    tq = data.truthfulqa(1)
    assert len(tq) == 50 and tq[0].mc1_labels[0] == 1 and sum(tq[0].mc1_labels) == 1
    assert len(data.triviaqa(1)) == 100 and data.triviaqa(1)[0].answers
    inv = data.inventory([1, 30])
    assert set(inv["1_Stephen_King"]) == {
        "intro", "passage", "forget_level1", "forget_level2", "forget_level3", "neighbor_level1",
        "neighbor_level2", "forget_mia", "retain_mia", "fluency", "retain_mmlu", "retain_bbh",
        "truthful", "triviaqa", "reject", "positive", "negative", "pair",
    }
    assert len(inv["30_Henry_Winkler"]) == 10 and "retain_mmlu" not in inv["30_Henry_Winkler"]


def test_batch_selection(data):
    assert [t.index for t in data.select("1-10")] == list(range(1, 11))
    assert [t.index for t in data.select([3, 1, "2"])] == [3, 1, 2]
    assert [t.index for t in data.select("1-3, 7")] == [1, 2, 3, 7]
    assert [t.index for t in data.select(["1-3", 2, "Stephen King", BEYONCE])] == [1, 2, 3, 24]
    assert [t.index for t in data.select("Prince Harry, Duke of Sussex")] == [10]
    assert len(data.select("1-50")) == 50
    assert [t.index for t in data.select(np.arange(4, 7))] == [4, 5, 6]  # numpy ints, e.g. from configs
    assert [t.index for t in data.select(range(1, 3))] == [1, 2]
    assert len(data.forget_probes("1-2", 1)) == 8 + 17  # concatenated in target order
    assert format_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"


def test_clear_errors(data, tmp_path):
    with pytest.raises(ValueError, match=r"201.*1-200"):
        data.target(201)
    with pytest.raises(ValueError, match=r"201.*1-200"):
        data.select("195-201")
    with pytest.raises(ValueError, match="Nobody"):
        data.target("Nobody Atall")
    with pytest.raises(ValueError, match="start > end"):
        data.select("5-3")
    with pytest.raises(FileNotFoundError, match=r"30_Henry_Winkler.*retain_mmlu\.json"):
        data.mmlu(30)
    with pytest.raises(ValueError, match="unknown RWKU file kind"):
        data.load(1, "nope")
    with pytest.raises(FileNotFoundError):
        open_rwku(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no RWKU targets"):
        open_rwku(tmp_path)


def _copy_target(src_root: Path, dst_target_dir: Path, dirname: str, new_name: str, files):
    d = dst_target_dir / new_name
    d.mkdir(parents=True)
    for f in files:
        shutil.copy(src_root / "Target" / dirname / f, d / f)
    return d


def test_nfd_directory_and_malformed_files(rwku_root, tmp_path):
    target_dir = tmp_path / "Target"
    nfd = unicodedata.normalize("NFD", BEYONCE)
    d = _copy_target(rwku_root, target_dir, BEYONCE, nfd, ["forget_level1.json", "passage.json"])
    _copy_target(rwku_root, target_dir, "1_Stephen_King", "1_Stephen_King", ["forget_level1.json"])
    data = RWKUDirectory(target_dir)  # the Target folder itself is accepted too
    assert [t.index for t in data.targets()] == [1, 24]
    assert data.target(24).name == "Beyonc\u00e9"  # NFC whatever the disk form
    assert data.target(BEYONCE).dirname == nfd
    assert len(data.forget_probes(BEYONCE, 1)) == 20 and len(data.passages(24)) == 145
    with pytest.raises(ValueError, match=r"2.*1, 24"):
        data.target(2)
    (d / "forget_level2.json").write_text('[{"query": "q", "answer": ', encoding="utf-8")
    with pytest.raises(RWKUDataError, match="malformed JSON.*forget_level2.json"):
        data.forget_probes(24, 2)
    (d / "forget_level3.json").write_text('{"query": "q"}', encoding="utf-8")
    with pytest.raises(RWKUDataError, match="forget_level3.json.*JSON array"):
        data.forget_probes(24, 3)
    (d / "neighbor_level1.json").write_text('[{"query": "q"}]', encoding="utf-8")
    with pytest.raises(RWKUDataError, match=r"neighbor_level1.json.*record 0.*answer"):
        data.neighbor_probes(24, 1)
    # an NFC and an NFD copy of the same target is ambiguous
    _copy_target(rwku_root, target_dir, BEYONCE, BEYONCE, ["forget_level1.json"])
    with pytest.raises(RWKUDataError, match="two directories for target id 24"):
        RWKUDirectory(tmp_path).targets()


def test_hub_source_with_injected_loader():
    tables = {
        "forget_target": [{"target": "Alpha One", "intro": "a"}, {"target": "Beyonc\u00e9", "intro": "b"}],
        "forget_level1": [
            {"subject": "Beyonc\u00e9", "query": "q1 ___", "answer": "x", "level": "1", "type": "cloze"},
            {"subject": "Alpha One", "query": "q2 ___", "answer": "y", "level": "1", "type": "cloze"},
        ],
    }
    calls = []

    def loader(repo, config, split):
        calls.append((repo, config, split))
        return tables[config]

    data = open_rwku("hub:org/RWKU", hub_loader=loader)
    assert isinstance(data, RWKUHub) and [t.key for t in data.targets()] == ["1_Alpha_One", "2_Beyonc\u00e9"]
    probes = data.forget_probes([2, 1], 1)
    assert [p.answer for p in probes] == ["x", "y"]
    assert data.has(1, "forget_level1")
    assert ("org/RWKU", "forget_level1", "test") in calls
    with pytest.raises(ValueError, match="available ids: 1-2"):
        data.target(3)


# ----------------------------------------------------------------------------------------------
# Torch datasets
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tokenizer(data):
    from atwu_plugin.zoo.tokenizer import train_tokenizer

    texts = data.passages([1, BEYONCE]) + [p.query + " " + p.answer for p in data.forget_probes([1, BEYONCE], 1)]
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    from atwu_plugin.zoo.build import TinyLlamaSpec

    spec = TinyLlamaSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=768)
    return spec.build(tiny_tokenizer, seed=0).eval()


def test_text_dataset_chunks(tiny_tokenizer):
    texts = ["Stephen King wrote Carrie and The Shining. " * 20, "short"]
    ds = RWKUTextDataset(texts, tiny_tokenizer, max_length=16)
    full = [tiny_tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    assert ds.num_tokens() == sum(len(f) - 1 for f in full)
    for i in range(len(ds)):
        item = ds[i]
        assert item["index"] == i and len(item["input_ids"]) <= 16
        assert item["labels"][0].item() == -100
        assert torch.equal(item["labels"][1:], item["input_ids"][1:])
        assert item["attention_mask"].sum().item() == len(item["input_ids"])
    # consecutive windows of one text overlap by exactly one token
    first = [ds[i] for i in range(len(ds)) if ds[i]["text_index"] == 0]
    rebuilt = first[0]["input_ids"].tolist() + [x for w in first[1:] for x in w["input_ids"].tolist()[1:]]
    assert rebuilt == full[0]
    with_eos = RWKUTextDataset(["short"], tiny_tokenizer, max_length=16, add_eos=True)
    assert with_eos[0]["input_ids"][-1].item() == tiny_tokenizer.eos_token_id


def test_probe_dataset_calls_encode_qa(monkeypatch, data):
    calls = []

    def fake_encode_qa(tokenizer, template_args, question, answer, max_length, spans=None):
        calls.append((question, answer, max_length))
        return {"input_ids": torch.tensor([1, 2]), "labels": torch.tensor([-100, 2])}

    monkeypatch.setitem(sys.modules, "atwu_plugin.data.encoding", types.SimpleNamespace(encode_qa=fake_encode_qa))
    probes = data.forget_probes(1, 2)[:2]
    ds = RWKUProbeDataset(probes, tokenizer=None, template_args={}, max_length=64)
    item = ds[1]
    assert item["index"] == 1 and calls[-1] == (probes[1].query, probes[1].answer, 64)
    ds_rwku = RWKUProbeDataset(probes, tokenizer=None, template_args={}, max_length=64, prompt_style="rwku")
    ds_rwku[0]
    assert calls[-1][0] == f"Please briefly answer the following question.\nQuestion: {probes[0].query}\nAnswer:"
    with pytest.raises(IndexError):
        ds[2]


def test_probe_dataset_with_real_encoding(data, tiny_tokenizer):
    enc = pytest.importorskip("atwu_plugin.data.encoding", reason="encoding.py not written yet")
    if not hasattr(enc, "encode_qa"):
        pytest.skip("atwu_plugin.data.encoding.encode_qa not available yet")
    from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

    probe = data.forget_probes(1, 2)[0]
    item = RWKUProbeDataset([probe], tiny_tokenizer, TINY_TEMPLATE_ARGS, max_length=128)[0]
    assert item["index"] == 0 and item["input_ids"].shape == item["labels"].shape
    answer_ids = item["labels"][item["labels"] != -100].tolist()
    assert tiny_tokenizer.decode(answer_ids, skip_special_tokens=True).strip() == probe.answer


def test_probe_prompts():
    mk = lambda level, typ: Probe(query="Q?", answer="A", level=level, type=typ, target="T", split="forget")
    assert probe_prompt(mk(1, "cloze")) == ("Please complete the blank in the following question.\nQuestion: Q?\n", "Answer:")
    assert probe_prompt(mk(2, "simple question"))[1] == "Answer:"
    assert probe_prompt(mk(3, "affirmative suffix")) == ("Please briefly answer the following question.\nQuestion: Q?", "")
    assert probe_prompt(mk(3, "incontext learning"))[0] == "Please briefly answer the following question.\nQ?\n"
    assert probe_prompt(mk(3, "role play"), style="plain") == ("Q?", "")
    with pytest.raises(ValueError):
        probe_prompt(mk(1, "cloze"), style="odd")


def test_utility_prompts(data):
    q = data.mmlu(1)[0]
    p = mmlu_prompt(q.question, q.choices, q.task, q.examples)
    assert p.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert p.count("\nAnswer: ") == 5 and p.endswith("\nD. False, True")
    assert "Please following the previous examples and answer the given question.\nQuestion: " in p
    b = data.bbh(1)[0]
    assert bbh_prompt(b.cot, b.question).endswith("end with 'so the answer is'\nQ: " + b.question)


# ----------------------------------------------------------------------------------------------
# Evaluator
# ----------------------------------------------------------------------------------------------


class _OracleEvaluator(RWKUEvaluator):
    """Generations are looked up from the prompt: the gold answer, or a fixed wrong one."""

    def __init__(self, *a, right=True, **kw):
        super().__init__(*a, **kw)
        self.right = right
        self.answers = {}
        for split, levels, ts in (("forget", (1, 2, 3), self.targets), ("neighbor", (1, 2), self.neighbor_targets)):
            for lv in levels:
                for p in self.data.probes(ts, split, lv):
                    self.answers.setdefault(p.query, []).append(p.answer)

    def generate(self, model, prompts, max_new_tokens, stop_at_newline, desc):
        assert stop_at_newline
        outs = []
        for ids in prompts:
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            query = max((q for q in self.answers if q in text), key=len)
            # every gold answer for this query, as separate "sentences": full ROUGE-L recall
            outs.append(" " + ". ".join(self.answers[query]) if self.right else "")
        return outs


def test_evaluator_with_oracle_generations(rwku_root, tiny_tokenizer, tiny_model):
    from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

    kw = dict(metrics=["forget", "neighbor"], max_probes_per_level=3, show_progress=False)
    right = _OracleEvaluator(tiny_tokenizer, TINY_TEMPLATE_ARGS, rwku_root, [1, SOFIA], right=True, **kw)
    res = right.evaluate(tiny_model)
    for k in ("forget_fb", "forget_qa", "forget_aa", "forget_all", "neighbor_fb", "neighbor_qa", "neighbor_all"):
        assert res[k] == 1.0, k
    assert res["n"]["forget_fb"] == 6 and set(res["by_target"]) == {"1_Stephen_King", SOFIA}
    wrong = _OracleEvaluator(tiny_tokenizer, TINY_TEMPLATE_ARGS, rwku_root, [1], right=False, **kw)
    res = wrong.evaluate(tiny_model)
    assert res["forget_fb"] == 0.0 and res["neighbor_qa"] == 0.0


def test_evaluator_mia_auc_with_stub_scores(rwku_root, tiny_tokenizer, tiny_model):
    from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

    ev = RWKUEvaluator(
        tiny_tokenizer, TINY_TEMPLATE_ARGS, rwku_root, [1, 2], metrics=["mia"], max_items_per_set=3,
        show_progress=False,
    )
    member_texts = {ev.encode(m.text)[0:40].__repr__() for m in ev.data.mia([1, 2], "forget")}

    def fake_logprobs(model, seqs, desc, with_stats=False):
        out = []
        for s in seqs:
            v = -1.0 if repr(s[0:40]) in member_texts else -3.0
            lp = np.full(len(s) - 1, v)
            out.append((lp, np.full_like(lp, -2.0), np.ones_like(lp)) if with_stats else lp)
        return out

    ev.token_logprobs = fake_logprobs
    res = ev.evaluate(tiny_model)
    for name in ("loss", "zlib", "mink", "minkpp"):
        assert res[f"mia_{name}_auc"] == 1.0 or name == "zlib", name
    assert res["mia_forget_loss"] == pytest.approx(1.0) and res["mia_retain_loss"] == pytest.approx(3.0)
    assert res["n"]["mia_loss_auc"] == 12
    assert res["by_target"]["2_Confucius"]["mia_loss_auc"] == 1.0


def test_evaluator_mia_drops_retain_texts_about_selected_targets(rwku_root, tiny_tokenizer, tiny_model):
    from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

    # Stephen King's retain_mia texts 0 and 27 are about Raquel Welch (target 46), and Raquel
    # Welch's retain_mia text 12 is about Stephen King
    kw = dict(metrics=["mia"], show_progress=False)
    ev = RWKUEvaluator(tiny_tokenizer, TINY_TEMPLATE_ARGS, rwku_root, [1, 46], mia_drop_retain_in_forget=True, **kw)
    ev.token_logprobs = lambda model, seqs, desc, with_stats=False: [
        (np.full(len(s) - 1, -1.0), np.full(len(s) - 1, -1.0), np.ones(len(s) - 1)) for s in seqs
    ]
    res = ev.evaluate(tiny_model)
    assert res["dropped"] == {"retain_mia": 3}
    assert res["n"]["mia_retain_loss"] == 37 + 41 - 3
    assert "dropped" not in RWKUEvaluator(tiny_tokenizer, TINY_TEMPLATE_ARGS, rwku_root, [1], **kw).evaluate(tiny_model)


def test_evaluator_smoke_tiny_model(rwku_root, tiny_tokenizer, tiny_model):
    from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

    ev = RWKUEvaluator(
        tiny_tokenizer,
        TINY_TEMPLATE_ARGS,
        str(rwku_root),
        targets=["1", BEYONCE],
        batch_size=4,
        max_new_tokens=4,
        max_new_tokens_long=4,
        max_probes_per_level=2,
        max_items_per_set=2,
        show_progress=False,
        return_details=True,
    )
    tiny_model.train()
    res = ev.evaluate(tiny_model)
    assert tiny_model.training  # mode restored
    json.dumps(res, allow_nan=False)
    expected = {
        "forget_fb", "forget_qa", "forget_aa", "forget_all", "neighbor_fb", "neighbor_qa", "neighbor_all",
        "mia_loss_auc", "mia_zlib_auc", "mia_mink_auc", "mia_minkpp_auc", "mia_forget_loss", "mia_retain_loss",
        "utility_mmlu", "utility_bbh", "utility_truthfulqa", "utility_truthfulqa_mc2", "utility_triviaqa",
        "utility_triviaqa_em", "utility_fluency",
    }
    assert expected <= set(res)
    for k in expected:
        assert res[k] is not None, k
        if not k.startswith(("mia_forget", "mia_retain", "utility_fluency")):
            assert 0.0 <= res[k] <= 1.0, (k, res[k])
    assert res["n"]["forget_fb"] == 4 and res["n"]["utility_mmlu"] == 2  # utility only for target 1
    assert f"{BEYONCE}/retain_mmlu" in res["missing"] and "1_Stephen_King/retain_mmlu" not in res["missing"]
    assert set(res["by_target"]) == {"1_Stephen_King", BEYONCE}
    assert "utility_mmlu" not in res["by_target"][BEYONCE]
    assert res["mia_forget_loss"] > 0 and len(res["details"]["forget_fb"]) == 4
    # deterministic
    ev.return_details = False
    again = ev.evaluate(tiny_model)
    res.pop("details")
    assert again == res


def test_evaluator_chat_template_and_config_errors(rwku_root, tiny_tokenizer):
    tok = tiny_tokenizer
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    try:
        ev = RWKUEvaluator(tok, {"apply_chat_template": True, "system_prompt": "S"}, rwku_root, [1],
                           metrics=["forget"], show_progress=False)
        assert ev.render("hi", "Answer:") == "<system>S\n<user>hi\n<assistant>Answer:"
        assert ev.encode("<user>hi") == tok("<user>hi", add_special_tokens=False)["input_ids"]
    finally:
        tok.chat_template = None
    from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

    ev = RWKUEvaluator(tok, TINY_TEMPLATE_ARGS, rwku_root, "1-2", metrics=["forget"], show_progress=False)
    assert ev.render("Who?", "Answer:") == "Question: Who?\nAnswer:\nAnswer:"
    assert ev.encode("x")[0] == tok.bos_token_id
    with pytest.raises(ValueError, match="unknown RWKU metric"):
        RWKUEvaluator(tok, TINY_TEMPLATE_ARGS, rwku_root, [1], metrics=["forget", "bleu"])
    with pytest.raises(ValueError, match="999"):
        RWKUEvaluator(tok, TINY_TEMPLATE_ARGS, rwku_root, [1, 999])
