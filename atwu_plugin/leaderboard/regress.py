"""Regression check of reported scores against a reference file (the ``atwu-regress`` logic).

Reference file (``REF.json``, written by ``atwu-regress --update``)::

    {
      "schema": "atwu-reference/2",
      "provenance": {"spec_hash": "9f2c...", "atwu_plugin": "0.3.0", "torch": "2.13.0",
                     "transformers": "4.57.1", "python": "3.12.3", "results": "outputs/.../results.json"},
      "tolerances": {
        "forget_quality": {"kind": "log10", "tol": 0.25},
        "forget_prob":    {"kind": "relative", "tol": 0.02},
        "model_utility":  {"kind": "absolute", "tol": 0.005}
      },
      "benchmarks": {
        "embedded": {
          "ATWU":  {"seeds": [0, 1, 2], "metrics": {"forget_quality": 1.8e-19, "forget_prob": 0.034,
                                                    "model_utility": 0.72, "span_auroc": 0.96}},
          "NPO":   {"seeds": [0, 1, 2], "metrics": {"forget_quality": 3.2e-33, "span_auroc": null}}
        }
      }
    }

* Values are means over ``seeds`` (the statistic the leaderboard reports); ``null`` means "the
  method reports no value" (e.g. ``span_auroc`` without token weights) and must stay null.
* Tolerance kinds (the distance between a result ``x`` and the reference ``r``):

  ``absolute``  ``|x - r|``: bounded scores on a fixed scale (ROUGE, AUROC, model utility);
  ``relative``  ``|x - r| / |r|``: probabilities and other positive quantities whose scale
                varies by orders of magnitude between methods (a holdout probability of 0.02
                must not get the same slack as a retain probability of 0.9), and KL;
  ``log10``     ``|log10 x - log10 r|`` in decades: p-values such as ``forget_quality``
                (KS test), which span 1e-65 .. 1; values <= 1e-300 count as 1e-300;
  ``none``      not checked and never stored: wall-clock timings (``train_s``, ``*_s``).

  A score passes when ``distance <= tol``; the table shows ``distance / tol`` ("x tol"). The
  defaults (:data:`DEFAULT_TOLERANCES`) were set from measured spread; see
  docs/regression.md for the measurements and the rule.
* The tolerance of a metric is, in order: ``tolerances[metric]``; ``--tol`` (with the
  metric's default kind); ``tolerances["default"]``; the built-in default for the metric.
* Every seed of the reference must be in the results with a finite value of every metric the
  reference gives a number for: a missing run, a missing value, null or NaN in any one seed is
  a failure naming benchmark, method, seed and metric (a mean over the remaining seeds would
  hide it). Seeds beyond the reference's are reported as not checked.
* Only what the reference lists is checked: benchmarks, methods and metrics in the results
  but not in the reference are reported as "not checked" and never fail the check; a
  benchmark, method or metric of the reference absent from all of the results is an error
  (exit 2).

Version 1 files (``"atwu-reference/1"``: tolerances as plain numbers, metrics directly under
the method, no seeds) are still read: a number is an ``absolute`` tolerance, and the seeds are
those the results have.

Results may be a one-benchmark ``results.json`` or the combined ``{"benchmarks": [...]}``.

Exit codes: 0 all within tolerance; 1 drift or a failed seed (a table names them);
2 unreadable or malformed files, results missing a benchmark/method/metric of the reference,
or ``--update`` refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from atwu_plugin.leaderboard.results import ResultsError, is_finite_number, is_number, load_results
from atwu_plugin.leaderboard.stats import finite_values, method_order
from atwu_plugin.utils import portable_numerics
from atwu_plugin.utils.atomic import atomic_write_json
from atwu_plugin.utils.jsonfile import read_json

__all__ = [
    "RegressionError",
    "Comparison",
    "RegressReport",
    "SCHEMA",
    "KINDS",
    "DEFAULT_TOLERANCES",
    "load_reference",
    "mean_scores",
    "make_reference",
    "compare",
    "distance",
    "tolerance_for",
    "tolerance_spec",
    "update_reference",
    "UpdateRefused",
]

SCHEMA = "atwu-reference/2"
SCHEMAS = ("atwu-reference/1", SCHEMA)
KINDS = ("absolute", "relative", "log10", "none")
LOG10_FLOOR = 1e-300

# Built-in tolerances: (kind, tol), from the spread measured by tests/regression/measure_spread.py
# on the quick spec (seeds 0-2; AVX-512 vs AVX2 kernels): a quarter of the smallest per-method
# seed standard deviation, rounded down to one digit, each >= 1000x the cross-setup round-off.
# docs/regression.md has the measurements and the rule.
DEFAULT_TOLERANCES: Dict[str, Tuple[str, float]] = {
    "forget_quality": ("log10", 0.04),
    "model_utility": ("absolute", 0.0005),
    "forget_rouge": ("absolute", 0.004),
    "retain_rouge": ("absolute", 0.002),
    "world_rouge": ("absolute", 0.0001),
    "forget_truth_ratio": ("absolute", 0.001),
    "retain_truth_ratio": ("absolute", 0.001),
    "world_truth_ratio": ("absolute", 0.0003),
    "forget_prob": ("relative", 0.003),
    "retain_prob": ("relative", 0.005),
    "world_prob": ("relative", 0.0006),
    "holdout_prob": ("relative", 0.006),
    "forget_specific_prob": ("relative", 0.01),
    "forget_generic_prob": ("relative", 0.003),
    "forget_template_prob": ("relative", 0.004),
    "forget_shared_prob": ("relative", 0.01),
    "kl_to_retain": ("relative", 0.005),
    "kl_to_retain_specific": ("relative", 0.01),
    "kl_to_retain_generic": ("relative", 0.004),
    "holdout_kl_to_retain": ("relative", 0.003),
    "span_auroc": ("absolute", 0.0003),
    "span_ap": ("absolute", 0.00009),
    "span_precision_at_k": ("absolute", 0.00008),
    "span_n_pos": ("absolute", 0.0),  # token counts: no seed moves them; any change is a data change
    "span_n_neg": ("absolute", 0.0),
}
# metrics no default covers, by kind (see default_kind)
FALLBACK_TOL = {"absolute": 0.01, "relative": 0.02, "log10": 0.25}


class RegressionError(ValueError):
    """Malformed/mismatched inputs (exit 2); one line naming the file and the problem."""


class UpdateRefused(RegressionError):
    """``--update`` would make the reference weaker (fewer seeds) or record a failed run."""


def is_timing(metric: str) -> bool:
    """Wall-clock measurements (``train_s``, ``wall_s``, ``eval_seconds``): never compared."""
    return metric.endswith(("_s", "_seconds", "_sec")) or metric in ("time", "runtime")


def default_kind(metric: str) -> str:
    if metric in DEFAULT_TOLERANCES:
        return DEFAULT_TOLERANCES[metric][0]
    if is_timing(metric):
        return "none"
    name = metric.lower()
    if "p_value" in name or "pvalue" in name:
        return "log10"
    if name.endswith("_prob") or name.startswith("kl") or "_kl" in name:
        return "relative"
    return "absolute"


def default_tolerance(metric: str) -> Tuple[str, float]:
    if metric in DEFAULT_TOLERANCES:
        return DEFAULT_TOLERANCES[metric]
    kind = default_kind(metric)
    return kind, FALLBACK_TOL.get(kind, 0.0)


# ----------------------------------------------------------------------------- reference files


def _read(path: Union[str, Path], error=RegressionError) -> Any:
    return read_json(path, error)


def load_reference(path: Union[str, Path]) -> Dict[str, Any]:
    """Read and validate a reference file (either schema); returns the version-2 form."""
    return validate_reference(_read(path), str(path))


def _tolerance_entry(name: str, key: str, v: Any) -> Dict[str, Any]:
    if is_number(v):  # version 1: a plain absolute tolerance
        v = {"kind": "absolute", "tol": v}
    if not isinstance(v, Mapping) or set(v) - {"kind", "tol", "basis"} or "kind" not in v:
        raise RegressionError(f"{name}: tolerances.{key} is {v!r:.80}; expected "
                              '{"kind": "absolute|relative|log10|none", "tol": number}')
    if v["kind"] not in KINDS:
        raise RegressionError(f"{name}: tolerances.{key}.kind is {v['kind']!r}; expected one of {', '.join(KINDS)}")
    tol = v.get("tol", 0.0 if v["kind"] == "none" else None)
    if not is_finite_number(tol) or tol < 0:
        raise RegressionError(f"{name}: tolerances.{key}.tol is {tol!r}; expected a non-negative number")
    return {**v, "tol": float(tol)}


def validate_reference(data: Any, name: str = "<reference>") -> Dict[str, Any]:
    if not isinstance(data, Mapping):
        raise RegressionError(f"{name}: top level is {type(data).__name__}; expected an object with "
                              "'tolerances' and 'benchmarks'")
    unknown = [k for k in data if k not in ("schema", "tolerances", "benchmarks", "comment", "provenance")]
    if unknown:
        raise RegressionError(f"{name}: unknown key {unknown[0]!r}; expected schema, provenance, tolerances, benchmarks")
    schema = data.get("schema", SCHEMAS[0])
    if schema not in SCHEMAS:
        raise RegressionError(f"{name}: schema is {schema!r}; expected one of {', '.join(SCHEMAS)}")
    tol = data.get("tolerances", {})
    if not isinstance(tol, Mapping):
        raise RegressionError(f"{name}: 'tolerances' is {type(tol).__name__}; expected {{metric: {{kind, tol}}}}")
    tolerances = {k: _tolerance_entry(name, k, v) for k, v in tol.items()}
    prov = data.get("provenance", {})
    if not isinstance(prov, Mapping):
        raise RegressionError(f"{name}: 'provenance' is {type(prov).__name__}; expected an object")
    benches = data.get("benchmarks")
    if not isinstance(benches, Mapping) or not benches:
        raise RegressionError(f"{name}: 'benchmarks' is {benches!r:.60}; expected a non-empty "
                              "{benchmark: {method: {seeds: [...], metrics: {metric: value}}}}")
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for b, methods in benches.items():
        if not isinstance(methods, Mapping) or not methods:
            raise RegressionError(f"{name}: benchmarks.{b} is {methods!r:.60}; expected {{method: {{seeds, metrics}}}}")
        out[b] = {}
        for m, entry in methods.items():
            where = f"benchmarks.{b}.{m}"
            if schema == SCHEMAS[0]:
                entry = {"seeds": None, "metrics": entry}
            if not isinstance(entry, Mapping) or set(entry) - {"seeds", "metrics"}:
                raise RegressionError(f"{name}: {where} is {entry!r:.60}; expected {{\"seeds\": [...], \"metrics\": {{...}}}}")
            seeds = entry.get("seeds")
            if seeds is not None and (not isinstance(seeds, list) or not seeds or
                                      not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
                raise RegressionError(f"{name}: {where}.seeds is {seeds!r:.60}; expected a non-empty list of integers")
            metrics = entry.get("metrics")
            if not isinstance(metrics, Mapping) or not metrics:
                raise RegressionError(f"{name}: {where}.metrics is {metrics!r:.60}; expected {{metric: value}}")
            for k, v in metrics.items():
                if v is not None and not is_finite_number(v):
                    raise RegressionError(f"{name}: {where}.metrics.{k} is {v!r}; expected a number or null")
            out[b][m] = {"seeds": sorted(seeds) if seeds is not None else None, "metrics": dict(metrics)}
    return {"schema": SCHEMA, "provenance": dict(prov), "tolerances": tolerances, "benchmarks": out}


def tolerance_spec(reference: Mapping[str, Any], metric: str, cli_tol: Optional[float] = None) -> Tuple[str, float]:
    """(kind, tol) of ``metric``: the reference's entry; ``cli_tol`` (``--tol``) with the
    metric's default kind; the reference's ``default``; the built-in default."""
    tols = reference.get("tolerances", {})
    if metric in tols:
        return tols[metric]["kind"], tols[metric]["tol"]
    if is_timing(metric):
        return "none", 0.0
    if cli_tol is not None:
        return default_kind(metric), float(cli_tol)
    if "default" in tols:
        return tols["default"]["kind"], tols["default"]["tol"]
    return default_tolerance(metric)


def tolerance_for(metric: str, tolerances: Mapping[str, Any], cli_tol: Optional[float] = None) -> float:
    """The tolerance value of ``metric`` (see :func:`tolerance_spec`); ``tolerances`` as in a file."""
    ref = {"tolerances": {k: _tolerance_entry("<tolerances>", k, v) for k, v in tolerances.items()}}
    return tolerance_spec(ref, metric, cli_tol)[1]


def distance(kind: str, value: float, reference: float) -> float:
    """How far ``value`` is from ``reference`` in the units of ``kind`` (see module doc)."""
    if kind == "absolute":
        return abs(value - reference)
    if kind == "relative":
        if reference == 0:
            return 0.0 if value == 0 else math.inf
        return abs(value - reference) / abs(reference)
    if kind == "log10":
        return abs(math.log10(max(value, LOG10_FLOOR)) - math.log10(max(reference, LOG10_FLOOR)))
    raise ValueError(f"no distance for tolerance kind {kind!r}")


# ----------------------------------------------------------------------------- results


def _load_benches(results: Union[str, Path, Mapping], source: Optional[str] = None) -> List[Dict[str, Any]]:
    try:
        if not isinstance(results, Mapping):
            results = _read(results, ResultsError)
        return load_results(results, source)
    except ResultsError as e:
        raise RegressionError(str(e)) from None


def _runs_by_method(bench: Mapping) -> Dict[str, Dict[int, Mapping[str, Any]]]:
    out: Dict[str, Dict[int, Mapping[str, Any]]] = {}
    for r in bench["runs"]:
        out.setdefault(r["method"], {})[r["seed"]] = r["metrics"]
    return out


def mean_scores(results: Union[str, Path, Mapping], source: Optional[str] = None
                ) -> Dict[str, Dict[str, Dict[str, Optional[float]]]]:
    """``{benchmark: {method: {metric: mean over seeds or None}}}`` (None: no finite value)."""
    out: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
    for b in _load_benches(results, source or (None if isinstance(results, Mapping) else str(results))):
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


def results_spec_hash(results: Union[str, Path, Mapping]) -> str:
    """sha256 of the resolved cell configs behind ``results`` (benchmark options, trainer,
    overrides, host: what the leaderboard hashes per cell) without their seeds (the reference
    lists those), each once, in a stable order."""
    configs = sorted({json.dumps({k: v for k, v in (r.get("config") or {}).items() if k != "seed"},
                                 sort_keys=True, separators=(",", ":"))
                      for b in _load_benches(results) for r in b["runs"]})
    return hashlib.sha256("\n".join(configs).encode("utf-8")).hexdigest()


def environment() -> Dict[str, str]:
    """What can move the numbers: this package, torch, transformers, Python, and whether CPU kernels were
    pinned to the portable AVX2 paths (else a reference is only exact on the CPU model that made it)."""
    import platform
    from importlib import metadata

    out = {}
    for dist in ("atwu-plugin", "torch", "transformers"):
        try:
            out[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist.replace("-", "_")] = "not installed"
    out["python"] = platform.python_version()
    out["cpu_numerics"] = portable_numerics.describe()
    return out


def make_reference(results: Union[str, Path, Mapping], tolerances: Optional[Mapping[str, Any]] = None,
                   metrics: Optional[List[str]] = None, cli_tol: Optional[float] = None) -> Dict[str, Any]:
    """A reference object from results: per (benchmark, method) its seeds and the mean over
    them of every metric (or of ``metrics``) except timings; a tolerance entry for every
    stored metric (``tolerances`` first, then ``cli_tol`` with the metric's default kind, then
    the built-in defaults; see :func:`tolerance_spec`)."""
    benches = {}
    stored: List[str] = []
    for b in _load_benches(results, None if not isinstance(results, Mapping) else "<results>"):
        benches[b["benchmark"]] = {}
        for m, by_seed in _runs_by_method(b).items():
            names: List[str] = []
            for ms in by_seed.values():
                names += [k for k in ms if k not in names and not is_timing(k) and (metrics is None or k in metrics)]
            scores = {}
            for k in names:
                vals = finite_values(({"metrics": ms} for ms in by_seed.values()), k)
                scores[k] = math.fsum(vals) / len(vals) if vals else None
            stored += [k for k in names if k not in stored]
            benches[b["benchmark"]][m] = {"seeds": sorted(by_seed), "metrics": scores}
    tols: Dict[str, Any] = dict(tolerances or {})
    given = {"tolerances": {k: _tolerance_entry("<tolerances>", k, v) for k, v in tols.items()}}
    for k in stored:
        if k not in tols:
            kind, tol = tolerance_spec(given, k, cli_tol)
            tols[k] = {"kind": kind, "tol": tol}
    return validate_reference({"schema": SCHEMA, "provenance": {}, "tolerances": tols, "benchmarks": benches})


# ----------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    benchmark: str
    method: str
    metric: str
    value: Optional[float]  # mean over the reference's seeds (None: no value, or a failed seed)
    reference: Optional[float]
    tol: float
    kind: str = "absolute"
    problem: Optional[str] = None  # a failed seed: "seed 1: NaN", "seed 2: no run", ...

    @property
    def distance(self) -> Optional[float]:
        if self.value is None or self.reference is None:
            return None
        return distance(self.kind, self.value, self.reference)

    @property
    def delta(self) -> Optional[float]:
        if self.value is None or self.reference is None:
            return None
        return self.value - self.reference

    @property
    def tolerances_away(self) -> Optional[float]:
        d = self.distance
        if d is None:
            return None
        if self.tol == 0:
            return 0.0 if d == 0 else math.inf
        return d / self.tol

    @property
    def ok(self) -> bool:
        if self.problem is not None:
            return False
        if self.value is None or self.reference is None:
            return self.value is None and self.reference is None
        return self.tolerances_away <= 1 + 1e-9

    @property
    def name(self) -> str:
        return f"{self.benchmark}/{self.method}/{self.metric}"


@dataclass
class RegressReport:
    comparisons: List[Comparison] = field(default_factory=list)
    unchecked: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def drifted(self) -> List[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    @property
    def exit_code(self) -> int:
        return 1 if self.drifted else 0


def _seed_values(by_seed: Mapping[int, Mapping[str, Any]], seeds: List[int], metric: str, want_number: bool
                 ) -> Tuple[List[float], List[str]]:
    """Finite values of ``metric`` in ``seeds`` and the problems ("seed 1: NaN") that stop a mean."""
    values, problems = [], []
    for s in seeds:
        if s not in by_seed:
            problems.append(f"seed {s}: no run")
            continue
        ms = by_seed[s]
        v = ms.get(metric)
        if not want_number:  # the reference is null: every seed must have no value
            if is_finite_number(v):
                values.append(float(v))
            continue
        if metric not in ms:
            problems.append(f"seed {s}: missing")
        elif v is None:
            problems.append(f"seed {s}: null")
        elif not is_finite_number(v):
            problems.append(f"seed {s}: " + ("NaN" if is_number(v) and math.isnan(v) else repr(v)))
        else:
            values.append(float(v))
    return values, problems


def compare(reference: Mapping[str, Any], results: Union[str, Path, Mapping], cli_tol: Optional[float] = None,
            results_name: str = "<results>") -> RegressReport:
    """Compare every (benchmark, method, metric) of ``reference`` with the results' mean over
    the reference's seeds, seed by seed for missing or non-finite values. Raises
    RegressionError when the results lack a benchmark, method or metric altogether."""
    name = str(results) if not isinstance(results, Mapping) else results_name
    benches = {b["benchmark"]: _runs_by_method(b) for b in _load_benches(results, name)}
    report = RegressReport()
    timings: List[str] = []
    for b, methods in reference["benchmarks"].items():
        if b not in benches:
            raise RegressionError(f"{name}: benchmark {b!r} of the reference is missing "
                                  f"(results have: {', '.join(benches) or 'none'})")
        for m, entry in methods.items():
            if m not in benches[b]:
                raise RegressionError(f"{name}: benchmark {b!r}: method {m!r} of the reference is missing "
                                      f"(results have: {', '.join(benches[b]) or 'none'})")
            by_seed = benches[b][m]
            seeds = entry["seeds"] if entry["seeds"] is not None else sorted(by_seed)
            extra = sorted(set(by_seed) - set(seeds))
            if extra:
                report.unchecked.append(f"{b}/{m} seed(s) {', '.join(map(str, extra))}")
            for k, ref in entry["metrics"].items():
                kind, tol = tolerance_spec(reference, k, cli_tol)
                if kind == "none":
                    timings.append(k)
                    continue
                if not any(k in ms for ms in by_seed.values()):
                    raise RegressionError(f"{name}: benchmark {b!r}, method {m!r}: metric {k!r} of the "
                                          "reference is missing")
                values, problems = _seed_values(by_seed, seeds, k, ref is not None)
                value = math.fsum(values) / len(values) if values and not problems else None
                report.comparisons.append(Comparison(b, m, k, value, ref, tol, kind, "; ".join(problems) or None))
        for m in benches[b]:
            if m not in methods:
                report.unchecked.append(f"{b}/{m}")
    for b in benches:
        if b not in reference["benchmarks"]:
            report.unchecked.append(f"{b} (benchmark)")
    if timings:
        report.notes.append(f"timings are not checked: {', '.join(sorted(set(timings)))}")
    prov = reference.get("provenance", {})
    spec_hash = results_spec_hash(results) if prov.get("spec_hash") else None
    if spec_hash and prov["spec_hash"] != spec_hash:
        report.notes.append(f"the results come from other cell configs than the reference's (spec hash "
                            f"{spec_hash[:12]} vs {prov['spec_hash'][:12]}): a changed spec moves the numbers too")
    env = environment()
    moved = [f"{k} {prov[k]} -> {env[k]}" for k in ("torch", "transformers") if prov.get(k) and prov[k] != env.get(k)]
    if moved:
        report.notes.append("reference made with other versions (" + ", ".join(moved) + "): float round-off may differ")
    # references written by --update record their numerics (older ones, with versions only, were native)
    ref_numerics = prov.get("cpu_numerics", "native" if prov.get("torch") else None)
    if ref_numerics and ref_numerics != env["cpu_numerics"]:
        report.notes.append(f"CPU numerics: reference {ref_numerics}, this check {env['cpu_numerics']}: float "
                            f"round-off differs between CPU models unless both are portable-avx2 "
                            f"({portable_numerics.SWITCH}=1 for the leaderboard run and the check)")
    return report


# ----------------------------------------------------------------------------- output


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "null"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.4e}"
    return f"{x:.6f}"


UNITS = {"absolute": "abs", "relative": "rel", "log10": "log10"}


def _fmt_tol(c: Comparison) -> str:
    if c.kind == "relative":
        return f"±{c.tol * 100:g} % rel"
    return f"±{c.tol:g} {UNITS.get(c.kind, c.kind)}"


def _fmt_away(c: Comparison) -> str:
    a = c.tolerances_away
    if a is None:
        return "-"
    if math.isinf(a):
        return "inf"
    return f"{a:.1f}" if a < 1000 else f"{a:.3g}"


def _status(c: Comparison) -> str:
    if c.ok:
        return "ok"
    if c.problem:
        return f"FAIL ({c.problem})"
    if c.reference is None:
        return "DRIFT (reference is null)"
    if c.value is None:
        return "DRIFT (now null)"
    return "DRIFT"


def format_table(comparisons: List[Comparison]) -> str:
    """Fixed-width table: benchmark, method, metric, reference, result, tolerance (and kind),
    how many tolerances away, status."""
    head = ("benchmark", "method", "metric", "reference", "result", "tolerance", "x tol", "status")
    rows = [head] + [(c.benchmark, c.method, c.metric, _fmt(c.reference),
                      "-" if c.problem else _fmt(c.value), _fmt_tol(c), _fmt_away(c), _status(c))
                     for c in comparisons]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {3, 4, 6}
    lines = []
    for j, r in enumerate(rows):
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(head))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- --update


def _update_problems(old: Optional[Mapping[str, Any]], results: Union[str, Path, Mapping]) -> List[str]:
    """Why ``results`` must not become the reference: fewer seeds than ``old`` has, failed or
    unfinished cells (failures.json next to the results), a non-finite value where the old
    reference has a number."""
    problems = []
    if not isinstance(results, Mapping):
        failures = Path(results).parent / "failures.json"
        if failures.is_file():
            try:
                data = json.loads(failures.read_text(encoding="utf-8"))
                bad = [f.get("cell", "?") for f in data.get("failed", [])] + list(data.get("not_run", []))
            except (ValueError, AttributeError, TypeError):
                bad = ["(unreadable)"]
            if bad:
                problems.append(f"{failures} lists failed or unfinished cells: {', '.join(map(str, bad))}")
    if old is None:
        return problems
    try:
        report = compare(old, results)
    except RegressionError as e:  # a method/metric the reference has is gone
        return problems + [str(e)]
    benches = {b["benchmark"]: _runs_by_method(b) for b in _load_benches(results)}
    for b, methods in old["benchmarks"].items():
        for m, entry in methods.items():
            have = sorted(benches.get(b, {}).get(m, {}))
            if entry["seeds"] is not None and len(have) < len(entry["seeds"]):
                problems.append(f"{b}/{m} has seeds {have} but the reference has {entry['seeds']}")
    problems += [f"{c.name}: {c.problem}" for c in report.comparisons if c.problem and "no run" not in c.problem]
    return problems


def _spec_name(results: Union[str, Path, Mapping]) -> Optional[str]:
    """The leaderboard spec's name, from the spec.resolved.json the leaderboard writes beside
    its results.json (None when there is none)."""
    if isinstance(results, Mapping):
        return None
    try:
        name = json.loads((Path(results).parent / "spec.resolved.json").read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def update_reference(ref_path: Union[str, Path], results: Union[str, Path, Mapping],
                     cli_tol: Optional[float] = None, force: bool = False,
                     provenance: Optional[Mapping[str, Any]] = None) -> Tuple[Dict[str, Any], int, List[str]]:
    """Rewrite ``ref_path`` (atomically) from ``results``, keeping its tolerances and adding
    the defaults (or ``cli_tol`` with the default kind) for metrics without one. Keeps the
    reference's selection of metrics when it has one for a method; new methods get all
    metrics except timings. Refuses (:class:`UpdateRefused`) results with fewer seeds than the
    reference or with failures, unless ``force``. Returns (new reference, number of scores
    that changed or were added, entries of the old reference that were dropped)."""
    ref_path = Path(ref_path)
    old: Optional[Dict[str, Any]] = None
    if ref_path.exists():
        old = load_reference(ref_path)  # a malformed reference is an error, not silently replaced
    _load_benches(results)  # unreadable results: their own error first
    problems = _update_problems(old, results)
    if problems and not force:
        raise UpdateRefused(f"not updating {ref_path} from {results if not isinstance(results, Mapping) else '<results>'}: "
                            + "; ".join(problems) + " (rerun the missing/failed cells, or pass --force)")
    tolerances = {k: v for k, v in (old["tolerances"] if old else {}).items() if v["kind"] != "none"}
    new = make_reference(results, tolerances, cli_tol=cli_tol)
    changed = 0
    for b, methods in new["benchmarks"].items():
        for m, entry in methods.items():
            kept = old["benchmarks"].get(b, {}).get(m) if old else None
            if kept:
                metrics = {k: v for k, v in entry["metrics"].items() if k in kept["metrics"]} or entry["metrics"]
                entry["metrics"] = metrics
            for k, v in entry["metrics"].items():
                if kept is None or k not in kept["metrics"] or kept["metrics"][k] != v:
                    changed += 1
    used = {k for methods in new["benchmarks"].values() for e in methods.values() for k in e["metrics"]}
    new["tolerances"] = {k: v for k, v in new["tolerances"].items() if k in used or k == "default"}
    dropped = []
    if old:
        for b, methods in old["benchmarks"].items():
            for m, entry in methods.items():
                for k in entry["metrics"]:
                    if k not in new["benchmarks"].get(b, {}).get(m, {}).get("metrics", {}):
                        dropped.append(f"{b}/{m}/{k}")
    new["provenance"] = {
        **({"spec": spec_name} if (spec_name := _spec_name(results)) else {}),
        "spec_hash": results_spec_hash(results),
        **({"results": str(results)} if not isinstance(results, Mapping) else {}),
        **environment(),
        **dict(provenance or {}),
    }
    atomic_write_json(ref_path, new)
    return new, changed, dropped
