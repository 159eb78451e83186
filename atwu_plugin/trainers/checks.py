"""Checks a trainer runs on what it is given, before training starts: one clear error line
instead of an index error deep inside a forward.

* ``check_vocab(tokenizer, model)``: token ids the tokenizer can produce must index the
  model's embedding and output tables (otherwise an ``IndexError`` deep inside the forward
  on CPU, a device-side assert on CUDA).
* ``check_has_answer_tokens(dataset, name)``: every sample has at least one answer token
  (a label != -100 after position 0); a sample without one contributes nothing and makes
  per-sample normalizers divide by zero.

The checks a host runs on a config before anything is built are in ``atwu_plugin.hosts.checks``.
"""

from typing import Optional

from atwu_plugin.tokens import IGNORE_INDEX


# ---- models and tokenizers -------------------------------------------------------------------
def _rows(module) -> Optional[int]:
    weight = getattr(module, "weight", None)
    return None if weight is None else int(weight.shape[0])


def check_vocab(tokenizer, model, what: str = "model") -> None:
    """Raise if the tokenizer can produce ids the model cannot embed or predict.

    ``len(tokenizer)`` (base vocabulary + added tokens) must be <= the rows of the model's
    input embedding and output (lm_head) tables; a larger model table (padded vocabulary)
    is fine. Special token ids are checked too."""
    n_tok = len(tokenizer)
    sizes = {}
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in is not None and get_in() is not None:
        sizes["input embedding"] = _rows(get_in())
    if get_out is not None and get_out() is not None:
        sizes["output embedding (lm_head)"] = _rows(get_out())
    config_vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not any(sizes.values()) and config_vocab is not None:
        sizes["config.vocab_size"] = int(config_vocab)
    for table, rows in sizes.items():
        if rows is not None and n_tok > rows:
            raise ValueError(
                f"tokenizer/model vocabulary mismatch: the tokenizer has {n_tok} tokens (ids 0..{n_tok - 1}) "
                f"but the {what}'s {table} has {rows} rows (config.vocab_size={config_vocab}); "
                f"ids >= {rows} would index out of range. Use the tokenizer the {what} was trained with "
                "(or resize its embeddings)")
    limit = min((r for r in sizes.values() if r is not None), default=None)
    if limit is not None:
        for attr in ("pad_token_id", "eos_token_id", "bos_token_id", "unk_token_id"):
            tid = getattr(tokenizer, attr, None)
            if isinstance(tid, int) and tid >= limit:
                raise ValueError(f"tokenizer/model vocabulary mismatch: tokenizer.{attr}={tid} but the {what} "
                                 f"has {limit} embedding rows (ids must be < {limit})")


# ---- datasets --------------------------------------------------------------------------------
def _leaf_items(item, path=()):
    """``(key path, leaf item)`` for an item or a dict of items ({0: .., 1: ..})."""
    if isinstance(item, dict) and "labels" not in item and "input_ids" not in item:
        for key, sub in item.items():
            yield from _leaf_items(sub, path + (key,))
    else:
        yield path, item


def check_has_answer_tokens(dataset, name: str = "train") -> None:
    """Raise a ``ValueError`` naming the first sample (its position and ``index``) whose
    labels mask every position: it has no answer token to unlearn or retain.

    A forget/retain pair dataset (``.forget`` and ``.retain`` attributes, as
    ``ForgetRetainDataset`` and OU's) is checked part by part; an empty dataset is an error.
    Costs one pass over the items (free for ``QADataset``, which encodes up front)."""
    if hasattr(dataset, "forget") and hasattr(dataset, "retain"):
        for part in ("forget", "retain"):
            if getattr(dataset, part) is not None:  # OU's pair dataset may have no retain set
                check_has_answer_tokens(getattr(dataset, part), part if name == "train" else f"{name}.{part}")
        return
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{name} dataset is empty: expected at least one sample")
    for i in range(n):
        for path, item in _leaf_items(dataset[i]):
            labels = item.get("labels") if isinstance(item, dict) else None
            if labels is None:
                continue
            labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)
            if not any(y != IGNORE_INDEX for y in labels[1:]):
                where = "".join(f"[{k}]" for k in path)
                index = item.get("index", i)
                raise ValueError(
                    f"{name} dataset: sample {i}{where} (index {int(index)}) has no answer token: all "
                    f"{len(labels)} labels are {IGNORE_INDEX} (masked). The prompt probably fills max_length; "
                    "raise max_length or remove the sample")
