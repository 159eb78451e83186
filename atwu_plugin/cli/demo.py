"""``atwu-demo``: the project's finding in one command, in minutes on a 2-core CPU.

Builds (once; cached by content hash) the embedded benchmark's demo models, unlearns them with
uniform NPO and GradDiff, the strongest label-free heuristics, ATWU and the oracle (``--full``:
all 13 methods), several cells at once (``--jobs``), and compares the methods at matched
forgetting. Prints the comparison as a table, a paragraph generated from ``results.json``
(``atwu_plugin.leaderboard.headline``), where the plots are, and how long each phase took.

Exit codes: 0 every cell finished; 1 some cells failed (rerun to retry only those);
2 bad arguments, spec or benchmark options (before any model is built); 130 interrupted.
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

PROG = "atwu-demo"
SPEC_DIR = Path(__file__).resolve().parents[1] / "configs" / "leaderboards"
DEMO_SPEC = SPEC_DIR / "demo.yaml"
FULL_SPEC = SPEC_DIR / "demo_full.yaml"
# seconds `make demo` spent on `make setup` before starting this command (the Makefile sets it)
SETUP_ENV = "ATWU_DEMO_SETUP_S"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--full", action="store_true", help=f"all 13 methods ({FULL_SPEC.name}) instead of the headline set")
    p.add_argument("--spec", default=None, help=f"leaderboard spec to run instead (default: {DEMO_SPEC.name})")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="cells at once, one single-threaded process each (default: the number of CPU cores, "
                        "at most 4); the numbers do not depend on N")
    p.add_argument("--cache-dir", default=None, help="model cache (default: $ATWU_CACHE_DIR or ~/.cache/atwu-plugin)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads of this process (default: torch's; cells always use one)")
    p.add_argument("--verbose", action="store_true",
                   help="show the library log lines the demo hides (atwu_plugin.utils.quiet)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _error(msg: str) -> int:
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the build's and the cells' workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _message(e: Exception) -> str:
    """An exception's text (a KeyError's str() is the repr of its argument)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def prepare_benchmarks(spec, cache_dir: Optional[str]):
    """``(spec, [benchmark objects])`` for a lite-host spec, ``cache_dir`` added to every
    benchmark's options; raises ValueError (unknown benchmark, bad option, unknown trainer or
    bad trainer override) before any model is built."""
    from dataclasses import replace

    from atwu_plugin.hosts.checks import make_benchmark
    from atwu_plugin.hosts.lite import load_trainer_config

    if spec.host != "lite":
        raise ValueError(f"{spec.source}: host: {spec.host!r}; atwu-demo runs the lite host "
                         "(use atwu-leaderboard for other hosts)")
    if cache_dir:
        spec = replace(spec, benchmarks=tuple(replace(b, options={**b.options, "cache_dir": cache_dir})
                                              for b in spec.benchmarks))
    benches = []
    for b in spec.benchmarks:
        options = dict(b.options)
        try:
            bench = make_benchmark(options.pop("benchmark", b.name), options)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{spec.source}: benchmarks: {_message(e)}") from None
        for m in spec.methods:
            try:
                load_trainer_config(m.trainer, m.overrides, base_args=bench.trainer_args)
            except (KeyError, ValueError, FileNotFoundError) as e:
                raise ValueError(f"{spec.source}: method {m.name}: {_message(e)}") from None
        benches.append(bench)
    return spec, benches


def run_demo_cell(cell) -> dict:
    """The leaderboard's cell runner (module level: picklable for ``--jobs``). Worker processes
    are quiet through ``atwu_plugin.utils.quiet``'s environment variable, set by :func:`main`.
    Adds ``cpu_s``, the cell's CPU seconds, to its cell file (not to results.json): the wall
    time of an idle machine, since a cell is single-threaded, whatever else shares the cores."""
    from atwu_plugin.leaderboard.cells import default_run_cell

    cpu0 = time.process_time()
    result = dict(default_run_cell(cell))
    result["cpu_s"] = round(time.process_time() - cpu0, 2)
    return result


def format_phases(phases: Dict[str, Dict[str, float]]) -> str:
    lines = ["phase          wall s    CPU s"]
    for name, p in phases.items():
        cpu = f"{p['cpu_s']:8.1f}" if p.get("cpu_s") is not None else "       —"
        lines.append(f"{name:<12} {p['wall_s']:8.1f} {cpu}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    t_start, cpu_start = time.time(), _cpu_s()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        return _error(f"--threads {args.threads}: expected a positive integer (torch CPU threads)")
    if args.jobs is not None and args.jobs < 1:
        return _error(f"--jobs {args.jobs}: expected a positive integer (cells at once)")
    if args.full and args.spec:
        return _error("--full and --spec: give one (--full runs the full demo spec)")
    jobs = args.jobs or default_jobs()

    from atwu_plugin.utils.quiet import quiet_children

    quiet_children(not args.verbose)

    # the spec first (read, validated, its benchmarks and trainers checked): a bad spec fails
    # in a second, not after minutes of model building
    from atwu_plugin.leaderboard.spec import SpecError, load_spec

    spec_path = args.spec or (FULL_SPEC if args.full else DEMO_SPEC)
    try:
        spec = load_spec(spec_path, output_dir=args.output_dir)
        spec, benches = prepare_benchmarks(spec, args.cache_dir)
    except SpecError as e:
        for line in e.errors:
            _error(line)
        return 2
    except ValueError as e:
        return _error(e)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from atwu_plugin.leaderboard.headline import headline_level, headline_rows, headline_summary, render_headline_table
    from atwu_plugin.leaderboard.runner import run_leaderboard
    from atwu_plugin.utils.atomic import atomic_write_json, atomic_write_text

    phases: Dict[str, Dict[str, float]] = {}
    setup_s = os.environ.get(SETUP_ENV)
    if setup_s:
        try:
            phases["setup"] = {"wall_s": float(setup_s), "cpu_s": None}
        except ValueError:
            pass
    clock = {"wall": t_start, "cpu": cpu_start}

    def phase(name: str) -> None:
        now, cpu = time.time(), _cpu_s()
        phases[name] = {"wall_s": round(now - clock["wall"], 1), "cpu_s": round(cpu - clock["cpu"], 1)}
        clock.update(wall=now, cpu=cpu)

    phase("start")  # Python + library imports, spec checks
    n_cells = len(spec.benchmarks) * len(spec.methods) * len(spec.seeds)
    print(f"[demo] {spec.name}: {len(spec.methods)} methods x {len(spec.seeds)} seed(s) on "
          f"{', '.join(b.name for b in spec.benchmarks)} = {n_cells} cells, {jobs} at a time -> {spec.output_dir}",
          flush=True)
    try:
        print("[demo] building (or reusing) the benchmark's tiny models ...", flush=True)
        for bench in benches:
            bench.prepare(log=lambda msg: print(msg, flush=True))
            m = getattr(bench, "zoo", None) and bench.zoo.manifest
            if m:
                print(f"[demo] models ready: {m['n_parameters'] / 1e6:.2f}M parameters each (cold build "
                      f"{m['build_s']} s) in {bench.zoo.root}", flush=True)
        phase("models")
        print(f"[demo] unlearning: {n_cells} runs, {jobs} at a time ...", flush=True)
        progress = not args.no_progress  # live bars on a terminal, one line per cell otherwise
        outcome = run_leaderboard(spec, run_demo_cell, progress=progress, jobs=jobs, reports=False)
        phase("methods")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished cells are kept under {spec.output_dir / 'cells'}: "
              "rerun the same command to resume", file=sys.stderr)
        return 130

    report = run_leaderboard(spec, None, progress=False, only_report=True)  # results.json + plots
    outcome.reports, outcome.report_error = report.reports, report.report_error
    out_dir = Path(spec.output_dir)
    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    benches_json = results.get("benchmarks", [results])
    sections = []
    for b in benches_json:
        level = headline_level(b)
        text = ""
        if level is not None:
            text = render_headline_table(headline_rows(b, level), level, b["matched"]["x"]) + "\n\n"
        text += headline_summary(b, level)
        sections.append((f"## {b['benchmark']}\n\n" if len(benches_json) > 1 else "") + text)
    summary = "\n\n".join(sections)
    phase("report")
    phases["total"] = {"wall_s": round(sum(p["wall_s"] for p in phases.values()), 1),
                       "cpu_s": round(_cpu_s() - cpu_start, 1)}
    atomic_write_json(out_dir / "phases.json", {"jobs": jobs, "cpu_count": os.cpu_count(), "phases": phases})
    atomic_write_text(out_dir / "summary.md", f"# {spec.name}: at matched forgetting\n\n{summary}\n")

    table = out_dir / "leaderboard.md"
    print()
    print(outcome.summary())
    plots = [f"{name} ({'the headline, curves along training' if 'matched' in name else 'final budget'})"
             for name in outcome.reports if name.endswith(".png")]
    print(f"[demo] outputs in {out_dir}/: summary.md, results.json, {table.name} (every metric at the final "
          f"budget), plots: {', '.join(sorted(plots, key=lambda s: 'matched' not in s)) or 'none'}, heatmap_*.html")
    print()
    print(summary)
    print()
    print("[demo] time per phase (wall clock, and CPU seconds of this process and its workers):")
    print(format_phases(phases))
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
