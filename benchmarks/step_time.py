"""ATWU vs GradDiff step time and peak memory on identical batches (issue: cost target).

    python benchmarks/step_time.py [--steps 30] [--hidden 384] [--layers 8] [--vocab 8192]

Step time: both trainers run in this process on the same model init and the same batches
(alternating blocks of steps, so drift in machine load hits both); the first steps (ATWU's
one-off setup: bank fill, feature cache, scorer pre-fit) are timed separately.
Peak memory: each mode runs again in its own subprocess. CPU PyTorch keeps no allocator
statistics, so the child measures *tensor* memory itself: the bytes of every live tensor
storage after setup (model, optimizer state, frozen copies, ATWU's banks and caches; found by
a gc scan, each storage counted once) plus the largest rise above that during the measured
steps, from the PyTorch profiler's allocator records (``profile_memory=True``: one
timestamped event per allocation and free) summed in time order. ``ratio_peak_mem`` is the
ratio of those peaks (what a GPU's ``max_memory_allocated`` would report). Peak RSS is printed too, for reference; it is a
whole-process high-water mark that model construction already sets.
Last line: ``ratio_step_time=<x> ratio_peak_mem=<y>`` for the default ATWU configuration.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 64,
        max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(cfg)


def make_items(n, args, seed):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        length = int(torch.randint(args.seq // 2, args.seq, (1,), generator=g))
        ids = torch.randint(3, args.vocab, (length,), generator=g)
        labels = ids.clone()
        labels[: length // 3] = -100  # the prompt
        items.append({"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids), "index": i})
    return items


class Tok:  # the trainers only need ids from a tokenizer here
    pad_token_id, unk_token_id, eos_token_id = 0, 0, 2


def build(mode, model, args, out, extra=None):
    from atwu_plugin.data.collator import TokenLabelCollator
    from atwu_plugin.data.qa_dataset import ForgetRetainDataset
    from atwu_plugin.hosts.lite import load_trainer_config, lite_training_args
    from atwu_plugin.trainers import get_trainer_class

    name = {"graddiff": "TW_GradDiff", "atwu": "ATWU"}[mode]
    overrides = {"args.per_device_train_batch_size": args.batch, "args.max_steps": args.steps}
    if mode == "atwu":
        for kv in args.atwu:  # e.g. method_args.bank_size=2048 (a frontier point, not the default)
            key, _, value = kv.partition("=")
            overrides[key] = yaml.safe_load(value)
    overrides.update(extra or {})  # e.g. {"method_args.peft": "lora"} (benchmarks/lora_cost.py)
    cfg = load_trainer_config(name, overrides)
    targs = lite_training_args(out, 0, cfg.get("args"))
    forget, retain = make_items(args.n_forget, args, 1), make_items(args.n_retain, args, 2)
    cls = get_trainer_class(cfg["handler"])
    trainer = cls(model=model, args=targs, train_dataset=ForgetRetainDataset(forget, retain, seed=0),
                  data_collator=TokenLabelCollator(0), **cfg.get("method_args", {}))
    return trainer


def timed_steps(trainer, n):
    """Run ``n`` optimizer steps through the Trainer's own training_step; seconds per step."""
    loader = trainer.get_train_dataloader()
    model = trainer.model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    it = iter(loader)
    for _ in range(n):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        t = time.perf_counter()
        loss = trainer.compute_loss(model, trainer._prepare_inputs(batch))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return times


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def live_tensor_bytes():
    """Bytes of all live tensor storages (each storage once), found by a gc scan."""
    import gc

    gc.collect()
    seen, total = set(), 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu" and not obj.is_meta:
            st = obj.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
    return total


def allocation_peak_rise(prof) -> int:
    """Largest rise of allocated CPU tensor bytes over a ``profile(profile_memory=True)``
    window, from the allocator's own records: one timestamped ``[memory]`` event per
    allocation (+bytes) and free (-bytes), summed in time order, i.e. the exact allocator
    curve. (Summing per-op ``self_cpu_memory_usage`` in op start order, as an earlier version
    did, misplaces the allocations of long and nested ops and of other threads: the same
    ZeRO-3 run read anywhere from 30 to 77 MiB.)"""
    from torch._C._autograd import DeviceType

    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    cur = peak = 0
    for _, nbytes in records:
        cur += nbytes
        peak = max(peak, cur)
    return peak


def profiled_peak_rise(fn):
    """Largest rise of allocated tensor bytes while ``fn()`` runs (profiler allocation records)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return allocation_peak_rise(prof)


def memory_child(mode, args):
    model = make_model(args)
    trainer = build(mode, model, args, f"/tmp/step_time_{mode}")
    timed_steps(trainer, 2)  # ATWU setup + first steps allocate everything they will need
    base = rss_mb()
    persistent = live_tensor_bytes()
    rise = profiled_peak_rise(lambda: timed_steps(trainer, args.mem_steps))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "peak_rss_mb": peak, "rss_after_setup_mb": base,
                      "persistent_tensor_mb": persistent / 2**20, "step_rise_mb": rise / 2**20,
                      "peak_tensor_mb": (persistent + rise) / 2**20}))


def add_workload_arguments(p, steps, mem_steps):
    """The model and batch arguments every cost benchmark shares (the 20.5M Llama by default)."""
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--mem-steps", type=int, default=mem_steps)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n-forget", type=int, default=64)
    p.add_argument("--n-retain", type=int, default=512)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(p, steps=30, mem_steps=10)
    p.add_argument("--memory-child", choices=["graddiff", "atwu"])
    p.add_argument("--atwu", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the ATWU trainer config, e.g. method_args.bank_size=2048 (repeatable)")
    args = p.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args)

    base = make_model(args)
    print(f"model: {sum(p.numel() for p in base.parameters()) / 1e6:.1f}M parameters, batch {args.batch} x {args.seq} tokens", flush=True)
    import copy

    trainers = {m: build(m, copy.deepcopy(base), args, f"/tmp/step_time_{m}") for m in ("graddiff", "atwu")}
    t = time.perf_counter()
    timed_steps(trainers["atwu"], 1)
    setup_s = time.perf_counter() - t
    timed_steps(trainers["graddiff"], 1)  # warm-up
    per_mode = {m: [] for m in trainers}
    for _ in range(args.blocks):
        for m, tr in trainers.items():
            per_mode[m] += timed_steps(tr, args.steps // args.blocks)
    med = {m: sorted(v)[len(v) // 2] for m, v in per_mode.items()}
    for m in trainers:
        print(f"{m:9s} step time median {med[m] * 1000:.1f} ms over {len(per_mode[m])} steps")
    print(f"atwu one-off setup (first step incl. bank fill, feature cache, scorer pre-fit): {setup_s:.2f}s")

    mem = {}
    for m in ("graddiff", "atwu"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", m] + sys.argv[1:], capture_output=True, text=True, check=True)
        mem[m] = json.loads(out.stdout.strip().splitlines()[-1])
        r = mem[m]
        print(f"{m:9s} tensors: persistent {r['persistent_tensor_mb']:.1f} MB + step peak rise {r['step_rise_mb']:.1f} MB "
              f"= peak {r['peak_tensor_mb']:.1f} MB (peak RSS {r['peak_rss_mb']:.1f} MB)")
    ratio_mem = mem["atwu"]["peak_tensor_mb"] / mem["graddiff"]["peak_tensor_mb"]
    print(f"ratio_step_time={med['atwu'] / med['graddiff']:.3f} ratio_peak_mem={ratio_mem:.3f}")


if __name__ == "__main__":
    main()
