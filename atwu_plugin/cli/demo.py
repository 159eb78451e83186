"""``atwu-demo``: build the embedded benchmark's models (cached) and run every method on it.

The table printed at the end is the leaderboard runner's own ``leaderboard.md``.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

DEMO_SPEC = Path(__file__).resolve().parents[1] / "configs" / "leaderboards" / "demo.yaml"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="atwu-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--spec", default=str(DEMO_SPEC), help="leaderboard spec to run (default: the demo's)")
    parser.add_argument("--cache-dir", default=None, help="model cache (default: $ATWU_CACHE_DIR or ~/.cache/atwu-plugin)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from atwu_plugin.benchmarks.embedded import EmbeddedBenchmark
    from atwu_plugin.leaderboard.cells import default_run_cell
    from atwu_plugin.leaderboard.runner import run_leaderboard
    from atwu_plugin.leaderboard.spec import load_spec

    t0 = time.time()
    print("[demo] building (or reusing) the embedded benchmark and its tiny models ...", flush=True)
    bench = EmbeddedBenchmark(cache_dir=args.cache_dir).prepare()
    m = bench.zoo.manifest
    print(f"[demo] models ready in {time.time() - t0:.1f}s ({m['n_parameters'] / 1e6:.2f}M parameters each; "
          f"cold build took {m['build_s']}s): {bench.zoo.root}", flush=True)

    spec = load_spec(args.spec, output_dir=args.output_dir)
    if args.cache_dir:
        from dataclasses import replace

        spec = replace(spec, benchmarks=tuple(replace(b, options={**b.options, "cache_dir": args.cache_dir}) for b in spec.benchmarks))
    t1 = time.time()
    outcome = run_leaderboard(spec, default_run_cell, progress=sys.stderr.isatty())
    print(f"[demo] unlearning runs: {time.time() - t1:.1f}s; total {time.time() - t0:.1f}s", flush=True)
    table = Path(spec.output_dir) / "leaderboard.md"
    if table.exists():
        print(table.read_text())
    print(outcome.summary())
    print(f"[demo] outputs in {spec.output_dir}/ (results.json, leaderboard.md/.csv, tradeoff.png, heatmap_*.html)")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
