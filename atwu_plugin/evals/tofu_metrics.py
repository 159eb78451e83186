"""TOFU metrics with OpenUnlearning's (OU) definitions, as pure numpy/scipy functions.

No model code lives here: the lite evaluator (``atwu_plugin.evals.tofu_eval``) computes the
per-sample average negative log-likelihoods and the generations, and these functions turn
them into the numbers OU's ``TOFUEvaluator`` reports (OU snapshot d3d7cf9,
``src/evals/metrics/{memorization,privacy,utility,utils}.py`` and
``configs/eval/tofu_metrics/*.yaml``).

Vocabulary used in the docstrings:

* ``avg_nll`` of one (question, answer) pair: the sum of the token cross-entropies over the
  answer tokens (the target positions of ``labels``, end-of-sequence token included) divided
  by the number of answer tokens. OU calls it ``avg_loss``.
* A "multi-option" input is either a 1-D array ``[N]`` (one answer per sample) or a 2-D array
  ``[N, K]`` / a list of ``N`` sequences (``K`` options per sample, e.g. the perturbed
  answers). OU's ``aggregate_to_1D`` reduces the options of a sample by their mean; here a
  ragged list (different ``K`` per sample) is accepted too and reduced the same way.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Union

import numpy as np
from scipy import stats

# Additive constant OU uses in every ratio (truth ratio, normalised probability).
EPS = 1e-10

ArrayLike = Union[np.ndarray, Sequence[float], Sequence[Sequence[float]]]


# --------------------------------------------------------------------------- helpers


def _per_sample_options(x: ArrayLike) -> List[np.ndarray]:
    """Split a multi-option input into one float64 array of options per sample."""
    if isinstance(x, np.ndarray):
        if x.ndim == 0:
            raise ValueError("expected one value (or one list of options) per sample")
        if x.ndim == 1:
            return [np.asarray([v], dtype=np.float64) for v in x]
        return [np.asarray(row, dtype=np.float64).ravel() for row in x]
    rows = []
    for v in x:
        arr = np.asarray(v, dtype=np.float64).ravel()
        if arr.size == 0:
            raise ValueError("a sample has no options")
        rows.append(arr)
    return rows


def mean_over_options(x: ArrayLike) -> np.ndarray:
    """``[N]``: the mean over each sample's options (OU's ``aggregate_to_1D``)."""
    return np.asarray([row.mean() for row in _per_sample_options(x)], dtype=np.float64)


# ----------------------------------------------------------------------- probability


def sample_probability(avg_nll: ArrayLike) -> np.ndarray:
    """Length-normalised probability of an answer: ``exp(-avg_nll)``.

    ``avg_nll = sum_t CE_t / n_answer_tokens``, so this is the geometric mean of the
    per-token probabilities of the answer. Mirrors OU ``evaluate_probability`` (the ``prob``
    entry of the ``probability`` metric: forget_Q_A_Prob, retain_Q_A_Prob, ...). Accepts any
    shape and returns the same shape.
    """
    return np.exp(-np.asarray(avg_nll, dtype=np.float64))


def mean_probability(avg_nll: ArrayLike) -> float:
    """Aggregate of OU's ``probability`` metric: ``mean_i exp(-avg_nll_i)``.

    With several options per sample (a 2-D input) OU first averages the per-option
    probabilities of a sample, then averages over samples; so does this function.
    """
    probs = [sample_probability(row).mean() for row in _per_sample_options(avg_nll)]
    return float(np.mean(probs))


def normalized_probability(correct_avg_nll: ArrayLike, wrong_avg_nll: ArrayLike) -> np.ndarray:
    """Per-sample probability of the correct answer normalised over the answer options.

    ``p_i = c_i / (c_i + sum_k w_ik + 1e-10)`` with ``c_i = exp(-avg_nll(answer_i))`` and
    ``w_ik = exp(-avg_nll(perturbed_answer_ik))``: the *sum* of the probabilities of the
    wrong options (not the probability of their mean loss, unlike the truth ratio). If the
    correct side has several options their probabilities are averaged first.
    Mirrors OU ``probability_w_options`` (ra_Q_A_Prob_normalised, wf_Q_A_Prob_normalised);
    its aggregate is the mean of the returned array (``mean_normalized_probability``).
    """
    correct = np.asarray([sample_probability(r).mean() for r in _per_sample_options(correct_avg_nll)])
    wrong = np.asarray([sample_probability(r).sum() for r in _per_sample_options(wrong_avg_nll)])
    if correct.shape != wrong.shape:
        raise ValueError(f"{correct.shape[0]} correct vs {wrong.shape[0]} wrong samples")
    return correct / (correct + wrong + EPS)


def mean_normalized_probability(correct_avg_nll: ArrayLike, wrong_avg_nll: ArrayLike) -> float:
    """Aggregate of OU ``probability_w_options``: mean of ``normalized_probability``."""
    return float(np.mean(normalized_probability(correct_avg_nll, wrong_avg_nll)))


# ----------------------------------------------------------------------- truth ratio


def truth_ratio(
    correct_avg_nll: ArrayLike, wrong_avg_nll: ArrayLike, definition: str = "wrong_over_correct"
) -> np.ndarray:
    """Per-sample truth ratio, OU ``truth_ratio`` metric.

    The options of each side are reduced by the mean of their ``avg_nll`` *before*
    exponentiating: ``P_c = exp(-mean_k avg_nll(correct_k))`` and
    ``P_w = exp(-mean_k avg_nll(wrong_k))`` (a geometric mean over the perturbed answers).

    * ``definition="wrong_over_correct"`` (TOFU's, used by every TOFU metric in OU:
      forget_truth_ratio, retain_Truth_Ratio, ra/wf_Truth_Ratio and forget_quality):
      ``tr = P_w / (P_c + 1e-10)``.
    * ``definition="correct_over_total"`` (OU's ``prob_mean`` aggregator):
      ``tr = P_c / (P_c + P_w + 1e-10)``.

    In OU the "correct" side is ``paraphrased_answer`` for the forget and retain splits and
    ``answer`` for real_authors/world_facts; the "wrong" side is always ``perturbed_answer``.
    """
    c_nll = mean_over_options(correct_avg_nll)
    w_nll = mean_over_options(wrong_avg_nll)
    if c_nll.shape != w_nll.shape:
        raise ValueError(f"{c_nll.shape[0]} correct vs {w_nll.shape[0]} wrong samples")
    p_c = np.exp(-c_nll)
    p_w = np.exp(-w_nll)
    if definition == "wrong_over_correct":
        return p_w / (p_c + EPS)
    if definition == "correct_over_total":
        return p_c / (p_c + p_w + EPS)
    raise ValueError(f"unknown truth ratio definition {definition!r}")


def closer_to_1_better(tr: ArrayLike) -> float:
    """Forget-split aggregate of the truth ratio: ``mean_i min(tr_i, 1 / (tr_i + 1e-10))``.

    1 when the paraphrased and perturbed answers are equally likely (nothing known).
    Mirrors OU ``truth_ratio`` with ``aggregator: closer_to_1_better`` (forget_truth_ratio).
    """
    tr = np.asarray(tr, dtype=np.float64)
    return float(np.mean(np.minimum(tr, 1.0 / (tr + EPS))))


def true_better(tr: ArrayLike) -> float:
    """Utility-split aggregate: ``mean_i max(0, 1 - tr_i)`` (higher = true answer preferred).

    Mirrors OU ``truth_ratio`` with ``aggregator: true_better`` (retain_Truth_Ratio,
    ra_Truth_Ratio, wf_Truth_Ratio).
    """
    tr = np.asarray(tr, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, 1.0 - tr)))


def prob_mean(tr: ArrayLike) -> float:
    """``mean_i tr_i``; meant for ``definition="correct_over_total"`` (OU's ``prob_mean``)."""
    return float(np.mean(np.asarray(tr, dtype=np.float64)))


TRUTH_RATIO_AGGREGATORS: Dict[str, Callable[[ArrayLike], float]] = {
    "closer_to_1_better": closer_to_1_better,
    "true_better": true_better,
    "prob_mean": prob_mean,
}


def aggregate_truth_ratio(correct_avg_nll: ArrayLike, wrong_avg_nll: ArrayLike, aggregator: str):
    """``(agg_value, per_sample_tr)`` exactly as OU's ``truth_ratio`` metric: the per-sample
    definition is ``correct_over_total`` for ``prob_mean`` and ``wrong_over_correct`` otherwise."""
    if aggregator not in TRUTH_RATIO_AGGREGATORS:
        known = sorted(TRUTH_RATIO_AGGREGATORS)
        raise ValueError(f"unknown truth ratio aggregator {aggregator!r}; expected one of {known}")
    definition = "correct_over_total" if aggregator == "prob_mean" else "wrong_over_correct"
    tr = truth_ratio(correct_avg_nll, wrong_avg_nll, definition=definition)
    return TRUTH_RATIO_AGGREGATORS[aggregator](tr), tr


# ---------------------------------------------------------------- forget quality, MU


def ks_test(forget_tr: ArrayLike, retain_model_forget_tr: ArrayLike):
    """Two-sample Kolmogorov-Smirnov test (scipy defaults: two-sided, ``method="auto"``).

    Returns ``(statistic, pvalue)``."""
    a = np.asarray(forget_tr, dtype=np.float64)
    b = np.asarray(retain_model_forget_tr, dtype=np.float64)
    res = stats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


def forget_quality(forget_tr: ArrayLike, retain_model_forget_tr: ArrayLike) -> float:
    """TOFU forget quality: p-value of ``scipy.stats.ks_2samp(tr_model, tr_retain)``.

    ``tr_model`` are the per-sample forget truth ratios (``wrong_over_correct``, paraphrased vs
    perturbed answers) of the evaluated model, ``tr_retain`` those of the retain model on the
    same forget questions. Higher = less distinguishable from the retain model. Mirrors OU
    ``ks_test`` (forget_quality), which compares the raw ratios (OU's unused helper
    ``get_forget_quality`` compares ``1/(tr+1e-10)``; the KS statistic, hence the p-value, is
    the same for both since the transform is strictly monotone).
    """
    return ks_test(forget_tr, retain_model_forget_tr)[1]


# OU's model_utility pre_compute entries, in config order.
MODEL_UTILITY_KEYS = (
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
)


def model_utility(values: Union[Mapping[str, float], Iterable[float]]) -> float:
    """Harmonic mean (``scipy.stats.hmean``) of the nine utility numbers; 0 if any is 0.

    The nine numbers (``MODEL_UTILITY_KEYS``): on the retain split the mean probability,
    ROUGE-L recall and truth ratio (``true_better``); on real authors and on world facts the
    normalised probability (``probability_w_options``), ROUGE-L recall and truth ratio
    (``true_better``, answer vs perturbed). Mirrors OU ``hm_aggregate`` (model_utility). A
    mapping must contain exactly ``MODEL_UTILITY_KEYS``; an iterable is used as given.
    """
    if isinstance(values, Mapping):
        missing = [k for k in MODEL_UTILITY_KEYS if values.get(k) is None]
        extra = sorted(set(values) - set(MODEL_UTILITY_KEYS))
        if missing or extra:
            raise ValueError(
                f"model_utility needs {list(MODEL_UTILITY_KEYS)}; missing {missing}, unexpected {extra}"
            )
        vals = [values[k] for k in MODEL_UTILITY_KEYS]
    else:
        vals = list(values)
    arr = np.asarray(vals, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("model_utility of no values")
    if np.any(arr == 0):
        return 0.0  # scipy's hmean returns 0 too, with a divide-by-zero warning
    return float(stats.hmean(arr))


# ----------------------------------------------------------------------------- ROUGE

_SCORER = None


def _scorer():
    global _SCORER
    if _SCORER is None:
        import logging

        from rouge_score import rouge_scorer

        logging.getLogger("absl").setLevel(logging.WARNING)
        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    return _SCORER


def rouge_scores(generation: str, ground_truth: str) -> Dict[str, float]:
    """``rouge1_recall``, ``rougeL_f1``, ``rougeL_recall`` of a generation against the ground
    truth, with ``rouge_score.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)`` and the
    ground truth as the target (``scorer.score(target=gt, prediction=gen)``): recall =
    LCS(gt, gen) / len(gt) on the scorer's lower-cased, alphanumeric, Porter-stemmed tokens.
    Mirrors OU ``eval_text_similarity``."""
    s = _scorer().score(ground_truth, generation)
    return {
        "rouge1_recall": float(s["rouge1"].recall),
        "rougeL_f1": float(s["rougeL"].fmeasure),
        "rougeL_recall": float(s["rougeL"].recall),
    }


def rouge_l_recall(generation: str, ground_truth: str) -> float:
    """ROUGE-L recall of ``generation`` against ``ground_truth`` (OU's ``rougeL_recall``, the
    ``rouge_type`` of forget/retain/ra/wf_Q_A_ROUGE); see ``rouge_scores``."""
    return rouge_scores(generation, ground_truth)["rougeL_recall"]


def clean_generation(text: str, stopwords: Sequence[str] = ()) -> str:
    """Post-process a decoded generation as OU does: for each stop string in order, keep the
    text before its first occurrence; then strip surrounding whitespace. OU's stop strings are
    the decoded end-of-sequence token followed by the configured ``stopwords`` (none for TOFU)."""
    for word in stopwords:
        if word and word in text:
            text = text.split(word)[0]
    return text.strip()


def ground_truth_text(full_text: str, prompt_text: str) -> str:
    """OU's ROUGE ground truth: the decoded full sequence (prompt + answer) with every
    occurrence of the decoded prompt removed, stripped. Both texts are decoded with
    ``skip_special_tokens=True, clean_up_tokenization_spaces=True``."""
    return full_text.replace(prompt_text, "").strip()


__all__ = [
    "EPS",
    "MODEL_UTILITY_KEYS",
    "TRUTH_RATIO_AGGREGATORS",
    "aggregate_truth_ratio",
    "clean_generation",
    "closer_to_1_better",
    "forget_quality",
    "ground_truth_text",
    "ks_test",
    "mean_normalized_probability",
    "mean_over_options",
    "mean_probability",
    "model_utility",
    "normalized_probability",
    "prob_mean",
    "rouge_l_recall",
    "rouge_scores",
    "sample_probability",
    "true_better",
    "truth_ratio",
]
