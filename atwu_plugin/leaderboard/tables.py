"""Leaderboard tables: Markdown (mean ± std, rank, best in bold, ★ Pareto) and CSV (full precision).

The std is ``–`` in Markdown and empty in CSV when undefined (one seed); see
:mod:`atwu_plugin.leaderboard.stats` for the statistics.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Mapping, Optional, Sequence

from atwu_plugin.leaderboard.spec import MetricSpec
from atwu_plugin.leaderboard.stats import PARETO_X, PARETO_Y, STAR, MethodSummary, shows_tradeoff, summarize


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


def render_markdown_table(rows: Sequence[MethodSummary], metrics: Sequence[MetricSpec], stars: bool = True) -> str:
    head = ["Method", "Seeds"] + [f"{_md_escape(m.display)} {_arrow(m)}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---", "---:"] + ["---:"] * len(metrics)) + "|"]
    for r in rows:
        cells = [(f"{STAR} " if stars and r.pareto else "") + _md_escape(r.method), str(len(r.seeds))]
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
    stars = shows_tradeoff(metrics)
    out.append(
        f"Mean ± sample std over seeds (the number of seeds is in *Seeds*); (k) = rank for that "
        f"metric, **bold** = best; ↑/↓ = higher/lower is better; n/a = not reported."
        + (f" {STAR} = Pareto-optimal on ({PARETO_X} ↑, {PARETO_Y} ↑)." if stars else "")
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
        out.append(render_markdown_table(rows, metrics, stars=stars))
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
