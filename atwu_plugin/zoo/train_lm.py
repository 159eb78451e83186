"""A small deterministic causal-LM fitting loop used to *build* the tiny models.

Building the benchmark's base/target/retain models is data preparation, not unlearning: a
plain loop (AdamW, linear warm-up, cosine decay) over pre-encoded sequences is faster on
2 CPU cores than ``transformers.Trainer`` and keeps the cold build within minutes.
"""

import math
from dataclasses import dataclass
from typing import List, Sequence

import torch
from tqdm.auto import tqdm

from atwu_plugin.data.collator import TokenLabelCollator


@dataclass
class FitConfig:
    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    seed: int = 0


def _length_grouped(order: List[int], lengths: List[int], batch_size: int, gen: torch.Generator) -> List[List[int]]:
    """Batches of similar-length items (less padding on variable-length real text): sort
    shuffled chunks of 50 batches by length, cut them into batches, shuffle the batches."""
    chunk = 50 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def fit_lm(model: torch.nn.Module, items: Sequence[dict], pad_token_id: int, cfg: FitConfig, desc: str = "fit",
           length_grouped: bool = False) -> List[float]:
    """Train ``model`` on encoded items (``input_ids``/``labels``/``attention_mask``); returns the
    per-epoch mean loss. Deterministic for a fixed seed on CPU. ``length_grouped`` batches
    items of similar length together (a keyword, not a ``FitConfig`` field, so the cache keys
    of existing zoos do not change)."""
    collate = TokenLabelCollator(pad_token_id)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(items) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(cfg.warmup_frac * total))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    lengths = [len(it["input_ids"]) for it in items]
    model.train()
    history = []
    bar = tqdm(total=total, desc=desc, leave=False, mininterval=2.0, disable=None)  # None: off when not a TTY
    for _ in range(cfg.epochs):
        order = torch.randperm(len(items), generator=gen).tolist()
        if length_grouped:
            batches = _length_grouped(order, lengths, cfg.batch_size, gen)
        else:
            batches = [order[start : start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)]
        epoch_loss = 0.0
        for batch_ids in batches:
            batch = collate([items[i] for i in batch_ids])
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            epoch_loss += out.loss.item()
            bar.update(1)
        history.append(epoch_loss / steps_per_epoch)
        bar.set_postfix(loss=f"{history[-1]:.3f}")
    bar.close()
    model.eval()
    return history
