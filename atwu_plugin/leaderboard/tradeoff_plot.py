"""The forget-vs-utility trade-off plot (PNG) of one benchmark.

x = forget quality on a log scale (it is a KS-test p-value: the interesting differences are
orders of magnitude, 1e-12 vs 1e-3 vs 0.5); y = model utility, linear. Markers are the means with
±std error bars (the lower x bar is clipped at the axis edge when mean - std <= 0, which a log
axis cannot show); faint dots are the individual seeds; the Pareto front is a dashed staircase.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import List, Mapping, Optional, Tuple, Union

from atwu_plugin.leaderboard.colors import method_colors
from atwu_plugin.leaderboard.results import is_number
from atwu_plugin.leaderboard.spec import MetricSpec
from atwu_plugin.leaderboard.stats import PARETO_X, PARETO_Y, STAR, MethodSummary, summarize
from atwu_plugin.utils.atomic import atomic_write_bytes


_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "<", ">", "h", "p", "*"]


def plot_tradeoff(bench: Mapping, out_path: Union[str, Path], title: str = "") -> Optional[Path]:
    """Forget quality (log x) vs model utility (y) per method; returns None (and writes nothing)
    when no method reports both metrics."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = summarize(bench, [MetricSpec(PARETO_X, "higher"), MetricSpec(PARETO_Y, "higher")])
    rows = [r for r in rows if r.mean(PARETO_X) is not None and r.mean(PARETO_Y) is not None]
    if not rows:
        return None
    runs_by_method = {r.method: [x for x in bench["runs"] if x["method"] == r.method] for r in rows}

    # a log axis cannot show p <= 0: clip at a floor below the smallest positive value
    positives = [v for r in rows for v in r.stats[PARETO_X].values if v > 0]
    floor = (min(positives) if positives else 1e-12) / 5
    xs_all = [max(v, floor) for r in rows for v in r.stats[PARETO_X].values]
    x_hi = max(max(xs_all), max(r.mean(PARETO_X) + (r.stats[PARETO_X].std or 0) for r in rows))
    # p-values live in (0, 1]: always show up to 1 (indistinguishable from the retain model)
    x_right = max(1.0, x_hi) * 2.5

    fig = Figure(figsize=(9.0, 5.6), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xscale("log")
    by_method = method_colors(bench)
    cmap_colors = [by_method[r.method] for r in rows]

    # individual seeds (faint)
    for i, r in enumerate(rows):
        pts = [(max(float(x["metrics"][PARETO_X]), floor), float(x["metrics"][PARETO_Y]))
               for x in runs_by_method[r.method]
               if is_number(x["metrics"].get(PARETO_X)) and is_number(x["metrics"].get(PARETO_Y))
               and math.isfinite(x["metrics"][PARETO_X]) and math.isfinite(x["metrics"][PARETO_Y])]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=cmap_colors[i], alpha=0.3,
                       linewidths=0, zorder=2, label="_nolegend_")

    # Pareto front as a dashed staircase
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.mean(PARETO_X))
    if len(front) >= 2:
        fx = [max(r.mean(PARETO_X), floor) for r in front]
        fy = [r.mean(PARETO_Y) for r in front]
        sx, sy = [fx[0]], [fy[0]]
        for x, y in zip(fx[1:], fy[1:]):
            sx += [x, x]
            sy += [sy[-1], y]
        ax.plot(sx, sy, ls="--", lw=1.0, color="0.45", zorder=1, label="Pareto front")

    # means with error bars
    placed: List[Tuple[float, float]] = []
    bars: List[Tuple[Tuple[float, float], Tuple[float, float]]] = []  # error bar segments
    for i, r in enumerate(rows):
        x, y = max(r.mean(PARETO_X), floor), r.mean(PARETO_Y)
        sx_, sy_ = r.stats[PARETO_X].std or 0.0, r.stats[PARETO_Y].std or 0.0
        lo = x - max(x - sx_, floor)
        ax.errorbar([x], [y], xerr=[[lo], [sx_]], yerr=[[sy_], [sy_]], fmt=_MARKERS[i % len(_MARKERS)],
                    ms=8 if not r.pareto else 9, color=cmap_colors[i], ecolor=cmap_colors[i],
                    elinewidth=1.1, capsize=3, mec="black" if r.pareto else cmap_colors[i], mew=1.0,
                    zorder=3, label=(f"{STAR} " if r.pareto else "") + _short_name(r.method))
        placed.append((x, y))
        bars.append(((x - lo, y), (x + sx_, y)))
        bars.append(((x, y - sy_), (x, y + sy_)))

    if 0.05 > floor and 0.05 < x_right:
        ax.axvline(0.05, color="0.6", lw=0.8, ls=":", zorder=0)
        ax.annotate("p = 0.05", xy=(0.05, 0), xycoords=("data", "axes fraction"), xytext=(3, 4),
                    textcoords="offset points", fontsize=8, color="0.35")

    left = min(min(xs_all), min(p[0] for p in placed)) / 3
    ax.set_xlim(left, x_right)
    ys = [p[1] for p in placed] + [v for r in rows for v in r.stats[PARETO_Y].values]
    ypad = max((max(ys) - min(ys)) * 0.12, 0.01)
    ax.set_ylim(min(ys) - ypad, max(ys) + ypad)

    ax.set_xlabel("Forget quality (KS-test p-value, log scale)  →  better")
    ax.set_ylabel("Model utility  →  better")
    nseeds = sorted({len(r.seeds) for r in rows})
    seeds_txt = "/".join(str(n) for n in nseeds)
    ax.set_title((title + "\n" if title else "") +
                 f"mean ± std over {seeds_txt} seed(s); faint dots = single seeds; {STAR} = Pareto-optimal",
                 fontsize=10)
    ax.grid(True, which="major", color="0.9", lw=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False, borderaxespad=0.0)
    fig.tight_layout()
    _label_points(fig, ax, rows, placed, bars, texts=[_point_label(r) for r in rows])
    out_path = Path(out_path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path


def _point_label(r: "MethodSummary") -> str:
    text = (f"{STAR} " if r.pareto else "") + _short_name(r.method)
    if r.mean(PARETO_X) <= 0:
        text += " (p = 0: drawn at the axis floor)"
    return text


def _short_name(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _label_points(fig, ax, rows, placed, bars=(), texts=None) -> None:
    """Name each marker, choosing among a few offsets the one whose measured text box overlaps
    least with the markers, error bars, other labels and the axes border (greedy; good enough
    for a dozen methods). Call after the final layout: it works in display coordinates."""
    renderer = fig.canvas.get_renderer()
    trans = ax.transData
    bbox_ax = ax.get_window_extent(renderer)
    taken = []  # display-space boxes (x0, y0, x1, y1)
    for (x, y) in placed:
        px, py = trans.transform((x, y))
        taken.append((px - 9, py - 9, px + 9, py + 9))
    for a, b in bars:  # error bars: thin boxes
        (ax_, ay_), (bx_, by_) = trans.transform(a), trans.transform(b)
        taken.append((min(ax_, bx_) - 2, min(ay_, by_) - 2, max(ax_, bx_) + 2, max(ay_, by_) + 2))
    offsets = [(9, 5), (9, -15), (-9, 5), (-9, -15), (9, 15), (-9, 15), (0, 12), (0, -22), (9, -25),
               (-9, -25), (9, 25), (-9, 25)]
    for i, (r, (x, y)) in enumerate(zip(rows, placed)):
        text = texts[i] if texts else r.method
        ann = ax.annotate(text, xy=(x, y), xytext=offsets[0], textcoords="offset points", fontsize=9,
                          va="bottom", fontweight="bold" if r.pareto else "normal", zorder=4)
        best, best_cost = None, None
        for dx, dy in offsets:
            ann.set_position((dx, dy))
            ann.set_ha("left" if dx > 0 else ("right" if dx < 0 else "center"))
            e = ann.get_window_extent(renderer)
            box = (e.x0 - 1, e.y0 - 1, e.x1 + 1, e.y1 + 1)
            cost = sum(_overlap(box, t) for t in taken)
            h, w = e.height, e.width
            outside = (max(0, bbox_ax.x0 - box[0]) + max(0, box[2] - bbox_ax.x1)) * h + \
                      (max(0, bbox_ax.y0 - box[1]) + max(0, box[3] - bbox_ax.y1)) * w
            cost += 4 * outside
            if best_cost is None or cost < best_cost - 1e-9:
                best, best_cost = (dx, dy, box), cost
        dx, dy, box = best
        ann.set_position((dx, dy))
        ann.set_ha("left" if dx > 0 else ("right" if dx < 0 else "center"))
        taken.append(box)


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0
