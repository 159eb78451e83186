"""The second label source on real text: retain-model proxy kinds for a forget dataset.

``proxy_kinds`` scores every item of a ``QADataset`` with the target and the retain model
and applies ``tofu_labels.proxy_labels`` (the thresholds of its docstring); ``attach_proxy_kinds`` stores
the result on the items as ``token_kind_proxy`` (aligned with ``labels``, padded by the
collator like ``token_kind``), next to the model-free ``token_kind``. The trainers' span
metrics then score the token weights against both sources (``span_auroc`` / ``span_auroc_proxy``).
"""

from typing import List, Sequence

import torch

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.data.tofu_labels import proxy_labels
from atwu_plugin.losses.tokens import answer_mask, token_logprobs

PROXY_KEY = "token_kind_proxy"


@torch.no_grad()
def proxy_kinds(items: Sequence[dict], target_model, retain_model, pad_token_id: int,
                batch_size: int = 32) -> List[List[int]]:
    """Per item, the proxy kind of every position (``KIND_NONE`` off the answer)."""
    collate = TokenLabelCollator(pad_token_id)
    out = []
    for net in (target_model, retain_model):
        net.eval()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = collate([{k: it[k] for k in ("input_ids", "labels", "attention_mask")} for it in chunk])
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        tgt = token_logprobs(target_model(**inputs).logits, batch["labels"])
        ret = token_logprobs(retain_model(**inputs).logits, batch["labels"])
        kinds = proxy_labels(tgt, ret, answer_mask(batch["labels"]))
        out += [kinds[i, : len(it["input_ids"])].tolist() for i, it in enumerate(chunk)]
    return out


def attach_proxy_kinds(dataset, kinds: Sequence[Sequence[int]]):
    """Add ``token_kind_proxy`` to every item of ``dataset`` (a ``QADataset``), in place."""
    if len(kinds) != len(dataset.items):
        raise ValueError(f"{dataset.name}: {len(kinds)} proxy label rows for {len(dataset.items)} items "
                         "(stale cache? delete it to recompute)")
    for i, (item, row) in enumerate(zip(dataset.items, kinds)):
        if len(row) != len(item["labels"]):
            raise ValueError(f"{dataset.name}: item {i}: {len(row)} proxy labels for {len(item['labels'])} "
                             "positions (stale cache? delete it to recompute)")
        item[PROXY_KEY] = torch.tensor(row, dtype=torch.long)
    return dataset
