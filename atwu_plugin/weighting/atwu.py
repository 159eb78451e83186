"""ATWU token weights: retain conflict -> scorer -> weights, alternating with the LM (pure torch).

One training step (docs/atwu.md, "5. Each training step"), given the live forward passes the
trainer runs anyway:
  1. the retain batch's output-layer features stream into a *filling* retain bank; every
     ``bank_refresh_every`` steps it replaces the *active* bank (no extra forward pass);
  2. the forget batch's live features (h_t, sketch(e_t)) on a sampled subset of tokens give
     c_t = aggregate_s cos(g_t, g_s) against the active bank;
  3. ``scorer_steps`` Adam steps on phi minimise  mean_t w_t zscore(c_t) + lam (mean w - rho)^2
     + wd |phi|^2  with  w_t = sigmoid(phi . f_t + b)  on features of the frozen initial model;
  4. the LM step uses the detached weights of *all* forget tokens.
Setup (once, with the initial model): fill the bank from the retain set, cache the forget
set's frozen features and reference log-probs (token-level NPO then needs no reference
forward per step), and pre-fit the scorer on the initial conflicts.

``ATWUWeighting`` holds that state; ``ATWUWeighter`` (registered as ``atwu``) maps it onto the
weighter hooks: ``setup`` = setup, ``update`` = steps 2-3, ``compute`` = step 4,
``observe_retain`` = step 1, ``reference_logp`` and ``state_dict`` for the loss and checkpoints.
"""

import hashlib
import inspect
from dataclasses import asdict, dataclass, fields
from typing import Callable, Iterable, Optional

import torch

from atwu_plugin.losses.tokens import answer_mask, token_logprobs
from atwu_plugin.weighting.base import TokenWeighter, WeighterSetup, WeightingInputs, register_weighter
from atwu_plugin.weighting.conflict import retain_conflict
from atwu_plugin.weighting.conflict_ablations import mean_gradient_alignment
from atwu_plugin.weighting.output_grad import ExactE, RandomProjectionSketch, TopKSketch, output_grad_features
from atwu_plugin.weighting.retain_bank import STORAGE_DTYPES, RetainFeatureBank
from atwu_plugin.weighting.scorer import (
    ForgetFeatureCache,
    build_scorer,
    direct_weights,
    scorer_features,
    scorer_loss,
)

VARIANTS = ("linear_h", "linear_h_tok", "cross_layer", "mlp", "direct")
CONFLICT_MODES = ("kernel", "token_bucket", "raw", "mean_gradient")


@dataclass
class ATWUConfig:
    variant: str = "linear_h_tok"
    features: str = "frozen"  # frozen (initial model, cached) | live (drifts while unlearning)
    rho: float = 0.3  # expected fraction of forget-specific tokens
    lam: float = 10.0
    wd: float = 1e-4
    scorer_lr: float = 1e-2
    scorer_steps: int = 1  # Adam steps on phi per LM step
    scorer_every: int = 1  # update the scorer every k LM steps
    pretrain_steps: int = 200  # scorer fit on the initial conflicts before unlearning
    mlp_hidden: int = 64
    direct_a: float = 2.0
    conflict_mode: str = "kernel"
    aggregate: str = "max"
    topk: int = 8
    temperature: float = 0.05
    sketch: str = "random_projection"  # random_projection | topk | exact
    sketch_dim: int = 256
    max_forget_tokens: int = 256  # conflict on a sampled subset per step (0 = all tokens)
    bank_size: int = 8192
    bank_refresh_every: int = 20  # 0 = keep the initial bank
    # storage precision of the replicated state: the banks' rows (retain_bank.py) and the frozen
    # forget features; float16 halves both (docs/scaling.md, "ATWU's extra memory per rank")
    state_dtype: str = "float16"
    seed: int = 0

    def __post_init__(self):
        def check(ok, field, expected):
            if not ok:
                raise ValueError(f"ATWU method_args.{field}={getattr(self, field)!r}: expected {expected}")

        check(self.variant in VARIANTS, "variant", f"one of {VARIANTS}")
        check(self.features in ("frozen", "live"), "features", "'frozen' or 'live'")
        check(0 < self.rho < 1, "rho", "a number in (0, 1)")
        check(self.lam >= 0, "lam", ">= 0")
        check(self.wd >= 0, "wd", ">= 0")
        check(self.scorer_lr > 0, "scorer_lr", "> 0")
        check(self.scorer_steps >= 1, "scorer_steps", ">= 1")
        check(self.scorer_every >= 1, "scorer_every", ">= 1")
        check(self.pretrain_steps >= 0, "pretrain_steps", ">= 0")
        check(self.conflict_mode in CONFLICT_MODES, "conflict_mode", f"one of {CONFLICT_MODES}")
        check(self.aggregate in ("max", "topk_mean", "softmax"), "aggregate", "max, topk_mean or softmax")
        check(self.sketch in ("random_projection", "topk", "exact"), "sketch", "random_projection, topk or exact")
        check(self.sketch_dim >= 1, "sketch_dim", ">= 1")
        check(self.max_forget_tokens >= 0, "max_forget_tokens", ">= 0")
        check(self.bank_size >= 1, "bank_size", ">= 1")
        check(self.bank_refresh_every >= 0, "bank_refresh_every", ">= 0")
        check(self.state_dtype in STORAGE_DTYPES, "state_dtype", f"one of {tuple(STORAGE_DTYPES)}")

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "ATWUConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ATWU method_args: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)


def make_sketch(cfg: ATWUConfig, vocab_size: int):
    if cfg.sketch == "random_projection":
        return RandomProjectionSketch(vocab_size, dim=cfg.sketch_dim, seed=cfg.seed)
    if cfg.sketch == "topk":
        return TopKSketch(k=cfg.sketch_dim)
    return ExactE(vocab_size)


def sample_keys(batch: dict) -> list:
    """Cache keys of a batch's samples: the dataset ``index`` when the collator passes it, else
    a content hash of the sample's tokens (OU's default collator drops ``index``)."""
    if batch.get("index") is not None:
        return [int(i) for i in batch["index"].tolist()]
    keys = []
    mask = batch.get("attention_mask")
    for b, ids in enumerate(batch["input_ids"]):
        ids = ids[mask[b].bool()] if mask is not None else ids
        digest = hashlib.blake2b(ids.to(torch.int64).cpu().numpy().tobytes(), digest_size=8).digest()
        keys.append(int.from_bytes(digest, "little") >> 1)  # non-negative int64
    return keys


def _row_index(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] -> row of each answer token in the row-major answer-token order (-1 elsewhere)."""
    mask = answer_mask(labels)
    return torch.where(mask, mask.flatten().cumsum(0).view_as(mask) - 1, torch.full_like(labels, -1))


class ATWUWeighting:
    """The ATWU state: retain banks, frozen-feature cache, scorer and its optimizer."""

    def __init__(self, cfg: ATWUConfig, vocab_size: int, hidden_size: int, n_layers: int):
        self.cfg = cfg
        self.sketch = make_sketch(cfg, vocab_size)
        dtype = STORAGE_DTYPES[cfg.state_dtype]
        self.bank = RetainFeatureBank(cfg.bank_size, self.sketch, seed=cfg.seed, dtype=dtype)
        self.filling = RetainFeatureBank(cfg.bank_size, self.sketch, seed=cfg.seed + 1, dtype=dtype)
        self.features = ForgetFeatureCache(dtype=dtype)
        self.ref_logp = ForgetFeatureCache()
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.scorer = None
        if cfg.variant != "direct":
            self.scorer = build_scorer(cfg.variant, hidden_size, n_layers=n_layers, mlp_hidden=cfg.mlp_hidden)
            self.optimizer = torch.optim.Adam(self.scorer.parameters(), lr=cfg.scorer_lr)
        self.steps_seen = 0
        # Data parallel (set by the trainer glue, atwu_plugin.trainers.zero): ``gather_rows``
        # concatenates a tensor's rows over all ranks, so the scorer steps on the global batch's
        # conflicts and the bank sees the global batch's retain tokens (every rank keeps an
        # identical replica); ``rank`` reseeds the forget-token subsample per (rank, step).
        self.gather_rows: Callable = lambda t: t
        self.rank: Optional[int] = None
        self._step_inputs = None  # (forget features, conflicts) from ``update`` to ``weights``

    # ---- features ----------------------------------------------------------------------
    def grad_features(self, logits, hidden, labels, max_tokens=None):
        return output_grad_features(logits, hidden, labels, self.sketch, max_tokens=max_tokens, generator=self.gen)

    def scorer_inputs(self, hidden_states, labels, output_embedding) -> torch.Tensor:
        variant = "linear_h" if self.cfg.variant == "direct" else self.cfg.variant
        return scorer_features(variant, hidden_states, labels, output_embedding)

    def conflict(self, feats) -> torch.Tensor:
        cfg = self.cfg
        if cfg.conflict_mode == "mean_gradient":  # the ablation the design expected to fail (docs/atwu.md)
            return mean_gradient_alignment(feats, self.bank, normalize=True)
        return retain_conflict(
            feats, self.bank, mode=cfg.conflict_mode, aggregate=cfg.aggregate, topk=cfg.topk, temperature=cfg.temperature
        )

    # ---- setup with the initial model ---------------------------------------------------
    @torch.no_grad()
    def setup(self, retain_batches: Iterable[dict], forget_batches: Iterable[dict], forward: Callable, output_embedding,
              retain_tokens: int = 0):
        """``forward(batch) -> (logits, hidden_states_by_layer)`` of the *initial* model.
        ``retain_tokens``: the retain set's answer tokens if known (allocates the bank once).
        Data parallel: each rank passes its share of the batches (round k: rank r has batch
        k W + r, or a dummy without answer tokens), and every result is all-gathered with
        ``gather_rows``, so all ranks end with the state a single process builds."""
        g = self.gather_rows

        def retain_feats(batch):
            logits, hs = forward(batch)
            f = self.grad_features(logits, hs[-1], batch["labels"])
            return f._replace(e=g(f.e), h=g(f.h), token_ids=g(f.token_ids), positions=None)

        self.bank.refresh(retain_batches, retain_feats, expected_rows=retain_tokens)
        if len(self.bank) == 0:
            raise ValueError("ATWU: the retain set has no answer tokens to build the conflict bank from")
        if self.cfg.bank_refresh_every:  # the filling bank's rows, allocated once (no growth per step)
            self.filling.reserve(len(self.bank), like=self.bank)
        all_f, all_c = [], []
        for batch in forget_batches:
            logits, hs = forward(batch)
            labels = batch["labels"]
            mask = answer_mask(labels)
            keys = g(torch.tensor(sample_keys(batch), dtype=torch.long, device=labels.device)).cpu()
            counts = g(mask.sum(1)).cpu()
            self.ref_logp.put_rows(keys, g(token_logprobs(logits, labels)[mask]), counts)
            # rounded to the cache's precision here, so the pre-fit sees what the steps will read
            f = g(self.scorer_inputs(hs, labels, output_embedding)).to(self.features.dtype)
            if not torch.isfinite(f).all():
                raise ValueError(f"ATWU: the forget features overflow method_args.state_dtype={self.cfg.state_dtype} "
                                 "(values beyond its range); use bfloat16 or float32")
            self.features.put_rows(keys, f, counts)
            all_f.append(f)
            all_c.append(g(self.conflict(self.grad_features(logits, hs[-1], labels))))
        initial_conflict = torch.cat(all_c)
        if self.scorer is not None:
            feats = torch.cat(all_f)
            self.scorer.norm.fit(feats)  # fixed statistics of the frozen features
            with torch.enable_grad():
                for _ in range(self.cfg.pretrain_steps):
                    self._scorer_step(feats, initial_conflict)

    # ---- per step ------------------------------------------------------------------------
    def _scorer_step(self, feats: torch.Tensor, c: torch.Tensor) -> None:
        w = self.scorer(feats)
        loss = scorer_loss(w, c, self.cfg.rho, self.cfg.lam, self.cfg.wd, self.scorer.decay_params())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def observe_retain(self, logits, hidden, labels):
        """Stream the retain batch's features into the filling bank; swap every K steps."""
        if self.cfg.bank_refresh_every == 0:
            return
        self.filling.add(*(self.gather_rows(x) for x in self.grad_features(logits, hidden, labels)[:3]))

    def update(self, batch: dict, logits, hidden_states, output_embedding) -> None:
        """The scorer's half of one step: this step's retain conflicts on a sampled subset of
        the forget tokens, ``scorer_steps`` Adam steps on them (every ``scorer_every`` steps),
        then the step count advances and the banks swap every ``bank_refresh_every`` steps.
        ``weights`` then reads the updated scorer (the LM's half)."""
        cfg = self.cfg
        labels = batch["labels"]
        if cfg.features == "frozen":
            feats_all = self.features.gather(sample_keys(batch), labels)
        else:
            feats_all = self.scorer_inputs([h.detach() for h in hidden_states], labels, output_embedding)
        # conflict on a sampled subset (all tokens for `direct`, which has no scorer to generalize)
        limit = None if (cfg.variant == "direct" or cfg.max_forget_tokens == 0) else cfg.max_forget_tokens
        if self.rank is not None:  # per-rank subsample from saved state only: resumes exactly
            self.gen.manual_seed((cfg.seed * 1_000_003 + self.rank) * 1_000_033 + self.steps_seen)
        gfeats = self.grad_features(logits.detach(), hidden_states[-1].detach(), labels, max_tokens=limit)
        c = self.conflict(gfeats)
        if self.scorer is not None and self.steps_seen % cfg.scorer_every == 0:
            rows = _row_index(labels)[gfeats.positions[:, 0], gfeats.positions[:, 1]]
            with torch.enable_grad():
                for _ in range(cfg.scorer_steps):
                    self._scorer_step(self.gather_rows(feats_all[rows]), self.gather_rows(c))
        self._step_inputs = (feats_all, c)  # read once by ``weights``
        self.steps_seen += 1
        if cfg.bank_refresh_every and self.steps_seen % cfg.bank_refresh_every == 0 and len(self.filling):
            self.bank, self.filling = self.filling, self.bank
            self.filling.refresh([], None)  # empty it; reseeded from its own history

    @torch.no_grad()
    def weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Weights ``[B, T]`` (float32, zero off the answer tokens) of the batch the last
        ``update`` saw: the scorer's on every forget token, or ``direct``'s from the conflicts."""
        if self._step_inputs is None:
            raise RuntimeError("ATWU: weights() before update() in this step")
        (feats_all, c), self._step_inputs = self._step_inputs, None
        mask = answer_mask(labels)
        weights = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        if self.scorer is None:
            weights[mask] = direct_weights(c, self.cfg.direct_a).to(weights.device)
        else:
            weights[mask] = self.scorer(feats_all).to(weights.device)
        return weights

    def reference_logp(self, batch: dict) -> torch.Tensor:
        """The initial model's log-probs ``[B, T]`` of a forget batch, cached at setup."""
        labels = batch["labels"]
        ref = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        ref[answer_mask(labels)] = self.ref_logp.gather(sample_keys(batch), labels).to(ref.device)
        return ref

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        sd = {
            "config": asdict(self.cfg),
            "steps_seen": self.steps_seen,
            "gen": self.gen.get_state(),
            "bank": self.bank.state_dict(),
            "filling": self.filling.state_dict(),
            "features": self.features.state_dict(),
            "ref_logp": self.ref_logp.state_dict(),
        }
        if self.scorer is not None:
            sd.update(scorer=self.scorer.state_dict(), optimizer=self.optimizer.state_dict())
        return sd

    def load_state_dict(self, sd: dict) -> None:
        if sd["config"] != asdict(self.cfg):
            raise ValueError("ATWU checkpoint was written with another ATWU configuration; refusing to resume")
        self.steps_seen = sd["steps_seen"]
        self.gen.set_state(sd["gen"])
        self.bank.load_state_dict(sd["bank"])
        self.filling.load_state_dict(sd["filling"])
        if self.cfg.bank_refresh_every:
            self.filling.reserve(len(self.bank), like=self.bank)
        self.features.load_state_dict(sd["features"])
        self.ref_logp.load_state_dict(sd["ref_logp"])
        if self.scorer is not None:
            self.scorer.load_state_dict(sd["scorer"])
            self.optimizer.load_state_dict(sd["optimizer"])


def answer_tokens(dataset) -> int:
    """Answer tokens of a dataset of tokenized items (0 if its items carry no ``labels``): the
    rows the setup pass will offer the retain bank, so the bank is allocated once."""
    try:
        return sum(int(answer_mask(torch.as_tensor(dataset[i]["labels"])[None]).sum()) for i in range(len(dataset)))
    except (KeyError, TypeError, IndexError):
        return 0


@register_weighter("atwu")
class ATWUWeighter(TokenWeighter):
    """ATWU through the weighter contract (``weighting/base.py``): ``setup`` builds the state
    above with the initial model (retain bank, frozen forget features, reference log-probs,
    scorer pre-fit) or restores it from a checkpoint; ``update`` is the scorer's step of the
    alternation, ``compute`` the LM step's weights; ``observe_retain`` feeds the filling bank.
    Options: the fields of ``ATWUConfig`` (the ATWU trainer takes them flat in method_args)."""

    caches_reference_logp = True  # token-level NPO needs no reference forward per step
    checkpoint_name = "atwu_state"

    def __init__(self, **options):
        self.cfg = ATWUConfig.from_dict(options)
        streams_retain = {"retain_hidden_states"} if self.cfg.bank_refresh_every else set()
        self.needs = frozenset({"all_hidden_states", "output_embedding"} | streams_retain)
        self.state: Optional[ATWUWeighting] = None

    def setup(self, context: WeighterSetup) -> None:
        # the scorer's initialization draws from torch's RNG (the trainer runs setup on a copy)
        self.state = ATWUWeighting(self.cfg, context.vocab_size, context.hidden_size, context.n_layers)
        if context.rank is not None:  # data parallel / ZeRO: one replicated state (trainers/zero.py)
            self.state.gather_rows, self.state.rank = context.gather_rows, context.rank
        if context.saved_state is not None:  # resuming: the saved state replaces the setup
            self.state.load_state_dict(context.saved_state)
            return
        self.state.setup(context.batches("retain"), context.batches("forget"), context.forward,
                         context.output_embedding, retain_tokens=answer_tokens(context.datasets["retain"]))

    def update(self, inputs: WeightingInputs) -> None:
        self.state.update(_batch(inputs), inputs.logits, inputs.all_hidden_states, inputs.output_embedding)

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        return self.state.weights(inputs.labels)

    def observe_retain(self, inputs: WeightingInputs) -> None:
        self.state.observe_retain(inputs.logits, inputs.hidden_states, inputs.labels)

    def reference_logp(self, inputs: WeightingInputs) -> torch.Tensor:
        return self.state.reference_logp(_batch(inputs))

    def state_dict(self) -> dict:
        return self.state.state_dict() if self.state is not None else {}


# the options are ATWUConfig's fields: named, with defaults, for config checks and --help
ATWUWeighter.__init__.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in fields(ATWUConfig)])


def _batch(inputs: WeightingInputs) -> dict:
    """The batch keys ``ATWUWeighting`` reads (labels; sample keys from index or tokens)."""
    return {"input_ids": inputs.input_ids, "labels": inputs.labels, "attention_mask": inputs.attention_mask,
            "index": inputs.index}


def extra_memory_bytes(cfg: ATWUConfig, vocab_size: int, hidden_size: int, retain_tokens: int,
                       forget_tokens: int, n_layers: Optional[int] = None) -> dict:
    """ATWU's persistent extra tensor bytes per rank, by component (docs/scaling.md, "ATWU's
    extra memory per rank"): what ATWU holds besides what the LM step holds anyway. Every rank
    holds the same replicated state, so nothing here depends on the number of parameters or of
    ranks. ``retain_tokens`` / ``forget_tokens``: answer tokens of the whole retain / forget set
    (the setup pass sees all of them; the forget features are gathered to every rank);
    ``n_layers``: hidden-state tensors of the model (``num_hidden_layers + 1``, for cross_layer).
    Not included: transients (the sketch's softmax over at most 1024 tokens x vocab, the
    all-gathered per-step inputs, which grow with the world size; docs/scaling.md)."""
    half = cfg.state_dtype != "float32"
    if cfg.sketch == "random_projection":
        e_dim, projection = cfg.sketch_dim, vocab_size * cfg.sketch_dim * 4
    elif cfg.sketch == "topk":
        e_dim, projection, half = 2 * (cfg.sketch_dim + 1), 0, False  # packed indices: float32
    else:
        e_dim, projection = vocab_size, 0
    element = 2 if half else 4
    row = (hidden_size + e_dim) * element + 8 + 4 + (8 if half else 0)  # id int64, key fp32, norms
    bank_rows = min(cfg.bank_size, retain_tokens)
    banks = (2 if cfg.bank_refresh_every else 1) * bank_rows * row  # active + filling (reserved)
    variant = "linear_h" if cfg.variant == "direct" else cfg.variant
    width = {"linear_h": hidden_size, "mlp": hidden_size, "linear_h_tok": 2 * hidden_size,
             "cross_layer": (n_layers or 1) * hidden_size}[variant]
    feature_element = 4 if cfg.state_dtype == "float32" else 2  # the forget cache is any dense float
    features = forget_tokens * width * feature_element if cfg.features == "frozen" else 0
    scorer = 0
    if cfg.variant != "direct":
        net = build_scorer(cfg.variant, hidden_size, n_layers=n_layers, mlp_hidden=cfg.mlp_hidden)
        params = sum(p.numel() for p in net.parameters())
        scorer = 3 * 4 * params + sum(b.numel() * b.element_size() for b in net.buffers())  # + Adam's 2
    parts = {"projection": projection, "banks": banks, "forget_features": features,
             "reference_logp": forget_tokens * 4, "scorer": scorer}
    parts["total"] = sum(parts.values())
    return parts
