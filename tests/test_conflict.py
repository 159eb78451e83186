"""Retain conflict: output-layer gradient factors, sketches, bank, conflict modes, ablations."""

import itertools

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from atwu_plugin.losses.tokens import answer_mask
from atwu_plugin.tokens import IGNORE_INDEX
from atwu_plugin.weighting.conflict import conflict_flops, pairwise_kernel, retain_conflict
from atwu_plugin.weighting.conflict_ablations import (
    exact_token_gradient_cosine,
    finite_difference_alignment,
    mean_gradient_alignment,
    per_token_gradients,
)
from atwu_plugin.weighting.output_grad import (
    ExactE,
    OutputGradFeatures,
    RandomProjectionSketch,
    TopKSketch,
    output_grad_features,
    scatter_tokens,
)
from atwu_plugin.weighting.retain_bank import RetainFeatureBank

V, H = 50, 16


class TinyLM(nn.Module):
    """Embedding + one hidden layer (mixing the previous token) + bias-free output Linear."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(V, H)
        self.cur, self.prev = nn.Linear(H, H), nn.Linear(H, H)
        self.head = nn.Linear(H, V, bias=False)

    def forward(self, input_ids, attention_mask=None):
        x = self.emb(input_ids)
        h = torch.tanh(self.cur(x) + self.prev(F.pad(x[:, :-1], (0, 0, 1, 0))))
        return self.head(h), h


def make_batch(seed, B=3, T=8, prompt=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = ids.clone()
    labels[:, :prompt] = IGNORE_INDEX
    labels[0, -1] = IGNORE_INDEX  # padding-like hole
    return {"input_ids": ids, "labels": labels}


def feats(model, batch, sketch):
    logits, hidden = model(batch["input_ids"])
    return output_grad_features(logits, hidden, batch["labels"], sketch)


def bank_of(f, sketch, capacity=10_000):
    bank = RetainFeatureBank(capacity, sketch)
    bank.add(f.e, f.h, f.token_ids)
    return bank


# (a) factorized kernel == autograd per-token output-layer gradients ---------------------------


def test_factorized_kernel_matches_autograd_output_layer_gradients():
    model, fb, rb = TinyLM(), make_batch(1), make_batch(2)
    ff, rf = feats(model, fb, ExactE()), feats(model, rb, ExactE())
    assert ff.positions.tolist() == answer_mask(fb["labels"]).nonzero().tolist()

    exact = exact_token_gradient_cosine(model, fb, rb, params=[model.head.weight])
    kernel = pairwise_kernel(ff.e, ff.h, rf.e, rf.h, ExactE())
    torch.testing.assert_close(kernel, exact, atol=1e-5, rtol=0)

    g_f = per_token_gradients(model, fb["input_ids"], fb["labels"], params=[model.head.weight])
    g_r = per_token_gradients(model, rb["input_ids"], rb["labels"], params=[model.head.weight])
    raw = pairwise_kernel(ff.e, ff.h, rf.e, rf.h, ExactE(), normalize=False)
    torch.testing.assert_close(raw, g_f @ g_r.T, atol=1e-5, rtol=1e-5)

    # the bank/chunked aggregation reproduces the aggregates of the exact matrix
    bank = bank_of(rf, ExactE())
    torch.testing.assert_close(
        retain_conflict(ff, bank, chunk_size=3), exact.max(1).values, atol=1e-5, rtol=0
    )
    top = exact.topk(4, dim=1).values.mean(1)
    torch.testing.assert_close(
        retain_conflict(ff, bank, aggregate="topk_mean", topk=4, chunk_size=5), top, atol=1e-5, rtol=0
    )
    tau = 0.1
    soft = tau * torch.logsumexp(exact / tau, 1) - tau * torch.log(torch.tensor(float(exact.shape[1])))
    got = retain_conflict(ff, bank, aggregate="softmax", temperature=tau, chunk_size=4)
    torch.testing.assert_close(got, soft, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        retain_conflict(ff, bank, mode="raw"), (g_f @ g_r.T).max(1).values, atol=1e-5, rtol=1e-5
    )

    # mean-gradient ablation == <g_t, mean_s g_s>, both through the [d, H] matrix and the sparse path
    mean_exact = g_f @ g_r.mean(0)
    torch.testing.assert_close(mean_gradient_alignment(ff, bank), mean_exact, atol=1e-5, rtol=1e-5)
    ft, rt = feats(model, fb, TopKSketch(V)), feats(model, rb, TopKSketch(V))
    torch.testing.assert_close(
        mean_gradient_alignment(ft, bank_of(rt, TopKSketch(V))), mean_exact, atol=1e-5, rtol=1e-5
    )


def test_true_token_entry_is_accurate_when_p_is_close_to_one():
    z = torch.zeros(2, V)
    z[0, 7], z[1, 3] = 40.0, 25.0  # p_y = 1 - ~1e-16 / 1e-10: 1 - p_y is 0 in fp32
    y = torch.tensor([7, 3])
    e = ExactE()(z, y)
    p64 = torch.softmax(z.double(), -1)
    ref = p64.scatter(-1, y[:, None], 0.0).sum(-1)  # sum of the small entries, in float64
    assert (1 - torch.softmax(z, -1)[0, 7]).item() == 0.0  # the naive form cancels
    torch.testing.assert_close(e[torch.arange(2), y].double(), ref, rtol=1e-5, atol=0)
    assert e.sum(-1).abs().max() < 1e-6 * e.abs().max()


def test_random_projection_formula_equals_dense_product():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(6, V, generator=g) * 3, torch.randint(0, V, (6,), generator=g)
    sk = RandomProjectionSketch(V, 32, seed=3)
    dense = ExactE()(z.double(), y).double() @ sk.matrix().double()
    torch.testing.assert_close(sk(z, y).double(), dense, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        RandomProjectionSketch(V, 32, seed=3)(z, y), sk(z, y), atol=0, rtol=0
    )  # fixed by seed


def test_output_grad_features_subsampling_and_scatter():
    model, b = TinyLM(), make_batch(4, B=4, T=10)
    logits, hidden = model(b["input_ids"])
    full = output_grad_features(logits, hidden, b["labels"], ExactE(), chunk_size=5)
    assert full.e.shape == (int(answer_mask(b["labels"]).sum()), V) and full.h.shape[1] == H
    sub = output_grad_features(
        logits, hidden, b["labels"], ExactE(), max_tokens=7, generator=torch.Generator().manual_seed(0)
    )
    assert sub.e.shape[0] == 7
    rows = [full.positions.tolist().index(p) for p in sub.positions.tolist()]
    torch.testing.assert_close(sub.e, full.e[rows])
    grid = scatter_tokens(torch.ones(len(full.token_ids)), full.positions, b["labels"].shape)
    assert torch.equal(grid.bool(), answer_mask(b["labels"]))
    empty = {"input_ids": b["input_ids"], "labels": torch.full_like(b["labels"], IGNORE_INDEX)}
    assert output_grad_features(logits, hidden, empty["labels"], RandomProjectionSketch(V, 8)).e.shape == (
        0,
        8,
    )


# (b) sketch error -------------------------------------------------------------------------


def sketch_errors(dims, vocab=1000, n=64, seeds=(0, 1, 2)):
    """Mean |cos_sketch(e_t, e_s) - cos(e_t, e_s)| over n x n pairs, averaged over sketch seeds."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2 * n, vocab, generator=g) * 3
    y = torch.randint(0, 40, (2 * n,), generator=g)  # frequent ids: many same-id (high-cos) pairs
    y[::3] = z[::3].argmax(-1)  # and some confidently predicted tokens
    ex = F.normalize(ExactE()(z, y), dim=-1)
    exact = ex[:n] @ ex[n:].T
    out = {}
    for d in dims:
        errs = []
        for s in seeds:
            sk = RandomProjectionSketch(vocab, d, seed=s)
            f = sk.normalize(sk(z, y))
            errs.append((f[:n] @ f[n:].T - exact).abs().mean().item())
        out[d] = sum(errs) / len(errs)
    return out, exact


def test_random_projection_sketch_error_is_bounded_and_shrinks_with_dim():
    errs, exact = sketch_errors([32, 64, 128, 256, 512])
    print("random-projection mean |cos error| by d:", {d: round(e, 4) for d, e in errs.items()})
    assert exact.abs().max() > 0.5  # the comparison includes strongly aligned pairs
    assert errs[256] < 0.1
    ds = sorted(errs)
    assert all(errs[b] < errs[a] * 1.1 for a, b in itertools.pairwise(ds))  # monotone up to noise
    assert errs[512] < 0.5 * errs[32]  # ~1/sqrt(d)


def test_topk_sketch_is_exact_when_k_covers_the_vocabulary():
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(20, V, generator=g) * 2, torch.randint(0, V, (20,), generator=g)
    ex, ek = ExactE(), TopKSketch(V + 5)  # k > V exercises the padding path too
    a, b = ex(z, y), ek(z, y)
    torch.testing.assert_close(ek.gram(b[:10], b[10:]), a[:10] @ a[10:].T, atol=1e-6, rtol=0)
    torch.testing.assert_close(ek.to_dense(b, V), a, atol=1e-7, rtol=0)
    torch.testing.assert_close(
        ek.gram(ek.normalize(b), ek.normalize(b)).diagonal(), torch.ones(20), atol=1e-6, rtol=0
    )
    # a small k keeps the dominant entries: close to exact on peaked distributions
    z_peaked = z * 4
    a, b = F.normalize(ex(z_peaked, y), dim=-1), TopKSketch(8)(z_peaked, y)
    bn = TopKSketch(8).normalize(b)
    assert (TopKSketch(8).gram(bn[:10], bn[10:]) - a[:10] @ a[10:].T).abs().mean() < 0.02


# (c) planted structure: kernel conflict separates, mean-gradient alignment does not ----------


def test_planted_conflict_kernel_separates_and_mean_gradient_does_not():
    g = torch.Generator().manual_seed(0)
    d, M, n = 64, 200, 100

    def rn(*s):
        return torch.randn(*s, generator=g)

    first = (torch.arange(H * 2) < H).float()  # retain h live in the first half of a 2H space
    # retain tokens in near-antipodal pairs: their mean gradient is ~0 (a trained model)
    e_half, h_half = rn(M // 2, d), rn(M // 2, 2 * H) * first
    e_r = torch.cat([e_half, -e_half + 0.05 * rn(M // 2, d)])
    h_r = torch.cat([h_half, h_half + 0.05 * rn(M // 2, 2 * H) * first])
    # conflicting forget tokens: noisy copies of one retain token each, with varied norms
    src = torch.randint(0, M, (n,), generator=g)
    scale = torch.rand(n, 1, generator=g) * 3 + 0.2
    e_c, h_c = (e_r[src] + 0.3 * rn(n, d)) * scale, h_r[src] + 0.3 * rn(n, 2 * H) * first
    # forget-specific tokens: gradients orthogonal to every retain token's (h in the other half)
    e_o, h_o = rn(n, d) * (torch.rand(n, 1, generator=g) * 3 + 0.2), rn(n, 2 * H) * (1 - first)
    forget = OutputGradFeatures(
        torch.cat([e_c, e_o]), torch.cat([h_c, h_o]), torch.zeros(2 * n, dtype=torch.long), None
    )
    conflicting = torch.cat([torch.ones(n), torch.zeros(n)]).numpy()
    bank = RetainFeatureBank(M, ExactE())
    bank.add(e_r, h_r, torch.zeros(M, dtype=torch.long))

    auc_kernel = roc_auc_score(conflicting, retain_conflict(forget, bank, chunk_size=64).numpy())
    auc_soft = roc_auc_score(conflicting, retain_conflict(forget, bank, aggregate="softmax").numpy())
    auc_mean = roc_auc_score(conflicting, mean_gradient_alignment(forget, bank).numpy())
    auc_mean_cos = roc_auc_score(conflicting, mean_gradient_alignment(forget, bank, normalize=True).numpy())
    print(
        f"planted AUROC: kernel max {auc_kernel:.3f}, softmax {auc_soft:.3f}, "
        f"mean-gradient {auc_mean:.3f} / cos {auc_mean_cos:.3f}"
    )
    assert auc_kernel > 0.95 and auc_soft > 0.95
    for auc in (auc_mean, auc_mean_cos):
        assert auc < 0.75 and auc_kernel - auc > 0.2


# (d) token buckets ----------------------------------------------------------------------------


def test_token_bucket_compares_only_same_ids():
    g = torch.Generator().manual_seed(5)
    h_bank = torch.randn(30, H, generator=g)
    ids_bank = torch.randint(0, 5, (30,), generator=g)
    h_f = torch.randn(12, H, generator=g)
    ids_f = torch.randint(0, 7, (12,), generator=g)  # ids 5 and 6 have no bucket
    ids_f[:2] = torch.tensor([5, 6])
    h_f[2] = h_bank[ids_bank != ids_f[2]][0]  # identical h but a different id: must be ignored
    bank = RetainFeatureBank(100, ExactE())
    bank.add(torch.zeros(30, 4), h_bank, ids_bank)
    forget = OutputGradFeatures(torch.zeros(12, 4), h_f, ids_f, None)
    c = retain_conflict(forget, bank, mode="token_bucket", chunk_size=7)
    cos = F.normalize(h_f, dim=-1) @ F.normalize(h_bank, dim=-1).T
    for i in range(12):
        same = ids_bank == ids_f[i]
        expected = cos[i, same].max() if same.any() else torch.tensor(-1.0)
        torch.testing.assert_close(c[i], expected, atol=1e-6, rtol=0)
    assert c[0] == -1 and c[1] == -1 and c[2] < 0.999
    soft = retain_conflict(forget, bank, mode="token_bucket", aggregate="softmax", chunk_size=4)
    assert torch.isfinite(soft).all() and (soft[:2] == -1).all()
    assert (retain_conflict(forget, RetainFeatureBank(4, ExactE()), mode="token_bucket") == -1).all()


# (e) finite-difference probe on the full model ------------------------------------------------


def _logp(model, batch):
    """Answer-token log-probs in the model's dtype (token_logprobs casts to fp32, which would
    limit a float64 finite difference to ~1e-7 / eps)."""
    logits = model(batch["input_ids"])[0][:, :-1]
    picked = torch.log_softmax(logits, -1).gather(-1, batch["labels"][:, 1:].clamp_min(0)[..., None])[..., 0]
    return picked[answer_mask(batch["labels"])[:, 1:]]


def _fd_fns(fb, rb):
    def forget_logp(model):
        return _logp(model, fb)

    def retain_loss(model):
        return -_logp(model, rb).mean()

    return forget_logp, retain_loss


def test_finite_difference_restores_parameters_bit_exactly():
    model, fb, rb = TinyLM(), make_batch(1), make_batch(2)
    before = [p.detach().clone() for p in model.parameters()]
    forget_logp, retain_loss = _fd_fns(fb, rb)
    for central in (True, False):
        a = finite_difference_alignment(
            model, model.parameters(), forget_logp, retain_loss, eps=1e-2, central=central
        )
        assert a.shape == (int(answer_mask(fb["labels"]).sum()),) and torch.isfinite(a).all()
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))

    def boom(model):
        raise RuntimeError("forget fn failed")

    try:
        finite_difference_alignment(model, model.parameters(), boom, retain_loss, eps=1e-2)
    except RuntimeError:
        pass
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_finite_difference_matches_exact_full_gradient_inner_products():
    model, fb, rb = TinyLM().double(), make_batch(1), make_batch(2)
    forget_logp, retain_loss = _fd_fns(fb, rb)
    fd = finite_difference_alignment(model, list(model.parameters()), forget_logp, retain_loss, eps=1e-4)
    g_f = per_token_gradients(model, fb["input_ids"], fb["labels"])
    g_r = per_token_gradients(model, rb["input_ids"], rb["labels"]).mean(0)  # = -grad L_r
    assert fd.dtype == torch.float64
    torch.testing.assert_close(fd, (g_f @ g_r / g_r.norm()).double(), atol=1e-6, rtol=1e-5)


# retain bank ----------------------------------------------------------------------------------


def _retain_batches(n_batches=5, per=40, dim=6):
    g = torch.Generator().manual_seed(11)
    out = []
    for i in range(n_batches):
        h = torch.randn(per, dim, generator=g)
        h[:, 0] = i  # remember the batch of origin
        out.append(
            OutputGradFeatures(
                torch.randn(per, 3, generator=g), h, torch.randint(0, 9, (per,), generator=g), None
            )
        )
    return out


def test_bank_refresh_is_deterministic_and_state_dict_round_trips():
    batches = _retain_batches()

    def built(seed):
        bank = RetainFeatureBank(50, ExactE(), seed=seed)
        bank.refresh(iter(batches), lambda f: f)
        return bank

    a, b, c = built(0), built(0), built(1)
    assert len(a) == 50 and a.n_seen == 200 and a.memory_floats() == 50 * (6 + 3)
    assert torch.equal(a.h, b.h) and torch.equal(a.token_ids, b.token_ids)
    assert not torch.equal(a.h, c.h)
    a.refresh(iter(batches), lambda f: f)  # a second refresh draws a fresh sample
    assert not torch.equal(a.h, b.h)

    restored = RetainFeatureBank(1, ExactE(), seed=99)
    restored.load_state_dict(a.state_dict())
    for k in ("e", "h", "token_ids", "keys"):
        assert torch.equal(getattr(restored, k), getattr(a, k))
    extra = _retain_batches(1)[0]
    a.add(extra.e, extra.h, extra.token_ids)
    restored.add(extra.e, extra.h, extra.token_ids)  # same generator state: same sample
    assert torch.equal(restored.h, a.h) and restored.n_refreshes == a.n_refreshes
    _, h_hat = a.normalized()
    torch.testing.assert_close(h_hat.norm(dim=-1), torch.ones(50))
    torch.testing.assert_close(a.normalized(slice(10, 20))[1], h_hat[10:20])  # per-chunk rows: same values


def test_bank_samples_uniformly_across_batches():
    batches = _retain_batches()
    counts = torch.zeros(5)
    for seed in range(60):
        bank = RetainFeatureBank(50, ExactE(), seed=seed)
        bank.refresh(iter(batches), lambda f: f)
        counts += torch.bincount(bank.h[:, 0].long(), minlength=5)
    frac = counts / counts.sum()
    assert (frac - 0.2).abs().max() < 0.03, frac


def test_conflict_flops():
    assert conflict_flops(256, 65536, 256, 4096) == 2 * 256 * 65536 * (256 + 4096)


def _cat_bank_reference(capacity, seed, offers):
    """The bank as it was built before the in-place version (``torch.cat`` of the old and new
    rows, then the ``capacity`` smallest keys in row order): the in-place bank must hold the
    very same rows, in the same order, bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    e = h = ids = keys = None
    for e_new, h_new, ids_new in offers:
        k = torch.rand(h_new.shape[0], generator=gen)
        e_new, h_new, ids_new = e_new.float(), h_new.float(), ids_new.long()
        if h is not None:
            e_new, h_new = torch.cat([e, e_new]), torch.cat([h, h_new])
            ids_new, k = torch.cat([ids, ids_new]), torch.cat([keys, k])
        if k.shape[0] > capacity:
            keep = k.topk(capacity, largest=False).indices.sort().values
            e_new, h_new, ids_new, k = e_new[keep], h_new[keep], ids_new[keep], k[keep]
        e, h, ids, keys = e_new, h_new, ids_new, k
    return e, h, ids, keys


def _offers(n, seed=3, d=5, dim_h=7):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, 900, (n,), generator=g).tolist()  # incl. empty and multi-chunk offers
    return [(torch.randn(s, d, generator=g), torch.randn(s, dim_h, generator=g),
             torch.randint(0, 50, (s,), generator=g)) for s in sizes]


def test_in_place_bank_equals_the_torch_cat_bank_bit_for_bit():
    offers = _offers(30)
    for capacity in (1, 700, 2500, 5000, 100_000):  # full after one offer, after several, never
        bank = RetainFeatureBank(capacity, ExactE(), seed=4)
        for step, (e, h, ids) in enumerate(offers):
            bank.add(e, h, ids)
            ref = _cat_bank_reference(capacity, 4, offers[: step + 1])
            for got, want in zip((bank.e, bank.h, bank.token_ids, bank.keys), ref):
                assert torch.equal(got, want), (capacity, step)
        # a refresh rebuilds in place (same buffers) and equals a fresh bank's refresh
        buffers, was_full = bank._buffers["h"].data_ptr(), len(bank) == capacity
        bank.refresh(iter(offers[:3]), lambda f: OutputGradFeatures(*f, None))
        fresh = RetainFeatureBank(capacity, ExactE(), seed=4)
        fresh.n_refreshes = bank.n_refreshes - 1
        fresh.refresh(iter(offers[:3]), lambda f: OutputGradFeatures(*f, None))
        assert torch.equal(bank.h, fresh.h) and torch.equal(bank.keys, fresh.keys)
        if was_full and len(bank) == capacity:
            assert bank._buffers["h"].data_ptr() == buffers  # refilled in place, no reallocation


def test_full_bank_add_allocates_no_second_bank():
    """Once full, an ``add`` of k rows allocates the k new rows and one compaction chunk,
    never a copy of the bank (the torch.cat version allocated about two)."""
    from torch.profiler import ProfilerActivity, profile

    capacity, d, dim_h = 8192, 64, 96
    offers = _offers(12, d=d, dim_h=dim_h)
    bank = RetainFeatureBank(capacity, ExactE(), seed=0)
    g = torch.Generator().manual_seed(0)
    bank.add(torch.randn(capacity, d, generator=g), torch.randn(capacity, dim_h, generator=g),
             torch.zeros(capacity, dtype=torch.long))
    bank_bytes = bank.memory_bytes()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for e, h, ids in offers:
            bank.add(e, h, ids)
    cur = peak = 0
    for nbytes in [ev.nbytes() for ev in sorted(prof.profiler.kineto_results.events(), key=lambda ev: ev.start_ns())
                   if ev.name() == "[memory]"]:
        cur += nbytes
        peak = max(peak, cur)
    assert len(bank) == capacity and peak < 0.5 * bank_bytes, (peak, bank_bytes)


def test_half_precision_bank_stores_unit_rows_and_norms():
    offers = _offers(8)
    exact, half = RetainFeatureBank(2000, ExactE(), seed=1), RetainFeatureBank(2000, ExactE(), seed=1, dtype=torch.float16)
    for e, h, ids in offers:
        exact.add(e, h, ids)
        half.add(e, h, ids)
    assert torch.equal(exact.token_ids, half.token_ids)  # same sample: keys do not depend on dtype
    rows = 2000  # bytes per row as in docs/scaling.md: (d + H) x 4 + 12, resp. (d + H) x 2 + 8 + 12
    assert exact.memory_bytes() == rows * ((5 + 7) * 4 + 12) and half.memory_bytes() == rows * ((5 + 7) * 2 + 20)
    for a, b in zip(exact.normalized(), half.normalized()):
        torch.testing.assert_close(b, a, atol=2e-3, rtol=0)
    torch.testing.assert_close(half.h, exact.h, rtol=2e-3, atol=1e-6)
    restored = RetainFeatureBank(1, ExactE(), seed=9, dtype=torch.float16)
    restored.load_state_dict(half.state_dict())
    assert torch.equal(restored.h, half.h) and torch.equal(restored.e, half.e)
    try:
        RetainFeatureBank(1, ExactE()).load_state_dict(half.state_dict())
    except ValueError as err:
        assert "state_dtype" in str(err)
    else:
        raise AssertionError("a float16 bank loaded into a float32 one")
    topk = RetainFeatureBank(10, TopKSketch(k=4), dtype=torch.float16)
    assert topk.dtype == torch.float32  # packed token indices need float32


def test_memory_model_equals_the_state_atwu_allocates():
    """``extra_memory_bytes`` (docs/scaling.md) against the tensors an ATWU setup really holds:
    projection, both banks (the filling bank reserved at the active bank's rows), the frozen
    forget features and reference log-probs; bank smaller and larger than the retain set."""
    from atwu_plugin.weighting.atwu import ATWUConfig, ATWUWeighting, extra_memory_bytes

    model = TinyLM()
    retain = [make_batch(s, B=4, T=10) for s in range(3)]
    forget = [{**make_batch(10 + s), "index": torch.arange(3) + 3 * s} for s in range(2)]
    t_r = int(sum(answer_mask(b["labels"]).sum() for b in retain))
    t_f = int(sum(answer_mask(b["labels"]).sum() for b in forget))

    def forward(batch):
        logits, h = model(batch["input_ids"])
        return logits, [h, h]

    def nbytes(tensors):
        return sum(t.numel() * t.element_size() for t in tensors)

    for dtype, bank_size, refresh in (("float32", 40, 20), ("float16", 40, 20), ("float16", 1000, 20), ("float32", 40, 0)):
        cfg = ATWUConfig(sketch_dim=8, bank_size=bank_size, bank_refresh_every=refresh, pretrain_steps=1, state_dtype=dtype)
        w = ATWUWeighting(cfg, V, H, n_layers=2)
        with torch.no_grad():
            w.setup(retain, forget, forward, model.head.weight)
        parts = extra_memory_bytes(cfg, V, H, t_r, t_f, n_layers=2)
        assert len(w.bank) == min(bank_size, t_r)
        assert parts["projection"] == nbytes([w.sketch.matrix()])
        assert parts["banks"] == w.bank.memory_bytes() + w.filling.memory_bytes()
        assert parts["forget_features"] == nbytes(w.features._data.values())
        assert parts["reference_logp"] == nbytes(w.ref_logp._data.values())
        assert parts["scorer"] == 3 * nbytes(w.scorer.parameters()) + nbytes(w.scorer.buffers())
