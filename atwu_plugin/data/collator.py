"""Batch items from ``QADataset`` (and nestings of them) keeping labels and token kinds aligned."""

from typing import Sequence

import torch

from atwu_plugin.tokens import IGNORE_INDEX, KIND_NONE


class TokenLabelCollator:
    """Pads ``input_ids`` with ``pad_token_id``, ``labels`` with -100, ``attention_mask`` with 0
    and ``token_kind`` (and the second label source ``token_kind_proxy``) with ``KIND_NONE``;
    stacks ``index``. An item without ``input_ids`` is a
    dict of items (``{"forget": .., "retain": ..}``, ``{0: .., 1: ..}``) and is collated per
    key, recursively, as in OU's collator. Other keys are dropped."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def _pad(self, seqs, value) -> torch.Tensor:
        seqs = [torch.as_tensor(s) for s in seqs]
        if self.padding_side == "left":  # pad the reversed sequences on the right, reverse back
            seqs = [s.flip(0) for s in seqs]
        out = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)
        return out.flip(1) if self.padding_side == "left" else out

    def __call__(self, instances: Sequence[dict]) -> dict:
        first = instances[0]
        if "input_ids" not in first:
            return {key: self([inst[key] for inst in instances]) for key in first}
        batch = {"input_ids": self._pad([i["input_ids"] for i in instances], self.pad_token_id)}
        if "attention_mask" in first:
            batch["attention_mask"] = self._pad([i["attention_mask"] for i in instances], 0)
        else:  # from lengths, not from input_ids != pad: the pad id may also be a real token
            batch["attention_mask"] = self._pad([torch.ones(len(i["input_ids"]), dtype=torch.long)
                                                 for i in instances], 0)
        kinds = (("token_kind", KIND_NONE), ("token_kind_proxy", KIND_NONE))
        for key, value in (("labels", IGNORE_INDEX), *kinds):
            if key in first:
                batch[key] = self._pad([i[key] for i in instances], value)
        if "index" in first:
            batch["index"] = torch.tensor([int(i["index"]) for i in instances], dtype=torch.long)
        return batch
