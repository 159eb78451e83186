"""``TokenWeightedUnlearn``: one forget loss x one token weighter + one retain loss.

    loss = gamma * forget_loss(log p, w; normalizer) + alpha * retain_loss

Every sample-level method and token-weighting baseline of this package is this trainer
with a config (``configs/trainer/TW_*.yaml``): GA = (ga, uniform, alpha=0), GradDiff =
(ga, uniform, nll), NPO = (npo, uniform, nll), WGA = (ga, wga, nll), ... and ATWU =
(npo_token, atwu, nll) with a weight-sum normalizer (``trainers/atwu.py`` sets those defaults).

The trainer drives every weighter through the hooks of ``weighting/base.py`` (setup pass,
per-step update, retain outputs, cached reference log-probs, checkpointed state) and knows
no weighter by name. Token weights reach ``TokenWeightCallback``s (``trainers/token_log.py``:
the token log, the span-metric collector).
"""

import inspect
import os
from typing import Optional

import torch

from atwu_plugin.losses.forget import FORGET_LOSSES
from atwu_plugin.losses.retain import RETAIN_LOSSES
from atwu_plugin.losses.tokens import answer_mask, token_logprobs
from atwu_plugin.trainers.adapters import BaseModelView, adapter_disabled, adapter_spec, wrap_with_adapter
from atwu_plugin.trainers.base import PluginUnlearnTrainer, host_rng_untouched, model_inputs
from atwu_plugin.trainers.config import plain, spec_name
from atwu_plugin.trainers.token_log import SpanAlignmentCollector, TokenWeightCallback, TokenWeightLogger
from atwu_plugin.tokens import IGNORE_INDEX
from atwu_plugin.utils.safe_state import load_state, save_state
from atwu_plugin.weighting import WEIGHTERS, TokenWeighter, WeighterSetup, WeightingInputs, build_weighter
from atwu_plugin.weighting.words import token_text_of


class TokenWeightedUnlearn(PluginUnlearnTrainer):
    needs_from_host = ("aux_model", "token_log")
    # A method built around one weighter names it here: the weighter's options are then given
    # flat in method_args (ATWU: ``method_args.rho``) and ``method_args.weighter`` is ignored.
    fixed_weighter: Optional[str] = None

    def __init__(
        self,
        *args,
        forget_loss="ga",
        weighter="uniform",
        retain_loss="nll",
        normalizer: str = "batch_tokens",
        gamma: float = 1.0,
        alpha: float = 1.0,
        aux_model_path: Optional[str] = None,
        token_log: Optional[dict] = None,
        peft=None,
        **kwargs,
    ):
        # LoRA (method_args.peft, trainers/adapters.py): wrap before Trainer.__init__ so the
        # optimizer sees the adapter's parameters only
        self.adapter_spec = adapter_spec(peft)
        if self.adapter_spec is not None:
            if kwargs.get("model") is None or kwargs.get("args") is None:
                raise ValueError("method_args.peft: the trainer needs model= and args= as keyword arguments")
            kwargs["model"] = wrap_with_adapter(kwargs["model"], self.adapter_spec, seed=kwargs["args"].seed)
        if self.fixed_weighter is not None:
            options = set(inspect.signature(WEIGHTERS.get(self.fixed_weighter).__init__).parameters) - {"self"}
            weighter = {"name": self.fixed_weighter, **{k: plain(kwargs.pop(k)) for k in list(kwargs) if k in options}}
        super().__init__(*args, **kwargs)
        name, fl_kwargs = spec_name(forget_loss, "forget_loss")
        if "normalizer" in inspect.signature(FORGET_LOSSES.get(name).__init__).parameters:
            fl_kwargs = {"normalizer": normalizer, **fl_kwargs}  # sequence-level losses have none
        self.forget_loss_fn = FORGET_LOSSES.build(name, **fl_kwargs)
        name, w_kwargs = spec_name(weighter, "weighter")
        self.weighter = build_weighter(name, **self._with_tokenizer_ids(name, w_kwargs))
        name, rl_kwargs = spec_name(retain_loss, "retain_loss")
        self.retain_loss_fn = RETAIN_LOSSES.build(name, **rl_kwargs)
        self.gamma, self.alpha = float(gamma), float(alpha)
        self.ref_model = self._initial_model() if self._needs_ref_model() else None
        self.aux_model = self._load_aux_model(aux_model_path) if "aux_logits" in self.weighter.needs else None
        self._weighter_ready = False
        self._saved_weighter_state = None  # read from a checkpoint on resume, handed to setup
        if self.weighter.ranks_tokens:  # span metrics (trainers/token_log.py: span_metrics)
            self.add_callback(SpanAlignmentCollector())
        if token_log:
            self.add_callback(TokenWeightLogger(self, **plain(token_log)))

    # ---- setup -------------------------------------------------------------------------
    def _initial_model(self):
        """The frozen initial model: with an adapter, the base model behind it (no copy)."""
        return BaseModelView(self.model) if self.adapter_spec is not None else self.frozen_copy()

    def _needs_ref_model(self) -> bool:
        # a weighter that caches the reference log-probs of the forget set (ATWU) serves the forget loss
        forget_ref = self.forget_loss_fn.needs_ref and not self.weighter.caches_reference_logp
        return forget_ref or self.retain_loss_fn.needs_ref or "ref_logits" in self.weighter.needs

    def _with_tokenizer_ids(self, name: str, kwargs: dict) -> dict:
        """Weighters that replace tokens (masking-based importance) need an id the tokenizer
        reserves; default to the unk (else pad) id unless the config names one."""
        params = inspect.signature(WEIGHTERS.get(name).__init__).parameters
        tok = self.host_tokenizer
        takes_it = "mask_token_id" in params or "mask_token_id" in kwargs
        if takes_it and kwargs.get("mask_token_id") is None and tok is not None:
            kwargs = {**kwargs, "mask_token_id": tok.unk_token_id if tok.unk_token_id is not None else tok.pad_token_id}
        return kwargs

    def _load_aux_model(self, path):
        if not path:
            raise ValueError(
                f"weighter {type(self.weighter).__name__} needs method_args.aux_model_path: a model that never saw the forget set"
            )
        from atwu_plugin.trainers.checks import check_vocab

        if self.model_loader is None:
            raise ValueError(f"method_args.aux_model_path={path}: this host gives the trainer no model_loader")
        aux = self.model_loader(path)
        check_vocab(self.host_tokenizer, aux, what=f"aux model {path}")
        return self.frozen_copy(aux)

    def _setup_weighter(self, model):
        # Weighters without a setup (uniform, WGA, SatImp, ...) skip the pass; the others run it
        # without moving the host's RNG streams (its data order and retain pairs stay the same).
        if type(self.weighter).setup is not TokenWeighter.setup:
            with host_rng_untouched():
                self.weighter.setup(self._weighter_setup(model))
        self._saved_weighter_state = None
        self._weighter_ready = True

    def _weighter_setup(self, model) -> WeighterSetup:
        """What a weighter's setup may read; every part is lazy (nothing runs unless read)."""
        from atwu_plugin.trainers.zero import all_gather_rows, world

        datasets = {split: getattr(self.train_dataset, split, None) for split in ("forget", "retain")}
        retain = datasets["retain"]
        batches = None if retain is None else self.setup_batches(retain, self.args.per_device_train_batch_size)

        @torch.no_grad()
        def initial_features(input_ids, attention_mask):
            net = self.ref_model if self.ref_model is not None else model
            out = net(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            return out.logits, out.hidden_states[-1]

        def forward(batch):
            # the frozen initial model, every layer: with an adapter, the base model behind it
            # (exact at any step, not only at init; trainers/adapters.py); eval mode
            was_training = model.training
            model.eval()
            with adapter_disabled(self.accelerator.unwrap_model(model)):
                out = model(**model_inputs(batch), output_hidden_states=True)
            model.train(was_training)
            return out.logits, out.hidden_states

        # unwrap: a DeepSpeed engine's ``.config`` is its DeepSpeed config, not the model's
        config = self.accelerator.unwrap_model(model).config
        rank, world_size = world()
        return WeighterSetup(
            vocab_size=config.vocab_size, retain_batches=batches, model=initial_features,
            hidden_size=config.hidden_size, n_layers=config.num_hidden_layers + 1, datasets=datasets,
            batches=lambda split: self._setup_share(datasets[split]), forward=forward,
            output_embedding=self._output_embedding(model),
            # data parallel / ZeRO: replicated weighter state, combined over ranks (trainers/zero.py)
            rank=rank if world_size > 1 else None,
            gather_rows=all_gather_rows if world_size > 1 else (lambda t: t),
            saved_state=self._saved_weighter_state,
            token_text=None if self.host_tokenizer is None else token_text_of(self.host_tokenizer),
        )

    def _setup_share(self, dataset):
        """The setup batches this rank runs (eval batch size): all of them in one process; with
        W ranks every W-th (``zero.shard_batches``), the results are all-gathered by the weighter."""
        from atwu_plugin.trainers.zero import shard_batches, world

        bs = self.args.per_device_eval_batch_size
        batches = self.setup_batches(dataset, bs)
        rank, world_size = world()
        if world_size == 1:
            return batches
        pad = getattr(self.host_tokenizer, "pad_token_id", None) or 0
        dummy = self._prepare_inputs({  # one token, no answer token: a forward and no results
            "input_ids": torch.tensor([[pad]]), "attention_mask": torch.ones(1, 1, dtype=torch.long),
            "labels": torch.full((1, 1), IGNORE_INDEX), "index": torch.tensor([-1]),
        })
        return shard_batches(batches, -(-len(dataset) // bs), dummy)

    def _output_embedding(self, model):
        # read lazily, by label rows: under ZeRO-3 the weight is sharded and is gathered per lookup
        from atwu_plugin.trainers.zero import WeightRows

        return WeightRows(self.accelerator.unwrap_model(model).get_output_embeddings().weight)

    # ---- loss --------------------------------------------------------------------------
    def token_weights(self, model, forget: dict, outputs) -> torch.Tensor:
        needs = self.weighter.needs
        extra = {}
        if "ref_logits" in needs:
            extra["ref_logits"] = self._forward_frozen(self.ref_model, forget)
        if "aux_logits" in needs:
            extra["aux_logits"] = self._forward_frozen(self.aux_model, forget)
        if "hidden_states" in needs:
            extra["hidden_states"] = outputs.hidden_states[-1].detach()
        if "all_hidden_states" in needs:
            extra["all_hidden_states"] = tuple(h.detach() for h in outputs.hidden_states)
        if "output_embedding" in needs:
            extra["output_embedding"] = self._output_embedding(model)
        forwards = None
        if "model" in needs:  # data-dependent number of forwards: equalized across ranks (ZeRO-3)
            from atwu_plugin.trainers.zero import EqualForwards

            forwards = EqualForwards(lambda ids, am: model(input_ids=ids, attention_mask=am).logits,
                                     forget["input_ids"][:1, :1], _first(forget.get("attention_mask")))
            extra["model"] = forwards
        weights = self.weighter(self._weighting_inputs(forget, outputs.logits.detach(), **extra))
        if forwards is not None:
            forwards.pad()
        return weights

    def _weighting_inputs(self, batch: dict, logits: torch.Tensor, **extra) -> WeightingInputs:
        return WeightingInputs(input_ids=batch["input_ids"], labels=batch["labels"], logits=logits,
                               attention_mask=batch.get("attention_mask"), token_kind=batch.get("token_kind"),
                               index=batch.get("index"), step=self.state.global_step, **extra)

    @staticmethod
    @torch.no_grad()
    def _forward_frozen(net, batch):
        return net(**model_inputs(batch)).logits

    def unlearning_loss(self, model, inputs):
        if not self._weighter_ready:
            self._setup_weighter(model)
        forget = inputs["forget"]
        labels = forget["labels"]
        outputs = model(
            **model_inputs(forget),
            output_hidden_states=bool({"hidden_states", "all_hidden_states"} & self.weighter.needs),
        )
        logp = token_logprobs(outputs.logits, labels)
        ref_logp = None
        if self.forget_loss_fn.needs_ref:
            if self.weighter.caches_reference_logp:
                ref_logp = self.weighter.reference_logp(self._weighting_inputs(forget, outputs.logits.detach()))
            else:
                ref_logp = token_logprobs(self._forward_frozen(self.ref_model, forget), labels)
        weights = self.token_weights(model, forget, outputs)
        forget_loss = self.forget_loss_fn(logp, answer_mask(labels), weights, ref_logp=ref_logp)
        loss = self.gamma * forget_loss
        if self.alpha != 0.0:
            loss = loss + self.alpha * self.retain_loss(model, inputs["retain"])
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, TokenWeightCallback):
                callback.on_token_weights(self, forget, weights)
        return loss, outputs

    def retain_loss(self, model, retain: dict) -> torch.Tensor:
        observe = "retain_hidden_states" in self.weighter.needs
        out = model(**model_inputs(retain), output_hidden_states=observe)
        if observe:  # e.g. ATWU's filling retain bank: the live retain forward, no extra pass
            self.weighter.observe_retain(self._weighting_inputs(retain, out.logits.detach(),
                                                                hidden_states=out.hidden_states[-1].detach()))
        return self.retain_loss_from_logits(out.logits, retain)

    def retain_loss_from_logits(self, logits: torch.Tensor, retain: dict) -> torch.Tensor:
        ref_logits = self._forward_frozen(self.ref_model, retain) if self.retain_loss_fn.needs_ref else None
        return self.retain_loss_fn(logits, retain["labels"], ref_logits=ref_logits)

    # ---- checkpoints: the weighter's state (e.g. ATWU's scorer, banks, caches) ------------
    def save_extra_state(self, folder: str) -> None:
        name = self.weighter.checkpoint_name
        if name and self._weighter_ready:
            save_state(os.path.join(folder, name), self.weighter.state_dict())

    def load_extra_state(self, folder: str) -> None:
        name = self.weighter.checkpoint_name
        if not name:
            return
        prefix = os.path.join(folder, name)
        if not os.path.exists(prefix + ".json"):
            raise FileNotFoundError(f"{folder}: no {type(self.weighter).__name__} state ({name}.json); "
                                    "cannot resume it exactly")
        self._saved_weighter_state = load_state(prefix)
        self._weighter_ready = False  # setup restores it


def _first(mask):
    """A 1x1 slice for a dummy forward (``None`` stays ``None``)."""
    return None if mask is None else mask[:1, :1]
