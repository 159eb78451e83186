"""The lite host: one unlearning or evaluation job (``atwu-unlearn`` / ``atwu-eval`` without
OpenUnlearning) on ``transformers.Trainer``.

The job's parts live beside it: ``lite_trainer`` (trainer configs -> a trainer),
``lite_cell`` (one unlearning run, evaluated), ``lite_outputs`` (saved model, checkpoints,
Ctrl-C) and ``checks`` (everything checked before a model is loaded); their public names are
importable from here too.
"""

import json
import os

from atwu_plugin.hosts.checks import check_max_positions, make_benchmark  # noqa: F401  (public here)
from atwu_plugin.hosts.lite_outputs import (  # noqa: F401  (public here)
    MODEL_DIR_NAME,
    RUN_CONFIG_FILE,
    StopOnInterrupt,
    TrainingInterrupted,
    resolve_resume_checkpoint,
    save_unlearned_model,
)
from atwu_plugin.hosts.lite_cell import run_lite_cell
from atwu_plugin.hosts.lite_trainer import (  # noqa: F401  (public here)
    CONFIG_DIR,
    build_trainer,
    lite_training_args,
    load_trainer_config,
    trainer_config_names,
)
from atwu_plugin.trainers.checks import check_vocab

RUN_CONFIG_IGNORED = ("args.resume_from_checkpoint",)  # trainer overrides that do not change a run


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

    from atwu_plugin.plugins import PluginLoadError
    from atwu_plugin.trainers.base import last_complete_checkpoint
    from atwu_plugin.trainers.nonfinite import NonFiniteLossError
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
                metrics.pop("samples", None)
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
    except (ValueError, KeyError, OSError, TypeError, OutputDirLocked, PluginLoadError) as err:  # OSError: missing/unreadable files
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
