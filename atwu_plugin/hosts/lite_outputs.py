"""What a lite run leaves behind: the unlearned model, checkpoints to resume from, and a
clean stop on Ctrl-C (a complete checkpoint saved at a step boundary)."""

import contextlib
import os
from pathlib import Path
from typing import Optional

from transformers import TrainerCallback

MODEL_DIR_NAME = "model"  # <output_dir>/model: the unlearned model of atwu-unlearn
RUN_CONFIG_FILE = "atwu_run.json"  # the config a run used, next to its model and in output_dir


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
