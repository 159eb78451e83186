"""What every tiny-model benchmark shares: its models come from a zoo built by ``prepare()``
(an object with ``tokenizer``, ``base``, ``target`` paths and ``template_args``)."""

import json
import os

from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer


class ZooBackedBenchmark:
    """Subclasses set ``self.zoo = None`` and implement ``prepare()`` (build or load the zoo,
    return ``self``); the paths below then come from the zoo, built on first use."""

    zoo = None

    def prepare(self, log=print):
        raise NotImplementedError

    @property
    def model_path(self) -> str:
        return self.prepare().zoo.target

    @property
    def aux_model_path(self) -> str:
        # every zoo's base model never saw the benchmark's forget data: the reference model
        return self.prepare().zoo.base

    @property
    def template_args(self) -> dict:
        return self.prepare().zoo.template_args

    def tokenizer(self):
        return load_tokenizer(self.prepare().zoo.tokenizer)

    def cached_tofu_evaluator(self, tokenizer, splits: dict, stats_file: str, progress=None):
        """The TOFU evaluator over ``splits`` against the zoo's retain model. The retain model's
        statistics are the same for every cell: cached as ``stats_file`` in the zoo's folder
        (recomputed when stale, i.e. fingerprinted with another tokenization)."""
        from atwu_plugin.evals.tofu_eval import TofuEvaluator
        from atwu_plugin.utils.atomic import atomic_write_json

        retain_model = load_causal_lm(self.retain_model_path)
        ev = TofuEvaluator(
            tokenizer,
            self.template_args,
            splits,
            retain_model=retain_model,
            batch_size=self.eval_batch_size,
            max_new_tokens=self.max_new_tokens,
            max_length=self.max_length,
            progress=progress,
        )
        path = os.path.join(self.zoo.root, stats_file)
        if os.path.exists(path):
            with open(path) as f:
                try:
                    ev.use_reference(json.load(f))
                    return ev
                except ValueError:
                    pass
        stats = ev.reference_stats(retain_model)
        atomic_write_json(path, stats)
        ev.use_reference(stats)
        return ev
