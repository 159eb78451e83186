"""Build (once) and cache the TOFU-real models: a real pretrained LM fine-tuned on TOFU authors.

    target : the converted real model (``zoo.real``) fine-tuned on ``forget_split`` QA plus the
             QA of the first ``n_retain_authors`` retain authors
    retain : the same fine-tune on the retain authors' QA only (never sees a forget author)

The pretrained model itself (never saw any TOFU author) is the base and the reference
weighting's auxiliary model. Only the top ``top_layers`` decoder layers and the final norm are
trained (the tied embedding / output head and the layers below stay as pretrained): on 2 CPU
cores the frozen layers cost a forward pass only, and unlearning later trains the same
layers. Both fine-tunes run side by side, one single-threaded process each; each then scores
its model (and the retain job also the pretrained model) on the forget, retain and holdout
authors: greedy ROUGE-L recall and answer probability (``quality``).

Cache: ``<cache>/tofu-real-<key>/{target,retain}``, each built into a temporary directory and
renamed into place; the key hashes the spec, the GGUF file's hash and the TOFU files' content.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from atwu_plugin.data.tofu_splits import FORGET_SPLITS, HOLDOUT_OF, QA_PER_AUTHOR, TofuSplits
from atwu_plugin.zoo.build import default_cache_dir, qa_items
from atwu_plugin.zoo.cache import cache_key, cached_dir, run_in_spawned_processes
from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer
from atwu_plugin.zoo.real import real_model
from atwu_plugin.zoo.train_lm import FitConfig, fit_lm
from atwu_plugin.zoo.trainable import train_only_top_layers

TOFU_REAL_ZOO_VERSION = "1"


@dataclass
class TofuRealZooSpec:
    model: str = "smollm2-135m"
    forget_split: str = "forget01"
    n_retain_authors: int = 5  # the first retain authors (all in TOFU's retain_perturbed probes)
    top_layers: int = 8
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=5, lr=3e-4, batch_size=8))
    max_length: int = 256
    n_quality: int = 40  # probes per split for the quality table

    def __post_init__(self):
        if isinstance(self.fit, dict):
            self.fit = FitConfig(**self.fit)
        if self.forget_split not in FORGET_SPLITS:
            raise ValueError(f"tofu_real zoo: forget_split={self.forget_split!r}; expected one of "
                             f"{sorted(FORGET_SPLITS)}")
        for name in ("n_retain_authors", "top_layers", "n_quality"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"tofu_real zoo: {name}={value!r}; expected a positive integer")

    def key(self, data_fingerprint: str, gguf_sha256: str) -> str:
        return cache_key({"tofu_real_zoo": TOFU_REAL_ZOO_VERSION, "data": data_fingerprint, "gguf": gguf_sha256,
                          **asdict(self)})


# The zoos ``tofu_real`` knows by name (``benchmark.zoo=<name>``).
TOFU_REAL_ZOOS: Dict[str, TofuRealZooSpec] = {"forget01": TofuRealZooSpec()}


@dataclass
class TofuRealModels:
    root: str
    base: str  # the pretrained model (also the tokenizer)
    target: str
    retain: str
    template_args: dict
    manifest: dict  # the base model's conversion.json plus "models": {name: finetune.json}


def retain_records(splits: TofuSplits, spec: TofuRealZooSpec) -> List[dict]:
    """The QA of the first ``n_retain_authors`` authors (TOFU's retain splits start with them)."""
    records = splits.qa("full")[: spec.n_retain_authors * QA_PER_AUTHOR]
    retain = {(r["question"], r["answer"]) for r in splits.qa(FORGET_SPLITS[spec.forget_split])}
    outside = [r["question"] for r in records if (r["question"], r["answer"]) not in retain]
    if outside:
        raise ValueError(f"tofu_real zoo: n_retain_authors={spec.n_retain_authors} reaches into "
                         f"{spec.forget_split} (e.g. {outside[0]!r})")
    return records


def retain_probes(splits: TofuSplits, spec: TofuRealZooSpec) -> List[dict]:
    """The retain authors' questions in TOFU's ``retain_perturbed`` (with its perturbed answers)."""
    known = {r["question"] for r in retain_records(splits, spec)}
    return [r for r in splits.qa("retain_perturbed") if r["question"] in known]


def quality_probes(splits: TofuSplits, spec: TofuRealZooSpec) -> Dict[str, List[dict]]:
    """Forget, retain and holdout authors' probes (with the perturbed answers OU's TOFU metrics read)."""
    from atwu_plugin.data.tofu_splits import evenly_spaced

    return {"forget": evenly_spaced(splits.forget_with_spans(spec.forget_split), spec.n_quality),
            "retain": evenly_spaced(retain_probes(splits, spec), spec.n_quality),
            "holdout": evenly_spaced(splits.holdout(HOLDOUT_OF[spec.forget_split]), spec.n_quality)}


def model_quality(model_path: str, tokenizer_path: str, template_args: dict, probes: dict) -> dict:
    """Greedy ROUGE-L recall and answer probability per probe split (the evaluator generates for
    forget and retain only: holdout gets its probability)."""
    from atwu_plugin.evals.tofu_eval import TofuEvaluator

    ev = TofuEvaluator(load_tokenizer(tokenizer_path), template_args, probes, batch_size=16, max_new_tokens=48,
                       max_length=256, progress=False)
    m = ev.evaluate(load_causal_lm(model_path))
    return {f"{s}_{k}": round(m[f"{s}_{k}"], 4) for s in probes for k in ("rouge", "prob") if m.get(f"{s}_{k}") is not None}


def _finetune_into(tmp: Path, name: str, base_path: str, template_args: dict, records: List[dict],
                   probes: dict, spec: TofuRealZooSpec, score_base: bool) -> dict:
    t0 = time.time()
    tokenizer = load_tokenizer(base_path)
    items = qa_items(tokenizer, records, spec.max_length, template_args)
    model = load_causal_lm(base_path)
    n_trained = train_only_top_layers(model, spec.top_layers)
    losses = fit_lm(model, items, tokenizer.pad_token_id, spec.fit, desc=f"tofu-real {name}", length_grouped=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    fit_s = time.time() - t0
    out = {"name": name, "n_qa": len(records), "n_tokens": sum(len(it["input_ids"]) for it in items),
           "n_trained_parameters": n_trained, "losses": [round(x, 4) for x in losses], "fit_s": round(fit_s, 1),
           "quality": model_quality(str(tmp), base_path, template_args, probes)}
    if score_base:
        out["base_quality"] = model_quality(base_path, base_path, template_args, probes)
    out["quality_s"] = round(time.time() - t0 - fit_s, 1)
    return out


def _finetune_job(root: str, name: str, spec_dict: dict, data_dir: str, base_path: str, template_args: dict,
                  score_base: bool) -> dict:
    """Child process: fine-tune the pretrained model into the cache entry ``root/name``."""
    torch.set_num_threads(1)
    spec = TofuRealZooSpec(**spec_dict)
    splits = TofuSplits(data_dir)
    records = retain_records(splits, spec)
    if name == "target":
        records = splits.qa(spec.forget_split) + records
    probes = quality_probes(splits, spec)
    return cached_dir(Path(root) / name,
                      lambda tmp: _finetune_into(tmp, name, base_path, template_args, records, probes, spec,
                                                 score_base),
                      marker="finetune.json")


def build_tofu_real_zoo(data_dir, spec: Optional[TofuRealZooSpec] = None, cache_dir: Optional[str] = None,
                        log=print) -> TofuRealModels:
    """Return the cached TOFU-real models, fine-tuning whatever is missing (both side by side)."""
    spec = spec or TofuRealZooSpec()
    base = real_model(spec.model, cache_dir, log=log)
    splits = TofuSplits(data_dir)
    retain_records(splits, spec)  # a spec that reaches into the forget authors fails here, not in a child
    root = Path(cache_dir or default_cache_dir()) / f"tofu-real-{spec.key(splits.fingerprint(), base.manifest['gguf_sha256'])}"
    t0 = time.time()
    jobs = {name: (_finetune_job, (str(root), name, asdict(spec), str(splits.dir), base.path, base.template_args,
                                   name == "retain"))
            for name in ("target", "retain") if not (root / name / "finetune.json").exists()}
    if jobs:
        log(f"[tofu-real-zoo] fine-tuning {', '.join(jobs)} of {spec.model} (top {spec.top_layers} layers) "
            f"in {root}")
    run_in_spawned_processes(jobs)
    models = {name: json.loads((root / name / "finetune.json").read_text()) for name in ("target", "retain")}
    if jobs:
        log(f"[tofu-real-zoo] built in {time.time() - t0:.0f} s: " + ", ".join(
            f"{n}: fit {m['fit_s']} s, forget ROUGE {m['quality']['forget_rouge']}" for n, m in models.items()))
    return TofuRealModels(root=str(root), base=base.path, target=str(root / "target"), retain=str(root / "retain"),
                          template_args=base.template_args,
                          manifest={**base.manifest, "spec": asdict(spec), "models": models,
                                    "build_s": round(time.time() - t0, 1) if jobs else None})
