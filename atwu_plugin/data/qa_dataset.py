"""Torch datasets over TOFU-style records, with per-token kinds (OU's item layout).

Items are ``{input_ids, labels, attention_mask, token_kind, index}``; a list-valued answer
(e.g. ``perturbed_answer``) gives ``{0: item, 1: item, ...}`` like OU's ``QADataset``.
Records are encoded once at construction: the set is small, workers then only index, and
the number of truncated samples is known up front.
"""

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from atwu_plugin.data.encoding import encode_qa
from atwu_plugin.data.generator import load_split
from atwu_plugin.tokens import IGNORE_INDEX

logger = logging.getLogger(__name__)

# span fields and the answer field they tile; pairing a span field with another answer
# field would label the wrong text
_SPANS_OF = {"spans": "answer", "paraphrased_spans": "paraphrased_answer"}


class QADataset(Dataset):
    def __init__(self, records: Union[Sequence[dict], str, Path], tokenizer, template_args: dict,
                 max_length: int = 256, answer_key: str = "answer", spans_key: Optional[str] = "spans",
                 question_key: str = "question", name: Optional[str] = None):
        if isinstance(records, (str, Path)):
            name = name or str(records)
            records = load_split(records)
        self.name = name or "QADataset"
        if spans_key in _SPANS_OF and _SPANS_OF[spans_key] != answer_key:
            raise ValueError(f"spans_key={spans_key!r} tiles {_SPANS_OF[spans_key]!r}, "
                             f"not answer_key={answer_key!r}; pass the matching spans key or spans_key=None")
        self.max_length = max_length
        self.n_truncated = 0
        self.n_answer_lost = 0
        self.items = []
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise ValueError(f"{self.name}: record {index}: expected an object with keys "
                                 f"{question_key}, {answer_key}, got {type(record).__name__}")
            for key in (question_key, answer_key):
                if key not in record:
                    raise ValueError(f"{self.name}: record {index}: missing field {key!r} "
                                     f"(expected keys: {question_key}, {answer_key})")
            answer = record[answer_key]
            spans = record.get(spans_key) if spans_key else None
            if isinstance(answer, str):
                item = self._encode(tokenizer, template_args, record[question_key], answer, spans, index)
            elif isinstance(answer, list):
                if spans is not None and len(spans) != len(answer):
                    raise ValueError(f"record {index}: {spans_key!r} must hold one tiling per answer "
                                     f"in {answer_key!r}")
                item = {i: self._encode(tokenizer, template_args, record[question_key], a,
                                        None if spans is None else spans[i], index)
                        for i, a in enumerate(answer)}
            else:
                raise TypeError(f"{self.name}: record {index}: {answer_key!r} must be a string or a list of strings")
            self.items.append(item)
        if self.n_truncated:  # counted per encoded answer (a list-valued answer counts each option)
            lost = f", {self.n_answer_lost} of them entirely (only the eos is left)" if self.n_answer_lost else ""
            logger.warning("%s: %d of %d samples were truncated to max_length=%d tokens: the end of the answer is "
                           "cut%s; raise max_length to keep it", self.name, self.n_truncated, len(self.items),
                           max_length, lost)

    def _encode(self, tokenizer, template_args, question, answer, spans, index) -> dict:
        enc = encode_qa(tokenizer, template_args, question, answer, self.max_length, spans=spans)
        self.n_truncated += enc.truncated
        # cut so hard that no answer token is left: the only target is the appended eos
        self.n_answer_lost += bool(enc.truncated and answer and int((enc.labels[1:] != IGNORE_INDEX).sum()) <= 1)
        return enc.as_item(index)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        return self.items[idx]


class ForgetRetainDataset(Dataset):
    """Pairs every forget item with a retain item drawn at random; the draw for item ``i``
    depends only on ``(seed, i)``, so batches do not depend on worker order."""

    def __init__(self, forget: Dataset, retain: Dataset, seed: int = 0):
        if len(forget) == 0:
            raise ValueError("ForgetRetainDataset: the forget dataset is empty (nothing to unlearn)")
        if len(retain) == 0:
            raise ValueError("ForgetRetainDataset: the retain dataset is empty")
        self.forget, self.retain, self.seed = forget, retain, seed

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, idx: int) -> dict:
        gen = torch.Generator().manual_seed(_mix(self.seed, idx))
        j = int(torch.randint(len(self.retain), (1,), generator=gen))
        return {"forget": self.forget[idx], "retain": self.retain[j]}


def _mix(seed: int, idx: int) -> int:
    """Hash ``(seed, idx)`` to a generator seed (splitmix64). Torch's CPU generator keeps only
    the low 32 bits of its seed, so the two numbers must be mixed, not just concatenated."""
    x = (seed * 0x9E3779B97F4A7C15 + idx) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return (x ^ (x >> 31)) % 2**63
