import logging

import pytest
import torch
from torch.utils.data import DataLoader

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.data.qa_dataset import ForgetRetainDataset, QADataset
from atwu_plugin.tokens import KIND_IGNORE, KIND_NONE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

ARGS = TINY_TEMPLATE_ARGS


def _item(ids, labels, kinds, index):
    t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return {"input_ids": t(ids), "labels": t(labels), "attention_mask": t([1] * len(ids)),
            "token_kind": t(kinds), "index": index}


A = _item([1, 5, 6, 7], [-100, -100, 6, 7], [KIND_NONE, KIND_NONE, 1, 0], 3)
B = _item([1, 8], [-100, 8], [KIND_NONE, 2], 9)


def test_right_and_left_padding():
    right = TokenLabelCollator(pad_token_id=0)([A, B])
    assert right["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert right["labels"].tolist() == [[-100, -100, 6, 7], [-100, 8, -100, -100]]
    assert right["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert right["token_kind"].tolist() == [[KIND_NONE, KIND_NONE, 1, 0],
                                            [KIND_NONE, 2, KIND_NONE, KIND_NONE]]
    assert right["index"].tolist() == [3, 9]
    left = TokenLabelCollator(pad_token_id=0, padding_side="left")([A, B])
    assert left["input_ids"].tolist() == [[1, 5, 6, 7], [0, 0, 1, 8]]
    assert left["labels"].tolist() == [[-100, -100, 6, 7], [-100, -100, -100, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert left["token_kind"][1].tolist() == [KIND_NONE, KIND_NONE, KIND_NONE, 2]
    with pytest.raises(ValueError, match="padding_side"):
        TokenLabelCollator(0, padding_side="middle")


def test_attention_mask_from_lengths_when_missing():
    items = [{"input_ids": torch.tensor([1, 0])}, {"input_ids": torch.tensor([1])}]
    batch = TokenLabelCollator(pad_token_id=0)(items)
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]  # the real token 0 stays attended


def test_nested_dicts():
    nested = [{"forget": A, "retain": {0: B, 1: A}}, {"forget": B, "retain": {0: A, 1: B}}]
    batch = TokenLabelCollator(pad_token_id=0)(nested)
    assert set(batch) == {"forget", "retain"} and set(batch["retain"]) == {0, 1}
    assert batch["forget"]["labels"].tolist() == [[-100, -100, 6, 7], [-100, 8, -100, -100]]
    assert batch["retain"][0]["index"].tolist() == [9, 3]
    assert batch["retain"][1]["token_kind"].shape == (2, 4)


def test_dataset_items_survive_batching(tok, bench):
    records = bench["forget10"]
    ds = QADataset(records, tok, ARGS)
    assert len(ds) == len(records) and ds.n_truncated == 0
    loader = DataLoader(ds, batch_size=7, collate_fn=TokenLabelCollator(tok.pad_token_id))
    seen = 0
    for batch in loader:
        for row, index in enumerate(batch["index"].tolist()):
            item = ds[index]
            n = len(item["input_ids"])
            for key in ("input_ids", "labels", "attention_mask", "token_kind"):
                assert torch.equal(batch[key][row, :n], item[key]), key
            assert (batch["labels"][row, n:] == -100).all()
            assert (batch["token_kind"][row, n:] == KIND_NONE).all()
            assert (batch["attention_mask"][row, n:] == 0).all()
            seen += 1
        # kinds are set exactly on answer tokens
        answer = batch["labels"] != -100
        answer[:, 0] = False
        assert torch.equal(answer, batch["token_kind"] != KIND_NONE)
    assert seen == len(records)
    assert (torch.cat([ds[i]["token_kind"] for i in range(len(ds))]) == KIND_SPECIFIC).any()


def test_list_answers_and_span_keys(tok, bench):
    records = bench["forget05"]
    perturbed = QADataset(records, tok, ARGS, answer_key="perturbed_answer", spans_key=None)
    item = perturbed[0]
    assert set(item) == {0, 1, 2} and all(it["index"] == 0 for it in item.values())
    assert all((it["token_kind"][it["labels"] != -100] == KIND_IGNORE).all() for it in item.values())
    batch = TokenLabelCollator(tok.pad_token_id)([perturbed[0], perturbed[1]])
    assert set(batch) == {0, 1, 2} and batch[2]["input_ids"].shape[0] == 2
    para = QADataset(records, tok, ARGS, answer_key="paraphrased_answer", spans_key="paraphrased_spans")
    assert (para[0]["token_kind"] >= 0).any()
    with pytest.raises(ValueError, match="spans_key='spans' tiles 'answer'"):
        QADataset(records, tok, ARGS, answer_key="paraphrased_answer")


def test_truncation_is_counted_and_warned_once(tok, bench, caplog):
    with caplog.at_level(logging.WARNING):
        ds = QADataset(bench["forget10"], tok, ARGS, max_length=12)
    assert ds.n_truncated == len(ds)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "max_length=12" in warnings[0].getMessage()


def test_forget_retain_pairs_are_deterministic(tok, bench):
    forget = QADataset(bench["forget10"], tok, ARGS)
    retain = QADataset(bench["retain90"], tok, ARGS)
    pairs = ForgetRetainDataset(forget, retain, seed=5)
    assert len(pairs) == len(forget)
    def picks(ds, order):
        return {i: int(ds[i]["retain"]["index"]) for i in order}

    first = picks(pairs, range(len(pairs)))
    assert first == picks(pairs, reversed(range(len(pairs))))  # independent of access order
    assert first == picks(ForgetRetainDataset(forget, retain, seed=5), range(len(pairs)))
    assert first != picks(ForgetRetainDataset(forget, retain, seed=6), range(len(pairs)))
    assert len(set(first.values())) > len(first) // 2
    assert pairs[4]["forget"] is forget[4]
    batch = TokenLabelCollator(tok.pad_token_id)([pairs[0], pairs[1]])
    assert batch["forget"]["input_ids"].shape[0] == 2 and batch["retain"]["labels"].shape[0] == 2


# ---- reliability: fuzzed batches ---------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from atwu_plugin.data.encoding import encode_qa  # noqa: E402

PROPERTY = settings(max_examples=100, deadline=None)
KINDS = [KIND_IGNORE, KIND_TEMPLATE, KIND_SPECIFIC, KIND_SHARED]


@st.composite
def raw_items(draw):
    n = draw(st.integers(1, 12))  # length-1 sequences included
    ids = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    labels = [draw(st.sampled_from([-100, x])) for x in ids]
    kinds = [draw(st.sampled_from([KIND_NONE, *KINDS])) for _ in ids]
    return _item(ids, labels, kinds, draw(st.integers(0, 10**6)))


@PROPERTY
@given(items=st.lists(raw_items(), min_size=1, max_size=6), pad=st.integers(0, 50),
       side=st.sampled_from(["right", "left"]))
def test_any_batch_pads_without_touching_the_items(items, pad, side):
    batch = TokenLabelCollator(pad_token_id=pad, padding_side=side)(items)
    width = max(len(i["input_ids"]) for i in items)
    assert batch["input_ids"].shape == (len(items), width)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        real = slice(0, n) if side == "right" else slice(width - n, width)
        fill = slice(n, width) if side == "right" else slice(0, width - n)
        for key, value in (("input_ids", pad), ("labels", -100), ("attention_mask", 0), ("token_kind", KIND_NONE)):
            assert torch.equal(batch[key][row, real], item[key]), key
            assert (batch[key][row, fill] == value).all(), key
    assert batch["index"].tolist() == [i["index"] for i in items]
    # the attention mask comes from lengths, never from comparing ids with the pad id
    assert batch["attention_mask"].sum().item() == sum(len(i["input_ids"]) for i in items)


UNICODE = st.text(st.characters(codec="utf-8"), max_size=30)  # empty answers included


@st.composite
def records(draw):
    answer = draw(UNICODE)
    cut = draw(st.integers(0, len(answer)))  # spans touching both edges, possibly zero-width
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=2, max_size=2))
    return {"question": draw(UNICODE), "answer": answer,
            "spans": [[0, cut, kinds[0]], [cut, len(answer), kinds[1]]]}


@PROPERTY
@given(recs=st.lists(records(), min_size=1, max_size=5), max_length=st.integers(2, 48))
def test_unicode_records_batch_with_aligned_labels_and_kinds(tok, recs, max_length):
    items = [encode_qa(tok, ARGS, r["question"], r["answer"], max_length, spans=r["spans"]).as_item(i)
             for i, r in enumerate(recs)]
    batch = TokenLabelCollator(tok.pad_token_id)(items)
    answer = batch["labels"] != -100
    answer[:, 0] = False
    assert torch.equal(answer, batch["token_kind"] != KIND_NONE)  # kinds exactly on answer tokens
    assert (answer.sum(1) >= 1).all()  # every sample keeps at least its eos target, even if cut
    for row, item in enumerate(items):
        assert batch["labels"][row, len(item["labels"]) - 1] == tok.eos_token_id
