"""``wga`` (OU's WGA weighting): w_t = stopgrad(p_t ** beta), p_t = p(y_t | y_<t) of the model
being unlearned. With the ``ga`` loss and ``batch_tokens`` this is OU's WGA forget term."""

import torch

from atwu_plugin.losses.tokens import token_logprobs
from atwu_plugin.registry import check_number
from atwu_plugin.weighting.base import TokenWeighter, WeightingInputs, register_weighter


@register_weighter("wga")
class WGAWeighter(TokenWeighter):
    def __init__(self, beta: float = 1.0):
        self.beta = check_number("wga", "beta", beta, low=0)

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        return torch.exp(self.beta * token_logprobs(inputs.logits, inputs.labels))
