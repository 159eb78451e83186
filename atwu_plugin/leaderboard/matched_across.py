"""Matched forgetting across benchmarks: one row per method over several targets.

Targets differ in how much of a metric there is to keep (a neighbour answer probability of 0.14
for one target, 0.21 for another), so each run's value at the matched level is divided by the
same run's step-0 value: "the fraction kept". A method's value on a benchmark is the mean over
the seeds that reached the level; the summary over benchmarks is the mean with the smallest and
largest benchmark value, over the benchmarks where at least one seed reached it (the count is
shown: a method that reaches the level on fewer targets is not comparable on the mean alone).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from atwu_plugin.leaderboard.matched import direction, run_values_at
from atwu_plugin.leaderboard.results import is_finite_number

__all__ = ["fraction_kept", "render_fraction_kept_markdown"]

Cell = Optional[float]


def _step0(run: Mapping[str, Any], metric: str) -> Optional[float]:
    traj = run.get("trajectory") or []
    v = traj[0].get(metric) if traj else None
    return v if is_finite_number(v) and v != 0 else None


def _last(run: Mapping[str, Any], metric: str) -> Optional[float]:
    vals = [p[metric] for p in run.get("trajectory") or [] if is_finite_number(p.get(metric))]
    return vals[-1] if len(vals) >= 2 else None


def fraction_kept(benches: Sequence[Mapping[str, Any]], metric: str,
                  level: Optional[float]) -> Tuple[List[str], Dict[str, Dict[str, Cell]]]:
    """``(methods, {method: {benchmark: mean fraction kept or None}})``: ``metric`` at the point
    where each run's matched ``x`` first reaches ``level`` times its start (``level=None``: at the
    run's last logged point, i.e. the end of its budget), over its step-0 value."""
    methods: List[str] = []
    out: Dict[str, Dict[str, Cell]] = {}
    for bench in benches:
        x = (bench.get("matched") or {}).get("x")
        if not x:
            raise ValueError(f"benchmark {bench.get('benchmark')!r} has no 'matched' section; "
                             "fraction kept needs the trajectories of a spec with matched:")
        by_method: Dict[str, List[float]] = {}
        for run in bench.get("runs", []):
            m = run["method"]
            if m not in out:
                methods.append(m)
                out[m] = {}
            by_method.setdefault(m, [])
            v = _last(run, metric) if level is None else run_values_at(run, x, level, [metric])[metric]
            v0 = _step0(run, metric)
            if v is not None and v0 is not None:
                by_method[m].append(v / v0)
        for m, vals in by_method.items():
            out[m][bench["benchmark"]] = sum(vals) / len(vals) if vals else None
    return methods, out


def _summary(values: Sequence[Cell]) -> Tuple[Optional[float], Optional[float], Optional[float], int]:
    got = [v for v in values if v is not None]
    if not got:
        return None, None, None, 0
    return sum(got) / len(got), min(got), max(got), len(got)


def render_fraction_kept_markdown(benches: Sequence[Mapping[str, Any]], metric: str,
                                  levels: Sequence[Optional[float]]) -> str:
    """One table per level: methods x benchmarks (fraction of ``metric`` kept), then the mean
    over benchmarks with its range; at a matched level, the best mean among methods that reached every
    benchmark in bold (``None`` in ``levels``: the end of each run, never bold)."""
    names = [b["benchmark"] for b in benches]
    x = (benches[0].get("matched") or {}).get("x", "x") if benches else "x"
    better = direction(metric) or "higher"
    lines: List[str] = []
    for level in levels:
        if level is not None and metric == x:  # the matched measure itself is level x start by construction
            continue
        methods, table = fraction_kept(benches, metric, level)
        rows = [(m, [table[m].get(n) for n in names]) for m in methods]
        sums = {m: _summary(vals) for m, vals in rows}
        full = [s[0] for m, s in sums.items() if s[3] == len(names) and s[0] is not None]
        # at the end of the run methods have forgotten different amounts: no "best" there
        best = (max(full) if better == "higher" else min(full)) if full and level is not None else None
        where = "at the end of the run" if level is None else f"where `{x}` first reaches {level:g} × its start"
        lines += [f"**`{metric}` kept (fraction of its step-0 value) {where}**",
                  "", "| Method | " + " | ".join(names) + " | Mean [min, max] | Targets reached |",
                  "|:---|" + "---:|" * (len(names) + 2)]
        for m, vals in rows:
            mean, lo, hi, n = sums[m]
            cells = ["not reached" if v is None else f"{v:.3f}" for v in vals]
            summary = "—" if mean is None else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"
            if best is not None and mean == best and n == len(names):
                summary = f"**{summary}**"
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {summary} | {n}/{len(names)} |")
        lines.append("")
    return "\n".join(lines)
