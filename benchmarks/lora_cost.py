"""Cost of LoRA vs full training: peak tensor memory and step time of GradDiff and ATWU.

    python benchmarks/lora_cost.py [--steps 12] [--hidden 384 --layers 8 --vocab 8192]   # the 20.5M model
    python benchmarks/lora_cost.py --model-dir DIR [--seq 64 --batch 4]                  # a saved model (e.g. SmolLM2-135M)

Four modes: {GradDiff, ATWU} x {full, LoRA (configs/peft/lora.yaml: r=8 on every linear layer
of the blocks)}, on the same model init and the same batches. Step time: all four trainers run
in this process, in alternating blocks of steps (drift in machine load hits all of them);
median seconds per optimizer step after ATWU's one-off setup. Peak tensor memory: each mode
again in its own subprocess, measured like benchmarks/step_time.py (live tensor storages after
setup: weights, gradients' high-water, optimizer state, frozen copies, ATWU's banks and caches;
plus the profiler's allocation peak during the steps), i.e. what a GPU's max_memory_allocated
would report. Prints a markdown table and ``ratio_*`` lines (LoRA / full, same method).
"""

import argparse
import copy
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_time import add_workload_arguments, build, live_tensor_bytes, make_model, profiled_peak_rise, timed_steps  # noqa: E402

MODES = {"graddiff_full": ("graddiff", None), "graddiff_lora": ("graddiff", "lora"),
         "atwu_full": ("atwu", None), "atwu_lora": ("atwu", "lora")}


def load_model(args):
    if args.model_dir:
        from atwu_plugin.zoo.loading import load_causal_lm

        model = load_causal_lm(args.model_dir, torch_dtype=torch.float32)
        args.vocab = model.config.vocab_size  # the random token ids must fit the model
        return model
    return make_model(args)


def build_mode(mode, model, args):
    method, peft = MODES[mode]
    return build(method, model, args, f"/tmp/lora_cost_{mode}", extra={"method_args.peft": peft} if peft else None)


def memory_child(mode, args):
    trainer = build_mode(mode, load_model(args), args)
    timed_steps(trainer, 2)  # ATWU setup + first steps allocate everything they will need
    persistent = live_tensor_bytes()
    rise = profiled_peak_rise(lambda: timed_steps(trainer, args.mem_steps))
    print(json.dumps({"mode": mode, "persistent_tensor_mb": persistent / 2**20, "step_rise_mb": rise / 2**20,
                      "peak_tensor_mb": (persistent + rise) / 2**20,
                      "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(p, steps=12, mem_steps=4)
    p.add_argument("--model-dir", default=None, help="a saved causal LM (safetensors) instead of the random 20.5M Llama")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    p.add_argument("--memory-child", choices=list(MODES))
    p.add_argument("--atwu", action="append", default=[], help=argparse.SUPPRESS)  # step_time.build reads it
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.memory_child:
        return memory_child(args.memory_child, args)
    modes = args.modes.split(",")
    base = load_model(args)
    n = sum(q.numel() for q in base.parameters())
    print(f"model: {args.model_dir or 'random Llama'}, {n / 1e6:.1f}M parameters, batch {args.batch} x <= {args.seq} tokens; "
          f"torch threads 1, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    trainers = {m: build_mode(m, copy.deepcopy(base), args) for m in modes}
    for m, tr in trainers.items():  # setup (ATWU: bank fill, feature cache, scorer pre-fit) + warm-up
        timed_steps(tr, 1)
    per_mode = {m: [] for m in modes}
    for _ in range(args.blocks):
        for m, tr in trainers.items():
            per_mode[m] += timed_steps(tr, max(1, args.steps // args.blocks))
    med = {m: sorted(v)[len(v) // 2] for m, v in per_mode.items()}
    del trainers
    mem = {}
    for m in modes:
        out = subprocess.run([sys.executable, __file__, "--memory-child", m] + sys.argv[1:], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"memory child {m} failed:\n{out.stderr[-3000:]}")
        mem[m] = json.loads(out.stdout.strip().splitlines()[-1])
    print("\n| mode | trainable params | step time (median, ms) | persistent tensors (MB) | step peak rise (MB) | peak tensor memory (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in modes:
        r = mem[m]
        print(f"| {m} | {r['trainable_params'] / 1e6:.2f}M | {med[m] * 1000:.0f} | {r['persistent_tensor_mb']:.1f} | "
              f"{r['step_rise_mb']:.1f} | {r['peak_tensor_mb']:.1f} |")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    for method in ("graddiff", "atwu"):
        full, lora = f"{method}_full", f"{method}_lora"
        if full in mem and lora in mem:
            print(f"{method}: ratio_step_time={med[lora] / med[full]:.3f} "
                  f"ratio_peak_mem={mem[lora]['peak_tensor_mb'] / mem[full]['peak_tensor_mb']:.3f}")


if __name__ == "__main__":
    main()
