"""``satimp`` (OU's SatImp weighting): w_t = stopgrad(p_t ** beta1 * (1 - p_t) ** beta2).
The first factor down-weights tokens already forgotten (saturation), the second those the
model is sure of (importance). Defaults beta1 = 5, beta2 = 1 as in OU."""

import torch

from atwu_plugin.losses.tokens import token_logprobs
from atwu_plugin.registry import check_number
from atwu_plugin.weighting.base import TokenWeighter, WeightingInputs, register_weighter


@register_weighter("satimp")
class SatImpWeighter(TokenWeighter):
    def __init__(self, beta1: float = 5.0, beta2: float = 1.0):
        self.beta1 = check_number("satimp", "beta1", beta1, low=0)
        self.beta2 = check_number("satimp", "beta2", beta2, low=0)

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        logp = token_logprobs(inputs.logits, inputs.labels)
        one_minus_p = -torch.expm1(logp)  # exact near p = 1, where 1 - exp(logp) cancels
        return torch.exp(self.beta1 * logp) * one_minus_p.pow(self.beta2)
