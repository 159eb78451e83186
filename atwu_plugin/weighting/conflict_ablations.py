"""Ablations and ground truth for retain conflict (pure torch).

- ``mean_gradient_alignment``: ``<g_t, g_r>`` with the *mean* retain gradient ``g_r`` on the
  output layer. Kept so that the design's negative result (docs/atwu.md) stays reproducible: at a trained model
  ``g_r ~ 0``, conflicts with a few retain tokens vanish in the mean and the score ranks
  tokens by ``|g_t|``.
- ``finite_difference_alignment``: the same question on the *full* model, by a finite
  difference along the retain-descent direction (no output-layer factorization).
- ``per_token_gradients`` / ``exact_token_gradient_cosine``: per-token full-parameter
  gradients with autograd, one backward per token: ground truth for tests on tiny models.
Sign convention everywhere: positive = descending the retain loss *raises* ``log p_t``, i.e.
forgetting t works against the retain set (conflict).
"""

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from atwu_plugin.losses.tokens import answer_mask, token_logprobs


@torch.no_grad()
def mean_gradient_alignment(
    forget_feats, retain, sketch=None, normalize: bool = False, chunk_size: int = 4096
):
    """``a_t = <g_t, g_r>``, ``g_r = mean_s e_s h_s^T`` over the retain tokens in ``retain``
    (a ``RetainFeatureBank``, or ``OutputGradFeatures`` plus its ``sketch``). With a dense sketch
    ``g_r`` is built
    once as a ``[d, H]`` matrix and ``a_t = e_t^T G h_t``; with the sparse top-k sketch it is the
    mean of the raw pairwise kernel (same value, computed in chunks). ``normalize`` divides by
    ``|g_t|`` (the cosine with ``g_r`` up to the constant ``|g_r|``)."""
    sketch = sketch or retain.sketch
    e_t, h_t = forget_feats.e.float(), forget_feats.h.float()
    e_s, h_s = retain.e.float(), retain.h.float()
    if getattr(sketch, "dense", False):
        g_r = e_s.T @ h_s / e_s.shape[0]  # [d, H]
        a = ((e_t @ g_r) * h_t).sum(-1)
    else:
        a = torch.zeros(e_t.shape[0], device=e_t.device)
        for i in range(0, e_s.shape[0], chunk_size):
            a += (sketch.gram(e_t, e_s[i : i + chunk_size]) * (h_t @ h_s[i : i + chunk_size].T)).sum(1)
        a /= e_s.shape[0]
    if normalize:
        a = a / (_sketch_norm(sketch, e_t) * h_t.norm(dim=-1)).clamp_min(1e-12)
    return a


def _sketch_norm(sketch, e: torch.Tensor) -> torch.Tensor:
    if getattr(sketch, "dense", False):
        return e.norm(dim=-1)
    return sketch.sq_norm(e).clamp_min(0).sqrt()


def finite_difference_alignment(
    model_fn: Callable,
    params: Iterable[torch.Tensor],
    forget_token_loss_fn: Callable,
    retain_loss_fn: Callable,
    eps: float = 1e-3,
    central: bool = True,
) -> torch.Tensor:
    """``(f_t(theta + eps u) - f_t(theta - eps u)) / (2 eps)`` with ``u = -grad L_r / |grad L_r|``
    (one-sided if not ``central``). ``retain_loss_fn(model_fn)`` returns the scalar retain loss
    (differentiable w.r.t. ``params``); ``forget_token_loss_fn(model_fn)`` returns the per-token
    quantity to probe, normally the forget tokens' ``log p_t`` ``[N]`` (then the result is
    ~ ``<g_t, g_r> / |g_r|``). ``params`` are perturbed in place and restored bit-exactly from
    clones (never by subtracting the step again, which rounds), also if a callable raises.
    Run the model in eval mode (dropout would swamp the difference); parameters must be
    materialized (not ZeRO-3 shards): an ablation for small models, not a training signal."""
    params = [p for p in params]
    saved = [p.detach().clone() for p in params]
    with torch.enable_grad():
        grads = torch.autograd.grad(retain_loss_fn(model_fn), params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).clamp_min(1e-30)
    step = [(-eps / norm).to(g.dtype) * g for g in grads]
    try:
        with torch.no_grad():
            for p, s in zip(params, step):
                p.add_(s)
            plus = forget_token_loss_fn(model_fn).detach()
            for p, s, p0 in zip(params, step, saved):
                p.copy_(p0)
                if central:
                    p.sub_(s)
            minus = forget_token_loss_fn(model_fn).detach()
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, saved):
                p.copy_(p0)
    return (plus - minus) / (2 * eps if central else eps)


def _logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)


def per_token_gradients(
    model, input_ids, labels, attention_mask=None, params: Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """``[N, P]`` gradients of each answer token's ``log p_t`` w.r.t. ``params`` (default: all
    trainable parameters), rows in the row-major answer-token order of ``answer_mask``."""
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    with torch.enable_grad():
        logp = token_logprobs(_logits(model(input_ids=input_ids, attention_mask=attention_mask)), labels)
        rows = []
        for b, t in answer_mask(labels).nonzero().tolist():
            gs = torch.autograd.grad(logp[b, t], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, gs)])
            )
    return torch.stack(rows) if rows else torch.zeros(0, sum(p.numel() for p in params))


def exact_token_gradient_cosine(model, forget_batch: dict, retain_batch: dict, params=None) -> torch.Tensor:
    """``[N, M]`` cosines between per-token gradients of forget and retain answer tokens
    (batches are dicts with ``input_ids``, ``labels``, optional ``attention_mask``)."""

    def grads(batch):
        return per_token_gradients(
            model, batch["input_ids"], batch["labels"], batch.get("attention_mask"), params
        )

    return F.normalize(grads(forget_batch), dim=-1) @ F.normalize(grads(retain_batch), dim=-1).T
