"""The lite host: runs plugin trainers on ``transformers.Trainer`` without OpenUnlearning.

It reads the same trainer configs as OU (``handler:`` + ``method_args`` + ``args``), with
CPU-friendly ``TrainingArguments`` defaults from ``configs/lite/trainer_args.yaml`` in place
of OU's ``trainer/finetune.yaml``.
"""

import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.data.qa_dataset import ForgetRetainDataset
from atwu_plugin.guards import check_vocab, make_benchmark, validate_trainer_config
from atwu_plugin.registry import UnknownNameError
from atwu_plugin.trainers import get_trainer_class

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def trainer_config_names():
    return sorted(p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml"))


def load_trainer_config(name_or_path: str, overrides: Optional[dict] = None, base_args: Optional[dict] = None,
                        validate: bool = True) -> dict:
    """Load ``configs/trainer/<name>.yaml`` (or a YAML path) and apply dotted overrides.

    Precedence of ``args`` (TrainingArguments): ``base_args`` (the benchmark's defaults for
    its models) < the config's own ``args`` < ``overrides``. With ``validate`` (default) the
    result is checked by ``atwu_plugin.guards.validate_trainer_config``: unknown names or
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

    cls = get_trainer_class(trainer_cfg["handler"])
    args = lite_training_args(output_dir, seed, trainer_cfg.get("args"))
    trainer = cls(
        model=model,
        args=args,
        train_dataset=ForgetRetainDataset(forget_ds, retain_ds, seed=seed),
        data_collator=TokenLabelCollator(tokenizer.pad_token_id),
        tokenizer=tokenizer,
        evaluators=None,
        template_args=template_args,
        **dict(trainer_cfg.get("method_args") or {}),
    )
    # the per-step loss dicts stay in trainer.state.log_history instead of flooding stdout
    trainer.remove_callback(PrinterCallback)
    return trainer


# ---- the atwu-unlearn / atwu-eval lite branch ------------------------------------------------
def parse_lite_overrides(overrides) -> dict:
    """``key=value`` strings -> ``{"trainer": str, "benchmark": str, "benchmark_options": {},
    "trainer_overrides": {}, "seed": int, "output_dir": str, "model_path": str|None}``.

    Grammar: ``trainer=NAME``, ``benchmark=NAME``, ``benchmark.OPTION=V``, ``trainer.KEY=V``
    (e.g. ``trainer.args.learning_rate=1e-4``), ``seed=N``, ``output_dir=PATH``,
    ``model_path=PATH`` (atwu-eval), ``+peft=lora`` / ``model.peft=lora`` (train a LoRA adapter,
    as in OU; ``model.peft.r=16`` etc. set its fields; = ``trainer.method_args.peft...``). Values are parsed as YAML scalars."""
    import re

    import yaml

    out = {"trainer": None, "benchmark": "embedded", "benchmark_options": {}, "trainer_overrides": {},
           "seed": 0, "output_dir": None, "model_path": None}
    for item in overrides:
        key, sep, raw = item.lstrip("+").partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and re.match(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$", value):
            value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        if key in ("trainer", "benchmark", "output_dir", "model_path"):
            out[key] = str(value)
        elif key == "seed":
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"seed={raw!r}: expected a non-negative integer")
            out["seed"] = value
        elif key.startswith("benchmark."):
            out["benchmark_options"][key[len("benchmark."):]] = value
        elif key.startswith("trainer."):
            out["trainer_overrides"][key[len("trainer."):]] = value
        elif key in ("peft", "model.peft") or key.startswith("model.peft."):  # LoRA: trainers/adapters.py
            # ``+peft=lora`` as in OU (the plugin's config group), or the spec's own keys
            sub = key[len("model.peft"):] if key.startswith("model.") else ""
            out["trainer_overrides"]["method_args.peft" + sub] = value
        else:
            raise ValueError(
                f"override {item!r}: unknown key {key!r} for the lite host; expected trainer=, benchmark=, "
                "benchmark.OPTION=, trainer.KEY=, +peft=, model.peft=, seed=, output_dir=, model_path="
            )
    return out


def run_lite(args) -> int:
    """Run one unlearning (``args.script == "train"``) or evaluation (``"eval"``) on the lite
    host; writes ``<output_dir>/results.json`` atomically and prints the headline metrics."""
    import json
    import sys

    from atwu_plugin.utils.atomic import atomic_write_json

    prog = "atwu-unlearn" if args.script == "train" else "atwu-eval"
    from atwu_plugin.trainers.guards import NonFiniteLossError

    try:
        cfg = parse_lite_overrides(args.overrides)
        if args.script == "train" and not cfg["trainer"]:
            raise ValueError(f"missing trainer=NAME; expected one of: {', '.join(trainer_config_names())}")
        bench = make_benchmark(cfg["benchmark"], cfg["benchmark_options"])
        out_dir = cfg["output_dir"] or os.path.join("outputs", prog, f"{cfg['trainer'] or 'eval'}-seed{cfg['seed']}")
        if args.script == "train":
            from atwu_plugin.leaderboard.cells import run_lite_cell

            # fail fast (names, keys, ranges) before the benchmark's models are built or loaded
            load_trainer_config(cfg["trainer"], cfg["trainer_overrides"], base_args=bench.trainer_args)
            run = run_lite_cell(bench, cfg["trainer"], cfg["trainer_overrides"], cfg["seed"], out_dir,
                                token_log_path=os.path.join(out_dir, "token_weights.jsonl"))
            method = cfg["trainer"]
        else:
            from atwu_plugin.zoo.loading import load_causal_lm

            # a bad model_path (missing, pickled-only) fails before the benchmark is prepared
            model = load_causal_lm(cfg["model_path"]) if cfg["model_path"] else None
            bench.prepare()
            tokenizer = bench.tokenizer()
            model = model if model is not None else load_causal_lm(bench.model_path)
            check_vocab(tokenizer, model, what=f"model {cfg['model_path'] or bench.model_name}")
            metrics = bench.evaluator(tokenizer).evaluate(model)
            metrics.pop("details", None)
            run = {"metrics": metrics, "model": cfg["model_path"] or bench.model_name}
            method = "eval"
    except NonFiniteLossError as err:  # a failed run, not a usage error
        print(f"{prog}: error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, OSError, TypeError) as err:  # OSError: missing/unreadable files
        print(f"{prog}: error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return 2
    results = {"benchmark": cfg["benchmark"], "model": run.get("model", ""),
               "runs": [{"method": method, "seed": cfg["seed"], "config": cfg, "metrics": run["metrics"],
                         "wall_s": run.get("wall_s", 0.0)}]}
    atomic_write_json(os.path.join(out_dir, "results.json"), results)
    headline = {k: v for k, v in run["metrics"].items() if isinstance(v, (int, float)) or v is None}
    print(json.dumps(headline, indent=1))
    print(f"{prog}: wrote {os.path.join(out_dir, 'results.json')}")
    return 0

