"""Weighted reduction of per-token losses ``[B, T]`` to a scalar.

Every token-level forget loss is ``sum_t w_t l_t / normalizer``; the normalizer is chosen
by name so that a method is one forget loss + one weighter + one normalizer:

- ``batch_tokens``:  sum(w l) / (number of answer tokens in the batch). With w = 1 this is
  the mean over answer tokens, i.e. what HF's ``model(...).loss`` and OU average over.
- ``weight_sum``:    sum(w l) / sum(w) (a weighted mean; 0 when no token has weight).
- ``sequence_mean``: per sequence sum_t(w l) / sum_t(w), then the mean over the sequences
  that have any weight (every sample counts the same, whatever its length).
"""

import torch

NORMALIZERS = ("batch_tokens", "weight_sum", "sequence_mean")
EPS = 1e-8


def check_normalizer(normalizer: str) -> str:
    if normalizer not in NORMALIZERS:
        raise ValueError(f"unknown normalizer {normalizer!r}; expected one of: {', '.join(NORMALIZERS)}")
    return normalizer


def weighted_reduce(
    per_token: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, normalizer: str
) -> torch.Tensor:
    check_normalizer(normalizer)
    # torch.where rather than a product: off-answer losses may be inf (e.g. log 0) and 0 * inf is nan.
    weighted = torch.where(mask, weights * per_token, torch.zeros_like(per_token))
    weights = weights * mask
    if normalizer == "batch_tokens":
        return weighted.sum() / mask.sum().clamp_min(1)
    if normalizer == "weight_sum":
        return weighted.sum() / weights.sum().clamp_min(EPS)
    # sequence_mean
    seq_weight = weights.sum(-1)
    seq_loss = weighted.sum(-1) / seq_weight.clamp_min(EPS)
    has_weight = seq_weight > 0
    return (seq_loss * has_weight).sum() / has_weight.sum().clamp_min(1)
