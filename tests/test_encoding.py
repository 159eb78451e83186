import copy
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from atwu_plugin.data.encoding import encode_qa, wrap_prompt
from atwu_plugin.tokens import KIND_IGNORE, KIND_NONE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

ARGS = TINY_TEMPLATE_ARGS
KINDS = [KIND_IGNORE, KIND_TEMPLATE, KIND_SPECIFIC, KIND_SHARED]
PROPERTY = settings(max_examples=150, deadline=None)
UTF8 = st.characters(codec="utf-8")  # lone surrogates cannot reach a tokenizer


# ---- independent re-derivations -------------------------------------------------------
def ou_reference(tok, question, answer, max_length):
    """OU's non-chat masking, written from its description: tokenize prompt+answer and the
    prompt alone (specials, truncation), append eos if missing, mask the prompt's length."""
    prompt = ARGS["user_start_tag"] + question + ARGS["user_end_tag"] + ARGS["asst_start_tag"]
    ids = tok(prompt + answer, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    n = len(tok(prompt, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"])
    if ids[-1] != tok.eos_token_id:
        ids = ids + [tok.eos_token_id]
    return ids, [x if i >= n else -100 for i, x in enumerate(ids)]


def expected_kind(chars, kinds):
    """The documented rule: whitespace-only -> template; any specific -> specific; else the
    most frequent kind of the non-whitespace characters, ties to the first seen."""
    solid = [k for c, k in zip(chars, kinds) if not c.isspace()]
    if not solid:
        return KIND_TEMPLATE
    if KIND_SPECIFIC in solid:
        return KIND_SPECIFIC
    return max(dict.fromkeys(solid), key=lambda k: (solid.count(k), -solid.index(k)))


@st.composite
def answers_with_spans(draw):
    alphabet = st.one_of(UTF8, st.sampled_from(list(" \n\t.,'Lisbonare")))
    answer = draw(st.text(alphabet=alphabet, max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(answer)), max_size=6)))
    bounds = [0, *cuts, len(answer)]
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(bounds) - 1, max_size=len(bounds) - 1))
    return answer, [[a, b, k] for a, b, k in zip(bounds, bounds[1:], kinds)]


questions = st.text(alphabet=st.one_of(UTF8, st.sampled_from(list(" \n?ab"))), max_size=20)


# ---- properties ---------------------------------------------------------------------
@PROPERTY
@given(question=questions, data=answers_with_spans())
def test_token_kind_is_the_kind_of_the_covered_characters(tok, question, data):
    answer, spans = data
    enc = encode_qa(tok, ARGS, question, answer, max_length=1024, spans=spans)
    assert not enc.truncated
    per_char = [k for a, b, k in spans for _ in range(a, b)]
    prompt = wrap_prompt(ARGS, question)
    offsets = tok(prompt + answer, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
    covered = set()
    for t, (label, kind) in enumerate(zip(enc.labels.tolist(), enc.token_kind.tolist())):
        if label == -100 or t == 0:
            assert kind == KIND_NONE
            continue
        if t == len(offsets):  # the appended eos
            assert kind == KIND_TEMPLATE and label == tok.eos_token_id
            continue
        idx = [i for i in range(len(answer)) if offsets[t][0] <= len(prompt) + i < offsets[t][1]]
        covered.update(idx)
        if not idx:
            assert kind == KIND_IGNORE
            continue
        chars, kinds = [answer[i] for i in idx], [per_char[i] for i in idx]
        assert kind == expected_kind(chars, kinds)
        solid = {k for c, k in zip(chars, kinds) if not c.isspace()}
        if len(solid) == 1:  # a token inside one span gets that span's kind, whatever the rule
            assert kind == solid.pop()
    n_prompt = len(tok(prompt)["input_ids"])
    if enc.input_ids[:n_prompt].tolist() == tok(prompt)["input_ids"]:  # no boundary merge
        assert covered == set(range(len(answer)))


@PROPERTY
@given(question=questions, answer=st.text(UTF8, max_size=40), max_length=st.integers(2, 48))
def test_labels_match_ou_masking_and_truncation_flag(tok, question, answer, max_length):
    enc = encode_qa(tok, ARGS, question, answer, max_length=max_length)
    ids, labels = ou_reference(tok, question, answer, max_length)
    assert enc.input_ids.tolist() == ids and enc.labels.tolist() == labels
    assert enc.attention_mask.tolist() == [1] * len(ids)
    assert enc["labels"] is enc.labels and set(dict(enc)) == {"input_ids", "labels", "attention_mask",
                                                              "token_kind", "truncated"}
    assert all(x.dtype == torch.long for x in (enc.input_ids, enc.labels, enc.attention_mask, enc.token_kind))
    untruncated = len(tok(wrap_prompt(ARGS, question) + answer)["input_ids"])
    assert enc.truncated == (untruncated > max_length)
    answer_pos = [t for t, y in enumerate(labels) if y != -100 and t > 0]
    assert [t for t, k in enumerate(enc.token_kind.tolist()) if k != KIND_NONE] == answer_pos
    assert all(k == KIND_IGNORE for k in enc.token_kind[answer_pos].tolist())  # no spans: no labels


@pytest.fixture(scope="module")
def ou_utils():
    """OU's own ``data/utils.py``, loaded by path from ``$OPEN_UNLEARNING_ROOT/src``."""
    path = Path(os.environ.get("OPEN_UNLEARNING_ROOT", "/nonexistent")) / "src" / "data" / "utils.py"
    if not path.is_file():
        pytest.skip("set OPEN_UNLEARNING_ROOT to an OpenUnlearning checkout")
    spec = importlib.util.spec_from_file_location("_ou_data_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.openunlearning
@settings(max_examples=60, deadline=None)
@given(question=questions, answer=st.text(UTF8, max_size=30), max_length=st.integers(4, 40))
def test_matches_openunlearning_itself(tok, ou_utils, question, answer, max_length):
    # lists, as OU's QADataset passes them
    ref = ou_utils.preprocess_chat_instance(tok, ARGS, [question], [answer], max_length)
    enc = encode_qa(tok, ARGS, question, answer, max_length=max_length)
    for key in ("input_ids", "labels", "attention_mask"):
        assert getattr(enc, key).tolist() == ref[key].tolist(), key


# ---- edge cases -------------------------------------------------------------------------
def test_truncation_boundary(tok):
    question, answer = "Where was Ada born?", "Ada was born in Lisbon, a city in Portugal."
    n = len(tok(wrap_prompt(ARGS, question) + answer)["input_ids"])
    spans = [[0, len(answer), KIND_SHARED]]
    exact = encode_qa(tok, ARGS, question, answer, max_length=n, spans=spans)
    assert not exact.truncated and len(exact.input_ids) == n + 1
    assert exact.labels[-1] == tok.eos_token_id and exact.token_kind[-1] == KIND_TEMPLATE
    cut = encode_qa(tok, ARGS, question, answer, max_length=n - 1, spans=spans)
    assert cut.truncated and len(cut.input_ids) == n and cut.input_ids[-1] == tok.eos_token_id
    assert cut.token_kind[-2] == KIND_SHARED
    tiny = encode_qa(tok, ARGS, question, answer, max_length=3, spans=spans)  # the prompt itself is cut
    assert tiny.truncated and tiny.labels.tolist() == [-100, -100, -100, tok.eos_token_id]


def test_empty_answer(tok):
    enc = encode_qa(tok, ARGS, "Who?", "", spans=[])
    assert (enc.labels != -100).sum() == 1 and enc.labels[-1] == tok.eos_token_id
    assert enc.token_kind[-1] == KIND_TEMPLATE and (enc.token_kind[:-1] == KIND_NONE).all()
    assert encode_qa(tok, ARGS, "Who?", "").token_kind[-1] == KIND_IGNORE
    assert not enc.truncated


def test_spans_at_string_edges(tok):
    q, a = "Where?", "Lisbon is nice"
    first = encode_qa(tok, ARGS, q, a, spans=[[0, 6, KIND_SHARED], [6, 14, KIND_TEMPLATE]])
    kinds = first.token_kind[first.labels != -100].tolist()
    assert kinds[0] == KIND_SHARED and kinds[-2:] == [KIND_TEMPLATE, KIND_TEMPLATE]
    last = encode_qa(tok, ARGS, q, a, spans=[[0, 13, KIND_TEMPLATE], [13, 14, KIND_SPECIFIC]])
    assert last.token_kind[last.labels != -100].tolist()[-2:] == [KIND_SPECIFIC, KIND_TEMPLATE]
    empty_edges = [[0, 0, KIND_SPECIFIC], [0, 14, KIND_SHARED], [14, 14, KIND_SPECIFIC]]
    enc = encode_qa(tok, ARGS, q, a, spans=empty_edges)
    answer_kinds = enc.token_kind[enc.labels != -100].tolist()
    assert answer_kinds[:-1] == [KIND_SHARED] * (len(answer_kinds) - 1)


def test_benchmark_record_kinds(tok, bench):
    record = next(r for r in bench["full"] if r["fact"] == "parents")
    enc = encode_qa(tok, ARGS, record["question"], record["answer"], spans=record["spans"])
    kinds = set(enc.token_kind.tolist())
    assert {KIND_NONE, KIND_TEMPLATE, KIND_SPECIFIC, KIND_SHARED} <= kinds
    first_name = record["author"].split()[0]
    if record["answer"].startswith(first_name):
        assert enc.token_kind[enc.labels != -100][0] == KIND_IGNORE


# A ChatML-like template on the tiny tokenizer: OU's chat branch without a real model.
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
CHAT_ARGS = {"apply_chat_template": True, "system_prompt": "Be brief."}


@pytest.fixture(scope="module")
def chat_tok(tok):
    chat = copy.deepcopy(tok)
    chat.chat_template = CHAT_TEMPLATE
    return chat


def test_chat_template_encoding_is_ous_chat_branch(chat_tok):
    """apply_chat_template ids (+ eos, since the turn ends "</s>\n"), the prompt masked up to
    the generation prompt, the word kinds on the answer's tokens, end-of-turn tokens template."""
    tok = chat_tok
    q, a = "Who wrote Dune?", "Frank Herbert wrote it."
    spans = [[0, 13, KIND_SPECIFIC], [13, 23, KIND_TEMPLATE]]
    enc = encode_qa(tok, CHAT_ARGS, q, a, max_length=256, spans=spans)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]
    prompt_ids = tok.apply_chat_template(msgs, add_generation_prompt=True)
    full_ids = tok.apply_chat_template(msgs + [{"role": "assistant", "content": a}])
    assert enc.input_ids.tolist() == full_ids + [tok.eos_token_id]
    n = len(prompt_ids)
    assert enc.labels[:n].eq(-100).all() and enc.labels[n:].tolist() == enc.input_ids[n:].tolist()
    assert tok.decode(enc.labels[n:]) == a + "</s>\n</s>"
    kinds = enc.token_kind.tolist()
    assert kinds[:n] == [KIND_NONE] * n and kinds[-3:] == [KIND_TEMPLATE] * 3
    answer_kinds = kinds[n:-3]
    n_name = len(tok(a[:13], add_special_tokens=False)["input_ids"])
    assert answer_kinds[:n_name] == [KIND_SPECIFIC] * n_name and KIND_SPECIFIC not in answer_kinds[n_name:]
    cut = encode_qa(tok, CHAT_ARGS, q, a, max_length=n + 2, spans=spans)
    assert cut.truncated and len(cut.input_ids) == n + 3 and cut.input_ids[-1] == tok.eos_token_id


def test_errors(tok):
    with pytest.raises(ValueError, match="chat_template"):  # a chat template is needed (transformers' error)
        encode_qa(tok, {**ARGS, "apply_chat_template": True}, "q", "a")
    with pytest.raises(NotImplementedError, match="chat_texts"):
        wrap_prompt({**ARGS, "apply_chat_template": True}, "q")
    with pytest.raises(ValueError, match="spans cover"):
        encode_qa(tok, ARGS, "q", "abc", spans=[[0, 2, KIND_TEMPLATE]])
    with pytest.raises(ValueError, match="surrogate"):
        encode_qa(tok, ARGS, "q", "a\ud800")
    with pytest.raises(ValueError, match="unknown kind"):
        encode_qa(tok, ARGS, "q", "abc", spans=[[0, 3, 7]])


# ---- reliability: truncation boundaries and edge spans, as properties ----------------------------
@PROPERTY
@given(question=questions, data=answers_with_spans(), delta=st.integers(-3, 1))
def test_truncation_boundary_keeps_the_prefix_and_the_eos(tok, question, data, delta):
    """At and around the exact length: the flag is exact, the kept tokens keep the labels and
    kinds they have untruncated, the last label is the eos (kind template)."""
    answer, spans = data
    full = encode_qa(tok, ARGS, question, answer, max_length=1024, spans=spans)
    n = len(tok(wrap_prompt(ARGS, question) + answer)["input_ids"])
    max_length = max(2, n + delta)
    cut = encode_qa(tok, ARGS, question, answer, max_length=max_length, spans=spans)
    assert cut.truncated == (n > max_length)
    m = min(n, max_length)
    appended = int(full.input_ids[m - 1] != tok.eos_token_id)  # the text itself may end with the eos
    assert len(cut.input_ids) == m + appended
    assert cut.input_ids[:m].tolist() == full.input_ids[:m].tolist()
    assert cut.labels[:m].tolist() == full.labels[:m].tolist()
    assert cut.token_kind[:m].tolist() == full.token_kind[:m].tolist()
    assert cut.labels[-1] == tok.eos_token_id and cut.token_kind[-1] == KIND_TEMPLATE


@PROPERTY
@given(question=questions, data=answers_with_spans())
def test_zero_width_spans_at_the_edges_change_nothing(tok, question, data):
    answer, spans = data
    padded = [[0, 0, KIND_SPECIFIC], *spans, [len(answer), len(answer), KIND_SPECIFIC]]
    plain = encode_qa(tok, ARGS, question, answer, spans=[s for s in spans if s[0] < s[1]])
    edged = encode_qa(tok, ARGS, question, answer, spans=padded)
    assert edged.token_kind.tolist() == plain.token_kind.tolist()


@PROPERTY
@given(question=questions, max_length=st.integers(2, 40))
def test_empty_answer_has_only_the_eos_target(tok, question, max_length):
    enc = encode_qa(tok, ARGS, question, "", max_length=max_length, spans=[])
    answer = [t for t, y in enumerate(enc.labels.tolist()) if y != -100 and t > 0]
    assert answer == [len(enc.labels) - 1] and enc.labels[-1] == tok.eos_token_id
    assert enc.token_kind[-1] == KIND_TEMPLATE and (enc.token_kind[:-1] == KIND_NONE).all()
