"""Choosing each method's hyperparameters from a sweep, by the rule its spec fixed in advance.

A sweep is a leaderboard spec whose methods carry a ``grid`` (one trial per point, all trials of
an entry share its ``family``) and whose ``selection`` names the rule: read every trial at
matched forgetting (its ``matched.x`` first reaching ``level`` times its start) and keep the trial
with the best ``metric`` there. The level is the first of ``selection.levels`` that at least one
trial of the family reaches, so every family is judged at one level; a trial is eligible at it
only if every seed of the trial reaches it; the value is the mean over its seeds. Ties go to the
first trial in grid order.

Everything here is a pure function of the spec and the ``results.json`` benchmark object, so a
reader can recompute the choice from the committed spec and the run outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from atwu_plugin.leaderboard.matched import direction, run_values_at
from atwu_plugin.leaderboard.spec import MethodSpec, SelectionSpec

__all__ = ["Trial", "FamilyChoice", "select", "render_tuning_markdown", "chosen_methods"]


@dataclass
class Trial:
    name: str
    point: Dict[str, Any]
    n_runs: int
    # level -> mean of the selection metric over the trial's seeds; None: not every seed reached it
    values: Dict[float, Optional[float]] = field(default_factory=dict)


@dataclass
class FamilyChoice:
    family: str
    trials: List[Trial]
    level: Optional[float]  # the level the family was judged at; None: no trial reached any
    chosen: Optional[Trial]


def _trial_value(runs: Sequence[Mapping[str, Any]], x: str, level: float, metric: str) -> Optional[float]:
    vals = [run_values_at(r, x, level, [metric])[metric] for r in runs]
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)


def select(bench: Mapping[str, Any], methods: Sequence[MethodSpec], selection: SelectionSpec) -> List[FamilyChoice]:
    """One :class:`FamilyChoice` per grid family of ``methods``, in spec order."""
    x = (bench.get("matched") or {}).get("x")
    if not x:
        raise ValueError(f"benchmark {bench.get('benchmark')!r}: no matched section in results.json; "
                         "a sweep is compared at matched forgetting (the spec needs `matched:`)")
    higher = direction(selection.metric) == "higher"
    runs_by_method: Dict[str, List[Mapping[str, Any]]] = {}
    for r in bench.get("runs", []):
        runs_by_method.setdefault(r["method"], []).append(r)
    families: Dict[str, List[MethodSpec]] = {}
    for m in methods:
        if m.family:
            families.setdefault(m.family, []).append(m)
    choices = []
    for family, members in families.items():
        trials = []
        for m in members:
            runs = runs_by_method.get(m.name, [])
            trials.append(Trial(m.name, dict(m.point), len(runs),
                                {lv: _trial_value(runs, x, lv, selection.metric) for lv in selection.levels}))
        level = next((lv for lv in selection.levels if any(t.values[lv] is not None for t in trials)), None)
        chosen = None
        if level is not None:
            for t in trials:  # strict improvement only: ties keep the earlier trial
                v = t.values[level]
                if v is not None and (chosen is None or (v > chosen.values[level] if higher else v < chosen.values[level])):
                    chosen = t
        choices.append(FamilyChoice(family, trials, level, chosen))
    return choices


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return str(v)


def render_tuning_markdown(choices: Sequence[FamilyChoice], selection: SelectionSpec, x: str) -> str:
    """The selected trial per family, then every trial's value at each selection level."""
    arrow = {"higher": "↑", "lower": "↓"}.get(direction(selection.metric) or "", "")
    out = ["## Selected hyperparameters", "",
           f"Rule: `{selection.metric}` {arrow} where `{x}` first reaches the first of "
           f"{', '.join(f'{lv:g}' for lv in selection.levels)} × its step-0 value that some trial of the "
           "method reaches; a trial counts only if every seed of it gets there; ties: the first trial.", "",
           "| Method | Selected | Level | " + f"{selection.metric} {arrow}".strip() + " |",
           "|:---|:---|---:|---:|"]
    for c in choices:
        if c.chosen is None:
            out.append(f"| {c.family} | none (no trial reached any level) | – | – |")
            continue
        point = ", ".join(f"`{k.split('.')[-1]}` = {_fmt(v)}" for k, v in c.chosen.point.items())
        out.append(f"| {c.family} | {point} | {c.level:g} | {_fmt(c.chosen.values[c.level])} |")
    out += ["", "## Every trial", "",
            "Value of the rule's metric at each level (mean over the trial's seeds; *not reached*: some seed "
            "never got there). ★ = selected.", ""]
    for c in choices:
        keys = list(c.trials[0].point) if c.trials else []
        out += [f"**{c.family}**", "",
                "| " + " | ".join(f"`{k.split('.')[-1]}`" for k in keys) + " | "
                + " | ".join(f"at {lv:g}×" for lv in selection.levels) + " |",
                "|" + "---:|" * (len(keys) + len(selection.levels))]
        for t in c.trials:
            star = " ★" if c.chosen is t else ""
            vals = [_fmt(t.values[lv]) if t.values[lv] is not None else "not reached" for lv in selection.levels]
            out.append("| " + " | ".join(_fmt(t.point[k]) for k in keys) + " | " + " | ".join(vals) + f"{star} |")
        out.append("")
    return "\n".join(out)


def chosen_methods(choices: Sequence[FamilyChoice], methods: Sequence[MethodSpec],
                   lr_scale: float = 1.0) -> List[Dict[str, Any]]:
    """Spec ``methods`` entries for the test benchmarks: each family's trainer and overrides with
    its selected point; a learning rate is multiplied by ``lr_scale`` (test benchmark's shared lr
    over the development benchmark's: the sweep tunes the lr as a multiple of the shared one)."""
    by_name = {m.name: m for m in methods}
    rows = []
    for c in choices:
        if c.chosen is None:
            continue
        m = by_name[c.chosen.name]
        overrides = dict(m.overrides)
        for k in overrides:
            if k.lstrip("+").split(".")[-1] == "learning_rate":
                overrides[k] = float(f"{overrides[k] * lr_scale:.6g}")
        rows.append({"name": c.family, "trainer": m.trainer, "overrides": overrides})
    return rows
