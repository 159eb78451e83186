"""``reference``: log-likelihood ratio against an auxiliary model that never saw the forget set.

    r_t = log p_t - log p_aux,t
with p from ``inputs.logits`` (the model being unlearned, at the current step) and p_aux from
``inputs.aux_logits``. A token the model knows much better than a model that never saw the
forget data is likely forget-specific; generic wording has r_t ~ 0.
    normalize="zscore_sigmoid" (default): w_t = sigmoid(scale * (r_t - mean_r) / (std_r + 1e-6)),
        mean/std over the answer tokens of the sequence (population std);
    normalize="relu": w_t = max(r_t, 0).
"""

import torch

from atwu_plugin.losses.tokens import answer_mask, token_logprobs
from atwu_plugin.registry import check_number
from atwu_plugin.weighting.base import TokenWeighter, WeightingInputs, masked_zscore, register_weighter

NORMALIZE_MODES = ("zscore_sigmoid", "relu")


@register_weighter("reference")
class ReferenceWeighter(TokenWeighter):
    needs = frozenset({"aux_logits"})

    def __init__(self, normalize: str = "zscore_sigmoid", scale: float = 1.0):
        if normalize not in NORMALIZE_MODES:
            valid = ", ".join(NORMALIZE_MODES)
            raise ValueError(f"reference: normalize must be one of {valid}, got {normalize!r}")
        self.normalize = normalize
        self.scale = check_number("reference", "scale", scale, low=0, low_open=True)

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        labels = inputs.labels
        ratio = token_logprobs(inputs.logits, labels) - token_logprobs(inputs.aux_logits, labels)
        if self.normalize == "relu":
            return ratio.clamp_min(0)
        return torch.sigmoid(self.scale * masked_zscore(ratio, answer_mask(labels)))
