"""How well token weights pick out the ground-truth forget-specific spans.

Scored over the answer tokens that carry a label (``token_kind >= 0``); positives are
KIND_SPECIFIC tokens, negatives template and shared-fact tokens. ``precision_at_k`` is the
fraction of positives among the ``max(1, round(k_fraction * n))`` labelled tokens with the highest
weight (ties broken by position). When either class is empty the three metrics are None.
"""

import numpy as np
from sklearn.metrics import average_precision_score

from atwu_plugin.evals.auroc import auroc
from atwu_plugin.tokens import KIND_SPECIFIC


def _flat(x) -> np.ndarray:
    """Tensor, array, or list of per-sample tensors/arrays (any lengths) -> 1-D float64 array."""
    if isinstance(x, (list, tuple)):
        parts = [_flat(part) for part in x]
        return np.concatenate(parts) if parts else np.zeros(0)
    if hasattr(x, "detach"):  # torch tensor (possibly bf16 or on GPU)
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def span_alignment(weights, token_kind, k_fraction: float = 0.3) -> dict:
    if not 0 < k_fraction <= 1:
        raise ValueError(f"span_alignment: k_fraction must be in (0, 1], got {k_fraction!r}")
    w, kind = _flat(weights), _flat(token_kind)
    if w.shape != kind.shape:
        raise ValueError(f"span_alignment: weights have {w.size} tokens but token_kind has {kind.size}")
    labelled = kind >= 0
    w, positive = w[labelled], kind[labelled] == KIND_SPECIFIC
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    result = {"span_auroc": None, "span_ap": None, "precision_at_k": None, "n_pos": n_pos, "n_neg": n_neg}
    if n_pos == 0 or n_neg == 0:
        return result
    k = max(1, round(k_fraction * len(w)))
    top = np.argsort(-w, kind="stable")[:k]
    result["span_auroc"] = auroc(w, positive)
    result["span_ap"] = float(average_precision_score(positive, w))
    result["precision_at_k"] = float(positive[top].mean())
    return result
