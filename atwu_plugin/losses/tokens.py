"""Torch helpers for the token alignment shared by every loss, weighter and evaluator.

The convention (per-token tensors ``[B, T]`` aligned with ``labels``, position ``t`` predicted
from ``t - 1``, answer tokens ``labels != IGNORE_INDEX`` and ``t > 0``) is written down in
``atwu_plugin.tokens``, with the constants.
"""

import torch
import torch.nn.functional as F

from atwu_plugin.tokens import IGNORE_INDEX


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, T]``: True on answer tokens (targets of the loss)."""
    mask = labels != IGNORE_INDEX
    mask[:, 0] = False
    return mask


def align_to_labels(x: torch.Tensor) -> torch.Tensor:
    """Shift a per-position tensor ``[B, T, ...]`` so that index ``t`` holds the value
    computed at ``t - 1`` (the position that predicts ``labels[:, t]``). Index 0 is zero."""
    pad = [0, 0] * (x.dim() - 2) + [1, 0]
    return F.pad(x[:, :-1], pad)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log p(labels[t] | < t)`` as ``[B, T]`` float32, aligned with labels; 0 off-answer."""
    mask = answer_mask(labels)
    targets = labels[:, 1:].clamp_min(0)
    logits = logits[:, :-1].float()  # no copy when already fp32
    # gather + logsumexp instead of a full log_softmax: no extra [B, T, V] output tensor
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return F.pad(picked, (1, 0)) * mask

