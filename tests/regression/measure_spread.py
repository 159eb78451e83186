"""Measure the noise that sets atwu-regress's default tolerances (docs/regression.md).

    python tests/regression/measure_spread.py run seeds      # quick.yaml with seeds 0, 1, 2
    python tests/regression/measure_spread.py run threads2   # seed 0, 2 intra-op threads instead of 1
    python tests/regression/measure_spread.py run avx2       # seed 0, AVX2 kernels instead of AVX-512
    python tests/regression/measure_spread.py run mutated    # seed 0, the mutations of mutations.py
    python tests/regression/measure_spread.py summarize      # the tables of docs/regression.md

(``make regress-spread`` runs all of them.) Each variant is a leaderboard run of
tests/regression/quick.yaml under ``--out`` (default outputs/regression/spread/<variant>);
cells already there are reused. ``threads2`` and ``avx2`` change only how the same
arithmetic is scheduled and vectorized: same seed, same config, so any difference is float
round-off, the noise a run on another machine adds. ``seeds`` measures how far a score moves
when the random stream changes.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPEC = HERE / "quick.yaml"
VARIANTS = ("seeds", "threads2", "avx2", "mutated")
SEEDS = (0, 1, 2)
# Vectorized kernels of an AVX2 machine on this AVX-512 one: ATen's own kernels, oneDNN's and MKL's.
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def run_variant(variant: str, out: Path, jobs: int, seeds=SEEDS) -> int:
    from atwu_plugin.leaderboard.cells import default_run_cell
    from atwu_plugin.leaderboard.runner import run_leaderboard
    from atwu_plugin.leaderboard.spec import load_spec

    spec = load_spec(SPEC, output_dir=out / variant)
    run_cell = default_run_cell
    if variant == "seeds":
        spec = replace(spec, seeds=tuple(seeds))
    elif variant == "threads2":
        from atwu_plugin.tasks.zoo_backed import ZooBackedBenchmark

        ZooBackedBenchmark.num_threads = 2  # read by run_lite_cell (torch.set_num_threads)
        jobs = 1  # in this process, where the attribute is set
    elif variant == "avx2":
        os.environ.update(AVX2_ENV)  # read when the spawned workers import torch
        jobs = max(jobs, 2)
    elif variant == "mutated":
        sys.path.insert(0, str(HERE))
        import mutations

        spec = mutations.mutated_spec(spec, out / variant)
        run_cell = mutations.run_mutated_cell
    outcome = run_leaderboard(spec, run_cell, progress=False, jobs=jobs)
    print(outcome.summary())
    return outcome.exit_code


def _runs(path: Path) -> Dict[str, Dict[int, Dict[str, Optional[float]]]]:
    from atwu_plugin.leaderboard.results import load_results

    (bench,) = load_results(path / "results.json")
    out: Dict[str, Dict[int, Dict[str, Optional[float]]]] = {}
    for r in bench["runs"]:
        out.setdefault(r["method"], {})[r["seed"]] = r["metrics"]
    return out


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    return "0" if x == 0 else (f"{x:.2g}" if abs(x) < 0.01 else f"{x:.3f}")


def seed_std(kind: str, values: List[float]) -> float:
    """Standard deviation over seeds in the units a tolerance of ``kind`` measures: decades
    (log10), a fraction of the mean (relative), or the metric's own units (absolute)."""
    from atwu_plugin.leaderboard.regress import LOG10_FLOOR

    if kind == "log10":
        return statistics.stdev(math.log10(max(v, LOG10_FLOOR)) for v in values)
    if kind == "relative":
        mean = statistics.fmean(values)
        return statistics.stdev(values) / abs(mean) if mean else 0.0
    return statistics.stdev(values)


def derived_tolerance(stds: List[float]) -> float:
    """The rule of docs/regression.md: a quarter of the smallest seed-to-seed standard
    deviation over the methods whose value moves with the seed at all, rounded down to one
    significant digit; 0 (exact) when no method's value moves (counts such as span_n_pos)."""
    moving = [s for s in stds if s > 0]
    if not moving:
        return 0.0
    q = min(moving) / 4
    digit = 10 ** math.floor(math.log10(q))
    return math.floor(q / digit) * digit


def summarize(out: Path, ref_path: Path) -> int:
    from atwu_plugin.leaderboard.regress import distance, load_reference, tolerance_spec

    reference = load_reference(ref_path)
    seeds = _runs(out / "seeds")
    metrics = list(reference["tolerances"])
    print(f"## Measured spread (seeds {', '.join(map(str, SEEDS))}; cross-setup: seed 0), in each metric's tolerance units\n")
    print("| metric | kind | seed std: min / median / max over methods | threads 1 vs 2 (max) "
          "| AVX-512 vs AVX2 (max) | derived tol | tol in use | tol / max cross-setup |")
    print("|---|---|---|---|---|---|---|---|")
    for k in metrics:
        kind, tol = tolerance_spec(reference, k)
        stds: List[float] = []
        for m, by_seed in seeds.items():
            vals = [by_seed[s].get(k) for s in SEEDS if s in by_seed]
            if len(vals) == len(SEEDS) and all(v is not None for v in vals):
                stds.append(seed_std(kind, vals))
        cross = {}
        for variant in ("threads2", "avx2"):
            if not (out / variant / "results.json").exists():
                cross[variant] = None
                continue
            other = _runs(out / variant)
            ds = [distance(kind, other[m][0][k], seeds[m][0][k]) for m in other
                  if other[m][0].get(k) is not None and seeds[m][0].get(k) is not None]
            cross[variant] = max(ds) if ds else None
        spread = " / ".join(_fmt(x) for x in (min(stds), statistics.median(stds), max(stds))) if stds else "n/a"
        worst = max((c for c in cross.values() if c is not None), default=None)
        margin = "n/a" if worst is None or tol == 0 else ("inf" if worst == 0 else f"{tol / worst:.0e}")
        print(f"| {k} | {kind} | {spread} | {_fmt(cross['threads2'])} | {_fmt(cross['avx2'])} "
              f"| {_fmt(derived_tolerance(stds)) if stds else 'n/a'} | {_fmt(tol)} | {margin} |")
    if (out / "mutated" / "results.json").exists():
        summarize_mutations(out, reference)
    return 0


def summarize_mutations(out: Path, reference) -> None:
    """Per mutation: what atwu-regress flags when only that method is mutated (seed 0)."""
    import json

    from atwu_plugin.leaderboard.regress import compare, format_table

    sys.path.insert(0, str(HERE))
    import mutations

    unchanged = json.loads((out / "seeds" / "results.json").read_text())
    unchanged = {**unchanged, "runs": [r for r in unchanged["runs"] if r["seed"] == 0]}
    mutated = json.loads((out / "mutated" / "results.json").read_text())
    print("\n## Mutations (seed 0): the scores atwu-regress flags, by how many tolerances\n")
    print("| mutation | method | exit | flagged (x tol) |")
    print("|---|---|---|---|")
    tables = []
    for mut in mutations.MUTATIONS:
        report = compare(reference, mutations.with_mutated_run(unchanged, mutated, mut.method))
        flagged = sorted(report.drifted, key=lambda c: -(c.tolerances_away or math.inf))
        text = ", ".join(f"{c.metric} {c.tolerances_away:.3g}" if c.tolerances_away is not None
                         else f"{c.metric} ({c.problem or 'null'})" for c in flagged)
        print(f"| {mut.what} | {mut.method} | {report.exit_code} | {text or 'none'} |")
        tables.append(f"{mut.name}:\n{format_table(flagged)}" if flagged else f"{mut.name}: nothing flagged")
    print("\n" + "\n\n".join(tables))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("run", "summarize"))
    p.add_argument("variant", nargs="?", choices=VARIANTS)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "regression" / "spread")
    p.add_argument("--reference", type=Path, default=HERE / "quick_reference.json")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds of the 'seeds' variant")
    args = p.parse_args(argv)
    if args.what == "run":
        if not args.variant:
            p.error("run needs a variant: " + ", ".join(VARIANTS))
        return run_variant(args.variant, args.out, args.jobs, args.seeds)
    return summarize(args.out, args.reference)


if __name__ == "__main__":
    sys.exit(main())
