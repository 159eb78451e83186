"""Tokenize one QA pair exactly like OpenUnlearning, plus a per-token ground-truth kind.

Tokenization follows OU's non-chat ``preprocess_chat_instance`` (training mode, no few-shot):
the prompt is ``[system_prompt_with_special_tokens] + user_start_tag + question +
user_end_tag + asst_start_tag``; ``prompt + answer`` and ``prompt`` are tokenized separately
with special tokens and truncation to ``max_length``; eos is appended unless already last;
labels are ``-100`` on the first ``len(prompt_ids)`` positions (even when the two
tokenizations disagree at the boundary, as OU does).

Token kinds (aligned with ``labels``; see ``atwu_plugin.losses.tokens``), from the character
spans of the answer and the fast tokenizer's offsets:
  * positions that are not answer tokens (prompt, position 0): ``KIND_NONE``;
  * ``spans is None``: every answer token ``KIND_IGNORE`` (no ground truth);
  * the eos token: ``KIND_TEMPLATE``;
  * a token covering no answer character (it lies in the prompt because of a boundary
    mismatch): ``KIND_IGNORE``;
  * a token whose answer characters are all whitespace: ``KIND_TEMPLATE``;
  * otherwise, over its non-whitespace answer characters: ``KIND_SPECIFIC`` if any of them
    is specific (a token that carries part of a fact leaks the fact), else the most frequent
    kind, ties going to the kind that occurs first in the token.
"""

from collections import Counter
from dataclasses import dataclass, fields
from typing import Optional, Sequence

import torch

from atwu_plugin.data.generator import validate_spans
from atwu_plugin.data.labels import KIND_IGNORE, KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.losses.tokens import IGNORE_INDEX


@dataclass
class EncodedQA:
    input_ids: torch.Tensor  # [T] long
    labels: torch.Tensor  # [T] long, IGNORE_INDEX on the prompt
    attention_mask: torch.Tensor  # [T] long, all ones
    token_kind: torch.Tensor  # [T] long, aligned with labels
    truncated: bool  # the answer was cut by max_length

    # mapping-style access too (enc["labels"], dict(enc)), for code written against dict items
    def keys(self):
        return [f.name for f in fields(self)]

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def as_item(self, index: int = -1) -> dict:
        return {"input_ids": self.input_ids, "labels": self.labels, "attention_mask": self.attention_mask,
                "token_kind": self.token_kind, "index": index}


def wrap_prompt(template_args: dict, question: str) -> str:
    """OU's non-chat prompt for a single question (no few-shot examples)."""
    if template_args.get("apply_chat_template", False):
        raise NotImplementedError(
            "encode_qa supports template_args with apply_chat_template=False only (OU's tag-based "
            "template); chat templates are not implemented")
    system = template_args.get("system_prompt_with_special_tokens") or ""
    return system + template_args["user_start_tag"] + question + template_args["user_end_tag"] + \
        template_args["asst_start_tag"]


def token_kind_of(chars: str, kinds: Sequence[int]) -> int:
    """Kind of a token covering answer characters ``chars`` whose kinds are ``kinds``."""
    solid = [k for c, k in zip(chars, kinds) if not c.isspace()]
    if not solid:
        return KIND_TEMPLATE
    if KIND_SPECIFIC in solid:
        return KIND_SPECIFIC
    counts = Counter(solid)  # insertion order = first occurrence, so max() breaks ties by it
    return max(counts, key=counts.get)


def char_kinds(answer: str, spans) -> list:
    """Per-character kinds of ``answer`` from a span tiling (validated)."""
    kinds = []
    for start, end, kind in validate_spans(answer, spans):
        kinds += [kind] * (end - start)
    return kinds


def encode_qa(tokenizer, template_args: dict, question: str, answer: str, max_length: int = 256,
              spans: Optional[list] = None) -> EncodedQA:
    """Encode one QA pair as OU does, with per-token kinds from ``spans`` (see module doc)."""
    prompt = wrap_prompt(template_args, question)
    full = prompt + answer
    try:  # lone surrogates (possible from JSON escapes) would fail deep inside the tokenizer
        full.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"question/answer is not valid Unicode (lone surrogate at {e.start})") from None
    if spans is not None and not getattr(tokenizer, "is_fast", False):
        raise ValueError("token kinds need a fast tokenizer (offset mapping); pass spans=None for a slow one")
    enc = tokenizer(full, add_special_tokens=True, max_length=max_length, truncation=True,
                    return_offsets_mapping=spans is not None)
    chat_ids = list(enc["input_ids"])
    prompt_ids = tokenizer(prompt, add_special_tokens=True, max_length=max_length,
                           truncation=True)["input_ids"]
    # only a full-length result can have been cut; re-tokenize without truncation to know
    truncated = len(chat_ids) >= max_length and \
        len(tokenizer(full, add_special_tokens=True)["input_ids"]) > len(chat_ids)
    n_tokenized = len(chat_ids)
    if chat_ids[-1] != tokenizer.eos_token_id:
        chat_ids.append(tokenizer.eos_token_id)
    n_prompt = len(prompt_ids)
    # [:len] only matters if the prompt alone tokenizes longer than prompt + answer
    labels = ([IGNORE_INDEX] * n_prompt + chat_ids[n_prompt:])[: len(chat_ids)]

    kinds = [KIND_NONE] * len(chat_ids)
    per_char = char_kinds(answer, spans) if spans is not None else None
    for t in range(max(1, n_prompt), len(chat_ids)):
        if per_char is None:
            kinds[t] = KIND_IGNORE
        elif t >= n_tokenized:  # the eos we appended
            kinds[t] = KIND_TEMPLATE
        else:
            start, end = enc["offset_mapping"][t]
            a, b = max(start - len(prompt), 0), min(end - len(prompt), len(answer))
            if b > a:
                kinds[t] = token_kind_of(answer[a:b], per_char[a:b])
            else:
                kinds[t] = KIND_TEMPLATE if chat_ids[t] == tokenizer.eos_token_id else KIND_IGNORE

    def long(x):
        return torch.tensor(x, dtype=torch.long)
    return EncodedQA(long(chat_ids), long(labels), long([1] * len(chat_ids)), long(kinds), truncated)
