"""ATWU token scorers, their features and objective (pure torch).

A scorer maps per-token features of the *frozen initial model* to weights ``w in (0, 1)``:
    linear_h      w = sigmoid(phi . h_t + b)                       (the paper's scorer)
    linear_h_tok  w = sigmoid(phi . [h_t ; W_out[y_t]] + b)        (adds the target's output
                  embedding: a linear map can then express token-identity effects)
    mlp           a one-hidden-layer MLP on h_t                    (paper's future work)
    cross_layer   a learned softmax mixture of all layers' h_t, then linear (future work)
    direct        no scorer: ``direct_weights(c)`` (ablation)
and is trained by ``scorer_loss`` against the retain conflict ``c`` (docs/atwu.md, "3. The scorer"),
with its own optimizer; the LM step uses the detached weights.

Feature standardization: every scorer starts with a ``FeatureStandardizer`` (a submodule, so
its statistics are checkpointed with the scorer). LLM hidden states have a few channels
orders of magnitude larger than the rest; unstandardized they dominate ``phi . f``, the
first Adam steps and the weight decay. Default: *fixed* statistics, fitted once on the
cached forget-set features (``scorer.norm.fit(cache.all())``): the features come from the
frozen initial model, so these statistics never drift, and every rank computes the same
ones from the same cache. ``norm.update(f)`` merges running statistics instead (Chan's
parallel formula, every token weighted equally), for streaming or live-feature ablations.
Until any statistics are set the standardizer is the identity.
"""

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from atwu_plugin.losses.tokens import answer_mask

SCORER_VARIANTS = ("linear_h", "linear_h_tok", "cross_layer", "mlp")
ALL_VARIANTS = SCORER_VARIANTS + ("direct",)


def zscore(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(x - mean) / std`` over all entries (population std; 0 if constant)."""
    x = x.float()
    return (x - x.mean()) / (x.std(unbiased=False) + eps) if x.numel() > 1 else torch.zeros_like(x)


class FeatureStandardizer(nn.Module):
    """Per-feature ``(f - mean) / std`` over the trailing ``shape`` of the features."""

    def __init__(self, shape, eps: float = 1e-6):  # absolute, as in LayerNorm: guards dead channels
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.eps = eps
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def fit(self, f: torch.Tensor) -> None:
        f = f.float().reshape(-1, *self.mean.shape)
        self.mean.copy_(f.mean(0))
        self.var.copy_(f.var(0, unbiased=False))
        self.count.fill_(f.shape[0])

    @torch.no_grad()
    def update(self, f: torch.Tensor) -> None:
        f = f.float().reshape(-1, *self.mean.shape)
        n_b = f.shape[0]
        if n_b == 0:
            return
        if self.count == 0:
            return self.fit(f)
        n_a, mean_b, var_b = self.count.item(), f.mean(0), f.var(0, unbiased=False)
        n = n_a + n_b
        delta = mean_b - self.mean
        self.var.copy_((n_a * self.var + n_b * var_b + delta**2 * n_a * n_b / n) / n)
        self.mean.add_(delta * n_b / n)
        self.count.fill_(n)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.count == 0:  # no statistics yet: exact identity
            return f.float()
        return (f.float() - self.mean) / torch.sqrt(self.var + self.eps)


class LinearScorer(nn.Module):
    """``w = sigmoid(phi . standardize(f) + b)``; ``linear_h`` (f = h) and ``linear_h_tok``."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.norm = FeatureStandardizer(in_dim)
        self.linear = nn.Linear(in_dim, 1)
        nn.init.zeros_(self.linear.weight)  # start uniform (w = 0.5): no token favoured a priori
        nn.init.zeros_(self.linear.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(self.norm(f))).squeeze(-1)

    def decay_params(self):
        return [self.linear.weight]


class MLPScorer(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 64):
        super().__init__()
        self.norm = FeatureStandardizer(in_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(self.norm(f))).squeeze(-1)

    def decay_params(self):
        return [self.net[0].weight, self.net[2].weight]


class CrossLayerScorer(nn.Module):
    """Features ``[N, L, dim]`` (one hidden state per layer): standardized per layer (scales
    differ a lot across depth), mixed with learned softmax weights, then linear."""

    def __init__(self, n_layers: int, dim: int):
        super().__init__()
        self.norm = FeatureStandardizer((n_layers, dim))
        self.mix_logits = nn.Parameter(torch.zeros(n_layers))  # uniform mixture at start
        self.linear = nn.Linear(dim, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.mix_logits, 0)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("l,nld->nd", self.layer_weights(), self.norm(f))
        return torch.sigmoid(self.linear(mixed)).squeeze(-1)

    def decay_params(self):
        return [self.linear.weight]


def build_scorer(
    variant: str, hidden_size: int, n_layers: int | None = None, mlp_hidden: int = 64
) -> nn.Module:
    """Scorer for a variant; ``n_layers`` = number of hidden-state tensors given to
    ``scorer_features`` (HF: ``num_hidden_layers + 1``, the embeddings included)."""
    if variant == "linear_h":
        return LinearScorer(hidden_size)
    if variant == "linear_h_tok":
        return LinearScorer(2 * hidden_size)
    if variant == "mlp":
        return MLPScorer(hidden_size, mlp_hidden)
    if variant == "cross_layer":
        if n_layers is None:
            raise ValueError("cross_layer needs n_layers")
        return CrossLayerScorer(n_layers, hidden_size)
    raise ValueError(
        f"unknown scorer variant {variant!r}; expected one of {SCORER_VARIANTS} ('direct' has no scorer)"
    )


@torch.no_grad()
def scorer_features(
    variant: str,
    hidden_states_by_layer: torch.Tensor | Sequence[torch.Tensor],
    labels: torch.Tensor,
    output_embedding: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-answer-token features ``[N, F]`` (``[N, L, H]`` for ``cross_layer``) in the row-major
    answer-token order of ``answer_mask(labels)`` (the order of ``output_grad_features``).
    ``hidden_states_by_layer``: model layout ``[B, T, H]`` tensors, last = final layer (a single
    tensor is the last layer); token t uses position ``t - 1``. ``output_embedding``: ``W_out``
    ``[V, H]`` (for ``linear_h_tok``; under ZeRO-3 the caller gathers it once)."""
    hs = [hidden_states_by_layer] if torch.is_tensor(hidden_states_by_layer) else list(hidden_states_by_layer)
    pos = answer_mask(labels).nonzero()
    b, t = pos[:, 0], pos[:, 1]
    if variant in ("linear_h", "mlp"):
        return hs[-1][b, t - 1].float()
    if variant == "linear_h_tok":
        if output_embedding is None:
            raise ValueError("linear_h_tok needs output_embedding (the output layer's weight [V, H])")
        return torch.cat([hs[-1][b, t - 1].float(), output_embedding[labels[b, t]].float()], -1)
    if variant == "cross_layer":
        return torch.stack([h[b, t - 1].float() for h in hs], 1)
    raise ValueError(f"unknown scorer variant {variant!r}; expected one of {SCORER_VARIANTS}")


def direct_weights(c: torch.Tensor, a: float = 2.0) -> torch.Tensor:
    """The ``direct`` variant: ``sigmoid(a * zscore(-c))``, low conflict -> high weight."""
    return torch.sigmoid(a * zscore(-c))


def scorer_loss(w, c, rho: float, lam: float, wd: float, params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum_t w_t zscore(c_t) / N + lam (mean(w) - rho)^2 + wd |phi|^2``: move weight to
    low-conflict tokens, keep the weight budget at ``rho`` (the expected fraction of
    forget-specific tokens), and bound ``phi`` (without it, w saturates to a hard mask)."""
    z = zscore(c.detach())
    loss = (w * z).mean() + lam * (w.mean() - rho) ** 2
    return loss + wd * sum((p**2).sum() for p in params)


class ForgetFeatureCache:
    """Frozen initial-model features of the forget set, keyed by dataset index:
    ``index -> [n_answer_tokens, ...]``, computed once (docs/atwu.md: live-model features drift).
    Stored on ``device`` in ``dtype`` (e.g. bfloat16 halves the memory of 8B hidden states)."""

    def __init__(self, dtype: torch.dtype | None = None, device="cpu"):
        self.dtype, self.device = dtype, torch.device(device)
        self._data: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, index) -> bool:
        return int(index) in self._data

    def put(self, index: int, feats: torch.Tensor) -> None:
        self._data[int(index)] = feats.detach().to(self.device, self.dtype or feats.dtype)

    def get(self, index: int) -> torch.Tensor:
        return self._data[int(index)]

    def missing(self, indices) -> list:
        return [int(i) for i in indices if int(i) not in self._data]

    def put_batch(self, indices, feats: torch.Tensor, positions: torch.Tensor, batch_size: int | None = None):
        """Split flattened features (rows ordered like ``positions [N, 2]``) by batch row."""
        indices = [int(i) for i in indices]
        counts = torch.bincount(positions[:, 0], minlength=batch_size or len(indices)).tolist()
        for idx, part in zip(indices, feats.split(counts)):
            self.put(idx, part)

    def put_rows(self, indices: torch.Tensor, feats: torch.Tensor, counts: torch.Tensor) -> None:
        """Split flattened features by per-sample ``counts`` (samples in ``indices`` order);
        samples with no answer token are skipped (data-parallel setup pads with such dummies)."""
        for idx, n, part in zip(indices.tolist(), counts.tolist(), feats.split(counts.tolist())):
            if n:
                self.put(idx, part)

    def gather(self, indices, labels: torch.Tensor | None = None, device=None) -> torch.Tensor:
        """Concatenate in batch order (= the row-major answer-token order). With ``labels``,
        check each row's answer-token count against the cache (catches a changed tokenization)."""
        parts = [self._data[int(i)] for i in indices]
        if labels is not None:
            counts = answer_mask(labels).sum(1).tolist()
            bad = [(int(i), p.shape[0], c) for i, p, c in zip(indices, parts, counts) if p.shape[0] != c]
            if bad:
                raise ValueError(
                    "cached feature counts differ from the batch's answer tokens "
                    f"(index, cached, batch): {bad}"
                )
        return torch.cat(parts).to(device or self.device)

    def all(self) -> torch.Tensor:
        return torch.cat([self._data[i] for i in sorted(self._data)])

    def state_dict(self) -> dict:
        keys = sorted(self._data)
        return {
            "index": torch.tensor(keys, dtype=torch.long),
            "lengths": torch.tensor([self._data[k].shape[0] for k in keys], dtype=torch.long),
            "features": torch.cat([self._data[k] for k in keys]) if keys else torch.zeros(0),
        }

    def load_state_dict(self, sd: dict) -> None:
        self._data = {}
        for idx, part in zip(sd["index"].tolist(), sd["features"].split(sd["lengths"].tolist())):
            self.put(idx, part)
