"""Retain conflict of forget tokens against a bank of retain tokens (pure torch).

Descending a forget token's loss moves a retain token's ``log p_s`` by about
``-eta <g_t, g_s>``; retain optimality breaks if *some* retain token is pushed down, so the
conflict of t aggregates ``cos(g_t, g_s)`` over the retain tokens with a (soft) max rather
than comparing with the mean retain gradient (which is ~0 at a trained model; see
``conflict_ablations``). On the output layer ``cos(g_t, g_s) = cos(e_t, e_s) cos(h_t, h_s)``
(``output_grad``), evaluated as matrix products in chunks over the bank.

Modes:
- ``kernel``: the normalized output-layer gradient cosine (the ATWU signal);
- ``token_bucket``: ``cos(h_t, h_s)`` only over bank tokens with the same id (the most
  conflicting retain token has the same id in ~97 % of cases on TOFU; needs no ``e``);
  tokens whose id is not in the bank get the minimum conflict, -1;
- ``raw``: unnormalized ``<g_t, g_s>`` (ablation: without normalization the ranking follows
  ``|g_t| ~ 1 - p_t`` and is inverted).
Aggregates: ``max``; ``topk_mean`` (mean of the ``topk`` largest); ``softmax``
(``tau * logsumexp(cos / tau) - tau * log(n)``, between the mean (tau -> inf) and the max).
"""

import math

import torch
import torch.nn.functional as F

MODES = ("kernel", "token_bucket", "raw")
AGGREGATES = ("max", "topk_mean", "softmax")


def pairwise_kernel(e_a, h_a, e_b, h_b, sketch, normalize: bool = True) -> torch.Tensor:
    """``[N, M]`` output-layer gradient cosines (or raw inner products if not ``normalize``)."""
    if normalize:
        e_a, e_b = sketch.normalize(e_a), sketch.normalize(e_b)
        h_a, h_b = F.normalize(h_a, dim=-1, eps=1e-12), F.normalize(h_b, dim=-1, eps=1e-12)
    return sketch.gram(e_a, e_b) * (h_a @ h_b.T)


class _StreamingAggregate:
    """Row-wise max / top-k mean / softmax-max over column chunks, with an optional validity
    mask (token buckets): memory stays ``[N, chunk]``."""

    def __init__(self, n: int, aggregate: str, topk: int, temperature: float, device):
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {AGGREGATES}")
        self.aggregate, self.k, self.tau = aggregate, topk, temperature
        self.count = torch.zeros(n, device=device)
        self.acc = torch.full((n, 0 if aggregate == "topk_mean" else 1), -math.inf, device=device)

    def update(self, sim: torch.Tensor, valid=None) -> None:
        if valid is not None:
            sim = sim.masked_fill(~valid, -math.inf)
            self.count += valid.sum(1)
        else:
            self.count += sim.shape[1]
        if self.aggregate == "max":
            self.acc = torch.maximum(self.acc, sim.amax(1, keepdim=True))
        elif self.aggregate == "softmax":
            self.acc = torch.logaddexp(self.acc, torch.logsumexp(sim / self.tau, 1, keepdim=True))
        else:
            both = torch.cat([self.acc, sim], 1)
            self.acc = both.topk(min(self.k, both.shape[1]), dim=1).values

    def result(self, empty_value: float = -1.0) -> torch.Tensor:
        if self.aggregate == "max":
            out = self.acc[:, 0]
        elif self.aggregate == "softmax":
            out = self.tau * (self.acc[:, 0] - self.count.clamp_min(1).log())
        else:
            finite = torch.isfinite(self.acc)
            out = self.acc.where(finite, 0.0).sum(1) / finite.sum(1).clamp_min(1)
        return out.where(self.count > 0, torch.full_like(out, empty_value))


@torch.no_grad()
def retain_conflict(
    forget_feats,
    bank,
    mode: str = "kernel",
    aggregate: str = "max",
    topk: int = 8,
    temperature: float = 0.05,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Conflict ``c [N]`` of forget tokens (``OutputGradFeatures``: ``e``, ``h``, ``token_ids``)
    with a ``RetainFeatureBank`` (higher = pushing the token down hurts some retain token more)."""
    if mode not in MODES:
        raise ValueError(f"unknown conflict mode {mode!r}; expected one of {MODES}")
    n = forget_feats.h.shape[0]
    agg = _StreamingAggregate(n, aggregate, topk, temperature, forget_feats.h.device)
    if len(bank) == 0:
        if mode == "token_bucket":  # no bucket for anyone: minimum conflict, as documented
            return agg.result()
        raise ValueError("the retain bank is empty: call bank.refresh(...) first")

    h_t = forget_feats.h.float()
    if mode == "token_bucket":
        h_t = F.normalize(h_t, dim=-1, eps=1e-12)
        # only bank rows whose id occurs among the forget tokens can match: drop the rest first
        rows = torch.isin(bank.token_ids, forget_feats.token_ids).nonzero()[:, 0]
        for i in range(0, len(rows), chunk_size):
            r = rows[i : i + chunk_size]
            valid = forget_feats.token_ids[:, None] == bank.token_ids[r][None, :]
            agg.update(h_t @ bank.normalized_h(r).T, valid)
        return agg.result()

    sketch = bank.sketch
    e_t = forget_feats.e.float()
    if mode == "kernel":
        e_t, h_t = sketch.normalize(e_t), F.normalize(h_t, dim=-1, eps=1e-12)
    for i in range(0, len(bank), chunk_size):
        sl = slice(i, i + chunk_size)
        e_s, h_s = bank.normalized(sl) if mode == "kernel" else bank.rows(sl)
        agg.update(sketch.gram(e_t, e_s) * (h_t @ h_s.T))
    return agg.result()


def conflict_flops(n_forget_tokens: int, bank_size: int, d: int, H: int) -> int:
    """FLOPs of ``retain_conflict(mode="kernel")`` with a dense sketch: ``2 * N * M * (d + H)``
    (one multiply and one add per term of the two Gram matrices ``[N, d] x [d, M]`` and
    ``[N, H] x [H, M]``; the elementwise product and aggregation are O(N M) and ignored).
    Compare with an LM training step of ``~6 * P`` FLOPs per token: for Llama-3.1-8B
    (H = 4096, P = 8e9), N = 256 sampled forget tokens against M = 65536 bank tokens with
    d = 256 cost 1.5e11 FLOPs, i.e. 0.074 % of one 4096-token step (2.0e14)."""
    return 2 * n_forget_tokens * bank_size * (d + H)
