"""Read and validate a leaderboard's ``results.json``.

``results.json`` comes in two shapes, both accepted everywhere (:func:`load_results`):

* one benchmark: ``{"benchmark": str, "model": str, "runs": [run, ...]}``
* several: ``{"name": str, "benchmarks": [<one-benchmark object>, ...]}``

with ``run = {"method", "seed", "config", "metrics": {name: float | null}, "wall_s"}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from atwu_plugin.utils.jsonfile import read_json


class ResultsError(ValueError):
    """Malformed results; the message is one line naming the file and the problem."""


def is_number(x: Any) -> bool:
    """A JSON number (bool is not)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_finite_number(x: Any) -> bool:
    """A JSON number that is not NaN or infinite."""
    return is_number(x) and math.isfinite(x)


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
                if v is not None and not is_number(v):
                    raise ResultsError(f"{name}: {rw}.metrics.{k} is {v!r}; expected a number or null")
        bench = {"benchmark": bname, "model": b.get("model", ""), "runs": list(runs)}
        if isinstance(b.get("matched"), Mapping):
            bench["matched"] = dict(b["matched"])
        out.append(bench)
    return out
