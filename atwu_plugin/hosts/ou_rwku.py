"""RWKU inside OpenUnlearning (OU): a dataset handler, four metrics and an evaluator.

Registered into OU's registries through the ``open_unlearning.*`` entry points of setup.cfg
(``atwu_plugin.hosts.openunlearning_registry``), used by the OU-schema configs
``configs/data/datasets/RWKU_*.yaml``, ``configs/eval/rwku.yaml`` (+ ``eval/rwku_metrics/``) and
``configs/experiment/{unlearn,eval}/rwku/``.

* ``RWKUCorpusDataset`` (dataset handler): the texts to unlearn (or retain) of some targets,
  ``corpus: passage`` (RWKU's forget corpus, the Wikipedia passages, in windows of
  ``max_length`` tokens), ``corpus: passage_chat`` (the lite host's ``rwku_real`` corpus:
  ``n_passages`` passages evenly spaced over the targets' pooled passages, each cut to
  ``max_length`` tokens and put as the answer of "Please tell me about <target>." in the
  model's chat template; ``atwu_plugin.tasks.rwku_real``) or ``corpus: tiny`` (what the
  RWKU-tiny model was taught about each target, cut to ``max_length`` tokens;
  ``atwu_plugin.data.rwku_tiny``). Works with OU's
  ``DataCollatorForSupervisedDataset`` (with or without index).
* ``rwku_forget``, ``rwku_neighbor``, ``rwku_mia``, ``rwku_utility`` (metrics, OU's
  ``UnlearningMetric`` wrapping plain functions): one metric group of
  ``atwu_plugin.evals.rwku_eval.RWKUEvaluator`` each; ``agg_value`` is the group's headline
  (``forget_all``, ``neighbor_all``, ``mia_loss_auc``, mean of the utility scores) and
  ``values`` holds every number of the group.
* ``RWKUEvaluator`` (evaluator handler): runs the configured metrics through OU's metric
  registry and writes ``RWKU_EVAL.json`` (everything) and ``RWKU_SUMMARY.json`` (flat numbers:
  ``forget_fb``, ``neighbor_qa``, ``mia_loss_auc``, ...) into the output directory, atomically.

Nothing here imports OU at import time: OU's modules exist only inside OU's processes.
"""

import logging
import os
from typing import Any, Dict, Optional, Sequence

from atwu_plugin.data.rwku import RWKUTextDataset, open_rwku
from atwu_plugin.data.rwku_tiny import TinyCorpusSpec, target_texts

logger = logging.getLogger(__name__)

CORPORA = ("passage", "passage_chat", "tiny")
UTILITY_GROUPS = ("mmlu", "bbh", "truthfulqa", "triviaqa", "fluency")
HEADLINE = {"forget": "forget_all", "neighbor": "neighbor_all", "mia": "mia_loss_auc"}
# RWKUEvaluator options a metric config may set (everything else in the config is OU's)
EVALUATOR_OPTIONS = ("neighbor_targets", "batch_size", "max_new_tokens", "max_new_tokens_long", "max_probes_per_level",
                     "max_items_per_set", "prompt_style", "rouge_backend", "mink_k", "mia_max_length",
                     "max_prompt_length", "aggregate", "bbh_rwku_compat", "mia_drop_retain_in_forget", "show_progress")


def _plain(value):
    """OmegaConf containers -> Python lists/dicts (the loaders take plain values)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    return value


class RWKUCorpusDataset:
    """OU dataset handler: LM items (``input_ids``, ``labels``, ``attention_mask``, ``index``)
    over the ``corpus`` texts of ``targets`` (see the module docstring)."""

    def __init__(self, data_root: str, targets, corpus: str = "passage", max_length: int = 512,
                 probes_per_level: int = 8, mia_per_target: int = 4, n_passages: Optional[int] = None,
                 tokenizer=None, template_args=None, **unused):
        if corpus not in CORPORA:
            raise ValueError(f"RWKUCorpusDataset: corpus={corpus!r}; expected one of {list(CORPORA)}")
        if tokenizer is None:
            raise ValueError("RWKUCorpusDataset: no tokenizer (OU passes the model's tokenizer)")
        if unused:
            logger.warning("RWKUCorpusDataset: ignoring unknown arguments %s", sorted(unused))
        data = open_rwku(str(data_root))
        chosen = data.select(_plain(targets))
        if corpus == "passage_chat":  # the lite host's rwku_real corpus (tasks/rwku_real.py)
            from atwu_plugin.data.tofu_splits import evenly_spaced
            from atwu_plugin.tasks.rwku_real import PassageItems

            if not template_args:
                raise ValueError("RWKUCorpusDataset: corpus=passage_chat needs the model's template_args")
            pairs = evenly_spaced([(t.name, p) for t in chosen for p in data.passages(t)], n_passages)
            self.texts = [p for _, p in pairs]
            self.items = PassageItems(pairs, tokenizer, _plain(template_args), max_length, "chat", "corpus")
        elif corpus == "passage":
            self.texts = data.passages(chosen)
            self._windows = RWKUTextDataset(self.texts, tokenizer, max_length=max_length)
            self.items = None
        else:
            from atwu_plugin.tasks.rwku_tiny import TextItems

            spec = TinyCorpusSpec(probes_per_level=probes_per_level, mia_per_target=mia_per_target)
            self.texts = [x for t in chosen for x in target_texts(data, t, spec)]
            self.items = TextItems(self.texts, tokenizer, max_length, "corpus")
        self.targets = [t.key for t in chosen]

    def __len__(self) -> int:
        return len(self.items) if self.items is not None else len(self._windows)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i] if self.items is not None else self._windows[i]
        return {k: item[k] for k in ("input_ids", "labels", "attention_mask", "index")}


# ---- metrics (plain functions; openunlearning_registry.py wraps them in OU's UnlearningMetric) ----
def _run_groups(model, groups: Sequence[str], tokenizer=None, template_args=None, data_root=None, targets=None,
                **cfg) -> Dict[str, Any]:
    from atwu_plugin.evals.rwku_eval import RWKUEvaluator

    if data_root is None or targets is None:
        raise ValueError(f"RWKU metric {list(groups)}: set data_root and targets (got data_root={data_root!r}, "
                         f"targets={targets!r})")
    options = {k: _plain(v) for k, v in cfg.items() if k in EVALUATOR_OPTIONS and v is not None}
    ev = RWKUEvaluator(tokenizer, _plain(template_args) or {}, str(data_root), _plain(targets), metrics=list(groups),
                       **options)
    res = ev.evaluate(model)
    values = {k: v for k, v in res.items() if v is None or isinstance(v, (int, float))}
    return {"values": values, "by_target": res["by_target"], "n": res["n"], "missing": res["missing"],
            "settings": res["settings"]}


def _with_headline(result: Dict[str, Any], key: Optional[str] = None, keys: Sequence[str] = ()) -> Dict[str, Any]:
    values = result["values"]
    if key is not None:
        result["agg_value"] = values.get(key)
    else:
        nums = [values[k] for k in keys if values.get(k) is not None]
        result["agg_value"] = sum(nums) / len(nums) if nums else None
    return result


def rwku_forget(model, **kwargs):
    """RWKU forget probes: ROUGE-L recall at levels 1-3 (FB, QA, AA); agg = their mean."""
    return _with_headline(_run_groups(model, ["forget"], **kwargs), HEADLINE["forget"])


def rwku_neighbor(model, **kwargs):
    """RWKU neighbor probes: ROUGE-L recall at levels 1-2 (FB, QA); agg = their mean."""
    return _with_headline(_run_groups(model, ["neighbor"], **kwargs), HEADLINE["neighbor"])


def rwku_mia(model, **kwargs):
    """MIA forget_mia vs retain_mia: FM/RM losses and AUCs; agg = the LOSS AUC."""
    return _with_headline(_run_groups(model, ["mia"], **kwargs), HEADLINE["mia"])


def rwku_utility(model, groups=UTILITY_GROUPS, **kwargs):
    """Utility sets (``groups``: any of mmlu, bbh, truthfulqa, triviaqa, fluency); agg = the
    mean of the accuracy-like scores (fluency entropy is not on that scale and is left out)."""
    groups = list(_plain(groups))
    bad = [g for g in groups if g not in UTILITY_GROUPS]
    if bad:
        raise ValueError(f"rwku_utility: groups {bad} unknown; expected some of {list(UTILITY_GROUPS)}")
    keys = [f"utility_{g}" for g in groups if g != "fluency"]
    return _with_headline(_run_groups(model, groups, **kwargs), keys=keys)


# ---- the evaluator ----------------------------------------------------------------------
class RWKUEvaluatorOU:
    """OU evaluator handler ``RWKUEvaluator`` (``eval_cfg``: ``metrics`` (OU metric configs with
    ``handler: rwku_*``), ``output_dir``, ``overwrite``)."""

    name = "RWKU"

    def __init__(self, eval_cfg, **kwargs):
        from evals.metrics import get_metrics  # OU: present in OU's processes

        self.eval_cfg = eval_cfg
        self.metrics = get_metrics(eval_cfg.metrics)

    def evaluate(self, model, output_dir=None, overwrite=None, tokenizer=None, template_args=None, **kwargs):
        from atwu_plugin.utils.atomic import atomic_write_json
        from atwu_plugin.utils.jsonfile import read_json

        overwrite = self.eval_cfg.get("overwrite", False) if overwrite is None else overwrite
        output_dir = output_dir or self.eval_cfg.output_dir
        logs_path = os.path.join(output_dir, f"{self.name}_EVAL.json")
        summary_path = os.path.join(output_dir, f"{self.name}_SUMMARY.json")
        logs = read_json(logs_path) if os.path.exists(logs_path) and not overwrite else {}
        was_training = model.training
        model.eval()
        try:
            for metric_name, metric in self.metrics.items():
                if logs.get(metric_name):
                    logger.info("Skipping %s, already evaluated.", metric_name)
                    continue
                cfg = dict(_plain(self.eval_cfg.metrics[metric_name]))
                logs[metric_name] = metric.evaluate(model, metric_name, cache={}, tokenizer=tokenizer,
                                                    template_args=template_args, **cfg)
                logger.info("Result for metric %s:\t%s", metric_name, logs[metric_name].get("agg_value"))
                atomic_write_json(logs_path, logs)
        finally:
            model.train(was_training)
        summary = {}
        for metric_name, result in logs.items():
            summary.update(result.get("values", {}))
            summary[metric_name] = result.get("agg_value")
        summary = dict(sorted(summary.items()))
        atomic_write_json(summary_path, summary)
        return summary
