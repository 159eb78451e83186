"""Token-level metrics of the embedded benchmark (beyond TOFU's), streamed over batches.

All per-token tensors follow ``atwu_plugin.losses.tokens``: shape ``[B, T]``, aligned with
``labels`` (position ``t`` is about predicting ``labels[:, t]`` from the logits at ``t - 1``).

* ``specific_prob``: mean probability ``p(y_t | y_<t)`` over the forget answers' tokens of
  kind ``KIND_SPECIFIC`` (forget-specific facts; lower is better after unlearning).
* ``generic_prob``: the same over ``KIND_TEMPLATE`` and ``KIND_SHARED`` tokens (template
  wording and facts shared with retain authors; higher is better), also reported
  separately as ``template_prob`` and ``shared_prob``.
* ``kl_to_retain``: mean over the forget answers' tokens of
  ``KL(p_retain(. | y_<t) || p_model(. | y_<t))`` over the full vocabulary (label-free; 0 when
  the model is indistinguishable from the retain model on the forget answers).

Means are *micro* averages: every token of the split counts once (long answers weigh more
than short ones), unlike TOFU's per-sample probabilities.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from atwu_plugin.losses.tokens import align_to_labels, answer_mask
from atwu_plugin.tokens import KIND_IGNORE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE


def kl_per_token(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` float32: ``KL(softmax(ref_logits) || softmax(logits))`` at the position that
    predicts ``labels[:, t]``, i.e. ``sum_v p_ref(v) (log p_ref(v) - log p(v))``; 0 off-answer."""
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} vs reference logits {tuple(ref_logits.shape)}")
    logp = torch.log_softmax(logits.float(), dim=-1)
    logq = torch.log_softmax(ref_logits.float(), dim=-1)
    kl = (logq.exp() * (logq - logp)).sum(-1)  # [B, T] at the predicting position
    kl = align_to_labels(kl.unsqueeze(-1)).squeeze(-1)
    return kl.clamp_min(0.0) * answer_mask(labels)


class TokenKindProbAccumulator:
    """Streams ``sum exp(logp)`` and token counts per token kind over batches.

    ``update(logp, token_kind)``: ``logp`` are per-token answer log-probabilities of the
    evaluated model (``atwu_plugin.losses.tokens.token_logprobs``) and ``token_kind`` the
    ground-truth kinds (``atwu_plugin.tokens``; ``KIND_NONE`` off-answer is skipped).
    """

    KINDS = {
        "specific": KIND_SPECIFIC,
        "template": KIND_TEMPLATE,
        "shared": KIND_SHARED,
        "ignore": KIND_IGNORE,
    }

    def __init__(self):
        self.sums = {name: 0.0 for name in self.KINDS}
        self.counts = {name: 0 for name in self.KINDS}
        # per sample (batch rows in order): {kind: ([sum of prob], [n tokens])}, for bootstraps over samples
        self.rows = {name: ([], []) for name in self.KINDS}

    @torch.no_grad()
    def update(self, logp: torch.Tensor, token_kind: torch.Tensor) -> None:
        if logp.shape != token_kind.shape:
            raise ValueError(f"logp {tuple(logp.shape)} vs token_kind {tuple(token_kind.shape)}")
        prob = logp.double().exp()
        kind = token_kind.to(logp.device)
        for name, k in self.KINDS.items():
            sel = kind == k
            self.sums[name] += float(prob[sel].sum())
            self.counts[name] += int(sel.sum())
            self.rows[name][0].extend((prob * sel).sum(dim=1).tolist())
            self.rows[name][1].extend(sel.sum(dim=1).tolist())

    def _mean(self, *names: str) -> Optional[float]:
        n = sum(self.counts[x] for x in names)
        return sum(self.sums[x] for x in names) / n if n else None

    def result(self) -> Dict[str, Optional[float]]:
        """``specific_prob``, ``generic_prob`` (template + shared), ``template_prob``,
        ``shared_prob``, ``labelled_prob`` (all three labelled kinds) and the token counts;
        a mean over no token is ``None``."""
        return {
            "specific_prob": self._mean("specific"),
            "generic_prob": self._mean("template", "shared"),
            "template_prob": self._mean("template"),
            "shared_prob": self._mean("shared"),
            "labelled_prob": self._mean("specific", "template", "shared"),
            "n_specific": self.counts["specific"],
            "n_template": self.counts["template"],
            "n_shared": self.counts["shared"],
            "n_ignore": self.counts["ignore"],
        }

    def per_sample(self) -> Dict[str, Dict[str, list]]:
        """``{"specific_prob"|"generic_prob": {"sum": [...], "n": [...]}}``, one entry per sample:
        the pooled means of :meth:`result` are ``sum(sum) / sum(n)`` of these."""
        def rows(*names):
            sums = [sum(v) for v in zip(*(self.rows[x][0] for x in names))]
            ns = [int(sum(v)) for v in zip(*(self.rows[x][1] for x in names))]
            return {"sum": sums, "n": ns}
        return {"specific_prob": rows("specific"), "generic_prob": rows("template", "shared")}


class KLAccumulator:
    """Streams the mean of ``kl_per_token`` over answer tokens; with ``token_kind`` also the
    mean on forget-specific and on generic (template + shared) tokens."""

    def __init__(self):
        self.total = 0.0
        self.count = 0
        self.by_kind = {"specific": [0.0, 0], "generic": [0.0, 0]}
        self.rows: tuple = ([], [])  # per sample: ([sum of KL over its answer tokens], [n tokens])

    @torch.no_grad()
    def update(
        self,
        logits: torch.Tensor,
        ref_logits: torch.Tensor,
        labels: torch.Tensor,
        token_kind: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Adds a batch; returns its per-token KL ``[B, T]``."""
        kl = kl_per_token(logits, ref_logits, labels).double()
        mask = answer_mask(labels)
        self.total += float(kl[mask].sum())
        self.count += int(mask.sum())
        self.rows[0].extend((kl * mask).sum(dim=1).tolist())
        self.rows[1].extend(mask.sum(dim=1).tolist())
        if token_kind is not None:
            kind = token_kind.to(kl.device)
            for name, sel in (
                ("specific", kind == KIND_SPECIFIC),
                ("generic", (kind == KIND_TEMPLATE) | (kind == KIND_SHARED)),
            ):
                sel = sel & mask
                self.by_kind[name][0] += float(kl[sel].sum())
                self.by_kind[name][1] += int(sel.sum())
        return kl

    def per_sample(self) -> Dict[str, list]:
        """``{"sum": [...], "n": [...]}`` per sample; ``kl_to_retain`` = sum(sum) / sum(n)."""
        return {"sum": list(self.rows[0]), "n": [int(n) for n in self.rows[1]]}

    def result(self) -> Dict[str, Optional[float]]:
        out = {"kl_to_retain": self.total / self.count if self.count else None, "n_tokens": self.count}
        for name, (s, n) in self.by_kind.items():
            out[f"kl_to_retain_{name}"] = s / n if n else None
        return out


__all__ = ["KLAccumulator", "TokenKindProbAccumulator", "kl_per_token"]
