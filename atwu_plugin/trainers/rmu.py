"""``PluginRMU``: Representation Misdirection for Unlearning (Li et al., 2024), the trainer name of
configs/trainer/PluginRMU.yaml (OpenUnlearning has its own ``RMU``, which a plugin must not replace;
this one is for every host, with the defaults below).

    loss = ||h_l(x_f) - c u||^2 + alpha * ||h_l(x_r) - h0_l(x_r)||^2     (losses/rmu.py)

``h_l`` is the output of decoder layer ``layer`` (``hidden_states[layer + 1]``), ``h0`` the
frozen initial model's, ``u`` a fixed random unit vector, ``c`` the steering coefficient. As in
the paper only the MLPs of layers ``layer - 2 .. layer`` train (``update_layers`` of them; the
trainer sets ``requires_grad`` itself, overriding a host's choice of trainable layers).

Defaults for a model of any depth and scale: ``layer`` = round(0.22 * depth) (the paper's layer
7 of 32), and ``c`` = ``steering_scale`` x the mean token norm of ``h_l`` on the forget set at the
start (the paper's c = 6.5 was tuned for one model's activation scale; a scale-free default
transfers). Give ``steering_coeff`` to fix ``c`` instead.
"""

from typing import Optional

import torch

from atwu_plugin.losses.rmu import random_control_vector, rmu_forget_loss, rmu_retain_loss
from atwu_plugin.losses.tokens import answer_mask
from atwu_plugin.trainers.base import PluginUnlearnTrainer, host_rng_untouched, model_inputs


def _layers(model):
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"RMU: {type(model).__name__} has no decoder layers at model.model.layers "
                         "(RMU steers one layer of a Llama-style causal LM)")
    return layers


class PluginRMU(PluginUnlearnTrainer):
    def __init__(self, *args, layer: Optional[int] = None, update_layers: int = 3,
                 steering_coeff: Optional[float] = None, steering_scale: float = 4.0, alpha: float = 1.0,
                 control_seed: int = 0, **kwargs):
        model = kwargs.get("model") if kwargs.get("model") is not None else (args[0] if args else None)
        if model is None:
            raise ValueError("RMU: no model")
        n = len(_layers(model))
        layer = round(0.22 * n) if layer is None else layer
        if not isinstance(layer, int) or not 0 <= layer < n:
            raise ValueError(f"RMU: method_args.layer={layer!r}; expected a decoder layer index in [0, {n - 1}]")
        if not isinstance(update_layers, int) or not 1 <= update_layers <= layer + 1:
            raise ValueError(f"RMU: method_args.update_layers={update_layers!r}; expected 1..{layer + 1} "
                             f"(layers {layer} and below)")
        if steering_coeff is not None and not steering_coeff > 0:
            raise ValueError(f"RMU: method_args.steering_coeff={steering_coeff!r}; expected > 0 (or null: "
                             "steering_scale x the forget activations' mean norm)")
        if not steering_scale > 0:
            raise ValueError(f"RMU: method_args.steering_scale={steering_scale!r}; expected > 0")
        self.layer, self.alpha, self.steering_scale = layer, float(alpha), float(steering_scale)
        self.steering_coeff = steering_coeff
        model.requires_grad_(False)
        for block in _layers(model)[layer - update_layers + 1: layer + 1]:
            mlp = getattr(block, "mlp", None)
            if mlp is None:
                raise ValueError(f"RMU: decoder layer {type(block).__name__} has no .mlp")
            mlp.requires_grad_(True)
        super().__init__(*args, **kwargs)
        self.control = random_control_vector(model.config.hidden_size, control_seed)
        # the initial model, copied before any step (a resumed run restores weights later)
        self.frozen = self.frozen_copy()

    def _hidden(self, net, batch) -> torch.Tensor:
        return net(**model_inputs(batch), output_hidden_states=True).hidden_states[self.layer + 1]

    @torch.no_grad()
    def _default_steering_coeff(self) -> float:
        """``steering_scale`` x the mean norm of the frozen model's layer activations over the
        forget tokens (from the initial model: the same value on a resumed run)."""
        forget = getattr(self.train_dataset, "forget", None)
        if forget is None:
            raise ValueError("RMU: the train dataset has no .forget part (expected a forget/retain dataset)")
        total, count = 0.0, 0
        with host_rng_untouched():
            for batch in self.setup_batches(forget, self.args.per_device_train_batch_size):
                mask = answer_mask(batch["labels"])
                norms = self._hidden(self.frozen, batch).float().norm(dim=-1)
                total += float((norms * mask).sum())
                count += int(mask.sum())
        return self.steering_scale * total / max(count, 1)

    def unlearning_loss(self, model, inputs):
        if self.steering_coeff is None:
            self.steering_coeff = self._default_steering_coeff()
        forget, retain = inputs["forget"], inputs["retain"]
        h_f = self._hidden(model, forget)
        control = (self.steering_coeff * self.control).to(device=h_f.device, dtype=h_f.dtype)
        loss = rmu_forget_loss(h_f, control, answer_mask(forget["labels"]))
        if self.alpha != 0.0:
            with torch.no_grad():
                h0 = self._hidden(self.frozen, retain)
            loss = loss + self.alpha * rmu_retain_loss(self._hidden(model, retain), h0, answer_mask(retain["labels"]))
        return loss, None
