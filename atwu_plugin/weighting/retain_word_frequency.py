"""``retain_word_frequency``: down-weight tokens whose word (and word in context) is frequent in
the retain answers.

    context = 0:  w_t = sigmoid(a * zscore(-log(1 + count(u_t))))
    context = k:  w_t = sigmoid(a * zscore(-log(1 + count(u_t)) - log(1 + count(g_t))))
u_t = the word (unit, ``weighting/words.py``) token t belongs to; g_t = the ``2k + 1`` units
centred on u_t (k = 1: the word trigram); counts = occurrences in the retain answers, counted
once in ``setup``. The z-score runs over the answer tokens of the current batch (population
std, + 1e-6), as in ``retain_frequency``.

``retain_frequency`` at the word level: every piece of a multi-token word gets the word's
count (a rare name's common sub-word pieces are rare with it), and with ``context`` a common
word used in a context the retain answers never show ("red" in "favourite colour is red") is
rare too. Label-free and model-free; needs the tokenizer's token texts
(``WeighterSetup.token_text``) to find the words.
"""

from collections import Counter

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
from atwu_plugin.weighting.words import unit_contexts, word_units


@register_weighter("retain_word_frequency")
class RetainWordFrequencyWeighter(TokenWeighter):
    def __init__(self, a: float = 2.0, context: int = 0):
        self.a = check_number("retain_word_frequency", "a", a, low=0, low_open=True)
        self.context = check_number("retain_word_frequency", "context", context, 0, integer=True)
        self.word_counts = None  # Counter of unit keys, set by setup()
        self.context_counts = None  # Counter of unit n-grams (context > 0)
        self.token_text = None

    def _answer_units(self, labels_row: torch.Tensor):
        """Answer positions of one row, the unit of each, and the row's units (``word_units``)."""
        positions = answer_mask(labels_row[None])[0].nonzero().squeeze(-1)
        of_token, units = word_units(labels_row[positions].tolist(), self.token_text)
        return positions, of_token, units

    def setup(self, context: WeighterSetup) -> None:
        if context.retain_batches is None or context.token_text is None:
            raise ValueError("retain_word_frequency needs WeighterSetup.retain_batches and WeighterSetup.token_text "
                             "(the tokenizer's token texts) to count retain words")
        self.token_text = context.token_text
        self.word_counts, self.context_counts = Counter(), Counter()
        for batch in context.retain_batches:
            for row in batch["labels"].cpu():
                _, _, units = self._answer_units(row)
                self.word_counts.update(units)  # every word once, not once per token
                if self.context:
                    self.context_counts.update(unit_contexts(units, self.context))

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        if self.word_counts is None:
            raise RuntimeError("retain_word_frequency: call setup() with the retain batches before compute()")
        labels = inputs.labels
        rarity = torch.zeros(labels.shape)
        for b, row in enumerate(labels.cpu()):
            positions, of_token, units = self._answer_units(row)
            counts = torch.tensor([self.word_counts[units[i]] for i in of_token], dtype=torch.float)
            value = -torch.log1p(counts)
            if self.context:
                grams = unit_contexts(units, self.context)
                value -= torch.log1p(torch.tensor([self.context_counts[grams[i]] for i in of_token], dtype=torch.float))
            rarity[b, positions] = value
        rarity = rarity.to(labels.device)
        return torch.sigmoid(self.a * masked_zscore(rarity, answer_mask(labels), per_sequence=False))
