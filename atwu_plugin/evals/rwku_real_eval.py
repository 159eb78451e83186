"""RWKU evaluation of a real pretrained model, in two tiers of cost.

``evaluate(model)`` (the final evaluation) returns RWKU's own metrics from
:class:`~atwu_plugin.evals.rwku_eval.RWKUEvaluator` on the unlearning target, restricted to
what a 135M model on a CPU can afford: forget FB/QA/AA and neighbour FB/QA (ROUGE-L recall of
greedy answers), the MIA scores (forget_mia vs retain_mia), plus the probability tier below.

``evaluate(model, generate=False)`` (every trajectory point) skips generation: the answer
probability of the same probes, teacher-forced (``rwku_known.answer_probabilities``: the
geometric mean of the gold answer tokens' probabilities after RWKU's prompt) and the MIA
scores, which are teacher-forced anyway. The keys it adds:

==========================  ==================================================================
forget_{fb,qa,aa}_prob      mean answer probability of the forget probes, levels 1/2/3
forget_prob                 mean of forget_fb_prob and forget_qa_prob: the forgetting axis of
                            the matched comparison (levels 1-2: the ones the model answers
                            without an adversarial prompt)
neighbor_{fb,qa}_prob       the same on the neighbour probes; neighbor_prob = their mean
==========================  ==================================================================

Every probe set is the first ``n_probes`` of its level (as ``RWKUEvaluator`` takes them), so
the probability tier and the ROUGE tier score the same probes.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from atwu_plugin.data.rwku import FORGET_LEVELS, NEIGHBOR_LEVELS, Probe, RWKUData
from atwu_plugin.evals.rwku_eval import RWKUEvaluator
from atwu_plugin.evals.rwku_known import answer_probabilities
from atwu_plugin.evals.rwku_metrics import PROBE_KEYS

#: final-evaluation keys kept from RWKUEvaluator (the rest is settings / per-target detail)
RWKU_KEYS = ("forget_fb", "forget_qa", "forget_aa", "forget_all", "neighbor_fb", "neighbor_qa", "neighbor_all",
             "mia_loss_auc", "mia_zlib_auc", "mia_mink_auc", "mia_minkpp_auc", "mia_forget_loss", "mia_retain_loss")


class RWKURealEvaluator:
    """Evaluate one RWKU target (``target``: an id, name or ``RWKUTarget`` of ``data``).

    ``n_probes``: probes per forget/neighbour level; ``n_mia``: texts per MIA set (members
    ``forget_mia``, non-members ``retain_mia``), cut to ``mia_max_length`` tokens."""

    def __init__(self, tokenizer, template_args: dict, data: RWKUData, target, *, n_probes: int = 20,
                 n_mia: int = 20, mia_max_length: int = 128, batch_size: int = 8, max_new_tokens: int = 16,
                 show_progress: bool = False):
        for name, value in (("n_probes", n_probes), ("n_mia", n_mia), ("mia_max_length", mia_max_length),
                            ("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RWKURealEvaluator: {name}={value!r}; expected a positive integer")
        self.tokenizer, self.template_args, self.data = tokenizer, dict(template_args), data
        self.target = data.target(target)
        self.batch_size = batch_size
        common = dict(targets=[self.target], batch_size=batch_size, max_new_tokens=max_new_tokens,
                      max_probes_per_level=n_probes, max_items_per_set=n_mia, mia_max_length=mia_max_length,
                      aggregate="mean", show_progress=show_progress)
        self.full = RWKUEvaluator(tokenizer, template_args, data, metrics=("forget", "neighbor", "mia"), **common)
        self.mia_only = RWKUEvaluator(tokenizer, template_args, data, metrics=("mia",), **common)
        self.probes: Dict[str, List[Probe]] = {}
        for split, levels in (("forget", FORGET_LEVELS), ("neighbor", NEIGHBOR_LEVELS)):
            for level in levels:
                if data.has(self.target, f"{split}_level{level}"):
                    self.probes[PROBE_KEYS[(split, level)]] = data.probes(self.target, split, level)[:n_probes]
        if not self.probes.get("forget_fb") and not self.probes.get("forget_qa"):
            raise ValueError(f"RWKU target {self.target.key} has no forget FB or QA probes in {data.source}: "
                             "nothing to measure forgetting on")

    def answer_probs(self, model) -> Dict[str, Optional[float]]:
        kinds = list(self.probes)
        flat = [p for k in kinds for p in self.probes[k]]
        probs = answer_probabilities(model, self.tokenizer, self.template_args, flat, batch_size=self.batch_size)
        out: Dict[str, Optional[float]] = {}
        start = 0
        for k in kinds:
            n = len(self.probes[k])
            out[f"{k}_prob"] = float(np.mean(probs[start:start + n])) if n else None
            start += n
        for axis, parts in (("forget_prob", ("forget_fb_prob", "forget_qa_prob")),
                            ("neighbor_prob", ("neighbor_fb_prob", "neighbor_qa_prob"))):
            vals = [out[p] for p in parts if out.get(p) is not None]
            out[axis] = float(np.mean(vals)) if vals else None
        return out

    def evaluate(self, model, generate: bool = True, utility_terms: bool = True,
                 forget_truth_ratio: bool = True) -> Dict[str, Optional[float]]:
        """``generate=False``: the probability tier only (see the module docstring).
        ``utility_terms`` and ``forget_truth_ratio`` are the lite host's TOFU switches; RWKU has
        neither, so they are accepted and ignored."""
        res = (self.full if generate else self.mia_only).evaluate(model)
        out = {k: (None if res.get(k) is None else float(res[k])) for k in RWKU_KEYS if k in res}
        out.update(self.answer_probs(model))
        return out


__all__ = ["RWKURealEvaluator", "RWKU_KEYS"]
