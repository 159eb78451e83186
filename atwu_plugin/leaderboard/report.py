"""Leaderboard reports from ``results.json``: Markdown/CSV tables, trade-off plot, token heatmaps.

``results.json`` comes in two shapes, both accepted everywhere (:func:`load_results`):

* one benchmark: ``{"benchmark": str, "model": str, "runs": [run, ...]}``
* several: ``{"name": str, "benchmarks": [<one-benchmark object>, ...]}``

with ``run = {"method", "seed", "config", "metrics": {name: float | null}, "wall_s"}``.

Statistics (tables and plot): per method and metric, the mean and the *sample* standard
deviation (n - 1 denominator) over the seeds that reported a finite value; ``null``/NaN values
are missing (e.g. ``span_auroc`` of a method without token weights); with one seed the std is
undefined (``–`` in Markdown, empty in CSV). Ranks are competition ranks (1, 1, 3) of the
means, 1 = best for the metric's direction. A method is Pareto-optimal when no other method
has a forget quality and a model utility both at least as high and one strictly higher
(means); it gets a ★.

Trade-off plot: x = forget quality on a log scale (it is a KS-test p-value: the interesting
differences are orders of magnitude, 1e-12 vs 1e-3 vs 0.5); y = model utility, linear.
Markers are the means with ±std error bars (the lower x bar is clipped at the axis edge when
mean - std <= 0, which a log axis cannot show); faint dots are the individual seeds.

Heatmaps: one self-contained HTML file per token-weighting method (no JS, inline CSS).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from atwu_plugin.evals.auroc import auroc
from atwu_plugin.leaderboard.colors import method_colors
from atwu_plugin.leaderboard.spec import KNOWN_METRICS, MetricSpec
from atwu_plugin.tokens import KIND_IGNORE, KIND_LABELS, KIND_NONE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.utils.atomic import atomic_write_bytes, atomic_write_text
from atwu_plugin.utils.jsonfile import read_json

__all__ = [
    "ResultsError",
    "load_results",
    "Stat",
    "MethodSummary",
    "summarize",
    "pareto_front",
    "format_value",
    "format_mean_std",
    "render_markdown",
    "render_csv",
    "plot_tradeoff",
    "read_token_records",
    "latest_per_sample",
    "render_heatmap",
    "write_heatmap",
    "write_reports",
    "PARETO_X",
    "PARETO_Y",
]

PARETO_X = "forget_quality"
PARETO_Y = "model_utility"
STAR = "★"

# ----------------------------------------------------------------------------- results I/O


class ResultsError(ValueError):
    """Malformed results; the message is one line naming the file and the problem."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_results(src: Union[str, Path, Mapping], source: Optional[str] = None) -> List[Dict[str, Any]]:
    """Read and validate results (a path or an already-parsed object) and return the list of
    per-benchmark objects ``[{"benchmark", "model", "runs"}, ...]``."""
    if isinstance(src, Mapping):
        data, name = src, source or "<results>"
    else:
        name = source or str(src)
        data = read_json(src, ResultsError, name)
    if not isinstance(data, Mapping):
        raise ResultsError(f"{name}: top level is {type(data).__name__}; expected an object with "
                           f"'runs' (one benchmark) or 'benchmarks' (several)")
    if "benchmarks" in data:
        benches = data["benchmarks"]
        if not isinstance(benches, list):
            raise ResultsError(f"{name}: 'benchmarks' is {type(benches).__name__}; expected a list")
        where = [f"benchmarks[{i}]" for i in range(len(benches))]
    elif "runs" in data:
        benches, where = [data], ["top level"]
    else:
        raise ResultsError(f"{name}: no 'runs' or 'benchmarks' key; expected a results.json")
    out, seen = [], set()
    for b, w in zip(benches, where):
        if not isinstance(b, Mapping):
            raise ResultsError(f"{name}: {w} is {type(b).__name__}; expected an object")
        bname = b.get("benchmark")
        if not isinstance(bname, str) or not bname:
            raise ResultsError(f"{name}: {w}.benchmark is {bname!r}; expected a benchmark name")
        if bname in seen:
            raise ResultsError(f"{name}: benchmark {bname!r} appears twice")
        seen.add(bname)
        runs = b.get("runs")
        if not isinstance(runs, list):
            raise ResultsError(f"{name}: benchmark {bname!r}: 'runs' is {type(runs).__name__}; expected a list")
        for i, r in enumerate(runs):
            rw = f"benchmark {bname!r} runs[{i}]"
            if not isinstance(r, Mapping):
                raise ResultsError(f"{name}: {rw} is {type(r).__name__}; expected an object")
            if not isinstance(r.get("method"), str):
                raise ResultsError(f"{name}: {rw}.method is {r.get('method')!r}; expected a string")
            seed = r.get("seed")
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ResultsError(f"{name}: {rw}.seed is {seed!r}; expected an integer")
            metrics = r.get("metrics")
            if not isinstance(metrics, Mapping):
                raise ResultsError(f"{name}: {rw}.metrics is {type(metrics).__name__}; expected an object")
            for k, v in metrics.items():
                if v is not None and not _is_number(v):
                    raise ResultsError(f"{name}: {rw}.metrics.{k} is {v!r}; expected a number or null")
        bench = {"benchmark": bname, "model": b.get("model", ""), "runs": list(runs)}
        if isinstance(b.get("matched"), Mapping):
            bench["matched"] = dict(b["matched"])
        out.append(bench)
    return out


# ----------------------------------------------------------------------------- statistics


@dataclass
class Stat:
    values: List[float]  # finite per-seed values

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return math.fsum(self.values) / self.n if self.values else None

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation (n - 1); None for fewer than two values."""
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(math.fsum((v - m) ** 2 for v in self.values) / (self.n - 1))


@dataclass
class MethodSummary:
    method: str
    seeds: List[int]
    stats: Dict[str, Stat] = field(default_factory=dict)
    ranks: Dict[str, Optional[int]] = field(default_factory=dict)
    pareto: bool = False

    def mean(self, metric: str) -> Optional[float]:
        s = self.stats.get(metric)
        return s.mean if s else None


def method_order(bench: Mapping) -> List[str]:
    order: List[str] = []
    for r in bench["runs"]:
        if r["method"] not in order:
            order.append(r["method"])
    return order


def finite_values(runs: Iterable[Mapping], metric: str) -> List[float]:
    vals = []
    for r in runs:
        v = r["metrics"].get(metric)
        if _is_number(v) and math.isfinite(v):
            vals.append(float(v))
    return vals


def pareto_front(points: Mapping[str, Tuple[Optional[float], Optional[float]]]) -> List[str]:
    """Names whose (x, y) no other point dominates (both maximized). Points with a missing
    coordinate are never on the front."""
    valid = {k: p for k, p in points.items() if p[0] is not None and p[1] is not None}
    front = []
    for k, (x, y) in valid.items():
        dominated = any(
            (ox >= x and oy >= y and (ox > x or oy > y)) for o, (ox, oy) in valid.items() if o != k
        )
        if not dominated:
            front.append(k)
    return front


def _competition_ranks(means: Mapping[str, Optional[float]], higher: bool) -> Dict[str, Optional[int]]:
    present = [(k, v) for k, v in means.items() if v is not None]
    ranks: Dict[str, Optional[int]] = {k: None for k in means}
    for k, v in present:
        better = sum(1 for _, o in present if (o > v if higher else o < v))
        ranks[k] = better + 1
    return ranks


def default_metrics(benches: Sequence[Mapping]) -> List[MetricSpec]:
    """Metrics present in the results: known ones first (in KNOWN_METRICS order), then the
    others (direction 'higher' assumed)."""
    present: List[str] = []
    for b in benches:
        for r in b["runs"]:
            for k in r["metrics"]:
                if k not in present:
                    present.append(k)
    known = [MetricSpec(k, d) for k, d in KNOWN_METRICS.items() if k in present]
    return known + [MetricSpec(k, "higher") for k in present if k not in KNOWN_METRICS]


def summarize(bench: Mapping, metrics: Sequence[MetricSpec]) -> List[MethodSummary]:
    """Per-method statistics, ranks and Pareto flags for one benchmark (methods in the order of
    their first run)."""
    rows = []
    for m in method_order(bench):
        runs = [r for r in bench["runs"] if r["method"] == m]
        s = MethodSummary(m, sorted(r["seed"] for r in runs))
        for met in {mt.name for mt in metrics} | {PARETO_X, PARETO_Y}:
            s.stats[met] = Stat(finite_values(runs, met))
        rows.append(s)
    for met in metrics:
        ranks = _competition_ranks({r.method: r.mean(met.name) for r in rows}, met.higher_is_better)
        for r in rows:
            r.ranks[met.name] = ranks[r.method]
    front = set(pareto_front({r.method: (r.mean(PARETO_X), r.mean(PARETO_Y)) for r in rows}))
    for r in rows:
        r.pareto = r.method in front
    return rows


# ----------------------------------------------------------------------------- tables


def format_value(x: Optional[float]) -> str:
    """4 decimals in [1e-3, 1e4), else scientific with 3 significant digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.4f}"
    return f"{x:.2e}"


def format_mean_std(mean: float, std: Optional[float]) -> str:
    """``mean ± std`` with the std in the mean's style (fixed 4 decimals or scientific), so a
    column reads uniformly; ``–`` for an undefined std (one seed)."""
    m = format_value(mean)
    if std is None:
        return f"{m} ± –"
    if "e" in m or not math.isfinite(std):
        return f"{m} ± {format_value(std) if std else '0'}"
    return f"{m} ± {std:.4f}"


def _md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _arrow(m: MetricSpec) -> str:
    return "↑" if m.higher_is_better else "↓"


def render_markdown_table(rows: Sequence[MethodSummary], metrics: Sequence[MetricSpec]) -> str:
    head = ["Method", "Seeds"] + [f"{_md_escape(m.display)} {_arrow(m)}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---", "---:"] + ["---:"] * len(metrics)) + "|"]
    for r in rows:
        cells = [(f"{STAR} " if r.pareto else "") + _md_escape(r.method), str(len(r.seeds))]
        for m in metrics:
            st = r.stats[m.name]
            if st.mean is None:
                cells.append("n/a")
                continue
            text = format_mean_std(st.mean, st.std)
            rank = r.ranks.get(m.name)
            if rank == 1:
                text = f"**{text}**"
            cells.append(f"{text} ({rank})" if rank is not None else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(benches: Sequence[Mapping], metrics: Sequence[MetricSpec], title: str = "Leaderboard",
                    links: Optional[Mapping[str, Mapping[str, str]]] = None) -> str:
    """``links[benchmark]`` maps a caption to a relative path (plot, heatmaps) listed under
    the benchmark's table."""
    out = [f"# {_md_escape(title)}", ""]
    out.append(
        f"Mean ± sample std over seeds (the number of seeds is in *Seeds*); (k) = rank for that "
        f"metric, **bold** = best; ↑/↓ = higher/lower is better; n/a = not reported. "
        f"{STAR} = Pareto-optimal on ({PARETO_X} ↑, {PARETO_Y} ↑)."
    )
    out.append("")
    for b in benches:
        model = f" — model `{b['model']}`" if b.get("model") else ""
        out.append(f"## {_md_escape(b['benchmark'])}{model}")
        out.append("")
        rows = summarize(b, metrics)
        if not rows:
            out += ["*No finished runs.*", ""]
            continue
        out.append(render_markdown_table(rows, metrics))
        for caption, rel in (links or {}).get(b["benchmark"], {}).items():
            if rel.endswith(".png"):
                out.append(f"![{caption}]({rel})")
            else:
                out.append(f"- [{caption}]({rel})")
        out.append("")
        if b.get("matched"):
            from atwu_plugin.leaderboard.matched import render_matched_markdown

            out.append(render_matched_markdown(b))
    return "\n".join(out).rstrip() + "\n"


def render_csv(benches: Sequence[Mapping], metrics: Sequence[MetricSpec]) -> str:
    """Machine-readable table: full precision; empty cell = missing; ``pareto`` is true/false."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["benchmark", "method", "n_seeds", "pareto"]
    for m in metrics:
        head += [f"{m.name}_mean", f"{m.name}_std", f"{m.name}_rank"]
    w.writerow(head)
    for b in benches:
        for r in summarize(b, metrics):
            row = [b["benchmark"], r.method, len(r.seeds), "true" if r.pareto else "false"]
            for m in metrics:
                st = r.stats[m.name]
                rank = r.ranks.get(m.name)
                row += ["" if st.mean is None else repr(st.mean), "" if st.std is None else repr(st.std),
                        "" if rank is None else rank]
            w.writerow(row)
    return buf.getvalue()


# ----------------------------------------------------------------------------- trade-off plot

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
               if _is_number(x["metrics"].get(PARETO_X)) and _is_number(x["metrics"].get(PARETO_Y))
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


# ----------------------------------------------------------------------------- token heatmap

# white -> dark red (ColorBrewer "Reds", with pure white at 0)
_STOPS = ["#ffffff", "#fee0d2", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#a50f15"]


def _rgb(hexcolor: str) -> Tuple[int, int, int]:
    return tuple(int(hexcolor[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def weight_color(t: float) -> str:
    """Background for a normalized weight ``t`` in [0, 1]."""
    t = 0.0 if not math.isfinite(t) else min(max(t, 0.0), 1.0)
    pos = t * (len(_STOPS) - 1)
    i = min(int(pos), len(_STOPS) - 2)
    f = pos - i
    a, b = _rgb(_STOPS[i]), _rgb(_STOPS[i + 1])
    return "#%02x%02x%02x" % tuple(round(x + (y - x) * f) for x, y in zip(a, b))


def read_token_records(src: Union[str, Path, Iterable[Mapping]]) -> List[Dict[str, Any]]:
    """Read ``{"sample", "tokens", "weights", "kinds"}`` records from a JSONL file (or take an
    iterable of dicts) and validate them; errors name the file and line."""
    name = "<records>"
    if isinstance(src, (str, Path)):
        name = str(src)
        items = []
        with open(src, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    items.append((f"{name}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ResultsError(f"{name}:{lineno}: invalid JSON: {e.msg}") from None
    else:
        items = [(f"{name}[{i}]", r) for i, r in enumerate(src)]
    out = []
    for where, r in items:
        if not isinstance(r, Mapping):
            raise ResultsError(f"{where}: expected an object with sample, tokens, weights, kinds")
        toks, ws = r.get("tokens"), r.get("weights")
        kinds = r.get("kinds")
        text_toks = r.get("text_tokens")  # decoded pieces (TokenWeightLogger), nicer than BPE symbols
        if isinstance(text_toks, list) and isinstance(toks, list) and len(text_toks) == len(toks) \
                and all(isinstance(t, str) for t in text_toks):
            toks = text_toks
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise ResultsError(f"{where}: 'tokens' must be a list of strings")
        if not isinstance(ws, list) or not all(w is None or _is_number(w) for w in ws):
            raise ResultsError(f"{where}: 'weights' must be a list of numbers")
        if kinds is None:
            kinds = [KIND_IGNORE] * len(toks)
        if not isinstance(kinds, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in kinds):
            raise ResultsError(f"{where}: 'kinds' must be a list of integers")
        if not (len(toks) == len(ws) == len(kinds)):
            raise ResultsError(f"{where}: tokens/weights/kinds lengths differ "
                               f"({len(toks)}/{len(ws)}/{len(kinds)})")
        step = r.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise ResultsError(f"{where}: 'step' must be an integer")
        out.append({"sample": r.get("sample", len(out)), "step": step, "tokens": toks,
                    "weights": [float("nan") if w is None else float(w) for w in ws], "kinds": kinds})
    return out


def latest_per_sample(records: Sequence[Mapping]) -> List[Mapping]:
    """Training logs hold one record per sample per logged step: keep each sample's record of
    the last step (the final weights), in the order samples first appear."""
    if not any(r.get("step") is not None for r in records):
        return list(records)
    best: Dict[Any, Mapping] = {}
    for r in records:
        key = json.dumps(r["sample"], sort_keys=True, default=str)
        cur = best.get(key)
        if cur is None or (r.get("step") or 0) >= (cur.get("step") or 0):
            best[key] = r
    return list(best.values())


def _display_token(tok: str) -> str:
    # byte-level BPE pieces (convert_ids_to_tokens) mark spaces/newlines with Ġ/Ċ
    return tok.replace("Ġ", " ").replace("Ċ", "\n")


_HEATMAP_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 margin:24px auto;max-width:1000px;padding:0 16px;color:#1a1a1a;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}
.meta{color:#555;font-size:13px;margin-bottom:14px}
.legend{display:flex;flex-wrap:wrap;gap:10px 22px;align-items:center;background:#fff;border:1px solid #ddd;
 border-radius:6px;padding:10px 14px;font-size:13px;margin-bottom:14px;position:sticky;top:0;z-index:1}
.bar{width:220px;height:14px;border:1px solid #bbb;border-radius:2px;background:linear-gradient(to right,%STOPS%)}
.ticks{display:flex;justify-content:space-between;width:222px;font-size:11px;color:#555}
table.stats{border-collapse:collapse;font-size:13px;margin-bottom:16px;background:#fff}
table.stats td,table.stats th{border:1px solid #ddd;padding:3px 10px;text-align:right}
table.stats th{background:#f0f0f0}
.sample{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px 12px;margin-bottom:10px}
.sh{font-size:12px;color:#666;margin-bottom:4px}
.txt{font-size:16px;line-height:2.0;white-space:pre-wrap;word-wrap:break-word}
.t{padding:2px 0;border-radius:2px;box-shadow:inset -1px 0 0 rgba(0,0,0,.10)}
.k1{text-decoration:underline;text-decoration-color:#1d4ed8;text-decoration-thickness:3px;
 text-underline-offset:4px;text-decoration-skip-ink:none}
.km1{font-style:italic;opacity:.65}
.kn{color:#999}
.ex{padding:1px 5px;border:1px solid #ccc;border-radius:3px;background:#fff}
"""


def render_heatmap(records: Sequence[Mapping], method: str, benchmark: str = "", max_samples: int = 200,
                   vmax: Optional[float] = None) -> str:
    """Self-contained HTML: tokens on a white -> red background by weight (0 -> ``vmax``,
    default the largest finite weight shown), ground-truth forget-specific tokens underlined,
    ignored tokens in grey italics, hover for the exact weight and kind."""
    shown = list(records)[:max_samples]
    ws = [w for r in shown for w in r["weights"] if math.isfinite(w)]
    if vmax is None:
        vmax = max(ws) if ws and max(ws) > 0 else 1.0
    esc = lambda s: html.escape(str(s), quote=True)  # noqa: E731

    # summary over shown samples: mean weight by kind, AUROC(weight -> forget-specific)
    by_kind: Dict[int, List[float]] = {}
    scores, labels = [], []
    for r in shown:
        for w, k in zip(r["weights"], r["kinds"]):
            if not math.isfinite(w):
                continue
            by_kind.setdefault(k, []).append(w)
            if k in (KIND_TEMPLATE, KIND_SPECIFIC, KIND_SHARED):
                scores.append(w)
                labels.append(k == KIND_SPECIFIC)
    auroc_value = auroc(scores, labels)

    title = f"Token weights — {method}" + (f" on {benchmark}" if benchmark else "")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title>",
             "<style>" + _HEATMAP_CSS.replace("%STOPS%", ",".join(_STOPS)) + "</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f'<div class="meta">{len(shown)} of {len(records)} sample(s) shown · color scale 0 → '
             f"{esc(f'{vmax:.3g}')} (weights above are clipped) · AUROC of weights for "
             f"forget-specific vs other labelled tokens: "
             f"<b>{esc('n/a' if auroc_value is None else f'{auroc_value:.3f}')}</b></div>"]
    parts.append(
        '<div class="legend"><div><div class="bar"></div><div class="ticks"><span>0</span>'
        f"<span>{esc(f'{vmax / 2:.3g}')}</span><span>{esc(f'{vmax:.3g}')}</span></div></div>"
        '<div><span class="ex k1">forget</span> underlined = ground-truth forget-specific</div>'
        '<div><span class="ex km1">name</span> italic = ignored (no label)</div>'
        "<div>hover a token for its weight and kind</div></div>")
    parts.append('<table class="stats"><tr><th style="text-align:left">label</th><th>tokens</th>'
                 "<th>mean weight</th></tr>")
    for k in (KIND_SPECIFIC, KIND_TEMPLATE, KIND_SHARED, KIND_IGNORE):
        v = by_kind.get(k, [])
        mean = format_value(math.fsum(v) / len(v)) if v else "n/a"
        parts.append(f'<tr><td style="text-align:left">{esc(KIND_LABELS[k])}</td><td>{len(v)}</td>'
                     f"<td>{esc(mean)}</td></tr>")
    parts.append("</table>")

    for r in shown:
        n = len(r["tokens"])
        spec = [w for w, k in zip(r["weights"], r["kinds"]) if k == KIND_SPECIFIC and math.isfinite(w)]
        other = [w for w, k in zip(r["weights"], r["kinds"]) if k in (KIND_TEMPLATE, KIND_SHARED)
                 and math.isfinite(w)]
        info = f"sample {esc(r['sample'])}" + (f" · step {esc(r['step'])}" if r.get("step") is not None else "") \
            + f" · {n} tokens"
        if spec and other:
            info += (f" · mean weight forget-specific {esc(format_value(sum(spec) / len(spec)))}"
                     f" vs other {esc(format_value(sum(other) / len(other)))}")
        toks = []
        for tok, w, k in zip(r["tokens"], r["weights"], r["kinds"]):
            shown_tok = _display_token(tok)
            # leading whitespace stays uncolored, so word boundaries remain visible
            body = shown_tok.lstrip()
            lead = shown_tok[: len(shown_tok) - len(body)] if body else ""
            if lead:
                toks.append(esc(lead))
                shown_tok = body
            text = esc(shown_tok)
            tip = esc(f"w = {w:.4g} · {KIND_LABELS.get(k, f'kind {k}')}")
            if k == KIND_NONE or not math.isfinite(w):
                toks.append(f'<span class="t kn" title="{tip}">{text}</span>')
                continue
            t = w / vmax if vmax > 0 else 0.0
            fg = "#ffffff" if t > 0.62 else "#111111"
            cls = "t k1" if k == KIND_SPECIFIC else ("t km1" if k == KIND_IGNORE else "t")
            toks.append(f'<span class="{cls}" style="background:{weight_color(t)};color:{fg}" '
                        f'title="{tip}">{text}</span>')
        parts.append(f'<div class="sample"><div class="sh">{info}</div><div class="txt">{"".join(toks)}'
                     "</div></div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_heatmap(records, out_path: Union[str, Path], method: str, benchmark: str = "",
                  max_samples: int = 200, vmax: Optional[float] = None, all_steps: bool = False) -> Path:
    """Read records (JSONL path or dicts) and write the heatmap; by default only the last
    logged step of each sample is shown (``all_steps=True``: every record)."""
    recs = read_token_records(records)
    if not all_steps:
        recs = latest_per_sample(recs)
    return atomic_write_text(out_path, render_heatmap(recs, method, benchmark, max_samples, vmax))


# ----------------------------------------------------------------------------- all reports


def write_reports(results: Union[str, Path, Mapping], out_dir: Union[str, Path],
                  metrics: Optional[Sequence[MetricSpec]] = None,
                  token_weights: Optional[Mapping[str, Mapping[str, Union[str, Path]]]] = None,
                  title: Optional[str] = None) -> Dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv``, ``tradeoff.png`` and
    ``heatmap_<method>.html`` into ``out_dir``.

    One benchmark: everything in ``out_dir``. Several: per benchmark, the same files in
    ``out_dir/<benchmark>/``, plus a combined ``leaderboard.md`` (one section per benchmark)
    and ``leaderboard.csv`` (``benchmark`` column) in ``out_dir``.
    ``token_weights[benchmark][method]`` is the JSONL of per-token records for the heatmap.
    Returns ``{relative name: path}`` of what was written."""
    benches = load_results(results)
    out_dir = Path(out_dir)
    metrics = list(metrics) if metrics else default_metrics(benches)
    if title is None:
        raw = results
        if not isinstance(raw, Mapping):
            raw = json.loads(Path(results).read_text(encoding="utf-8"))  # valid: load_results passed
        title = f"Leaderboard: {raw['name']}" if isinstance(raw.get("name"), str) else "Leaderboard"
    token_weights = token_weights or {}
    written: Dict[str, Path] = {}
    multi = len(benches) > 1
    links: Dict[str, Dict[str, str]] = {}
    for b in benches:
        sub = out_dir / b["benchmark"] if multi else out_dir
        prefix = f"{b['benchmark']}/" if multi else ""
        links[b["benchmark"]] = {}
        png = plot_tradeoff(b, sub / "tradeoff.png", title=f"{title} — {b['benchmark']}")
        if png is not None:
            written[prefix + "tradeoff.png"] = png
            links[b["benchmark"]]["forget quality vs model utility"] = prefix + "tradeoff.png"
        if b.get("matched"):
            from atwu_plugin.leaderboard.matched import plot_matched

            curves = plot_matched(b, sub / "matched.png", title=f"{title} — {b['benchmark']}: matched forgetting")
            if curves is not None:
                written[prefix + "matched.png"] = curves
                links[b["benchmark"]]["trade-off curves along training (matched forgetting)"] = prefix + "matched.png"
        for method, path in (token_weights.get(b["benchmark"]) or {}).items():
            name = f"heatmap_{method}.html"
            written[prefix + name] = write_heatmap(path, sub / name, method, b["benchmark"])
            links[b["benchmark"]][f"token weights: {method}"] = prefix + name
        if multi:
            local = {k: v[len(prefix):] for k, v in links[b["benchmark"]].items()}
            written[prefix + "leaderboard.md"] = atomic_write_text(
                sub / "leaderboard.md", render_markdown([b], metrics, f"{title} — {b['benchmark']}",
                                                        {b["benchmark"]: local}))
            written[prefix + "leaderboard.csv"] = atomic_write_text(sub / "leaderboard.csv", render_csv([b], metrics))
    written["leaderboard.md"] = atomic_write_text(out_dir / "leaderboard.md",
                                                  render_markdown(benches, metrics, title, links))
    written["leaderboard.csv"] = atomic_write_text(out_dir / "leaderboard.csv", render_csv(benches, metrics))
    return written
