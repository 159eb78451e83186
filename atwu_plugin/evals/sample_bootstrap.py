"""A bootstrap over the samples of a split, computed by the run that holds the token data.

Span AUROC ranks every token against every other, so a report cannot rebuild it from per-sample
sums the way it rebuilds a pooled probability (``leaderboard/paired.py``), and a run's token
weights are too many to keep in its results. The run instead recomputes the metric under
``replicates`` fixed resamplings of its samples and keeps those values. The draws depend only on
``(n_samples, replicates, seed)``, so every run of a benchmark uses the same ones: replicate ``r``
of two methods saw the same questions, and their difference per replicate is a paired bootstrap.
"""

from __future__ import annotations

import numpy as np

REPLICATES = 1000
SEED = 0


def sample_draws(n_samples: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """``[replicates, n_samples]`` multiplicities: row ``r`` counts how often each sample is drawn
    in the ``r``-th resampling (``n_samples`` draws with replacement)."""
    if n_samples < 1 or replicates < 1:
        raise ValueError(f"sample_draws: need n_samples >= 1 and replicates >= 1, got {n_samples}, {replicates}")
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n_samples, n_samples), minlength=n_samples)
                     for _ in range(replicates)])


def auroc_replicates(scores, positive, sample, draws: np.ndarray, chunk: int = 128) -> np.ndarray:
    """The ROC AUC of ``scores`` for labels ``positive`` (ties count 1/2, as in
    ``evals.auroc``) with every token weighted by its sample's multiplicity, once per row of
    ``draws``; NaN for a draw with no positive or no negative token. ``sample``: each token's
    sample index, in ``[0, draws.shape[1])``."""
    from scipy.sparse import csr_matrix

    scores, positive = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(positive, dtype=bool).ravel()
    sample = np.asarray(sample, dtype=np.int64).ravel()
    if not (scores.size == positive.size == sample.size):
        raise ValueError(f"auroc_replicates: {scores.size} scores, {positive.size} labels, {sample.size} sample ids")
    n = draws.shape[1]
    if sample.size and (sample.min() < 0 or sample.max() >= n):
        raise ValueError(f"auroc_replicates: sample ids must lie in [0, {n}), got {sample.min()}..{sample.max()}")
    # tokens -> (tie group of the score, sample): the weight of every group is then one matmul per draw
    _, group = np.unique(scores, return_inverse=True)
    shape = (int(group.max()) + 1 if group.size else 0, n)
    pos = csr_matrix((positive.astype(np.float64), (group, sample)), shape=shape)
    neg = csr_matrix(((~positive).astype(np.float64), (group, sample)), shape=shape)
    out = np.empty(draws.shape[0])
    for start in range(0, draws.shape[0], chunk):
        m = draws[start:start + chunk].T.astype(np.float64)  # [n, chunk]
        p, q = pos @ m, neg @ m  # [groups, chunk], groups by ascending score
        below = np.cumsum(q, axis=0) - q  # negative weight strictly below each group
        num = (p * (below + 0.5 * q)).sum(axis=0)
        den = p.sum(axis=0) * q.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + chunk] = np.where(den > 0, num / den, np.nan)
    return out
