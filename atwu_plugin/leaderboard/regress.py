"""Regression check of reported scores against a reference file (the ``atwu-regress`` logic).

Reference file (``REF.json``)::

    {
      "schema": "atwu-reference/1",
      "tolerances": {"default": 0.05, "forget_quality": 0.1, "kl_to_retain": 0.02},
      "benchmarks": {
        "synthetic": {
          "ATWU":     {"forget_quality": 0.41, "model_utility": 0.52, "span_auroc": 0.93},
          "GradDiff": {"forget_quality": 0.003, "model_utility": 0.47, "span_auroc": null}
        }
      }
    }

* Values are means over seeds (the statistic the leaderboard reports); ``null`` means "the
  method reports no value" (e.g. ``span_auroc`` without token weights) and must stay null.
* ``tolerances`` are absolute: a score passes when ``|mean - reference| <= tol``. The
  tolerance of a metric is, in order: ``tolerances[metric]``; ``--tol`` on the command line;
  ``tolerances["default"]``; 0.05. (So ``--tol`` changes the fallback, never a tolerance
  that the reference file sets explicitly for a metric.)
* Only what the reference lists is checked: benchmarks, methods and metrics in the results
  but not in the reference are reported as "not checked" and never fail the check; those in
  the reference but missing from the results are an error (exit 2).

Results may be a one-benchmark ``results.json`` or the combined ``{"benchmarks": [...]}``.

Exit codes: 0 all within tolerance; 1 drift (a table names benchmark/method/metric);
2 unreadable or malformed files, or results missing a benchmark/method/metric of the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from atwu_plugin.leaderboard.report import ResultsError, finite_values, load_results, method_order
from atwu_plugin.utils.atomic import atomic_write_json
from atwu_plugin.utils.jsonfile import read_json

__all__ = [
    "RegressionError",
    "Comparison",
    "RegressReport",
    "DEFAULT_TOL",
    "SCHEMA",
    "load_reference",
    "mean_scores",
    "make_reference",
    "compare",
    "tolerance_for",
]

SCHEMA = "atwu-reference/1"
DEFAULT_TOL = 0.05


class RegressionError(ValueError):
    """Malformed/mismatched inputs (exit 2); one line naming the file and the problem."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_reference(path: Union[str, Path]) -> Dict[str, Any]:
    """Read and validate a reference file."""
    return validate_reference(read_json(path, RegressionError), str(path))


def validate_reference(data: Any, name: str = "<reference>") -> Dict[str, Any]:
    if not isinstance(data, Mapping):
        raise RegressionError(f"{name}: top level is {type(data).__name__}; expected an object with "
                              "'tolerances' and 'benchmarks'")
    unknown = [k for k in data if k not in ("schema", "tolerances", "benchmarks", "comment")]
    if unknown:
        raise RegressionError(f"{name}: unknown key {unknown[0]!r}; expected schema, tolerances, benchmarks")
    tol = data.get("tolerances", {})
    if not isinstance(tol, Mapping):
        raise RegressionError(f"{name}: 'tolerances' is {type(tol).__name__}; expected {{metric: abs_tol}}")
    for k, v in tol.items():
        if not _is_number(v) or not math.isfinite(v) or v < 0:
            raise RegressionError(f"{name}: tolerances.{k} is {v!r}; expected a non-negative number")
    benches = data.get("benchmarks")
    if not isinstance(benches, Mapping) or not benches:
        raise RegressionError(f"{name}: 'benchmarks' is {benches!r:.60}; expected a non-empty "
                              "{benchmark: {method: {metric: value}}}")
    for b, methods in benches.items():
        if not isinstance(methods, Mapping) or not methods:
            raise RegressionError(f"{name}: benchmarks.{b} is {methods!r:.60}; expected {{method: {{metric: value}}}}")
        for m, metrics in methods.items():
            if not isinstance(metrics, Mapping) or not metrics:
                raise RegressionError(f"{name}: benchmarks.{b}.{m} is {metrics!r:.60}; expected {{metric: value}}")
            for k, v in metrics.items():
                if v is not None and (not _is_number(v) or not math.isfinite(v)):
                    raise RegressionError(f"{name}: benchmarks.{b}.{m}.{k} is {v!r}; expected a number or null")
    return {"schema": data.get("schema", SCHEMA), "tolerances": dict(tol),
            "benchmarks": {b: {m: dict(ms) for m, ms in methods.items()} for b, methods in benches.items()}}


def mean_scores(results: Union[str, Path, Mapping], source: Optional[str] = None
                ) -> Dict[str, Dict[str, Dict[str, Optional[float]]]]:
    """``{benchmark: {method: {metric: mean over seeds or None}}}`` (None: no finite value)."""
    try:
        benches = load_results(results, source)
    except ResultsError as e:
        raise RegressionError(str(e)) from None
    out: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
    for b in benches:
        per_method = out.setdefault(b["benchmark"], {})
        for m in method_order(b):
            runs = [r for r in b["runs"] if r["method"] == m]
            names: List[str] = []
            for r in runs:
                names += [k for k in r["metrics"] if k not in names]
            scores = {}
            for k in names:
                vals = finite_values(runs, k)
                scores[k] = math.fsum(vals) / len(vals) if vals else None
            per_method[m] = scores
    return out


def make_reference(results: Union[str, Path, Mapping], tolerances: Optional[Mapping[str, float]] = None,
                   metrics: Optional[List[str]] = None) -> Dict[str, Any]:
    """A reference object from results (means over seeds of every metric, or of ``metrics``)."""
    scores = mean_scores(results)
    tol = dict(tolerances) if tolerances else {"default": DEFAULT_TOL}
    benches = {}
    for b, methods in scores.items():
        benches[b] = {}
        for m, ms in methods.items():
            benches[b][m] = {k: v for k, v in ms.items() if metrics is None or k in metrics}
    return validate_reference({"schema": SCHEMA, "tolerances": tol, "benchmarks": benches})


def tolerance_for(metric: str, tolerances: Mapping[str, float], cli_tol: Optional[float] = None) -> float:
    if metric in tolerances:
        return float(tolerances[metric])
    if cli_tol is not None:
        return float(cli_tol)
    return float(tolerances.get("default", DEFAULT_TOL))


@dataclass
class Comparison:
    benchmark: str
    method: str
    metric: str
    value: Optional[float]
    reference: Optional[float]
    tol: float

    @property
    def delta(self) -> Optional[float]:
        if self.value is None or self.reference is None:
            return None
        return self.value - self.reference

    @property
    def ok(self) -> bool:
        if self.value is None or self.reference is None:
            return self.value is None and self.reference is None
        return abs(self.value - self.reference) <= self.tol + 1e-12 * max(1.0, abs(self.reference))


@dataclass
class RegressReport:
    comparisons: List[Comparison] = field(default_factory=list)
    unchecked: List[str] = field(default_factory=list)

    @property
    def drifted(self) -> List[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    @property
    def exit_code(self) -> int:
        return 1 if self.drifted else 0


def compare(reference: Mapping[str, Any], results: Union[str, Path, Mapping], cli_tol: Optional[float] = None,
            results_name: str = "<results>") -> RegressReport:
    """Compare every (benchmark, method, metric) of ``reference`` with the results' mean over
    seeds. Raises RegressionError when the results lack something the reference lists."""
    scores = mean_scores(results, None if not isinstance(results, Mapping) else results_name)
    name = str(results) if not isinstance(results, Mapping) else results_name
    report = RegressReport()
    tols = reference.get("tolerances", {})
    for b, methods in reference["benchmarks"].items():
        if b not in scores:
            raise RegressionError(f"{name}: benchmark {b!r} of the reference is missing "
                                  f"(results have: {', '.join(scores) or 'none'})")
        for m, metrics in methods.items():
            if m not in scores[b]:
                raise RegressionError(f"{name}: benchmark {b!r}: method {m!r} of the reference is missing "
                                      f"(results have: {', '.join(scores[b]) or 'none'})")
            for k, ref in metrics.items():
                if k not in scores[b][m]:
                    raise RegressionError(f"{name}: benchmark {b!r}, method {m!r}: metric {k!r} of the "
                                          "reference is missing")
                report.comparisons.append(Comparison(b, m, k, scores[b][m][k], ref, tolerance_for(k, tols, cli_tol)))
        for m in scores[b]:
            if m not in methods:
                report.unchecked.append(f"{b}/{m}")
    for b in scores:
        if b not in reference["benchmarks"]:
            report.unchecked.append(f"{b} (benchmark)")
    return report


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "null"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.4e}"
    return f"{x:.6f}"


def _fmt_delta(c: Comparison) -> str:
    d = c.delta
    if d is None:
        return "n/a"
    return ("+" if d >= 0 else "") + _fmt(d)


def _status(c: Comparison) -> str:
    if c.ok:
        return "ok"
    if c.reference is None:
        return "DRIFT (reference is null)"
    if c.value is None:
        return "DRIFT (now null)"
    return "DRIFT"


def format_table(comparisons: List[Comparison]) -> str:
    """Fixed-width table: benchmark, method, metric, value, reference, delta, tol, status."""
    head = ("benchmark", "method", "metric", "value", "reference", "delta", "tol", "status")
    rows = [head] + [(c.benchmark, c.method, c.metric, _fmt(c.value), _fmt(c.reference), _fmt_delta(c),
                      _fmt(c.tol), _status(c)) for c in comparisons]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {3, 4, 5, 6}
    lines = []
    for j, r in enumerate(rows):
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(head))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def update_reference(ref_path: Union[str, Path], results: Union[str, Path, Mapping],
                     cli_tol: Optional[float] = None) -> Tuple[Dict[str, Any], int, List[str]]:
    """Rewrite ``ref_path`` (atomically) from ``results``, keeping its tolerances (or creating
    ``{"default": cli_tol or 0.05}`` when there is no readable reference yet). Keeps the
    reference's selection of metrics when it has one for a method; new methods get all
    metrics. Returns (new reference, number of scores that changed or were added, entries of
    the old reference that the results no longer have and were dropped)."""
    ref_path = Path(ref_path)
    old: Optional[Dict[str, Any]] = None
    if ref_path.exists():
        old = load_reference(ref_path)  # a malformed reference is an error, not silently replaced
    tolerances = dict(old["tolerances"]) if old else {"default": cli_tol if cli_tol is not None else DEFAULT_TOL}
    new = make_reference(results, tolerances)
    changed = 0
    if old:
        for b, methods in new["benchmarks"].items():
            for m, metrics in methods.items():
                kept = old["benchmarks"].get(b, {}).get(m)
                if kept:
                    metrics = {k: v for k, v in metrics.items() if k in kept} or metrics
                    methods[m] = metrics
                for k, v in metrics.items():
                    if kept is None or k not in kept or kept[k] != v:
                        changed += 1
    else:
        changed = sum(len(ms) for methods in new["benchmarks"].values() for ms in methods.values())
    dropped = []
    if old:
        for b, methods in old["benchmarks"].items():
            for m, metrics in methods.items():
                for k in metrics:
                    if k not in new["benchmarks"].get(b, {}).get(m, {}):
                        dropped.append(f"{b}/{m}/{k}")
    atomic_write_json(ref_path, new)
    return new, changed, dropped
