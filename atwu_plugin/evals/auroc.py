"""The one ROC AUC of the package (span alignment, RWKU MIA, the heatmap summary).

``auroc(scores, positive)`` is scikit-learn's ``roc_auc_score``: the probability that a positive
scores higher than a negative, ties counted 1/2 (the Mann-Whitney U statistic divided by
``n_pos * n_neg``). scikit-learn is imported on first use so that torch-free, sklearn-free
callers (the leaderboard reports) stay light to import.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> Optional[float]:
    """ROC AUC of ``scores`` for the binary labels ``positive``; None when either class is empty
    (the AUC is undefined). Scores must be finite."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return None
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64).ravel()))
