"""``oracle``: weights from ground-truth span labels (the upper bound of token weighting).
w_t = 1 on forget-specific tokens, ``generic_weight`` on template and shared-fact tokens,
``ignore_weight`` on unlabelled answer tokens (KIND_IGNORE)."""

import torch

from atwu_plugin.registry import check_number
from atwu_plugin.tokens import KIND_IGNORE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.weighting.base import TokenWeighter, WeightingInputs, register_weighter


@register_weighter("oracle")
class OracleWeighter(TokenWeighter):
    needs = frozenset({"token_kind"})

    def __init__(self, generic_weight: float = 0.0, ignore_weight: float = 0.0):
        self.generic_weight = check_number("oracle", "generic_weight", generic_weight, low=0)
        self.ignore_weight = check_number("oracle", "ignore_weight", ignore_weight, low=0)

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        kind = inputs.token_kind
        w = torch.zeros(kind.shape, device=kind.device)
        w[kind == KIND_SPECIFIC] = 1.0
        w[(kind == KIND_TEMPLATE) | (kind == KIND_SHARED)] = self.generic_weight
        w[kind == KIND_IGNORE] = self.ignore_weight
        return w
