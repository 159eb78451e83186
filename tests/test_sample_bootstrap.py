"""Fixed resamplings of a split's samples (evals/sample_bootstrap.py) and the paired interval
they give span AUROC (leaderboard/paired.py)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from atwu_plugin.evals.sample_bootstrap import auroc_replicates, sample_draws
from atwu_plugin.leaderboard.paired import paired_difference


def tokens(n_samples=30, per_sample=12, signal=1.0, seed=0):
    """The same tokens and labels for every ``seed`` (as two methods on one benchmark), scores with
    ties (rounded), positives scored ``signal`` higher on average."""
    sample = np.repeat(np.arange(n_samples), per_sample)
    positive = np.random.default_rng(0).random(sample.size) < 0.3
    noise = np.random.default_rng(seed).standard_normal(sample.size)
    scores = np.round(noise + signal * positive, 1)
    return scores, positive, sample


def test_draws_are_multiplicities_fixed_by_n_and_seed():
    d = sample_draws(25, 50)
    assert d.shape == (50, 25) and (d.sum(axis=1) == 25).all() and (d >= 0).all()
    assert (sample_draws(25, 50) == d).all() and not (sample_draws(25, 50, seed=1) == d).all()
    with pytest.raises(ValueError, match="n_samples >= 1"):
        sample_draws(0)


def test_replicates_match_weighted_sklearn_with_ties():
    scores, positive, sample = tokens()
    draws = sample_draws(30, 40)
    got = auroc_replicates(scores, positive, sample, draws, chunk=7)  # chunks that do not divide 40
    for r in range(40):
        assert got[r] == pytest.approx(roc_auc_score(positive, scores, sample_weight=draws[r][sample]), abs=1e-12)
    # the identity draw (every sample once) is the plain AUROC
    assert auroc_replicates(scores, positive, sample, np.ones((1, 30)))[0] == pytest.approx(roc_auc_score(positive, scores))


def test_a_draw_without_one_class_is_nan_and_bad_ids_are_named():
    scores, positive, sample = np.array([0.1, 0.9]), np.array([False, True]), np.array([0, 1])
    got = auroc_replicates(scores, positive, sample, np.array([[1, 1], [2, 0], [0, 2]]))
    assert got[0] == 1.0 and np.isnan(got[1]) and np.isnan(got[2])
    with pytest.raises(ValueError, match=r"sample ids must lie in \[0, 2\)"):
        auroc_replicates(scores, positive, np.array([0, 2]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="2 scores, 1 labels"):
        auroc_replicates(scores, positive[:1], sample, np.ones((1, 2)))


def _run(method, seed, signal, trainer):
    scores, positive, sample = tokens(signal=signal, seed=10 * seed + len(method))
    values = auroc_replicates(scores, positive, sample, sample_draws(30, 500))
    return {"method": method, "seed": seed, "config": {"method": {"trainer": trainer}},
            "metrics": {"span_auroc": roc_auc_score(positive, scores)},
            "bootstrap": {"span_auroc": {"n_samples": 30, "seed": 0, "values": values.tolist()}}}


def test_one_seed_gets_an_interval_over_samples():
    b = {"benchmark": "b", "runs": [_run("ATWU", 0, 2.0, "ATWU"), _run("RF", 0, 0.5, "TW_RetainFrequency")]}
    p = paired_difference(b, "ATWU", "RF", "span_auroc")
    assert p.how == "bootstrap over samples (one seed)" and p.replicates == 500
    assert p.lo < p.diff < p.hi and p.significant  # signal 2.0 vs 0.5: far apart
    # equal signal: the interval covers 0
    same = {"benchmark": "b", "runs": [_run("ATWU", 0, 1.0, "ATWU"), _run("RF", 0, 1.0, "TW_RetainFrequency")]}
    q = paired_difference(same, "ATWU", "RF", "span_auroc")
    assert q.lo < 0 < q.hi
    # seeds pooled hierarchically; a run without replicates falls back to the t-interval over seeds
    runs = [_run(m, s, sig, t) for m, sig, t in (("ATWU", 2.0, "ATWU"), ("RF", 0.5, "TW_RetainFrequency"))
            for s in (0, 1)]
    assert paired_difference({"benchmark": "b", "runs": runs}, "ATWU", "RF", "span_auroc").how == \
        "bootstrap over seeds and samples"
    del runs[0]["bootstrap"]
    assert paired_difference({"benchmark": "b", "runs": runs}, "ATWU", "RF", "span_auroc").how == "t over seeds"


def test_replicates_of_different_resamplings_are_refused():
    a, b = _run("ATWU", 0, 2.0, "ATWU"), _run("RF", 0, 0.5, "TW_RetainFrequency")
    b["bootstrap"]["span_auroc"]["n_samples"] = 29
    with pytest.raises(ValueError, match="different resamplings"):
        paired_difference({"benchmark": "b", "runs": [a, b]}, "ATWU", "RF", "span_auroc")
