"""Forget/retain losses and the weighted reduction, against hand-computed numbers and against
independent re-implementations of OpenUnlearning's formulas on a tiny HF model."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from atwu_plugin.losses.forget import FORGET_LOSSES
from atwu_plugin.losses.reduce import NORMALIZERS, weighted_reduce
from atwu_plugin.losses.retain import RETAIN_LOSSES, kl_to_reference, nll_loss
from atwu_plugin.losses.tokens import answer_mask, token_logprobs
from atwu_plugin.registry import UnknownNameError
from atwu_plugin.tokens import IGNORE_INDEX

LN2 = math.log(2.0)


def close(actual, expected, tol=1e-5):
    as_float = lambda x: float(x.detach()) if torch.is_tensor(x) else float(x)  # noqa: E731
    return abs(as_float(actual) - as_float(expected)) < tol


# --- weighted_reduce ---------------------------------------------------------------------

PER_TOKEN = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 4.0, 5.0, 0.0]])
MASK = torch.tensor([[False, True, True, True], [False, True, True, False]])
WEIGHTS = torch.tensor([[9.0, 1.0, 2.0, 0.5], [9.0, 1.0, 0.0, 7.0]])  # 9 and 7 sit off the mask


def test_reduce_batch_tokens():
    # (1*1 + 2*2 + 0.5*3 + 1*4 + 0*5) / 5 answer tokens
    assert close(weighted_reduce(PER_TOKEN, WEIGHTS, MASK, "batch_tokens"), 10.5 / 5)


def test_reduce_weight_sum():
    assert close(weighted_reduce(PER_TOKEN, WEIGHTS, MASK, "weight_sum"), 10.5 / 4.5)


def test_reduce_sequence_mean():
    # sequence 0: 6.5 / 3.5, sequence 1: 4 / 1
    assert close(weighted_reduce(PER_TOKEN, WEIGHTS, MASK, "sequence_mean"), (6.5 / 3.5 + 4.0) / 2)
    # a sequence without weight is left out of the mean
    weights = WEIGHTS.clone()
    weights[1] = 0.0
    assert close(weighted_reduce(PER_TOKEN, weights, MASK, "sequence_mean"), 6.5 / 3.5)


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_reduce_zero_weight_is_zero_not_nan(normalizer):
    out = weighted_reduce(PER_TOKEN, torch.zeros_like(WEIGHTS), MASK, normalizer)
    assert float(out) == 0.0


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_reduce_ignores_inf_off_mask(normalizer):
    per_token = PER_TOKEN.clone()
    per_token[~MASK] = -math.inf
    expected = weighted_reduce(PER_TOKEN, WEIGHTS, MASK, normalizer)
    assert close(weighted_reduce(per_token, WEIGHTS, MASK, normalizer), expected)


def test_reduce_unknown_normalizer_lists_valid_ones():
    with pytest.raises(ValueError, match="batch_tokens.*weight_sum.*sequence_mean"):
        weighted_reduce(PER_TOKEN, WEIGHTS, MASK, "tokens")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.01, 10.0), min_size=3, max_size=3), st.floats(0.1, 100.0))
def test_weight_sum_and_sequence_mean_ignore_weight_scale(w, scale):
    weights = torch.tensor([[0.0, *w]])
    per_token = torch.tensor([[0.0, 1.0, -2.0, 0.5]])
    mask = torch.tensor([[False, True, True, True]])
    for normalizer in ("weight_sum", "sequence_mean"):
        a = weighted_reduce(per_token, weights, mask, normalizer)
        b = weighted_reduce(per_token, weights * scale, mask, normalizer)
        assert close(a, b, 1e-4)


# --- token-level forget losses, by hand --------------------------------------------------

LOGP = torch.log(torch.tensor([[1.0, 0.5, 0.25], [1.0, 0.1, 1.0]]))
ANSWER = torch.tensor([[False, True, True], [False, True, False]])
ONES = torch.ones(2, 3)


def test_ga_per_token_and_mean():
    loss = FORGET_LOSSES.build("ga")
    assert torch.equal(loss.per_token(LOGP), LOGP)
    assert close(loss(LOGP, ANSWER, ONES), (math.log(0.5) + math.log(0.25) + math.log(0.1)) / 3)


def test_npo_token_by_hand():
    logp = torch.log(torch.tensor([[1.0, 0.5, 0.1]]))
    ref = torch.log(torch.tensor([[1.0, 0.25, 0.1]]))
    loss = FORGET_LOSSES.build("npo_token", beta=2.0)
    # (2/2) softplus(2 ln 2) = ln(1 + 4);  equal probs: softplus(0) = ln 2
    expected = torch.tensor([[LN2, math.log(5.0), LN2]])
    assert torch.allclose(loss.per_token(logp, ref), expected, atol=1e-6)
    mask = torch.tensor([[False, True, True]])
    assert close(loss(logp, mask, torch.ones(1, 3), ref), (math.log(5.0) + LN2) / 2)


def test_simnpo_token_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.5]]))
    assert close(FORGET_LOSSES.build("simnpo_token").per_token(logp)[0, 1], 2 * math.log(1.5))
    # delta = ln 2 cancels log 0.5: (2/beta) softplus(0)
    loss = FORGET_LOSSES.build("simnpo_token", beta=4.0, delta=LN2)
    assert close(loss.per_token(logp)[0, 1], 0.5 * LN2)


def test_saturated_prob_by_hand():
    loss = FORGET_LOSSES.build("saturated_prob", normalizer="weight_sum")
    weights = torch.tensor([[0.0, 1.0, 3.0], [0.0, 2.0, 0.0]])
    # (1*0.5 + 3*0.25 + 2*0.1) / (1 + 3 + 2)
    assert close(loss(LOGP, ANSWER, weights), (0.5 + 0.75 + 0.2) / 6)


# --- sequence-level forget losses, by hand -----------------------------------------------


def test_npo_sequence_by_hand():
    logp = torch.log(torch.tensor([[1.0, 0.5, 0.5], [1.0, 0.3, 0.2]]))
    ref = torch.log(torch.tensor([[1.0, 0.25, 0.25], [1.0, 0.3, 0.2]]))
    mask = torch.tensor([[False, True, True], [False, True, True]])
    loss = FORGET_LOSSES.build("npo", beta=1.0)
    # s_0 = 2 ln 2 -> 2 softplus(ln 4) = 2 ln 5;  s_1 = 0 -> 2 ln 2
    assert close(loss(logp, mask, torch.ones(2, 3), ref), (2 * math.log(5.0) + 2 * LN2) / 2)
    # halving the weights of sequence 0: s_0 = ln 2 -> 2 ln 3
    weights = torch.tensor([[1.0, 0.5, 0.5], [1.0, 1.0, 1.0]])
    assert close(loss(logp, mask, weights, ref), (2 * math.log(3.0) + 2 * LN2) / 2)


def test_simnpo_sequence_by_hand():
    logp = torch.log(torch.tensor([[1.0, 0.5, 0.25]]))
    mask = torch.tensor([[False, True, True]])
    # a = -1.5 ln 2;  beta = 2: softplus(-3 ln 2) = ln(1 + 1/8)
    loss = FORGET_LOSSES.build("simnpo", beta=2.0)
    assert close(loss(logp, mask, torch.ones(1, 3)), math.log(1.125))
    # weights 3, 1: a = -1.25 ln 2;  beta = 4: 0.5 softplus(-5 ln 2) = 0.5 ln(1 + 1/32)
    loss = FORGET_LOSSES.build("simnpo", beta=4.0)
    assert close(loss(logp, mask, torch.tensor([[0.0, 3.0, 1.0]])), 0.5 * math.log(1 + 1 / 32))


def test_sequence_losses_have_no_per_token():
    for name in ("npo", "simnpo"):
        with pytest.raises(NotImplementedError, match=name):
            FORGET_LOSSES.build(name).per_token(LOGP, LOGP)


# --- against HF and independent re-implementations of OU's formulas ----------------------


@pytest.fixture(scope="module")
def tiny_batch():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=17, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model, ref_model = LlamaForCausalLM(config), LlamaForCausalLM(config)
    input_ids = torch.randint(1, 17, (3, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 5:] = 0  # right padding
    labels = input_ids.clone()
    labels[:, :2] = IGNORE_INDEX  # prompt
    labels[1, :4] = IGNORE_INDEX  # longer prompt
    labels[attention_mask == 0] = IGNORE_INDEX
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        ref_logits = ref_model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = out.logits.detach().requires_grad_(True)
    return {"logits": logits, "ref_logits": ref_logits, "labels": labels, "hf_loss": out.loss}


def ou_sequence_nll(logits, labels):
    """OU's compute_batch_nll, written out: summed CE of the shifted labels per sequence."""
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
    return ce.sum(-1)


def test_ga_equals_minus_hf_loss(tiny_batch):
    logits, labels = tiny_batch["logits"], tiny_batch["labels"]
    logp = token_logprobs(logits, labels)
    loss = FORGET_LOSSES.build("ga")(logp, answer_mask(labels), torch.ones(labels.shape))
    assert close(loss, -tiny_batch["hf_loss"])
    assert close(nll_loss(logits, labels), tiny_batch["hf_loss"])
    assert close(RETAIN_LOSSES.build("nll")(logits, labels), tiny_batch["hf_loss"])


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0])
def test_npo_equals_ou_formula(tiny_batch, beta):
    logits, ref_logits, labels = tiny_batch["logits"], tiny_batch["ref_logits"], tiny_batch["labels"]
    nll, ref_nll = ou_sequence_nll(logits, labels), ou_sequence_nll(ref_logits, labels)
    ou = (-2 / beta * F.logsigmoid(beta * (nll - ref_nll))).mean()

    logp, ref_logp = token_logprobs(logits, labels), token_logprobs(ref_logits, labels)
    ones = torch.ones(labels.shape)
    ours = FORGET_LOSSES.build("npo", beta=beta)(logp, answer_mask(labels), ones, ref_logp)
    assert close(ours, ou)
    grad_ours, = torch.autograd.grad(ours, logits)
    grad_ou, = torch.autograd.grad(ou, logits)
    assert torch.allclose(grad_ours, grad_ou, atol=1e-6)


@pytest.mark.parametrize("beta,delta", [(1.0, 0.0), (2.5, 0.5), (0.3, 1.0)])
def test_simnpo_equals_ou_formula(tiny_batch, beta, delta):
    logits, labels = tiny_batch["logits"], tiny_batch["labels"]
    length = (labels != -100).sum(-1)
    ou = -F.logsigmoid(beta * (ou_sequence_nll(logits, labels) / length - delta)).mean() * 2 / beta

    ours = FORGET_LOSSES.build("simnpo", beta=beta, delta=delta)(
        token_logprobs(logits, labels), answer_mask(labels), torch.ones(labels.shape)
    )
    assert close(ours, ou)
    grad_ours, = torch.autograd.grad(ours, logits)
    grad_ou, = torch.autograd.grad(ou, logits)
    assert torch.allclose(grad_ours, grad_ou, atol=1e-6)


def test_kl_equals_ou_value(tiny_batch):
    logits, ref_logits = tiny_batch["logits"], tiny_batch["ref_logits"]
    vocab = logits.shape[-1]
    ou = F.kl_div(
        F.log_softmax(logits, -1).view(-1, vocab), F.log_softmax(ref_logits, -1).view(-1, vocab),
        reduction="batchmean", log_target=True,
    )
    assert close(kl_to_reference(logits, ref_logits), ou)
    assert close(RETAIN_LOSSES.build("kl")(logits, tiny_batch["labels"], ref_logits), ou)


def test_kl_answer_only_by_hand():
    # position 0 predicts label 1 (an answer token), position 1 predicts the ignored label 2
    logits = torch.tensor([[[0.0, 0.0], [5.0, -5.0], [0.0, 0.0]]])
    ref_logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX]])
    # KL(ref || model) at position 0: ref = (1/4, 3/4), model = (1/2, 1/2)
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert close(kl_to_reference(logits, ref_logits, labels), expected)
    assert close(RETAIN_LOSSES.build("kl", answer_only=True)(logits, labels, ref_logits), expected)


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["npo", "npo_token", "simnpo", "simnpo_token"])
@pytest.mark.parametrize("beta", [0.0, -1.0, math.nan, math.inf, "1", True])
def test_bad_beta(name, beta):
    with pytest.raises(ValueError, match=rf"{name}: beta must be a number in \(0, inf\), got"):
        FORGET_LOSSES.build(name, beta=beta)


def test_bad_delta_and_normalizer():
    with pytest.raises(ValueError, match="simnpo: delta .* got inf"):
        FORGET_LOSSES.build("simnpo", delta=math.inf)
    with pytest.raises(ValueError, match="unknown normalizer 'mean'"):
        FORGET_LOSSES.build("ga", normalizer="mean")


def test_unknown_names_list_known_ones():
    with pytest.raises(UnknownNameError, match="unknown forget loss 'gd'.*ga, npo, npo_token"):
        FORGET_LOSSES.get("gd")
    with pytest.raises(UnknownNameError, match="kl, nll"):
        RETAIN_LOSSES.get("ce")


def test_reference_is_required():
    assert FORGET_LOSSES.get("npo").needs_ref and FORGET_LOSSES.get("npo_token").needs_ref
    assert not FORGET_LOSSES.get("simnpo").needs_ref and not FORGET_LOSSES.get("ga").needs_ref
    for name in ("npo", "npo_token"):
        with pytest.raises(ValueError, match="ref_logp"):
            FORGET_LOSSES.build(name)(LOGP, ANSWER, ONES)
    with pytest.raises(ValueError, match="ref_logits"):
        RETAIN_LOSSES.build("kl")(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("name", ["npo", "simnpo"])
def test_sequence_losses_without_weight_are_zero(name):
    logp = LOGP.clone().requires_grad_(True)
    loss = FORGET_LOSSES.build(name)(logp, ANSWER, torch.zeros(2, 3), LOGP)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logp.grad, torch.zeros(2, 3))
