"""RWKU's probe prompts: the instructions its evaluation scripts wrap a probe in."""

from __future__ import annotations

from typing import Tuple

from atwu_plugin.data.rwku_records import Probe

# RWKU's instructions (eval_forget.py / eval_neighbor.py, jinzhuoran/RWKU): the user message
# wraps the query; generation continues after the assistant tag followed by "Answer:".
RWKU_CLOZE_INSTRUCTION = "Please complete the blank in the following question.\nQuestion: {}\n"
RWKU_QA_INSTRUCTION = "Please briefly answer the following question.\nQuestion: {}\n"
RWKU_ICL_INSTRUCTION = "Please briefly answer the following question.\n{}\n"
RWKU_SUFFIX_INSTRUCTION = "Please briefly answer the following question.\nQuestion: {}"
RWKU_ANSWER_PREFIX = "Answer:"


def probe_prompt(probe: Probe, style: str = "rwku") -> Tuple[str, str]:
    """``(user message, assistant prefix)`` for a probe.

    ``style="rwku"``: RWKU's wording. Level 1 asks to complete the blank; levels 2/3 ask for a
    brief answer; the level-3 "incontext learning" probes carry their own Q/A shots (no
    "Question:" label), and the "affirmative suffix" probes end without a newline and get no
    "Answer:" prefix, so the model continues the affirmative suffix directly.
    ``style="plain"``: the bare query, no prefix (for small models trained on plain QA)."""
    if style == "plain":
        return probe.query, ""
    if style != "rwku":
        raise ValueError(f"unknown probe prompt style {style!r}; expected 'rwku' or 'plain'")
    if probe.level == 1:
        return RWKU_CLOZE_INSTRUCTION.format(probe.query), RWKU_ANSWER_PREFIX
    if probe.level == 3 and probe.type == "affirmative suffix":
        return RWKU_SUFFIX_INSTRUCTION.format(probe.query), ""
    if probe.level == 3 and probe.type == "incontext learning":
        return RWKU_ICL_INSTRUCTION.format(probe.query), RWKU_ANSWER_PREFIX
    return RWKU_QA_INSTRUCTION.format(probe.query), RWKU_ANSWER_PREFIX
