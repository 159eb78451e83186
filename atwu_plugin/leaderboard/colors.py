"""One colour per method, the same in every plot of a benchmark: methods are coloured in the
order they first appear in the benchmark's runs (the spec's order)."""

from typing import Dict, Mapping


def method_colors(bench: Mapping) -> Dict[str, tuple]:
    """``{method: RGBA}``: tab10 up to 10 methods, tab20 up to 20 (distinct colours, not
    line styles, tell methods apart), evenly spaced hues of ``hsv`` beyond."""
    from matplotlib import colormaps

    methods = list(dict.fromkeys(r["method"] for r in bench.get("runs", [])))
    n = len(methods)
    if n <= 10:
        cmap = colormaps["tab10"]
        return {m: cmap(i) for i, m in enumerate(methods)}
    if n <= 20:
        # tab20 pairs a dark and a light shade: take the dark ones first so that the first 10
        # methods are as far apart as possible
        cmap = colormaps["tab20"]
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return {m: cmap(order[i]) for i, m in enumerate(methods)}
    cmap = colormaps["hsv"]
    return {m: cmap(i / n) for i, m in enumerate(methods)}
