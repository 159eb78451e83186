"""The evaluators' shared model calls (atwu_plugin.evals.engine) on a tiny random Llama:
padding and batching change no result, stops and eval mode behave as documented."""

import numpy as np
import pytest
import torch

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.evals import engine
from atwu_plugin.losses.tokens import IGNORE_INDEX
from atwu_plugin.zoo.build import TinyLlamaSpec
from atwu_plugin.zoo.tokenizer import train_tokenizer

TEXTS = ["Mira Talen was born in Osterby.", "She writes gothic poetry.", "Her father was a baker.",
         "The capital of France is Paris.", "A spider has eight legs."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS * 3, vocab_size=200)


@pytest.fixture(scope="module")
def model(tok):
    spec = TinyLlamaSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    return spec.build(tok, seed=0).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def seqs(tok):
    return [tok(t, add_special_tokens=True)["input_ids"][: 3 + i] for i, t in enumerate(TEXTS)]  # ragged


def _generate(model, tok, prompts, batch_size, **kw):
    return engine.greedy_generate(model, tok, prompts, max_new_tokens=5, batch_size=batch_size,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kw)


def test_greedy_generate_is_batch_invariant(model, tok, seqs):
    one = _generate(model, tok, seqs, 1)
    assert _generate(model, tok, seqs, 3) == one == _generate(model, tok, seqs, 5)
    assert len(one) == len(seqs) and any(one)


def test_stop_token_ids_end_a_row_at_the_first_match(model, tok, seqs):
    every_token = torch.arange(len(tok))
    stopped = _generate(model, tok, seqs, 2, stop_token_ids=every_token)
    first = engine.greedy_generate(model, tok, seqs, max_new_tokens=1, batch_size=2, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    assert stopped == first


def test_sequence_logprobs_match_unpadded_log_softmax(model, seqs, tok):
    got = engine.sequence_logprobs(model, seqs, batch_size=2, pad_token_id=tok.pad_token_id, with_stats=True)
    for s, (lp, mu, sd) in zip(seqs, got):
        logits = model(input_ids=torch.tensor([s])).logits[0, :-1].float()
        want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s[1:])[:, None]).squeeze(-1)
        assert lp.shape == mu.shape == sd.shape == (len(s) - 1,)
        np.testing.assert_allclose(lp, want.detach().numpy(), rtol=0, atol=1e-5)
        assert (mu <= 0).all() and (sd > 0).all()
    plain = engine.sequence_logprobs(model, seqs, batch_size=5, pad_token_id=tok.pad_token_id)
    for (lp, _, _), p in zip(got, plain):
        np.testing.assert_allclose(lp, p, rtol=0, atol=1e-5)


def test_next_token_logits_match_the_unpadded_last_position(model, seqs, tok):
    cands = [4, 9, 17]
    got = engine.next_token_logits(model, seqs, cands, batch_size=3, pad_token_id=tok.pad_token_id)
    for s, row in zip(seqs, got):
        want = model(input_ids=torch.tensor([s])).logits[0, -1, cands]
        np.testing.assert_allclose(row, want.detach().numpy(), rtol=0, atol=1e-5)


def test_answer_avg_nll_comes_back_in_input_order(model, seqs, tok):
    feats = []
    for s in seqs:
        ids = torch.tensor(s)
        labels = ids.clone()
        labels[:2] = IGNORE_INDEX  # a two-token "prompt"
        feats.append({"input_ids": ids, "labels": labels})
    collate = TokenLabelCollator(tok.pad_token_id)
    seen = []
    got = engine.answer_avg_nll(model, feats, collate, batch_size=2, on_batch=lambda b, lg, lp: seen.append(len(lg)))
    assert seen == [2, 2, 1]
    for f, v in zip(feats, got):
        logp = torch.log_softmax(model(input_ids=f["input_ids"][None]).logits[0, :-1].float(), -1)
        nll = -logp.gather(-1, f["input_ids"][1:, None]).squeeze(-1)[1:].double().mean()
        assert v == pytest.approx(float(nll), abs=1e-5)


def test_eval_mode_restores_mode_and_dtype(model):
    model.train()
    with engine.eval_mode(model, dtype=torch.float64) as m:
        assert not m.training and next(m.parameters()).dtype == torch.float64
    assert model.training and next(model.parameters()).dtype == torch.float32
    model.eval()
