"""The embedded benchmark: generated fictitious authors with exact token labels and tiny
Llama models trained locally (``atwu_plugin.zoo``)."""

import os
from dataclasses import replace
from typing import Optional

from atwu_plugin.tasks import BENCHMARKS
from atwu_plugin.tasks.zoo_backed import ZooBackedBenchmark
from atwu_plugin.data.generator import load_split
from atwu_plugin.data.qa_dataset import QADataset
from atwu_plugin.zoo.build import DEMO_SPEC, SMOKE_SPEC, ZooSpec, build_zoo

ZOO_SPECS = {"default": ZooSpec, "smoke": lambda: SMOKE_SPEC, "demo": lambda: replace(DEMO_SPEC)}
FORGET_SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}

# Unlearning hyperparameters for the tiny models (a trainer config's ``args`` and a
# leaderboard method's overrides take precedence).
EMBEDDED_TRAINER_ARGS = {"learning_rate": 5.0e-4, "num_train_epochs": 5, "per_device_train_batch_size": 16}


@BENCHMARKS.register("embedded")
class EmbeddedBenchmark(ZooBackedBenchmark):
    name = "embedded"

    def __init__(
        self,
        forget_split: str = "forget10",
        zoo: str = "default",
        n_retain_eval: int = 100,
        max_new_tokens: int = 48,
        eval_batch_size: int = 32,
        cache_dir: Optional[str] = None,
        trainer_args: Optional[dict] = None,
        max_length: int = 128,
    ):
        if forget_split not in FORGET_SPLITS:
            raise ValueError(f"benchmark embedded: forget_split={forget_split!r}; expected one of {sorted(FORGET_SPLITS)}")
        if zoo not in ZOO_SPECS:
            raise ValueError(f"benchmark embedded: zoo={zoo!r}; expected one of {sorted(ZOO_SPECS)}")
        self.forget_split = forget_split
        self.retain_split = FORGET_SPLITS[forget_split]
        self.spec = ZOO_SPECS[zoo]()
        if self.retain_split not in self.spec.retain_splits:
            self.spec.retain_splits = sorted(set(self.spec.retain_splits) | {self.retain_split})
        self.zoo_name = zoo
        self.n_retain_eval = n_retain_eval
        self.max_new_tokens = max_new_tokens
        self.eval_batch_size = eval_batch_size
        self.cache_dir = cache_dir
        self.trainer_args = {**EMBEDDED_TRAINER_ARGS, **(trainer_args or {})}
        self.max_length = max_length
        self.zoo = None

    def prepare(self, log=print):
        if self.zoo is None:
            self.zoo = build_zoo(self.cache_dir, self.spec, log=log)
            self.splits = {
                name: load_split(os.path.join(self.zoo.data_dir, f"{name}.json"))
                for name in (self.forget_split, self.retain_split, "holdout", "world_facts")
            }
        return self

    @property
    def model_name(self) -> str:
        return f"tiny-llama-{self.zoo_name}-{self.spec.key()}"

    @property
    def retain_model_path(self) -> str:
        return self.prepare().zoo.retain[self.retain_split]

    def train_datasets(self, tokenizer):
        self.prepare()
        make = lambda split: QADataset(self.splits[split], tokenizer, self.template_args, max_length=self.max_length, name=split)  # noqa: E731
        return make(self.forget_split), make(self.retain_split)

    def eval_splits(self) -> dict:
        self.prepare()
        return {
            "forget": self.splits[self.forget_split],
            "retain": self.splits[self.retain_split][: self.n_retain_eval],
            "holdout": self.splits["holdout"],
            "world": self.splits["world_facts"],
        }

    def evaluator(self, tokenizer, progress=None):
        stats_file = f"reference_stats-{self.forget_split}-{self.max_length}.json"
        return self.cached_tofu_evaluator(tokenizer, self.eval_splits(), stats_file, progress)
