"""The cell runner behind ``atwu-leaderboard`` and ``atwu-demo``: one (benchmark, method,
seed) unlearning run on the lite host, evaluated, as a results.json run dict."""

import time
from typing import Callable, Optional

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
                  token_log_path: Optional[str] = None, on_step: Optional[Callable] = None, log=print) -> dict:
    """Unlearn ``bench``'s target model with trainer config ``trainer`` and evaluate it."""
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
    trainer_obj = build_trainer(cfg, model, tokenizer, forget_ds, retain_ds, str(out_dir), seed, bench.template_args)
    if on_step is not None:
        trainer_obj.add_callback(_StepProgress(on_step))
    trainer_obj.train()
    train_s = time.time() - t0
    metrics = bench.evaluator(tokenizer).evaluate(trainer_obj.model)
    metrics.pop("details", None)
    ou = metrics.pop("ou", {})
    span = trainer_obj.span_metrics() if hasattr(trainer_obj, "span_metrics") else {}
    metrics.update(
        span_auroc=span.get("span_auroc"),
        span_ap=span.get("span_ap"),
        span_precision_at_k=span.get("precision_at_k"),
        train_s=round(train_s, 2),
    )
    return {"metrics": metrics, "ou_metrics": ou, "model": bench.model_name, "wall_s": round(time.time() - t0, 2)}


def default_run_cell(cell) -> dict:
    if cell.host != "lite":
        from atwu_plugin.hosts.openunlearning import run_openunlearning_cell

        return run_openunlearning_cell(cell)
    bench = get_benchmark(cell.benchmark, **cell.benchmark_options)
    return run_lite_cell(
        bench, cell.trainer, cell.overrides, cell.seed, str(cell.artifact_dir),
        token_log_path=cell.token_weights_path, on_step=cell.on_step, log=lambda *a: None,
    )
