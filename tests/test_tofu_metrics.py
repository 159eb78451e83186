"""TOFU metric formulas (OpenUnlearning's definitions) and token-level metrics on hand-made inputs."""

import math

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from scipy import stats

from atwu_plugin.evals import tofu_metrics as tm
from atwu_plugin.evals.token_metrics import KLAccumulator, TokenKindProbAccumulator, kl_per_token
from atwu_plugin.tokens import KIND_IGNORE, KIND_NONE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE


# ----------------------------------------------------------------------- probability


def test_sample_probability_is_exp_of_minus_avg_nll():
    x = np.array([0.0, 1.0, math.log(4.0)])
    np.testing.assert_allclose(tm.sample_probability(x), [1.0, math.exp(-1.0), 0.25])
    assert tm.mean_probability(x) == pytest.approx((1.0 + math.exp(-1.0) + 0.25) / 3)


def test_mean_probability_with_options_averages_probabilities_per_sample():
    # sample 0: options probs 1/2 and 1/4 -> 3/8; sample 1: 1 -> mean 11/16
    x = [[math.log(2.0), math.log(4.0)], [0.0]]
    assert tm.mean_probability(x) == pytest.approx((3 / 8 + 1) / 2)


def test_normalized_probability_sums_wrong_option_probabilities():
    correct = [math.log(2.0), math.log(4.0)]  # 1/2, 1/4
    wrong = [[math.log(4.0), math.log(4.0)], [math.log(4.0), math.log(2.0), math.log(4.0)]]  # sums 1/2, 1
    p = tm.normalized_probability(correct, wrong)
    np.testing.assert_allclose(p, [0.5 / 1.0, 0.25 / 1.25], rtol=1e-9)
    assert tm.mean_normalized_probability(correct, wrong) == pytest.approx((0.5 + 0.2) / 2)


# ----------------------------------------------------------------------- truth ratio


def test_truth_ratio_uses_mean_nll_of_options_before_exp():
    correct = [0.5, 1.0]
    wrong = [[1.0, 2.0], [2.0, 0.0]]  # mean nll 1.5 and 1.0
    tr = tm.truth_ratio(correct, wrong)
    np.testing.assert_allclose(tr, [math.exp(-1.5) / math.exp(-0.5), 1.0], rtol=1e-8)
    # correct / (correct + wrong) variant (OU's prob_mean)
    tr2 = tm.truth_ratio(correct, wrong, definition="correct_over_total")
    pc, pw = math.exp(-0.5), math.exp(-1.5)
    np.testing.assert_allclose(tr2, [pc / (pc + pw), 0.5], rtol=1e-8)
    with pytest.raises(ValueError):
        tm.truth_ratio([0.1], [[0.1], [0.2]])


def test_truth_ratio_aggregators_hand_computed():
    assert tm.closer_to_1_better([0.5, 2.0, 1.0]) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert tm.true_better([0.5, 2.0, 0.25]) == pytest.approx((0.5 + 0.0 + 0.75) / 3)
    assert tm.prob_mean([0.2, 0.4]) == pytest.approx(0.3)
    agg, tr = tm.aggregate_truth_ratio([0.0], [[math.log(2.0)]], "closer_to_1_better")
    assert tr[0] == pytest.approx(0.5) and agg == pytest.approx(0.5)
    agg, tr = tm.aggregate_truth_ratio([0.0], [[math.log(2.0)]], "prob_mean")
    assert tr[0] == pytest.approx(1 / 1.5) and agg == pytest.approx(1 / 1.5)
    with pytest.raises(ValueError):
        tm.aggregate_truth_ratio([0.0], [[0.0]], "nope")


# ---------------------------------------------------------------- forget quality, MU


def test_forget_quality_is_scipy_ks_2samp_pvalue():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=40), rng.lognormal(0.3, 1.2, size=35)
    assert tm.forget_quality(a, b) == stats.ks_2samp(a, b).pvalue
    stat, p = tm.ks_test(a, b)
    assert stat == stats.ks_2samp(a, b).statistic and p == stats.ks_2samp(a, b).pvalue


def test_forget_quality_hand_computed():
    # Fully separated samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1.
    assert tm.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    # Identical distributions: D = 0, p = 1.
    assert tm.forget_quality([0.3, 0.7, 1.2], [0.3, 0.7, 1.2]) == pytest.approx(1.0)
    # Invariant to OU's unused 1/(tr + 1e-10) transform.
    a, b = np.array([0.2, 0.9, 1.4, 0.5]), np.array([0.3, 1.1, 2.0])
    assert tm.forget_quality(a, b) == pytest.approx(stats.ks_2samp(1 / (a + 1e-10), 1 / (b + 1e-10)).pvalue)


def test_model_utility_harmonic_mean_of_nine():
    values = dict.fromkeys(tm.MODEL_UTILITY_KEYS, 1.0)
    for k in tm.MODEL_UTILITY_KEYS[:3]:
        values[k] = 0.5
    assert tm.model_utility(values) == pytest.approx(9 / (3 * 2 + 6 * 1))
    assert tm.model_utility([1.0, 2.0, 4.0]) == pytest.approx(3 / (1 + 0.5 + 0.25))
    assert tm.model_utility([1.0, 2.0, 4.0]) == pytest.approx(stats.hmean([1.0, 2.0, 4.0]))
    values["wf_Q_A_ROUGE"] = 0.0
    assert tm.model_utility(values) == 0.0
    with pytest.raises(ValueError):
        tm.model_utility({"retain_Q_A_Prob": 0.5})


# ----------------------------------------------------------------------------- ROUGE


@pytest.mark.parametrize(
    "gen,gt",
    [
        ("the cat on a mat", "The cat sat on the mat."),
        ("cat runs", "Cats running"),
        ("", "Something"),
        ("Jane Doe was born in Paris, France in 1950.", "Jane Doe was born in Lyon in 1950."),
    ],
)
def test_rouge_matches_rouge_score(gen, gt):
    ref = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True).score(gt, gen)
    got = tm.rouge_scores(gen, gt)
    assert got["rougeL_recall"] == ref["rougeL"].recall
    assert got["rouge1_recall"] == ref["rouge1"].recall
    assert got["rougeL_f1"] == ref["rougeL"].fmeasure
    assert tm.rouge_l_recall(gen, gt) == ref["rougeL"].recall


def test_rouge_l_recall_hand_computed():
    # LCS(the cat sat on the mat | the cat on a mat) = the cat on mat: 4 of 6 reference tokens
    assert tm.rouge_l_recall("the cat on a mat", "The cat sat on the mat.") == pytest.approx(4 / 6)
    assert tm.rouge_l_recall("cat runs", "Cats running") == pytest.approx(1.0)  # stemmer
    assert tm.rouge_l_recall("mat the", "the mat") == pytest.approx(0.5)  # order matters


def test_generation_and_ground_truth_text():
    assert tm.clean_generation("  Paris.</s>junk", ["</s>"]) == "Paris."
    assert tm.clean_generation("A\n\nQuestion: B", ["</s>", "\n\n"]) == "A"
    assert tm.ground_truth_text("Question: Q?\nAnswer:\nParis. ", "Question: Q?\nAnswer:\n") == "Paris."


# --------------------------------------------------------------------- token metrics


def test_kl_of_identical_models_is_zero():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 2, -100, -100]])
    kl = kl_per_token(logits, logits.clone(), labels)
    assert kl.shape == (2, 5)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-6)
    acc = KLAccumulator()
    acc.update(logits, logits.clone(), labels)
    assert acc.result()["kl_to_retain"] == pytest.approx(0.0, abs=1e-6)
    assert acc.result()["n_tokens"] == 5


def test_kl_two_token_case_by_hand():
    # vocab of 2; answer tokens at t=1 (predicted from position 0) and t=2 (from position 1)
    labels = torch.tensor([[-100, 1, 0]])
    ref = torch.zeros(1, 3, 2)  # retain model: (1/2, 1/2) everywhere
    model = torch.zeros(1, 3, 2)
    model[0, 0] = torch.tensor([math.log(3.0), 0.0])  # (3/4, 1/4) at position 0
    model[0, 2] = torch.tensor([5.0, -5.0])  # position 2 predicts nothing: ignored
    kl = kl_per_token(model, ref, labels)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = 0.5 ln(4/3)
    assert kl[0, 1].item() == pytest.approx(expected, rel=1e-5)
    assert kl[0, 0].item() == 0.0 and kl[0, 2].item() == pytest.approx(0.0, abs=1e-7)
    kind = torch.tensor([[KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE]])
    acc = KLAccumulator()
    acc.update(model, ref, labels, kind)
    res = acc.result()
    assert res["kl_to_retain"] == pytest.approx(expected / 2, rel=1e-5)
    assert res["kl_to_retain_specific"] == pytest.approx(expected, rel=1e-5)
    assert res["kl_to_retain_generic"] == pytest.approx(0.0, abs=1e-7)
    # direction: KL(retain || model), not the reverse
    reverse = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert abs(expected - reverse) > 1e-3


def test_token_kind_probabilities_stream_over_batches():
    ln = math.log
    logp1 = torch.tensor([[0.0, ln(0.5), ln(0.25), ln(1.0)]])
    kind1 = torch.tensor([[KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE, KIND_SHARED]])
    logp2 = torch.tensor([[0.0, ln(0.1), ln(0.5), 0.0]])
    kind2 = torch.tensor([[KIND_NONE, KIND_SPECIFIC, KIND_IGNORE, KIND_NONE]])
    acc = TokenKindProbAccumulator()
    acc.update(logp1, kind1)
    acc.update(logp2, kind2)
    res = acc.result()
    assert res["specific_prob"] == pytest.approx((0.5 + 0.1) / 2)
    assert res["template_prob"] == pytest.approx(0.25)
    assert res["shared_prob"] == pytest.approx(1.0)
    assert res["generic_prob"] == pytest.approx((0.25 + 1.0) / 2)
    assert res["labelled_prob"] == pytest.approx((0.5 + 0.1 + 0.25 + 1.0) / 4)
    assert (res["n_specific"], res["n_template"], res["n_shared"], res["n_ignore"]) == (2, 1, 1, 1)
    # same as one concatenated batch
    one = TokenKindProbAccumulator()
    one.update(torch.cat([logp1, logp2]), torch.cat([kind1, kind2]))
    assert one.result() == pytest.approx(res)
    assert TokenKindProbAccumulator().result()["specific_prob"] is None
