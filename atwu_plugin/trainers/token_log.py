"""Writes a sample of per-token weights during training, for heatmaps and span metrics.

One JSONL record per logged sample: ``{"step", "sample", "tokens", "weights", "kinds"}``
over the answer tokens of the sample (kinds from ``atwu_plugin.tokens``).
"""

import json
import os
from typing import Optional

import torch
from transformers import TrainerCallback

from atwu_plugin.losses.tokens import answer_mask


class TokenWeightLogger(TrainerCallback):
    def __init__(self, trainer, path: str, every: int = 10, n_samples: int = 4):
        if every < 1 or n_samples < 1:
            raise ValueError(f"token_log: every and n_samples must be >= 1, got every={every}, n_samples={n_samples}")
        self.trainer = trainer
        self.path = path
        self.every = every
        self.n_samples = n_samples
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def wants(self, step: int) -> bool:
        return step % self.every == 0

    def on_step_end(self, args, state, control, **kwargs):
        batch = getattr(self.trainer, "latest_token_weights", None)
        if batch is None or not self.trainer.is_world_process_zero():
            return
        self.trainer.latest_token_weights = None
        tokenizer = self.trainer.host_tokenizer
        with open(self.path, "a", encoding="utf-8") as f:
            for record in _records(batch, tokenizer, self.n_samples, state.global_step):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _records(batch: dict, tokenizer, n_samples: int, step: int):
    mask = answer_mask(batch["labels"])
    kinds: Optional[torch.Tensor] = batch.get("token_kind")
    for b in range(min(n_samples, mask.shape[0])):
        pos = mask[b].nonzero().squeeze(-1)
        ids = batch["labels"][b, pos].tolist()
        yield {
            "step": step,
            "sample": int(batch["index"][b]) if batch.get("index") is not None else b,
            "tokens": tokenizer.convert_ids_to_tokens(ids) if tokenizer is not None else [str(i) for i in ids],
            "text_tokens": [tokenizer.decode([i]) for i in ids] if tokenizer is not None else None,
            "weights": [round(float(x), 5) for x in batch["weights"][b, pos]],
            "kinds": kinds[b, pos].tolist() if kinds is not None else None,
        }
