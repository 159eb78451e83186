"""Span-alignment metrics on hand-made arrays, against hand computation and sklearn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from atwu_plugin.evals.auroc import auroc
from atwu_plugin.evals.span_alignment import span_alignment
from atwu_plugin.tokens import KIND_IGNORE, KIND_NONE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE

S, T, H, I, N = KIND_SPECIFIC, KIND_TEMPLATE, KIND_SHARED, KIND_IGNORE, KIND_NONE

# labelled tokens: weights (0.9 S, 0.8 T, 0.1 H, 0.4 S); 0.7 (ignore) and 0.2 (none) are dropped
WEIGHTS = [0.9, 0.8, 0.1, 0.4, 0.7, 0.2]
KINDS = [S, T, H, S, I, N]


def test_by_hand():
    result = span_alignment(np.array(WEIGHTS), np.array(KINDS), k_fraction=0.5)
    assert result["n_pos"] == 2 and result["n_neg"] == 2
    # positive-negative pairs ranked correctly: (0.9>0.8), (0.9>0.1), (0.4>0.1), not (0.4>0.8)
    assert result["span_auroc"] == pytest.approx(3 / 4)
    # ranking S, T, S, H: precision at each positive = 1/1 and 2/3
    assert result["span_ap"] == pytest.approx((1 + 2 / 3) / 2)
    # top round(0.5 * 4) = 2 tokens: S, T
    assert result["precision_at_k"] == pytest.approx(0.5)


def test_matches_sklearn():
    rng = np.random.default_rng(0)
    kinds = rng.choice([S, T, H, I, N], size=(4, 25))
    weights = rng.random((4, 25))
    result = span_alignment(weights, kinds, k_fraction=0.3)
    labelled = kinds >= 0
    y, w = kinds[labelled] == S, weights[labelled]
    assert result["span_auroc"] == pytest.approx(roc_auc_score(y, w))
    assert result["span_ap"] == pytest.approx(average_precision_score(y, w))
    top = np.argsort(-w)[: round(0.3 * len(w))]
    assert result["precision_at_k"] == pytest.approx(y[top].mean())
    assert (result["n_pos"], result["n_neg"]) == (int(y.sum()), int((~y).sum()))


def test_tensor_array_and_ragged_list_inputs_agree():
    from_numpy = span_alignment(np.array(WEIGHTS), np.array(KINDS))
    from_tensor = span_alignment(torch.tensor([WEIGHTS], requires_grad=True), torch.tensor([KINDS]))
    from_lists = span_alignment(
        [torch.tensor(WEIGHTS[:4]), np.array(WEIGHTS[4:])], [torch.tensor(KINDS[:4]), KINDS[4:]]
    )
    assert from_numpy == from_tensor == from_lists


@pytest.mark.parametrize("kinds", [[S, S, I, N], [T, H, T, N], [I, I, N, N]])
def test_empty_class_gives_none(kinds):
    result = span_alignment([0.3, 0.2, 0.9, 0.1], kinds)
    assert result["span_auroc"] is None and result["span_ap"] is None and result["precision_at_k"] is None
    assert result["n_pos"] == kinds.count(S)
    assert result["n_neg"] == kinds.count(T) + kinds.count(H)


def test_errors():
    with pytest.raises(ValueError, match="6 tokens but token_kind has 5"):
        span_alignment(WEIGHTS, KINDS[:5])
    with pytest.raises(ValueError, match="k_fraction"):
        span_alignment(WEIGHTS, KINDS, k_fraction=0)


def test_auroc_counts_ties_half_and_none_without_both_classes():
    # pairs (pos, neg): 0.5 vs 0.5 tie (1/2), 0.5 vs 0.2 win, 0.2 vs 0.5 loss, 0.2 vs 0.2 tie (1/2)
    assert auroc([0.5, 0.5, 0.2, 0.2], [True, False, True, False]) == 0.5
    assert auroc([1, 1, 2, 2, 3], [False, True, False, True, True]) == pytest.approx(4 / 6)
    assert auroc([0.1, 0.2], [True, True]) is None and auroc([], []) is None
