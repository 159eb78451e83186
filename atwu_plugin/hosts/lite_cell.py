"""One lite-host cell: a (benchmark, method, seed) unlearning run on ``transformers.Trainer``,
evaluated, as a results.json run dict. ``atwu-leaderboard``, ``atwu-demo`` and ``atwu-unlearn``
(lite) all run their trainings through :func:`run_lite_cell`."""

import json
import os
import time
from typing import Callable, Optional, Sequence

import torch
from transformers import TrainerCallback, set_seed

from atwu_plugin.hosts.checks import check_max_positions
from atwu_plugin.hosts.components import trainer_class
from atwu_plugin.hosts.lite_outputs import resolve_resume_checkpoint, save_unlearned_model
from atwu_plugin.hosts.lite_trainer import build_trainer, load_trainer_config
from atwu_plugin.tasks import AUX_MODEL_KEYWORDS
from atwu_plugin.trainers.token_log import span_bootstrap, span_metrics
from atwu_plugin.utils.atomic import atomic_write_text
from atwu_plugin.zoo.loading import load_causal_lm


class _StepProgress(TrainerCallback):
    def __init__(self, on_step: Callable):
        self.on_step = on_step

    def on_step_end(self, args, state, control, **kwargs):
        self.on_step(state.global_step, state.max_steps)


def run_lite_cell(bench, trainer: str, overrides: dict, seed: int, out_dir: str,
                  token_log_path: Optional[str] = None, on_step: Optional[Callable] = None, log=print,
                  trajectory_points: int = 0, trajectory_forget_truth_ratio: bool = True,
                  model_path: Optional[str] = None, save_model_dir: Optional[str] = None,
                  run_config: Optional[dict] = None, callbacks: Sequence = ()) -> dict:
    """Unlearn ``bench``'s target model (or ``model_path``) with trainer config ``trainer``
    and evaluate it.

    Training resumes from ``args.resume_from_checkpoint`` or else from the newest complete
    checkpoint in ``out_dir`` (a rerun after an interruption continues where it stopped);
    ``token_log_path`` then keeps only the records up to that checkpoint's step (a fresh run
    starts it empty). ``save_model_dir``: save the unlearned model there (safetensors +
    tokenizer + ``run_config`` and the resolved trainer config) before evaluating it.
    ``trajectory_points`` > 0 also records probability-only evaluations during training
    (``result["trajectory"]``) for comparisons at matched forgetting;
    ``trajectory_forget_truth_ratio=False`` leaves forget_quality/forget_truth_ratio out of
    them (see :class:`~atwu_plugin.evals.trajectory.EvaluatorTrajectory`)."""
    # Tiny models do not scale across threads, and a fixed thread count keeps a cell's
    # numbers independent of how many cells run side by side (``atwu-leaderboard --jobs``).
    torch.set_num_threads(getattr(bench, "num_threads", 1))
    t0 = time.time()
    bench.prepare(log=log)
    set_seed(seed)
    tokenizer = bench.tokenizer()
    cfg = load_trainer_config(trainer, overrides, base_args=bench.trainer_args)
    provide_host_inputs(cfg, bench, token_log_path)
    resume = resolve_resume_checkpoint((cfg.get("args") or {}).get("resume_from_checkpoint"), str(out_dir))
    model = load_causal_lm(model_path or bench.model_path)
    if hasattr(bench, "configure_model"):  # e.g. tofu_real trains only the layers its zoo fine-tuned
        bench.configure_model(model)
    forget_ds, retain_ds = bench.train_datasets(tokenizer)
    check_max_positions(model, {"forget": forget_ds, "retain": retain_ds})
    evaluator = bench.evaluator(tokenizer)
    trainer_obj = build_trainer(cfg, model, tokenizer, forget_ds, retain_ds, str(out_dir), seed, bench.template_args)
    if on_step is not None:
        trainer_obj.add_callback(_StepProgress(on_step))
    for callback in callbacks:
        trainer_obj.add_callback(callback)
    if token_log_path:
        _trim_token_log(token_log_path, _checkpoint_step(resume) if resume else None)
    if resume:
        log(f"resuming from {resume}")
    trajectory = None
    if trajectory_points > 0:
        from atwu_plugin.evals.trajectory import EvaluatorTrajectory

        # the last point comes from the full evaluation below (the same numbers, one pass fewer)
        trajectory = EvaluatorTrajectory(evaluator, trajectory_points, trajectory_forget_truth_ratio,
                                         last_point_from_host=True)
        trainer_obj.add_callback(trajectory)
    trainer_obj.train(resume_from_checkpoint=resume)
    train_s = time.time() - t0
    saved_model = None
    if save_model_dir:  # before evaluating: a failed evaluation must not lose the trained model
        saved_model = save_unlearned_model(trainer_obj.model, tokenizer, save_model_dir,
                                           {**(run_config or {}), "trainer_config": cfg, "resumed_from": resume})
    metrics = evaluator.evaluate(trainer_obj.model)
    metrics.pop("details", None)
    if trajectory is not None:
        trajectory.add_final(trainer_obj.state.global_step, metrics)
    metrics.pop("samples", None)  # per-sample rows belong to the trajectory points, not the final metrics
    ou = metrics.pop("ou", {})
    metrics.update(span_metrics(trainer_obj))  # span_* of every label source (None when not collected)
    metrics["train_s"] = round(train_s, 2)
    result = {"metrics": metrics, "ou_metrics": ou, "model": model_path or bench.model_name,
              "wall_s": round(time.time() - t0, 2)}
    if saved_model:
        result["saved_model"] = saved_model
    bootstrap = span_bootstrap(trainer_obj)
    if bootstrap:  # span AUROC under fixed resamplings of the forget samples (leaderboard/paired.py)
        result["bootstrap"] = bootstrap
    if trajectory is not None:
        result["trajectory"] = trajectory.trajectory
    return result


def resolve_aux_model(value: Optional[str], bench) -> Optional[str]:
    """The auxiliary model's path for ``method_args.aux_model_path=value``: a path is kept,
    a keyword of :data:`AUX_MODEL_KEYWORDS` (or no value, or OU's mandatory marker ``???``)
    is read from the benchmark."""
    if value in (None, "???"):  # the default: the benchmark's base model, or None if it has none
        return getattr(bench, "aux_model_path", None)  # (only a weighter that needs one then stops)
    if not isinstance(value, str) or not value.startswith("benchmark:"):
        return value
    if value not in AUX_MODEL_KEYWORDS:
        raise ValueError(f"method_args.aux_model_path={value!r}: expected a path or one of "
                         f"{', '.join(AUX_MODEL_KEYWORDS)}")
    path = getattr(bench, AUX_MODEL_KEYWORDS[value], None)
    if path is None:  # asked for by name: say the benchmark has none
        raise ValueError(f"method_args.aux_model_path={value!r}: benchmark {type(bench).__name__} has no such model "
                         f"({AUX_MODEL_KEYWORDS[value]} is None)")
    return path


def provide_host_inputs(cfg: dict, bench, token_log_path: Optional[str]) -> dict:
    """Fill in the ``method_args`` the trainer class declares it needs from the host
    (``PluginUnlearnTrainer.needs_from_host``): ``"aux_model"``, the benchmark's auxiliary
    model (a model that never saw the forget set) unless the config names one;
    ``"token_log"``, the run's token-weight log when the run keeps one. Returns ``cfg``."""
    needs = getattr(trainer_class(cfg["handler"]), "needs_from_host", ())
    method_args = cfg.setdefault("method_args", {}) if needs else {}
    if "aux_model" in needs:
        method_args["aux_model_path"] = resolve_aux_model(method_args.get("aux_model_path"), bench)
    if "token_log" in needs and token_log_path:
        method_args.setdefault("token_log", {"path": str(token_log_path), "every": 10, "n_samples": 4})
    return cfg


def _checkpoint_step(checkpoint: str) -> Optional[int]:
    tail = os.path.basename(os.path.normpath(checkpoint)).rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


def _trim_token_log(path: str, up_to_step: Optional[int]) -> None:
    """A fresh run starts ``path`` empty (a rerun must not append to the last run's records);
    a resumed run keeps the records of steps <= ``up_to_step`` (those it does not redo)."""
    if not os.path.exists(path):
        return
    if up_to_step is None:
        os.unlink(path)
        return
    keep = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                if json.loads(line).get("step", 0) <= up_to_step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, AttributeError):  # a line cut by the kill
                continue
    atomic_write_text(path, "".join(keep))
