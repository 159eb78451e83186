"""Leaderboard reports from ``results.json``: Markdown/CSV tables, trade-off plot, token heatmaps.

One module per concern, re-exported here: :mod:`~atwu_plugin.leaderboard.results` (reading and
validating ``results.json``), :mod:`~atwu_plugin.leaderboard.stats` (means, stds, ranks, Pareto
front), :mod:`~atwu_plugin.leaderboard.tables` (Markdown, CSV),
:mod:`~atwu_plugin.leaderboard.tradeoff_plot` (PNG) and :mod:`~atwu_plugin.leaderboard.heatmap`
(HTML). :func:`write_reports` writes them all for a results file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

from atwu_plugin.leaderboard.heatmap import latest_per_sample, read_token_records, render_heatmap, write_heatmap
from atwu_plugin.leaderboard.results import ResultsError, load_results
from atwu_plugin.leaderboard.spec import MetricSpec
from atwu_plugin.leaderboard.stats import (
    PARETO_X, PARETO_Y, MethodSummary, Stat, default_metrics, pareto_front, shows_tradeoff, summarize,
)
from atwu_plugin.leaderboard.tables import format_mean_std, format_value, render_csv, render_markdown
from atwu_plugin.leaderboard.tradeoff_plot import plot_tradeoff
from atwu_plugin.utils.atomic import atomic_write_text

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
        png = (plot_tradeoff(b, sub / "tradeoff.png", title=f"{title} — {b['benchmark']}")
               if shows_tradeoff(metrics) else None)
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
