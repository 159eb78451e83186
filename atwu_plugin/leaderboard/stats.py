"""Per-method statistics of one benchmark's runs: means, stds, ranks, Pareto front.

Per method and metric, the mean and the *sample* standard deviation (n - 1 denominator) over the
seeds that reported a finite value; ``null``/NaN values are missing (e.g. ``span_auroc`` of a
method without token weights); with one seed the std is undefined. Ranks are competition ranks
(1, 1, 3) of the means, 1 = best for the metric's direction. A method is Pareto-optimal when no
other method has a forget quality and a model utility both at least as high and one strictly
higher (means); tables and plots mark it with :data:`STAR`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from atwu_plugin.leaderboard.results import is_number
from atwu_plugin.leaderboard.spec import KNOWN_METRICS, MetricSpec

PARETO_X = "forget_quality"
PARETO_Y = "model_utility"
STAR = "★"


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
        if is_number(v) and math.isfinite(v):
            vals.append(float(v))
    return vals


def shows_tradeoff(metrics: Sequence[MetricSpec]) -> bool:
    """Pareto marks and the trade-off plot belong to a table that shows both of their axes: a
    spec whose metrics leave out forget quality or model utility (e.g. span AUROC only) gets
    neither, rather than marks on columns the reader cannot see."""
    names = {m.name for m in metrics}
    return PARETO_X in names and PARETO_Y in names


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
