"""Build (once) and cache the embedded benchmark's data, tokenizer and tiny models.

    base   : a small Llama trained on generic world text + world QA (no benchmark authors);
             also the auxiliary model of the reference-weighting baseline
    target : base fine-tuned on all authors (``full``) + world QA
    retain : base fine-tuned on the retain authors only (``retainNN``) + world QA: the gold
             standard an unlearned model should look like

Everything is keyed by a content hash of (generator version, seed, configs), built into a
temporary directory and renamed into place, so an interrupted build never leaves a
half-written cache entry and a rerun reuses a complete one.
"""

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from atwu_plugin.data.encoding import encode_qa
from atwu_plugin.data.generator import GENERATOR_VERSION, generate_benchmark, load_split, write_benchmark
from atwu_plugin.data.lm_items import lm_items
from atwu_plugin.zoo.cache import cache_key, cached_dir, run_in_spawned_processes
from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS, train_tokenizer
from atwu_plugin.zoo.train_lm import FitConfig, fit_lm

ZOO_VERSION = "1"


@dataclass
class TinyLlamaSpec:
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 256

    def build(self, tokenizer, seed: int) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return LlamaForCausalLM(cfg)


@dataclass
class ZooSpec:
    seed: int = 0
    n_authors: int = 200
    n_holdout: int = 20
    qa_per_author: int = 10
    retain_splits: List[str] = field(default_factory=lambda: ["retain90"])
    model: TinyLlamaSpec = field(default_factory=TinyLlamaSpec)
    base_fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=6, lr=3e-3))
    qa_fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=20, lr=4e-3))
    max_length: int = 128

    def key(self) -> str:
        return cache_key({"zoo": ZOO_VERSION, "generator": GENERATOR_VERSION, **asdict(self)})


# Small enough for unit tests that need trained models in well under a minute.
SMOKE_SPEC = ZooSpec(
    n_authors=40,
    n_holdout=4,
    model=TinyLlamaSpec(vocab_size=1024, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2),
    base_fit=FitConfig(epochs=2, lr=3e-3),
    qa_fit=FitConfig(epochs=8, lr=3e-3),
)

# ``make demo`` / ``atwu-demo``: the default model and training recipe on half the authors
# (100, 10 holdout), so the cold build takes about half as long; the default zoo (and every
# docs/results page built on it) is unchanged. Its quality gates: tests/test_demo.py.
DEMO_SPEC = ZooSpec(n_authors=100, n_holdout=10)


@dataclass
class ZooPaths:
    root: str
    data_dir: str
    tokenizer: str
    base: str
    target: str
    retain: Dict[str, str]
    manifest: dict

    @property
    def template_args(self) -> dict:
        return dict(TINY_TEMPLATE_ARGS)


def default_cache_dir() -> str:
    return os.environ.get("ATWU_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "atwu-plugin")


def _paths(root: Path, spec: ZooSpec, manifest: dict) -> ZooPaths:
    return ZooPaths(
        root=str(root),
        data_dir=str(root / "data"),
        tokenizer=str(root / "tokenizer"),
        base=str(root / "base"),
        target=str(root / "target"),
        retain={s: str(root / f"retain_{s}") for s in spec.retain_splits},
        manifest=manifest,
    )


def build_zoo(cache_dir: Optional[str] = None, spec: Optional[ZooSpec] = None, log=print) -> ZooPaths:
    """Return the cached zoo for ``spec``, building it first if needed."""
    spec = spec or ZooSpec()
    root = Path(cache_dir or default_cache_dir()) / f"embedded-{spec.key()}"
    manifest = cached_dir(root, lambda tmp: _build_into(tmp, spec, log))
    return _paths(root, spec, manifest)


def qa_items(tokenizer, records: List[dict], max_length: int, template_args: Optional[dict] = None) -> List[dict]:
    """Training items of QA records in ``template_args``' prompt template (default: the tiny
    models'; answer tokens are targets)."""
    items = []
    for r in records:
        enc = encode_qa(tokenizer, template_args or TINY_TEMPLATE_ARGS, r["question"], r["answer"],
                        max_length=max_length)
        items.append({"input_ids": enc.input_ids, "labels": enc.labels, "attention_mask": enc.attention_mask})
    return items


def _build_into(root: Path, spec: ZooSpec, log) -> dict:
    t0 = time.time()
    timings = {}
    sizes = dict(n_authors=spec.n_authors, n_holdout=spec.n_holdout, qa_per_author=spec.qa_per_author)
    splits = generate_benchmark(seed=spec.seed, **sizes)
    write_benchmark(str(root / "data"), seed=spec.seed, splits=splits, **sizes)

    corpus = list(splits["world_text"])
    for name in ("full", "holdout", "world_facts"):
        for r in splits[name]:
            corpus += [r["question"], r["answer"], r.get("paraphrased_answer", "")] + list(r.get("perturbed_answer", []))
    tokenizer = train_tokenizer(corpus, vocab_size=spec.model.vocab_size)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    timings["tokenizer_s"] = round(time.time() - t0, 1)

    world_qa = qa_items(tokenizer, splits["world_facts"], spec.max_length)
    torch.set_num_threads(1)
    t = time.time()
    base = spec.model.build(tokenizer, spec.seed)
    log(f"[zoo] base model: {sum(p.numel() for p in base.parameters()) / 1e6:.2f}M parameters")
    base_items = lm_items(tokenizer, splits["world_text"], spec.max_length) + world_qa
    fit_lm(base, base_items, tokenizer.pad_token_id, spec.base_fit, desc="base")
    base.save_pretrained(str(root / "base"), safe_serialization=True)
    tokenizer.save_pretrained(str(root / "base"))
    timings["base_s"] = round(time.time() - t, 1)

    # target and retain models are independent fine-tunes of base: run them side by side,
    # one single-threaded process each (tiny models do not scale across threads).
    jobs = {"target": "full", **{f"retain_{s}": s for s in spec.retain_splits}}
    done = run_in_spawned_processes({name: (_finetune_job, (str(root), name, split, asdict(spec)))
                                     for name, split in jobs.items()})
    timings.update({f"{name}_s": job["s"] for name, job in done.items()})
    quality = {name: job["quality"] for name, job in done.items()}
    manifest = {
        "spec": asdict(spec),
        "quality": quality,
        "key": spec.key(),
        "generator_version": GENERATOR_VERSION,
        "n_parameters": sum(p.numel() for p in base.parameters()),
        "timings": timings,
        "build_s": round(time.time() - t0, 1),
        "template_args": TINY_TEMPLATE_ARGS,
    }
    log(f"[zoo] built in {manifest['build_s']} s: {timings}")
    return manifest


def spec_from_dict(d: dict, spec_cls=None):
    """Rebuild a zoo spec from its ``asdict`` form (how it crosses into a spawned process):
    ``spec_cls`` (default ``ZooSpec``) with its ``model``, ``base_fit`` and ``qa_fit`` fields."""
    d = dict(d)
    d["model"] = TinyLlamaSpec(**d["model"])
    d["base_fit"] = FitConfig(**d["base_fit"])
    d["qa_fit"] = FitConfig(**d["qa_fit"])
    return (spec_cls or ZooSpec)(**d)


def _finetune_job(root: str, name: str, split: str, spec_dict: dict) -> dict:
    """Child process: fine-tune the saved base model on ``split`` (+ world QA), save as ``name``,
    then score it (``model_quality``, in this process so both models are scored side by side).
    Returns ``{"s": fine-tune seconds, "quality": {...}}``."""
    from atwu_plugin.zoo.quality import model_quality

    torch.set_num_threads(1)
    t = time.time()
    spec = spec_from_dict(spec_dict)
    root_p = Path(root)
    tokenizer = load_tokenizer(str(root_p / "tokenizer"))
    records = load_split(str(root_p / "data" / f"{split}.json"))
    world = load_split(str(root_p / "data" / "world_facts.json"))
    items = qa_items(tokenizer, records + world, spec.max_length)
    model = load_causal_lm(str(root_p / "base"))
    fit_lm(model, items, tokenizer.pad_token_id, replace(spec.qa_fit, seed=spec.seed), desc=name)
    model.save_pretrained(str(root_p / name), safe_serialization=True)
    tokenizer.save_pretrained(str(root_p / name))
    secs = round(time.time() - t, 1)
    quality = model_quality(str(root_p / name), str(root_p / "data"), TINY_TEMPLATE_ARGS, "forget10", "retain90")
    return {"s": secs, "quality": quality}
