"""Which RWKU targets a model already knows: teacher-forced answer probabilities of the probes.

RWKU measures the unlearning of knowledge a pretrained model *has*; a target the model never
knew cannot show forgetting, so experiments should pick targets it knows, and whose neighbours
it knows too (otherwise locality cannot be measured). Generating and scoring ROUGE for every
probe of 200 targets is slow; one forward per probe is enough to rank them.

Per probe: the probability of the gold answer after the prompt the RWKU evaluator generates
from (``RWKUEvaluator.render``/``encode`` on :func:`probe_prompt`; in RWKU style the prompt
ends in ``"Answer:"``), the answer joined with one space unless the prompt ends in whitespace,
as the evaluator joins a TruthfulQA choice to its prompt. The probability is
``exp(-mean answer-token NLL)``, the geometric mean of the answer tokens' probabilities, which
is OpenUnlearning's "probability" (``tofu_metrics.sample_probability``). The answer is not
followed by an end token: the evaluator cuts generations at the first newline, so what ends
an answer is not part of what RWKU scores.

Per target (:func:`target_knowledge`): the mean probability of its forget FB (level 1), forget
QA (level 2), neighbour FB and neighbour QA probes, and the number of probes of each.

    known    = mean of forget_fb and forget_qa (of those the target has probes for)
    neighbor = mean of neighbor_fb and neighbor_qa (likewise)

:func:`rank_targets` sorts by ``known`` (highest first) and marks ``neighbor_known`` when
``neighbor`` is at least a threshold, by default the median ``neighbor`` of the ranked targets:
a 135M model's probabilities are small in absolute terms, so "known" is relative to the others.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.data.rwku import Probe, RWKUData, probe_prompt
from atwu_plugin.evals import engine
from atwu_plugin.evals.rwku_eval import RWKUEvaluator
from atwu_plugin.evals.rwku_metrics import PROBE_KEYS
from atwu_plugin.evals.tofu_metrics import sample_probability
from atwu_plugin.tokens import IGNORE_INDEX

FORGET_KINDS = ("forget_fb", "forget_qa")
NEIGHBOR_KINDS = ("neighbor_fb", "neighbor_qa")
SCORED_KINDS = FORGET_KINDS + NEIGHBOR_KINDS
#: (split, level) of each scored kind, for loading its probes
KIND_SOURCES = {kind: split_level for split_level, kind in PROBE_KEYS.items() if kind in SCORED_KINDS}


def probe_kind(probe: Probe) -> str:
    kind = PROBE_KEYS.get((probe.split, probe.level))
    if kind not in SCORED_KINDS:
        raise ValueError(f"RWKU probe of {probe.target!r} is {probe.split} level {probe.level}; only "
                         f"{', '.join(SCORED_KINDS)} (levels 1-2) are scored here")
    return kind


def prompt_encoder(tokenizer, template_args) -> RWKUEvaluator:
    """An evaluator used only for its ``render``/``encode``, so the prompts are the RWKU
    evaluation's own. They read nothing but the tokenizer and ``template_args``: an empty data
    source with no targets builds the evaluator without reading a file."""
    return RWKUEvaluator(tokenizer, template_args, data_root=RWKUData(), targets=[], metrics=("forget",),
                         show_progress=False)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def probe_features(tokenizer, template_args, probes: Sequence[Probe],
                   prompt_style: str = "rwku") -> List[dict]:
    """Per probe ``{"input_ids", "labels"}``: prompt + answer, labels on the answer tokens only."""
    encoder = prompt_encoder(tokenizer, template_args)
    features = []
    for p in probes:
        answer = p.answer.strip()
        if not answer:
            raise ValueError(f"RWKU probe of {p.target!r} has an empty answer: {p.query!r}")
        prompt = encoder.render(*probe_prompt(p, prompt_style))
        sep = "" if prompt[-1:] in ("\n", " ") else " "
        full = encoder.encode(prompt + sep + answer)
        # Prompt and answer are tokenized together (as the evaluator scores a completion); if
        # the boundary merged a prompt token with the answer, the merged token is scored too.
        # Position 0 has no preceding token, so it is never a target.
        start = max(1, _common_prefix(encoder.encode(prompt), full))
        labels = [IGNORE_INDEX] * start + full[start:]
        features.append({"input_ids": torch.tensor(full, dtype=torch.long),
                         "labels": torch.tensor(labels, dtype=torch.long)})
    return features


def answer_probabilities(model, tokenizer, template_args, probes: Sequence[Probe], *, batch_size: int = 8,
                         prompt_style: str = "rwku", progress: bool = False) -> np.ndarray:
    """Per probe, in input order, ``exp(-mean answer-token NLL)`` (see the module docstring).
    Batches are formed by length (``engine.answer_avg_nll``), so padding costs little."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    features = probe_features(tokenizer, template_args, probes, prompt_style)
    if not features:
        return np.empty(0, dtype=np.float64)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    with engine.eval_mode(model):
        nll = engine.answer_avg_nll(model, features, TokenLabelCollator(pad_id), batch_size=batch_size,
                                    progress=progress, desc="RWKU answer probability")
    return sample_probability(nll)


@dataclasses.dataclass(frozen=True)
class TargetKnowledge:
    index: int  # RWKU's target id
    name: str
    prob: Dict[str, Optional[float]]  # kind -> mean answer probability over its probes (None: no probes)
    n: Dict[str, int]  # kind -> number of probes
    neighbor_known: Optional[bool] = None  # set by rank_targets

    @property
    def known(self) -> Optional[float]:
        return _mean_present(self.prob, FORGET_KINDS)

    @property
    def neighbor(self) -> Optional[float]:
        return _mean_present(self.prob, NEIGHBOR_KINDS)

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "known": self.known, "neighbor": self.neighbor,
                "neighbor_known": self.neighbor_known, "prob": dict(self.prob), "n": dict(self.n)}


def _mean_present(prob: Dict[str, Optional[float]], kinds: Tuple[str, ...]) -> Optional[float]:
    vals = [prob[k] for k in kinds if prob.get(k) is not None]
    return float(np.mean(vals)) if vals else None


def target_knowledge(probes: Sequence[Probe], probs: Sequence[float]) -> List[TargetKnowledge]:
    """Per target (in order of id), the mean probability and count of each scored kind.
    Neighbour probes count for the target they are the neighbours of (their ``target``)."""
    if len(probes) != len(probs):
        raise ValueError(f"{len(probes)} probes but {len(probs)} probabilities")
    by_target: Dict[Tuple[int, str], Dict[str, List[float]]] = {}
    for p, x in zip(probes, probs):
        if p.target_index is None:
            raise ValueError(f"RWKU probe of {p.target!r} has no target id (target_index)")
        if not np.isfinite(x):
            raise ValueError(f"probability {x} of a probe of {p.target!r} is not finite")
        by_target.setdefault((p.target_index, p.target), {}).setdefault(probe_kind(p), []).append(float(x))
    rows = []
    for (index, name), per_kind in sorted(by_target.items()):
        prob = {k: float(np.mean(per_kind[k])) if k in per_kind else None for k in SCORED_KINDS}
        rows.append(TargetKnowledge(index, name, prob, {k: len(per_kind.get(k, [])) for k in SCORED_KINDS}))
    return rows


def rank_targets(rows: Sequence[TargetKnowledge], neighbor_threshold: Optional[float] = None
                 ) -> Tuple[List[TargetKnowledge], Optional[float]]:
    """``(rows by known score, highest first, with neighbor_known set; the threshold used)``.

    ``neighbor_known`` is ``neighbor >= threshold`` (None for a target without neighbour
    probes); the default threshold is the median ``neighbor`` score of ``rows``. Ties in the
    known score keep id order; targets without forget probes go last."""
    neighbor_scores = [r.neighbor for r in rows if r.neighbor is not None]
    if neighbor_threshold is None and neighbor_scores:
        neighbor_threshold = float(statistics.median(neighbor_scores))
    ranked = sorted(rows, key=lambda r: (r.known is None, -(r.known or 0.0), r.index))
    def flag(r: TargetKnowledge) -> Optional[bool]:
        return None if r.neighbor is None else r.neighbor >= neighbor_threshold

    return [dataclasses.replace(r, neighbor_known=flag(r)) for r in ranked], neighbor_threshold


def pick_targets(ranked: Sequence[TargetKnowledge], k: int = 3) -> List[TargetKnowledge]:
    """The first ``k`` ranked targets whose neighbours are known too (fewer if there are not)."""
    return [r for r in ranked if r.neighbor_known][:k]


__all__ = ["FORGET_KINDS", "NEIGHBOR_KINDS", "SCORED_KINDS", "KIND_SOURCES", "TargetKnowledge",
           "answer_probabilities", "pick_targets", "probe_features", "probe_kind", "prompt_encoder",
           "rank_targets", "target_knowledge"]
