"""The demo's headline: the matched-forgetting comparison as a short table and a plain-words
paragraph, both generated from a ``results.json`` benchmark object (nothing hand-written).

Every run is read where its forgetting axis (``matched.x``, the forget-specific token
probability) first falls to ``level`` times its start (:func:`summarize_matched`); there the
methods are compared on what they keep of the forget answers' generic tokens
(``forget_generic_prob``, higher is better) and how far they drift from the retain model
(``kl_to_retain``, lower is better). Methods are grouped by what their trainer is
(:data:`ROLES`, read from each run's config): uniform weighting, label-free heuristics, ATWU,
and the oracle, which is given the true token labels.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from atwu_plugin.leaderboard.matched import summarize_matched
from atwu_plugin.tasks import RETAIN_AUX

GENERIC, KL = "forget_generic_prob", "kl_to_retain"

# trainer config -> role; every other trainer is a label-free token-weighting heuristic
ROLES = {
    "ATWU": "atwu",
    "TW_Oracle": "oracle",
    "TW_GA": "uniform",
    "TW_GradDiff": "uniform",
    "TW_NPO": "uniform",
    "TW_SimNPO": "uniform",
}
ROLE_LABELS = {"atwu": "ATWU (learned, no labels)", "oracle": "oracle (true labels)",
               "privileged": "privileged (uses the retain model)",
               "uniform": "uniform (every token)", "heuristic": "heuristic (no labels)"}
ROLE_ORDER = ("atwu", "oracle", "privileged", "heuristic", "uniform")
# the baselines ATWU is measured against: neither labels nor the retain model
LABEL_FREE_ROLES = ("uniform", "heuristic")


def headline_level(bench: Mapping[str, Any], preferred: float = 0.5) -> Optional[float]:
    """``preferred`` if the benchmark's matched levels include it, else its first level."""
    levels = (bench.get("matched") or {}).get("levels") or []
    if not levels:
        return None
    return preferred if preferred in levels else levels[0]


def method_roles(bench: Mapping[str, Any]) -> Dict[str, str]:
    roles = {}
    for run in bench.get("runs", []):
        method = (run.get("config") or {}).get("method") or {}
        overrides = method.get("overrides") or {}
        aux = overrides.get("method_args.aux_model_path", (overrides.get("method_args") or {}).get("aux_model_path"))
        # given the benchmark's retain model (what exact unlearning produces): never a label-free baseline
        role = "privileged" if aux == RETAIN_AUX else ROLES.get(method.get("trainer", ""), "heuristic")
        roles.setdefault(run["method"], role)
    return roles


def headline_rows(bench: Mapping[str, Any], level: Optional[float] = None) -> List[Dict[str, Any]]:
    """One row per method at ``level`` (default :func:`headline_level`): ``{"method", "role",
    "generic", "kl", "n_reached", "n_runs"}`` (``generic``/``kl`` None when no seed got there),
    ordered ATWU, oracle, heuristics, uniform; within a role by generic-token probability."""
    level = headline_level(bench) if level is None else level
    if level is None:
        return []
    roles = method_roles(bench)
    rows = []
    for r in summarize_matched(bench):
        if r["level"] != level:
            continue
        stats = r["stats"]
        rows.append({"method": r["method"], "role": roles.get(r["method"], "heuristic"),
                     "generic": (stats.get(GENERIC) or (None, None))[0], "kl": (stats.get(KL) or (None, None))[0],
                     "n_reached": r["n_reached"], "n_runs": r["n_runs"]})
    rows.sort(key=lambda row: (ROLE_ORDER.index(row["role"]), row["generic"] is None, -(row["generic"] or 0.0)))
    return rows


def _g(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3f}"


def _k(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.2f}"


def render_headline_table(rows: List[Dict[str, Any]], level: float, x: str = "forget_specific_prob") -> str:
    """A Markdown table (readable as plain text too)."""
    lines = [f"At matched forgetting: each run read where `{x}` first falls to {level:.0%} of its start.", "",
             "| Method | Kind | Generic-token probability ↑ | KL to the retain model ↓ | Reached |",
             "|:---|:---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {ROLE_LABELS[r['role']]} | {_g(r['generic'])} | {_k(r['kl'])} | "
                     f"{r['n_reached']}/{r['n_runs']} |")
    return "\n".join(lines)


def _best(rows: List[Dict[str, Any]], role: str) -> Optional[Dict[str, Any]]:
    cands = [r for r in rows if r["role"] == role and r["generic"] is not None]
    return max(cands, key=lambda r: r["generic"]) if cands else None


def _pair(r: Dict[str, Any]) -> str:
    return f"{r['method']} {_g(r['generic'])} / {_k(r['kl'])}"


def headline_summary(bench: Mapping[str, Any], level: Optional[float] = None) -> str:
    """One paragraph in plain words, every number taken from :func:`headline_rows`."""
    level = headline_level(bench) if level is None else level
    rows = headline_rows(bench, level)
    if not rows:
        return ("No matched-forgetting comparison: the spec has no `matched:` section or no run logged a "
                "trajectory, so only the final-budget table applies.")
    reached = [r for r in rows if r["generic"] is not None]
    missed = [r["method"] for r in rows if r["generic"] is None]
    pct = f"{level:.0%}"
    out = [f"Every method was read at the moment it had pushed the probability of the forget answers' "
           f"specific tokens (the facts to remove) down to {pct} of where it started. There, it matters what "
           f"each kept of the other, generic tokens of those answers (higher is better) and how far it "
           f"drifted from the retain model, a model never trained on the forget set (KL, lower is better); "
           f"generic probability / KL:"]
    groups = []
    for role, label in (("atwu", "ATWU, which learns its token weights without labels"),
                        ("uniform", "uniform unlearning of every token"),
                        ("heuristic", "label-free heuristics"),
                        ("oracle", "the oracle, given the true token labels"),
                        ("privileged", "methods given the retain model")):
        members = [r for r in reached if r["role"] == role]
        if members:
            groups.append(f"{label}: " + ", ".join(_pair(r) for r in members))
    out.append("; ".join(groups) + ".")
    if missed:
        out.append(f"{', '.join(missed)} never forgot that much within the training budget "
                   f"(no value at {pct}).")
    atwu, uniform, heur, oracle = (_best(rows, role) for role in ("atwu", "uniform", "heuristic", "oracle"))
    if atwu is not None:
        others = [r for r in reached if r["role"] in LABEL_FREE_ROLES]
        beaten = [r for r in others if r["generic"] < atwu["generic"]]
        ahead = [r for r in others if r["generic"] >= atwu["generic"]]
        if others and not ahead:
            out.append(f"So ATWU keeps more of the generic tokens than every uniform and heuristic method here "
                       f"(+{atwu['generic'] - max(r['generic'] for r in others):.3f} over the best of them, "
                       f"{max(others, key=lambda r: r['generic'])['method']}).")
        elif others:
            out.append(f"ATWU keeps more of the generic tokens than {len(beaten)} of the {len(others)} uniform and "
                       f"heuristic methods; {', '.join(r['method'] for r in ahead)} "
                       f"{'keeps' if len(ahead) == 1 else 'keep'} more.")
        kl_others = [r for r in others if r["kl"] is not None]
        if atwu["kl"] is not None and kl_others:
            lower = [r for r in kl_others if r["kl"] > atwu["kl"]]
            out.append(f"Its KL to the retain model is lower than {len(lower)} of those {len(kl_others)} methods'"
                       + (" (all of them)." if len(lower) == len(kl_others) else "."))
        if oracle is not None and uniform is not None and oracle["generic"] > uniform["generic"]:
            gap = oracle["generic"] - uniform["generic"]
            closed = (atwu["generic"] - uniform["generic"]) / gap
            out.append(f"Of the gap in generic-token probability between the best uniform method ({uniform['method']}) "
                       f"and the oracle ({gap:.3f}), ATWU closes {closed:.0%}.")
        elif oracle is not None:
            out.append(f"The oracle ({_pair(oracle)}) does not keep more generic tokens than uniform unlearning "
                       f"here, so this run does not show what token weighting can gain.")
    elif not any(r["role"] == "atwu" for r in rows):
        out.append("There is no ATWU run in these results.")
    return " ".join(out)
