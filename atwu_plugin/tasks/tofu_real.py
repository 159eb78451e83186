"""``tofu_real``: the real TOFU text on a real pretrained model from the zoo (``zoo.real``).

The model is named by ``model`` (default ``smollm2-135m``: SmolLM2-135M-Instruct, GGUF Q4_1
weights dequantised to float32, prompted through its chat template). Data, labels, splits and
evaluation are ``tofu_tiny``'s (word labels and retain-model proxy labels, OU's TOFU recipe
with nine distinct utility terms), with budgets sized for a 135M model on a CPU: the
real-author and world-fact probes of model utility are subsampled evenly (``n_world_eval``).

``zoo`` says which models play target / retain / reference:

* ``pretrained`` (the only one built so far): the converted model itself is the target, the
  retain model and the reference model. It has never seen TOFU's fictitious authors, so this
  is the *plumbing* configuration: everything runs end to end on a real tokenizer, vocabulary
  and chat template, but there is nothing to forget; "KL to retain" is the divergence from
  the starting model (collateral damage), and the proxy labels (target vs retain) are all
  generic. Forgetting results need a target fine-tuned on TOFU authors and a retain model
  without the forget authors (issue 24, part 3).
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

# One epoch over forget05 at batch 8 is 25 steps; lr 1e-5 is OU's TOFU learning rate.
TOFU_REAL_TRAINER_ARGS = {"learning_rate": 1.0e-5, "num_train_epochs": 1, "per_device_train_batch_size": 8}
ZOOS = ("pretrained",)


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

    def __init__(self, data_dir: Optional[str] = None, forget_split: str = "forget05", model: str = "smollm2-135m",
                 zoo: str = "pretrained", n_forget_eval: int = 50, n_retain_eval: int = 50, n_holdout_eval: int = 50,
                 n_world_eval: int = 50,
                 max_new_tokens: int = 48, eval_batch_size: int = 16, cache_dir: Optional[str] = None,
                 trainer_args: Optional[dict] = None, max_length: int = 256):
        if model not in REAL_MODELS:
            raise ValueError(f"benchmark tofu_real: model={model!r}; expected one of {sorted(REAL_MODELS)}")
        if zoo not in ZOOS:
            raise ValueError(f"benchmark tofu_real: zoo={zoo!r}; expected one of {list(ZOOS)} "
                             "(TOFU-fine-tuned real models are not built yet)")
        super().__init__(data_dir=data_dir, forget_split=forget_split, zoo="default", n_forget_eval=n_forget_eval,
                         n_retain_eval=n_retain_eval, n_holdout_eval=n_holdout_eval, max_new_tokens=max_new_tokens,
                         eval_batch_size=eval_batch_size, cache_dir=cache_dir,
                         trainer_args={**TOFU_REAL_TRAINER_ARGS, **(trainer_args or {})}, max_length=max_length)
        if not isinstance(n_world_eval, int) or n_world_eval < 1:
            raise ValueError(f"benchmark tofu_real: n_world_eval={n_world_eval!r}; expected a positive integer")
        self.real_name, self.zoo_name, self.spec = model, zoo, None
        self.n_eval["world"] = n_world_eval

    def prepare(self, log=print):
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
        return f"{self.real_name} ({m['quantisation']}; sha256 {m['gguf_sha256'][:12]}), zoo {self.zoo_name}"
