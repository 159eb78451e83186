"""Causal-LM items over plain text (pretraining-style: every token after the first is a target).

Used to train the zoo's tiny models on generic/author text and by the RWKU datasets over forget
passages. Items follow the QA items' layout (``atwu_plugin.tokens``): ``input_ids``, ``labels``
(= ``input_ids`` with position 0 ignored; the first token has nothing to be predicted from) and
``attention_mask`` (ones).
"""

from typing import List, Sequence

import torch

from atwu_plugin.tokens import IGNORE_INDEX


def lm_item(ids: Sequence[int]) -> dict:
    """The LM item of one token sequence."""
    input_ids = torch.tensor(list(ids), dtype=torch.long)
    labels = input_ids.clone()
    labels[0] = IGNORE_INDEX
    return {"input_ids": input_ids, "labels": labels, "attention_mask": torch.ones_like(input_ids)}


def lm_items(tokenizer, texts: Sequence[str], max_length: int) -> List[dict]:
    """One item per text: tokenized with the tokenizer's special tokens (BOS), cut to
    ``max_length - 1`` tokens, then EOS appended (so at most ``max_length`` tokens)."""
    items = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length - 1)["input_ids"]
        items.append(lm_item(list(ids) + [tokenizer.eos_token_id]))
    return items
