"""ATWU against the strongest label-free baseline: a paired difference with a 95 % interval.

For a metric read at matched forgetting (``level``: where the run's ``matched.x`` first reaches
``level`` times its start) or at the end of the run (``level=None``), the baseline is the
label-free method (uniform or heuristic, see ``headline.method_roles``; never the oracle or an
ATWU row) with the best mean over the seeds both methods share.

The difference is paired by seed (same seed = same data order) and, when the runs' trajectory
points carry per-sample rows (``samples``, written by the TOFU evaluator), by sample: a
hierarchical bootstrap resamples the seeds, then the samples of the metric's split (one draw
shared by both methods: the same questions), recomputes the pooled metric from the rows at the
two trajectory points around each run's crossing of the level, interpolates with the crossing's
weight (where the run reached the level is held at its full-data value: the interval is for
the metric at matched forgetting, not for where the crossing lies) and takes the mean difference
over the drawn seeds; the interval is its 2.5 and 97.5 percentiles. An end-of-run metric that no
report can rebuild from rows (span AUROC) is bootstrapped the same way from the values each run
computed under the benchmark's fixed resamplings of its samples (``run["bootstrap"]``, see
``evals.sample_bootstrap``): replicate ``r`` of both methods saw the same samples. Without either
(older cells, evaluators that log none) it is a t-interval over the paired seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from atwu_plugin.evals.trajectory import crossing
from atwu_plugin.leaderboard.headline import LABEL_FREE_ROLES, method_roles
from atwu_plugin.leaderboard.matched import direction, run_values_at
from atwu_plugin.leaderboard.results import is_finite_number

__all__ = ["Paired", "paired_difference", "strongest_baseline", "render_paired_markdown", "render_versus_markdown"]


@dataclass
class Paired:
    a: str
    b: str
    metric: str
    level: Optional[float]
    n_seeds: int
    diff: float  # mean over paired seeds of a - b
    lo: Optional[float]
    hi: Optional[float]
    how: str  # "bootstrap over seeds and samples" | "bootstrap over samples (one seed)" | "t over seeds" | ...
    replicates: int = 0

    @property
    def significant(self) -> Optional[bool]:
        return None if self.lo is None else (self.lo > 0 or self.hi < 0)


def _runs_by_seed(bench: Mapping[str, Any], method: str) -> Dict[int, Mapping[str, Any]]:
    return {r["seed"]: r for r in bench.get("runs", []) if r["method"] == method}


def _value(run: Mapping[str, Any], metric: str, level: Optional[float], x: Optional[str]) -> Optional[float]:
    if level is None:
        v = (run.get("metrics") or {}).get(metric)
        return float(v) if is_finite_number(v) else None
    return run_values_at(run, x, level, [metric])[metric]


def _direction(metric: str, directions: Optional[Mapping[str, str]]) -> str:
    d = (directions or {}).get(metric) or direction(metric)
    if d not in ("higher", "lower"):
        raise ValueError(f"metric {metric!r}: unknown direction; give it in the spec's metrics "
                         "({name: ..., direction: higher|lower})")
    return d


def strongest_baseline(bench: Mapping[str, Any], metric: str, level: Optional[float] = None,
                       exclude: Sequence[str] = (), directions: Optional[Mapping[str, str]] = None
                       ) -> Optional[Tuple[str, float]]:
    """``(method, mean)`` of the best label-free non-ATWU method on ``metric`` (at ``level``),
    among methods whose every seed has a value; None if there is none. ``directions``: metric ->
    "higher"/"lower" for metrics the package does not know (the spec's ``metrics``)."""
    x = (bench.get("matched") or {}).get("x")
    higher = _direction(metric, directions) == "higher"
    best = None
    for method, role in method_roles(bench).items():
        if role not in LABEL_FREE_ROLES or method in exclude:
            continue
        vals = [_value(r, metric, level, x) for r in _runs_by_seed(bench, method).values()]
        if not vals or any(v is None for v in vals):
            continue
        mean = sum(vals) / len(vals)
        if best is None or (mean > best[1] if higher else mean < best[1]):
            best = (method, mean)
    return best


def _t_interval(diffs: List[float]) -> Tuple[Optional[float], Optional[float]]:
    if len(diffs) < 2:
        return None, None
    from scipy.stats import t

    mean = float(np.mean(diffs))
    half = float(t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / math.sqrt(len(diffs)))
    return mean - half, mean + half


def _crossing(run: Mapping[str, Any], x: str, level: float) -> Optional[Tuple[int, int, float]]:
    """Where ``run``'s trajectory first reaches ``level`` times its step-0 ``x`` (as
    :func:`atwu_plugin.evals.trajectory.value_at` reads it): the two trajectory indices around it
    and the interpolation weight of the second; None if it never gets there."""
    pts = [(i, p[x]) for i, p in enumerate(run.get("trajectory") or []) if is_finite_number(p.get(x))]
    if len(pts) < 2 or not pts[0][1]:
        return None
    at = crossing([v for _, v in pts], level * pts[0][1])
    return None if at is None else (pts[at[0]][0], pts[at[1]][0], at[2])


def _sample_rows(run: Mapping[str, Any], metric: str, crossing: Tuple[int, int, float]):
    """``(sums [2, N], counts [2, N], weight)`` of ``metric`` at the crossing's two points, or
    None when either point lacks per-sample rows."""
    i0, i1, a = crossing
    traj = run["trajectory"]
    rows = [(traj[i].get("samples") or {}).get(metric) for i in (i0, i1)]
    if any(r is None for r in rows) or len(rows[0]["sum"]) != len(rows[1]["sum"]):
        return None
    return (np.array([r["sum"] for r in rows], dtype=float), np.array([r["n"] for r in rows], dtype=float), a)


def _resampled_value(rows, w: np.ndarray) -> Optional[float]:
    sums, counts, a = rows
    num, den = sums @ w, counts @ w
    if not (den > 0).all():
        return None
    v = num / den
    return float(v[0] + a * (v[1] - v[0]))


def _replicates(run: Mapping[str, Any], metric: str) -> Optional[Tuple[int, int, List[Optional[float]]]]:
    """``(n_samples, seed, values)`` of the run's fixed-resampling replicates of ``metric``."""
    found = (run.get("bootstrap") or {}).get(metric)
    if not isinstance(found, Mapping) or not isinstance(found.get("values"), list):
        return None
    return int(found["n_samples"]), int(found["seed"]), found["values"]


def _interval(stats: List[float], replicates: int, bench: Mapping[str, Any], metric: str) -> Tuple[float, float]:
    if len(stats) < 0.9 * replicates:
        raise ValueError(f"{bench.get('benchmark')}: {metric}: {replicates - len(stats)} of {replicates} resamples "
                         "had no token of the metric's kind; too few tokens for a bootstrap over samples")
    lo, hi = (float(v) for v in np.percentile(stats, [2.5, 97.5]))
    return lo, hi


def _bootstrap_how(seeds: Sequence[int]) -> str:
    return "bootstrap over seeds and samples" if len(seeds) > 1 else "bootstrap over samples (one seed)"


def _replicate_difference(bench, a, b, metric, seeds, ra, rb, diff, seed) -> Optional[Paired]:
    """The paired bootstrap from the runs' stored replicates; None when a run has none."""
    reps = {(m, s): _replicates(runs[s], metric) for m, runs in (("a", ra), ("b", rb)) for s in seeds}
    if any(v is None for v in reps.values()):
        return None
    if len({(n, sd, len(v)) for n, sd, v in reps.values()}) != 1:
        raise ValueError(f"{bench.get('benchmark')}: {metric}: runs stored replicates of different resamplings "
                         f"(n_samples, seed, count): {sorted({(n, sd, len(v)) for n, sd, v in reps.values()})}")
    count = len(next(iter(reps.values()))[2])
    rng = np.random.default_rng(seed)
    stats = []
    for r in range(count):
        drawn = rng.choice(seeds, size=len(seeds), replace=True)
        ds = [(reps[("a", s)][2][r], reps[("b", s)][2][r]) for s in drawn]
        if all(va is not None and vb is not None for va, vb in ds):
            stats.append(float(np.mean([va - vb for va, vb in ds])))
    lo, hi = _interval(stats, count, bench, metric)
    return Paired(a, b, metric, None, len(seeds), diff, lo, hi, _bootstrap_how(seeds), count)


def paired_difference(bench: Mapping[str, Any], a: str, b: str, metric: str, level: Optional[float] = None,
                      replicates: int = 2000, seed: int = 0) -> Optional[Paired]:
    """``a - b`` on ``metric`` (at matched ``level``, or at the end of the run), paired by seed;
    None when no seed has a value for both."""
    x = (bench.get("matched") or {}).get("x")
    ra, rb = _runs_by_seed(bench, a), _runs_by_seed(bench, b)
    values = {s: (_value(ra[s], metric, level, x), _value(rb[s], metric, level, x)) for s in set(ra) & set(rb)}
    seeds = sorted(s for s, (va, vb) in values.items() if va is not None and vb is not None)
    if not seeds:
        return None
    diffs = [values[s][0] - values[s][1] for s in seeds]
    diff = float(np.mean(diffs))
    if level is None:
        found = _replicate_difference(bench, a, b, metric, seeds, ra, rb, diff, seed)
        if found is not None:
            return found
    rows = None
    if level is not None:
        rows = {(m, s): _sample_rows(run, metric, _crossing(run, x, level))
                for m, runs in (("a", ra), ("b", rb)) for s, run in runs.items() if s in seeds}
        if any(v is None for v in rows.values()):
            rows = None
    if rows is None:
        lo, hi = _t_interval(diffs)
        how = "t over seeds" if lo is not None else "one seed: no interval"
        return Paired(a, b, metric, level, len(seeds), diff, lo, hi, how)
    n = next(iter(rows.values()))[0].shape[1]
    if any(r[0].shape[1] != n for r in rows.values()):
        raise ValueError(f"{bench.get('benchmark')}: {metric}: runs logged different numbers of samples")
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(replicates):
        drawn = rng.choice(seeds, size=len(seeds), replace=True)
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)  # the same samples for a and b
        ds = [(_resampled_value(rows[("a", s)], w), _resampled_value(rows[("b", s)], w)) for s in drawn]
        if all(va is not None and vb is not None for va, vb in ds):  # None: a draw without any token of a kind
            stats.append(float(np.mean([va - vb for va, vb in ds])))
    lo, hi = _interval(stats, replicates, bench, metric)
    return Paired(a, b, metric, level, len(seeds), diff, lo, hi, _bootstrap_how(seeds), replicates)


def _atwu_method(bench: Mapping[str, Any]) -> Optional[str]:
    atwu = [m for m, role in method_roles(bench).items() if role == "atwu"]
    return "ATWU" if "ATWU" in atwu else (atwu[0] if atwu else None)


def _f(v: float) -> str:
    return f"{v:+.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:+.2e}"


def render_paired_markdown(bench: Mapping[str, Any], targets: Sequence[Tuple[str, Optional[float]]],
                           directions: Optional[Mapping[str, str]] = None) -> str:
    """One table row per ``(metric, level)``: the strongest label-free baseline, ATWU and their
    paired difference with its 95 % interval."""
    atwu = _atwu_method(bench)
    if atwu is None or not any(role in LABEL_FREE_ROLES for role in method_roles(bench).values()):
        return ""  # nothing to compare (e.g. an ablation of ATWU variants only)
    x = (bench.get("matched") or {}).get("x")
    out = [f"**ATWU vs the strongest label-free baseline — {bench['benchmark']}**", "",
           "Per metric, the label-free method (uniform or heuristic; not the oracle, not an ATWU variant) with the "
           "best mean, and ATWU minus it, paired by seed (and by sample where the runs logged per-sample values): "
           "mean [95 % interval]; *yes* = the interval excludes 0.", "",
           "| Metric | Read at | Strongest label-free baseline | Baseline | ATWU | ATWU − baseline [95 %] | Interval | Significant |",
           "|:---|:---|:---|---:|---:|---:|:---|:---|"]
    for metric, level in targets:
        where = f"{level:g}× `{x}`" if level is not None else "end of run"
        best = strongest_baseline(bench, metric, level, directions=directions)
        arrow = {"higher": " ↑", "lower": " ↓"}[_direction(metric, directions)]
        if best is None:
            out.append(f"| {metric}{arrow} | {where} | none reached it in every seed | – | – | – | – | – |")
            continue
        p = paired_difference(bench, atwu, best[0], metric, level)
        if p is None:
            out.append(f"| {metric}{arrow} | {where} | {best[0]} | {best[1]:.4f} | not reached | – | – | – |")
            continue
        ivl = f"[{_f(p.lo)}, {_f(p.hi)}]" if p.lo is not None else "–"
        atwu_vals = [v for v in (_value(r, metric, level, x) for r in _runs_by_seed(bench, atwu).values())
                     if v is not None]
        atwu_mean = float(np.mean(atwu_vals)) if atwu_vals else None
        sig = {True: "yes", False: "no", None: "–"}[p.significant]
        out.append(f"| {metric}{arrow} | {where} | {best[0]} | {best[1]:.4f} | "
                   f"{'' if atwu_mean is None else f'{atwu_mean:.4f}'} | {_f(p.diff)} {ivl} | {p.how} | {sig} |")
    out.append("")
    return "\n".join(out)


def render_versus_markdown(bench: Mapping[str, Any], reference: str, targets: Sequence[Tuple[str, Optional[float]]],
                           directions: Optional[Mapping[str, str]] = None) -> str:
    """Every other method minus ``reference`` (e.g. an ablation's default), paired as in
    :func:`paired_difference`: one row per method, one column per ``(metric, level)``."""
    methods = [m for m in dict.fromkeys(r["method"] for r in bench.get("runs", [])) if m != reference]
    if not methods or not _runs_by_seed(bench, reference):
        return ""
    x = (bench.get("matched") or {}).get("x")
    heads = [f"{m}{ {'higher': ' ↑', 'lower': ' ↓'}[_direction(m, directions)] }"
             + (f" at {lv:g}× `{x}`" if lv is not None else "") for m, lv in targets]
    out = [f"**Each row minus `{reference}` — {bench['benchmark']}**", "",
           "Paired by seed (and by sample where the runs logged per-sample values): mean difference [95 % interval]; "
           "**bold** = the interval excludes 0.", "",
           "| Method | " + " | ".join(heads) + " |", "|:---|" + "---:|" * len(targets)]
    for method in methods:
        cells = []
        for metric, level in targets:
            p = paired_difference(bench, method, reference, metric, level)
            if p is None:
                cells.append("–")
                continue
            text = _f(p.diff) + (f" [{_f(p.lo)}, {_f(p.hi)}]" if p.lo is not None else "")
            cells.append(f"**{text}**" if p.significant else text)
        out.append(f"| {method} | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)
