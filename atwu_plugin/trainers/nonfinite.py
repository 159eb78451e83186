"""``NonFiniteLossGuard``: stop (or skip the update) when a training step goes NaN/inf.

transformers does not stop on a NaN loss: with ``logging_nan_inf_filter`` (on by default) the
logged loss even hides it, and the NaN gradients silently destroy the weights at the next
optimizer step. The guard runs just before every optimizer step (after gradient clipping,
which turns a non-finite gradient norm into all-NaN gradients) and checks the gradients,
which are non-finite whenever the loss is:

* ``on_nonfinite="stop"`` (default): raise ``NonFiniteLossError`` naming the step and the last
  checkpoint saved before it; the weights in memory are those of the last good step (this
  update is never applied).
* ``on_nonfinite="skip"``: drop the gradients of that step (the optimizer skips parameters
  without a gradient: no update, no weight decay, no moment update), log a warning with the
  running count, and log the total at the end of training; ``max_skips`` (optional) turns
  too many skips into the same error as "stop".

Not active with ``fp16`` (the GradScaler already skips steps with inf/NaN gradients and
lowers its scale) nor when no parameter holds a ``.grad`` (DeepSpeed ZeRO partitions them;
DeepSpeed has its own overflow handling).
"""

import logging
import os
import re
from typing import Optional

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

MODES = ("stop", "skip")
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the message names the step and the last
    good checkpoint."""


def last_checkpoint(output_dir: str, max_step: Optional[int] = None) -> Optional[str]:
    """The ``checkpoint-N`` directory of ``output_dir`` with the largest ``N <= max_step``."""
    try:
        names = os.listdir(output_dir)
    except OSError:
        return None
    steps = []
    for name in names:
        m = _CHECKPOINT_RE.match(name)
        if m and os.path.isdir(os.path.join(output_dir, name)) and (max_step is None or int(m.group(1)) <= max_step):
            steps.append(int(m.group(1)))
    return os.path.join(output_dir, f"checkpoint-{max(steps)}") if steps else None


def _grads_finite(grads) -> bool:
    """One norm per gradient (no gradient-sized temporaries), one host sync per device. A
    norm that overflows to inf counts as non-finite too (clipping would zero the update)."""
    by_device = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
    flags = []
    for group in by_device.values():
        try:
            norms = torch._foreach_norm(group)
        except (AttributeError, RuntimeError):  # pragma: no cover - old torch / unusual layouts
            norms = [g.norm() for g in group]
        flags.append(torch.isfinite(torch.stack([n.float() for n in norms])).all())
    return all(bool(f) for f in flags)


class NonFiniteLossGuard(TrainerCallback):
    def __init__(self, on_nonfinite: str = "stop", max_skips: Optional[int] = None):
        if on_nonfinite not in MODES:
            raise ValueError(f"on_nonfinite={on_nonfinite!r}: expected one of {', '.join(MODES)}")
        if max_skips is not None and (not isinstance(max_skips, int) or max_skips < 0):
            raise ValueError(f"max_skips={max_skips!r}: expected a non-negative integer or None")
        self.on_nonfinite = on_nonfinite
        self.max_skips = max_skips
        self.n_skipped = 0
        self.skipped_steps = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.n_skipped, self.skipped_steps = 0, []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None or getattr(args, "fp16", False):
            return
        params = [p for p in model.parameters() if p.grad is not None]
        if not params or _grads_finite([p.grad for p in params]):
            return
        step = state.global_step + 1  # the step being taken (checkpoint-N is saved after step N)
        if self.on_nonfinite == "skip" and (self.max_skips is None or self.n_skipped < self.max_skips):
            for p in params:
                p.grad = None
            self.n_skipped += 1
            self.skipped_steps.append(step)
            logger.warning("non-finite loss/gradients at step %d: update skipped (on_nonfinite=skip; %d step(s) "
                           "skipped so far)", step, self.n_skipped)
            return
        raise NonFiniteLossError(self._message(args, state, step))

    def on_train_end(self, args, state, control, **kwargs):
        if self.n_skipped:
            logger.warning("NonFiniteLossGuard: skipped %d of %d step(s) with a non-finite loss/gradients "
                           "(steps %s)", self.n_skipped, state.global_step, _short_list(self.skipped_steps))

    def _message(self, args, state, step: int) -> str:
        ckpt = last_checkpoint(args.output_dir, state.global_step)
        where = (f"last good checkpoint: {ckpt}" if ckpt else
                 f"no checkpoint saved before it in {args.output_dir} (save_strategy={_value(args.save_strategy)})")
        skipped = f" after skipping {self.n_skipped} step(s) (max_skips={self.max_skips})" \
            if self.on_nonfinite == "skip" else ""
        return (f"non-finite loss/gradients (NaN or inf) at step {step}{skipped}; {where}. The update of step "
                f"{step} was not applied. Lower the learning rate, check the data, or set "
                "method_args.on_nonfinite=skip to skip such steps")


def _value(x):
    return getattr(x, "value", x)


def _short_list(xs, n: int = 10) -> str:
    return ", ".join(map(str, xs[:n])) + (", ..." if len(xs) > n else "")


def install_nonfinite_guard(trainer, on_nonfinite: str = "stop",
                            max_skips: Optional[int] = None) -> NonFiniteLossGuard:
    """Add a ``NonFiniteLossGuard`` to ``trainer`` (or reconfigure the one it has); idempotent."""
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, NonFiniteLossGuard):
            fresh = NonFiniteLossGuard(on_nonfinite, max_skips)  # validates
            cb.on_nonfinite, cb.max_skips = fresh.on_nonfinite, fresh.max_skips
            return cb
    guard = NonFiniteLossGuard(on_nonfinite, max_skips)
    trainer.add_callback(guard)
    return guard
