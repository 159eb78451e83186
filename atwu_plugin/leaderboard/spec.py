"""Leaderboard specification (``SPEC.yaml``): schema, loading and validation.

Example::

    name: demo-v1
    output_dir: outputs/leaderboards/demo-v1   # relative paths: relative to this file's folder
    host: lite                                  # lite | openunlearning (default: lite)
    benchmarks:
      - name: synthetic                         # every other key is a benchmark option,
        model: tiny-llama                       # passed to the cell runner as is
        forget_split: forget10
    methods:
      - name: GradDiff                          # unique; used in paths and tables
        trainer: GradDiff                       # trainer config name (configs/trainer/<name>.yaml)
      - name: ATWU
        trainer: ATWU
        overrides: {trainer.args.learning_rate: 1.0e-5, trainer.method_args.scorer_lr: 1e-3}
    seeds: [0, 1, 2]
    metrics:                                    # columns of the tables, in this order
      - {name: forget_quality, direction: higher}
      - model_utility                           # known metrics need no direction
      - {name: my_metric, direction: lower, label: "My metric"}

A method may carry a ``grid`` (a hyperparameter sweep): one method per point of the product
of the listed values, named ``<name>+<key>_<value>`` (``<key>``: the last part of the dotted
key, ``learning_rate`` shortened to ``lr``), each with ``family: <name>`` and its ``point``::

      - name: NPO
        trainer: TW_NPO
        grid: {args.learning_rate: [2.5e-4, 5.0e-4], method_args.forget_loss.beta: [0.1, 0.5]}
        # -> NPO+lr_0.00025+beta_0.1, NPO+lr_0.00025+beta_0.5, NPO+lr_0.0005+beta_0.1, ...

Optional ``selection`` (how a sweep's trials are compared, fixed before the runs; see
``atwu_plugin.leaderboard.tuning``)::

    selection:
      metric: kl_to_retain          # a matched metric; its direction decides best
      levels: [0.5, 0.75]           # the first level that some trial of the family reaches

Optional ``methods_from: FILE.yaml`` (relative to the spec): methods read from a YAML file with a
``methods:`` list (e.g. the hyperparameters a sweep selected, written by scripts/tuning_doc.py),
placed before the spec's own ``methods``.

Optional ``matched`` (comparison at matched forgetting; see :class:`MatchedSpec` and
``atwu_plugin.leaderboard.matched``)::

    matched:
      x: forget_specific_prob       # the forgetting axis (lower = more forgotten)
      levels: [0.5, 0.25]           # compare where x first reaches 50 % / 25 % of its step-0 value
      points: 10                    # probability-only evaluations per run (plus step 0)
      metrics: [forget_generic_prob, kl_to_retain, forget_quality]

``metrics`` may also be a mapping ``{metric: higher|lower}``; when omitted, all of
:data:`KNOWN_METRICS` are shown.

Validation reports every problem, one line each, as
``<file>: <field>: got <value>; expected <what>``. Unknown keys are errors (typos must not
silently change what runs), except inside a benchmark entry, whose keys other than ``name``
are free-form options for the cell runner. The lite cell runner reads one of them itself:
``benchmark: <registered benchmark>`` (default: ``name``), so the same benchmark can appear
twice with different options, e.g. ``{name: tofu05, benchmark: tofu_tiny, forget_split: forget05}``.

YAML note: PyYAML implements YAML 1.1, where ``1e-5`` is a *string*; this loader also reads
YAML 1.2 floats (``1e-5``, ``.5e3``) as floats, so learning rates are numbers in the resolved
config (and its hash) however they are written.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from atwu_plugin.utils.jsonfile import decode_text

__all__ = [
    "SpecError",
    "BenchmarkSpec",
    "MethodSpec",
    "MetricSpec",
    "LeaderboardSpec",
    "KNOWN_METRICS",
    "HOSTS",
    "load_spec",
    "parse_spec",
    "check_lite_cells",
]

# metric -> direction ("higher" or "lower" is better); the default table columns
KNOWN_METRICS: Dict[str, str] = {
    "forget_quality": "higher",  # KS-test p-value vs the retain model (TOFU); 1 = indistinguishable
    "model_utility": "higher",
    "forget_rouge": "lower",
    "retain_rouge": "higher",
    "forget_prob": "lower",
    "forget_specific_prob": "lower",
    "forget_generic_prob": "higher",
    "holdout_prob": "higher",
    "kl_to_retain": "lower",
    "span_auroc": "higher",  # null for methods without token weights
}
DIRECTIONS = ("higher", "lower")
HOSTS = ("lite", "openunlearning")
DEFAULT_HOST = "lite"

TOP_KEYS = ("name", "output_dir", "benchmarks", "methods", "seeds", "metrics", "host", "description", "matched",
            "selection", "methods_from")
SELECTION_KEYS = ("metric", "levels")
MATCHED_KEYS = ("x", "levels", "points", "metrics")
METHOD_KEYS = ("name", "trainer", "overrides", "description", "grid")
METRIC_KEYS = ("name", "direction", "label")

# names become path components and table labels
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# Hydra-style dotted keys, optionally prefixed with + / ++ / ~
_OVERRIDE_KEY_RE = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")


class SpecError(ValueError):
    """Invalid leaderboard spec; ``errors`` holds one line per problem."""

    def __init__(self, errors: List[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    trainer: str
    overrides: Dict[str, Any] = field(default_factory=dict)
    description: str = ""
    family: str = ""  # the grid entry this trial came from ("" when not from a grid)
    point: Dict[str, Any] = field(default_factory=dict)  # its grid values {dotted.key: value}


@dataclass(frozen=True)
class SelectionSpec:
    """How the trials of a sweep are compared: ``metric`` at the first of ``levels`` (matched
    forgetting) that at least one trial of the family reaches."""

    metric: str
    levels: Tuple[float, ...]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: str  # "higher" | "lower"
    label: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class MatchedSpec:
    """Comparison at matched forgetting: every run logs a trajectory (``points``
    probability-only evaluations spread over training, plus step 0); methods are compared
    where their curve of ``x`` first reaches ``level * x(step 0)``, for each level."""

    x: str = "forget_specific_prob"
    levels: Tuple[float, ...] = (0.5, 0.25)
    points: int = 10
    metrics: Tuple[str, ...] = ("forget_generic_prob", "kl_to_retain", "forget_quality", "retain_prob", "holdout_prob")

    @property
    def needs_forget_truth_ratio(self) -> bool:
        """Whether the trajectory must score the forget split's paraphrased/perturbed answers
        (most of a trajectory pass on TOFU)."""
        return bool({"forget_quality", "forget_truth_ratio"} & {self.x, *self.metrics})

    def to_json(self) -> Dict[str, Any]:
        return {"x": self.x, "levels": list(self.levels), "points": self.points, "metrics": list(self.metrics)}


@dataclass(frozen=True)
class LeaderboardSpec:
    name: str
    output_dir: Path
    benchmarks: Tuple[BenchmarkSpec, ...]
    methods: Tuple[MethodSpec, ...]
    seeds: Tuple[int, ...]
    metrics: Tuple[MetricSpec, ...]
    host: str = DEFAULT_HOST
    description: str = ""
    source: str = "<spec>"
    matched: Optional[MatchedSpec] = None
    selection: Optional[SelectionSpec] = None

    def with_output_dir(self, output_dir) -> "LeaderboardSpec":
        from dataclasses import replace

        return replace(self, output_dir=Path(output_dir))


# ----------------------------------------------------------------------------- YAML loading


class _Loader(yaml.SafeLoader):
    """SafeLoader + YAML 1.2 floats (``1e-5`` is a float, not a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_spec(path, output_dir=None) -> LeaderboardSpec:
    """Read and validate ``path``. A relative ``output_dir`` in the file is resolved against
    the file's folder (so resuming does not depend on the working directory); the
    ``output_dir`` argument, if given, replaces it (relative to the working directory)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecError([f"{path}: cannot read spec: {e.strerror or e}"]) from None
    text = decode_text(data, str(path), "a YAML leaderboard spec", error=lambda msg: SpecError([msg]))
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError([f"{path}: invalid YAML{where}: {problem}"]) from None
    spec = parse_spec(data, source=str(path), base_dir=path.parent)
    if output_dir is not None:
        spec = spec.with_output_dir(Path(output_dir).absolute())
    return spec


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_ok(value: Any) -> bool:
    """True if ``value`` is plain, finite JSON data (what the config hash can represent)."""
    if value is None or isinstance(value, (bool, str, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_json_ok(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_ok(v) for k, v in value.items())
    return False


def parse_spec(data: Any, source: str = "<spec>", base_dir=None) -> LeaderboardSpec:
    """Validate a spec already parsed into Python objects (``source`` names it in errors).

    Every problem is collected (one line each, in the order of the keys below) and raised
    together as one :class:`SpecError`, so a spec is fixed in one pass."""
    errors: List[str] = []

    def err(fld: str, value: Any, expected: str) -> None:
        errors.append(f"{source}: {fld}: got {_short(value)}; expected {expected}")

    if not isinstance(data, Mapping):
        raise SpecError([f"{source}: top level: got {_short(data)}; expected a mapping with keys "
                         f"{', '.join(TOP_KEYS)}"])

    for key in data:
        if key not in TOP_KEYS:
            err(f"unknown key {key!r}", data[key], f"one of {', '.join(TOP_KEYS)}")
    name = _parse_name(data.get("name"), err)
    output_dir = _parse_output_dir(data.get("output_dir"), base_dir, err)
    host = _parse_host(data.get("host", DEFAULT_HOST), err)
    description = _parse_description(data.get("description", ""), err)
    benchmarks = _parse_benchmarks(data.get("benchmarks"), err)
    raw_methods = data.get("methods")
    if "methods_from" in data:
        raw_methods = _methods_from(data["methods_from"], base_dir, err) + list(raw_methods or [])
    methods = _parse_methods(raw_methods, err)
    seeds = _parse_seeds(data.get("seeds"), err)
    metrics = _parse_metrics(data.get("metrics"), err)
    matched = _parse_matched(data.get("matched"), err) if "matched" in data else None
    selection = _parse_selection(data.get("selection"), matched, err) if "selection" in data else None
    if host == "openunlearning":  # OU cells' options (experiments, launcher): checked now, not mid-grid
        errors.extend(_openunlearning_option_errors(benchmarks, source))

    if errors:
        raise SpecError(errors)
    return LeaderboardSpec(
        name=name,
        output_dir=output_dir,
        benchmarks=tuple(benchmarks),
        methods=tuple(methods),
        seeds=tuple(seeds),
        metrics=tuple(metrics),
        host=host,
        description=description,
        source=source,
        matched=matched,
        selection=selection,
    )


# Each _parse_<key> reports problems through ``err(field, value, expected)`` and returns the
# valid part (a placeholder when nothing is valid; the spec is rejected then anyway).
def _parse_name(name: Any, err) -> str:
    if not isinstance(name, str) or not name.strip():
        err("name", name, "a non-empty string")
        return ""
    return name


def _parse_output_dir(out: Any, base_dir, err) -> Path:
    """Absolute; a relative path is resolved against ``base_dir`` (the spec file's folder)."""
    if not isinstance(out, str) or not out.strip():
        err("output_dir", out, "a non-empty path string")
        return Path(".")
    output_dir = Path(out).expanduser()
    if not output_dir.is_absolute():
        output_dir = (Path(base_dir) if base_dir is not None else Path.cwd()) / output_dir
    return output_dir.absolute()


def _parse_host(host: Any, err) -> str:
    if host not in HOSTS:
        err("host", host, " or ".join(HOSTS))
        return DEFAULT_HOST
    return host


def _parse_description(description: Any, err) -> str:
    if not isinstance(description, str):
        err("description", description, "a string")
        return ""
    return description


def _parse_benchmarks(raw: Any, err) -> List[BenchmarkSpec]:
    benchmarks: List[BenchmarkSpec] = []
    if not isinstance(raw, list) or not raw:
        err("benchmarks", raw, "a non-empty list of {name: ..., <options>}")
        return benchmarks
    seen: Dict[str, int] = {}
    for i, b in enumerate(raw):
        if isinstance(b, str):  # shorthand: "- synthetic"
            b = {"name": b}
        if not isinstance(b, Mapping):
            err(f"benchmarks[{i}]", b, "a mapping with a 'name' key")
            continue
        bname = b.get("name")
        if not isinstance(bname, str) or not _NAME_RE.match(bname):
            err(f"benchmarks[{i}].name", bname, "a name of letters, digits, '.', '_', '+', '-'")
            continue
        if bname in seen:
            err(f"benchmarks[{i}].name", bname, f"a unique name (also benchmarks[{seen[bname]}])")
            continue
        seen[bname] = i
        options = {k: v for k, v in b.items() if k != "name"}
        bad = [k for k, v in options.items() if not isinstance(k, str) or not _json_ok(v)]
        for k in bad:
            err(f"benchmarks[{i}].{k}", options[k], "plain finite JSON-like data (str, number, bool, "
                "null, list, mapping with string keys)")
        if not bad:
            benchmarks.append(BenchmarkSpec(bname, dict(options)))
    return benchmarks


def _parse_methods(raw: Any, err) -> List[MethodSpec]:
    if not isinstance(raw, list) or not raw:
        err("methods", raw, "a non-empty list of {name, trainer, overrides}")
        return []
    seen: Dict[str, int] = {}  # method name -> index of its first entry
    methods: List[MethodSpec] = []
    for i, m in enumerate(raw):
        parsed = _parse_method(i, m, seen, err)
        if parsed is None:
            continue
        trials = _expand_grid(i, parsed, m.get("grid"), err) if "grid" in m else [parsed]
        for t in trials:
            if t.name in seen and seen[t.name] != i:
                err(f"methods[{i}].grid", t.name, f"a unique method name (also methods[{seen[t.name]}])")
            seen.setdefault(t.name, i)
        methods.extend(trials)
    return methods


def _methods_from(ref: Any, base_dir, err) -> List[Any]:
    if not isinstance(ref, str) or not ref.strip():
        err("methods_from", ref, "a path to a YAML file with a methods: list")
        return []
    path = Path(base_dir or ".") / ref
    try:
        loaded = yaml.load(decode_text(path.read_bytes(), str(path), "a YAML file with a methods: list"),
                           Loader=_Loader)
    except OSError as e:
        err("methods_from", ref, f"a readable file ({e.strerror}: {path})")
        return []
    except (yaml.YAMLError, ValueError) as e:
        err("methods_from", ref, f"valid UTF-8 YAML ({str(e).splitlines()[0]})")
        return []
    if not isinstance(loaded, Mapping) or not isinstance(loaded.get("methods"), list):
        err("methods_from", ref, f"a mapping with a methods: list in {path}")
        return []
    return list(loaded["methods"])


def _grid_label(key: str) -> str:
    last = key.lstrip("+~").split(".")[-1]
    return "lr" if last == "learning_rate" else last


def _expand_grid(i: int, method: MethodSpec, grid: Any, err) -> List[MethodSpec]:
    """One MethodSpec per point of ``grid``'s product (first key slowest)."""
    where = f"methods[{i}].grid"
    if not isinstance(grid, Mapping) or not grid:
        err(where, grid, "a non-empty mapping {dotted.key: [values]}")
        return []
    labels: Dict[str, str] = {}
    ok = True
    for k, values in grid.items():
        if not isinstance(k, str) or not _OVERRIDE_KEY_RE.match(k):
            err(where, k, "dotted keys like args.learning_rate")
            ok = False
            continue
        if k in method.overrides:
            err(f"{where}.{k}", k, "a key that is not also in overrides")
            ok = False
        if not isinstance(values, list) or not values or not all(
                _json_ok(v) and isinstance(v, (str, int, float, bool)) for v in values):
            err(f"{where}.{k}", values, "a non-empty list of scalars")
            ok = False
        label = _grid_label(k)
        if label in labels.values():
            err(f"{where}.{k}", k, f"keys whose last parts differ (also {label!r})")
            ok = False
        labels[k] = label
    if not ok:
        return []
    trials = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid.keys(), values))
        name = method.name + "".join(f"+{labels[k]}_{_grid_value(v)}" for k, v in point.items())
        if not _NAME_RE.match(name):
            err(where, name, "values that make a valid method name (letters, digits, '.', '_', '+', '-')")
            return []
        trials.append(MethodSpec(name, method.trainer, {**method.overrides, **point}, method.description,
                                 family=method.name, point=point))
    return trials


def _grid_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _parse_method(i: int, m: Any, seen: Dict[str, int], err) -> Optional[MethodSpec]:
    """``methods[i]``, or None if it has a problem (every problem of the entry is reported)."""
    if not isinstance(m, Mapping):
        err(f"methods[{i}]", m, "a mapping with keys name, trainer[, overrides]")
        return None
    ok = True
    for key in m:
        if key not in METHOD_KEYS:
            err(f"methods[{i}]: unknown key {key!r}", m[key], f"one of {', '.join(METHOD_KEYS)}")
            ok = False
    mname = m.get("name")
    if not isinstance(mname, str) or not _NAME_RE.match(mname):
        err(f"methods[{i}].name", mname, "a name of letters, digits, '.', '_', '+', '-'")
        ok = False
    elif mname in seen:
        err(f"methods[{i}].name", mname, f"a unique method name (also methods[{seen[mname]}])")
        ok = False
    else:
        seen[mname] = i
    trainer = m.get("trainer")
    if not isinstance(trainer, str) or not trainer.strip():
        err(f"methods[{i}].trainer", trainer, "a trainer config name, e.g. 'GradDiff'")
        ok = False
    overrides = m.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        err(f"methods[{i}].overrides", overrides, "a mapping {dotted.key: value}")
        ok = False
        overrides = {}
    for k, v in overrides.items():
        if not isinstance(k, str) or not _OVERRIDE_KEY_RE.match(k):
            err(f"methods[{i}].overrides", k, "dotted keys like trainer.args.learning_rate")
            ok = False
        elif not _json_ok(v):
            err(f"methods[{i}].overrides.{k}", v, "plain finite JSON-like data")
            ok = False
    mdesc = m.get("description", "")
    if not isinstance(mdesc, str):
        err(f"methods[{i}].description", mdesc, "a string")
        ok = False
    return MethodSpec(mname, trainer, dict(overrides), mdesc) if ok else None


def _parse_seeds(raw: Any, err) -> List[int]:
    seeds: List[int] = []
    if not isinstance(raw, list) or not raw:
        err("seeds", raw, "a non-empty list of integers, e.g. [0, 1, 2]")
        return seeds
    for i, s in enumerate(raw):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            err(f"seeds[{i}]", s, "a non-negative integer")
        elif s in seeds:
            err(f"seeds[{i}]", s, "unique seeds")
        else:
            seeds.append(s)
    return seeds


def _parse_metrics(raw: Any, err) -> List[MetricSpec]:
    """``metrics``: omitted = every known metric; else a list (names or mappings) or a mapping
    ``{metric: direction}``."""
    if raw is None:
        return [MetricSpec(k, d) for k, d in KNOWN_METRICS.items()]
    if isinstance(raw, Mapping):
        entries = [({"name": k, "direction": v}, f"metrics.{k}") for k, v in raw.items()]
    elif isinstance(raw, list):
        entries = [(e, f"metrics[{i}]") for i, e in enumerate(raw)]
    else:
        entries = []
    if not entries:
        err("metrics", raw, "a non-empty list of {name, direction: higher|lower} or a mapping "
            "{metric: higher|lower} (or omit it for the default metrics)")
    seen: set = set()
    parsed = (_parse_metric(e, where, seen, err) for e, where in entries)
    return [m for m in parsed if m is not None]


def _parse_metric(e: Any, where: str, seen: set, err) -> Optional[MetricSpec]:
    """One metric entry (reported as ``where``), or None if it has a problem."""
    if isinstance(e, str):
        e = {"name": e}
    if not isinstance(e, Mapping):
        err(where, e, "a metric name or {name, direction: higher|lower}")
        return None
    unknown = [k for k in e if k not in METRIC_KEYS]
    for k in unknown:
        err(f"{where}: unknown key {k!r}", e[k], f"one of {', '.join(METRIC_KEYS)}")
    mn = e.get("name")
    if not isinstance(mn, str) or not mn:
        err(f"{where}.name", mn, "a metric name")
        return None
    direction = e.get("direction", KNOWN_METRICS.get(mn))
    if direction not in DIRECTIONS:
        expected = "'higher' or 'lower'"
        if "direction" not in e:
            close = difflib.get_close_matches(mn, list(KNOWN_METRICS), n=1)
            expected += f" (required: {mn!r} is not a known metric" + (
                f"; did you mean {close[0]!r}?)" if close else ")")
        err(f"{where}.direction", e.get("direction"), expected)
        return None
    label = e.get("label", "")
    if not isinstance(label, str):
        err(f"{where}.label", label, "a string")
        return None
    if mn in seen:
        err(f"{where}.name", mn, "each metric once")
        return None
    seen.add(mn)
    return None if unknown else MetricSpec(mn, direction, label)


def _openunlearning_option_errors(benchmarks: List[BenchmarkSpec], source: str) -> List[str]:
    from atwu_plugin.hosts.openunlearning_cells import check_options

    errors = []
    for i, b in enumerate(benchmarks):
        try:
            check_options(b.name, b.options)
        except ValueError as e:
            errors.append(f"{source}: benchmarks[{i}]: {e}")
    return errors


def _parse_selection(raw: Any, matched: Optional[MatchedSpec], err) -> Optional[SelectionSpec]:
    if not isinstance(raw, Mapping):
        err("selection", raw, "a mapping with keys metric, levels")
        return None
    for key in raw:
        if key not in SELECTION_KEYS:
            err(f"selection: unknown key {key!r}", raw[key], f"one of {', '.join(SELECTION_KEYS)}")
    if matched is None:
        err("selection", raw, "a spec with a matched section (trials are compared at matched forgetting)")
        return None
    metric, levels = raw.get("metric"), raw.get("levels")
    ok = True
    if metric not in matched.metrics:
        err("selection.metric", metric, f"one of matched.metrics ({', '.join(matched.metrics)})")
        ok = False
    if not isinstance(levels, list) or not levels or any(lv not in matched.levels for lv in levels):
        err("selection.levels", levels, f"a non-empty list of matched.levels ({list(matched.levels)})")
        ok = False
    return SelectionSpec(metric, tuple(levels)) if ok else None


def _parse_matched(raw: Any, err) -> Optional[MatchedSpec]:
    if not isinstance(raw, Mapping):
        err("matched", raw, f"a mapping with keys {', '.join(MATCHED_KEYS)} (all optional)")
        return None
    for key in raw:
        if key not in MATCHED_KEYS:
            err(f"matched: unknown key {key!r}", raw[key], f"one of {', '.join(MATCHED_KEYS)}")
    d = MatchedSpec()
    x = raw.get("x", d.x)
    if not isinstance(x, str) or not x:
        err("matched.x", x, "a metric name such as forget_specific_prob")
    levels = raw.get("levels", list(d.levels))
    if (not isinstance(levels, list) or not levels
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in levels)):
        err("matched.levels", levels, "a non-empty list of fractions in (0, 1) of the step-0 value of x")
        levels = list(d.levels)
    points = raw.get("points", d.points)
    if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= 200:
        err("matched.points", points, "an integer in [2, 200] (evaluations per run)")
    metrics = raw.get("metrics", list(d.metrics))
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        err("matched.metrics", metrics, "a non-empty list of metric names")
        metrics = list(d.metrics)
    return MatchedSpec(x=x, levels=tuple(float(v) for v in levels), points=points, metrics=tuple(metrics))


def check_lite_cells(spec: LeaderboardSpec) -> None:
    """Everything a lite-host grid needs, checked in well under a second, before any model is
    built or any cell runs: each benchmark's name and options (by constructing it, which
    builds nothing), each method's trainer config with its overrides on that benchmark's
    defaults (names, keys, ``trainer.args`` fields, value ranges: see
    ``atwu_plugin.hosts.checks.validate_trainer_config``). Raises :class:`SpecError`, one line per
    problem, naming the spec entry."""
    if spec.host != "lite":
        return
    from atwu_plugin.hosts.checks import make_benchmark
    from atwu_plugin.hosts.lite import load_trainer_config

    errors: List[str] = []
    benches = []
    for i, b in enumerate(spec.benchmarks):
        options = dict(b.options)
        name = options.pop("benchmark", b.name)
        try:
            benches.append((b.name, make_benchmark(str(name), options)))
        except Exception as e:  # noqa: BLE001 - any constructor error is this entry's problem
            msg = " ".join(str(e).split()) or type(e).__name__
            errors.append(f"{spec.source}: benchmarks[{i}] ({b.name}): {msg}")
    trainer_args = {n: getattr(bench, "trainer_args", None) for n, bench in benches}
    for i, m in enumerate(spec.methods):
        seen = set()
        for bname, args in trainer_args.items() or [(None, None)]:
            try:
                load_trainer_config(m.trainer, m.overrides, base_args=args)
            except Exception as e:  # noqa: BLE001
                msg = " ".join(str(e).split()) or type(e).__name__
                if msg not in seen:
                    seen.add(msg)
                    errors.append(f"{spec.source}: methods[{i}] ({m.name}): {msg}")
    if errors:
        raise SpecError(errors)


def spec_summary(spec: LeaderboardSpec) -> str:
    n = len(spec.benchmarks) * len(spec.methods) * len(spec.seeds)
    return (f"{spec.name}: {len(spec.benchmarks)} benchmark(s) x {len(spec.methods)} method(s) x "
            f"{len(spec.seeds)} seed(s) = {n} cells -> {spec.output_dir}")


def to_jsonable(spec: LeaderboardSpec) -> Dict[str, Any]:
    """The spec as plain data (written next to the results for provenance)."""
    return json.loads(json.dumps({
        "name": spec.name,
        "host": spec.host,
        "benchmarks": [{"name": b.name, **b.options} for b in spec.benchmarks],
        "methods": [{"name": m.name, "trainer": m.trainer, "overrides": m.overrides,
                     **({"family": m.family, "point": m.point} if m.family else {})} for m in spec.methods],
        "seeds": list(spec.seeds),
        "metrics": [{"name": m.name, "direction": m.direction, **({"label": m.label} if m.label else {})}
                    for m in spec.metrics],
        **({"matched": spec.matched.to_json()} if spec.matched else {}),
        **({"selection": {"metric": spec.selection.metric, "levels": list(spec.selection.levels)}}
           if spec.selection else {}),
    }))
