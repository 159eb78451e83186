"""The lite host: runs plugin trainers on ``transformers.Trainer`` without OpenUnlearning.

It reads the same trainer configs as OU (``handler:`` + ``method_args`` + ``args``), with
CPU-friendly ``TrainingArguments`` defaults from ``configs/lite/trainer_args.yaml`` in place
of OU's ``trainer/finetune.yaml``.
"""

import os
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf
from transformers import TrainingArguments

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.data.qa_dataset import ForgetRetainDataset
from atwu_plugin.registry import UnknownNameError
from atwu_plugin.trainers import get_trainer_class

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def trainer_config_names():
    return sorted(p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml"))


def load_trainer_config(name_or_path: str, overrides: Optional[dict] = None, base_args: Optional[dict] = None) -> dict:
    """Load ``configs/trainer/<name>.yaml`` (or a YAML path) and apply dotted overrides.

    Precedence of ``args`` (TrainingArguments): ``base_args`` (the benchmark's defaults for
    its models) < the config's own ``args`` < ``overrides``."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / "trainer" / f"{name_or_path}.yaml"
        if not path.exists():
            raise UnknownNameError(
                f"unknown trainer config {name_or_path!r}; expected one of: {', '.join(trainer_config_names())}"
            )
    elif not path.exists():
        raise FileNotFoundError(f"trainer config not found: {path}")
    cfg = OmegaConf.load(path)
    if "defaults" in cfg:  # OU-style defaults point at OU's finetune args: the lite host has its own
        del cfg["defaults"]
    if base_args:
        cfg = OmegaConf.merge({"args": base_args}, cfg)
    for key, value in (overrides or {}).items():
        # OU-style keys ("trainer.args.learning_rate") and bare ones ("args.learning_rate")
        key = key[len("trainer."):] if key.startswith("trainer.") else key
        OmegaConf.update(cfg, key, value, force_add=True)
    if "handler" not in cfg:
        raise ValueError(f"{path}: missing field 'handler' (the trainer class name)")
    return OmegaConf.to_container(cfg, resolve=True)


def lite_training_args(output_dir: str, seed: int, overrides: Optional[dict] = None) -> TrainingArguments:
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "lite" / "trainer_args.yaml"), resolve=True)
    args = {**defaults, **(overrides or {}), "output_dir": output_dir, "seed": seed, "data_seed": seed}
    try:
        return TrainingArguments(**args)
    except TypeError as err:
        raise ValueError(f"trainer args: {err}") from None


def build_trainer(trainer_cfg: dict, model, tokenizer, forget_ds, retain_ds, output_dir: str, seed: int, template_args=None):
    """Instantiate the trainer of ``trainer_cfg`` on the lite host (not trained yet)."""
    cls = get_trainer_class(trainer_cfg["handler"])
    args = lite_training_args(output_dir, seed, trainer_cfg.get("args"))
    method_args = dict(trainer_cfg.get("method_args") or {})
    os.makedirs(output_dir, exist_ok=True)
    return cls(
        model=model,
        args=args,
        train_dataset=ForgetRetainDataset(forget_ds, retain_ds, seed=seed),
        data_collator=TokenLabelCollator(tokenizer.pad_token_id),
        tokenizer=tokenizer,
        evaluators=None,
        template_args=template_args,
        **method_args,
    )
