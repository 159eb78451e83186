"""Tokenize one QA pair exactly like OpenUnlearning, plus a per-token ground-truth kind.

Tokenization follows OU's non-chat ``preprocess_chat_instance`` (training mode, no few-shot):
the prompt is ``[system_prompt_with_special_tokens] + user_start_tag + question +
user_end_tag + asst_start_tag``; ``prompt + answer`` and ``prompt`` are tokenized separately
with special tokens and truncation to ``max_length``; eos is appended unless already last;
labels are ``-100`` on the first ``len(prompt_ids)`` positions (even when the two
tokenizations disagree at the boundary, as OU does).

With ``apply_chat_template=True`` (real chat models, e.g. the zoo's SmolLM2) it follows OU's
chat branch: the conversation ``[system_prompt] + user question + assistant answer`` goes
through ``tokenizer.apply_chat_template`` (``date_string`` passed on when set), the prompt is
the same conversation without the answer with ``add_generation_prompt=True``, and eos is
appended unless already last (SmolLM2's turn ends ``<|im_end|>\n``, so the labels end with
``<|im_end|>``, ``\n``, ``<|im_end|>``, exactly as in OU). One deliberate difference: OU does
not truncate chat encodings; here they are cut to ``max_length`` like the plain ones (and
``truncated`` says so), so with a ``max_length`` above the longest sample the ids are OU's.
Character offsets come from tokenizing the rendered chat text, which must give the same ids
as ``apply_chat_template`` (checked: a ``ValueError`` otherwise).

Token kinds (aligned with ``labels``; see ``atwu_plugin.losses.tokens``), from the character
spans of the answer and the fast tokenizer's offsets:
  * positions that are not answer tokens (prompt, position 0): ``KIND_NONE``;
  * ``spans is None``: every answer token ``KIND_IGNORE`` (no ground truth);
  * the eos token: ``KIND_TEMPLATE``;
  * a token covering no answer character: ``KIND_TEMPLATE`` if it lies after the answer (a
    chat template's end-of-turn tag), else ``KIND_IGNORE`` (it lies in the prompt because of
    a boundary mismatch);
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
from atwu_plugin.tokens import IGNORE_INDEX, KIND_IGNORE, KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE


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
    """OU's non-chat prompt for a single question (no few-shot examples); chat templates need
    the tokenizer: ``chat_texts``."""
    if template_args.get("apply_chat_template", False):
        raise NotImplementedError(
            "wrap_prompt renders template_args with apply_chat_template=False only (OU's tag-based "
            "template); for a chat template use chat_texts(tokenizer, template_args, question, answer)")
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


def _chat_messages(template_args: dict, question: str, answer: Optional[str]) -> list:
    chat = [{"role": "system", "content": template_args["system_prompt"]}] if template_args.get("system_prompt") else []
    chat.append({"role": "user", "content": question})
    if answer is not None:
        chat.append({"role": "assistant", "content": answer})
    return chat


def chat_texts(tokenizer, template_args: dict, question: str, answer: str):
    """``(prompt_text, full_text, answer_start)`` of OU's chat branch: the rendered prompt
    (ending with the generation prompt), the rendered conversation with the answer, and the
    answer's character offset in the latter. ``ValueError`` if the template does not render
    the prompt as a prefix of the conversation followed by the answer verbatim (token kinds
    would be misaligned)."""
    kw = {"date_string": template_args["date_string"]} if template_args.get("date_string") is not None else {}
    prompt = tokenizer.apply_chat_template(_chat_messages(template_args, question, None), tokenize=False,
                                           add_generation_prompt=True, **kw)
    full = tokenizer.apply_chat_template(_chat_messages(template_args, question, answer), tokenize=False,
                                         add_generation_prompt=False, **kw)
    if not full.startswith(prompt) or not full[len(prompt):].startswith(answer):
        raise ValueError("chat template: the rendered conversation does not start with the rendered prompt "
                         "followed by the answer verbatim; token kinds cannot be aligned")
    return prompt, full, len(prompt)


def _tokenize_chat(tokenizer, template_args, question, answer, max_length, offsets):
    """OU's chat-branch ids (``apply_chat_template(tokenize=True)``), with offsets from the
    rendered text, which must tokenize to the same ids."""
    prompt, full, answer_start = chat_texts(tokenizer, template_args, question, answer)
    kw = {"date_string": template_args["date_string"]} if template_args.get("date_string") is not None else {}
    ou_ids = list(tokenizer.apply_chat_template(_chat_messages(template_args, question, answer), tokenize=True,
                                                add_generation_prompt=False, **kw))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=offsets)
    if list(enc["input_ids"]) != ou_ids:
        raise ValueError("chat template: tokenizing the rendered conversation gives other ids than "
                         "apply_chat_template(tokenize=True); token kinds cannot be aligned")
    prompt_ids = list(tokenizer.apply_chat_template(_chat_messages(template_args, question, None), tokenize=True,
                                                    add_generation_prompt=True, **kw))
    truncated = len(ou_ids) > max_length
    cut = {k: list(v)[:max_length] for k, v in enc.items()}
    return cut, prompt_ids[:max_length], answer_start, truncated


def tokenize_qa(tokenizer, template_args: dict, question: str, answer: str, max_length: int = 256,
                offsets: bool = False):
    """``(enc, prompt_ids, answer_start, truncated)`` of OU's tokenization of one QA pair, before
    eos is appended: ``enc`` holds ``input_ids`` (and ``offset_mapping`` into the rendered text
    if ``offsets``), ``answer_start`` is the answer's character offset in that text."""
    if template_args.get("apply_chat_template", False):
        return _tokenize_chat(tokenizer, template_args, question, answer, max_length, offsets)
    prompt = wrap_prompt(template_args, question)
    full = prompt + answer
    enc = tokenizer(full, add_special_tokens=True, max_length=max_length, truncation=True,
                    return_offsets_mapping=offsets)
    prompt_ids = tokenizer(prompt, add_special_tokens=True, max_length=max_length, truncation=True)["input_ids"]
    # only a full-length result can have been cut; re-tokenize without truncation to know
    truncated = len(enc["input_ids"]) >= max_length and \
        len(tokenizer(full, add_special_tokens=True)["input_ids"]) > len(enc["input_ids"])
    return enc, prompt_ids, len(prompt), truncated


def encode_qa(tokenizer, template_args: dict, question: str, answer: str, max_length: int = 256,
              spans: Optional[list] = None) -> EncodedQA:
    """Encode one QA pair as OU does, with per-token kinds from ``spans`` (see module doc)."""
    try:  # lone surrogates (possible from JSON escapes) would fail deep inside the tokenizer
        (question + answer).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"question/answer is not valid Unicode (lone surrogate at {e.start})") from None
    if spans is not None and not getattr(tokenizer, "is_fast", False):
        raise ValueError("token kinds need a fast tokenizer (offset mapping); pass spans=None for a slow one")
    enc, prompt_ids, answer_start, truncated = tokenize_qa(tokenizer, template_args, question, answer, max_length,
                                                           offsets=spans is not None)
    chat_ids = list(enc["input_ids"])
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
            a, b = max(start - answer_start, 0), min(end - answer_start, len(answer))
            if b > a:
                kinds[t] = token_kind_of(answer[a:b], per_char[a:b])
            elif chat_ids[t] == tokenizer.eos_token_id or start >= answer_start + len(answer):
                kinds[t] = KIND_TEMPLATE
            else:
                kinds[t] = KIND_IGNORE

    def long(x):
        return torch.tensor(x, dtype=torch.long)
    return EncodedQA(long(chat_ids), long(labels), long([1] * len(chat_ids)), long(kinds), truncated)
