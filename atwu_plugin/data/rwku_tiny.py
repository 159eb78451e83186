"""RWKU-tiny corpora: which RWKU records a CPU-scale model is trained and unlearned on.

RWKU (Jin et al., 2024) asks a model that already knows famous people to forget some of them.
A tiny model knows nobody, so RWKU-tiny first teaches it (``atwu_plugin.zoo.rwku``):

* **texts about a target** (:func:`target_texts`): the target's one-sentence intro, its
  fill-in-the-blank probes with the blank filled in (the facts as plain statements), and the
  first ``mia_per_target`` of its ``forget_mia`` passages (so the MIA members were seen);
* **texts about its neighbours** (:func:`neighbor_texts`): filled-in neighbor cloze probes;
* **probe answers** (:func:`probe_qa`): every kept forget (levels 1-3) and neighbor (levels
  1-2) probe as a question-answer pair.

Every per-level list keeps its first ``probes_per_level`` records per target (the files'
order), the same cut the evaluator applies (``max_probes_per_level``), so what is evaluated is
exactly what was taught. Pure Python on :class:`~atwu_plugin.data.rwku.RWKUData`: no torch.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence

from atwu_plugin.data.rwku import FORGET_LEVELS, NEIGHBOR_LEVELS, Probe, RWKUData, RWKUTarget

BLANK = "___"


@dataclass(frozen=True)
class TinyCorpusSpec:
    probes_per_level: int = 8  # per target and probe level
    mia_per_target: int = 4  # forget_mia passages per target in the training texts

    def __post_init__(self):
        for name in ("probes_per_level", "mia_per_target"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RWKU-tiny: {name}={value!r}; expected a positive integer")


def filled_cloze(probe: Probe) -> str:
    """The statement behind a fill-in-the-blank probe: its first ``___`` replaced by the answer
    (a probe without a blank becomes ``query + " " + answer``)."""
    if BLANK in probe.query:
        return probe.query.replace(BLANK, probe.answer, 1)
    return f"{probe.query} {probe.answer}"


def intro_statement(intro: str, name: str) -> str:
    """RWKU's intros start with the instruction "Please forget <name>. ": keep the statement."""
    prefix = f"Please forget {name}."
    return intro[len(prefix):].strip() if intro.startswith(prefix) else intro


CLOZE_LEVEL = 1  # level 1 is fill-in-the-blank for both forget and neighbor probes


def target_texts(data: RWKUData, target: RWKUTarget, spec: TinyCorpusSpec) -> List[str]:
    """Plain texts about ``target``: intro, filled forget clozes, first forget_mia passages."""
    texts = [intro_statement(data.intro(target), target.name)] if data.has(target, "intro") else []
    texts += [filled_cloze(p) for p in data.forget_probes(target, CLOZE_LEVEL)[: spec.probes_per_level]]
    texts += [m.text for m in data.mia(target, "forget")[: spec.mia_per_target]]
    return [t for t in texts if t.strip()]


def neighbor_texts(data: RWKUData, target: RWKUTarget, spec: TinyCorpusSpec) -> List[str]:
    """Filled neighbor clozes of ``target`` (facts about related entities, to be kept)."""
    return [filled_cloze(p) for p in data.neighbor_probes(target, CLOZE_LEVEL)[: spec.probes_per_level]]


def kept_probes(data: RWKUData, target: RWKUTarget, spec: TinyCorpusSpec) -> List[Probe]:
    """The probes of ``target`` RWKU-tiny teaches and evaluates (first N per level)."""
    out: List[Probe] = []
    for split, levels in (("forget", FORGET_LEVELS), ("neighbor", NEIGHBOR_LEVELS)):
        for level in levels:
            out += data.probes(target, split, level)[: spec.probes_per_level]
    return out


def probe_qa(probes: Sequence[Probe]) -> List[Dict[str, str]]:
    """Probes as ``{"question", "answer"}`` records (the bare query: the evaluator's "plain"
    prompt style renders it with the same template)."""
    return [{"question": p.query, "answer": p.answer} for p in probes]


__all__ = ["TinyCorpusSpec", "filled_cloze", "intro_statement", "target_texts", "neighbor_texts", "kept_probes", "probe_qa"]
