"""``uniform``: w_t = 1 on every answer token (sample-level GA / GradDiff / NPO / SimNPO)."""

import torch

from atwu_plugin.weighting.base import TokenWeighter, WeightingInputs, register_weighter


@register_weighter("uniform")
class UniformWeighter(TokenWeighter):
    ranks_tokens = False  # sample-level methods: no token ranking to align with spans

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        return torch.ones(inputs.labels.shape, device=inputs.labels.device)
