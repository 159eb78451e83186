"""Token alignment shared by every loss and weighter.

Convention used throughout the package: every per-token tensor has shape ``[B, T]``
and is aligned with ``labels`` (HF layout, ``labels`` not shifted). The quantity at
position ``t`` is about predicting ``labels[:, t]`` from the logits/hidden state at
position ``t - 1``. Position 0 is never a target. A position is an *answer token*
iff ``labels[:, t] != IGNORE_INDEX`` and ``t > 0``.
"""

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


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


def sequence_logprob(logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of answer-token log-probabilities per sequence, ``[B]``."""
    return (logp * answer_mask(labels)).sum(-1)
