"""The token-weighter contract (pure torch).

A weighter maps a batch and the model outputs to weights ``w[b, t] >= 0`` aligned with
``labels`` (see ``atwu_plugin.losses.tokens``), zero on prompt/padding/position 0, and
detached from the LM graph. Weighters declare in ``needs`` which optional inputs they
read, so the trainer computes only those (hidden states, reference logits, ...).
"""

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch

from atwu_plugin.registry import WEIGHTERS


@dataclass
class WeightingInputs:
    input_ids: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], IGNORE_INDEX on prompt/padding
    logits: torch.Tensor  # [B, T, V] of the model being unlearned, current step
    attention_mask: Optional[torch.Tensor] = None  # [B, T]
    hidden_states: Optional[torch.Tensor] = None  # [B, T, H] last layer, model layout (not shifted)
    ref_logits: Optional[torch.Tensor] = None  # [B, T, V] frozen initial model ("ref_logits")
    aux_logits: Optional[torch.Tensor] = None  # [B, T, V] auxiliary model that never saw the forget set
    token_kind: Optional[torch.Tensor] = None  # [B, T] ground-truth kinds (atwu_plugin.tokens)
    index: Optional[torch.Tensor] = None  # [B] dataset indices of the samples
    # callable(input_ids, attention_mask) -> logits [B, T, V]; for weighters that need extra
    # forward passes of the model being unlearned (e.g. masking-based importance).
    model: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
    step: int = 0


@dataclass
class WeighterSetup:
    """What a weighter may read once before training (``TokenWeighter.setup``)."""

    vocab_size: int
    # iterable of collated retain batches (dicts with input_ids, labels, attention_mask)
    retain_batches: Optional[Iterable[dict]] = None
    # callable(input_ids, attention_mask) -> (logits [B,T,V], hidden [B,T,H]) of the initial model
    model: Optional[Callable] = None


class TokenWeighter:
    """Base class. Subclasses implement ``compute`` and may override ``setup``."""

    needs: frozenset = frozenset()  # subset of {"hidden_states", "ref_logits", "aux_logits", "token_kind", "model"}

    def setup(self, context: WeighterSetup) -> None:  # noqa: B027 - optional hook
        """Called once before training; default: nothing to prepare."""

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, inputs: WeightingInputs) -> torch.Tensor:
        from atwu_plugin.losses.tokens import answer_mask

        missing = [k for k in self.needs if getattr(inputs, k) is None]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {missing} but the trainer did not provide them")
        w = self.compute(inputs).detach().float()
        return w * answer_mask(inputs.labels)


register_weighter = WEIGHTERS.register


def masked_zscore(x: torch.Tensor, mask: torch.Tensor, per_sequence: bool = True, eps: float = 1e-6):
    """z-score of ``x [B, T]`` over the entries where ``mask`` is True, per sequence (each row
    its own mean/std) or over the whole batch; population std; 0 off the mask and for a group
    with no spread."""
    dims = -1 if per_sequence else (0, 1)
    m = mask.to(x.dtype)
    x = torch.where(mask, x, torch.zeros_like(x))  # off-mask values may be inf
    n = m.sum(dims, keepdim=True).clamp_min(1)
    centered = (x - x.sum(dims, keepdim=True) / n) * m
    std = (centered.pow(2).sum(dims, keepdim=True) / n).sqrt()
    return centered / (std + eps)
