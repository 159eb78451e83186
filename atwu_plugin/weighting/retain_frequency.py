"""``retain_frequency``: down-weight token ids that are frequent in the retain answers.

    w_t = sigmoid(a * zscore(-log(1 + count(y_t))))
count(y) = occurrences of id y as an answer token in the retain set (counted once in ``setup``);
the z-score runs over the answer tokens of the current batch (population std, + 1e-6).
Label-free and model-free; a retain-overlap heuristic ATWU must beat.
"""

import torch

from atwu_plugin.losses.tokens import answer_mask
from atwu_plugin.registry import check_number
from atwu_plugin.weighting.base import (
    TokenWeighter,
    WeighterSetup,
    WeightingInputs,
    masked_zscore,
    register_weighter,
)


@register_weighter("retain_frequency")
class RetainFrequencyWeighter(TokenWeighter):
    def __init__(self, a: float = 2.0):
        self.a = check_number("retain_frequency", "a", a, low=0, low_open=True)
        self.counts = None  # [V] long, set by setup()

    def setup(self, context: WeighterSetup) -> None:
        if context.retain_batches is None:
            raise ValueError("retain_frequency needs WeighterSetup.retain_batches to count retain tokens")
        counts = torch.zeros(context.vocab_size, dtype=torch.long)
        for batch in context.retain_batches:
            labels = batch["labels"]
            ids = labels[answer_mask(labels)].cpu()
            if len(ids) and ids.max() >= context.vocab_size:
                raise ValueError(f"retain label id {int(ids.max())} >= vocab_size {context.vocab_size}")
            counts += torch.bincount(ids, minlength=context.vocab_size)
        self.counts = counts

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        if self.counts is None:
            raise RuntimeError("retain_frequency: call setup() with the retain batches before compute()")
        labels = inputs.labels
        counts = self.counts.to(labels.device)[labels.clamp_min(0)]
        rarity = -torch.log1p(counts.float())
        return torch.sigmoid(self.a * masked_zscore(rarity, answer_mask(labels), per_sequence=False))
