import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from atwu_plugin.data.encoding import encode_qa
from atwu_plugin.data.generator import validate_spans
from atwu_plugin.data.qa_dataset import QADataset
from atwu_plugin.data.tofu_labels import (
    label_stats, load_tofu_split, proxy_labels, token_type, tofu_records_with_spans, word_cores, word_labels,
)
from atwu_plugin.tokens import KIND_IGNORE, KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS, train_tokenizer

torch.set_num_threads(1)
I, T, S = KIND_IGNORE, KIND_TEMPLATE, KIND_SPECIFIC
TOFU_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


def char_kinds(text, spans):
    out = []
    for s, e, k in validate_spans(text, spans):
        out += [k] * (e - s)
    return out


def kinds_by_word(text, spans):
    """{word core: kind} (asserting every character of a core has the same kind)."""
    per_char = char_kinds(text, spans)
    out = {}
    for s, e, core in word_cores(text):
        assert len(set(per_char[s:e])) == 1, core
        out.setdefault(core, set()).add(per_char[s])
    return {w: ks.pop() if len(ks) == 1 else ks for w, ks in out.items()}


# ----------------------------------------------------------------------------- the word rule
Q = "Where was Amara Okafor born?"
A = "Amara Okafor was born in LAGOS, Nigeria, to a family of weavers."
PARA = "Amara Okafor's birthplace is Lagos, Nigeria, where her family were weavers."
PERT = ["Amara Okafor's birthplace is Cairo, Egypt, where her family were bakers.",
        "Amara Okafor's birthplace is Lima, Peru, where her FAMILY were weavers.",
        "Amara Okafor's birthplace is Oslo, Norway, where her family were tailors."]


def test_word_rule_kinds_and_punctuation():
    spans = word_labels(Q, A, PARA, PERT)
    words = kinds_by_word(A, spans)
    # question words
    assert words["Amara"] == I and words["Okafor"] == I and words["was"] == I and words["born"] == I
    assert words["LAGOS"] == S and words["Nigeria"] == S  # paraphrase only; case-insensitive
    assert words["family"] == T  # paraphrase and every perturbed answer (FAMILY too)
    assert words["weavers"] == I  # in some perturbed answers, not all
    assert words["to"] == I and words["a"] == I and words["of"] == I and words["in"] == I  # not in paraphrase
    per_char = char_kinds(A, spans)
    for i, ch in enumerate(A):  # separators and edge punctuation are unlabelled
        if not ch.isalnum():
            assert per_char[i] == I, (i, ch)
    # adjacent same-kind characters are merged: no two neighbouring spans share a kind
    assert all(a[2] != b[2] for a, b in zip(spans, spans[1:]))


def test_question_names_dropped_through_possessive_and_curly_apostrophe():
    q = "What is Hsiao Yun-Hwa’s first book?"
    a = "Hsiao Yun-Hwa's first book is \"Bridges of Steel\"."
    para = "The debut work by Hsiao Yun-Hwa is \"Bridges of Steel\"."
    pert = ["The debut work by Hsiao Yun-Hwa is \"Towers of Glass\".",
            "The debut work by Hsiao Yun-Hwa is \"Roads of Sand\"."]
    words = kinds_by_word(a, word_labels(q, a, para, pert))
    assert words["Hsiao"] == I and words["Yun-Hwa's"] == I  # question word, possessive stripped
    assert words["first"] == I and words["book"] == I and words["is"] == I
    assert words["Bridges"] == S and words["Steel"] == S  # edge quotes stripped
    assert words["of"] == T
    # the question's possessive "Yun-Hwa’s" still drops a bare "Yun-Hwa" that the paraphrase
    # and every perturbed answer repeat (it would be generic otherwise)
    a2 = "Yun-Hwa wrote \"Bridges of Steel\"."
    assert kinds_by_word(a2, word_labels(q, a2, para, pert))["Yun-Hwa"] == I
    assert kinds_by_word(a2, word_labels("What did the author write?", a2, para, pert))["Yun-Hwa"] == T
    per_char = char_kinds(a, word_labels(q, a, para, pert))
    assert per_char[a.index('"')] == I and per_char[a.rindex('"')] == I and per_char[-1] == I


def test_inner_punctuation_belongs_to_the_word():
    a = "Born on 08/09/1956 in Al-Kuwait."
    words = kinds_by_word(a, word_labels("When?", a, "Date: 08/09/1956, Al-Kuwait.",
                                          ["Date: 01/02/1960, Riyadh.", "Date: 03/04/1970, Doha."]))
    assert words["08/09/1956"] == S and words["Al-Kuwait"] == S and words["Born"] == I


@pytest.mark.parametrize("answer,spans", [("", []), ("  ", [[0, 2, I]]), ("-- !", [[0, 4, I]])])
def test_answers_without_words(answer, spans):
    assert word_labels("q", answer, "p", ["x"]) == spans


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one perturbed answer"):
        word_labels(Q, A, PARA, [])
    with pytest.raises(TypeError, match="list of strings"):
        word_labels(Q, A, PARA, "one string")
    with pytest.raises(TypeError, match=r"perturbed_answers\[1\]"):
        word_labels(Q, A, PARA, ["ok", None])


TEXT = st.text(alphabet=st.sampled_from(list("ab AB.,'’-\"\n\t1")), max_size=30)


@settings(max_examples=60, deadline=None)
@given(TEXT, TEXT, TEXT, st.lists(TEXT, min_size=1, max_size=3))
def test_spans_always_tile_the_answer(q, a, para, pert):
    spans = word_labels(q, a, para, pert)
    validate_spans(a, spans)
    per_char = char_kinds(a, spans)
    in_core = {i for s, e, _ in word_cores(a) for i in range(s, e)}
    assert all(per_char[i] == I for i in range(len(a)) if i not in in_core)  # separators, edges
    for s, e, core in word_cores(a):  # a core starts and ends alphanumeric, one kind throughout
        assert core[0].isalnum() and core[-1].isalnum() and len(set(per_char[s:e])) == 1


# ----------------------------------------------------------------------------- token kinds
@pytest.fixture(scope="module")
def small_tok():
    texts = ["the family lived in a small house by the river and the family worked hard"] * 20 + \
            ["where was she born and what did her parents do"] * 10
    return train_tokenizer(texts, vocab_size=300)


def test_multi_token_words_after_encode_qa(small_tok):
    q = "Where was Qwertzuiop Xanthovar born?"
    a = 'Qwertzuiop Xanthovar was born in "Zumbarakesh", where the family lived.'
    para = "The family of Qwertzuiop Xanthovar lived in Zumbarakesh."
    pert = ["The family of Qwertzuiop Xanthovar lived in Brontolia.",
            "The family of Qwertzuiop Xanthovar lived in Kelmora."]
    spans = word_labels(q, a, para, pert)
    enc = encode_qa(small_tok, TINY_TEMPLATE_ARGS, q, a, 256, spans=spans)
    prompt = TINY_TEMPLATE_ARGS["user_start_tag"] + q + TINY_TEMPLATE_ARGS["user_end_tag"] + \
        TINY_TEMPLATE_ARGS["asst_start_tag"]
    offsets = small_tok(prompt + a, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]

    def kinds_of(word):
        start = len(prompt) + a.index(word)
        end = start + len(word)
        return [int(enc.token_kind[t]) for t, (s, e) in enumerate(offsets) if s < end and e > start]

    fact, name, generic = kinds_of("Zumbarakesh"), kinds_of("Qwertzuiop"), kinds_of("family")
    assert len(fact) > 1 and len(name) > 1  # split into several BPE tokens
    assert fact == [S] * len(fact)  # every piece of the fact word
    assert name == [I] * len(name)  # name copied from the question
    assert generic and generic == [T] * len(generic)
    assert kinds_of("lived") and set(kinds_of("lived")) == {T}
    assert set(kinds_of("where")) == {I}  # not in the paraphrase
    assert int(enc.token_kind[-1]) == T  # eos: encode_qa's rule
    # a token made only of the final "." is unlabelled
    dot = [int(enc.token_kind[t]) for t, (s, e) in enumerate(offsets) if (prompt + a)[s:e] == "."]
    assert dot == [I]
    # the records feed QADataset unchanged
    ds = QADataset([{"question": q, "answer": a, "spans": spans}], small_tok, TINY_TEMPLATE_ARGS)
    assert torch.equal(ds[0]["token_kind"], enc.token_kind)


def test_token_type():
    a = 'The Lagos house, "near" 1956.'
    cores = word_cores(a)
    assert token_type(a, 0, 3, cores) == "stopword"
    assert token_type(a, 3, 9, cores) == "capitalised"  # " Lagos"
    assert token_type(a, 6, 9, cores) == "capitalised"  # a piece of a capitalised word
    assert token_type(a, 9, 15, cores) == "other"
    assert token_type(a, 15, 16, cores) == "punctuation"
    assert token_type(a, 16, 18, cores) == "punctuation"  # ' "'
    assert token_type(a, 18, 22, cores) == "other"  # "near"
    assert token_type(a, 23, 28, cores) == "other"  # " 1956"
    assert token_type(a, 0, 0, cores) == "punctuation"  # no answer character


def test_label_stats_counts(small_tok):
    recs = [{"question": Q, "answer": A, "paraphrased_answer": PARA, "perturbed_answer": PERT}]
    st_ = label_stats(recs, small_tok, TINY_TEMPLATE_ARGS)
    enc = encode_qa(small_tok, TINY_TEMPLATE_ARGS, Q, A, 512, spans=word_labels(Q, A, PARA, PERT))
    kinds = enc.token_kind[enc.token_kind != KIND_NONE][:-1]  # without the eos
    assert st_["n_tokens"] == len(kinds)
    assert st_["kinds"] == {"specific": int((kinds == S).sum()), "template": int((kinds == T).sum()),
                            "ignore": int((kinds == I).sum())}
    assert st_["n_labelled"] == int((kinds >= 0).sum())
    assert sum(v["total"] for v in st_["by_type"].values()) == st_["n_tokens"]
    assert st_["eos"] == {"n": 1, "specific": 0, "template": 1, "ignore": 0, "included": False}
    with_eos = label_stats(recs, small_tok, TINY_TEMPLATE_ARGS, include_eos=True)
    assert with_eos["n_tokens"] == st_["n_tokens"] + 1 and with_eos["n_labelled"] == st_["n_labelled"] + 1


# ----------------------------------------------------------------------------- loaders
def write(path, lines):
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_missing_file_names_path(tmp_path):
    write(tmp_path / "full.json", [json.dumps({"question": "q", "answer": "a"})])
    with pytest.raises(FileNotFoundError) as e:
        load_tofu_split(tmp_path, "forget10")
    assert str(tmp_path / "forget10.json") in str(e.value) and "available: full" in str(e.value)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_tofu_split(tmp_path / "nope", "full")


def test_malformed_line_names_file_and_line(tmp_path):
    first = json.dumps({"question": "q", "answer": "a"})
    p = write(tmp_path / "forget10.json", [first, '{"question": "q",', ""])
    with pytest.raises(ValueError, match=r"forget10\.json: line 2: malformed JSON"):
        load_tofu_split(tmp_path, "forget10")
    write(p, [json.dumps({"question": "q", "answer": "a"}), "[1, 2]"])
    with pytest.raises(ValueError, match="line 2: expected a JSON object, got int"):
        load_tofu_split(tmp_path, "forget10")
    write(p, [""])
    with pytest.raises(ValueError, match="no records"):
        load_tofu_split(tmp_path, "forget10")


def test_missing_or_bad_field_names_file_line_field(tmp_path):
    good = {"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": ["x"],
            "paraphrased_question": "pq"}
    p = tmp_path / "forget10_perturbed.json"
    bad = dict(good)
    del bad["paraphrased_answer"]
    write(p, [json.dumps(good), json.dumps(good), json.dumps(bad)])
    missing = r"forget10_perturbed\.json: line 3: missing field 'paraphrased_answer'"
    with pytest.raises(ValueError, match=missing):
        load_tofu_split(tmp_path, "forget10_perturbed")
    with pytest.raises(ValueError, match="line 3: missing field 'paraphrased_answer'"):
        tofu_records_with_spans(tmp_path, "forget10")
    write(p, [json.dumps(good | {"perturbed_answer": "x"})])
    with pytest.raises(ValueError, match="line 1: field 'perturbed_answer' must be a non-empty list"):
        load_tofu_split(tmp_path, "forget10_perturbed.json")
    write(p, [json.dumps(good | {"answer": 3})])
    with pytest.raises(ValueError, match="line 1: field 'answer' must be a string, got int"):
        load_tofu_split(tmp_path, "forget10_perturbed")
    # real_authors_perturbed has no paraphrase: not required there
    write(tmp_path / "real_authors_perturbed.json", [json.dumps({"question": "q", "answer": "a",
                                                                 "perturbed_answer": ["b", "c"]})])
    assert load_tofu_split(tmp_path, "real_authors_perturbed")[0]["answer"] == "a"


def test_other_serialisations_are_accepted(tmp_path):
    recs = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]
    write(tmp_path / "batched.json", [json.dumps(recs[:3]), json.dumps(recs[3:])])
    (tmp_path / "array.json").write_text(json.dumps(recs, indent=2), encoding="utf-8")
    assert load_tofu_split(tmp_path, "batched") == recs
    assert load_tofu_split(tmp_path, "array") == recs


# ----------------------------------------------------------------------------- real TOFU
@pytest.fixture(scope="module")
def tofu_dir():
    if not (TOFU_DIR / "forget10_perturbed.json").is_file():
        pytest.skip(f"real TOFU data not found at {TOFU_DIR}")
    return TOFU_DIR


@pytest.mark.parametrize("name,n,fields", [
    ("full", 4000, {"question", "answer"}), ("forget10", 400, {"question", "answer"}),
    ("retain90", 3600, {"question", "answer"}), ("holdout10", 400, {"question", "answer"}),
    ("forget10_perturbed", 400, {"question", "answer", "paraphrased_answer", "perturbed_answer",
                                 "paraphrased_question"}),
    ("retain_perturbed", 400, {"question", "answer", "paraphrased_answer", "perturbed_answer",
                               "paraphrased_question"}),
    ("real_authors_perturbed", 100, {"question", "answer", "perturbed_answer"}),
    ("world_facts_perturbed", 117, {"question", "answer", "perturbed_answer"}),
    ("real_authors", 100, {"question", "answer", "option1", "option2", "option3", "option4"}),
])
def test_real_tofu_files_load(tofu_dir, name, n, fields):
    recs = load_tofu_split(tofu_dir, name)
    assert len(recs) == n and all(set(r) == fields for r in recs)


def test_real_forget10_labels_tile_every_answer(tofu_dir):
    recs = tofu_records_with_spans(tofu_dir, "forget10")
    plain = load_tofu_split(tofu_dir, "forget10")
    assert [(r["question"], r["answer"]) for r in recs] == [(r["question"], r["answer"]) for r in plain]
    n_words = {I: 0, T: 0, S: 0}
    for r in recs:
        validate_spans(r["answer"], r["spans"])
        assert len(r["perturbed_answer"]) == 5
        for k in kinds_by_word(r["answer"], r["spans"]).values():
            n_words[k] += 1
    assert n_words[S] > 0 and n_words[T] > 0
    frac = (n_words[S] + n_words[T]) / sum(n_words.values())
    assert 0.1 < frac < 0.4, frac  # the design measured ~22 % of tokens get a label
    words = kinds_by_word(recs[0]["answer"], recs[0]["spans"])  # "The author's full name is Hsiao Yun-Hwa."
    assert words["Hsiao"] == S and words["Yun-Hwa"] == S and words["full"] == I


def test_real_forget10_label_stats(tofu_dir):
    recs = tofu_records_with_spans(tofu_dir, "forget10")
    tok = train_tokenizer([r["answer"] for r in load_tofu_split(tofu_dir, "full")], vocab_size=2048)
    st_ = label_stats(recs, tok, TINY_TEMPLATE_ARGS)
    assert st_["n_answers"] == 400 and st_["eos"]["n"] == 400
    assert 0.1 < st_["fraction_labelled"] < 0.35
    assert st_["kinds"]["specific"] > 0 and st_["kinds"]["template"] > 0
    # stop-words are mostly generic-or-unlabelled, hardly ever fact tokens
    sw = st_["by_type"]["stopword"]
    assert sw["specific"] < 0.1 * sw["total"]


# ----------------------------------------------------------------------------- proxy labels
def test_proxy_labels_handmade():
    p_t = torch.tensor([[0.9, 0.9, 0.5, 0.5, 0.05, 0.5, 0.3]])
    p_r = torch.tensor([[0.05, 0.3, 0.45, 0.05, 0.06, 0.2, 0.3]])
    # d:        3.0/p_r<.1  1.1/p_r=.3  0.105   2.3/p_r<.1  -0.18     0.92      0 (masked)
    mask = torch.tensor([[True, True, True, True, True, True, False]])
    kinds = proxy_labels(p_t.log(), p_r.log(), mask)
    assert kinds.tolist() == [[S, I, T, S, T, I, KIND_NONE]]
    assert kinds.dtype == torch.long
    # NaN -> unlabelled; None mask = everywhere; thresholds are parameters
    nan = proxy_labels(torch.tensor([[math.nan, -0.1]]), torch.tensor([[-1.0, -0.1]]), None)
    assert nan.tolist() == [[I, T]]
    strict = proxy_labels(p_t.log(), p_r.log(), mask, specific_margin=2.5)
    assert strict[0, 3] == I and strict[0, 0] == S


def test_proxy_labels_shapes():
    with pytest.raises(ValueError, match="same shape"):
        proxy_labels(torch.zeros(2, 3), torch.zeros(2, 4), None)
    with pytest.raises(ValueError, match="mask"):
        proxy_labels(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3, 2, dtype=torch.bool))
