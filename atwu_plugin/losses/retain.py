"""Retain losses on full logits ``[B, T, V]``.

``RETAIN_LOSSES`` holds small classes with the same call signature as each other,
``loss(logits, labels, ref_logits=None) -> scalar``, and ``needs_ref`` like the forget losses.
"""

import torch

from atwu_plugin.losses.tokens import align_to_labels, answer_mask, token_logprobs
from atwu_plugin.registry import RETAIN_LOSSES


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over answer tokens: equals HF's ``model(..., labels=labels).loss``
    (0 instead of nan when the batch has no answer token)."""
    mask = answer_mask(labels)
    return -token_logprobs(logits, labels).sum() / mask.sum().clamp_min(1)


def kl_to_reference(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor = None
) -> torch.Tensor:
    """KL(ref || model) of the next-token distributions, averaged over positions.

    ``labels=None``: the mean over all B*T positions (prompt and padding included), which is
    the value of OU's ``compute_kl_divergence`` (``kl_div(..., reduction="batchmean")`` on the
    flattened ``[B*T, V]`` log-probs). With ``labels``: the mean over the positions that predict
    answer tokens only."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.detach().float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # [B, T], at the predicting position
    if labels is None:
        return kl.mean()
    mask = answer_mask(labels)
    return (align_to_labels(kl) * mask).sum() / mask.sum().clamp_min(1)




@RETAIN_LOSSES.register("nll")
class RetainNLL:
    needs_ref = False

    def __call__(self, logits, labels, ref_logits=None):
        return nll_loss(logits, labels)


@RETAIN_LOSSES.register("kl")
class RetainKL:
    """``answer_only=False`` (default) is OU's KL retain term."""

    needs_ref = True

    def __init__(self, answer_only: bool = False):
        self.answer_only = bool(answer_only)

    def __call__(self, logits, labels, ref_logits=None):
        if ref_logits is None:
            raise ValueError("kl retain loss needs ref_logits (logits of the frozen reference model)")
        return kl_to_reference(logits, ref_logits, labels if self.answer_only else None)
