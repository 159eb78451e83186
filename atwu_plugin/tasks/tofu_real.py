"""``tofu_real``: the real TOFU text on a real pretrained model from the zoo (``zoo.real``).

The model is named by ``model`` (default ``smollm2-135m``: SmolLM2-135M-Instruct, GGUF Q4_1
weights dequantised to float32, prompted through its chat template). Data, labels, splits and
evaluation are ``tofu_tiny``'s (word labels and retain-model proxy labels, OU's TOFU recipe
with nine distinct utility terms), with budgets sized for a 135M model on a CPU: the
real-author and world-fact probes of model utility are subsampled evenly (``n_world_eval``).

``zoo`` says which models play target / retain / reference:

* ``forget01`` (``zoo.tofu_real``, the forgetting benchmark "TOFU-real"): the target is the real
  model fine-tuned (top 8 of 30 layers) on forget01's 2 authors + the first 5 retain authors;
  the retain model is the same fine-tune on the 5 retain authors only; the pretrained model
  (never saw a TOFU author) is the reference weighting's auxiliary model. Unlearning trains
  the same top layers (``top_layers``), its retain set is the 5 authors' 100 QA, the retain
  probes are theirs in ``retain_perturbed``, the holdout probes ``holdout01``.
* ``pretrained``: the converted model itself is the target, the retain model and the
  reference model. It has never seen TOFU's fictitious authors, so this is the *plumbing*
  configuration: everything runs end to end on a real tokenizer, vocabulary and chat
  template, but there is nothing to forget; "KL to retain" is the divergence from the
  starting model (collateral damage), and the proxy labels (target vs retain) are all generic.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from atwu_plugin.tasks import BENCHMARKS
from atwu_plugin.tasks.tofu_tiny import TofuTinyBenchmark
from atwu_plugin.data.tofu_splits import TofuSplits, evenly_spaced
from atwu_plugin.zoo.build import default_cache_dir
from atwu_plugin.zoo.real import REAL_MODELS, real_model
from atwu_plugin.zoo.tofu_real import TOFU_REAL_ZOOS, build_tofu_real_zoo, retain_probes, retain_records
from atwu_plugin.zoo.trainable import train_only_top_layers

# pretrained: one epoch over forget05 at batch 8 is 25 steps; lr 1e-5 is OU's TOFU learning rate.
TOFU_REAL_TRAINER_ARGS = {"learning_rate": 1.0e-5, "num_train_epochs": 1, "per_device_train_batch_size": 8}
# Fine-tuned zoos: forget01 (40 QA) at batch 8 is 5 steps per epoch; 3 epochs = 15 steps. Set
# before the comparison from one calibration run each of uniform GradDiff and NPO (seed 0, lr 1e-4,
# 25 steps: both reached 0.5x their starting forget probability at step ~12; docs/real_model.md)
# and shortened to 15 steps at 1.5e-4 to fit the 2-core budget; the same for every method.
TOFU_REAL_FINETUNED_TRAINER_ARGS = {"learning_rate": 1.5e-4, "num_train_epochs": 3, "per_device_train_batch_size": 8}
ZOOS = ("pretrained", *TOFU_REAL_ZOOS)


@dataclass
class RealTofuZoo:
    """The paths ``ZooBackedBenchmark`` and ``TofuTinyBenchmark`` read, for a real model."""

    root: str  # the benchmark's own cache (proxy labels, reference statistics); not the model entry
    tokenizer: str
    base: str
    target: str
    retain: Dict[str, str]
    template_args: dict
    manifest: dict = field(default_factory=dict)


@BENCHMARKS.register("tofu_real")
class TofuRealBenchmark(TofuTinyBenchmark):
    name = "tofu_real"

    def __init__(self, data_dir: Optional[str] = None, forget_split: Optional[str] = None, model: str = "smollm2-135m",
                 zoo: str = "pretrained", n_forget_eval: int = 50, n_retain_eval: int = 50, n_holdout_eval: int = 50,
                 n_world_eval: int = 50,
                 max_new_tokens: int = 48, eval_batch_size: int = 16, cache_dir: Optional[str] = None,
                 trainer_args: Optional[dict] = None, max_length: int = 256, top_layers: Optional[int] = None):
        if model not in REAL_MODELS:
            raise ValueError(f"benchmark tofu_real: model={model!r}; expected one of {sorted(REAL_MODELS)}")
        if zoo not in ZOOS:
            raise ValueError(f"benchmark tofu_real: zoo={zoo!r}; expected one of {list(ZOOS)}")
        zoo_spec = TOFU_REAL_ZOOS.get(zoo)
        if zoo_spec is not None:
            if zoo_spec.model != model:
                raise ValueError(f"benchmark tofu_real: zoo={zoo!r} is built from {zoo_spec.model!r}, not model={model!r}")
            if forget_split not in (None, zoo_spec.forget_split):
                raise ValueError(f"benchmark tofu_real: zoo={zoo!r} knows the authors of {zoo_spec.forget_split}; "
                                 f"forget_split={forget_split!r} was never learnt (leave it unset)")
            forget_split = zoo_spec.forget_split
            top_layers = zoo_spec.top_layers if top_layers is None else top_layers
        base_args = TOFU_REAL_FINETUNED_TRAINER_ARGS if zoo_spec is not None else TOFU_REAL_TRAINER_ARGS
        super().__init__(data_dir=data_dir, forget_split=forget_split or "forget05", zoo="default",
                         n_forget_eval=n_forget_eval, n_retain_eval=n_retain_eval, n_holdout_eval=n_holdout_eval,
                         max_new_tokens=max_new_tokens, eval_batch_size=eval_batch_size, cache_dir=cache_dir,
                         trainer_args={**base_args, **(trainer_args or {})}, max_length=max_length)
        if not isinstance(n_world_eval, int) or n_world_eval < 1:
            raise ValueError(f"benchmark tofu_real: n_world_eval={n_world_eval!r}; expected a positive integer")
        if top_layers is not None and (not isinstance(top_layers, int) or top_layers < 1):
            raise ValueError(f"benchmark tofu_real: top_layers={top_layers!r}; expected a positive integer "
                             "(or unset: all weights)")
        self.real_name, self.zoo_name, self.spec, self.zoo_spec = model, zoo, None, zoo_spec
        self.top_layers = top_layers
        self.n_eval["world"] = n_world_eval

    def configure_model(self, model) -> None:
        """Called by the host on the loaded target: unlearning trains the top ``top_layers``
        decoder layers (those the zoo fine-tuned) when set, all weights otherwise."""
        if self.top_layers is not None:
            train_only_top_layers(model, self.top_layers)

    def retain_train_records(self) -> list:
        if self.zoo_spec is None:
            return super().retain_train_records()
        return retain_records(self.splits, self.zoo_spec)

    def retain_eval_records(self) -> list:
        if self.zoo_spec is None:
            return super().retain_eval_records()
        return retain_probes(self.splits, self.zoo_spec)

    def prepare(self, log=print):
        if self.zoo is None and self.zoo_spec is not None:
            built = build_tofu_real_zoo(self.data_dir, self.zoo_spec, self.cache_dir, log=log)
            root = Path(built.root) / "benchmark"
            root.mkdir(parents=True, exist_ok=True)
            self.zoo = RealTofuZoo(root=str(root), tokenizer=built.base, base=built.base, target=built.target,
                                   retain={self.retain_split: built.retain}, template_args=built.template_args,
                                   manifest=built.manifest)
            self.splits = TofuSplits(self.data_dir)
        if self.zoo is None:
            entry = real_model(self.real_name, self.cache_dir, log=log)
            root = Path(self.cache_dir or default_cache_dir()) / f"tofu-real-{os.path.basename(entry.path)}-{self.zoo_name}"
            root.mkdir(parents=True, exist_ok=True)
            self.zoo = RealTofuZoo(root=str(root), tokenizer=entry.path, base=entry.path, target=entry.path,
                                   retain={self.retain_split: entry.path}, template_args=entry.template_args,
                                   manifest=entry.manifest)
            self.splits = TofuSplits(self.data_dir)
        return self

    def eval_splits(self) -> dict:
        """``tofu_tiny``'s splits with the real-author and world-fact probes subsampled evenly to
        ``n_world_eval`` each (all 100 + 117 of them, each with 5 perturbed answers, dominate an
        evaluation of a 135M model on a CPU)."""
        splits = super().eval_splits()
        for name in ("ra", "wf"):
            splits[name] = evenly_spaced(splits[name], self.n_eval["world"])
        return splits

    @property
    def model_name(self) -> str:
        m = self.prepare().zoo.manifest
        trained = f", top {self.top_layers} layers trained" if self.top_layers else ""
        return f"{self.real_name} ({m['quantisation']}; sha256 {m['gguf_sha256'][:12]}), zoo {self.zoo_name}{trained}"
