"""The host-independent base of every plugin trainer.

Plugin trainers subclass ``PluginUnlearnTrainer`` (a ``transformers.Trainer``). The lite host
uses them as they are; the OpenUnlearning host rebases them on OU's ``UnlearnTrainer``
(``atwu_plugin.hosts.openunlearning.rebase_on_openunlearning``) so OU's evaluators,
DeepSpeed preparation and prediction step apply unchanged.
"""

import contextlib
import copy
import inspect
import os
import random
from typing import Optional

import numpy as np
import torch
from transformers import Trainer

from atwu_plugin.utils.atomic import atomic_write_text

_TRAINER_INIT_PARAMS = set(inspect.signature(Trainer.__init__).parameters)
COMPLETE_MARKER = "COMPLETE"


def last_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The newest ``checkpoint-N`` folder of ``output_dir`` whose save finished (has the
    ``COMPLETE`` marker), or None. Use it to resume after a crash."""
    if not os.path.isdir(output_dir):
        return None
    done = [d for d in os.listdir(output_dir)
            if d.startswith("checkpoint-") and d.split("-")[-1].isdigit()
            and os.path.exists(os.path.join(output_dir, d, COMPLETE_MARKER))]
    if not done:
        return None
    return os.path.join(output_dir, max(done, key=lambda d: int(d.split("-")[-1])))


def _adapt_tokenizer_kwarg(kwargs: dict) -> dict:
    """transformers >= 4.46 renamed ``tokenizer`` to ``processing_class`` (5.x drops the
    old name). OU d3d7cf9 passes ``tokenizer=``, OU's newer line ``processing_class=``:
    accept either and hand the Trainer the one its version knows."""
    kwargs = dict(kwargs)
    if "tokenizer" in kwargs and "tokenizer" not in _TRAINER_INIT_PARAMS:
        kwargs["processing_class"] = kwargs.pop("tokenizer")
    if "processing_class" in kwargs and "processing_class" not in _TRAINER_INIT_PARAMS:
        kwargs["tokenizer"] = kwargs.pop("processing_class")
    return kwargs


class PluginUnlearnTrainer(Trainer):
    """Base class: OU's constructor contract (``evaluators``, ``template_args``, method
    args as keyword arguments) and OU's batch layout ``{"forget": ..., "retain": ...}``."""

    # True when rebased on OU's trainer, whose __init__ takes evaluators/template_args itself.
    _passes_eval_kwargs = False
    # What the host fills in (a host reads it, nobody lists trainers elsewhere): "aux_model"
    # (method_args.aux_model_path: the benchmark's model that never saw the forget set, when
    # the config names none) and "token_log" (method_args.token_log: the run's weight log).
    needs_from_host: tuple = ()
    # Loads a saved model by path (e.g. an aux model); set by the host (zoo is above trainers).
    model_loader = None

    def __init__(self, *args, evaluators=None, template_args=None, on_nonfinite: str = "stop", model_loader=None,
                 **kwargs):
        from atwu_plugin.trainers.checks import check_has_answer_tokens, check_vocab
        from atwu_plugin.trainers.nonfinite import install_nonfinite_guard

        if model_loader is not None:
            self.model_loader = model_loader
        self.evaluators = evaluators
        self.template_args = template_args
        kwargs = _adapt_tokenizer_kwarg(kwargs)
        # Fail before training, with sizes/sample named, not with an index error mid-run; and
        # before Trainer.__init__ creates output_dir, so bad input leaves nothing on disk.
        tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        if tokenizer is not None and kwargs.get("model") is not None:
            check_vocab(tokenizer, kwargs["model"])
        if kwargs.get("train_dataset") is not None:
            check_has_answer_tokens(kwargs["train_dataset"])
        if self._passes_eval_kwargs:
            super().__init__(*args, evaluators=evaluators, template_args=template_args, **kwargs)
        else:
            super().__init__(*args, **kwargs)
        install_nonfinite_guard(self, on_nonfinite)

    @property
    def host_tokenizer(self):
        """The tokenizer under whichever attribute this transformers version uses."""
        return getattr(self, "processing_class", None) or getattr(self, "tokenizer", None)

    def frozen_copy(self, model: Optional[torch.nn.Module] = None) -> torch.nn.Module:
        """A frozen copy of the (initial) model, prepared for this run's distribution setup."""
        ref = copy.deepcopy(model if model is not None else self.model)
        ref.eval()
        ref.requires_grad_(False)
        if getattr(self, "is_deepspeed_enabled", False) and hasattr(self, "_prepare_deepspeed"):
            return self._prepare_deepspeed(ref)  # OU's ZeRO-aware preparation
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

    def setup_batches(self, dataset, batch_size: int):
        """One ordered pass over ``dataset`` as device-ready batches (for one-off setup passes).

        Slices and the collator, no DataLoader: creating a DataLoader iterator draws its base
        seed from torch's global RNG, the stream OpenUnlearning's ``ForgetRetainDataset``
        draws the paired retain samples from, so a setup pass that used one changed which
        retain samples the host's training batches got (issue 16). Run it inside
        ``host_rng_untouched()`` all the same: forwards with dropout, a dataset or a weighter
        may draw."""
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            yield self._prepare_inputs(self.data_collator(items))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs):
        loss, outputs = self.unlearning_loss(model, inputs)
        return (loss, outputs) if return_outputs else loss

    # ---- checkpoints: a checkpoint is complete only once its marker exists ------------------
    def _save_checkpoint(self, model, trial, *args, **kwargs):
        """transformers writes ``checkpoint-N/`` in place: a crash mid-save leaves a partial
        folder. Extra state (e.g. ATWU's scorer) is written next, then ``COMPLETE`` is created
        atomically last; ``last_complete_checkpoint`` only trusts folders that have it."""
        super()._save_checkpoint(model, trial, *args, **kwargs)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            self.save_extra_state(folder)
            atomic_write_text(os.path.join(folder, COMPLETE_MARKER), f"step {self.state.global_step}\n")

    def save_extra_state(self, folder: str) -> None:
        """Method state beyond model/optimizer/scheduler/RNG (override; default: none)."""

    def load_extra_state(self, folder: str) -> None:
        """Read back what ``save_extra_state`` wrote, when resuming from ``folder`` (override)."""

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        # Under DeepSpeed/FSDP transformers restores the model itself and never calls
        # _load_from_checkpoint: read the extra state here (every rank reads rank 0's file).
        if getattr(self, "is_deepspeed_enabled", False) or getattr(self, "is_fsdp_enabled", False):
            path = resume_from_checkpoint
            if isinstance(path, bool):
                from transformers.trainer_utils import get_last_checkpoint

                path = get_last_checkpoint(self.args.output_dir) if path else None
            if path:
                self.load_extra_state(path)
        if getattr(self, "is_deepspeed_enabled", False):  # resuming reads DeepSpeed's pickles
            from atwu_plugin.trainers.zero import deepspeed_checkpoint_globals

            with torch.serialization.safe_globals(deepspeed_checkpoint_globals()):
                return super().train(resume_from_checkpoint, *args, **kwargs)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, *args, **kwargs):
        super()._load_from_checkpoint(resume_from_checkpoint, *args, **kwargs)
        self.load_extra_state(resume_from_checkpoint)

    def _load_rng_state(self, checkpoint):
        """transformers < 4.50 saves numpy RNG state with ``torch.save`` and reloads it with
        torch's default ``weights_only=True`` (torch >= 2.6), which rejects numpy arrays.
        Allow exactly the numpy types of an RNG state, nothing else (no arbitrary pickle)."""
        import numpy as np

        np_core = getattr(np, "_core", None) or np.core
        allowed = [np_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
        with torch.serialization.safe_globals(allowed):
            return super()._load_rng_state(checkpoint)

    # OU's newer line discussed a split into ``compute_unlearn_loss``; serve it too.
    def compute_unlearn_loss(self, model, inputs, return_outputs=False, **kwargs):
        return self.compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)

    def unlearning_loss(self, model, inputs):
        """Return ``(loss, forget_outputs)``; implemented by each method."""
        raise NotImplementedError


@contextlib.contextmanager
def host_rng_untouched():
    """Run a one-off setup pass without moving the global RNG streams the host trains with:
    torch's (CPU and initialized CUDA devices), numpy's and Python's ``random`` are saved and
    restored, so the host draws the same data order, retain pairs and dropout masks as a run
    without the setup pass. Draws inside still happen, from a copy of the streams."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def model_inputs(batch: dict) -> dict:
    """The keys a causal LM's forward takes (batches also carry index/token_kind/labels):
    ``input_ids`` and ``attention_mask``. Losses are computed here from the logits, so the
    labels are not passed (the model would compute a loss nobody uses)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
