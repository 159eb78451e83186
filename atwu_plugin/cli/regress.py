"""``atwu-regress``: fail CI when a reported score drifts from the reference.

    atwu-regress --reference scores/REF.json --results outputs/lb/results.json [--tol 0.05]
    atwu-regress --reference scores/REF.json --results outputs/lb/results.json --update

Exit codes: 0 every score within tolerance (or reference updated); 1 drift (the table on
stdout names benchmark, method and metric); 2 unreadable/malformed files or results missing a
benchmark/method/metric of the reference (one line on stderr naming the file and problem).
See ``atwu_plugin.leaderboard.regress`` for the reference format and the tolerance rules.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import List, Optional

from atwu_plugin.leaderboard.regress import (DEFAULT_TOL, RegressionError, compare, format_table,
                                             load_reference, update_reference)

PROG = "atwu-regress"


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
        description="Compare leaderboard results (mean over seeds) with reference scores.",
        epilog="exit codes: 0 ok, 1 drift beyond tolerance, 2 malformed or mismatched files",
    )
    p.add_argument("--reference", required=True, metavar="REF.json",
                   help='reference scores: {"tolerances": {...}, "benchmarks": {bench: {method: {metric: value}}}}')
    p.add_argument("--results", required=True, metavar="RES.json", help="results.json of a leaderboard run")
    p.add_argument("--tol", type=_tol, default=None,
                   help="absolute tolerance for metrics without their own entry in the reference's "
                        f"'tolerances' (default: the reference's 'default', else {DEFAULT_TOL})")
    p.add_argument("--update", action="store_true",
                   help="rewrite REF.json from RES.json (atomically), keeping its tolerances")
    p.add_argument("--show-all", action="store_true", help="list every compared score, not only drifts")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)

    def fail(msg: str) -> int:
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2

    try:
        if args.update:
            new, changed, dropped = update_reference(args.reference, args.results, args.tol)
            n = sum(len(ms) for methods in new["benchmarks"].values() for ms in methods.values())
            print(f"{PROG}: updated {args.reference}: {n} scores ({changed} new or changed); "
                  f"tolerances kept: {new['tolerances']}")
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
    if report.unchecked:
        print(f"not in the reference (not checked): {', '.join(report.unchecked)}")
    if drifted:
        if not args.show_all:
            print(format_table(drifted))
            print()
        names = ", ".join(f"{c.benchmark}/{c.method}/{c.metric}" for c in drifted)
        print(f"DRIFT: {len(drifted)} of {n} scores outside tolerance: {names}")
        print(f"(if the change is intended: {PROG} --reference {args.reference} --results {args.results} --update)")
        return 1
    print(f"OK: {n} scores within tolerance of {args.reference}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
