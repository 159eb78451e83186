"""ATWU's extra memory per rank under DeepSpeed ZeRO-3 at two model sizes, against the memory
model; and the default's peak-memory ratio on the 20.5M model in one process.

    .venv/bin/python benchmarks/zero_memory.py [--steps 8] [--skip-single]

ZeRO-3, 2 CPU processes (gloo), ``accelerate launch`` with ``atwu-accelerate-config zero3_cpu``,
2 samples per rank, ``--steps`` steps: ``TW_GradDiff`` and ``ATWU`` (default configuration) on
two Llamas with the same vocabulary (the micro tokenizer's) and hidden size 256, one of
1 layer / intermediate 256 and one of 8 layers / intermediate 2048 (about 20x the parameters).
Data: the 20-author embedded benchmark, forget10 and all of retain90 (so that the bank holds
thousands of retain tokens and ATWU's state is far above the allocator noise of the runs).
Each rank reports its peak *tensor* memory (``--tensor-memory`` of tests/_train_zero.py: live
tensor storages when training begins, after DeepSpeed partitioned the model, plus the largest
rise of allocated bytes until training ends, from the profiler's allocator records; what
``max_memory_allocated`` reports on a GPU). ATWU's extra per rank = ATWU's peak - GradDiff's
peak, rank by rank; the memory model is ``atwu_plugin.weighting.atwu.extra_memory_bytes``
(docs/scaling.md, "ATWU's extra memory per rank"): it depends on vocabulary, hidden size,
sketch, bank and forget-set size, not on the parameters or the number of ranks.

Then the 20.5M model of benchmarks/step_time.py in one process (its ``--memory-child`` runs:
persistent tensors after ATWU's setup + the largest rise over ``--mem-steps`` steps, which
cover a whole bank-refresh period). Last lines: the two ZeRO-3 sizes, then
``ratio_peak_mem_20.5M=<x>`` (target <= 1.05). Memory does not depend on machine load; on the
shared 2-core machine a full run takes 20 min to over an hour. ``--rows``/``--single`` print
the same summary from a saved run's output.
"""

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "_train_zero.py"
MIB = 2**20
SIZES = {  # same vocabulary and hidden size (they enter the memory model), ~20x the parameters
    "small": dict(hidden_size=256, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4),
    "large": dict(hidden_size=256, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=4),
}
N_RETAIN = 180  # all of retain90 on the 20-author benchmark


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_zero(trainer: str, work: Path, out: Path, cfg: str, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOCAL_SIZE": "2", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", cfg,
           "--main_process_port", str(_free_port()), str(SCRIPT), str(work), str(out), trainer,
           "--batch", "2", "--steps", str(steps), "--tensor-memory"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{trainer} run failed:\n{proc.stderr[-3000:]}")
    rep = json.loads((out / "report.json").read_text())
    if not (rep["deepspeed"] and rep["world_size"] == 2):
        sys.exit(f"{trainer}: expected a 2-rank DeepSpeed run, got {rep['world_size']} rank(s)")
    return rep


def atwu_default_config():
    from atwu_plugin.hosts.lite import load_trainer_config
    from atwu_plugin.weighting.atwu import ATWUConfig

    keys = {f.name for f in dataclasses.fields(ATWUConfig)}
    method_args = load_trainer_config("ATWU")["method_args"]
    return ATWUConfig.from_dict({k: v for k, v in method_args.items() if k in keys})


def predicted_extra(work: Path) -> tuple:
    """(bytes by component, parameter count) of the saved model and its records."""
    sys.path.insert(0, str(SCRIPT.parent))
    from _train_micro import load_work

    from atwu_plugin.trainers.atwu import answer_tokens
    from atwu_plugin.weighting.atwu import extra_memory_bytes
    from atwu_plugin.zoo.loading import load_causal_lm

    _, forget, retain = load_work(work)
    model = load_causal_lm(str(work / "model"))
    c = model.config
    parts = extra_memory_bytes(atwu_default_config(), c.vocab_size, c.hidden_size, answer_tokens(retain),
                               answer_tokens(forget), n_layers=c.num_hidden_layers + 1)
    return parts, sum(p.numel() for p in model.parameters()), c


def zero_sizes(tmp: Path, steps: int) -> list:
    sys.path.insert(0, str(SCRIPT.parent))
    from _train_zero import prepare_work

    from atwu_plugin.hosts.accelerate import write_config

    cfg = write_config("zero3_cpu", str(tmp / "zero3_cpu.yaml"), num_processes=2)
    rows = []
    for name, size in SIZES.items():
        work = prepare_work(tmp / f"work_{name}", fit_epochs=0, n_retain=N_RETAIN, **size)  # memory needs no fit
        parts, n_params, c = predicted_extra(work)
        reports = {t: run_zero(t, work, tmp / f"{name}_{t}", cfg, steps) for t in ("TW_GradDiff", "ATWU")}
        peaks = {t: r["peak_tensor_mib_per_rank"] for t, r in reports.items()}
        phases = {t: r["peak_tensor_mib_first_step_later_steps_per_rank"] for t, r in reports.items()}
        extra = [a - g for a, g in zip(peaks["ATWU"], peaks["TW_GradDiff"])]
        row = {"size": name, "params": n_params, "vocab": c.vocab_size, "hidden": c.hidden_size,
               "layers": c.num_hidden_layers, "intermediate": c.intermediate_size,
               "graddiff_mib": peaks["TW_GradDiff"], "atwu_mib": peaks["ATWU"], "extra_mib": extra,
               "first_step_later_steps_mib": phases,
               "predicted_mib": parts["total"] / MIB, "components_mib": {k: v / MIB for k, v in parts.items()}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def single_process(mem_steps: int) -> dict:
    """The 20.5M model of benchmarks/step_time.py, GradDiff and ATWU each in its own process."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    out = {}
    for mode in ("graddiff", "atwu"):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--memory-child", mode,
                               "--mem-steps", str(mem_steps)],
                              env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"step_time.py --memory-child {mode} failed:\n{proc.stderr[-3000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def summary(rows: list, single) -> list:
    """The closing lines. ATWU's extra per rank is compared with the memory model over the
    later steps (the steady state the formula describes: ATWU's state is allocated in the
    first step, whose setup pass also has transients of its own, reported separately), as the
    mean over the ranks: every rank holds the same state, while a single rank's peak moves by
    several MiB from run to run (allocation timing; GradDiff's two ranks differ as much)."""
    lines = []
    if single:
        for mode, r in single.items():
            lines.append(f"20.5M one process, {mode}: persistent {r['persistent_tensor_mb']:.1f} MiB + step rise "
                         f"{r['step_rise_mb']:.1f} MiB = peak {r['peak_tensor_mb']:.1f} MiB")
    steady = {}
    for r in rows:
        ph = r["first_step_later_steps_mib"]
        later = [a[1] - g[1] for a, g in zip(ph["ATWU"], ph["TW_GradDiff"])]
        mean = sum(a[1] for a in ph["ATWU"]) / len(later) - sum(g[1] for g in ph["TW_GradDiff"]) / len(later)
        setup = [a[0] - g for a, g in zip(ph["ATWU"], r["graddiff_mib"])]
        steady[r["size"]] = mean
        lines.append(
            f"ZeRO-3 2 ranks {r['size']} ({r['params'] / 1e6:.2f}M params, V={r['vocab']} H={r['hidden']}): peak per rank "
            f"GradDiff {[round(x, 1) for x in r['graddiff_mib']]} MiB, ATWU {[round(x, 1) for x in r['atwu_mib']]} MiB; "
            f"later steps, ATWU - GradDiff rank by rank {[round(x, 1) for x in later]} MiB, mean over ranks "
            f"{mean:.1f} MiB vs formula {r['predicted_mib']:.1f} MiB ({100 * (mean / r['predicted_mib'] - 1):+.1f} %); "
            f"first step with the setup pass: ATWU peak - GradDiff peak {[round(x, 1) for x in setup]} MiB")
    if len(rows) == 2:
        small, large = rows
        lines.append(f"ZeRO-3 ATWU extra per rank (mean over ranks): {steady['small']:.1f} MiB at {small['params'] / 1e6:.2f}M "
                     f"params, {steady['large']:.1f} MiB at {large['params'] / 1e6:.2f}M params "
                     f"({large['params'] / small['params']:.1f}x the parameters, extra x{steady['large'] / steady['small']:.3f})")
    if single:
        ratio = single["atwu"]["peak_tensor_mb"] / single["graddiff"]["peak_tensor_mb"]
        lines.append(f"ratio_peak_mem_20.5M={ratio:.3f}")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--mem-steps", type=int, default=22, help="single-process measured steps (after 2 setup steps)")
    p.add_argument("--skip-single", action="store_true", help="only the ZeRO-3 runs")
    p.add_argument("--rows", help="summarize the JSON rows a previous run printed (a saved output) instead of running ZeRO-3")
    p.add_argument("--single", nargs=2, metavar=("GRADDIFF_JSON", "ATWU_JSON"),
                   help="summarize saved step_time.py --memory-child outputs instead of running them")
    a = p.parse_args()
    if a.rows:
        rows = [json.loads(line) for line in Path(a.rows).read_text().splitlines() if line.startswith('{"size"')]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = zero_sizes(Path(tmp), a.steps)
    if a.single:
        single = {m: json.loads(Path(f).read_text().strip().splitlines()[-1]) for m, f in zip(("graddiff", "atwu"), a.single)}
    else:
        single = None if a.skip_single else single_process(a.mem_steps)
    for line in summary(rows, single):
        print(line)


if __name__ == "__main__":
    main()
