"""LoRA adapters (the ``peft`` library) for every plugin trainer: config, wrapping, the base
model behind the adapter. Saved adapters are loaded and merged by ``atwu_plugin.zoo``
(``zoo.loading.load_merged``, ``zoo.merged_adapter.merge_adapter``).

A trainer trains an adapter instead of all weights when its ``method_args.peft`` is set (the
OpenUnlearning override ``+peft=lora`` and the lite host's ``model.peft=lora`` set it):
``"lora"`` names the preset ``configs/peft/lora.yaml``; a mapping gives the fields
(``r``, ``alpha``, ``dropout``, ``target_modules``; missing ones come from the preset).

The frozen initial model is the base model with the adapter switched off
(``PeftModel.disable_adapter``), not a second copy of the weights. That is exact: LoRA never
changes the base weights (``bias="none"`` is enforced, so no base bias trains either), and the
reference forward runs in eval mode, so neither the adapter's dropout (skipped when the
adapter is disabled) nor the base model's own dropout (switched off, as in the frozen copy)
enters it. Not covered: adapters other than LoRA, quantized bases (the reference would then be
the quantized base, not the original weights) and ``modules_to_save`` (refused here).
"""

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from atwu_plugin.trainers.config import plain

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "peft"
SPEC_KEYS = ("r", "alpha", "dropout", "target_modules")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def preset_names():
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _preset(name: str) -> dict:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"method_args.peft={name!r}: unknown adapter preset; expected one of {preset_names()} "
                         "or a mapping with r, alpha, dropout, target_modules")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    # the preset file is a Hydra group file (``# @package _global_``): the spec is under model.peft
    return dict(cfg["model"]["peft"])


def adapter_spec(value) -> Optional[dict]:
    """``method_args.peft`` -> ``{"r", "alpha", "dropout", "target_modules"}`` or None (no
    adapter: ``None``, ``False``, ``"none"``). Raises ``ValueError`` naming the bad field."""
    value = plain(value)
    if value is None or value is False or value == "none":
        return None
    if isinstance(value, str):
        spec = _preset(value)
    elif isinstance(value, dict):
        base = _preset(value["preset"]) if "preset" in value else _preset("lora")
        unknown = sorted(set(value) - set(SPEC_KEYS) - {"preset"})
        if unknown:
            raise ValueError(f"method_args.peft: unknown keys {unknown}; expected some of {list(SPEC_KEYS)}")
        spec = {**base, **{k: v for k, v in value.items() if k != "preset"}}
    else:
        raise ValueError(f"method_args.peft={value!r}: expected a preset name ({preset_names()}) or a mapping")
    r, alpha, dropout, targets = (spec.get(k) for k in SPEC_KEYS)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"method_args.peft.r={r!r}: expected an integer >= 1 (the LoRA rank)")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"method_args.peft.alpha={alpha!r}: expected a number > 0 (LoRA scaling = alpha / r)")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(f"method_args.peft.dropout={dropout!r}: expected a number in [0, 1)")
    if targets != "all-linear" and not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        raise ValueError(f"method_args.peft.target_modules={targets!r}: expected a non-empty list of module names "
                         "(e.g. [q_proj, v_proj]) or 'all-linear'")
    return {"r": r, "alpha": float(alpha), "dropout": float(dropout), "target_modules": targets}


def lora_config(spec: dict):
    from peft import LoraConfig

    return LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                      target_modules=spec["target_modules"], bias="none", task_type="CAUSAL_LM")


def is_adapter_model(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def wrap_with_adapter(model, spec: dict, seed: int):
    """``model`` with a fresh LoRA adapter (base weights frozen). The adapter's random init
    (A ~ Kaiming, B = 0) draws from ``seed`` in a forked RNG, so the run's own RNG stream is
    the same with and without an adapter, and the same seed gives the same adapter."""
    from peft import get_peft_model

    if is_adapter_model(model):
        raise ValueError("method_args.peft: the model already carries a peft adapter; pass the base model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, lora_config(spec))
        except ValueError as err:  # e.g. "Target modules {...} not found in the base model"
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise ValueError(f"method_args.peft.target_modules={spec['target_modules']!r}: {str(err).splitlines()[0]} "
                             f"(linear modules of this model: {names})") from None


@contextmanager
def adapter_disabled(model):
    """Inside the block ``model`` (a ``PeftModel``, or anything without an adapter: no-op)
    computes the base model, in eval mode (no dropout, like the frozen copy it replaces)."""
    if not is_adapter_model(model):
        yield model
        return
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        model.train(was_training)


class BaseModelView:
    """The frozen initial model of an adapter run: calls the shared ``PeftModel`` with its
    adapter disabled, without gradients. Replaces ``PluginUnlearnTrainer.frozen_copy`` (no
    second copy of the weights); callable like the model (``view(**inputs).logits``)."""

    def __init__(self, peft_model):
        self.peft_model = peft_model

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        with adapter_disabled(self.peft_model) as base:
            return base(*args, **kwargs)
