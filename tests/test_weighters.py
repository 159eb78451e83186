"""Token weighters on tiny hand-made tensors: formulas, masking, stop-grad, errors."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from atwu_plugin.losses.forget import FORGET_LOSSES
from atwu_plugin.losses.tokens import answer_mask, token_logprobs
from atwu_plugin.registry import UnknownNameError
from atwu_plugin.tokens import IGNORE_INDEX, KIND_IGNORE, KIND_NONE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.weighting import WEIGHTERS, WeighterSetup, WeightingInputs, build_weighter
from atwu_plugin.weighting.base import masked_zscore
from atwu_plugin.weighting.token_unlearn import TokenUnlearnWeighter

X = IGNORE_INDEX
Z = math.sqrt(1.5)  # z-scores of three equally spaced values: (-Z, 0, Z)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def binary_logits(p_of_one):
    """``[1, T, 2]`` logits whose softmax gives token 1 probability ``p`` at each position."""
    p = torch.tensor(p_of_one)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], -1)[None]


def assert_close(actual, expected, atol=1e-5):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual, expected, atol=atol), (actual, expected)


# --- probability-based weighters ---------------------------------------------------------

# labels: position 0, then answer tokens at 1..3; p(label) at t is set by the logits at t - 1
LABELS = torch.tensor([[X, 1, 1, 1]])
LOGITS = binary_logits([0.75, 0.5, 0.2, 0.9])  # p_1 = 0.75, p_2 = 0.5, p_3 = 0.2


def inputs_for(labels=LABELS, logits=LOGITS, **kwargs):
    return WeightingInputs(input_ids=labels.clamp_min(0), labels=labels, logits=logits, **kwargs)


def test_uniform():
    labels = torch.tensor([[5, X, 3, 4], [X, 1, 2, X]])  # position 0 is never a target
    w = build_weighter("uniform")(inputs_for(labels, torch.zeros(2, 4, 6)))
    assert_close(w, [[0, 0, 1, 1], [0, 1, 1, 0]])


def test_wga_by_hand():
    w = build_weighter("wga", beta=2.0)(inputs_for())
    assert_close(w, [[0, 0.75**2, 0.5**2, 0.2**2]])


def test_satimp_by_hand():
    w = build_weighter("satimp", beta1=2.0, beta2=1.0)(inputs_for())
    assert_close(w, [[0, 0.75**2 * 0.25, 0.5**2 * 0.5, 0.2**2 * 0.8]])
    default = build_weighter("satimp")(inputs_for())
    assert_close(default, [[0, 0.75**5 * 0.25, 0.5**5 * 0.5, 0.2**5 * 0.8]])


def test_reference_by_hand():
    # model p = (0.8, 0.5, 0.4), auxiliary p = (0.4, 0.5, 0.8): r = (ln 2, 0, -ln 2) -> z = (Z, 0, -Z)
    logits, aux = binary_logits([0.8, 0.5, 0.4, 0.5]), binary_logits([0.4, 0.5, 0.8, 0.5])
    w = build_weighter("reference", scale=2.0)(inputs_for(logits=logits, aux_logits=aux))
    assert_close(w, [[0, sigmoid(2 * Z), 0.5, sigmoid(-2 * Z)]])
    w = build_weighter("reference", normalize="relu")(inputs_for(logits=logits, aux_logits=aux))
    assert_close(w, [[0, math.log(2), 0, 0]])


def test_oracle_by_hand():
    labels = torch.tensor([[X, 1, 1, 1, 1, 1, X]])
    kind = torch.tensor(
        [[KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE, KIND_SHARED, KIND_IGNORE, KIND_SPECIFIC, KIND_NONE]]
    )
    inputs = inputs_for(labels, torch.zeros(1, 7, 2), token_kind=kind)
    assert_close(build_weighter("oracle")(inputs), [[0, 1, 0, 0, 0, 1, 0]])
    w = build_weighter("oracle", generic_weight=0.5, ignore_weight=0.1)(inputs)
    assert_close(w, [[0, 1, 0.5, 0.5, 0.1, 1, 0]])


@pytest.mark.parametrize("name,kwargs", [("wga", {"beta": 1.0}), ("satimp", {}), ("reference", {})])
def test_weights_are_stop_grad(name, kwargs):
    logits = LOGITS.clone().requires_grad_(True)
    inputs = inputs_for(logits=logits, aux_logits=binary_logits([0.4, 0.5, 0.8, 0.5]))
    w = build_weighter(name, **kwargs)(inputs)
    assert not w.requires_grad
    constant = torch.tensor(w.tolist())  # same values, built outside any graph
    loss, mask = FORGET_LOSSES.build("ga"), answer_mask(LABELS)
    grad_w, = torch.autograd.grad(loss(token_logprobs(logits, LABELS), mask, w), logits)
    grad_const, = torch.autograd.grad(loss(token_logprobs(logits, LABELS), mask, constant), logits)
    assert torch.equal(grad_w, grad_const)


def test_masked_zscore():
    x = torch.tensor([[9.0, 1.0, 2.0, 3.0], [5.0, 7.0, 7.0, -math.inf]])
    mask = torch.tensor([[False, True, True, True], [False, True, True, False]])
    assert_close(masked_zscore(x, mask), [[0, -Z, 0, Z], [0, 0, 0, 0]])  # no spread -> 0
    # over the batch: values (1, 2, 3, 7, 7), mean 4, population std 2.5298
    std = math.sqrt((9 + 4 + 1 + 9 + 9) / 5)
    expected = [[0, -3 / std, -2 / std, -1 / std], [0, 3 / std, 3 / std, 0]]
    assert_close(masked_zscore(x, mask, per_sequence=False), expected)


# --- retain-overlap heuristics -----------------------------------------------------------


def test_retain_frequency_by_hand():
    retain = [
        {"input_ids": torch.tensor([[0, 4, 5, 5]]), "labels": torch.tensor([[X, X, 5, 5]])},
        # position 0 is never a target, so this first 4 is not counted
        {"input_ids": torch.tensor([[4, 5, 4]]), "labels": torch.tensor([[4, 5, 4]])},
    ]
    weighter = build_weighter("retain_frequency", a=2.0)
    weighter.setup(WeighterSetup(vocab_size=8, retain_batches=retain))
    assert weighter.counts.tolist() == [0, 0, 0, 0, 1, 3, 0, 0]
    # forget tokens 3, 4, 5 over two sequences: counts (0, 1, 3) -> -log(1 + c) = (0, -ln 2, -2 ln 2)
    labels = torch.tensor([[X, 3, 4], [X, 5, X]])
    w = weighter(inputs_for(labels, torch.zeros(2, 3, 8)))
    assert_close(w, [[0, sigmoid(2 * Z), 0.5], [0, sigmoid(-2 * Z), 0]])


def test_retain_frequency_errors():
    weighter = build_weighter("retain_frequency")
    with pytest.raises(RuntimeError, match="setup"):
        weighter(inputs_for())
    retain = [{"input_ids": torch.tensor([[0, 9]]), "labels": torch.tensor([[X, 9]])}]
    with pytest.raises(ValueError, match="9 >= vocab_size 8"):
        weighter.setup(WeighterSetup(vocab_size=8, retain_batches=retain))
    with pytest.raises(ValueError, match="retain_batches"):
        weighter.setup(WeighterSetup(vocab_size=8))


# token texts of a toy vocabulary: a leading space starts a word; 7 is a special token
TOY_TEXTS = {1: " Hs", 2: "iao", 3: " likes", 4: " red", 5: ".", 6: "-", 7: "", 0: " tea"}


def toy_text(token_id):
    return TOY_TEXTS[token_id]


def test_word_units_by_hand():
    from atwu_plugin.weighting.words import unit_contexts, word_units

    of_token, units = word_units([1, 2, 6, 2, 3, 4, 5, 7], toy_text)  # " Hsiao-iao likes red." + special
    assert units == ["hsiao", "-", "iao", "likes", "red", ".", "<7>"]
    assert of_token == [0, 0, 1, 2, 3, 4, 5, 6]
    assert unit_contexts(["a", "b"], 1) == [("<a>", "a", "b"), ("a", "b", "</a>")]


def test_token_text_of_a_tokenizer():
    from atwu_plugin.weighting.words import token_text_of

    class Tok:  # byte-level BPE marks a word start with "Ġ" and keeps the space; SentencePiece drops it
        all_special_ids = [0]
        convert_ids_to_tokens = staticmethod(lambda i: {1: "\u0120red", 2: "\u2581tea", 3: "ed"}[i])
        convert_tokens_to_string = staticmethod(lambda p: p[0].replace("\u0120", " ").replace("\u2581", ""))

    text = token_text_of(Tok())
    assert [text(i) for i in (0, 1, 2, 3)] == ["", " red", " tea", "ed"]


def test_retain_word_frequency_by_hand():
    # retain answers " Hsiao likes tea." and " tea." (position 0 never counts): words hsiao 1,
    # likes 1, tea 2, "." 2
    retain = [{"input_ids": torch.tensor([[9, 1, 2, 3, 0, 5], [9, 0, 5, X, X, X]]).clamp_min(0),
               "labels": torch.tensor([[X, 1, 2, 3, 0, 5], [X, 0, 5, X, X, X]])}]
    weighter = build_weighter("retain_word_frequency", a=2.0)
    weighter.setup(WeighterSetup(vocab_size=10, retain_batches=retain, token_text=toy_text))
    assert dict(weighter.word_counts) == {"hsiao": 1, "likes": 1, "tea": 2, ".": 2}
    # forget " Hsiao red": both pieces of hsiao count 1, red 0 -> rarity (-ln 2, -ln 2, 0)
    labels = torch.tensor([[X, 1, 2, 4]])
    w = weighter(inputs_for(labels, torch.zeros(1, 4, 10)))
    z = math.sqrt(0.5)  # z-scores of (-ln 2, -ln 2, 0): (-z, -z, 2z)
    assert_close(w, [[0, sigmoid(-2 * z), sigmoid(-2 * z), sigmoid(4 * z)]])
    # context 1: retain trigrams (<a>,hsiao,likes) (hsiao,likes,tea) (likes,tea,.) (<a>,tea,.) once, (tea,.,</a>) twice
    context = build_weighter("retain_word_frequency", a=2.0, context=1)
    context.setup(WeighterSetup(vocab_size=10, retain_batches=retain, token_text=toy_text))
    assert context.context_counts[("likes", "tea", ".")] == 1 and context.context_counts[("<a>", "tea", ".")] == 1
    labels = torch.tensor([[X, 3, 0, 5]])  # " likes tea." : (<a>,likes,tea) 0, (likes,tea,.) 1, (tea,.,</a>) 2
    w = context(inputs_for(labels, torch.zeros(1, 4, 10)))
    rarity = torch.tensor([-math.log(2) - 0, -math.log(3) - math.log(2), -math.log(3) - math.log(3)])
    assert_close(w[0, 1:], torch.sigmoid(2 * masked_zscore(rarity[None], torch.ones(1, 3, dtype=torch.bool))[0]))


def test_retain_word_frequency_errors():
    weighter = build_weighter("retain_word_frequency")
    with pytest.raises(RuntimeError, match="setup"):
        weighter(inputs_for())
    with pytest.raises(ValueError, match="token_text"):
        weighter.setup(WeighterSetup(vocab_size=8, retain_batches=[]))


def state_model(table):
    """Setup-time model: the hidden state at each position is ``table[input id]``."""
    return lambda input_ids, attention_mask: (None, table[input_ids])


def test_same_token_by_hand():
    # retain: label 1 is predicted from state (1, 0) or (0, 1); label 2 from (0, 1)
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    input_ids = torch.tensor([[0, 1, 2], [1, 1, 2]])
    retain = [{"input_ids": input_ids, "labels": torch.tensor([[X, 1, 2], [X, 1, X]])}]
    weighter = build_weighter("same_token", a=1.0)
    weighter.setup(WeighterSetup(vocab_size=4, retain_batches=retain, model=state_model(table)))
    assert sorted(weighter.bank) == [1, 2] and len(weighter.bank[1]) == 2
    # forget: label 1 from (0.6, 0.8) -> max cos 0.8; label 2 from (3, 0) -> 0; label 3 unseen -> -1
    labels = torch.tensor([[X, 1, 2, 3, X]])
    hidden = torch.tensor([[[0.6, 0.8], [3.0, 0.0], [1.0, 1.0], [5.0, 5.0], [0.0, 0.0]]])
    w = weighter(inputs_for(labels, torch.zeros(1, 5, 4), hidden_states=hidden))
    # -max cos = (-0.8, 0, 1): mean 0.0667, population std
    neg = torch.tensor([-0.8, 0.0, 1.0])
    z = (neg - neg.mean()) / (neg.var(unbiased=False).sqrt() + 1e-6)
    assert_close(w, [[0, *torch.sigmoid(z).tolist(), 0]])


def test_same_token_bank_is_capped_and_deterministic():
    torch.manual_seed(0)
    table = torch.randn(10, 3)
    ids = torch.randint(0, 10, (4, 12))
    ids[:, 0::2] = 7  # many occurrences of id 7
    retain = [{"input_ids": ids[:2], "labels": ids[:2]}, {"input_ids": ids[2:], "labels": ids[2:]}]
    banks = []
    for _ in range(2):
        weighter = build_weighter("same_token", bank_per_token=3, seed=1)
        weighter.setup(WeighterSetup(vocab_size=10, retain_batches=retain, model=state_model(table)))
        banks.append(weighter.bank)
    assert banks[0].keys() == banks[1].keys()
    assert all(torch.equal(banks[0][k], banks[1][k]) for k in banks[0])
    assert len(banks[0][7]) == 3 and all(len(v) <= 3 for v in banks[0].values())
    # the kept states are real retain states (unit-normalized) of that id's predicting positions
    predicting = torch.nn.functional.normalize(table[ids[:, :-1][ids[:, 1:] == 7]], dim=-1)
    for row in banks[0][7]:
        assert (predicting - row).abs().sum(-1).min() < 1e-6


def test_same_token_needs_setup():
    with pytest.raises(RuntimeError, match="setup"):
        build_weighter("same_token")(inputs_for(hidden_states=torch.zeros(1, 4, 2)))


# --- TokenUnlearn ------------------------------------------------------------------------

PLANTED, TARGET, MASK_ID, VOCAB = 7, 3, 0, 10


class CumulativeBagLM(nn.Module):
    """logits_t = W (sum_{s <= t} E[x_s]). Only the planted token has an embedding, and it makes
    every later token TARGET likely (logit 5); without it the prediction is uniform."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 1)
        self.out = nn.Linear(1, VOCAB, bias=False)
        with torch.no_grad():
            self.embed.weight.zero_()
            self.embed.weight[PLANTED] = 1.0
            self.out.weight.zero_()
            self.out.weight[TARGET] = 5.0
        self.calls = []

    def forward(self, input_ids, attention_mask):
        self.calls.append(len(input_ids))
        return self.out(self.embed(input_ids).cumsum(1))


def token_unlearn_inputs(model):
    input_ids = torch.tensor([[1, 2, PLANTED, TARGET, TARGET, TARGET], [1, TARGET, PLANTED, TARGET, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = input_ids.clone()
    labels[:, :2] = X
    labels[attention == 0] = X
    with torch.no_grad():
        logits = model(input_ids, attention)
    return WeightingInputs(
        input_ids=input_ids, labels=labels, logits=logits, attention_mask=attention, model=model
    )


def test_token_unlearn_knowledge_signal_finds_planted_token():
    model = CumulativeBagLM()
    inputs = token_unlearn_inputs(model)
    weighter = build_weighter("token_unlearn", mask_token_id=MASK_ID, max_masked_positions=64)
    knowledge = weighter.knowledge_signal(inputs)
    # masking the planted token turns p(TARGET) = e^5 / (e^5 + 9) into 1/10 for each later TARGET
    gain = math.log(math.exp(5) / (math.exp(5) + 9)) - math.log(0.1)
    assert_close(knowledge, [[0, 0, 3 * gain, 0, 0, 0], [0, 0, gain, 0, 0, 0]], atol=1e-4)
    # hard weights with the knowledge signal alone keep exactly the planted token
    hard = build_weighter("token_unlearn_hard", mask_token_id=MASK_ID, top_k_fraction=0.2, entropy_weight=0.0)
    assert_close(hard(inputs), [[0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0]])


def test_token_unlearn_chunks_masked_forwards():
    model = CumulativeBagLM()
    inputs = token_unlearn_inputs(model)
    # batch sizes of the model calls: the unmasked batch, then the 6 answer tokens in chunks
    expected_calls = {64: [2, 6], 4: [2, 4, 2], 1: [2, 1, 1, 1, 1, 1, 1]}
    signals = []
    for chunk, calls in expected_calls.items():
        model.calls.clear()
        weighter = build_weighter("token_unlearn", mask_token_id=MASK_ID, max_masked_positions=chunk)
        signals.append(weighter.knowledge_signal(inputs))
        assert model.calls == calls
    assert all(torch.allclose(signals[0], other) for other in signals[1:])


def test_entropy_signal_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [9.0, 9.0]]])
    entropy = build_weighter("token_unlearn", mask_token_id=0).entropy_signal(logits)
    # aligned with labels: position t holds the entropy of the prediction made at t - 1
    assert_close(entropy, [[0, math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]])


class FixedImportance(TokenUnlearnWeighter):
    """TokenUnlearn with a given importance, to test the hard/soft maps on their own."""

    def __init__(self, importance, **kwargs):
        super().__init__(mask_token_id=0, **kwargs)
        self.fixed_importance = importance

    def importance(self, inputs):
        return self.fixed_importance


def unused_model(input_ids, attention_mask):
    raise AssertionError("the importance is fixed: no forward pass expected")


def weights_from_importance(mode, importance, labels, **kwargs):
    weighter = FixedImportance(importance, mode=mode, **kwargs)
    logits = torch.zeros(*labels.shape, 2)
    return weighter(WeightingInputs(input_ids=labels.clamp_min(0), labels=labels, logits=logits, model=unused_model))


def test_token_unlearn_hard_top_k():
    labels = torch.tensor([[X, 1, 1, 1, 1, X], [X, 1, 1, X, X, X]])
    importance = torch.tensor([[9.0, 0.1, 0.3, 0.2, -1.0, 9.0], [9.0, -1.0, -2.0, 9.0, 9.0, 9.0]])
    w = weights_from_importance("hard", importance, labels, top_k_fraction=0.5)
    assert_close(w, [[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]])  # k = 2 of 4, k = 1 of 2
    w = weights_from_importance("hard", importance, labels, top_k_fraction=0.01)
    assert_close(w, [[0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]])  # at least one per sequence


def test_token_unlearn_soft_by_hand():
    labels = torch.tensor([[X, 1, 1, 1, X]])
    importance = torch.tensor([[5.0, 0.0, 2 * math.log(3), -2 * math.log(3), 5.0]])
    # sigmoid(importance / 2) = (0.5, 0.75, 0.25), mean 0.5 -> (1, 1.5, 0.5)
    w = weights_from_importance("soft", importance, labels, temperature=2.0)
    assert_close(w, [[0, 1.0, 1.5, 0.5, 0]])


def test_token_unlearn_soft_mean_is_one():
    inputs = token_unlearn_inputs(CumulativeBagLM())
    w = build_weighter("token_unlearn_soft", mask_token_id=MASK_ID)(inputs)
    mask = answer_mask(inputs.labels)
    assert_close(w.sum(-1) / mask.sum(-1), [1.0, 1.0])
    assert build_weighter("token_unlearn_soft", mask_token_id=0).mode == "soft"


# --- every weighter: zero off the answer tokens, errors ----------------------------------


def setup_context(table, head):
    """A WeighterSetup with every part filled in, for a tiny model: hidden state
    ``table[id]`` in both layers, logits ``h @ head.T``."""
    retain = [{"input_ids": torch.tensor([[1, 2, 3, 2]]), "labels": torch.tensor([[X, 2, 3, 2]])}]
    forget = [{"input_ids": torch.tensor([[1, 4, 5, 3], [2, 5, 4, 1]]), "labels": torch.tensor([[X, 4, 5, 3], [X, X, 4, 1]]),
               "index": torch.tensor([0, 1])}]

    def forward(batch):
        h = table[batch["input_ids"]]
        return h @ head.T, (h, h)

    return WeighterSetup(vocab_size=6, retain_batches=retain, model=state_model(table), hidden_size=4, n_layers=2,
                         datasets={"retain": retain, "forget": forget},
                         batches=lambda split: {"retain": retain, "forget": forget}[split],
                         forward=forward, output_embedding=head, token_text=lambda i: f" w{i}")


def small_options(name):
    if name.startswith("token_unlearn"):
        return {"mask_token_id": 0}
    if name == "atwu":  # live features: the test batches are not in its frozen-feature cache
        return {"features": "live", "sketch_dim": 4, "bank_size": 8, "pretrain_steps": 2}
    return {}


def all_weighters():
    gen = torch.Generator().manual_seed(0)
    setup = setup_context(torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen))
    for name in WEIGHTERS.names():
        weighter = build_weighter(name, **small_options(name))
        weighter.setup(setup)
        yield name, weighter


@pytest.mark.parametrize("name,weighter", list(all_weighters()))
@pytest.mark.parametrize("prompt_length", [2, 6])  # 6: a batch without any answer token
def test_zero_off_answer_tokens(name, weighter, prompt_length):
    torch.manual_seed(0)
    input_ids = torch.randint(1, 6, (2, 6))
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = input_ids.clone()
    labels[:, :prompt_length] = X
    labels[attention == 0] = X
    lm = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 6))
    hidden = torch.randn(2, 6, 4)
    inputs = WeightingInputs(
        input_ids=input_ids, labels=labels, logits=lm(input_ids), attention_mask=attention,
        hidden_states=hidden, all_hidden_states=(hidden, hidden), aux_logits=torch.randn(2, 6, 6),
        token_kind=torch.where(labels == X, KIND_NONE, KIND_SPECIFIC), model=lambda ids, mask: lm(ids),
        output_embedding=lm[1].weight.detach(),
    )
    w = weighter(inputs)
    assert w.shape == labels.shape and not w.requires_grad
    assert (w >= 0).all() and torch.isfinite(w).all()
    assert (w[~answer_mask(labels)] == 0).all()


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("wga", {"beta": -1.0}, r"wga: beta must be a number in \[0, inf\), got -1.0"),
        ("satimp", {"beta2": math.nan}, "satimp: beta2"),
        ("reference", {"normalize": "softmax"}, "zscore_sigmoid, relu.*'softmax'"),
        ("reference", {"scale": 0}, r"scale must be a number in \(0, inf\)"),
        ("oracle", {"generic_weight": -0.5}, "oracle: generic_weight .* got -0.5"),
        ("retain_frequency", {"a": 0.0}, "retain_frequency: a"),
        ("retain_word_frequency", {"a": -1.0}, "retain_word_frequency: a"),
        ("retain_word_frequency", {"context": -1}, r"context must be an integer in \[0, inf\)"),
        ("same_token", {"bank_per_token": 0}, r"bank_per_token must be an integer in \[1, inf\)"),
        ("same_token", {"bank_per_token": 2.5}, "bank_per_token must be an integer"),
        ("token_unlearn", {}, "mask_token_id must be set"),
        ("token_unlearn", {"mask_token_id": 0, "mode": "top"}, "mode must be one of hard, soft, got 'top'"),
        ("token_unlearn", {"mask_token_id": 0, "top_k_fraction": 0.0}, r"top_k_fraction .* in \(0, 1\]"),
        ("token_unlearn", {"mask_token_id": 0, "top_k_fraction": 1.5}, "top_k_fraction .* got 1.5"),
        ("token_unlearn", {"mask_token_id": 0, "temperature": 0}, "temperature"),
        ("token_unlearn", {"mask_token_id": 0, "max_masked_positions": 0}, "max_masked_positions"),
        ("token_unlearn_soft", {"mask_token_id": -1}, "mask_token_id .* got -1"),
    ],
)
def test_bad_hyperparameters(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_weighter(name, **kwargs)


def test_unknown_weighter_and_missing_inputs():
    with pytest.raises(UnknownNameError, match="unknown token weighter 'atwu_x'.*oracle, reference"):
        build_weighter("atwu_x")
    with pytest.raises(ValueError, match="needs .*aux_logits"):
        build_weighter("reference")(inputs_for())


def test_atwu_is_a_weighter_whose_state_resumes_exactly():
    """ATWU through the contract alone: setup (bank, frozen features, pre-fit), then every call
    is update (the scorer's step) + compute; a weighter set up from its ``state_dict`` (as on
    resume) continues with bit-identical weights and reference log-probs."""
    gen = torch.Generator().manual_seed(0)
    table, head = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    context = setup_context(table, head)
    options = {"sketch_dim": 4, "bank_size": 8, "pretrain_steps": 2, "bank_refresh_every": 2}
    weighter = build_weighter("atwu", **options)
    assert {"all_hidden_states", "output_embedding", "retain_hidden_states"} <= weighter.needs
    assert weighter.caches_reference_logp and weighter.checkpoint_name == "atwu_state"
    weighter.setup(context)
    batch = context.datasets["forget"][0]
    logits, hidden = context.forward(batch)

    def step(w):
        inputs = WeightingInputs(input_ids=batch["input_ids"], labels=batch["labels"], logits=logits,
                                 index=batch["index"], hidden_states=hidden[-1], all_hidden_states=hidden,
                                 output_embedding=head)
        w.observe_retain(inputs)
        return w(inputs), w.reference_logp(inputs)

    step(weighter)
    import copy

    resumed = build_weighter("atwu", **options)
    resumed.setup(dataclasses.replace(context, saved_state=copy.deepcopy(weighter.state_dict())))
    for _ in range(3):
        (w_a, ref_a), (w_b, ref_b) = step(weighter), step(resumed)
        assert torch.equal(w_a, w_b) and torch.equal(ref_a, ref_b)
    mask = answer_mask(batch["labels"])
    assert (w_a[~mask] == 0).all() and ((w_a[mask] > 0) & (w_a[mask] < 1)).all()
    expected_ref = token_logprobs(logits, batch["labels"])[mask]
    assert torch.allclose(ref_a[mask], expected_ref)
