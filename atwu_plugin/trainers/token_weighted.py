"""``TokenWeightedUnlearn``: one forget loss x one token weighter + one retain loss.

    loss = gamma * forget_loss(log p, w; normalizer) + alpha * retain_loss

Every sample-level method and token-weighting baseline of this package is this trainer
with a config (``configs/trainer/TW_*.yaml``): GA = (ga, uniform, alpha=0), GradDiff =
(ga, uniform, nll), NPO = (npo, uniform, nll), WGA = (ga, wga, nll), ...
"""

import inspect
from typing import Optional

import torch

from atwu_plugin.losses.forget import FORGET_LOSSES
from atwu_plugin.losses.retain import RETAIN_LOSSES
from atwu_plugin.losses.tokens import answer_mask, token_logprobs
from atwu_plugin.trainers.adapters import BaseModelView, adapter_spec, wrap_with_adapter
from atwu_plugin.trainers.base import PluginUnlearnTrainer, host_rng_untouched, model_inputs
from atwu_plugin.trainers.config import plain, spec_name
from atwu_plugin.trainers.token_log import SpanAlignmentCollector, TokenWeightCallback, TokenWeightLogger
from atwu_plugin.weighting import TokenWeighter, WeighterSetup, WeightingInputs, build_weighter


class TokenWeightedUnlearn(PluginUnlearnTrainer):
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
        if self.weights_are_learned_or_heuristic():  # span metrics (trainers/token_log.py: span_metrics)
            self.add_callback(SpanAlignmentCollector())
        if token_log:
            self.add_callback(TokenWeightLogger(self, **plain(token_log)))

    # ---- setup -------------------------------------------------------------------------
    def _initial_model(self):
        """The frozen initial model: with an adapter, the base model behind it (no copy)."""
        return BaseModelView(self.model) if self.adapter_spec is not None else self.frozen_copy()

    def _needs_ref_model(self) -> bool:
        return self.forget_loss_fn.needs_ref or self.retain_loss_fn.needs_ref or "ref_logits" in self.weighter.needs

    def _with_tokenizer_ids(self, name: str, kwargs: dict) -> dict:
        """Weighters that replace tokens (masking-based importance) need an id the tokenizer
        reserves; default to the unk (else pad) id unless the config names one."""
        from atwu_plugin.weighting import WEIGHTERS

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
        from atwu_plugin.zoo.loading import load_causal_lm

        from atwu_plugin.guards import check_vocab

        aux = load_causal_lm(path)
        check_vocab(self.host_tokenizer, aux, what=f"aux model {path}")
        return self.frozen_copy(aux)

    def _setup_weighter(self, model):
        # Weighters without a setup (uniform, WGA, SatImp, ...) skip the pass; the others run it
        # without moving the host's RNG streams (its data order and retain pairs stay the same).
        if type(self.weighter).setup is not TokenWeighter.setup:
            with host_rng_untouched():
                self._run_weighter_setup(model)
        self._weighter_ready = True

    def _run_weighter_setup(self, model):
        retain = getattr(self.train_dataset, "retain", None)
        batches = None if retain is None else self.setup_batches(retain, self.args.per_device_train_batch_size)

        @torch.no_grad()
        def initial_features(input_ids, attention_mask):
            net = self.ref_model if self.ref_model is not None else model
            out = net(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            return out.logits, out.hidden_states[-1]

        # unwrap: a DeepSpeed engine's ``.config`` is its DeepSpeed config, not the model's
        vocab_size = self.accelerator.unwrap_model(model).config.vocab_size
        self.weighter.setup(WeighterSetup(vocab_size=vocab_size, retain_batches=batches, model=initial_features))

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
        forwards = None
        if "model" in needs:  # data-dependent number of forwards: equalized across ranks (ZeRO-3)
            from atwu_plugin.trainers.zero import EqualForwards

            forwards = EqualForwards(lambda ids, am: model(input_ids=ids, attention_mask=am).logits,
                                     forget["input_ids"][:1, :1], _first(forget.get("attention_mask")))
            extra["model"] = forwards
        weights = self.weighter(
            WeightingInputs(
                input_ids=forget["input_ids"],
                labels=forget["labels"],
                logits=outputs.logits.detach(),
                attention_mask=forget.get("attention_mask"),
                token_kind=forget.get("token_kind"),
                index=forget.get("index"),
                step=self.state.global_step,
                **extra,
            )
        )
        if forwards is not None:
            forwards.pad()
        return weights

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
            output_hidden_states="hidden_states" in self.weighter.needs,
        )
        logp = token_logprobs(outputs.logits, labels)
        ref_logp = None
        if self.forget_loss_fn.needs_ref:
            ref_logp = token_logprobs(self._forward_frozen(self.ref_model, forget), labels)
        weights = self.token_weights(model, forget, outputs)
        forget_loss = self.forget_loss_fn(logp, answer_mask(labels), weights, ref_logp=ref_logp)
        loss = self.gamma * forget_loss
        if self.alpha != 0.0:
            loss = loss + self.alpha * self.retain_loss(model, inputs["retain"])
        self._remember_weights(forget, weights)
        return loss, outputs

    def retain_loss(self, model, retain: dict) -> torch.Tensor:
        out = model(**model_inputs(retain))
        return self.retain_loss_from_logits(out.logits, retain)

    def retain_loss_from_logits(self, logits: torch.Tensor, retain: dict) -> torch.Tensor:
        ref_logits = self._forward_frozen(self.ref_model, retain) if self.retain_loss_fn.needs_ref else None
        return self.retain_loss_fn(logits, retain["labels"], ref_logits=ref_logits)

    def weights_are_learned_or_heuristic(self) -> bool:
        """False for the uniform weighter (sample-level methods have no token ranking)."""
        from atwu_plugin.weighting.uniform import UniformWeighter

        return not isinstance(self.weighter, UniformWeighter)

    def _remember_weights(self, forget: dict, weights: torch.Tensor):
        for callback in self.callback_handler.callbacks:  # token log, span metrics (trainers/token_log.py)
            if isinstance(callback, TokenWeightCallback):
                callback.on_token_weights(self, forget, weights)


def _first(mask):
    """A 1x1 slice for a dummy forward (``None`` stays ``None``)."""
    return None if mask is None else mask[:1, :1]
