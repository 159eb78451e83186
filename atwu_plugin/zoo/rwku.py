"""Build (once) and cache RWKU-tiny's tokenizer and tiny models from the RWKU files.

    base   : a tiny Llama trained on texts and probe answers of *other* RWKU targets
             (``base_targets``, 101-200): it learns the language and the QA format but never
             saw a text or probe of the taught targets; the aux/reference model
    target : base fine-tuned on the texts and probe answers of the taught targets (1-50)
             (``atwu_plugin.data.rwku_tiny``): the model to unlearn

The cache entry is keyed by a content hash of the spec and of the corpus itself (not of the
data path), built into a temporary directory and renamed into place (``zoo.cache.cached_dir``).
"""

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from atwu_plugin.data.lm_items import lm_items
from atwu_plugin.data.rwku import open_rwku
from atwu_plugin.data.rwku_tiny import TinyCorpusSpec, kept_probes, neighbor_texts, probe_qa, target_texts
from atwu_plugin.zoo.build import TinyLlamaSpec, default_cache_dir, qa_items
from atwu_plugin.zoo.cache import cache_key, cached_dir
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS, train_tokenizer
from atwu_plugin.zoo.train_lm import FitConfig, fit_lm

RWKU_ZOO_VERSION = "1"


@dataclass
class RWKUTinySpec:
    seed: int = 0
    taught_targets: str = "1-50"
    base_targets: str = "101-200"
    corpus: TinyCorpusSpec = field(default_factory=TinyCorpusSpec)
    base_corpus: TinyCorpusSpec = field(default_factory=lambda: TinyCorpusSpec(probes_per_level=2, mia_per_target=2))
    model: TinyLlamaSpec = field(default_factory=TinyLlamaSpec)
    base_fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=8, lr=3e-3))
    target_fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=16, lr=3e-3))
    max_length: int = 128  # QA items
    text_tokens: int = 64  # texts are cut to this many tokens (BOS included), as the MIA evaluation cuts them
    quality_probes_per_level: int = 3


# Unit-test size: seconds, not minutes.
SMOKE_RWKU_SPEC = RWKUTinySpec(
    taught_targets="1-6",
    base_targets="101-110",
    corpus=TinyCorpusSpec(probes_per_level=2, mia_per_target=1),
    base_corpus=TinyCorpusSpec(probes_per_level=1, mia_per_target=1),
    model=TinyLlamaSpec(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
    base_fit=FitConfig(epochs=1, lr=3e-3),
    target_fit=FitConfig(epochs=2, lr=3e-3),
    quality_probes_per_level=1,
)


@dataclass
class RWKUZooPaths:
    root: str
    tokenizer: str
    base: str
    target: str
    manifest: dict

    @property
    def template_args(self) -> dict:
        return dict(TINY_TEMPLATE_ARGS)


def rwku_tiny_corpus(data, spec: RWKUTinySpec) -> Dict[str, list]:
    """The base and target training corpora (texts and QA records) of ``spec`` from ``data``."""
    taught, base = data.select(spec.taught_targets), data.select(spec.base_targets)
    overlap = sorted({t.index for t in taught} & {t.index for t in base})
    if overlap:
        raise ValueError(f"RWKU-tiny: base_targets {spec.base_targets!r} overlap taught_targets "
                         f"{spec.taught_targets!r} (ids {overlap}); the base model must never see a taught target")
    base_probes = [p for t in base for p in kept_probes(data, t, spec.base_corpus) if p.split == "forget" and p.level < 3]
    return {
        "base_texts": [x for t in base for x in target_texts(data, t, spec.base_corpus)],
        "base_qa": probe_qa(base_probes),
        "texts": [x for t in taught for x in target_texts(data, t, spec.corpus) + neighbor_texts(data, t, spec.corpus)],
        "qa": probe_qa([p for t in taught for p in kept_probes(data, t, spec.corpus)]),
    }


def spec_key(spec: RWKUTinySpec, corpus: Dict[str, list]) -> str:
    digest = hashlib.sha256(json.dumps(corpus, sort_keys=True).encode()).hexdigest()
    return cache_key({"rwku_zoo": RWKU_ZOO_VERSION, "corpus": digest, **asdict(spec)})


def _paths(root: Path, manifest: dict) -> RWKUZooPaths:
    return RWKUZooPaths(root=str(root), tokenizer=str(root / "tokenizer"), base=str(root / "base"),
                        target=str(root / "target"), manifest=manifest)


def build_rwku_zoo(data_root, cache_dir: Optional[str] = None, spec: Optional[RWKUTinySpec] = None,
                   log=print) -> RWKUZooPaths:
    """Return the cached RWKU-tiny models for ``spec``, building them first if needed."""
    spec = spec or RWKUTinySpec()
    data = open_rwku(data_root)
    corpus = rwku_tiny_corpus(data, spec)
    cache = Path(cache_dir or default_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    key = spec_key(spec, corpus)
    root = cache / f"rwku-tiny-{key}"
    manifest = cached_dir(root, lambda tmp: _build_into(tmp, key, spec, data, corpus, log))
    return _paths(root, manifest)


def _fit_and_save(model, items: List[dict], tokenizer, cfg: FitConfig, out: Path, desc: str) -> List[float]:
    history = fit_lm(model, items, tokenizer.pad_token_id, cfg, desc=desc)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return [round(x, 4) for x in history]


def _build_into(root: Path, key: str, spec: RWKUTinySpec, data, corpus: Dict[str, list], log) -> dict:
    t0, timings = time.time(), {}
    qa_strings = [s for name in ("base_qa", "qa") for r in corpus[name] for s in (r["question"], r["answer"])]
    tokenizer = train_tokenizer(corpus["base_texts"] + corpus["texts"] + qa_strings, vocab_size=spec.model.vocab_size)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    timings["tokenizer_s"] = round(time.time() - t0, 1)
    torch.set_num_threads(1)  # tiny models: one thread is fastest and leaves the other core free

    t = time.time()
    model = spec.model.build(tokenizer, spec.seed)
    base_items = lm_items(tokenizer, corpus["base_texts"], spec.text_tokens + 1) + qa_items(tokenizer, corpus["base_qa"], spec.max_length)
    log(f"[rwku-zoo] base: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(base_items)} items")
    base_loss = _fit_and_save(model, base_items, tokenizer, spec.base_fit, root / "base", "rwku base")
    timings["base_s"] = round(time.time() - t, 1)

    t = time.time()
    items = lm_items(tokenizer, corpus["texts"], spec.text_tokens + 1) + qa_items(tokenizer, corpus["qa"], spec.max_length)
    log(f"[rwku-zoo] target: {len(items)} items ({len(corpus['texts'])} texts, {len(corpus['qa'])} probe answers)")
    target_loss = _fit_and_save(model, items, tokenizer, spec.target_fit, root / "target", "rwku target")
    timings["target_s"] = round(time.time() - t, 1)

    t = time.time()
    quality = {name: _quality(tokenizer, model if name == "target" else str(root / "base"), data, spec)
               for name in ("target", "base")}
    timings["quality_s"] = round(time.time() - t, 1)
    manifest = {
        "spec": asdict(spec),
        "key": key,
        "sizes": {k: len(v) for k, v in corpus.items()},
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "loss_history": {"base": base_loss, "target": target_loss},
        "quality": quality,
        "timings": timings,
        "build_s": round(time.time() - t0, 1),
        "template_args": TINY_TEMPLATE_ARGS,
    }
    log(f"[rwku-zoo] built in {manifest['build_s']} s: {timings}; quality {quality}")
    return manifest


def _quality(tokenizer, model, data, spec: RWKUTinySpec) -> Dict[str, float]:
    """ROUGE-L recall of greedy answers on the taught targets' first probes (plain prompts)."""
    from atwu_plugin.evals.rwku_eval import RWKUEvaluator
    from atwu_plugin.zoo.loading import load_causal_lm

    model = load_causal_lm(model) if isinstance(model, str) else model
    ev = RWKUEvaluator(tokenizer, TINY_TEMPLATE_ARGS, data, spec.taught_targets, metrics=["forget", "neighbor"],
                       max_probes_per_level=spec.quality_probes_per_level, prompt_style="plain", batch_size=64,
                       max_new_tokens=16, show_progress=False)
    res = ev.evaluate(model)
    return {k: round(res[k], 4) for k in ("forget_fb", "forget_qa", "forget_aa", "neighbor_fb", "neighbor_qa")}
