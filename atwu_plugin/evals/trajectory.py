"""Forgetting trajectories: cheap token metrics logged every few steps, for comparisons of
methods at *matched forgetting* (interpolate each run's curve at the same x)."""

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from transformers import TrainerCallback

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.evals.token_metrics import TokenKindProbAccumulator
from atwu_plugin.losses.tokens import token_logprobs


class TrajectoryCallback(TrainerCallback):
    """Every ``every`` steps (and at step 0), mean token probability by kind on ``dataset``."""

    def __init__(self, dataset, pad_token_id: int, every: int = 5, batch_size: int = 64):
        self.dataset, self.every, self.batch_size = dataset, every, batch_size
        self.collate = TokenLabelCollator(pad_token_id)
        self.points: List[Dict[str, float]] = []

    @torch.no_grad()
    def measure(self, model, step: int):
        acc = TokenKindProbAccumulator()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        for start in range(0, len(self.dataset), self.batch_size):
            batch = self.collate([self.dataset[i] for i in range(start, min(start + self.batch_size, len(self.dataset)))])
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
            acc.update(token_logprobs(logits, batch["labels"].to(device)), batch["token_kind"].to(device))
        model.train(was_training)
        r = acc.result()
        self.points.append({"step": step, **{f"forget_{k}": float(r[k]) for k in ("specific_prob", "generic_prob", "template_prob", "shared_prob")}})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.measure(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self.measure(model, state.global_step)


class EvaluatorTrajectory(TrainerCallback):
    """``points`` probability-only evaluations (``evaluator.evaluate(model, generate=False,
    utility_terms=False)``: no generation, no model-utility terms) spread evenly over
    training, plus one at step 0: the curves the matched-forgetting comparison interpolates.
    ``forget_truth_ratio=False`` also skips the forget split's paraphrased/perturbed answers
    (forget_quality and forget_truth_ratio are then None), most of a pass on TOFU.
    Evaluation runs under no_grad in eval mode and draws no random numbers, so the trained
    model is the same with or without this callback.

    ``last_point_from_host=True``: the host evaluates the final model in full anyway, so the
    callback skips its pass at the last step and the host hands that evaluation to
    ``add_final`` (a full evaluation computes every probability metric of a pass, on the same
    batches: the point is the same, one pass cheaper)."""

    def __init__(self, evaluator, points: int = 10, forget_truth_ratio: bool = True,
                 last_point_from_host: bool = False):
        if points < 1:
            raise ValueError(f"points={points}; expected >= 1")
        self.evaluator, self.points, self.forget_truth_ratio = evaluator, points, forget_truth_ratio
        self.last_point_from_host = last_point_from_host
        self.trajectory: List[Dict[str, float]] = []
        self._due: set = set()

    def measure(self, model, step: int):
        res = self.evaluator.evaluate(model, generate=False, utility_terms=False,
                                      forget_truth_ratio=self.forget_truth_ratio)
        self._append(step, res)

    def _append(self, step: int, res: dict) -> None:
        point = {"step": step, **{k: v for k, v in res.items()
                                  if k not in ("ou", "details") and (v is None or isinstance(v, float))}}
        if res.get("samples"):  # per-sample sums/counts: intervals over samples (leaderboard/paired.py)
            point["samples"] = res["samples"]
        self.trajectory.append(point)

    def add_final(self, step: int, metrics: dict) -> None:
        """The host's full evaluation of the final model as the last point (when
        ``last_point_from_host``; a no-op if a pass already measured ``step``)."""
        if self.last_point_from_host and not any(p["step"] == step for p in self.trajectory):
            self._append(step, metrics)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        n = state.max_steps
        self._due = {max(1, round(n * i / self.points)) for i in range(1, self.points + 1)}
        if self.last_point_from_host:
            self._due.discard(n)
        if not self.trajectory or self.trajectory[0]["step"] != 0:
            self.measure(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self._due:
            self.measure(model, state.global_step)


def crossing(xs, x: float) -> Optional[Tuple[int, int, float]]:
    """Where the (decreasing-in-time) curve ``xs`` first reaches ``x``: the indices of the two
    points around it and the interpolation weight of the second; None if it never gets there."""
    for i in range(1, len(xs)):
        lo, hi = min(xs[i - 1], xs[i]), max(xs[i - 1], xs[i])
        if lo <= x <= hi:
            return (i - 1, i, 1.0 if hi == lo else float((x - xs[i - 1]) / (xs[i] - xs[i - 1])))
    return None


def value_at(points: List[Dict[str, float]], x_key: str, x: float, y_key: str) -> Optional[float]:
    """Linear interpolation of ``y_key`` where the (decreasing-in-time) curve ``x_key`` first
    reaches ``x``; None if the run never gets there."""
    at = crossing(np.array([p[x_key] for p in points], dtype=float), x)
    if at is None:
        return None
    i0, i1, a = at
    ys = np.array([p[y_key] for p in points], dtype=float)
    return float(ys[i0] + a * (ys[i1] - ys[i0]))
