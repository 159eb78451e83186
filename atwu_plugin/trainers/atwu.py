"""``ATWU``: Alternating Token-Weighted Unlearning (ATWU.md).

    LM step:  min_theta  sum_t w_t l_t(theta) / sum_t w_t  +  alpha * L_r(theta)
    weights:  w_t = scorer(f_t), f_t = frozen initial-model features; the scorer takes its own
              Adam step(s) on the retain conflict of this step's forget tokens first
              (``atwu_plugin.weighting.atwu.ATWUWeighting``: all the algorithm lives there).

This file is glue: it feeds the live forward passes to the weighting state, runs the
one-off setup with the initial model, and saves/restores the scorer, banks and caches with
every checkpoint (safetensors + JSON, no pickle).
"""

import os
from dataclasses import fields

import torch

from atwu_plugin.losses.tokens import answer_mask, token_logprobs
from atwu_plugin.trainers.adapters import adapter_disabled
from atwu_plugin.trainers.base import host_rng_untouched, model_inputs
from atwu_plugin.trainers.config import plain
from atwu_plugin.trainers.token_weighted import TokenWeightedUnlearn
from atwu_plugin.utils.safe_state import load_state, save_state
from atwu_plugin.trainers.zero import WeightRows, all_gather_rows, shard_batches, world
from atwu_plugin.weighting.atwu import ATWUConfig, ATWUWeighting

STATE_PREFIX = "atwu_state"


def answer_tokens(dataset) -> int:
    """Answer tokens of a dataset of tokenized items (0 if its items carry no ``labels``): the
    rows ATWU's setup pass will offer the retain bank, so the bank is allocated once."""
    try:
        return sum(int(answer_mask(torch.as_tensor(dataset[i]["labels"])[None]).sum()) for i in range(len(dataset)))
    except (KeyError, TypeError, IndexError):
        return 0


class ATWU(TokenWeightedUnlearn):
    def __init__(self, *args, forget_loss=None, normalizer: str = "weight_sum", **kwargs):
        atwu_keys = {f.name for f in fields(ATWUConfig)}
        atwu_args = {k: plain(kwargs.pop(k)) for k in list(kwargs) if k in atwu_keys}
        self.atwu_cfg = ATWUConfig.from_dict(atwu_args)
        kwargs.pop("weighter", None)  # ATWU computes its own weights
        super().__init__(
            *args,
            forget_loss=forget_loss or {"name": "npo_token", "beta": 1.0},
            weighter="uniform",
            normalizer=normalizer,
            **kwargs,
        )
        self.atwu = None
        self._pending_state = None

    def _needs_ref_model(self) -> bool:
        # Reference log-probs of the forget set are cached at setup: only a KL retain loss
        # needs a live reference model.
        return self.retain_loss_fn.needs_ref

    def weights_are_learned_or_heuristic(self) -> bool:
        return True

    def _setup_weighter(self, model):  # the uniform placeholder needs nothing
        self._weighter_ready = True

    # ---- setup -----------------------------------------------------------------------------
    def _setup_atwu(self, model):
        cfg = self.accelerator.unwrap_model(model).config  # DDP / DeepSpeed engines wrap it
        self.atwu = ATWUWeighting(self.atwu_cfg, cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers + 1)
        rank, world_size = world()
        if world_size > 1:  # data parallel / ZeRO: one replicated scorer (trainers/zero.py)
            self.atwu.gather_rows, self.atwu.rank = all_gather_rows, rank
        if self._pending_state is not None:  # resuming: the saved state replaces the setup
            self.atwu.load_state_dict(self._pending_state)
            self._pending_state = None
            return
        was_training = model.training
        model.eval()

        def forward(batch):
            # the frozen initial model: with an adapter, the base model behind it (exact at
            # any step, not only at init; trainers/adapters.py)
            with adapter_disabled(self.accelerator.unwrap_model(model)):
                out = model(**model_inputs(batch), output_hidden_states=True)
            return out.logits, out.hidden_states

        self.atwu.setup(
            self._setup_share(self.train_dataset.retain),
            self._setup_share(self.train_dataset.forget),
            forward,
            self._output_embedding(model),
            retain_tokens=answer_tokens(self.train_dataset.retain),
        )
        model.train(was_training)

    def _setup_share(self, dataset):
        """The setup batches this rank runs: all of them in one process; with W ranks every
        W-th (``zero.shard_batches``), the results are all-gathered by the weighting."""
        bs = self.args.per_device_eval_batch_size
        batches = self.setup_batches(dataset, bs)
        rank, world_size = world()
        if world_size == 1:
            return batches
        pad = getattr(self.host_tokenizer, "pad_token_id", None) or 0
        dummy = self._prepare_inputs({  # one token, no answer token: a forward and no results
            "input_ids": torch.tensor([[pad]]), "attention_mask": torch.ones(1, 1, dtype=torch.long),
            "labels": torch.full((1, 1), -100), "index": torch.tensor([-1]),
        })
        return shard_batches(batches, -(-len(dataset) // bs), dummy)

    def _output_embedding(self, model):
        # read lazily, by label rows: under ZeRO-3 the weight is sharded and is gathered per lookup
        return WeightRows(self.accelerator.unwrap_model(model).get_output_embeddings().weight)

    # ---- loss ------------------------------------------------------------------------------
    def unlearning_loss(self, model, inputs):
        if self.atwu is None:
            # the scorer's initialization draws from torch's RNG: not from the host's stream
            with torch.no_grad(), host_rng_untouched():
                self._setup_atwu(model)
        forget, retain = inputs["forget"], inputs["retain"]
        labels = forget["labels"]
        out = model(**model_inputs(forget), output_hidden_states=True)
        weights, ref_logp = self.atwu.step(forget, out.logits, out.hidden_states, self._output_embedding(model))
        logp = token_logprobs(out.logits, labels)
        loss = self.gamma * self.forget_loss_fn(logp, answer_mask(labels), weights, ref_logp=ref_logp)
        if self.alpha != 0.0:
            want_h = self.atwu_cfg.bank_refresh_every > 0
            r_out = model(**model_inputs(retain), output_hidden_states=want_h)
            if want_h:
                self.atwu.observe_retain(r_out.logits.detach(), r_out.hidden_states[-1].detach(), retain["labels"])
            loss = loss + self.alpha * self.retain_loss_from_logits(r_out.logits, retain)
        self._remember_weights(forget, weights)
        return loss, out

    # ---- checkpoints -----------------------------------------------------------------------
    def save_extra_state(self, folder: str) -> None:
        if self.atwu is not None:
            save_state(os.path.join(folder, STATE_PREFIX), self.atwu.state_dict())

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        # Under DeepSpeed/FSDP transformers restores the model itself and never calls
        # _load_from_checkpoint: read the ATWU state here (every rank reads rank 0's file).
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            path = resume_from_checkpoint
            if isinstance(path, bool):
                from transformers.trainer_utils import get_last_checkpoint

                path = get_last_checkpoint(self.args.output_dir) if path else None
            if path:
                self._read_extra_state(path)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, *args, **kwargs):
        super()._load_from_checkpoint(resume_from_checkpoint, *args, **kwargs)
        self._read_extra_state(resume_from_checkpoint)

    def _read_extra_state(self, resume_from_checkpoint):
        prefix = os.path.join(resume_from_checkpoint, STATE_PREFIX)
        if not os.path.exists(prefix + ".json"):
            raise FileNotFoundError(f"{resume_from_checkpoint}: no ATWU state ({STATE_PREFIX}.json); cannot resume ATWU exactly")
        self._pending_state = load_state(prefix)
