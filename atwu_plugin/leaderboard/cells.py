"""The cell runner behind ``atwu-leaderboard`` and ``atwu-demo``: one (benchmark, method,
seed) unlearning run on the lite host, evaluated, as a results.json run dict."""

import time
from typing import Callable, Optional

import torch
from transformers import TrainerCallback, set_seed

from atwu_plugin.benchmarks import get_benchmark
from atwu_plugin.hosts.lite import build_trainer, load_trainer_config
from atwu_plugin.zoo.loading import load_causal_lm

PLUGIN_HANDLERS = ("TokenWeightedUnlearn", "ATWU")


class _StepProgress(TrainerCallback):
    def __init__(self, on_step: Callable):
        self.on_step = on_step

    def on_step_end(self, args, state, control, **kwargs):
        self.on_step(state.global_step, state.max_steps)


def run_lite_cell(bench, trainer: str, overrides: dict, seed: int, out_dir: str,
                  token_log_path: Optional[str] = None, on_step: Optional[Callable] = None, log=print,
                  trajectory_points: int = 0, trajectory_forget_truth_ratio: bool = True) -> dict:
    """Unlearn ``bench``'s target model with trainer config ``trainer`` and evaluate it.

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
    if cfg["handler"] in PLUGIN_HANDLERS:
        method_args = cfg.setdefault("method_args", {})
        if method_args.get("aux_model_path") in (None, "???"):  # "???": OU's mandatory-value marker
            method_args["aux_model_path"] = bench.aux_model_path
        if token_log_path:
            method_args.setdefault("token_log", {"path": str(token_log_path), "every": 10, "n_samples": 4})
    model = load_causal_lm(bench.model_path)
    forget_ds, retain_ds = bench.train_datasets(tokenizer)
    evaluator = bench.evaluator(tokenizer)
    trainer_obj = build_trainer(cfg, model, tokenizer, forget_ds, retain_ds, str(out_dir), seed, bench.template_args)
    if on_step is not None:
        trainer_obj.add_callback(_StepProgress(on_step))
    trajectory = None
    if trajectory_points > 0:
        from atwu_plugin.evals.trajectory import EvaluatorTrajectory

        trajectory = EvaluatorTrajectory(evaluator, trajectory_points, trajectory_forget_truth_ratio)
        trainer_obj.add_callback(trajectory)
    trainer_obj.train()
    train_s = time.time() - t0
    metrics = evaluator.evaluate(trainer_obj.model)
    metrics.pop("details", None)
    ou = metrics.pop("ou", {})
    span = trainer_obj.span_metrics() if hasattr(trainer_obj, "span_metrics") else {}
    # every span_* metric the trainer reports (one per label source), under stable names
    metrics.update(span_auroc=None, span_ap=None, span_precision_at_k=None)
    for k, v in span.items():
        metrics[k if k.startswith("span_") else f"span_{k}"] = v
    metrics["train_s"] = round(train_s, 2)
    result = {"metrics": metrics, "ou_metrics": ou, "model": bench.model_name, "wall_s": round(time.time() - t0, 2)}
    if trajectory is not None:
        result["trajectory"] = trajectory.trajectory
    return result


def default_run_cell(cell) -> dict:
    if cell.host != "lite":
        from atwu_plugin.hosts.openunlearning_cells import run_openunlearning_cell

        return run_openunlearning_cell(cell)
    options = dict(cell.benchmark_options)
    # ``benchmark: <registered name>`` lets one spec list a benchmark twice (e.g. two forget
    # splits) under two names
    bench = get_benchmark(options.pop("benchmark", cell.benchmark), **options)
    return run_lite_cell(
        bench, cell.trainer, cell.overrides, cell.seed, str(cell.artifact_dir),
        token_log_path=cell.token_weights_path, on_step=cell.on_step, log=lambda *a: None,
        trajectory_points=getattr(cell, "trajectory_points", 0),
        trajectory_forget_truth_ratio=getattr(cell, "trajectory_forget_truth_ratio", True),
    )
