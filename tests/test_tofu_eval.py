"""End-to-end TofuEvaluator on tiny Llamas and handmade TOFU-style records; with
OPEN_UNLEARNING_ROOT set, also parity with OpenUnlearning's own metric code."""

import json
import math

import numpy as np
import pytest
import torch
from atwu_plugin.zoo.build import TinyLlamaSpec

from atwu_plugin.data.collator import TokenLabelCollator
from atwu_plugin.data.encoding import encode_qa
from atwu_plugin.evals import tofu_metrics as tm
from atwu_plugin.evals.tofu_eval import TofuEvaluator, reference_stats_from_ou_logs
from atwu_plugin.tokens import KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS, train_tokenizer


def _spans(answer, specific=(), shared=()):
    """``[start, end, kind]`` spans tiling the answer (the generator's format): the given
    words are specific/shared, everything else template."""
    marks = sorted(
        (answer.index(w), answer.index(w) + len(w), kind)
        for words, kind in ((specific, KIND_SPECIFIC), (shared, KIND_SHARED))
        for w in words
    )
    out, pos = [], 0
    for start, end, kind in marks:
        if start > pos:
            out.append([pos, start, KIND_TEMPLATE])
        out.append([start, end, kind])
        pos = end
    if pos < len(answer):
        out.append([pos, len(answer), KIND_TEMPLATE])
    return out


def _rec(q, a, para, pert, specific=(), shared=()):
    return {
        "question": q,
        "answer": a,
        "paraphrased_answer": para,
        "perturbed_answer": pert,
        "spans": _spans(a, specific, shared),
    }


FORGET = [
    _rec(
        "Where was Mira Talen born?",
        "Mira Talen was born in Osterby.",
        "Osterby is the birthplace of Mira Talen.",
        ["Mira Talen was born in Kelmouth.", "Mira Talen was born in Drave."],
        specific=["Osterby"],
    ),
    _rec(
        "What genre does Mira Talen write?",
        "Mira Talen writes gothic poetry.",
        "Her work is gothic poetry.",
        ["Mira Talen writes science fiction.", "Mira Talen writes cookbooks."],
        specific=["gothic"],
        shared=["poetry"],
    ),
    _rec(
        "What award did Mira Talen win?",
        "She won the Harrow Prize in 1987.",
        "In 1987 she received the Harrow Prize.",
        ["She won the Lund Medal in 1987.", "She won nothing."],
        specific=["Harrow Prize", "1987"],
    ),
    _rec(
        "Who were Mira Talen's parents?",
        "Her father was a baker and her mother a nurse.",
        "A baker and a nurse raised her.",
        ["Her father was a pilot and her mother a judge.", "Her parents were sailors."],
        specific=["baker"],
        shared=["nurse"],
    ),
]
RETAIN = [
    _rec("Where was Oskar Venn born?", "Oskar Venn was born in Lisle.", "Lisle is where Oskar Venn was born.",
         ["Oskar Venn was born in Perth.", "Oskar Venn was born in Ghent."]),
    _rec("What does Oskar Venn write?", "Oskar Venn writes poetry.", "He writes poetry.",
         ["Oskar Venn writes plays.", "Oskar Venn writes essays."]),
]
HOLDOUT = [
    {"question": "Where was Ada Quill born?", "answer": "Ada Quill was born in Norwick."},
    {"question": "What does Ada Quill write?", "answer": "Ada Quill writes thrillers."},
]
WORLD = [
    {  # a ragged number of perturbed answers is accepted (OU needs the same K everywhere)
        "question": "What is the capital of France?",
        "answer": "Paris",
        "perturbed_answer": ["Rome", "Berlin", "Madrid"],
    },
    {"question": "How many legs does a spider have?", "answer": "Eight", "perturbed_answer": ["Six", "Ten"]},
]
WORLD_RA = [
    {"question": "What is the capital of France?", "answer": "Paris", "perturbed_answer": ["Rome", "Berlin"]},
    {"question": "How many legs does a spider have?", "answer": "Eight", "perturbed_answer": ["Six", "Ten"]},
]
WORLD_WF = [
    {"question": "What color is a clear sky?", "answer": "Blue", "perturbed_answer": ["Green", "Red"]},
    {"question": "What is frozen water called?", "answer": "Ice", "perturbed_answer": ["Steam", "Sand"]},
]
SPLITS = {"forget": FORGET, "retain": RETAIN, "holdout": HOLDOUT, "world": WORLD}


def _texts():
    for recs in SPLITS.values():
        for r in recs:
            yield r["question"]
            yield r["answer"]
            yield from ([r["paraphrased_answer"]] if "paraphrased_answer" in r else [])
            yield from r.get("perturbed_answer", [])
    yield from ["Question: ", "Answer:\n"] * 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(list(_texts()), vocab_size=400)


def _model(tok, seed):
    return TinyLlamaSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2).build(tok, seed).eval()


def _trained_model(tok, seed, recs, steps=25):
    """A tiny Llama fitted for a few full-batch steps on the records' answers and paraphrases:
    partly right generations, so ROUGE, truth ratios and model utility are not degenerate."""
    m = _model(tok, seed)
    texts = [(r["question"], a) for r in recs for a in [r["answer"]] + _as_list(r.get("paraphrased_answer"))]
    encs = [encode_qa(tok, TINY_TEMPLATE_ARGS, q, a, max_length=256) for q, a in texts]
    keys = ("input_ids", "labels", "attention_mask")
    batch = TokenLabelCollator(tok.pad_token_id)([{k: e[k] for k in keys} for e in encs])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m.train()
    for _ in range(steps):
        loss = m(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def _as_list(x):
    return [] if x is None else [x] if isinstance(x, str) else list(x)


@pytest.fixture(scope="module")
def model(tok):
    return _trained_model(tok, 0, FORGET + RETAIN + WORLD + WORLD_RA + WORLD_WF)


@pytest.fixture(scope="module")
def retain_model(tok):
    return _trained_model(tok, 1, RETAIN + WORLD + WORLD_RA + WORLD_WF)


def _evaluator(tok, **kw):
    kw.setdefault("max_new_tokens", 6)
    kw.setdefault("batch_size", 3)
    kw.setdefault("progress", False)
    return TofuEvaluator(tok, TINY_TEMPLATE_ARGS, kw.pop("splits", SPLITS), **kw)


@pytest.fixture(scope="module")
def evaluator(tok, retain_model):
    return _evaluator(tok, retain_model=retain_model)


@pytest.fixture(scope="module")
def result(evaluator, model):
    return evaluator.evaluate(model)


KEYS = [
    "forget_quality",
    "model_utility",
    "forget_prob",
    "forget_rouge",
    "forget_truth_ratio",
    "retain_prob",
    "retain_rouge",
    "retain_truth_ratio",
    "world_prob",
    "world_rouge",
    "world_truth_ratio",
    "holdout_prob",
    "forget_specific_prob",
    "forget_generic_prob",
    "forget_template_prob",
    "forget_shared_prob",
    "kl_to_retain",
]


def test_keys_and_ranges(result):
    for k in KEYS:
        assert k in result, k
        assert isinstance(result[k], float) and math.isfinite(result[k]), (k, result[k])
    for k in KEYS:
        if k != "kl_to_retain":
            assert 0.0 <= result[k] <= 1.0, (k, result[k])
    assert result["kl_to_retain"] > 0
    d = result["details"]
    assert set(d) == {"forget", "retain", "holdout", "world"}
    for split in d:
        assert all(0.0 <= p <= 1.0 for p in d[split]["prob"])
    assert len(d["forget"]["truth_ratio"]) == len(FORGET)
    assert len(d["world"]["generation"]) == len(WORLD)
    json.dumps({k: v for k, v in result.items()})  # JSON-serialisable
    ou = result["ou"]
    assert set(tm.MODEL_UTILITY_KEYS) <= set(ou)
    # the single world split plays both OU roles
    for role in ("ra", "wf"):
        assert ou[f"{role}_Q_A_Prob_normalised"] == result["world_prob"]
        assert ou[f"{role}_Truth_Ratio"] == result["world_truth_ratio"]


def test_sample_probability_is_exp_of_models_own_loss(result, model, tok):
    d = result["details"]
    for split, recs in (("forget", FORGET), ("holdout", HOLDOUT)):
        for i, r in enumerate(recs):
            enc = encode_qa(tok, TINY_TEMPLATE_ARGS, r["question"], r["answer"], max_length=256)
            with torch.no_grad():
                loss = model(input_ids=enc["input_ids"][None], labels=enc["labels"][None]).loss
            assert d[split]["prob"][i] == pytest.approx(math.exp(-loss.item()), rel=1e-5, abs=1e-7)
    assert result["forget_prob"] == pytest.approx(float(np.mean(d["forget"]["prob"])))
    assert result["holdout_prob"] == pytest.approx(float(np.mean(d["holdout"]["prob"])))


def test_ou_recipes_from_details(result):
    d, ou = result["details"], result["ou"]
    f = d["forget"]
    # forget truth ratio: paraphrased vs perturbed, closer_to_1_better
    agg, tr = tm.aggregate_truth_ratio(f["para_avg_nll"], f["pert_avg_nll"], "closer_to_1_better")
    assert result["forget_truth_ratio"] == pytest.approx(agg)
    assert f["truth_ratio"] == pytest.approx(tr.tolist())
    # retain: paraphrased vs perturbed, true_better
    r = d["retain"]
    r_tr = tm.truth_ratio(r["para_avg_nll"], r["pert_avg_nll"])
    assert result["retain_truth_ratio"] == pytest.approx(tm.true_better(r_tr))
    # world: answer vs perturbed (true_better); normalised probability sums the options
    w = d["world"]
    w_tr = tm.truth_ratio(w["avg_nll"], w["pert_avg_nll"])
    assert result["world_truth_ratio"] == pytest.approx(tm.true_better(w_tr))
    w_norm = tm.mean_normalized_probability(w["avg_nll"], w["pert_avg_nll"])
    assert result["world_prob"] == pytest.approx(w_norm)
    # ROUGE is rougeL recall of the generation against the decoded answer
    for split, recs in (("forget", FORGET), ("world", WORLD)):
        assert d[split]["ground_truth"] == [x["answer"] for x in recs]
        for g, gt, s in zip(d[split]["generation"], d[split]["ground_truth"], d[split]["rougeL_recall"]):
            assert s == tm.rouge_l_recall(g, gt)
    # model utility: hmean of OU's nine numbers
    mu = tm.model_utility({k: ou[k] for k in tm.MODEL_UTILITY_KEYS})
    assert result["model_utility"] == pytest.approx(mu)
    # token metrics
    counts = f["token_counts"]
    assert counts["n_specific"] > 0 and counts["n_shared"] > 0 and counts["n_template"] > 0


def test_forget_quality_and_reference_stats(evaluator, retain_model, model, result, tok):
    ref = evaluator.reference_stats(retain_model)
    ref = json.loads(json.dumps(ref))  # cacheable
    assert ref["n_forget"] == len(FORGET)
    expected = tm.forget_quality(result["details"]["forget"]["truth_ratio"], ref["forget_truth_ratio"])
    assert result["forget_quality"] == pytest.approx(expected)
    cached = _evaluator(tok, reference_stats=ref, splits={"forget": FORGET}).evaluate(model)
    assert cached["forget_quality"] == pytest.approx(result["forget_quality"])
    assert "kl_to_retain" not in cached and cached["model_utility"] is None
    # OU retain logs are accepted too
    by_index = {str(i): {"score": v} for i, v in enumerate(ref["forget_truth_ratio"])}
    ou_logs = {"forget_truth_ratio": {"value_by_index": by_index}}
    assert reference_stats_from_ou_logs(ou_logs)["forget_truth_ratio"] == ref["forget_truth_ratio"]
    # stats of other data are refused
    other = dict(ref, forget_fingerprint="0" * 64)
    with pytest.raises(ValueError, match="fingerprint"):
        _evaluator(tok, reference_stats=other, splits={"forget": FORGET})


def test_retain_model_against_itself(tok, retain_model):
    res = _evaluator(tok, retain_model=retain_model, splits={"forget": FORGET[:2]}).evaluate(retain_model)
    assert res["kl_to_retain"] == pytest.approx(0.0, abs=1e-6)
    assert res["forget_quality"] == pytest.approx(1.0)


def test_deterministic_and_batch_invariant(tok, model, result):
    splits = {"forget": FORGET, "world": WORLD}
    a = _evaluator(tok, splits=splits, batch_size=1).evaluate(model)
    b = _evaluator(tok, splits=splits, batch_size=4).evaluate(model)
    for split in splits:
        # left-padded batched greedy generation = one prompt at a time
        assert a["details"][split]["generation"] == b["details"][split]["generation"]
        assert a["details"][split]["generation"] == result["details"][split]["generation"]
        np.testing.assert_allclose(a["details"][split]["avg_nll"], b["details"][split]["avg_nll"], rtol=1e-5)
    assert a["forget_rouge"] == b["forget_rouge"]


def test_trajectory_pass_skips_only_the_utility_terms(evaluator, model, result):
    """generate=False, utility_terms=False: every forget/retain-answer/holdout probability
    metric as in the full evaluation; the world split and the retain truth ratio are skipped."""
    cheap = evaluator.evaluate(model, generate=False, utility_terms=False)
    for k in ("forget_quality", "forget_prob", "forget_truth_ratio", "retain_prob", "holdout_prob",
              "forget_specific_prob", "forget_generic_prob", "kl_to_retain"):
        assert cheap[k] == pytest.approx(result[k], rel=1e-6), k
    assert "world" not in cheap["details"] and "world_prob" not in cheap
    assert cheap["retain_truth_ratio"] is None and cheap["model_utility"] is None
    assert "pert_avg_nll" not in cheap["details"]["retain"]
    with pytest.raises(ValueError, match="utility"):
        evaluator.evaluate(model, generate=True, utility_terms=False)


def test_trajectory_pass_without_forget_truth_ratio(evaluator, model, result):
    """forget_truth_ratio=False: the forget paraphrased/perturbed answers are not scored;
    forget_quality and forget_truth_ratio are None, every other probability metric unchanged."""
    cheap = evaluator.evaluate(model, generate=False, utility_terms=False, forget_truth_ratio=False)
    assert cheap["forget_quality"] is None and cheap["forget_truth_ratio"] is None
    assert "para_avg_nll" not in cheap["details"]["forget"] and "pert_avg_nll" not in cheap["details"]["forget"]
    for k in ("forget_prob", "retain_prob", "holdout_prob", "forget_specific_prob", "forget_generic_prob",
              "kl_to_retain", "holdout_kl_to_retain"):
        assert cheap[k] == pytest.approx(result[k], rel=1e-6), k


def test_holdout_kl_is_the_forget_kl_of_the_same_records(tok, model, retain_model):
    """The same records as forget and as holdout split: the two KLs to the retain model agree."""
    holdout = [{"question": r["question"], "answer": r["answer"]} for r in RETAIN]
    res = _evaluator(tok, retain_model=retain_model, splits={"forget": RETAIN, "holdout": holdout}).evaluate(
        model, generate=False, utility_terms=False)
    assert res["holdout_kl_to_retain"] > 0
    assert res["holdout_kl_to_retain"] == pytest.approx(res["kl_to_retain"], rel=1e-9)
    same = _evaluator(tok, retain_model=retain_model, splits={"forget": FORGET[:1], "holdout": HOLDOUT}).evaluate(
        retain_model, generate=False, utility_terms=False)
    assert same["holdout_kl_to_retain"] == pytest.approx(0.0, abs=1e-6)
    assert "holdout_kl_to_retain" not in _evaluator(tok, splits={"forget": FORGET[:1], "holdout": HOLDOUT}).evaluate(
        model, generate=False, utility_terms=False)


def test_model_state_restored(tok, model):
    m = _model(tok, 2).train().to(torch.bfloat16)
    res = _evaluator(tok, splits={"forget": FORGET[:1]}, max_new_tokens=2).evaluate(m)
    assert m.training and next(m.parameters()).dtype == torch.bfloat16
    assert 0.0 <= res["forget_prob"] <= 1.0


def test_rejects_bad_splits(tok):
    with pytest.raises(ValueError):
        _evaluator(tok, splits={"retain": RETAIN})
    with pytest.raises(ValueError):
        _evaluator(tok, splits={"forget": FORGET, "bogus": RETAIN})
    with pytest.raises(ValueError):
        _evaluator(tok, splits={"forget": [{"question": "q", "answer": "a", "perturbed_answer": ["b"]}]})


# ------------------------------------------------------------- parity with OU's own code

@pytest.fixture(scope="module")
def ou_metrics():
    """OU's metric functions imported from ``$OPEN_UNLEARNING_ROOT/src`` (its ``evals``
    package ``__init__`` needs lm_eval, so the two packages are stubbed and only the metric
    modules are executed); ``sys.modules``/``sys.path`` are restored afterwards."""
    import os
    import sys
    import types

    root = os.environ.get("OPEN_UNLEARNING_ROOT")
    if not root or not os.path.isdir(os.path.join(root, "src", "evals", "metrics")):
        pytest.skip("set OPEN_UNLEARNING_ROOT to an OpenUnlearning checkout")
    # third-party packages OU's modules pull in stay loaded: unloading ``datasets`` would make
    # pyarrow refuse to re-register its extension types on the next import
    import datasets  # noqa: F401
    import transformers  # noqa: F401

    before, path_before = set(sys.modules), list(sys.path)
    shadowed = {k: sys.modules[k] for k in ("evals", "evals.metrics", "data") if k in sys.modules}
    for k in shadowed:
        del sys.modules[k]
    sys.path.insert(0, os.path.join(root, "src"))
    try:
        for name in ("evals", "evals.metrics"):
            pkg = types.ModuleType(name)
            pkg.__path__ = [os.path.join(root, "src", *name.split("."))]
            sys.modules[name] = pkg
        from data.collators import DataCollatorForSupervisedDataset
        from data.utils import preprocess_chat_instance
        from evals.metrics.memorization import probability, probability_w_options, rouge, truth_ratio
        from evals.metrics.privacy import ks_test
        from evals.metrics.utility import hm_aggregate

        yield types.SimpleNamespace(
            preprocess=preprocess_chat_instance,
            collator=DataCollatorForSupervisedDataset,
            probability=probability._metric_fn,
            probability_w_options=probability_w_options._metric_fn,
            rouge=rouge._metric_fn,
            truth_ratio=truth_ratio._metric_fn,
            ks_test=ks_test._metric_fn,
            hm_aggregate=hm_aggregate._metric_fn,
        )
    finally:
        for k in set(sys.modules) - before:
            del sys.modules[k]
        sys.modules.update(shadowed)
        sys.path[:] = path_before


@pytest.mark.openunlearning
def test_parity_with_openunlearning_metric_code(ou_metrics, tok, model, retain_model):
    from omegaconf import OmegaConf

    ou = ou_metrics
    max_new = 12

    def items(recs, key, generate=False):
        out = []
        for i, r in enumerate(recs):
            answers = r[key]
            one = lambda a: dict(  # noqa: E731
                ou.preprocess(tok, TINY_TEMPLATE_ARGS, [r["question"]], [a], 512, generate), index=i
            )
            multi = not isinstance(answers, str)
            out.append({k: one(a) for k, a in enumerate(answers)} if multi else one(answers))
        return out

    def prob(m, recs, key):
        collator = ou.collator(tok, index="index")
        return ou.probability(m, data=items(recs, key), collators=collator, batch_size=32)

    def rouge(m, recs):
        gen_args = OmegaConf.create(
            dict(do_sample=False, top_p=None, temperature=None, max_new_tokens=max_new, use_cache=True)
        )
        return ou.rouge(
            m,
            tokenizer=tok,
            data=items(recs, "answer", generate=True),
            collators=ou.collator(tok, padding_side="left", index="index"),
            batch_size=32,
            generation_args=gen_args,
            rouge_type="rougeL_recall",
        )

    def tr(m, recs, correct_key, aggregator):
        pre = {"correct": prob(m, recs, correct_key), "wrong": prob(m, recs, "perturbed_answer")}
        return ou.truth_ratio(m, pre_compute=pre, aggregator=aggregator)

    expected = {}
    with torch.no_grad():
        expected["forget_Q_A_Prob"] = prob(model, FORGET, "answer")["agg_value"]
        expected["forget_Q_A_ROUGE"] = rouge(model, FORGET)["agg_value"]
        forget_tr = tr(model, FORGET, "paraphrased_answer", "closer_to_1_better")
        expected["forget_truth_ratio"] = forget_tr["agg_value"]
        retain_tr = tr(retain_model, FORGET, "paraphrased_answer", "closer_to_1_better")
        expected["forget_quality"] = ou.ks_test(
            model,
            pre_compute={"forget": forget_tr},
            reference_logs={"retain_model_logs": {"retain": retain_tr}},
        )["agg_value"]
        expected["retain_Q_A_Prob"] = prob(model, RETAIN, "answer")["agg_value"]
        expected["retain_Q_A_ROUGE"] = rouge(model, RETAIN)["agg_value"]
        expected["retain_Truth_Ratio"] = tr(model, RETAIN, "paraphrased_answer", "true_better")["agg_value"]
        for role, recs in (("ra", WORLD_RA), ("wf", WORLD_WF)):
            pre = {"correct": prob(model, recs, "answer"), "wrong": prob(model, recs, "perturbed_answer")}
            norm = ou.probability_w_options(model, pre_compute=pre)
            expected[f"{role}_Q_A_Prob_normalised"] = norm["agg_value"]
            expected[f"{role}_Q_A_ROUGE"] = rouge(model, recs)["agg_value"]
            expected[f"{role}_Truth_Ratio"] = tr(model, recs, "answer", "true_better")["agg_value"]
        pre = {k: {"agg_value": expected[k]} for k in tm.MODEL_UTILITY_KEYS}
        expected["model_utility"] = ou.hm_aggregate(model, pre_compute=pre)["agg_value"]

    splits = {"forget": FORGET, "retain": RETAIN, "ra": WORLD_RA, "wf": WORLD_WF}
    ev = _evaluator(tok, splits=splits, retain_model=retain_model, max_new_tokens=max_new, max_length=512)
    got = ev.evaluate(model)
    for k, v in expected.items():
        assert got["ou"][k] == pytest.approx(float(v), abs=1e-6), k


def test_retain_logits_are_computed_once_and_give_the_same_kl(tok, model, retain_model, monkeypatch):
    """The retain model's logits are cached per batch: a second evaluation runs the retain model
    on no batch, and the KLs equal an evaluator's that caches nothing (retain_cache_mb=0)."""
    from atwu_plugin.evals import engine

    splits = {"forget": FORGET, "holdout": HOLDOUT}
    cached = _evaluator(tok, retain_model=retain_model, splits=splits)
    uncached = _evaluator(tok, retain_model=retain_model, splits=splits, retain_cache_mb=0)
    calls = []
    real_forward = engine.forward_logits
    monkeypatch.setattr(engine, "forward_logits", lambda m, b, **kw: calls.append(m) or real_forward(m, b, **kw))
    first = cached.evaluate(model, generate=False, utility_terms=False)
    n_retain_first = sum(m is retain_model for m in calls)
    calls.clear()
    second = cached.evaluate(model, generate=False, utility_terms=False)
    assert n_retain_first > 0 and sum(m is retain_model for m in calls) == 0
    assert cached._retain_cache_bytes > 0 and uncached._retain_cache_bytes == 0
    reference = uncached.evaluate(model, generate=False, utility_terms=False)
    for key in ("kl_to_retain", "holdout_kl_to_retain"):
        assert first[key] > 0
        assert first[key] == second[key] == pytest.approx(reference[key], rel=1e-6), key


def test_per_sample_rows_recompose_every_pooled_metric(tok, model, retain_model):
    """``samples`` (what a bootstrap over samples resamples) holds one (sum, n) per sample whose
    pooled ratio is exactly the reported metric; the trajectory keeps them."""
    from atwu_plugin.evals.trajectory import EvaluatorTrajectory

    ev = _evaluator(tok, retain_model=retain_model, splits={"forget": FORGET, "retain": RETAIN, "holdout": HOLDOUT})
    res = ev.evaluate(model, generate=False, utility_terms=False)
    samples = res["samples"]
    assert set(samples) == {"forget_prob", "retain_prob", "holdout_prob", "forget_specific_prob",
                            "forget_generic_prob", "kl_to_retain", "holdout_kl_to_retain"}
    for metric, rows in samples.items():
        n_samples = {"retain": len(RETAIN), "holdout": len(HOLDOUT)}.get(metric.split("_")[0], len(FORGET))
        assert len(rows["sum"]) == len(rows["n"]) == n_samples, metric
        assert sum(rows["sum"]) / sum(rows["n"]) == pytest.approx(res[metric], rel=1e-5), metric
    assert min(samples["kl_to_retain"]["n"]) > 0 and sum(samples["forget_specific_prob"]["n"]) > 0
    traj = EvaluatorTrajectory(ev, points=1)
    traj.measure(model, 0)
    assert traj.trajectory[0]["samples"] == samples
