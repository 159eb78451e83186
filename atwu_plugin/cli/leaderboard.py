"""``atwu-leaderboard``: run a leaderboard spec (methods x seeds x benchmarks), resumably.

    atwu-leaderboard SPEC.yaml                      # run missing cells, write results + reports
    atwu-leaderboard SPEC.yaml --output-dir D       # write somewhere else than spec.output_dir
    atwu-leaderboard SPEC.yaml --only-report        # rebuild results/reports from finished cells
    atwu-leaderboard SPEC.yaml --fail-fast          # stop at the first failing cell
    atwu-leaderboard SPEC.yaml --jobs 2             # two cells at a time, one thread each

Exit codes: 0 all cells finished; 1 some cells failed or are missing (summary on stderr,
tracebacks in <output_dir>/failures.json; rerun to retry only those); 2 invalid spec or no
cell runner, or the output directory is a file or in use by another run (the
message names its PID); 130 interrupted (finished cells are kept: rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from atwu_plugin.cli.pipes import quiet_on_closed_pipe

PROG = "atwu-leaderboard"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Run a token-weighted unlearning leaderboard.")
    p.add_argument("spec", metavar="SPEC.yaml", help="leaderboard spec (see atwu_plugin.leaderboard.spec)")
    p.add_argument("--output-dir", default=None, help="override the spec's output_dir")
    p.add_argument("--only-report", action="store_true",
                   help="run nothing: aggregate finished cells into results.json and the reports")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failing cell")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--plugins", default=None, metavar="MODULES",
                   help="comma-separated plugin modules or .py files with trainers/weighters/losses "
                        "(sets $ATWU_PLUGIN_MODULES; see atwu_plugin.plugins)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N cells at once in worker processes, one thread each (default 1); "
                        "tiny-model cells are single-threaded either way, so results do not depend on N")
    return p


def load_default_run_cell():
    """``atwu_plugin.leaderboard.cells.default_run_cell``, imported lazily (it pulls in torch
    and the hosts). Raises RuntimeError with a clear message when it is unavailable."""
    import importlib

    try:
        cells = importlib.import_module("atwu_plugin.leaderboard.cells")
    except ModuleNotFoundError as e:
        if e.name in ("atwu_plugin.leaderboard.cells",):
            raise RuntimeError(
                "no cell runner: atwu_plugin.leaderboard.cells is not implemented in this version, so "
                "cells cannot be run from the command line. Use --only-report to rebuild reports from "
                "finished cells, or call atwu_plugin.leaderboard.runner.run_leaderboard(spec, run_cell) "
                "from Python with your own run_cell") from None
        raise RuntimeError(f"cannot import the cell runner atwu_plugin.leaderboard.cells: "
                           f"missing module {e.name!r} ({e})") from None
    except ImportError as e:
        raise RuntimeError(f"cannot import the cell runner atwu_plugin.leaderboard.cells: {e}") from None
    fn = getattr(cells, "default_run_cell", None)
    if not callable(fn):
        raise RuntimeError("atwu_plugin.leaderboard.cells has no callable default_run_cell(cell) -> dict")
    return fn


@quiet_on_closed_pipe
def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)

    from atwu_plugin.leaderboard.runner import run_leaderboard
    from atwu_plugin.leaderboard.spec import SpecError, check_lite_cells, load_spec, spec_summary
    from atwu_plugin.utils.run_lock import OutputDirLocked, check_output_dir

    if args.jobs < 1:
        print(f"{PROG}: error: --jobs {args.jobs}: expected a positive integer", file=sys.stderr)
        return 2
    if args.plugins:
        import os

        from atwu_plugin.plugins import ENV_MODULES

        os.environ[ENV_MODULES] = args.plugins  # read by the hosts, inherited by --jobs workers
    try:
        spec = load_spec(args.spec, output_dir=args.output_dir)
        check_output_dir(spec.output_dir, "leaderboard output_dir")
    except SpecError as e:
        for line in e.errors:
            print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    except NotADirectoryError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    run_cell = None
    if not args.only_report:
        try:
            run_cell = load_default_run_cell()
        except RuntimeError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
        try:  # every benchmark, option, trainer and override of the grid, before any model is built
            check_lite_cells(spec)
        except SpecError as e:
            for line in e.errors:
                print(f"{PROG}: error: {line}", file=sys.stderr)
            return 2

    print(spec_summary(spec), file=sys.stderr)
    try:
        outcome = run_leaderboard(spec, run_cell, progress=not args.no_progress, fail_fast=args.fail_fast,
                                  only_report=args.only_report, jobs=args.jobs)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished cells are saved under {spec.output_dir / 'cells'}: "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    except (OutputDirLocked, NotADirectoryError) as e:  # nothing ran
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # e.g. an output_dir the user cannot write
        print(f"{PROG}: error: {e.filename or spec.output_dir}: permission denied; choose a writable "
              "--output-dir", file=sys.stderr)
        return 2
    print(outcome.summary(), file=sys.stderr)
    if args.only_report and outcome.not_run:
        print(f"{PROG}: {len(outcome.not_run)} cell(s) have no result yet (run without --only-report)",
              file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
