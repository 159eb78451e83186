"""``token_unlearn`` (TokenUnlearn, Wu & Zhou 2026): importance from masking and entropy.

The paper describes a knowledge signal (how much the answer's likelihood drops when a token
is masked from the context) combined with an entropy signal, with a hard (top-k) and a soft
variant, but publishes no formulas. These are ours. For answer token t of a sequence
(positions aligned with labels, see ``atwu_plugin.losses.tokens``):

    knowledge_t  = sum_{s > t, s answer} [ log p(y_s | x) - log p(y_s | x with x_t := mask_token_id) ]
                   the drop in the log-likelihood of the rest of the answer when token t is hidden
                   (its id replaced, attention kept). The last answer token gets 0.
    entropy_t    = H(softmax(z_{t-1})), the entropy of the prediction of y_t; low = memorized
    importance_t = zscore(knowledge)_t - entropy_weight * zscore(entropy)_t
                   z-scores over the answer tokens of the sequence (population std, + 1e-6)
    hard: w_t = 1 on the max(1, round(top_k_fraction * n)) answer tokens of highest importance
          (n = answer tokens of the sequence; ties: the earlier token first), 0 elsewhere
    soft: u_t = sigmoid(importance_t / temperature),  w_t = u_t / mean_{answer tokens} u
          (mean weight 1 per sequence)

The knowledge signal costs one extra forward pass per answer token (``inputs.model``), run in
chunks of ``max_masked_positions`` masked sequences (peak memory ~ that many full-vocabulary
logit tensors); the entropy comes from ``inputs.logits``.
"""

import torch

from atwu_plugin.losses.tokens import align_to_labels, answer_mask, token_logprobs
from atwu_plugin.registry import check_number
from atwu_plugin.weighting.base import TokenWeighter, WeightingInputs, masked_zscore, register_weighter

MODES = ("hard", "soft")


def _logits(output):
    return getattr(output, "logits", output)


@register_weighter("token_unlearn")
class TokenUnlearnWeighter(TokenWeighter):
    name = "token_unlearn"
    needs = frozenset({"model"})

    def __init__(
        self,
        mask_token_id: int = None,
        mode: str = "hard",
        top_k_fraction: float = 0.3,
        temperature: float = 1.0,
        entropy_weight: float = 1.0,
        max_masked_positions: int = 16,
    ):
        if mask_token_id is None:
            raise ValueError(f"{self.name}: mask_token_id must be set (e.g. the tokenizer's pad or unk id)")
        self.mask_token_id = check_number(self.name, "mask_token_id", mask_token_id, low=0, integer=True)
        if mode not in MODES:
            raise ValueError(f"{self.name}: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.top_k_fraction = check_number(self.name, "top_k_fraction", top_k_fraction, 0, 1, low_open=True)
        self.temperature = check_number(self.name, "temperature", temperature, low=0, low_open=True)
        self.entropy_weight = check_number(self.name, "entropy_weight", entropy_weight, low=0)
        self.max_masked_positions = check_number(
            self.name, "max_masked_positions", max_masked_positions, low=1, integer=True
        )

    def knowledge_signal(self, inputs: WeightingInputs) -> torch.Tensor:
        ids, labels = inputs.input_ids, inputs.labels
        attention = inputs.attention_mask
        if attention is None:
            attention = torch.ones_like(ids)
        mask = answer_mask(labels)
        base = token_logprobs(_logits(inputs.model(ids, attention)), labels)
        knowledge = torch.zeros_like(base)
        rows, cols = mask.nonzero(as_tuple=True)  # one masked copy of the sequence per answer token
        positions = torch.arange(ids.shape[1], device=ids.device)
        for start in range(0, len(rows), self.max_masked_positions):
            r = rows[start : start + self.max_masked_positions]
            c = cols[start : start + self.max_masked_positions]
            masked_ids = ids[r].clone()
            masked_ids[torch.arange(len(r), device=ids.device), c] = self.mask_token_id
            logp = token_logprobs(_logits(inputs.model(masked_ids, attention[r])), labels[r])
            later = mask[r] & (positions > c[:, None])
            knowledge[r, c] = ((base[r] - logp) * later).sum(-1)
        return knowledge

    @staticmethod
    def entropy_signal(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)
        return align_to_labels(-(logp.exp() * logp).sum(-1))

    def importance(self, inputs: WeightingInputs) -> torch.Tensor:
        mask = answer_mask(inputs.labels)
        knowledge_z = masked_zscore(self.knowledge_signal(inputs), mask)
        entropy_z = masked_zscore(self.entropy_signal(inputs.logits), mask)
        return knowledge_z - self.entropy_weight * entropy_z

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        mask = answer_mask(inputs.labels)
        importance = self.importance(inputs)
        n_answer = mask.sum(-1, keepdim=True)
        if self.mode == "hard":
            ranked = torch.where(mask, importance, torch.full_like(importance, -torch.inf))
            rank = ranked.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
            k = torch.round(self.top_k_fraction * n_answer).clamp_min(1)
            return ((rank < k) & mask).float()
        u = torch.sigmoid(importance / self.temperature) * mask
        return u / (u.sum(-1, keepdim=True) / n_answer.clamp_min(1)).clamp_min(1e-12)


@register_weighter("token_unlearn_hard")
class TokenUnlearnHard(TokenUnlearnWeighter):
    def __init__(self, **kwargs):
        super().__init__(mode="hard", **kwargs)


@register_weighter("token_unlearn_soft")
class TokenUnlearnSoft(TokenUnlearnWeighter):
    def __init__(self, **kwargs):
        super().__init__(mode="soft", **kwargs)
