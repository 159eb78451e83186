"""``atwu-regress``: fail CI when a reported score drifts from the reference.

    atwu-regress --reference scores/REF.json --results outputs/lb/results.json
    atwu-regress --reference scores/REF.json --results outputs/lb/results.json --update [--force]

Exit codes: 0 every score within tolerance (or reference updated); 1 drift or a failed seed
(the table on stdout names benchmark, method, metric and seed); 2 unreadable/malformed files,
results missing a benchmark/method/metric of the reference, or ``--update`` refused (one
line on stderr naming the file and problem). See ``atwu_plugin.leaderboard.regress`` and
docs/regression.md for the reference format and the tolerance kinds.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import List, Optional

from atwu_plugin.cli.pipes import quiet_on_closed_pipe
from atwu_plugin.leaderboard.regress import (RegressionError, compare, format_table, load_reference,
                                             update_reference)

PROG = "atwu-regress"

EPILOG = """\
tolerance kinds (per metric, stored in the reference; distance of result x from reference r):
  absolute  |x - r|                 bounded scores: ROUGE, AUROC, model_utility
  relative  |x - r| / |r|           probabilities (forget_prob, holdout_prob, ...) and KL,
                                    whose scale differs by orders of magnitude between methods
  log10     |log10 x - log10 r|     p-values: forget_quality (decades)
  none      not checked             wall-clock timings (train_s, *_s); never stored
A score passes when distance <= tol; the table shows how many tolerances away each one is.
Defaults come from the measured seed spread and float round-off (docs/regression.md).
NaN, null, a missing value or a missing run in any seed of the reference fails, naming the seed.

exit codes: 0 ok, 1 drift or failed seed, 2 malformed or mismatched files or --update refused"""


def _tol(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Compare leaderboard results (mean over the reference's seeds, every seed checked "
                    "for NaN/missing values) with reference scores.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reference", required=True, metavar="REF.json",
                   help='reference: {"provenance", "tolerances": {metric: {kind, tol}}, '
                        '"benchmarks": {bench: {method: {seeds, metrics}}}}')
    p.add_argument("--results", required=True, metavar="RES.json", help="results.json of a leaderboard run")
    p.add_argument("--tol", type=_tol, default=None,
                   help="tolerance (in the metric's default kind) for metrics without their own entry in "
                        "the reference's 'tolerances'; with --update, for the metrics it adds")
    p.add_argument("--update", action="store_true",
                   help="rewrite REF.json from RES.json (atomically), keeping its tolerances and recording "
                        "provenance (spec hash, package, torch and transformers versions); timings are never "
                        "stored. Refused when RES.json has fewer seeds than REF.json, failed cells or "
                        "NaN/missing values")
    p.add_argument("--force", action="store_true", help="with --update: write even when it would be refused")
    p.add_argument("--show-all", action="store_true", help="list every compared score, not only failures")
    return p


@quiet_on_closed_pipe
def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)

    def fail(msg: str) -> int:
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2

    if args.force and not args.update:
        return fail("--force only applies to --update")
    try:
        if args.update:
            new, changed, dropped = update_reference(args.reference, args.results, args.tol, force=args.force)
            n = sum(len(e["metrics"]) for methods in new["benchmarks"].values() for e in methods.values())
            tols = ", ".join(f"{k} {v['kind']} {v['tol']:g}" for k, v in new["tolerances"].items())
            print(f"{PROG}: updated {args.reference}: {n} scores ({changed} new or changed); tolerances: {tols}")
            if dropped:
                print(f"{PROG}: dropped (absent from results): {', '.join(dropped)}")
            return 0
        reference = load_reference(args.reference)
        report = compare(reference, args.results, args.tol)
    except RegressionError as e:
        return fail(str(e))

    drifted = report.drifted
    n = len(report.comparisons)
    if args.show_all and report.comparisons:
        print(format_table(report.comparisons))
        print()
    for note in report.notes:
        print(f"note: {note}")
    if report.unchecked:
        print(f"not in the reference (not checked): {', '.join(report.unchecked)}")
    if drifted:
        if not args.show_all:
            print(format_table(drifted))
            print()
        names = ", ".join(c.name + (f" ({c.problem})" if c.problem else "") for c in drifted)
        print(f"DRIFT: {len(drifted)} of {n} scores outside tolerance or failed: {names}")
        print(f"(if the change is intended: {PROG} --reference {args.reference} --results {args.results} --update)")
        return 1
    print(f"OK: {n} scores within tolerance of {args.reference}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
