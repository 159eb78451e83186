"""Per-token output-layer gradient factors (pure torch).

For an answer token t (label ``y``; logits ``z`` and last hidden state ``h`` at position
``t - 1``, see ``atwu_plugin.losses.tokens``) the gradient of ``log p(y)`` w.r.t. the output
matrix ``W`` is ``e h^T`` with ``e = onehot(y) - softmax(z)``. Hence for two tokens

    <g_t, g_s> = <e_t, e_s> <h_t, h_s>,   |g_t| = |e_t| |h_t|

and the retain-conflict kernel needs only ``e`` and ``h`` (no per-token backward pass).
``e`` is vocabulary-sized, so it is replaced by a *sketch* whose inner products approximate
(or equal) those of ``e``. A sketch maps ``(logits [N, V], labels [N])`` to features
``[N, dim]`` and knows how to take inner products of its own features (``gram``), which is
a plain matrix product for dense sketches and index matching for the sparse top-k one.

Precision: the true-token entry ``1 - p_y`` is computed as ``sum_{j != y} p_j`` in fp32:
with ``p_y ~ 1`` the subtraction ``1 - p_y`` cancels to 0 while the sum of the small
probabilities keeps its relative precision.
"""

import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from atwu_plugin.losses.tokens import answer_mask

_EPS = 1e-12


def _split_probs(logits: torch.Tensor, labels: torch.Tensor):
    """fp32 ``(q, s)``: ``q`` = softmax with the true-token entry zeroed, ``s = sum(q)`` = 1 - p_y."""
    probs = torch.softmax(logits.float(), dim=-1)
    q = probs.scatter(-1, labels.unsqueeze(-1), 0.0)
    return q, q.sum(-1)


class DenseSketch:
    """Sketches whose features live in a Euclidean space: inner product = dot product."""

    dense = True
    dim: int

    def gram(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.T

    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        return F.normalize(a, dim=-1, eps=_EPS)

    def to_dense(self, a: torch.Tensor) -> torch.Tensor:
        return a


class ExactE(DenseSketch):
    """The dense ``e`` itself (``dim = V``): for small vocabularies and as ground truth."""

    def __init__(self, vocab_size: int | None = None):
        self.dim = vocab_size

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        q, s = _split_probs(logits, labels)
        return (-q).scatter(-1, labels.unsqueeze(-1), s.unsqueeze(-1))


class RandomProjectionSketch(DenseSketch):
    """``e @ R`` with ``R ~ N(0, 1/dim)`` of shape ``[V, dim]``, fixed by ``seed``.

    Inner products are preserved in expectation (Johnson-Lindenstrauss); cosine error
    shrinks like ``1/sqrt(dim)``. ``R`` is regenerated from the seed on CPU (identical on
    every rank and device, so it is never checkpointed) and cached per device; its memory is
    ``V * dim`` floats (128 MB for V=128k, dim=256). ``onehot(y)`` is never materialized:
    ``e @ R = (1 - p_y) R[y] - sum_{j != y} p_j R[j]``.
    """

    def __init__(self, vocab_size: int, dim: int = 256, seed: int = 0):
        self.vocab_size, self.dim, self.seed = vocab_size, dim, seed
        self._cache = {}

    def matrix(self, device=None) -> torch.Tensor:
        device = torch.device(device or "cpu")
        if device not in self._cache:
            gen = torch.Generator().manual_seed(self.seed)
            r = torch.randn(self.vocab_size, self.dim, generator=gen) / self.dim**0.5
            self._cache[device] = r.to(device)
        return self._cache[device]

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] != self.vocab_size:
            raise ValueError(
                f"logits have {logits.shape[-1]} classes, sketch was built for {self.vocab_size}"
            )
        r = self.matrix(logits.device)
        q, s = _split_probs(logits, labels)
        return s.unsqueeze(-1) * r[labels] - q @ r


class TopKSketch:
    """Sparse ``e``: the true-token entry plus the ``k`` largest other softmax entries.

    Exact when ``k >= V - 1``. Features are packed as ``[indices (k+1) ; values (k+1)]`` in one
    float tensor (indices are exact in fp32 up to 2^24, far above any vocabulary), so the bank
    stores every sketch the same way. Inner products are sparse matrix products.
    """

    dense = False

    def __init__(self, k: int = 8):
        self.k = k
        self.dim = 2 * (k + 1)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        q, s = _split_probs(logits, labels)
        kk = min(self.k, q.shape[-1])
        top_v, top_i = q.topk(kk, dim=-1)
        idx = torch.cat([labels.unsqueeze(-1), top_i], -1).float()
        val = torch.cat([s.unsqueeze(-1), -top_v], -1)
        if kk < self.k:  # tiny vocabulary: pad with index -1, value 0 (never contributes)
            pad = self.k - kk
            idx = F.pad(idx, (0, pad), value=-1.0)
            val = F.pad(val, (0, pad), value=0.0)
        return torch.cat([idx, val], -1)

    def _split(self, a):
        return a[:, : self.k + 1], a[:, self.k + 1 :]

    def _sparse(self, a: torch.Tensor, n_cols: int) -> torch.Tensor:
        ia, va = self._split(a)
        keep = ia >= 0
        rows = torch.arange(a.shape[0], device=a.device)[:, None].expand_as(ia)[keep]
        idx = torch.stack([rows, ia[keep].long()])
        # coalesce sums duplicate indices: the sparse vector is the sum of its entries
        return torch.sparse_coo_tensor(idx, va[keep], (a.shape[0], n_cols), check_invariants=False).coalesce()

    def gram(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Sparse x sparse product: ~15x faster than pairwise index matching on CPU (measured
        N=256, M=4096, k=8) and never builds a vocabulary-sized dense tensor."""
        if a.shape[0] == 0 or b.shape[0] == 0:
            return a.new_zeros(a.shape[0], b.shape[0])
        n_cols = int(max(a[:, : self.k + 1].max(), b[:, : self.k + 1].max())) + 1
        with warnings.catch_warnings():  # torch converts to CSR internally and warns "beta" each call
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse.mm(self._sparse(a, n_cols), self._sparse(b, n_cols).t().coalesce()).to_dense()

    def sq_norm(self, a: torch.Tensor) -> torch.Tensor:
        ia, va = self._split(a)
        match = ia.unsqueeze(-1) == ia.unsqueeze(-2)
        return (match * va.unsqueeze(-1) * va.unsqueeze(-2)).sum((-1, -2))

    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        ia, va = self._split(a)
        norm = self.sq_norm(a).clamp_min(0).sqrt().clamp_min(_EPS)
        return torch.cat([ia, va / norm.unsqueeze(-1)], -1)

    def to_dense(self, a: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Scatter back to ``[N, V]`` (tests and small-vocabulary ablations only)."""
        ia, va = self._split(a)
        keep = ia >= 0
        out = a.new_zeros(a.shape[0], vocab_size)
        return out.index_put_((torch.nonzero(keep)[:, 0], ia[keep].long()), va[keep], accumulate=True)


class OutputGradFeatures(NamedTuple):
    """Flattened answer-token features; row ``n`` is the token at ``positions[n] = (b, t)``."""

    e: torch.Tensor  # [N, d] sketch of onehot(y) - softmax(z), fp32
    h: torch.Tensor  # [N, H] input of the output layer, fp32
    token_ids: torch.Tensor  # [N] labels y
    positions: torch.Tensor  # [N, 2] (b, t) indices into the [B, T] label grid


@torch.no_grad()
def output_grad_features(
    logits: torch.Tensor,
    hidden: torch.Tensor,
    labels: torch.Tensor,
    sketch,
    max_tokens: int | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int = 1024,
) -> OutputGradFeatures:
    """Features of the answer tokens of a batch (model layout ``logits [B,T,V]``,
    ``hidden [B,T,H]``; labels ``[B,T]`` unshifted). ``max_tokens`` keeps a uniform random
    subset (in row-major order) to bound the conflict cost. The softmax is computed in chunks
    of ``chunk_size`` tokens so that no ``[N, V]`` fp32 tensor larger than that is alive."""
    pos = answer_mask(labels).nonzero()
    if max_tokens is not None and pos.shape[0] > max_tokens:
        keep = torch.randperm(pos.shape[0], generator=generator)[:max_tokens].sort().values
        pos = pos[keep.to(pos.device)]
    b, t = pos[:, 0], pos[:, 1]
    y = labels[b, t]
    h = hidden[b, t - 1].detach().float()
    # range(0, max(N, 1)) so that an empty batch still yields a [0, d] tensor from the sketch
    starts = range(0, max(len(y), 1), chunk_size)
    e = torch.cat(
        [
            sketch(logits[b[i : i + chunk_size], t[i : i + chunk_size] - 1].detach(), y[i : i + chunk_size])
            for i in starts
        ]
    )
    return OutputGradFeatures(e, h, y, pos)


def scatter_tokens(values: torch.Tensor, positions: torch.Tensor, shape, fill: float = 0.0) -> torch.Tensor:
    """Put per-token ``values [N]`` back on the ``[B, T]`` label grid (``fill`` elsewhere)."""
    out = values.new_full(tuple(shape), fill)
    out[positions[:, 0], positions[:, 1]] = values
    return out
