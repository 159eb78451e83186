"""A small TOFU evaluator that computes OpenUnlearning's (OU) numbers without OU.

``TofuEvaluator`` reproduces OU's ``TOFUEvaluator`` recipe (snapshot d3d7cf9) on in-memory
records: the same tokenisation contract (``atwu_plugin.data.encoding.encode_qa`` mirrors OU's
``preprocess_chat_instance``), the same per-sample statistics (``avg_nll`` over answer tokens,
greedy generations scored with ROUGE-L recall) and the same reductions
(``atwu_plugin.evals.tofu_metrics``). On top of TOFU it reports the embedded benchmark's
token-level metrics (``atwu_plugin.evals.token_metrics``) and the holdout probability.

Splits (each a list of records with ``question``, ``answer`` and, where needed,
``paraphrased_answer`` (str or list), ``perturbed_answer`` (list or str) and ``spans``):

=========  ==========================================  =======================================
split      OU role                                     uses
=========  ==========================================  =======================================
forget     forget10_perturbed                          answer, paraphrased, perturbed, spans
retain     retain_perturbed (the retain *eval* subset)  answer, paraphrased, perturbed
holdout    (unseen authors; not part of OU's TOFU set)  answer
world      both real_authors ("ra") and world_facts    answer, perturbed
           ("wf")
ra, wf     real_authors / world_facts separately        answer, perturbed
=========  ==========================================  =======================================

The embedded benchmark has a single set of world-knowledge probes, which plays *both* OU
roles ``ra`` and ``wf``: its three numbers enter the nine-term harmonic mean of
model_utility twice, keeping OU's formula (and its weights) unchanged. Pass ``ra`` and ``wf``
instead of ``world`` to evaluate real TOFU data with OU's exact nine distinct terms.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from atwu_plugin.evals import engine
from atwu_plugin.evals import tofu_metrics as tm
from atwu_plugin.evals.token_metrics import KLAccumulator, TokenKindProbAccumulator
from atwu_plugin.tokens import IGNORE_INDEX

logger = logging.getLogger(__name__)

REFERENCE_FORMAT = "atwu-lite-eval-reference/1"
SPLITS = ("forget", "retain", "holdout", "world", "ra", "wf")
# Which answer sets each split needs: "answer" (prob, ROUGE), "para" (truth-ratio correct
# side), "pert" (truth-ratio wrong side / normalisation options).
_ROLES = {
    "forget": ("answer", "para", "pert"),
    "retain": ("answer", "para", "pert"),
    "holdout": ("answer",),
    "world": ("answer", "pert"),
    "ra": ("answer", "pert"),
    "wf": ("answer", "pert"),
}
_GENERATE = ("forget", "retain", "world", "ra", "wf")
_ENC_KEYS = ("input_ids", "labels", "attention_mask", "token_kind")


def _field(enc: Any, key: str):
    if isinstance(enc, Mapping):
        return enc.get(key)
    return getattr(enc, key, None)


def _as_list(x) -> List[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


def _py(v):
    """JSON-friendly scalar: python float, non-finite -> None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _default_encode_fn():
    from atwu_plugin.data.encoding import encode_qa

    return encode_qa


def _default_collator(pad_token_id: int):
    from atwu_plugin.data.collator import TokenLabelCollator

    return TokenLabelCollator(pad_token_id)


class TofuEvaluator:
    """OU-compatible TOFU metrics plus the embedded benchmark's token-level metrics.

    Args:
        tokenizer: the evaluated model's tokenizer.
        template_args: OU ``template_args`` (e.g. ``atwu_plugin.zoo.tokenizer.TINY_TEMPLATE_ARGS``).
        splits: ``{split: [record, ...]}`` with split names from ``SPLITS``; ``forget`` is
            required. See the module docstring for the fields each split needs.
        retain_model: the retain model (same tokenizer). Gives the reference forget truth
            ratios for forget_quality (unless ``reference_stats`` is given) and
            ``kl_to_retain``.
        reference_stats: cached ``reference_stats(retain_model)`` output (JSON dict), or
            ``reference_stats_from_ou_logs`` of an OU retain-model ``TOFU_EVAL.json``.
        batch_size: batch size of scoring and generation (OU's TOFU default is 32).
        max_new_tokens: greedy generation budget (OU's default generation config: 200).
        max_length: tokenisation cap of prompt + answer (OU's TOFU datasets use 512).
        device, dtype: where/how the models run during ``evaluate``; they are moved back to
            their original device/dtype afterwards. ``dtype=None`` leaves the weights alone.
            Metric arithmetic is float32 (log-softmax) / float64 (reductions) regardless.
        progress: tqdm bars over batches; ``None`` = only when stderr is a TTY.
        stopwords: extra stop strings for generation (OU's TOFU config has none; generation
            always stops at the tokenizer's end-of-sequence token).
        encode_fn, collator: override ``atwu_plugin.data.encoding.encode_qa`` and
            ``atwu_plugin.data.collator.TokenLabelCollator`` (tests, other formats).
    """

    def __init__(
        self,
        tokenizer,
        template_args: Mapping[str, Any],
        splits: Mapping[str, Sequence[Mapping[str, Any]]],
        retain_model=None,
        reference_stats: Optional[Mapping[str, Any]] = None,
        batch_size: int = 16,
        max_new_tokens: int = 200,
        max_length: int = 256,
        device: str = "cpu",
        dtype: Optional[torch.dtype] = torch.float32,
        progress: Optional[bool] = None,
        stopwords: Optional[Sequence[str]] = None,
        encode_fn: Optional[Callable] = None,
        collator: Optional[Callable] = None,
        retain_cache_mb: float = 2048,
    ):
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown splits {unknown}; expected some of {list(SPLITS)}")
        if not splits.get("forget"):
            raise ValueError("the 'forget' split is required and must not be empty")
        if "world" in splits and ("ra" in splits or "wf" in splits):
            raise ValueError("pass either 'world' (plays both OU roles) or 'ra'/'wf', not both")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs an eos token")
        self.tokenizer = tokenizer
        self.template_args = dict(template_args)
        self.retain_model = retain_model
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.max_length = int(max_length)
        self.device = torch.device(device)
        self.dtype = dtype
        self.progress = progress
        self.stopwords = list(stopwords or [])
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
        self._encode_fn = encode_fn or _default_encode_fn()
        self._collator = collator or _default_collator(self.pad_token_id)
        self.records = {name: list(recs) for name, recs in splits.items() if recs}
        self._enc: Dict[str, Dict[str, Any]] = {
            name: self._encode_split(name, recs) for name, recs in self.records.items()
        }
        self._reference: Optional[Dict[str, Any]] = None
        if reference_stats is not None:
            self._reference = self._check_reference(reference_stats)
        # the retain model's answer-position logits per batch, for KL: the retain model and
        # the batches never change, so every evaluation after the first reuses them
        self.retain_cache_mb = float(retain_cache_mb)
        self._retain_logits: Dict[Any, Any] = {}
        self._retain_cache_bytes = 0

    # ------------------------------------------------------------------ encoding

    def _encode(self, question: str, answer: str, spans=None) -> Dict[str, Any]:
        enc = self._encode_fn(
            self.tokenizer, self.template_args, question, answer, max_length=self.max_length, spans=spans
        )
        out = {}
        for key in _ENC_KEYS:
            v = _field(enc, key)
            if v is not None:
                out[key] = torch.as_tensor(v, dtype=torch.long)
        if "input_ids" not in out or "labels" not in out:
            raise ValueError("encode_fn must return input_ids and labels")
        out.setdefault("attention_mask", torch.ones_like(out["input_ids"]))
        truncated = _field(enc, "truncated")
        out["truncated"] = bool(truncated) if truncated is not None else False
        return out

    def _encode_split(self, name: str, recs: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        roles = _ROLES[name]
        data: Dict[str, Any] = {"answer": [], "para": [], "pert": []}
        for i, r in enumerate(recs):
            q = r["question"]
            data["answer"].append(self._encode(q, r["answer"], spans=r.get("spans")))
            for role, key in (("para", "paraphrased_answer"), ("pert", "perturbed_answer")):
                if role not in roles:
                    continue
                options = _as_list(r.get(key))
                if not options:
                    raise ValueError(f"{name}[{i}] has no {key!r} (needed for the truth ratio)")
                data[role].append([self._encode(q, a) for a in options])
        n_trunc = sum(e["truncated"] for e in data["answer"])
        n_trunc += sum(e["truncated"] for role in ("para", "pert") for opts in data[role] for e in opts)
        if n_trunc:
            logger.warning("%s: %d encodings were truncated to max_length=%d", name, n_trunc, self.max_length)
        data["n_truncated"] = n_trunc
        return data

    @staticmethod
    def _prompt_len(enc: Dict[str, torch.Tensor]) -> int:
        """Number of leading prompt tokens (OU masks exactly ``len(prompt_ids)`` labels)."""
        target = (enc["labels"] != IGNORE_INDEX).nonzero()
        return int(target[0, 0]) if target.numel() else int(enc["labels"].numel())

    # ------------------------------------------------------------ model calls

    @property
    def _show_progress(self) -> bool:
        return self.progress if self.progress is not None else sys.stderr.isatty()

    def _prepared(self, model):
        """Eval mode on ``self.device``/``self.dtype``; restores mode, device and dtype."""
        return engine.eval_mode(model, self.device, self.dtype)

    def _avg_nll(self, model, encs, desc: str, on_batch: Optional[Callable] = None) -> np.ndarray:
        """Per-encoding ``sum_t CE_t / n_t`` over answer tokens (OU's ``avg_loss``).

        ``n_t`` counts every label that is not ``IGNORE_INDEX`` (as OU does; position 0 is a
        prompt token, so this equals the number of scored targets). An encoding without
        answer tokens gets NaN, as in OU (0 / 0). Batched by length (``engine.answer_avg_nll``):
        padding is masked, so this changes no number beyond float round-off."""
        feats = [{k: e[k] for k in _ENC_KEYS if k in e} for e in encs]
        arr = engine.answer_avg_nll(model, feats, self._collator, batch_size=self.batch_size,
                                    on_batch=on_batch, progress=self._show_progress, desc=desc)
        if np.isnan(arr).any():
            n_nan = int(np.isnan(arr).sum())
            logger.warning("%s: %d samples have no answer token (NaN, as in OU)", desc, n_nan)
        return arr

    def _avg_nll_options(self, model, options: List[List[Dict]], desc: str) -> List[np.ndarray]:
        flat = [e for opts in options for e in opts]
        vals = self._avg_nll(model, flat, desc)
        out, pos = [], 0
        for opts in options:
            out.append(vals[pos : pos + len(opts)])
            pos += len(opts)
        return out

    def _generate(self, model, split: str) -> Dict[str, List]:
        """Greedy generations for a split, scored with ROUGE as OU's ``eval_text_similarity``.

        Prompts are left-padded; ``generate(do_sample=False, max_new_tokens,
        pad_token_id=tokenizer.eos)``, stopping at the model's ``generation_config``
        end-of-sequence id(s) as OU does (the tokenizer's eos if the model has none); the new
        tokens are decoded with ``skip_special_tokens=True, clean_up_tokenization_spaces=True``,
        cut at the eos text and the stop strings, stripped. The ground truth is the decoded
        full sequence minus the decoded prompt (not the raw record text)."""
        tok = self.tokenizer
        encs = self._enc[split]["answer"]
        eos = tok.eos_token_id
        model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        dec = dict(skip_special_tokens=True, clean_up_tokenization_spaces=True)
        prompts = [e["input_ids"][: self._prompt_len(e)] for e in encs]
        texts = engine.greedy_generate(
            model, tok, prompts, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
            eos_token_id=model_eos if model_eos is not None else eos, pad_token_id=eos,
            prompt_pad_id=self.pad_token_id, stop_strings=self.stopwords,
            decode_kwargs={"clean_up_tokenization_spaces": True}, progress=self._show_progress,
            desc=f"generate {split}",
        )
        stop = [tok.decode([eos])] + self.stopwords
        gens = [tm.clean_generation(t, stop) for t in texts]
        prompts_txt = [tok.decode(p, **dec) for p in prompts]
        gts = [tm.ground_truth_text(tok.decode(e["input_ids"], **dec), p) for e, p in zip(encs, prompts_txt)]
        scores = [tm.rouge_scores(g, t) for g, t in zip(gens, gts)]
        return {
            "rougeL_recall": [s["rougeL_recall"] for s in scores],
            "rouge1_recall": [s["rouge1_recall"] for s in scores],
            "rougeL_f1": [s["rougeL_f1"] for s in scores],
            "generation": gens,
            "ground_truth": gts,
            "input": prompts_txt,
        }

    # ---------------------------------------------------------- reference stats

    def _forget_fingerprint(self) -> str:
        """Hash of the token ids the forget truth ratios are computed on (data, template,
        tokenizer and max_length all change it)."""
        h = hashlib.sha256()
        for role in ("para", "pert"):
            for opts in self._enc["forget"][role]:
                for e in opts:
                    h.update(json.dumps([e["input_ids"].tolist(), e["labels"].tolist()]).encode())
                h.update(b"|")
            h.update(b"#")
        return h.hexdigest()

    def _forget_truth_ratios(self, model) -> np.ndarray:
        enc = self._enc["forget"]
        para = self._avg_nll_options(model, enc["para"], "forget paraphrased")
        pert = self._avg_nll_options(model, enc["pert"], "forget perturbed")
        return tm.truth_ratio(para, pert)

    def _retain_answer_logits(self, retain, batch) -> torch.Tensor:
        """The retain model's logits of ``batch`` at the positions that predict answer tokens,
        zero elsewhere: all that ``KLAccumulator`` reads (it masks other positions out), so
        the KL is the same as with the full logits. Computed once per batch and kept (up to
        ``retain_cache_mb``; the rows only, ``[answer tokens, V]``), so the trajectory's passes
        during training run the retain model once instead of at every pass."""
        ids, labels = batch["input_ids"], batch["labels"]
        key = (id(self.retain_model), tuple(ids.shape),
               hashlib.blake2b(ids.cpu().numpy().tobytes() + labels.cpu().numpy().tobytes(), digest_size=16).digest())
        hit = self._retain_logits.get(key)
        if hit is None:
            logits = engine.forward_logits(retain, batch)
            predicts = torch.zeros_like(labels, dtype=torch.bool)
            predicts[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position t - 1 predicts labels[:, t]
            hit = (predicts, logits[predicts])
            size = hit[1].numel() * hit[1].element_size()
            if self._retain_cache_bytes + size > self.retain_cache_mb * 2**20:
                return logits
            self._retain_logits[key] = hit
            self._retain_cache_bytes += size
        predicts, rows = hit
        full = rows.new_zeros(*predicts.shape, rows.shape[-1])
        full[predicts] = rows
        return full

    def reference_stats(self, retain_model) -> Dict[str, Any]:
        """The retain model's statistics forget_quality needs, as a JSON-serialisable dict:
        ``{"format", "forget_fingerprint", "n_forget", "forget_truth_ratio": [tr_i, ...]}``
        (per-sample ``wrong_over_correct`` ratios on the forget split). Cache it with
        ``json.dump`` and pass it back as ``reference_stats=``."""
        with self._prepared(retain_model) as m:
            tr = self._forget_truth_ratios(m)
        return {
            "format": REFERENCE_FORMAT,
            "forget_fingerprint": self._forget_fingerprint(),
            "n_forget": int(len(tr)),
            "forget_truth_ratio": [float(x) for x in tr],
        }

    def use_reference(self, ref: Mapping[str, Any]) -> None:
        """Set (validated) reference stats after construction, e.g. loaded from a cache;
        raises ``ValueError`` if they belong to other forget data/tokenization."""
        self._reference = self._check_reference(ref)

    def _check_reference(self, ref: Mapping[str, Any]) -> Dict[str, Any]:
        ref = dict(ref)
        if "forget_truth_ratio" not in ref:
            raise ValueError("reference_stats needs 'forget_truth_ratio'")
        n = len(self.records["forget"])
        if len(ref["forget_truth_ratio"]) != n:
            raise ValueError(
                f"reference_stats has {len(ref['forget_truth_ratio'])} forget truth ratios, "
                f"the forget split {n} records"
            )
        fp = ref.get("forget_fingerprint")
        if fp is not None and fp != self._forget_fingerprint():
            raise ValueError(
                "reference_stats were computed on other forget data/tokenizer/template/max_length "
                "(fingerprint mismatch); recompute them with reference_stats(retain_model)"
            )
        return ref

    # ---------------------------------------------------------------- evaluate

    def evaluate(self, model, generate: bool = True, utility_terms: bool = True,
                 forget_truth_ratio: bool = True) -> Dict[str, Any]:
        """Evaluate ``model``; returns flat scalar metrics, ``ou`` (OU's metric names) and
        ``details`` (per-split, per-sample values). Deterministic for a given model.

        ``generate=False`` skips greedy generation (the slow part): ROUGE metrics and model
        utility (which needs them) are then None; every probability metric is computed as
        usual. ``utility_terms=False`` (only with ``generate=False``) also skips what only
        model utility reads: the world/ra/wf splits and the retain truth ratio (the paraphrased
        and perturbed retain answers), about half of a probability-only pass on TOFU.
        ``forget_truth_ratio=False`` skips the forget split's paraphrased and perturbed answers
        (six options per question on TOFU): forget_truth_ratio and forget_quality are then
        None. All three are for cheap trajectories during training.

        With a retain model, ``kl_to_retain*`` is measured on the forget answers and
        ``holdout_kl_to_retain`` on the holdout answers (unseen authors: how far unlearning
        moved the model where it should not have)."""
        if generate and not utility_terms:
            raise ValueError("evaluate(generate=True, utility_terms=False): model utility needs its terms")
        if self._reference is None and self.retain_model is not None:
            self._reference = self.reference_stats(self.retain_model)

        details: Dict[str, Dict[str, Any]] = {}
        ou: Dict[str, Optional[float]] = {}
        token_acc = TokenKindProbAccumulator()
        kl_acc = KLAccumulator() if self.retain_model is not None else None
        holdout_kl_acc = KLAccumulator() if self.retain_model is not None else None

        with contextlib.ExitStack() as stack:
            m = stack.enter_context(self._prepared(model))
            retain = stack.enter_context(self._prepared(self.retain_model)) if kl_acc is not None else None

            def forget_tokens(batch, logits, logp):
                kind = batch.get("token_kind")
                if kind is not None:
                    token_acc.update(logp, kind)
                if kl_acc is not None:
                    kl_acc.update(logits, self._retain_answer_logits(retain, batch), batch["labels"], kind)

            def holdout_tokens(batch, logits, logp):
                holdout_kl_acc.update(logits, self._retain_answer_logits(retain, batch), batch["labels"])

            hooks = {"forget": forget_tokens}
            if holdout_kl_acc is not None:
                hooks["holdout"] = holdout_tokens

            for split in self._enc:
                if not utility_terms and split in ("world", "ra", "wf"):
                    continue
                enc = self._enc[split]
                d: Dict[str, Any] = {"n": len(enc["answer"]), "n_truncated": enc["n_truncated"]}
                ans = self._avg_nll(m, enc["answer"], f"{split} answers", on_batch=hooks.get(split))
                d["avg_nll"] = ans.tolist()
                d["prob"] = tm.sample_probability(ans).tolist()
                d["mean_prob"] = tm.mean_probability(ans)
                skip_truth_ratio = (split == "retain" and not utility_terms) or (split == "forget" and not forget_truth_ratio)
                for role, name in (("para", "paraphrased"), ("pert", "perturbed")):
                    if enc[role] and not skip_truth_ratio:
                        vals = self._avg_nll_options(m, enc[role], f"{split} {name}")
                        d[f"{role}_avg_nll"] = [x.tolist() for x in vals]
                if skip_truth_ratio:
                    d["truth_ratio_agg"] = None
                elif split in ("forget", "retain"):
                    agg = "closer_to_1_better" if split == "forget" else "true_better"
                    # OU: the correct side of forget/retain truth ratios is the paraphrased answer.
                    d["truth_ratio_agg"], tr = tm.aggregate_truth_ratio(
                        d["para_avg_nll"], d["pert_avg_nll"], agg
                    )
                    d["truth_ratio"] = tr.tolist()
                if split in ("world", "ra", "wf"):
                    # OU: the correct side of ra/wf truth ratios is the answer itself.
                    d["truth_ratio_agg"], tr = tm.aggregate_truth_ratio(ans, d["pert_avg_nll"], "true_better")
                    d["truth_ratio"] = tr.tolist()
                    d["normalized_prob"] = tm.normalized_probability(ans, d["pert_avg_nll"]).tolist()
                    d["mean_normalized_prob"] = float(np.mean(d["normalized_prob"]))
                d["mean_rougeL_recall"] = None
                if generate and split in _GENERATE:
                    d.update(self._generate(m, split))
                    d["mean_rougeL_recall"] = float(np.mean(d["rougeL_recall"]))
                details[split] = d

        f = details["forget"]
        ou["forget_Q_A_Prob"] = f["mean_prob"]
        ou["forget_Q_A_ROUGE"] = f["mean_rougeL_recall"]
        ou["forget_truth_ratio"] = f["truth_ratio_agg"]
        ou["forget_quality"] = None
        if self._reference is not None and forget_truth_ratio:
            stat, pvalue = tm.ks_test(f["truth_ratio"], self._reference["forget_truth_ratio"])
            ou["forget_quality"] = pvalue
            f["ks_statistic"] = stat
        if "retain" in details:
            r = details["retain"]
            ou["retain_Q_A_Prob"] = r["mean_prob"]
            ou["retain_Q_A_ROUGE"] = r["mean_rougeL_recall"]
            ou["retain_Truth_Ratio"] = r["truth_ratio_agg"]
        for role in ("ra", "wf"):
            src = role if role in details else ("world" if "world" in details else None)
            if src is None:
                continue
            w = details[src]
            ou[f"{role}_Q_A_Prob"] = w["mean_prob"]
            ou[f"{role}_Q_A_Prob_normalised"] = w["mean_normalized_prob"]
            ou[f"{role}_Q_A_ROUGE"] = w["mean_rougeL_recall"]
            ou[f"{role}_Truth_Ratio"] = w["truth_ratio_agg"]
        mu_terms = {k: ou.get(k) for k in tm.MODEL_UTILITY_KEYS}
        ou["model_utility"] = None
        if generate and all(v is not None and math.isfinite(v) for v in mu_terms.values()):
            ou["model_utility"] = tm.model_utility(mu_terms)
        ou = {k: _py(v) for k, v in ou.items()}

        res: Dict[str, Any] = {
            "forget_quality": ou["forget_quality"],
            "model_utility": ou["model_utility"],
            "forget_prob": ou["forget_Q_A_Prob"],
            "forget_rouge": ou["forget_Q_A_ROUGE"],
            "forget_truth_ratio": ou["forget_truth_ratio"],
        }
        if "retain" in details:
            res.update(
                retain_prob=ou["retain_Q_A_Prob"],
                retain_rouge=ou["retain_Q_A_ROUGE"],
                retain_truth_ratio=ou["retain_Truth_Ratio"],
            )
        for split in ("world", "ra", "wf"):
            if split in details:
                w = details[split]
                res[f"{split}_prob"] = _py(w["mean_normalized_prob"])
                res[f"{split}_rouge"] = _py(w["mean_rougeL_recall"])
                res[f"{split}_truth_ratio"] = _py(w["truth_ratio_agg"])
        if "holdout" in details:
            res["holdout_prob"] = _py(details["holdout"]["mean_prob"])
            if holdout_kl_acc is not None:
                res["holdout_kl_to_retain"] = _py(holdout_kl_acc.result()["kl_to_retain"])
        tok = token_acc.result()
        for k in ("specific_prob", "generic_prob", "template_prob", "shared_prob"):
            res[f"forget_{k}"] = _py(tok[k])
        details["forget"]["token_counts"] = {k: v for k, v in tok.items() if k.startswith("n_")}
        if kl_acc is not None:
            kl = kl_acc.result()
            res["kl_to_retain"] = _py(kl["kl_to_retain"])
            res["kl_to_retain_specific"] = _py(kl["kl_to_retain_specific"])
            res["kl_to_retain_generic"] = _py(kl["kl_to_retain_generic"])
        res["samples"] = _samples(details, token_acc, kl_acc, holdout_kl_acc)
        res["ou"] = ou
        res["details"] = details
        return res


def _rows(sums, ns=None) -> Dict[str, list]:
    sums = [float(f"{float(v):.6g}") for v in sums]
    return {"sum": sums, "n": [int(n) for n in ns] if ns is not None else [1] * len(sums)}


def _samples(details, token_acc, kl_acc, holdout_kl_acc) -> Dict[str, Dict[str, list]]:
    """Per-sample sums and token counts of the probability metrics, ``{metric: {"sum", "n"}}``:
    each pooled metric is ``sum(sum) / sum(n)``, so a bootstrap over samples can recompute it
    (leaderboard/paired.py). Answer-probability metrics are means over samples (``n`` = 1)."""
    out = {}
    for split, metric in (("forget", "forget_prob"), ("retain", "retain_prob"), ("holdout", "holdout_prob")):
        if split in details:
            out[metric] = _rows(details[split]["prob"])
    if any(token_acc.counts.values()):
        for k, rows in token_acc.per_sample().items():
            out[f"forget_{k}"] = _rows(rows["sum"], rows["n"])
    for metric, acc in (("kl_to_retain", kl_acc), ("holdout_kl_to_retain", holdout_kl_acc)):
        if acc is not None and acc.count:
            rows = acc.per_sample()
            out[metric] = _rows(rows["sum"], rows["n"])
    return out


def reference_stats_from_ou_logs(logs: Mapping[str, Any]) -> Dict[str, Any]:
    """Reference stats from an OU retain-model ``TOFU_EVAL.json`` (its
    ``forget_truth_ratio.value_by_index``), ordered by dataset index. No fingerprint: the
    caller guarantees the forget split has the same records in the same order."""
    by_index = logs["forget_truth_ratio"]["value_by_index"]
    ordered = sorted(by_index.items(), key=lambda kv: int(kv[0]))
    return {
        "format": REFERENCE_FORMAT,
        "forget_fingerprint": None,
        "n_forget": len(ordered),
        "forget_truth_ratio": [float(v["score"]) for _, v in ordered],
    }


__all__ = ["TofuEvaluator", "REFERENCE_FORMAT", "SPLITS", "reference_stats_from_ou_logs"]
