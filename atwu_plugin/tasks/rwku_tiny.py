"""RWKU-tiny: RWKU's batch setting at CPU scale, on the lite host.

A tiny Llama is taught the texts and probe answers of RWKU targets 1-50
(``atwu_plugin.zoo.rwku``); unlearning removes targets 1-10 (the batch), and the evaluator
(``atwu_plugin.evals.rwku_tiny_eval``) measures forgetting on their probes, locality on their
neighbor probes, collateral damage on targets 11-50, MIA and fluency.

Roles in training (RWKU itself has no retain set; see docs/rwku.md):

* forget: the texts about the forget targets the model was taught (intro statement, filled-in
  cloze facts, the first forget_mia passages), as plain LM items (loss on every token);
* retain: the same kind of texts about the other taught targets (11-50): knowledge the model
  must keep, in the same form as the forget texts, disjoint from every evaluated neighbor probe;
* aux/reference model: the base model, which never saw a text or probe of a taught target.

The data root comes from the ``data_root`` option or the ``RWKU_DATA_ROOT`` environment
variable (a directory in RWKU's layout, or ``hub:<repo_id>``).
"""

import os
from typing import Optional, Sequence

from torch.utils.data import Dataset

from atwu_plugin.tasks import BENCHMARKS
from atwu_plugin.tasks.zoo_backed import ZooBackedBenchmark
from atwu_plugin.data.lm_items import lm_items
from atwu_plugin.data.rwku import open_rwku
from atwu_plugin.data.rwku_tiny import target_texts
from atwu_plugin.evals.rwku_tiny_eval import ALL_TINY_METRICS
from atwu_plugin.zoo.rwku import SMOKE_RWKU_SPEC, RWKUTinySpec, build_rwku_zoo, rwku_tiny_corpus

DATA_ROOT_ENV = "RWKU_DATA_ROOT"
# zoo -> (spec factory, default forget targets, default other targets)
ZOOS = {
    "default": (RWKUTinySpec, "1-10", "11-50"),
    "smoke": (lambda: SMOKE_RWKU_SPEC, "1-2", "3-6"),
}
# One operating point for every method (5 epochs over the 130 forget texts, batch 16). Measured
# with GradDiff/NPO, seed 0: lr 1e-4 forgets almost nothing (forget_all 0.97/0.95), 5e-4 collapses
# GA and GradDiff (others_all 0.0/0.22); 3e-4 sits in between (docs/rwku.md).
RWKU_TINY_TRAINER_ARGS = {"learning_rate": 3.0e-4, "num_train_epochs": 5, "per_device_train_batch_size": 16}


def rwku_data_root(data_root: Optional[str], benchmark: str) -> str:
    """The RWKU data root of a benchmark: the ``data_root`` option, else ``$RWKU_DATA_ROOT``."""
    data_root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not data_root:
        raise ValueError(f"benchmark {benchmark}: no data_root; pass benchmark.data_root=<RWKU directory or "
                         f"hub:jinzhuoran/RWKU> or set {DATA_ROOT_ENV}")
    return data_root


class TextItems(Dataset):
    """LM items (``input_ids``, ``labels`` = input_ids with the BOS position ignored,
    ``attention_mask``, ``index``) of texts cut to ``max_tokens`` tokens, as the model was taught."""

    def __init__(self, texts: Sequence[str], tokenizer, max_tokens: int, name: str):
        if not texts:
            raise ValueError(f"RWKU-tiny {name} set is empty")
        self.name = name
        self.items = [{**item, "index": i} for i, item in enumerate(lm_items(tokenizer, list(texts), max_tokens + 1))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@BENCHMARKS.register("rwku_tiny")
class RWKUTinyBenchmark(ZooBackedBenchmark):
    name = "rwku_tiny"

    def __init__(
        self,
        data_root: Optional[str] = None,
        zoo: str = "default",
        forget_targets: Optional[str] = None,
        other_targets: Optional[str] = None,
        others_per_level: int = 3,
        metrics: Sequence[str] = ALL_TINY_METRICS,
        eval_batch_size: int = 64,
        max_new_tokens: int = 16,
        cache_dir: Optional[str] = None,
        trainer_args: Optional[dict] = None,
    ):
        if zoo not in ZOOS:
            raise ValueError(f"benchmark rwku_tiny: zoo={zoo!r}; expected one of {sorted(ZOOS)}")
        data_root = rwku_data_root(data_root, "rwku_tiny")
        unknown = [m for m in metrics if m not in ALL_TINY_METRICS]
        if unknown:
            raise ValueError(f"benchmark rwku_tiny: metrics={list(metrics)}; unknown {unknown}, expected a subset "
                             f"of {list(ALL_TINY_METRICS)}")
        make_spec, default_forget, default_others = ZOOS[zoo]
        self.spec: RWKUTinySpec = make_spec()
        self.zoo_name = zoo
        self.data = open_rwku(data_root)
        self.data_root = data_root
        taught = {t.index for t in self.data.select(self.spec.taught_targets)}
        self.forget_targets = self._subset("forget_targets", forget_targets or default_forget, taught)
        self.other_targets = self._subset("other_targets", other_targets or default_others, taught)
        both = sorted({t.index for t in self.forget_targets} & {t.index for t in self.other_targets})
        if both:
            raise ValueError(f"benchmark rwku_tiny: forget_targets and other_targets share ids {both}")
        self.others_per_level = others_per_level
        self.metrics = tuple(metrics)
        self.eval_batch_size = eval_batch_size
        self.max_new_tokens = max_new_tokens
        self.cache_dir = cache_dir
        self.trainer_args = {**RWKU_TINY_TRAINER_ARGS, **(trainer_args or {})}
        self.zoo = None

    def _subset(self, option: str, spec, taught: set):
        chosen = self.data.select(spec)
        outside = [t.key for t in chosen if t.index not in taught]
        if outside:
            raise ValueError(f"benchmark rwku_tiny: {option}={spec!r} includes {outside}, which the "
                             f"{self.zoo_name} model was not taught (taught: {self.spec.taught_targets})")
        return chosen

    def prepare(self, log=print):
        if self.zoo is None:
            self.zoo = build_rwku_zoo(self.data, self.cache_dir, self.spec, log=log)
        return self

    @property
    def model_name(self) -> str:
        return f"tiny-llama-rwku-{self.zoo_name}-{self.prepare().zoo.manifest['key']}"

    @property
    def retain_model_path(self) -> Optional[str]:
        return None  # RWKU has no retain model (no model trained without the forget targets' knowledge)

    def texts(self, targets) -> list:
        return [x for t in targets for x in target_texts(self.data, t, self.spec.corpus)]

    def train_datasets(self, tokenizer):
        self.prepare()
        n = self.spec.text_tokens
        return (TextItems(self.texts(self.forget_targets), tokenizer, n, "forget"),
                TextItems(self.texts(self.other_targets), tokenizer, n, "retain"))

    def evaluator(self, tokenizer, progress=None):
        from atwu_plugin.evals.rwku_tiny_eval import RWKUTinyEvaluator

        corpus = rwku_tiny_corpus(self.data, self.spec)
        return RWKUTinyEvaluator(
            tokenizer,
            self.template_args,
            self.data,
            forget_targets=self.forget_targets,
            other_targets=self.other_targets,
            probes_per_level=self.spec.corpus.probes_per_level,
            others_per_level=min(self.others_per_level, self.spec.corpus.probes_per_level),
            mia_per_target=self.spec.corpus.mia_per_target,
            mia_max_length=self.spec.text_tokens,
            mia_exclude_texts=corpus["texts"] + corpus["base_texts"],  # non-members: never trained on
            metrics=self.metrics,
            batch_size=self.eval_batch_size,
            max_new_tokens=self.max_new_tokens,
            show_progress=bool(progress),
        )
