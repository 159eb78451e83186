"""ATWU vs the strongest label-free baseline (leaderboard/paired.py): paired differences and intervals."""

import numpy as np
import pytest

from atwu_plugin.leaderboard.matched import run_values_at
from atwu_plugin.leaderboard.paired import paired_difference, render_paired_markdown, strongest_baseline

MATCHED = {"x": "forget_prob", "levels": [0.5], "metrics": ["kl_to_retain"]}
TRAINERS = {"ATWU": "ATWU", "NPO": "TW_NPO", "RF": "TW_RetainFrequency", "Oracle": "TW_Oracle"}


def run(method, seed, kl_scale, n=40, samples=True, noise=0.0):
    """x (forget_prob) falls from 0.8 to 0.2 over 5 points; per-sample KL grows as kl_scale * (1 - x/0.8)
    with per-sample spread, so at 0.5x the pooled KL is about kl_scale / 2."""
    rng = np.random.default_rng(seed * 100 + sorted(TRAINERS).index(method))
    base = 1 + 0.5 * rng.standard_normal(n) * (1 if noise else 0)
    spread = np.linspace(0.5, 1.5, n)
    pts = []
    for i, x in enumerate(np.linspace(0.8, 0.2, 5)):
        xs = x * spread / spread.mean()
        kl_sum = kl_scale * (1 - x / 0.8) * base * 10
        point = {"step": i, "forget_prob": float(xs.mean()), "kl_to_retain": float(kl_sum.sum() / (10 * n))}
        if samples:
            point["samples"] = {"forget_prob": {"sum": xs.tolist(), "n": [1] * n},
                                "kl_to_retain": {"sum": kl_sum.tolist(), "n": [10] * n}}
        pts.append(point)
    return {"method": method, "seed": seed, "config": {"method": {"trainer": TRAINERS[method]}},
            "metrics": {"span_auroc": {"ATWU": 0.9, "RF": 0.8 + 0.01 * seed, "NPO": None, "Oracle": 1.0}[method]},
            "trajectory": pts}


def bench(scales, samples=True, noise=0.0, seeds=(0, 1, 2)):
    runs = [run(m, s, scales[m] * (1 + 0.02 * s), samples=samples, noise=noise) for m in scales for s in seeds]
    return {"benchmark": "b", "matched": MATCHED, "runs": runs}


def test_strongest_baseline_is_label_free_and_not_atwu():
    b = bench({"ATWU": 1.0, "NPO": 2.0, "RF": 1.5, "Oracle": 0.1})
    assert strongest_baseline(b, "kl_to_retain", 0.5)[0] == "RF"  # Oracle (best) is not label-free
    assert strongest_baseline(b, "span_auroc")[0] == "RF"  # NPO has no span metric
    assert strongest_baseline(b, "kl_to_retain", 0.5, exclude=["RF"])[0] == "NPO"


def test_without_samples_the_interval_is_t_over_seeds():
    b = bench({"ATWU": 1.0, "RF": 1.5}, samples=False)
    p = paired_difference(b, "ATWU", "RF", "kl_to_retain", 0.5)
    per_seed = [run_values_at(r, "forget_prob", 0.5, ["kl_to_retain"])["kl_to_retain"] for r in b["runs"]]
    assert p.diff == pytest.approx(np.mean(per_seed[:3]) - np.mean(per_seed[3:]))
    assert p.how == "t over seeds" and p.n_seeds == 3 and p.lo < p.diff < p.hi and p.significant
    end = paired_difference(b, "ATWU", "RF", "span_auroc")
    assert end.diff == pytest.approx(0.9 - 0.81) and end.how == "t over seeds"
    one = paired_difference(bench({"ATWU": 1.0, "RF": 1.5}, samples=False, seeds=(0,)), "ATWU", "RF",
                          "kl_to_retain", 0.5)
    assert one.lo is None and one.significant is None and one.how == "one seed: no interval"


def test_bootstrap_over_seeds_and_samples():
    b = bench({"ATWU": 1.0, "RF": 1.5}, noise=1.0)
    p = paired_difference(b, "ATWU", "RF", "kl_to_retain", 0.5, replicates=400)
    assert p.how == "bootstrap over seeds and samples" and p.replicates == 400
    assert p.lo < p.diff < p.hi and p.significant  # 1.0 vs 1.5: far apart
    again = paired_difference(b, "ATWU", "RF", "kl_to_retain", 0.5, replicates=400)
    assert (again.lo, again.hi) == (p.lo, p.hi)  # seeded: the same interval every time
    # the same method against itself but another seed draw of noise: the interval covers 0
    same = bench({"ATWU": 1.0, "RF": 1.0}, noise=1.0)
    q = paired_difference(same, "ATWU", "RF", "kl_to_retain", 0.5, replicates=400)
    assert q.lo < 0 < q.hi and not q.significant


def test_render_names_the_baseline_and_the_interval():
    b = bench({"ATWU": 1.0, "NPO": 2.0, "RF": 1.5, "Oracle": 0.1})
    page = render_paired_markdown(b, [("kl_to_retain", 0.5), ("span_auroc", None), ("forget_generic_prob", 0.5)])
    row = next(line for line in page.splitlines() if line.startswith("| kl_to_retain"))
    assert "| RF |" in row and "bootstrap over seeds and samples" in row and row.endswith("| yes |")
    assert "| span_auroc ↑ | end of run | RF |" in page
    assert "none reached it in every seed" in page  # no run logged forget_generic_prob
    assert render_paired_markdown({"benchmark": "b", "runs": []}, [("kl_to_retain", 0.5)]) == ""


def test_unknown_metrics_need_a_direction():
    b = bench({"ATWU": 1.0, "RF": 1.5})
    for r in b["runs"]:
        r["metrics"]["neighbor_prob"] = 0.5 if r["method"] == "RF" else 0.4
    with pytest.raises(ValueError, match="neighbor_prob.*unknown direction"):
        strongest_baseline(b, "neighbor_prob")
    assert strongest_baseline(b, "neighbor_prob", directions={"neighbor_prob": "lower"}) is not None
    page = render_paired_markdown(b, [("neighbor_prob", None)], {"neighbor_prob": "higher"})
    assert "| neighbor_prob ↑ | end of run | RF | 0.5000 | 0.4000 |" in page


def test_versus_table_gives_every_method_minus_the_reference():
    from atwu_plugin.leaderboard.paired import render_versus_markdown

    b = bench({"ATWU": 1.0, "RF": 1.5, "NPO": 1.0}, samples=False)
    page = render_versus_markdown(b, "ATWU", [("kl_to_retain", 0.5), ("span_auroc", None)])
    rf = next(line for line in page.splitlines() if line.startswith("| RF |"))
    npo = next(line for line in page.splitlines() if line.startswith("| NPO |"))
    assert rf.count("**") == 4  # both RF columns differ significantly (kl higher, span AUROC lower)
    assert npo.endswith("| – |")  # NPO has no span AUROC
    assert "| Method | kl_to_retain ↓ at 0.5× `forget_prob` | span_auroc ↑ |" in page
    assert render_versus_markdown(b, "missing", [("kl_to_retain", 0.5)]) == ""
