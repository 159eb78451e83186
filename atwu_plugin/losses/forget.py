"""Forget losses over per-token log-probabilities.

All losses are called as ``loss(logp, mask, weights, ref_logp=None) -> scalar`` where
``logp``/``ref_logp`` are ``[B, T]`` log p(y_t | y_<t) aligned with labels
(``atwu_plugin.losses.tokens.token_logprobs``), ``mask`` the bool answer mask and
``weights`` ``[B, T]`` nonnegative token weights (detached by the weighter). Minimizing a
forget loss lowers the likelihood of the forget answers.

Token-level losses define ``per_token(logp, ref_logp) -> l [B, T]`` and reduce
``sum_t w_t l_t`` with a named normalizer (``atwu_plugin.losses.reduce``). Sequence-level
losses (``npo``, ``simnpo``) put the weights inside the sequence score instead, so that with
w = 1 they are exactly OpenUnlearning's NPO / SimNPO forget terms.
"""

import torch
import torch.nn.functional as F

from atwu_plugin.losses.reduce import EPS, check_normalizer, weighted_reduce
from atwu_plugin.registry import FORGET_LOSSES, check_number



class ForgetLoss:
    """Base class of token-level forget losses: ``sum(w * per_token) / normalizer``."""

    name = "forget loss"
    needs_ref = False

    def __init__(self, normalizer: str = "batch_tokens"):
        self.normalizer = check_normalizer(normalizer)

    def per_token(self, logp: torch.Tensor, ref_logp: torch.Tensor = None) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is a sequence-level loss: it has no per-token decomposition")

    def __call__(self, logp, mask, weights, ref_logp=None) -> torch.Tensor:
        self._check_ref(ref_logp)
        return weighted_reduce(self.per_token(logp, ref_logp), weights, mask, self.normalizer)

    def _check_ref(self, ref_logp):
        if self.needs_ref and ref_logp is None:
            raise ValueError(f"{self.name} needs ref_logp (log-probs of the frozen reference model)")

    def _beta(self, beta):
        return check_number(self.name, "beta", beta, low=0, low_open=True)


@FORGET_LOSSES.register("ga")
class GradientAscent(ForgetLoss):
    """l_t = log p_t. Minimizing it ascends the NLL; with w = 1 and ``batch_tokens`` it is
    -(HF mean cross-entropy), i.e. OU's GradAscent forget term."""

    name = "ga"

    def per_token(self, logp, ref_logp=None):
        return logp


@FORGET_LOSSES.register("npo_token")
class TokenNPO(ForgetLoss):
    """l_t = (2/beta) softplus(beta (log p_t - log p_ref,t)): NPO applied to each token.
    Saturates: dl_t/dlog p_t = 2 sigmoid(beta (log p_t - log p_ref,t)) vanishes once the token
    is well below the reference. ATWU's default forget loss."""

    name = "npo_token"
    needs_ref = True

    def __init__(self, beta: float = 1.0, normalizer: str = "batch_tokens"):
        super().__init__(normalizer)
        self.beta = self._beta(beta)

    def per_token(self, logp, ref_logp=None):
        self._check_ref(ref_logp)
        return 2.0 / self.beta * F.softplus(self.beta * (logp - ref_logp))


@FORGET_LOSSES.register("simnpo_token")
class TokenSimNPO(ForgetLoss):
    """l_t = (2/beta) softplus(beta (log p_t + delta)): reference-free NPO per token."""

    name = "simnpo_token"

    def __init__(self, beta: float = 1.0, delta: float = 0.0, normalizer: str = "batch_tokens"):
        super().__init__(normalizer)
        self.beta = self._beta(beta)
        self.delta = check_number(self.name, "delta", delta)

    def per_token(self, logp, ref_logp=None):
        return 2.0 / self.beta * F.softplus(self.beta * (logp + self.delta))


@FORGET_LOSSES.register("saturated_prob")
class SaturatedProb(ForgetLoss):
    """l_t = p_t = exp(log p_t). Its gradient p_t * grad log p_t vanishes as p_t -> 0."""

    name = "saturated_prob"

    def per_token(self, logp, ref_logp=None):
        return logp.exp()


class SequenceForgetLoss(ForgetLoss):
    """Sequence-level losses: no normalizer, the weights enter the sequence score. The batch
    mean runs over sequences with positive total weight (all of them when w = 1 and every
    sample has an answer token, which is when OU's formulas are defined too)."""

    def __init__(self):  # no normalizer
        pass

    def sequence_loss(self, logp, mask, weights, ref_logp) -> torch.Tensor:  # [B]
        raise NotImplementedError

    def __call__(self, logp, mask, weights, ref_logp=None):
        self._check_ref(ref_logp)
        weights = weights * mask
        has_weight = weights.sum(-1) > 0
        per_seq = self.sequence_loss(logp, mask, weights, ref_logp)
        return (per_seq * has_weight).sum() / has_weight.sum().clamp_min(1)


@FORGET_LOSSES.register("npo")
class NPO(SequenceForgetLoss):
    """s_b = sum_t w_bt (log p_bt - log p_ref,bt) over answer tokens;
    loss = mean_b (2/beta) softplus(beta s_b).
    With w = 1 this is OU's NPO forget term -(2/beta) logsigmoid(-beta (logp_seq - ref_seq))."""

    name = "npo"
    needs_ref = True

    def __init__(self, beta: float = 1.0):
        self.beta = self._beta(beta)

    def sequence_loss(self, logp, mask, weights, ref_logp):
        log_ratio = torch.where(mask, logp - ref_logp, torch.zeros_like(logp))
        score = (weights * log_ratio).sum(-1)
        return 2.0 / self.beta * F.softplus(self.beta * score)


@FORGET_LOSSES.register("simnpo")
class SimNPO(SequenceForgetLoss):
    """a_b = sum_t w logp / sum_t w (weighted mean answer log-prob; -NLL/len when w = 1);
    loss = mean_b (2/beta) softplus(beta (a_b + delta)),
    which with w = 1 is OU's SimNPO term -(2/beta) logsigmoid(beta (NLL/len - delta))."""

    name = "simnpo"

    def __init__(self, beta: float = 1.0, delta: float = 0.0):
        self.beta = self._beta(beta)
        self.delta = check_number(self.name, "delta", delta)

    def sequence_loss(self, logp, mask, weights, ref_logp=None):
        weighted = torch.where(mask, weights * logp, torch.zeros_like(logp)).sum(-1)
        mean_logp = weighted / weights.sum(-1).clamp_min(EPS)
        return 2.0 / self.beta * F.softplus(self.beta * (mean_logp + self.delta))
