"""The real model (SmolLM2-135M-Instruct, GGUF Q4_1 dequantised) through the stack: costs.

    python benchmarks/real_model_cost.py --data-dir /path/to/tofu [--steps 6] [--batch 4]
        [--top-layers 8] [--modes graddiff,npo,atwu,atwu-direct,...] [--memory-only]

Measures, on real TOFU text (forget05 with word labels, retain90) encoded with SmolLM2's chat
template:

1. load/convert time: the GGUF conversion (timed in a fresh cache directory unless
   ``--skip-convert``) and the reload of the cached safetensors folder;
2. ATWU's 49k-vocabulary pieces: the random-projection sketch matrix (V x sketch_dim), the
   retain bank, the frozen-feature cache (their tensor bytes), and the time of one sketch of a
   batch's logits;
3. GradDiff vs ATWU (defaults) step time on the same batches (alternating blocks, as
   ``benchmarks/step_time.py``, whose timing and memory helpers are reused) and peak tensor
   memory, each mode in its own subprocess. ``--modes`` adds other methods (``MODES``; the
   ratios are to GradDiff), ``--top-layers 8`` trains only the top 8 decoder layers as
   TOFU-real's unlearning does, ``--memory-only`` skips the step times.

The machine is shared: every time printed is contended unless the machine was idle; the
ratios (both modes in the same run, alternating) are the numbers to compare.
Last line: ``ratio_step_time=<x> ratio_peak_mem=<y>``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from step_time import live_tensor_bytes, profiled_peak_rise, rss_mb, timed_steps  # noqa: E402


def datasets(args, tokenizer, template_args):
    from atwu_plugin.data.qa_dataset import QADataset
    from atwu_plugin.data.tofu_splits import TofuSplits, evenly_spaced

    splits = TofuSplits(args.data_dir)
    forget = QADataset(evenly_spaced(splits.forget_with_spans("forget05"), args.n_forget), tokenizer, template_args,
                       max_length=args.max_length, name="forget05_perturbed")
    retain = QADataset(evenly_spaced(splits.qa("retain95"), args.n_retain), tokenizer, template_args,
                       max_length=args.max_length, name="retain95")
    return forget, retain


# mode -> (trainer config, overrides); "reference" gets the pretrained model as its aux model
MODES = {
    "graddiff": ("TW_GradDiff", {}),
    "npo": ("TW_NPO", {}),
    "atwu": ("ATWU", {}),
    "atwu-direct": ("ATWU", {"method_args.variant": "direct"}),
    "atwu-linear_h": ("ATWU", {"method_args.variant": "linear_h"}),
    "retain-frequency": ("TW_RetainFrequency", {}),
    "same-token": ("TW_SameToken", {}),
    "reference": ("TW_Reference", {}),
}


def build(mode, model, tokenizer, template_args, args, out):
    from atwu_plugin.hosts.lite import build_trainer, load_trainer_config
    from atwu_plugin.zoo.trainable import train_only_top_layers

    name, overrides = MODES[mode]
    if mode == "reference":
        overrides = {"method_args.aux_model_path": args.model_path}
    cfg = load_trainer_config(name, {"args.per_device_train_batch_size": args.batch, "args.max_steps": args.steps,
                                     "args.learning_rate": 1e-5, **overrides})
    if args.top_layers:
        train_only_top_layers(model, args.top_layers)
    forget, retain = datasets(args, tokenizer, template_args)
    return build_trainer(cfg, model, tokenizer, forget, retain, out, seed=0, template_args=template_args)


def load(args):
    from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer
    from atwu_plugin.zoo.real import real_model

    entry = real_model(args.model, log=lambda *a: None)
    return entry, load_causal_lm(entry.path), load_tokenizer(entry.path)


def memory_child(mode, args):
    torch.set_num_threads(args.threads)
    entry, model, tok = load(args)
    trainer = build(mode, model, tok, entry.template_args, args, tempfile.mkdtemp(prefix=f"real_cost_{mode}_"))
    timed_steps(trainer, 2)  # ATWU setup + first steps allocate everything they will need
    base = rss_mb()
    persistent = live_tensor_bytes()
    rise = profiled_peak_rise(lambda: timed_steps(trainer, args.mem_steps))
    import resource

    print(json.dumps({"mode": mode, "rss_after_setup_mb": base,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "persistent_tensor_mb": persistent / 2**20, "step_rise_mb": rise / 2**20,
                      "peak_tensor_mb": (persistent + rise) / 2**20}))


def atwu_parts(trainer):
    """Tensor bytes of ATWU's vocabulary-sized and bank pieces after setup."""
    w = trainer.weighter.state  # ATWUWeighting
    parts = {}
    sketch = getattr(w, "sketch", None)
    if sketch is not None and hasattr(sketch, "matrix"):
        parts["sketch_matrix_mb"] = sketch.matrix().numel() * 4 / 2**20
        parts["sketch_shape"] = list(sketch.matrix().shape)
    bank = getattr(w, "bank", None)
    if bank is not None and hasattr(bank, "memory_floats"):
        parts["retain_bank_mb"] = bank.memory_floats() * 4 / 2**20
        parts["retain_bank_tokens"] = len(bank)
    feats = getattr(w, "features", None)
    if feats is not None:  # the frozen initial-model features of the forget samples seen so far
        parts["frozen_features_mb"] = sum(t.numel() * t.element_size() for t in feats._data.values()) / 2**20
        parts["frozen_features_samples"] = len(feats)
    return parts


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TOFU_DATA"), help="TOFU's JSON files (or $TOFU_DATA)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--mem-steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--n-forget", type=int, default=32)
    p.add_argument("--n-retain", type=int, default=64)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-convert", action="store_true", help="do not time a fresh GGUF conversion")
    p.add_argument("--top-layers", type=int, default=0, help="train only the top N decoder layers (0: all weights)")
    p.add_argument("--modes", default="graddiff,atwu", help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--memory-only", action="store_true", help="peak memory only, no step times")
    p.add_argument("--memory-child", choices=list(MODES))
    args = p.parse_args()
    if not args.data_dir:
        p.error("--data-dir (or $TOFU_DATA): the directory of TOFU's JSON files is required")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or "graddiff" not in modes:
        p.error(f"--modes {args.modes!r}: expected names from {list(MODES)}, graddiff (the baseline) among them")
    args.modes = ["graddiff"] + [m for m in modes if m != "graddiff"]
    from atwu_plugin.zoo.real import real_model as _real_model

    args.model_path = _real_model(args.model, log=lambda *a: None).path
    if args.memory_child:
        return memory_child(args.memory_child, args)
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; machine shared with other jobs: times are contended", flush=True)

    from atwu_plugin.zoo.loading import load_causal_lm
    from atwu_plugin.zoo.real import real_model

    if not args.skip_convert:
        with tempfile.TemporaryDirectory(prefix="real_cost_cache_") as tmp:
            t = time.perf_counter()
            real_model(args.model, cache_dir=tmp, log=lambda *a: None)
            print(f"convert (GGUF load + dequantise + tie + save): {time.perf_counter() - t:.1f} s", flush=True)
    entry = real_model(args.model, log=lambda *a: None)
    t = time.perf_counter()
    load_causal_lm(entry.path)
    print(f"reload from the cached safetensors folder: {time.perf_counter() - t:.2f} s "
          f"({entry.manifest['n_parameters'] / 1e6:.1f}M parameters, {entry.manifest['quantisation']})", flush=True)

    # memory first, one subprocess per mode, while this process holds no trainer (two in-process
    # trainers + the children's models exceeded a shared 23 GB machine: the parent was OOM-killed)
    mem = {}
    for m in args.modes:
        out = subprocess.run([sys.executable, __file__, "--memory-child", m] + sys.argv[1:], capture_output=True,
                             text=True, check=True)
        mem[m] = json.loads(out.stdout.strip().splitlines()[-1])
        r = mem[m]
        print(f"{m:16s} tensors: persistent {r['persistent_tensor_mb']:.0f} MB + step peak rise "
              f"{r['step_rise_mb']:.0f} MB = peak {r['peak_tensor_mb']:.0f} MB "
              f"({r['peak_tensor_mb'] / mem['graddiff']['peak_tensor_mb']:.3f}x GradDiff; "
              f"peak RSS {r['peak_rss_mb']:.0f} MB)", flush=True)
    if args.memory_only:
        if "atwu" in mem:
            print(f"ratio_peak_mem={mem['atwu']['peak_tensor_mb'] / mem['graddiff']['peak_tensor_mb']:.3f}")
        return

    _, model, tok = load(args)
    import copy

    trainers = {m: build(m, copy.deepcopy(model), tok, entry.template_args, args, tempfile.mkdtemp(prefix=f"real_cost_{m}_"))
                for m in args.modes}
    first = trainers["graddiff"].train_dataset.forget
    n_tok = sum(int((it["labels"] != -100).sum()) for it in first.items)
    print(f"forget: {len(first)} samples, {n_tok} answer tokens; batch {args.batch}; "
          f"{'top ' + str(args.top_layers) + ' layers' if args.top_layers else 'all weights'} trained", flush=True)
    for m, tr in trainers.items():  # the first step includes each method's setup (ATWU: bank, cache, pre-fit)
        t = time.perf_counter()
        timed_steps(tr, 1)
        print(f"{m:16s} first step (with its setup): {time.perf_counter() - t:.1f} s", flush=True)
    if "atwu" in trainers:
        print("atwu pieces: " + json.dumps(atwu_parts(trainers["atwu"])), flush=True)
        sketch = trainers["atwu"].weighter.state.sketch
        logits = torch.randn(args.batch * 64, len(tok))
        labels = torch.randint(0, len(tok), (args.batch * 64,))
        t = time.perf_counter()
        sketch(logits, labels)
        print(f"sketch of {args.batch * 64} tokens' logits (V={len(tok)}): {(time.perf_counter() - t) * 1000:.0f} ms",
              flush=True)
    per_mode = {m: [] for m in trainers}
    for _ in range(args.blocks):
        for m, tr in trainers.items():
            per_mode[m] += timed_steps(tr, max(1, args.steps // args.blocks))
    med = {m: sorted(v)[len(v) // 2] for m, v in per_mode.items()}
    for m in trainers:
        print(f"{m:16s} step time median {med[m]:.2f} s over {len(per_mode[m])} steps "
              f"({med[m] / med['graddiff']:.3f}x GradDiff)", flush=True)
    if "atwu" in trainers:
        ratio_mem = mem["atwu"]["peak_tensor_mb"] / mem["graddiff"]["peak_tensor_mb"]
        print(f"ratio_step_time={med['atwu'] / med['graddiff']:.3f} ratio_peak_mem={ratio_mem:.3f}")


if __name__ == "__main__":
    main()
