"""The lite host: runs plugin trainers on ``transformers.Trainer`` without OpenUnlearning.

It reads the same trainer configs as OU (``handler:`` + ``method_args`` + ``args``), with
CPU-friendly ``TrainingArguments`` defaults from ``configs/lite/trainer_args.yaml`` in place
of OU's ``trainer/finetune.yaml``.
"""

import contextlib
import json
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback, TrainingArguments

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
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:  # YAML reads true as a bool
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


# ---- what a lite run leaves behind: the unlearned model, checkpoints, a clean Ctrl-C ---------
MODEL_DIR_NAME = "model"  # <output_dir>/model: the unlearned model of atwu-unlearn
RUN_CONFIG_FILE = "atwu_run.json"  # the config a run used, next to its model and in output_dir
RUN_CONFIG_IGNORED = ("args.resume_from_checkpoint",)  # trainer overrides that do not change a run


def save_unlearned_model(model, tokenizer, dest: str, run_config: dict) -> str:
    """Save ``model`` (safetensors), ``tokenizer`` and ``run_config`` (as ``atwu_run.json``)
    to the directory ``dest``, atomically: everything is written into a temporary sibling
    folder that is renamed into place, so ``dest`` is either the previous complete save or the
    new complete one, never a mix. ``atwu-eval model_path=<dest>`` loads it. Returns ``dest``."""
    import glob
    import shutil

    from atwu_plugin.utils.atomic import atomic_write_json

    dest_p = Path(dest)
    dest_p.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest_p.parent.glob(glob.escape(f".{dest_p.name}") + ".*-*"):  # leftovers of a killed save
        if stale.name.startswith((f".{dest_p.name}.tmp-", f".{dest_p.name}.old-")):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = dest_p.parent / f".{dest_p.name}.tmp-{os.getpid()}"
    old = dest_p.parent / f".{dest_p.name}.old-{os.getpid()}"
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / RUN_CONFIG_FILE, run_config)
        if dest_p.exists():
            os.replace(dest_p, old)
        os.replace(tmp, dest_p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dest_p.exists():
            os.replace(old, dest_p)  # put the previous save back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return str(dest_p)


def resolve_resume_checkpoint(requested, output_dir: str) -> Optional[str]:
    """The checkpoint a run resumes from: ``requested`` (``trainer.args.resume_from_checkpoint``:
    a ``checkpoint-N`` folder, or ``true`` for the newest complete one in ``output_dir``), else
    the newest complete checkpoint of ``output_dir`` (a rerun after an interruption), else
    None. A requested folder that does not exist or is not a checkpoint is a ``ValueError``."""
    from atwu_plugin.trainers.base import COMPLETE_MARKER, last_complete_checkpoint

    if requested in (None, False, ""):
        return last_complete_checkpoint(output_dir)
    if requested is True:
        ckpt = last_complete_checkpoint(output_dir)
        if ckpt is None:
            raise ValueError(f"args.resume_from_checkpoint=true: no complete checkpoint-N folder in {output_dir}")
        return ckpt
    path = os.path.expanduser(str(requested))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"args.resume_from_checkpoint={requested}: checkpoint folder not found")
    if not os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise ValueError(f"args.resume_from_checkpoint={requested}: not a checkpoint folder (no trainer_state.json)")
    if not os.path.exists(os.path.join(path, COMPLETE_MARKER)):
        raise ValueError(f"args.resume_from_checkpoint={requested}: incomplete checkpoint (no {COMPLETE_MARKER} "
                         "marker: its save was interrupted); use an earlier checkpoint-N")
    return path


def check_max_positions(model, datasets: dict) -> None:
    """Every sample fits the model's positions (``config.max_position_embeddings``): a longer
    one would run past the positions the model was trained on (RoPE models do not fail, they
    silently produce garbage there). ``ValueError`` naming the sample and the fix otherwise."""
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(max_pos, int):
        return
    for name, ds in datasets.items():
        lengths = [len(ds[i]["input_ids"]) for i in range(len(ds))]
        if lengths and max(lengths) > max_pos:
            i = max(range(len(lengths)), key=lengths.__getitem__)
            n_over = sum(n > max_pos for n in lengths)
            raise ValueError(
                f"{name} dataset: sample {i} has {lengths[i]} tokens ({n_over} sample(s) longer than the model's "
                f"{max_pos} positions, config.max_position_embeddings={max_pos}); lower the benchmark's max_length "
                f"option to {max_pos} or less (benchmark.max_length={max_pos}), or use a model with more positions")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, stopped cleanly at a step boundary: ``checkpoint`` holds the
    complete checkpoint saved at ``step`` (resume with a rerun)."""

    def __init__(self, step: int, max_steps: int, checkpoint: Optional[str]):
        super().__init__(f"interrupted at step {step}")
        self.step, self.max_steps, self.checkpoint = step, max_steps, checkpoint


class StopOnInterrupt(TrainerCallback):
    """First Ctrl-C (SIGINT) during training: finish the current step, save a complete
    checkpoint, raise :class:`TrainingInterrupted`. A second Ctrl-C, or one outside training
    (loading, evaluation), is a plain ``KeyboardInterrupt`` at once. Use ``with cb.sigint():``
    around the run (main thread only)."""

    def __init__(self):
        self.requested = False
        self.training = False

    @contextlib.contextmanager
    def sigint(self):
        import signal

        def handler(signum, frame):
            if self.training and not self.requested:
                self.requested = True
                return
            raise KeyboardInterrupt

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: plain Ctrl-C behaviour
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True  # the trainer saves checkpoint-<step> next, then on_save
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        if self.requested:
            self.training = False
            ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            from atwu_plugin.trainers.base import COMPLETE_MARKER

            raise TrainingInterrupted(state.global_step, state.max_steps,
                                      ckpt if os.path.exists(os.path.join(ckpt, COMPLETE_MARKER)) else None)


def _run_key(cfg: dict) -> dict:
    """What identifies a run's training (its checkpoints are only resumed by the same run)."""
    overrides = {k: v for k, v in cfg["trainer_overrides"].items() if k not in RUN_CONFIG_IGNORED}
    return {"trainer": cfg["trainer"], "benchmark": cfg["benchmark"], "benchmark_options": cfg["benchmark_options"],
            "trainer_overrides": overrides, "seed": cfg["seed"], "model_path": cfg["model_path"]}


def default_output_dir(prog: str, cfg: dict) -> str:
    """``outputs/<prog>/<trainer|eval>-seed<N>``, plus a short hash of the model path,
    benchmark and overrides when any is given: two runs that differ in them never share (and
    overwrite) one default directory."""
    import hashlib

    key = _run_key(cfg)
    if key["model_path"]:
        key["model_path"] = os.path.abspath(os.path.expanduser(key["model_path"]))
    name = f"{cfg['trainer'] or 'eval'}-seed{cfg['seed']}"
    if key["model_path"] or key["trainer_overrides"] or key["benchmark_options"] or cfg["benchmark"] != "embedded":
        blob = json.dumps(key, sort_keys=True, default=str)
        name += "-" + hashlib.sha256(blob.encode()).hexdigest()[:8]
    return os.path.join("outputs", prog, name)


def check_same_run(out_dir: str, cfg: dict) -> None:
    """Refuse to resume checkpoints in ``out_dir`` that another configuration wrote."""
    from atwu_plugin.trainers.base import last_complete_checkpoint

    path = os.path.join(out_dir, RUN_CONFIG_FILE)
    if last_complete_checkpoint(out_dir) is None or not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f).get("run")
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"{path}: unreadable run config next to checkpoints; delete {out_dir} or use "
                         "another output_dir=") from None
    current = json.loads(json.dumps(_run_key(cfg), default=str))
    if stored != current:
        diff = sorted(k for k in set(stored or {}) | set(current) if (stored or {}).get(k) != current.get(k))
        raise ValueError(f"{out_dir} holds checkpoints of another run (differs in: {', '.join(diff)}); "
                         "use another output_dir= (or delete it to start over)")


def run_lite(args) -> int:
    """Run one unlearning (``args.script == "train"``) or evaluation (``"eval"``) on the lite
    host; writes ``<output_dir>/results.json`` atomically and prints the headline metrics.

    Training also saves the unlearned model to ``<output_dir>/model`` (:func:`save_unlearned_model`),
    starts from ``model_path=`` when given, resumes from the newest complete checkpoint of
    ``output_dir`` (or ``trainer.args.resume_from_checkpoint``), and on Ctrl-C saves a
    checkpoint and exits 130. The output directory is locked while the run writes it."""
    import sys

    from atwu_plugin.trainers.base import last_complete_checkpoint
    from atwu_plugin.trainers.guards import NonFiniteLossError
    from atwu_plugin.utils.atomic import atomic_write_json
    from atwu_plugin.utils.run_lock import OutputDirLocked, check_output_dir, output_dir_lock
    from atwu_plugin.zoo.loading import check_model_dir

    prog = "atwu-unlearn" if args.script == "train" else "atwu-eval"

    def fail(err, code):
        print(f"{prog}: error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return code

    out_dir = None
    stopper = StopOnInterrupt()
    try:
        cfg = parse_lite_overrides(args.overrides)
        if args.script == "train" and not cfg["trainer"]:
            raise ValueError(f"missing trainer=NAME; expected one of: {', '.join(trainer_config_names())}")
        # a bad model_path (missing, pickled-only, damaged weights) fails before anything is built
        if cfg["model_path"]:
            check_model_dir(cfg["model_path"])
        bench = make_benchmark(cfg["benchmark"], cfg["benchmark_options"])
        out_dir = cfg["output_dir"] or default_output_dir(prog, cfg)
        check_output_dir(out_dir)
        if args.script == "train":
            from atwu_plugin.leaderboard.cells import run_lite_cell

            # fail fast (names, keys, ranges) before the benchmark's models are built or loaded
            tcfg = load_trainer_config(cfg["trainer"], cfg["trainer_overrides"], base_args=bench.trainer_args)
            resolve_resume_checkpoint(tcfg.get("args", {}).get("resume_from_checkpoint"), out_dir)
            check_same_run(out_dir, cfg)
            with output_dir_lock(out_dir, prog), stopper.sigint():
                atomic_write_json(os.path.join(out_dir, RUN_CONFIG_FILE), {"run": _run_key(cfg)})
                run = run_lite_cell(bench, cfg["trainer"], cfg["trainer_overrides"], cfg["seed"], out_dir,
                                    token_log_path=os.path.join(out_dir, "token_weights.jsonl"),
                                    model_path=cfg["model_path"], callbacks=[stopper],
                                    save_model_dir=os.path.join(out_dir, MODEL_DIR_NAME),
                                    run_config={"prog": prog, **cfg, "output_dir": out_dir})
                method = cfg["trainer"]
        else:
            from atwu_plugin.zoo.loading import load_causal_lm

            with output_dir_lock(out_dir, prog):
                model = load_causal_lm(cfg["model_path"]) if cfg["model_path"] else None
                bench.prepare()
                tokenizer = bench.tokenizer()
                model = model if model is not None else load_causal_lm(bench.model_path)
                check_vocab(tokenizer, model, what=f"model {cfg['model_path'] or bench.model_name}")
                max_len = getattr(bench, "max_length", None)
                max_pos = getattr(model.config, "max_position_embeddings", None)
                if isinstance(max_len, int) and isinstance(max_pos, int) and max_len > max_pos:
                    raise ValueError(f"benchmark.max_length={max_len} is more than the {max_pos} positions of model "
                                     f"{cfg['model_path'] or bench.model_name} (config.max_position_embeddings); "
                                     f"pass benchmark.max_length={max_pos} or less")
                metrics = bench.evaluator(tokenizer).evaluate(model)
                metrics.pop("details", None)
                run = {"metrics": metrics, "model": cfg["model_path"] or bench.model_name}
                method = "eval"
    except TrainingInterrupted as stop:
        where = (f"saved checkpoint {stop.checkpoint}" if stop.checkpoint
                 else "the checkpoint save did not complete")
        print(f"{prog}: interrupted at step {stop.step} of {stop.max_steps}; {where}; rerun the same command "
              "to resume from it", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        ckpt = last_complete_checkpoint(out_dir) if out_dir and args.script == "train" else None
        saved = (f"last complete checkpoint: {ckpt}; rerun the same command to resume from it" if ckpt
                 else "nothing was saved; rerun the same command to start again")
        print(f"{prog}: interrupted; {saved}", file=sys.stderr)
        return 130
    except NonFiniteLossError as err:  # a failed run, not a usage error
        return fail(err, 1)
    except (ValueError, KeyError, OSError, TypeError, OutputDirLocked) as err:  # OSError: missing/unreadable files
        return fail(err, 2)
    import math

    # NaN/inf are not JSON (results.json must stay readable): null, and the names listed
    nonfinite = sorted(k for k, v in run["metrics"].items() if isinstance(v, float) and not math.isfinite(v))
    run["metrics"] = {k: (None if k in nonfinite else v) for k, v in run["metrics"].items()}
    if nonfinite:
        run["metrics"]["nonfinite_metrics"] = nonfinite
    results = {"benchmark": cfg["benchmark"], "model": run.get("model", ""),
               "runs": [{"method": method, "seed": cfg["seed"], "config": cfg, "metrics": run["metrics"],
                         "wall_s": run.get("wall_s", 0.0)}]}
    if run.get("saved_model"):
        results["saved_model"] = run["saved_model"]
    atomic_write_json(os.path.join(out_dir, "results.json"), results)
    headline = {k: v for k, v in run["metrics"].items() if isinstance(v, (int, float)) or v is None}
    print(json.dumps(headline, indent=1))
    if run.get("saved_model"):
        print(f"{prog}: saved the unlearned model to {run['saved_model']} (evaluate it: atwu-eval "
              f"model_path={run['saved_model']})")
    print(f"{prog}: wrote {os.path.join(out_dir, 'results.json')}")
    return 0
