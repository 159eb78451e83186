"""Callbacks that see the token weights of every training step: the JSONL token log (heatmaps)
and the span-alignment collector (span metrics), not trainer code.

``TokenWeightedUnlearn`` hands every forget batch and its weights to the callbacks that are
``TokenWeightCallback``s (``on_token_weights``, once per loss computation, so under gradient
accumulation every micro-batch); what they keep and report is theirs.

``TokenWeightLogger`` writes one JSONL record per logged sample: ``{"step", "sample",
"tokens", "weights", "kinds"}`` over the answer tokens of the sample (kinds from
``atwu_plugin.tokens``). ``span_metrics(trainer)`` is the one accessor of the span
metrics a run collected, under the names results report.
"""

import json
import os
from typing import Optional

import torch
from transformers import TrainerCallback

from atwu_plugin.losses.tokens import answer_mask

# what the results of every run report, None when the trainer collected nothing
SPAN_METRIC_DEFAULTS = {"span_auroc": None, "span_ap": None, "span_precision_at_k": None}


class TokenWeightCallback(TrainerCallback):
    """A callback that also receives each forget batch and its token weights."""

    def on_token_weights(self, trainer, forget: dict, weights: torch.Tensor) -> None:
        """``forget``: the batch (labels, token_kind, ...); ``weights``: ``[B, T]``, detached."""


class TokenWeightLogger(TokenWeightCallback):
    def __init__(self, trainer, path: str, every: int = 10, n_samples: int = 4):
        if every < 1 or n_samples < 1:
            raise ValueError(f"token_log: every and n_samples must be >= 1, got every={every}, n_samples={n_samples}")
        self.trainer = trainer
        self.path = path
        self.every = every
        self.n_samples = n_samples
        self.latest = None  # the last batch of a logged step, written at its end
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def wants(self, step: int) -> bool:
        return step % self.every == 0

    def on_token_weights(self, trainer, forget, weights):
        if self.wants(trainer.state.global_step + 1):
            keep = ("input_ids", "labels", "token_kind", "index")
            self.latest = {k: forget[k].detach().cpu() for k in keep if k in forget}
            self.latest["weights"] = weights.detach().cpu()

    def on_step_end(self, args, state, control, **kwargs):
        batch = self.latest
        if batch is None or not self.trainer.is_world_process_zero():
            return
        self.latest = None
        tokenizer = self.trainer.host_tokenizer
        with open(self.path, "a", encoding="utf-8") as f:
            for record in _records(batch, tokenizer, self.n_samples, state.global_step):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


class SpanAlignmentCollector(TokenWeightCallback):
    """Keeps the weight and ground-truth kind of every labelled answer token a run trained on
    (cheap: answer tokens only, on CPU), per label source: ``token_kind`` and, when the forget
    batches carry it, ``token_kind_proxy`` (retain-model proxy labels)."""

    SOURCES = {"token_kind": "", "token_kind_proxy": "_proxy"}  # batch key -> metric name suffix

    def __init__(self):
        self.weights = {key: [] for key in self.SOURCES}
        self.kinds = {key: [] for key in self.SOURCES}
        self.samples = {key: [] for key in self.SOURCES}  # each token's sample index, if batches carry ``index``

    def on_token_weights(self, trainer, forget, weights):
        for key in self.SOURCES:
            kinds = forget.get(key)
            if kinds is not None:
                mask = answer_mask(forget["labels"])
                self.weights[key].append(weights[mask].detach().float().cpu())
                self.kinds[key].append(kinds[mask].detach().cpu())
                index = forget.get("index")
                self.samples[key].append(None if index is None else index.cpu()[:, None].expand_as(mask)[mask.cpu()])

    def metrics(self) -> dict:
        """Span alignment (AUROC/AP/precision@k vs ground-truth kinds, ``span_*`` names) of
        every weight collected; the proxy source's with a ``_proxy`` suffix."""
        from atwu_plugin.evals.span_alignment import span_alignment

        out = {}
        for key, suffix in self.SOURCES.items():
            if self.weights[key]:
                found = span_alignment(torch.cat(self.weights[key]), torch.cat(self.kinds[key]))
                out.update({(k if k.startswith("span_") else f"span_{k}") + suffix: v for k, v in found.items()})
        return out

    def bootstrap(self) -> dict:
        """``{"span_auroc" (and "span_auroc_proxy"): {"n_samples", "seed", "values"}}``: the span
        AUROC under the fixed resamplings of the forget samples of ``evals.sample_bootstrap``
        (NaN draws as None), for a paired interval over samples; empty when the batches carried no
        sample ``index``."""
        from atwu_plugin.evals.sample_bootstrap import SEED, auroc_replicates, sample_draws
        from atwu_plugin.tokens import KIND_SPECIFIC

        out = {}
        for key, suffix in self.SOURCES.items():
            if not self.weights[key] or any(s is None for s in self.samples[key]):
                continue
            kinds, samples = torch.cat(self.kinds[key]).numpy(), torch.cat(self.samples[key]).numpy()
            n = int(samples.max()) + 1 if samples.size else 0
            labelled = kinds >= 0
            if n == 0 or not labelled.any():
                continue
            values = auroc_replicates(torch.cat(self.weights[key]).numpy()[labelled], kinds[labelled] == KIND_SPECIFIC,
                                      samples[labelled], sample_draws(n))
            out["span_auroc" + suffix] = {"n_samples": n, "seed": SEED,
                                          "values": [None if v != v else round(float(v), 6) for v in values]}
        return out


def span_metrics(trainer) -> dict:
    """The span metrics of a trained ``trainer``: ``span_auroc``, ``span_ap``,
    ``span_precision_at_k`` (None without labels or for weights that rank no tokens, e.g. a
    trainer without a ``SpanAlignmentCollector``), plus ``span_n_pos``/``span_n_neg`` and the
    ``_proxy`` metrics when collected."""
    out = dict(SPAN_METRIC_DEFAULTS)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, SpanAlignmentCollector):
            out.update(callback.metrics())
    return out


def span_bootstrap(trainer) -> dict:
    """The span AUROC replicates of a trained ``trainer`` (``SpanAlignmentCollector.bootstrap``),
    empty when it collected none."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, SpanAlignmentCollector):
            return callback.bootstrap()
    return {}


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
