"""Batched model calls shared by the TOFU and RWKU evaluators: greedy generation and scoring.

The evaluators turn records into token-id sequences and what comes back into metrics; the
functions here only run the model, in batches of consecutive inputs, and know neither
benchmark. Prompts are left-padded (the last position is every prompt's last token), whole
sequences right-padded, both through the training collator; padding is masked.

Two scoring conventions live side by side because each reproduces its benchmark's numbers:
``answer_avg_nll`` is OpenUnlearning's per-sample answer loss (labels with ``IGNORE_INDEX``,
the training code's ``token_logprobs``, float64 sums); ``sequence_logprobs`` is RWKU's
per-token ``log_softmax`` over a raw text (with the per-position mean/std Min-K%++ needs).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.losses.tokens import token_logprobs
from atwu_plugin.tokens import IGNORE_INDEX


def model_device(model) -> torch.device:
    """Where the model's parameters are (CPU for a parameterless stub)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model, device=None, dtype: Optional[torch.dtype] = None):
    """The model in eval mode, moved to ``device``/``dtype`` (None: left where it is);
    restores its training mode, device and dtype on exit."""
    was_training = model.training
    param = next(model.parameters(), None)
    orig_device, orig_dtype = (param.device, param.dtype) if param is not None else (None, None)
    target_device = torch.device(device) if device is not None else orig_device
    target_dtype = dtype if dtype is not None else orig_dtype
    moved = param is not None and (orig_device != target_device or orig_dtype != target_dtype)
    if moved:
        model.to(device=target_device, dtype=target_dtype)
    model.eval()
    try:
        yield model
    finally:
        if moved:
            model.to(device=orig_device, dtype=orig_dtype)
        model.train(was_training)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar counting inputs (disabled: a no-op with the same interface)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def pad(seqs: Sequence[Sequence[int]], pad_token_id: int, side: str, device) -> Dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[B, max_len]`` on ``device``, padded on ``side``."""
    batch = TokenLabelCollator(pad_token_id, padding_side=side)([{"input_ids": s} for s in seqs])
    return {k: v.to(device) for k, v in batch.items()}


def _batches(n: int, batch_size: int):
    return (range(start, min(start + batch_size, n)) for start in range(0, n, batch_size))


def forward_logits(model, batch: Mapping[str, torch.Tensor], **extra) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits


def _stop_at_tokens(token_ids: torch.Tensor, prompt_width: int):
    """HF stopping criterion: a row is done once it has generated any of ``token_ids``."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopAtTokens(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            return torch.isin(input_ids[:, prompt_width:], token_ids).any(dim=1)

    return StoppingCriteriaList([_StopAtTokens()])


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    eos_token_id,
    pad_token_id: int,
    prompt_pad_id: Optional[int] = None,
    stop_token_ids: Optional[torch.Tensor] = None,
    stop_strings: Sequence[str] = (),
    decode_kwargs: Optional[Mapping[str, Any]] = None,
    progress: bool = False,
    desc: str = "generate",
) -> List[str]:
    """Greedy completions of ``prompts`` (token ids), in input order.

    ``model.generate(do_sample=False, num_beams=1, max_new_tokens)`` on left-padded batches;
    a row stops at ``eos_token_id`` (an id or a list), at any of ``stop_token_ids`` (checked
    on the new tokens only) and at any of ``stop_strings`` (HF's string stop). Finished rows
    are filled with ``pad_token_id``; prompts are padded with ``prompt_pad_id`` (default
    ``pad_token_id``). Returns the new tokens decoded with ``skip_special_tokens=True`` plus
    ``decode_kwargs``; cutting at a stop string or token is the caller's post-processing."""
    device = model_device(model)
    prompt_pad = pad_token_id if prompt_pad_id is None else prompt_pad_id
    gen_kwargs = dict(
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=True,
    )
    if stop_strings:
        gen_kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    dec = dict(skip_special_tokens=True, **(decode_kwargs or {}))
    stop_ids = stop_token_ids.to(device) if stop_token_ids is not None else None
    texts: List[str] = []
    bar = progress_bar(len(prompts), desc, progress)
    for idx in _batches(len(prompts), batch_size):
        batch = pad([prompts[i] for i in idx], prompt_pad, "left", device)
        width = batch["input_ids"].shape[1]
        stopping = {"stopping_criteria": _stop_at_tokens(stop_ids, width)} if stop_ids is not None else {}
        out = model.generate(**batch, **gen_kwargs, **stopping)
        texts.extend(tokenizer.batch_decode(out[:, width:].cpu(), **dec))
        bar.update(len(idx))
    bar.close()
    return texts


@torch.no_grad()
def next_token_logits(
    model,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[int],
    *,
    batch_size: int,
    pad_token_id: int,
    progress: bool = False,
    desc: str = "next token",
) -> List[List[float]]:
    """Per prompt, the logits of ``candidates`` for the token that follows it (left-padded
    batches, position ids counted from each prompt's first real token)."""
    device = model_device(model)
    extra = {}
    if "num_logits_to_keep" in inspect.signature(model.forward).parameters:
        extra["num_logits_to_keep"] = 1
    cand = torch.tensor(candidates, dtype=torch.long)
    out: List[List[float]] = []
    bar = progress_bar(len(prompts), desc, progress)
    for idx in _batches(len(prompts), batch_size):
        batch = pad([prompts[i] for i in idx], pad_token_id, "left", device)
        pos = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        logits = forward_logits(model, batch, position_ids=pos, **extra)[:, -1]
        out.extend(logits.float().cpu()[:, cand].tolist())
        bar.update(len(idx))
    bar.close()
    return out


@torch.no_grad()
def sequence_logprobs(
    model,
    seqs: Sequence[Sequence[int]],
    *,
    batch_size: int,
    pad_token_id: int,
    with_stats: bool = False,
    progress: bool = False,
    desc: str = "score",
) -> list:
    """Per sequence ``s`` (at least 2 tokens): ``log p(s[t] | s[<t])`` for t = 1..len-1 as a
    float32 numpy array (``log_softmax`` of the float32 logits); with ``with_stats`` a tuple
    ``(logprobs, mu, sigma)`` adding the mean and std of ``log p(z)`` under each position's
    next-token distribution."""
    device = model_device(model)
    out = []
    bar = progress_bar(len(seqs), desc, progress)
    for idx in _batches(len(seqs), batch_size):
        batch = pad([seqs[i] for i in idx], pad_token_id, "right", device)
        logits = forward_logits(model, batch)
        for row, i in enumerate(idx):
            s = seqs[i]
            n = len(s)
            logp = torch.log_softmax(logits[row, : n - 1].float(), dim=-1)
            tgt = torch.tensor(s[1:], dtype=torch.long, device=logp.device)
            lp = logp.gather(-1, tgt[:, None]).squeeze(-1).cpu().numpy()
            if with_stats:
                p = logp.exp()
                mu = (p * logp).sum(-1)
                var = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12)
                out.append((lp, mu.cpu().numpy(), var.sqrt().cpu().numpy()))
            else:
                out.append(lp)
        bar.update(len(idx))
    bar.close()
    return out


@torch.no_grad()
def answer_avg_nll(
    model,
    features: Sequence[Mapping[str, torch.Tensor]],
    collate: Callable,
    *,
    batch_size: int,
    on_batch: Optional[Callable] = None,
    progress: bool = False,
    desc: str = "score",
) -> np.ndarray:
    """Per feature (``input_ids``, ``labels``, ...; batched by ``collate``) the mean answer
    loss ``sum_t -log p_t / n_t`` over its labels that are not ``IGNORE_INDEX``, float64.

    Batches are formed in order of length (stable sort), so a batch pads to the length of
    similar features rather than to the longest of a random group; the values come back in
    input order. ``on_batch(batch, logits, logp)`` sees every batch (``logp`` from
    ``token_logprobs``)."""
    device = model_device(model)
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    arr = np.empty(len(features), dtype=np.float64)
    bar = progress_bar(len(features), desc, progress)
    for idx in _batches(len(order), batch_size):
        rows = [order[j] for j in idx]
        batch = collate([features[i] for i in rows])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        logits = forward_logits(model, batch)
        logp = token_logprobs(logits, batch["labels"])
        n_tok = (batch["labels"] != IGNORE_INDEX).sum(-1).double()
        arr[rows] = (-logp.double().sum(-1) / n_tok).cpu().numpy()
        if on_batch is not None:
            on_batch(batch, logits, logp)
        bar.update(len(idx))
    bar.close()
    return arr


__all__ = [
    "answer_avg_nll",
    "eval_mode",
    "forward_logits",
    "greedy_generate",
    "model_device",
    "next_token_logits",
    "pad",
    "progress_bar",
    "sequence_logprobs",
]
