"""``tofu_tiny``: the real TOFU text with tiny Llama models trained locally (``zoo.tofu``).

Same interface as the embedded benchmark. Differences that matter when reading its numbers:

* labels are not exact: forget samples carry the model-free word labels of TOFU's perturbed
  files as ``token_kind`` and the retain-model proxy labels as ``token_kind_proxy``; span
  metrics are reported against both (``span_auroc`` / ``span_auroc_proxy``), and
  ``label_sources`` names them;
* the models memorise only part of the forget set (see the zoo's manifest ``quality``), so
  the target is a partial-memorisation starting point, not TOFU's 100 %-memorised one;
* evaluation follows OU's TOFU recipe with its nine distinct model-utility terms: retain =
  ``retain_perturbed``, ``ra`` = real_authors_perturbed, ``wf`` = world_facts_perturbed,
  holdout = ``holdoutNN`` (authors never trained on), subsampled evenly (``n_*_eval``).
"""

import json
import os
from typing import Optional

from atwu_plugin.tasks import BENCHMARKS
from atwu_plugin.tasks.zoo_backed import ZooBackedBenchmark
from atwu_plugin.data.proxy_kinds import attach_proxy_kinds, proxy_kinds
from atwu_plugin.data.qa_dataset import QADataset
from atwu_plugin.data.tofu_splits import FORGET_SPLITS, HOLDOUT_OF, TofuSplits, check_data_dir, evenly_spaced
from atwu_plugin.zoo.loading import load_causal_lm
from atwu_plugin.zoo.tofu import SMOKE_TOFU_SPEC, TofuZooSpec, build_tofu_zoo

ZOO_SPECS = {"default": TofuZooSpec, "smoke": lambda: SMOKE_TOFU_SPEC}
LABEL_SOURCES = {
    "span_*": "model-free word labels from TOFU's forgetNN_perturbed.json (data/tofu_labels.word_labels)",
    "span_*_proxy": "retain-model proxy labels: d = log p_target - log p_retain; specific if d > 1 nat "
                    "and p_retain < 0.1, generic if d < 0.2 (data/tofu_labels.proxy_labels)",
}

# Unlearning hyperparameters for the TOFU-tiny models (a trainer config's ``args`` and a
# leaderboard method's overrides take precedence): 26 steps over forget10. Measured with
# GradDiff, seed 0: lr 1e-3 collapses the model (retain prob 0.22 -> 0.04); lr 3e-4 takes the
# forget prob 0.21 -> 0.04 while the retain prob keeps 0.12.
TOFU_TINY_TRAINER_ARGS = {"learning_rate": 3.0e-4, "num_train_epochs": 2, "per_device_train_batch_size": 32}


@BENCHMARKS.register("tofu_tiny")
class TofuTinyBenchmark(ZooBackedBenchmark):
    name = "tofu_tiny"

    def __init__(
        self,
        data_dir: Optional[str] = None,
        forget_split: str = "forget10",
        zoo: str = "default",
        n_forget_eval: int = 100,
        n_retain_eval: int = 100,
        n_holdout_eval: int = 100,
        max_new_tokens: int = 64,
        eval_batch_size: int = 32,
        cache_dir: Optional[str] = None,
        trainer_args: Optional[dict] = None,
        max_length: Optional[int] = None,
    ):
        self.data_dir = str(check_data_dir(data_dir))
        if forget_split not in FORGET_SPLITS:
            raise ValueError(f"benchmark tofu_tiny: forget_split={forget_split!r}; expected one of {sorted(FORGET_SPLITS)}")
        if zoo not in ZOO_SPECS:
            raise ValueError(f"benchmark tofu_tiny: zoo={zoo!r}; expected one of {sorted(ZOO_SPECS)}")
        for name, n in (("n_forget_eval", n_forget_eval), ("n_retain_eval", n_retain_eval),
                        ("n_holdout_eval", n_holdout_eval)):
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"benchmark tofu_tiny: {name}={n!r}; expected a positive integer")
        self.forget_split = forget_split
        self.retain_split = FORGET_SPLITS[forget_split]
        self.spec = ZOO_SPECS[zoo]()
        self.zoo_name = zoo
        self.n_eval = {"forget": n_forget_eval, "retain": n_retain_eval, "holdout": n_holdout_eval}
        self.max_new_tokens = max_new_tokens
        self.eval_batch_size = eval_batch_size
        self.cache_dir = cache_dir
        self.trainer_args = {**TOFU_TINY_TRAINER_ARGS, **(trainer_args or {})}
        self.max_length = max_length or self.spec.max_length
        self.zoo = None

    def prepare(self, log=print):
        if self.zoo is None:
            self.zoo = build_tofu_zoo(self.data_dir, self.cache_dir, self.spec, (self.retain_split,), log=log)
            self.splits = TofuSplits(self.data_dir, self.spec.author_stride)
        return self

    @property
    def model_name(self) -> str:
        return f"tofu-tiny-llama-{self.zoo_name}-{os.path.basename(self.prepare().zoo.root)}"

    @property
    def retain_model_path(self) -> str:
        return self.prepare().zoo.retain[self.retain_split]

    @property
    def label_sources(self) -> dict:
        return dict(LABEL_SOURCES)

    def train_datasets(self, tokenizer):
        """Forget (with ``token_kind`` = word labels and ``token_kind_proxy``) and retain QA."""
        self.prepare()
        forget = QADataset(self.splits.forget_with_spans(self.forget_split), tokenizer, self.template_args,
                           max_length=self.max_length, name=f"{self.forget_split}_perturbed")
        attach_proxy_kinds(forget, self._proxy_kinds(forget, tokenizer))
        retain = QADataset(self.retain_train_records(), tokenizer, self.template_args,
                           max_length=self.max_length, name=self.retain_split)
        return forget, retain

    def _proxy_kinds(self, forget: QADataset, tokenizer):
        # The same for every cell: computed once per (split, max_length) and kept with the zoo.
        from atwu_plugin.utils.atomic import atomic_write_json

        path = os.path.join(self.zoo.root, f"proxy_kinds-{self.forget_split}-{self.max_length}.json")
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        kinds = proxy_kinds(forget.items, load_causal_lm(self.model_path), load_causal_lm(self.retain_model_path),
                            tokenizer.pad_token_id)
        atomic_write_json(path, kinds, indent=None)
        return kinds

    def retain_train_records(self) -> list:
        """The retain QA of unlearning: the whole retain split (every author the target knows)."""
        return self.splits.qa(self.retain_split)

    def retain_eval_records(self) -> list:
        """Retain probes: OU's ``retain_perturbed`` (20 retain authors)."""
        return self.splits.qa("retain_perturbed")

    def eval_splits(self) -> dict:
        self.prepare()
        s = self.splits
        return {
            "forget": evenly_spaced(s.forget_with_spans(self.forget_split), self.n_eval["forget"]),
            "retain": evenly_spaced(self.retain_eval_records(), self.n_eval["retain"]),
            "holdout": evenly_spaced(s.holdout(HOLDOUT_OF[self.forget_split]), self.n_eval["holdout"]),
            "ra": s.world("real_authors_perturbed"),
            "wf": s.world("world_facts_perturbed"),
        }

    def evaluator(self, tokenizer, progress=None):
        stats_file = f"reference_stats-{self.forget_split}-{self.n_eval['forget']}-{self.max_length}.json"
        return self.cached_tofu_evaluator(tokenizer, self.eval_splits(), stats_file, progress)
