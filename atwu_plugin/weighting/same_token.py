"""``same_token``: how close a forget token is to retain tokens with the same id.

    maxcos_t = max_{s in retain answers, y_s = y_t} cos(h_t, h_s)     (-1 if y_t never occurs there)
    w_t      = sigmoid(a * zscore(-maxcos_t))
h_t = last hidden state at the position predicting y_t: ``inputs.hidden_states`` of the model
being unlearned for forget tokens, a bank of the initial model's states for retain tokens. A
token used the same way in the retain set (high maxcos) is not forget-specific. The z-score
runs over the answer tokens of the current batch (population std, + 1e-6).

``setup`` runs ``context.model`` over the retain batches and keeps, per token id, at most
``bank_per_token`` states: a uniform sample without replacement (the lowest random priorities
drawn from a generator seeded with ``seed``), so the bank is deterministic and memory-bounded.
"""

import torch
import torch.nn.functional as F

from atwu_plugin.losses.tokens import align_to_labels, answer_mask
from atwu_plugin.registry import check_number
from atwu_plugin.weighting.base import (
    TokenWeighter,
    WeighterSetup,
    WeightingInputs,
    masked_zscore,
    register_weighter,
)


def _keep_lowest_priority(ids, priority, states, cap):
    """Sort by (id, priority) and keep the first ``cap`` entries of every id."""
    order = priority.argsort(stable=True)
    order = order[ids[order].argsort(stable=True)]
    ids, priority, states = ids[order], priority[order], states[order]
    _, counts = torch.unique_consecutive(ids, return_counts=True)
    group_start = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    keep = torch.arange(len(ids)) - group_start < cap
    return ids[keep], priority[keep], states[keep]


@register_weighter("same_token")
class SameTokenWeighter(TokenWeighter):
    needs = frozenset({"hidden_states"})

    def __init__(self, a: float = 2.0, bank_per_token: int = 64, seed: int = 0):
        self.a = check_number("same_token", "a", a, low=0, low_open=True)
        self.bank_per_token = check_number("same_token", "bank_per_token", bank_per_token, 1, integer=True)
        self.seed = check_number("same_token", "seed", seed, integer=True)
        self.bank = None  # {token id: unit-norm states [k, H]}, set by setup()

    @torch.no_grad()
    def setup(self, context: WeighterSetup) -> None:
        if context.retain_batches is None or context.model is None:
            raise ValueError("same_token needs WeighterSetup.retain_batches and WeighterSetup.model")
        generator = torch.Generator().manual_seed(self.seed)
        ids, priority, states = torch.empty(0, dtype=torch.long), torch.empty(0), None
        for batch in context.retain_batches:
            labels = batch["labels"]
            attention = batch.get("attention_mask")
            if attention is None:
                attention = torch.ones_like(batch["input_ids"])
            _, hidden = context.model(batch["input_ids"], attention)
            mask = answer_mask(labels)
            new_states = F.normalize(align_to_labels(hidden.float())[mask], dim=-1).cpu()
            new_ids = labels[mask].cpu()
            states = new_states if states is None else torch.cat([states, new_states])
            ids = torch.cat([ids, new_ids])
            priority = torch.cat([priority, torch.rand(len(new_ids), generator=generator)])
            ids, priority, states = _keep_lowest_priority(ids, priority, states, self.bank_per_token)
        self.bank, self.bank_device = {}, torch.device("cpu")
        if states is not None:
            unique, counts = torch.unique_consecutive(ids, return_counts=True)
            self.bank = dict(zip(unique.tolist(), torch.split(states, counts.tolist())))

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("same_token: call setup() with the retain batches and model before compute()")
        labels = inputs.labels
        mask = answer_mask(labels)
        states = F.normalize(align_to_labels(inputs.hidden_states.float()), dim=-1)
        if self.bank_device != states.device:  # move the bank once, not at every step
            self.bank = {token_id: bank.to(states.device) for token_id, bank in self.bank.items()}
            self.bank_device = states.device
        max_cos = torch.full(labels.shape, -1.0, device=labels.device)
        for token_id in labels[mask].unique().tolist():
            bank = self.bank.get(token_id)
            if bank is None:
                continue  # never in the retain answers: the most forget-specific, cos = -1
            where = mask & (labels == token_id)
            max_cos[where] = (states[where] @ bank.T).max(-1).values
        return torch.sigmoid(self.a * masked_zscore(-max_cos, mask, per_sequence=False))
