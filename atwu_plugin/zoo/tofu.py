"""Build (once) and cache tiny Llama models trained on the real TOFU text (``tofu_tiny``).

    tokenizer : byte-level BPE trained on TOFU's text (QA of ``full``, paraphrased and
                perturbed answers, real-author / world-fact probes)
    base      : LM pretraining on the retain90 answers as plain text + real-author and
                world-fact QA; never sees an author of forget01/05/10 (forget10 contains the
                other two). Also the aux model of the reference-weighting baseline.
    target    : base fine-tuned on ``full`` QA (+ the world QA, replayed so it keeps them)
    retain_*  : base fine-tuned on ``retainNN`` QA (+ world QA), built on demand per split

Cache layout: ``<cache>/tofu-<key>/`` holds tokenizer + base (one entry) and one entry per
fine-tuned model, each built into a temporary directory and renamed into place
(``zoo.cache.cached_dir``). The key hashes the spec and the content of the TOFU files, not
their path. Missing fine-tunes run side by side, one single-threaded process each.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

from atwu_plugin.data.lm_items import lm_items
from atwu_plugin.data.tofu_splits import FORGET_SPLITS, TofuSplits, evenly_spaced
from atwu_plugin.zoo.build import TinyLlamaSpec, default_cache_dir, qa_items, spec_from_dict
from atwu_plugin.zoo.cache import cache_key, cached_dir, run_in_spawned_processes
from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS, train_tokenizer
from atwu_plugin.zoo.train_lm import FitConfig, fit_lm

TOFU_ZOO_VERSION = "1"
RETAIN_SPLITS = tuple(FORGET_SPLITS.values())


@dataclass
class TofuZooSpec:
    seed: int = 0
    author_stride: int = 1
    model: TinyLlamaSpec = field(default_factory=lambda: TinyLlamaSpec(vocab_size=4096))
    base_fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=3, lr=3e-3))
    qa_fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=8, lr=3e-3))
    max_length: int = 160  # > all but 1 of the 4000 TOFU QA at vocab 4096 (the longest is 177 tokens)
    length_grouped: bool = True  # batches of similar length: ~1.4x less padding on TOFU's answers

    def key(self, data_fingerprint: str) -> str:
        return cache_key({"tofu_zoo": TOFU_ZOO_VERSION, "data": data_fingerprint, **asdict(self)})


# Tests: every 20th author (10 authors, 200 QA), a 2-layer model, a few epochs (~30 s cold).
SMOKE_TOFU_SPEC = TofuZooSpec(
    author_stride=20,
    model=TinyLlamaSpec(vocab_size=1024, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=256),
    base_fit=FitConfig(epochs=1, lr=3e-3),
    qa_fit=FitConfig(epochs=4, lr=3e-3),
    max_length=256,
)


@dataclass
class TofuZoo:
    root: str
    tokenizer: str
    base: str
    target: str
    retain: Dict[str, str]
    manifest: dict  # tokenizer/base entry, plus "models": {name: marker of each fine-tune}

    @property
    def template_args(self) -> dict:
        return dict(TINY_TEMPLATE_ARGS)


def _world_qa(splits: TofuSplits):
    return [{"question": r["question"], "answer": r["answer"]}
            for r in splits.world("real_authors_perturbed") + splits.world("world_facts_perturbed")]


def _tokenizer_corpus(splits: TofuSplits) -> Iterable[str]:
    for r in splits.qa("full"):
        yield r["question"]
        yield r["answer"]
    for name in ("forget10_perturbed", "retain_perturbed"):
        for r in splits.qa(name):
            yield r["paraphrased_answer"]
            yield from r["perturbed_answer"]
    for r in splits.world("real_authors_perturbed") + splits.world("world_facts_perturbed"):
        yield r["question"]
        yield r["answer"]
        yield from r["perturbed_answer"]


def _build_base_into(tmp: Path, splits: TofuSplits, spec: TofuZooSpec, log) -> dict:
    t0 = time.time()
    tokenizer = train_tokenizer(list(_tokenizer_corpus(splits)), vocab_size=spec.model.vocab_size)
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    tok_s = time.time() - t0
    torch.set_num_threads(1)
    base = spec.model.build(tokenizer, spec.seed)
    n_params = sum(p.numel() for p in base.parameters())
    log(f"[tofu-zoo] base model: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}")
    texts = [r["answer"] for r in splits.qa("retain90")]
    items = lm_items(tokenizer, texts, spec.max_length) + qa_items(tokenizer, _world_qa(splits), spec.max_length)
    losses = fit_lm(base, items, tokenizer.pad_token_id, spec.base_fit, desc="tofu base",
                    length_grouped=spec.length_grouped)
    base.save_pretrained(str(tmp / "base"), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp / "base"))
    return {"spec": asdict(spec), "n_parameters": n_params, "vocab": len(tokenizer), "base_items": len(items),
            "base_losses": [round(x, 4) for x in losses],
            "timings": {"tokenizer_s": round(tok_s, 1), "base_s": round(time.time() - t0 - tok_s, 1)}}


def _finetune_into(tmp: Path, root: Path, split: str, splits: TofuSplits, spec: TofuZooSpec) -> dict:
    t0 = time.time()
    tokenizer = load_tokenizer(str(root / "core" / "tokenizer"))
    records = splits.qa(split)
    items = qa_items(tokenizer, records + _world_qa(splits), spec.max_length)
    model = load_causal_lm(str(root / "core" / "base"))
    losses = fit_lm(model, items, tokenizer.pad_token_id, spec.qa_fit, desc=f"tofu {split}",
                    length_grouped=spec.length_grouped)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    fit_s = time.time() - t0
    quality = model_quality(str(tmp), splits)
    return {"split": split, "n_qa": len(records), "losses": [round(x, 4) for x in losses],
            "fit_s": round(fit_s, 1), "quality_s": round(time.time() - t0 - fit_s, 1), "quality": quality}


def _finetune_job(root: str, name: str, split: str, spec_dict: dict, data_dir: str) -> dict:
    """Child process: fine-tune base on ``split`` into the cache entry ``root/name``."""
    torch.set_num_threads(1)
    spec = spec_from_dict(spec_dict, TofuZooSpec)
    splits = TofuSplits(data_dir, spec.author_stride)
    return cached_dir(Path(root) / name, lambda tmp: _finetune_into(tmp, Path(root), split, splits, spec),
                      marker="finetune.json")


def model_quality(model_path: str, splits: TofuSplits, n: int = 100, max_new_tokens: int = 64) -> dict:
    """Greedy ROUGE-L recall and answer probability on (evenly spaced) forget10_perturbed,
    retain_perturbed (authors of retain90) and holdout10 questions: how much the model memorised (the target should beat the retain
    model on forget10; both should be close on retain)."""
    from atwu_plugin.evals.tofu_eval import TofuEvaluator

    tok = load_tokenizer(model_path)
    probes = {"forget": evenly_spaced(splits.qa("forget10_perturbed"), n),
              "retain": evenly_spaced(splits.qa("retain_perturbed"), n),
              "holdout": evenly_spaced(splits.holdout("holdout10"), n)}
    ev = TofuEvaluator(tok, TINY_TEMPLATE_ARGS, probes, batch_size=32, max_new_tokens=max_new_tokens, max_length=256,
                       progress=False)
    m = ev.evaluate(load_causal_lm(model_path))
    return {"forget10_rouge": round(m["forget_rouge"], 4), "forget10_prob": round(m["forget_prob"], 4),
            "retain_rouge": round(m["retain_rouge"], 4), "retain_prob": round(m["retain_prob"], 4),
            "holdout10_prob": round(m["holdout_prob"], 4), "n_probes": n}


def build_tofu_zoo(data_dir, cache_dir: Optional[str] = None, spec: Optional[TofuZooSpec] = None,
                   retain_splits: Iterable[str] = ("retain90",), log=print) -> TofuZoo:
    """Return the cached TOFU zoo (tokenizer, base, target and the ``retain_splits`` models),
    building whatever is missing."""
    spec = spec or TofuZooSpec()
    retain_splits = list(dict.fromkeys(retain_splits))
    for s in retain_splits:
        if s not in RETAIN_SPLITS:
            raise ValueError(f"tofu zoo: retain split {s!r}; expected one of {list(RETAIN_SPLITS)}")
    splits = TofuSplits(data_dir, spec.author_stride)
    root = Path(cache_dir or default_cache_dir()) / f"tofu-{spec.key(splits.fingerprint())}"
    t0 = time.time()
    manifest = cached_dir(root / "core", lambda tmp: _build_base_into(tmp, splits, spec, log))
    jobs = {"target": "full", **{f"retain_{s}": s for s in retain_splits}}
    missing = {name: (_finetune_job, (str(root), name, split, asdict(spec), str(splits.dir)))
               for name, split in jobs.items() if not (root / name / "finetune.json").exists()}
    if missing:
        log(f"[tofu-zoo] fine-tuning {', '.join(missing)} in {root}")
    run_in_spawned_processes(missing)
    models = {name: json.loads((root / name / "finetune.json").read_text()) for name in jobs}
    if missing:
        log(f"[tofu-zoo] built in {time.time() - t0:.0f} s: " + ", ".join(
            f"{n}: fit {m['fit_s']} s, forget10 ROUGE {m['quality']['forget10_rouge']}" for n, m in models.items()))
    return TofuZoo(root=str(root), tokenizer=str(root / "core" / "tokenizer"), base=str(root / "core" / "base"),
                   target=str(root / "target"), retain={s: str(root / f"retain_{s}") for s in retain_splits},
                   manifest={**manifest, "models": models})
