"""The lite host's trainer: a plugin trainer on ``transformers.Trainer`` without OpenUnlearning.

It reads the same trainer configs as OU (``handler:`` + ``method_args`` + ``args``), with
CPU-friendly ``TrainingArguments`` defaults from ``configs/lite/trainer_args.yaml`` in place
of OU's ``trainer/finetune.yaml``. Trainer classes come from the one registry
(``atwu_plugin.hosts.components``: this package's trainers, entry points, ``--plugins``).
"""

from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.data.qa_dataset import ForgetRetainDataset
from atwu_plugin.hosts.checks import validate_trainer_config
from atwu_plugin.hosts.components import trainer_class
from atwu_plugin.registry import UnknownNameError
from atwu_plugin.zoo.loading import load_causal_lm

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def trainer_config_names():
    return sorted(p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml"))


def load_trainer_config(name_or_path: str, overrides: Optional[dict] = None, base_args: Optional[dict] = None,
                        validate: bool = True) -> dict:
    """Load ``configs/trainer/<name>.yaml`` (or a YAML path) and apply dotted overrides.

    Precedence of ``args`` (TrainingArguments): ``base_args`` (the benchmark's defaults for
    its models) < the config's own ``args`` < ``overrides``. With ``validate`` (default) the
    result is checked by ``atwu_plugin.hosts.checks.validate_trainer_config``: unknown names or
    keys and out-of-range values raise here, not after the models are loaded."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / "trainer" / f"{name_or_path}.yaml"
        if not path.exists():
            raise UnknownNameError(
                f"unknown trainer config {name_or_path!r}; expected one of: {', '.join(trainer_config_names())}"
            )
    elif not path.exists():
        raise FileNotFoundError(f"trainer config not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # YAML syntax errors: name the file
        raise ValueError(f"{path}: not a valid YAML trainer config: {err}") from None
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path}: expected a mapping with 'handler', 'method_args' and 'args'")
    if "defaults" in cfg:  # OU-style defaults point at OU's finetune args: the lite host has its own
        del cfg["defaults"]
    if base_args:
        cfg = OmegaConf.merge({"args": base_args}, cfg)
    for key, value in (overrides or {}).items():
        # OU-style keys ("trainer.args.learning_rate") and bare ones ("args.learning_rate")
        key = key.lstrip("+")  # Hydra's add/force-add prefixes: update adds missing keys anyway
        key = key[len("trainer."):] if key.startswith("trainer.") else key
        if key.split(".")[0] not in ("handler", "method_args", "args"):
            raise ValueError(f"trainer override {key!r}: expected a key under handler, method_args or args "
                             "(e.g. trainer.args.learning_rate=1.0e-4, trainer.method_args.alpha=0.5)")
        try:
            # merge=False: a mapping override replaces the mapping (switching forget_loss from
            # npo to saturated_prob must not keep npo's beta)
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        except Exception as err:  # e.g. a dotted key under a scalar ("method_args.weighter.x" on "uniform")
            raise ValueError(f"trainer override {key}={value!r}: {err}".splitlines()[0]) from None
    if "handler" not in cfg:
        raise ValueError(f"{path}: missing field 'handler' (the trainer class name)")
    out = OmegaConf.to_container(cfg, resolve=True)
    if validate:  # names, keys and ranges, in milliseconds: before any model is loaded
        validate_trainer_config(out, source=str(path))
    return out


def lite_training_args(output_dir: str, seed: int, overrides: Optional[dict] = None) -> TrainingArguments:
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "lite" / "trainer_args.yaml"), resolve=True)
    args = {**defaults, **(overrides or {}), "output_dir": output_dir, "seed": seed, "data_seed": seed}
    try:
        return TrainingArguments(**args)
    except TypeError as err:
        raise ValueError(f"trainer args: {err}") from None


def build_trainer(trainer_cfg: dict, model, tokenizer, forget_ds, retain_ds, output_dir: str, seed: int, template_args=None):
    """Instantiate the trainer of ``trainer_cfg`` on the lite host (not trained yet).

    The trainer checks on construction that the tokenizer fits the model and that every
    forget and retain sample has an answer token, and installs a ``NonFiniteLossGuard``
    (``method_args.on_nonfinite``: ``stop``, the default, or ``skip``)."""
    from transformers.trainer_callback import PrinterCallback

    cls = trainer_class(trainer_cfg["handler"])
    args = lite_training_args(output_dir, seed, trainer_cfg.get("args"))
    trainer = cls(
        model=model,
        args=args,
        train_dataset=ForgetRetainDataset(forget_ds, retain_ds, seed=seed),
        data_collator=TokenLabelCollator(tokenizer.pad_token_id),
        tokenizer=tokenizer,
        evaluators=None,
        template_args=template_args,
        model_loader=load_causal_lm,  # e.g. the aux model of a reference weighter (safetensors only)
        **dict(trainer_cfg.get("method_args") or {}),
    )
    # the per-step loss dicts stay in trainer.state.log_history instead of flooding stdout
    trainer.remove_callback(PrinterCallback)
    return trainer
