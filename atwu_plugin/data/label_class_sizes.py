"""Class sizes of a token-label source per token type (stop-word, punctuation, capitalised,
other): how the model-free word labels and the retain-model proxy labels differ in *what*
they call specific (the design notes: a small retain model's proxy marks most stop-words specific).

Works for any per-position kinds aligned with ``encode_qa``'s labels (``token_kind`` or
``token_kind_proxy`` of a ``QADataset`` item); token types follow ``tofu_labels.token_type``.
The appended eos is counted apart (``eos``), as in ``tofu_labels.label_stats``.
"""

from collections import Counter
from typing import Dict, List, Sequence

from atwu_plugin.data.encoding import tokenize_qa
from atwu_plugin.data.tofu_labels import TOKEN_TYPES, token_type, word_cores
from atwu_plugin.tokens import KIND_IGNORE, KIND_NAMES, KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE

_KINDS = (KIND_SPECIFIC, KIND_TEMPLATE, KIND_IGNORE)


def answer_token_types(record: dict, tokenizer, template_args: dict, max_length: int) -> List[str]:
    """The token type of every position of ``prompt + answer`` as ``encode_qa`` tokenizes it
    (``"eos"`` for an end-of-sequence token and a chat template's end-of-turn tokens after the
    answer; positions past the end are the appended eos)."""
    answer = record["answer"]
    tok, _, start, _ = tokenize_qa(tokenizer, template_args, record["question"], answer, max_length, offsets=True)
    cores = word_cores(answer)
    types = []
    for tid, (s, e) in zip(tok["input_ids"], tok["offset_mapping"]):
        a, b = max(s - start, 0), min(e - start, len(answer))
        after = s >= start + len(answer) and s > 0
        types.append("eos" if tid == tokenizer.eos_token_id or after else token_type(answer, a, b, cores))
    return types


def class_sizes_by_type(records: Sequence[dict], kinds_rows: Sequence[Sequence[int]], tokenizer,
                        template_args: dict, max_length: int) -> Dict[str, dict]:
    """``{token type: {specific, generic, unlabelled, total}}`` plus ``all`` and ``eos``, over
    the answer positions of ``kinds_rows`` (one row per record, aligned with its labels)."""
    if len(records) != len(kinds_rows):
        raise ValueError(f"{len(records)} records but {len(kinds_rows)} rows of kinds")
    names = {KIND_SPECIFIC: "specific", KIND_TEMPLATE: "generic", KIND_IGNORE: "unlabelled"}
    counts = {t: Counter() for t in (*TOKEN_TYPES, "eos")}
    for i, (record, row) in enumerate(zip(records, kinds_rows)):
        types = answer_token_types(record, tokenizer, template_args, max_length)
        for pos, kind in enumerate(row):
            kind = int(kind)
            if kind == KIND_NONE:
                continue
            if kind not in names:
                raise ValueError(f"record {i}: position {pos}: kind {kind} ({KIND_NAMES.get(kind, '?')}); "
                                 "expected specific, template or ignore")
            counts[types[pos] if pos < len(types) else "eos"][names[kind]] += 1
    table = {t: {n: c[n] for n in names.values()} | {"total": sum(c.values())} for t, c in counts.items()}
    total = Counter()
    for t in TOKEN_TYPES:
        total.update(counts[t])
    table["all"] = {n: total[n] for n in names.values()} | {"total": sum(total.values())}
    return table
