"""Comparison at matched forgetting, from the trajectories in ``results.json``.

Final metrics compare methods that forgot different amounts: a method that barely moved
keeps its utility for free. Here every run's trajectory (probability-only evaluations logged
during training, see ``EvaluatorTrajectory``) is read where its forgetting axis ``x`` first
reaches ``level * x(step 0)``; the other metrics are linearly interpolated between the two
logged points around that crossing (:func:`atwu_plugin.evals.trajectory.value_at`). A run
that never gets that far has no value at that level; the table says how many seeds reached
it. Means and sample stds are over the seeds that reached the level.

A benchmark object in ``results.json`` opts in with ``"matched": {"x", "levels", "metrics"}``
(written by the runner from the spec's ``matched`` section).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from atwu_plugin.evals.trajectory import value_at
from atwu_plugin.leaderboard.colors import method_colors
from atwu_plugin.leaderboard.results import is_finite_number
from atwu_plugin.leaderboard.spec import KNOWN_METRICS

# metrics that are logged along trajectories but are not default table columns
EXTRA_DIRECTIONS = {
    "retain_prob": "higher",
    "world_prob": "higher",
    "forget_prob": "lower",
    "forget_truth_ratio": "higher",
    "retain_truth_ratio": "higher",
    "kl_to_retain_specific": "lower",
    "kl_to_retain_generic": "lower",
    "holdout_kl_to_retain": "lower",
    "forget_template_prob": "higher",
    "forget_shared_prob": "higher",
}


# p-values: interpolate their logarithm (1e-40 -> 1e-20 is halfway at 1e-30, not at 5e-21)
LOG_METRICS = ("forget_quality",)


def direction(metric: str) -> Optional[str]:
    return KNOWN_METRICS.get(metric) or EXTRA_DIRECTIONS.get(metric)


def run_values_at(run: Mapping[str, Any], x: str, level: float, metrics: Sequence[str]) -> Dict[str, Optional[float]]:
    """``{metric: value}`` where ``run``'s trajectory first reaches ``level`` times its step-0
    ``x``; every value is None when the run has no usable trajectory or never gets there."""
    traj = run.get("trajectory") or []
    points = [p for p in traj if is_finite_number(p.get(x))]
    if len(points) < 2 or not points[0][x]:
        return {m: None for m in metrics}
    x0 = points[0][x]
    target = level * x0
    out: Dict[str, Optional[float]] = {}
    for m in metrics:
        log = m in LOG_METRICS
        pts = [{"x": p[x], "y": math.log10(p[m]) if log else p[m]} for p in points
               if is_finite_number(p.get(m)) and (not log or p[m] > 0)]
        v = value_at(pts, "x", target, "y") if len(pts) >= 2 else None
        out[m] = 10 ** v if (log and v is not None) else v
    return out


def summarize_matched(bench: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Rows ``{"method", "level", "n_runs", "n_reached", "stats": {metric: (mean, std)}}``,
    methods in first-appearance order, then levels."""
    spec = bench.get("matched") or {}
    x, levels, metrics = spec.get("x"), spec.get("levels") or [], spec.get("metrics") or []
    by_method: Dict[str, List[Mapping]] = {}
    for r in bench.get("runs", []):
        by_method.setdefault(r["method"], []).append(r)
    rows = []
    for method, runs in by_method.items():
        for level in levels:
            vals = [run_values_at(r, x, level, metrics) for r in runs]
            reached = [v for v in vals if any(val is not None for val in v.values())]
            stats = {}
            for m in metrics:
                xs = [v[m] for v in reached if v[m] is not None]
                stats[m] = (float(np.mean(xs)) if xs else None, float(np.std(xs, ddof=1)) if len(xs) > 1 else None)
            rows.append({"method": method, "level": level, "n_runs": len(runs), "n_reached": len(reached), "stats": stats})
    return rows


def _fmt(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "not reached"
    f = (lambda v: f"{v:.3g}") if abs(mean) < 1e-3 and mean != 0 else (lambda v: f"{v:.4f}")
    return f(mean) if std is None else f"{f(mean)} ± {f(std)}"


def render_matched_markdown(bench: Mapping[str, Any]) -> str:
    """One table per level: methods x metrics at matched forgetting; best mean in bold."""
    spec = bench.get("matched") or {}
    rows = summarize_matched(bench)
    if not rows:
        return ""
    x, metrics = spec["x"], spec["metrics"]
    out = [f"### Matched forgetting — {bench['benchmark']}", "",
           f"Each run read where `{x}` first reaches the given fraction of its step-0 value "
           "(linear interpolation along the run's logged trajectory); mean ± sample std over the "
           "seeds that got there (*Reached*). ↑/↓ = higher/lower is better; **bold** = best.", ""]
    for level in spec["levels"]:
        lrows = [r for r in rows if r["level"] == level]
        best = {}
        for m in metrics:
            d = direction(m)
            means = [r["stats"][m][0] for r in lrows if r["stats"][m][0] is not None]
            if d and means:
                best[m] = max(means) if d == "higher" else min(means)
        arrows = {m: {"higher": " ↑", "lower": " ↓"}.get(direction(m) or "", "") for m in metrics}
        out += [f"**{x} at {level:g} × its step-0 value**", "",
                "| Method | Reached | " + " | ".join(f"{m}{arrows[m]}" for m in metrics) + " |",
                "|:---|---:|" + "---:|" * len(metrics)]
        for r in lrows:
            cells = []
            for m in metrics:
                mean, std = r["stats"][m]
                text = _fmt(mean, std)
                cells.append(f"**{text}**" if mean is not None and best.get(m) == mean else text)
            out.append(f"| {r['method']} | {r['n_reached']}/{r['n_runs']} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot_matched(bench: Mapping[str, Any], out_path: Union[str, Path], title: str = "") -> Optional[Path]:
    """Trade-off curves: each metric (one panel) against x / x(step 0), mean over seeds per
    method; dotted lines mark the matched levels. None when no run has a trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atwu_plugin.utils.atomic import atomic_write_bytes

    spec = bench.get("matched") or {}
    x, metrics = spec.get("x"), list(spec.get("metrics") or [])
    curves: Dict[str, List[Tuple[np.ndarray, Dict[str, np.ndarray]]]] = {}
    for r in bench.get("runs", []):
        pts = [p for p in (r.get("trajectory") or []) if is_finite_number(p.get(x))]
        if len(pts) < 2 or not pts[0][x]:
            continue
        xr = np.array([p[x] / pts[0][x] for p in pts])
        ys = {m: np.array([p[m] if is_finite_number(p.get(m)) else np.nan for p in pts]) for m in metrics}
        curves.setdefault(r["method"], []).append((xr, ys))
    if not curves or not metrics:
        return None
    grid = np.linspace(1.0, 0.0, 101)
    n = len(metrics)
    cols = min(n, 3)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(5.2 * cols, 4.0 * ((n + cols - 1) // cols)),
                             squeeze=False)
    colors = method_colors(bench)
    for ai, m in enumerate(metrics):
        ax = axes[ai // cols][ai % cols]
        for method, runs in curves.items():
            ys = []
            for xr, yd in runs:
                # the part of the curve before the run's deepest forgetting, as a function of x
                stop = int(np.argmin(xr)) + 1
                y = yd[m][:stop]
                if m in LOG_METRICS:
                    y = np.log10(np.where(y > 0, y, np.nan))
                ys.append(np.array([_interp_first(xr[:stop], y, g) for g in grid]))
            stacked = np.vstack(ys)
            if np.all(np.isnan(stacked)):
                continue
            with warnings.catch_warnings():  # grid points no seed reached stay NaN (not drawn)
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stacked, axis=0)
            if m in LOG_METRICS:
                mean = 10 ** mean
            ax.plot(grid, mean, label=method, color=colors[method], lw=1.6)
        for level in spec.get("levels", []):
            ax.axvline(level, color="0.6", ls=":", lw=1)
        ax.set_xlim(1.02, 0.0)
        ax.set_xlabel(f"{x} / step-0 value (← less forgotten | more forgotten →)")
        d = direction(m)
        ax.set_ylabel(m + {"higher": " (↑ better)", "lower": " (↓ better)"}.get(d or "", ""))
        if m.startswith("kl") or m == "forget_quality":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ai in range(n, axes.size):
        axes[ai // cols][ai % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8, frameon=False)
    fig.suptitle(title or f"Matched forgetting — {bench['benchmark']}")
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) // 7), 1, 0.96))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(Path(out_path), buf.getvalue())


def _interp_first(xs: np.ndarray, ys: np.ndarray, x: float) -> float:
    pts = [{"x": float(a), "y": float(b)} for a, b in zip(xs, ys) if math.isfinite(b)]
    if not pts:
        return float("nan")
    if abs(x - pts[0]["x"]) < 1e-12:
        return pts[0]["y"]
    v = value_at(pts, "x", x, "y")
    return float("nan") if v is None else v
