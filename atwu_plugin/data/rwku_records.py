"""RWKU's file kinds and the record types its loaders return (pure Python, no I/O).

See :mod:`atwu_plugin.data.rwku` for the sources that read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

# ----------------------------------------------------------------------------------------------
# File kinds
# ----------------------------------------------------------------------------------------------

#: kind -> (file name in a target directory, HF config, HF split, required keys per record)
KINDS: Dict[str, Tuple[str, str, str, Tuple[str, ...]]] = {
    "intro": ("intro.json", "forget_target", "train", ("target", "intro")),
    "passage": ("passage.json", "train_original_passage", "train", ("text",)),
    "forget_level1": ("forget_level1.json", "forget_level1", "test", ("query", "answer")),
    "forget_level2": ("forget_level2.json", "forget_level2", "test", ("query", "answer")),
    "forget_level3": ("forget_level3.json", "forget_level3", "test", ("query", "answer")),
    "neighbor_level1": ("neighbor_level1.json", "neighbor_level1", "test", ("query", "answer")),
    "neighbor_level2": ("neighbor_level2.json", "neighbor_level2", "test", ("query", "answer")),
    "forget_mia": ("forget_mia.json", "mia_forget", "test", ("text",)),
    "retain_mia": ("retain_mia.json", "mia_retain", "test", ("text",)),
    "fluency": ("fluency.json", "utility_fluency", "test", ("instruction",)),
    "retain_mmlu": ("retain_mmlu.json", "utility_general", "test", ("question", "choices", "answer")),
    "retain_bbh": ("retain_bbh.json", "utility_reason", "test", ("question", "answer")),
    "truthful": ("truthful.json", "utility_truthfulness", "test", ("question", "mc1_targets")),
    "triviaqa": ("triviaqa.json", "utility_factuality", "test", ("question", "answers")),
    "reject": ("reject.json", "train_refusal_llama3", "train", ("instruction", "output")),
    "positive": ("positive.json", "train_positive_llama3", "train", ("text",)),
    "negative": ("negative.json", "train_negative_llama3", "train", ("text",)),
    "pair": ("pair.json", "train_pair_llama3", "train", ("prompt", "response")),
}

FORGET_LEVELS = (1, 2, 3)
NEIGHBOR_LEVELS = (1, 2)
UTILITY_KINDS = ("retain_mmlu", "retain_bbh", "truthful", "triviaqa", "fluency")

class RWKUDataError(ValueError):
    """A data file exists but cannot be used (malformed JSON, wrong shape, missing keys)."""


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RWKUTarget:
    """One unlearning target: ``index`` is RWKU's 1-based id, ``name`` the person (NFC)."""

    index: int
    name: str
    dirname: str  # the directory name exactly as listed on disk ("" for the hub source)

    @property
    def key(self) -> str:
        """Stable identifier used in results: ``<index>_<Name>`` with NFC characters."""
        return f"{self.index}_{self.name.replace(' ', '_')}"


@dataclass(frozen=True)
class Probe:
    """A forget or neighbor probe. ``level``: 1 fill-in-the-blank (``type`` "cloze"),
    2 question-answer, 3 adversarial attack (``type`` names the attack)."""

    query: str
    answer: str
    level: int
    type: str
    target: str  # the unlearning target (RWKU's ``subject``)
    split: str  # "forget" or "neighbor"
    neighbor: Optional[str] = None  # the neighbouring entity (neighbor probes only)
    target_index: Optional[int] = None


@dataclass(frozen=True)
class MIAText:
    text: str
    target: str
    member: bool  # True: forget_mia (about the target); False: retain_mia
    ngram: Optional[int] = None


@dataclass(frozen=True)
class MMLUItem:
    question: str
    choices: Tuple[str, ...]
    answer: int
    task: str
    examples: Tuple[Dict[str, Any], ...] = ()  # few-shot dev examples (question/choices/answer)


@dataclass(frozen=True)
class BBHItem:
    question: str
    answer: str
    task: str
    cot: str  # the task's chain-of-thought few-shot prompt


@dataclass(frozen=True)
class TruthfulQAItem:
    question: str
    mc1_choices: Tuple[str, ...]
    mc1_labels: Tuple[int, ...]
    mc2_choices: Tuple[str, ...]
    mc2_labels: Tuple[int, ...]


@dataclass(frozen=True)
class TriviaQAItem:
    question: str
    answers: Tuple[str, ...]
