"""ATWU against the strongest label-free baseline: a paired difference with a 95 % interval.

For a metric read at matched forgetting (``level``: where the run's ``matched.x`` first reaches
``level`` times its start) or at the end of the run (``level=None``), the baseline is the
label-free method (uniform or heuristic, see ``headline.method_roles``; never the oracle or an
ATWU row) with the best mean over the seeds both methods share.

The difference is paired by seed (same seed = same data order) and, when the runs' trajectory
points carry per-sample rows (``samples``, written by the TOFU evaluator), by sample: a
hierarchical bootstrap resamples the seeds, then the samples of each split (the same draw for
both methods), recomputes every pooled metric of every point from the rows, re-finds each
run's crossing of the level and takes the mean difference over the drawn seeds; the interval
is its 2.5 and 97.5 percentiles. Without rows (end-of-run metrics, older cells) it falls back to
a t-interval over the paired seeds. A replicate where some drawn run no longer reaches the level
is dropped; the count is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from atwu_plugin.evals.trajectory import value_at
from atwu_plugin.leaderboard.headline import method_roles
from atwu_plugin.leaderboard.matched import _finite, direction, run_values_at

__all__ = ["Paired", "paired_difference", "strongest_baseline", "render_paired_markdown", "render_versus_markdown"]

# which split a per-sample metric is measured on (resampled together); the rest: the forget split
SPLIT_OF = {"retain_prob": "retain", "holdout_prob": "holdout", "holdout_kl_to_retain": "holdout"}


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
    how: str  # "bootstrap over seeds and samples" | "t over seeds" | "one seed: no interval"
    dropped: int = 0  # bootstrap replicates dropped (a drawn run did not reach the level)
    replicates: int = 0

    @property
    def significant(self) -> Optional[bool]:
        return None if self.lo is None else (self.lo > 0 or self.hi < 0)


def _runs_by_seed(bench: Mapping[str, Any], method: str) -> Dict[int, Mapping[str, Any]]:
    return {r["seed"]: r for r in bench.get("runs", []) if r["method"] == method}


def _value(run: Mapping[str, Any], metric: str, level: Optional[float], x: Optional[str]) -> Optional[float]:
    if level is None:
        v = (run.get("metrics") or {}).get(metric)
        return float(v) if _finite(v) else None
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
        if role not in ("uniform", "heuristic") or method in exclude:
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


def _sample_arrays(run: Mapping[str, Any], keys: Sequence[str]):
    """``(steps, {key: (sums [P, N], counts [P, N])})`` from every trajectory point, or None when
    a point lacks the rows of a key."""
    traj = run.get("trajectory") or []
    out = {}
    for k in keys:
        rows = [(p.get("samples") or {}).get(k) for p in traj]
        if not rows or any(r is None for r in rows) or len({len(r["sum"]) for r in rows}) != 1:
            return None
        out[k] = (np.array([r["sum"] for r in rows], dtype=float), np.array([r["n"] for r in rows], dtype=float))
    return out


def _resampled_value(arrays, x: str, metric: str, level: float, weights: Dict[str, np.ndarray]) -> Optional[float]:
    pts = []
    for key in (x, metric):
        s, n = arrays[key]
        w = weights[SPLIT_OF.get(key, "forget")]
        num, den = s @ w, n @ w
        pts.append(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))
    xs, ys = pts
    points = [{"x": float(a), "y": float(b)} for a, b in zip(xs, ys) if math.isfinite(a) and math.isfinite(b)]
    if len(points) < 2 or points[0]["x"] == 0:
        return None
    return value_at(points, "x", level * points[0]["x"], "y")


def paired_difference(bench: Mapping[str, Any], a: str, b: str, metric: str, level: Optional[float] = None,
                      replicates: int = 2000, seed: int = 0) -> Optional[Paired]:
    """``a - b`` on ``metric`` (at matched ``level``, or at the end of the run), paired by seed;
    None when no seed has a value for both."""
    x = (bench.get("matched") or {}).get("x")
    ra, rb = _runs_by_seed(bench, a), _runs_by_seed(bench, b)
    seeds = sorted(s for s in set(ra) & set(rb)
                   if _value(ra[s], metric, level, x) is not None and _value(rb[s], metric, level, x) is not None)
    if not seeds:
        return None
    diffs = [_value(ra[s], metric, level, x) - _value(rb[s], metric, level, x) for s in seeds]
    diff = float(np.mean(diffs))
    arrays = None
    if level is not None:
        arrays = {(m, s): _sample_arrays(run, (x, metric)) for m, runs in (("a", ra), ("b", rb))
                  for s, run in runs.items() if s in seeds}
        if any(v is None for v in arrays.values()):
            arrays = None
    if arrays is None:
        lo, hi = _t_interval(diffs)
        how = "t over seeds" if lo is not None else "one seed: no interval"
        return Paired(a, b, metric, level, len(seeds), diff, lo, hi, how)
    sizes = {}
    for arr in arrays.values():
        for key, (s, _) in arr.items():
            sizes[SPLIT_OF.get(key, "forget")] = s.shape[1]
    rng = np.random.default_rng(seed)
    stats, dropped = [], 0
    for _ in range(replicates):
        drawn = rng.choice(seeds, size=len(seeds), replace=True)
        weights = {split: np.bincount(rng.integers(0, n, n), minlength=n).astype(float) for split, n in sizes.items()}
        ds = []
        for s in drawn:
            va = _resampled_value(arrays[("a", s)], x, metric, level, weights)
            vb = _resampled_value(arrays[("b", s)], x, metric, level, weights)
            if va is None or vb is None:
                break
            ds.append(va - vb)
        if len(ds) < len(drawn):
            dropped += 1
            continue
        stats.append(float(np.mean(ds)))
    if len(stats) < 0.5 * replicates:  # the level is reached too rarely under resampling to say anything
        lo, hi = _t_interval(diffs)
        return Paired(a, b, metric, level, len(seeds), diff, lo, hi,
                      "t over seeds" if lo is not None else "one seed: no interval", dropped, replicates)
    lo, hi = (float(v) for v in np.percentile(stats, [2.5, 97.5]))
    return Paired(a, b, metric, level, len(seeds), diff, lo, hi, "bootstrap over seeds and samples",
                  dropped, replicates)


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
    if atwu is None:
        return ""
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
        how = p.how + (f", {p.dropped}/{p.replicates} replicates dropped" if p.dropped else "")
        sig = {True: "yes", False: "no", None: "–"}[p.significant]
        out.append(f"| {metric}{arrow} | {where} | {best[0]} | {best[1]:.4f} | "
                   f"{'' if atwu_mean is None else f'{atwu_mean:.4f}'} | {_f(p.diff)} {ivl} | {how} | {sig} |")
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
