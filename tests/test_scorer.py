"""ATWU scorers: features, standardization, objective, direct weights, forget-feature cache."""

import pytest
import torch
from sklearn.metrics import roc_auc_score

from atwu_plugin.losses.tokens import answer_mask
from atwu_plugin.tokens import IGNORE_INDEX
from atwu_plugin.weighting.output_grad import ExactE, output_grad_features
from atwu_plugin.weighting.scorer import (
    ALL_VARIANTS,
    SCORER_VARIANTS,
    CrossLayerScorer,
    FeatureStandardizer,
    ForgetFeatureCache,
    LinearScorer,
    build_scorer,
    direct_weights,
    scorer_features,
    scorer_loss,
    zscore,
)


def planted(n=512, dim=16, seed=0):
    """Badly scaled features whose standardized version linearly encodes the conflict."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, dim, generator=g) * torch.logspace(-1, 2, dim)
    c = (f / f.std(0)) @ torch.randn(dim, generator=g) + 0.5 * torch.randn(n, generator=g)
    return f, c


def train(scorer, f, c, rho=0.3, lam=20.0, wd=1e-3, steps=300, lr=0.05):
    opt = torch.optim.Adam(scorer.parameters(), lr=lr)
    for _ in range(steps):
        loss = scorer_loss(scorer(f), c, rho, lam, wd, scorer.decay_params())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return scorer(f).detach()


def test_linear_scorer_learns_to_downweight_conflicting_tokens():
    torch.manual_seed(0)
    f, c = planted()
    scorer = LinearScorer(f.shape[1])
    scorer.norm.fit(f)
    assert torch.allclose(scorer(f), torch.full((len(f),), 0.5))  # uniform at start
    w = train(scorer, f, c, rho=0.3)
    low_conflict = (c < c.quantile(0.3)).numpy()
    auc = roc_auc_score(low_conflict, w.numpy())
    print(f"linear scorer: AUROC(w vs low conflict) {auc:.3f}, mean(w) {w.mean():.3f} (rho 0.3)")
    assert auc > 0.9
    assert torch.corrcoef(torch.stack([w, c]))[0, 1] < -0.5
    assert abs(w.mean().item() - 0.3) < 0.03
    assert ((w > 0) & (w < 1)).all()


def test_cross_layer_scorer_learns_which_layer_carries_the_signal():
    torch.manual_seed(0)
    f1, c = planted(n=256, dim=8)
    noise = torch.randn(256, 2, 8, generator=torch.Generator().manual_seed(1))
    f = torch.stack([noise[:, 0], f1, noise[:, 1]], 1)  # [N, L=3, dim]: layer 1 is informative
    scorer = CrossLayerScorer(3, 8)
    scorer.norm.fit(f)
    w = train(scorer, f, c, steps=200)
    mix = scorer.layer_weights()
    assert torch.allclose(mix.sum(), torch.tensor(1.0)) and mix.argmax() == 1
    assert roc_auc_score((c < c.quantile(0.3)).numpy(), w.numpy()) > 0.85


def test_direct_weights_decrease_with_conflict():
    c = torch.randn(100, generator=torch.Generator().manual_seed(2))
    w = direct_weights(c, a=2.0)
    order = c.argsort()
    assert (w[order].diff() < 0).all() and ((w > 0) & (w < 1)).all()
    assert torch.allclose(direct_weights(torch.full((5,), 3.0)), torch.full((5,), 0.5))  # no signal: uniform
    assert torch.equal(zscore(torch.tensor([1.5])), torch.tensor([0.0]))


def test_scorer_loss_terms():
    w = torch.tensor([0.2, 0.8], requires_grad=True)
    c = torch.tensor([1.0, -1.0])  # zscore = [1, -1]
    phi = torch.tensor([3.0, 4.0])
    loss = scorer_loss(w, c, rho=0.3, lam=2.0, wd=0.1, params=[phi])
    expected = (0.2 * 1 + 0.8 * -1) / 2 + 2.0 * (0.5 - 0.3) ** 2 + 0.1 * 25
    assert abs(loss.item() - expected) < 1e-6
    loss.backward()  # gradient goes to w (the scorer), never to c (detached conflict)
    assert w.grad is not None


def _hidden_batch(B=2, T=7, H=5, L=3, V=11):
    g = torch.Generator().manual_seed(3)
    hs = [torch.randn(B, T, H, generator=g) for _ in range(L)]
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX
    labels[1, -2:] = IGNORE_INDEX
    return hs, labels, torch.randn(V, H, generator=g)


def test_scorer_features_are_aligned_with_labels():
    hs, labels, w_out = _hidden_batch()
    pos = answer_mask(labels).nonzero()
    f = scorer_features("linear_h", hs, labels)
    for n, (b, t) in enumerate(pos.tolist()):
        assert torch.equal(f[n], hs[-1][b, t - 1])  # state at t-1 predicts labels[t]
    tok = scorer_features("linear_h_tok", hs, labels, output_embedding=w_out)
    assert torch.equal(tok[:, :5], f) and torch.equal(tok[:, 5:], w_out[labels[pos[:, 0], pos[:, 1]]])
    assert torch.equal(scorer_features("mlp", hs[-1], labels), f)
    cross = scorer_features("cross_layer", hs, labels)
    assert cross.shape == (len(pos), 3, 5) and torch.equal(cross[:, -1], f)
    # same row order as the conflict features, so w and c line up token by token
    logits = torch.randn(*labels.shape, 11)
    assert torch.equal(output_grad_features(logits, hs[-1], labels, ExactE()).h, f)
    with pytest.raises(ValueError):
        scorer_features("linear_h_tok", hs, labels)
    with pytest.raises(ValueError):
        scorer_features("nope", hs, labels)


@pytest.mark.parametrize("variant", SCORER_VARIANTS)
def test_every_variant_builds_and_returns_unit_interval_weights(variant):
    hs, labels, w_out = _hidden_batch()
    f = scorer_features(variant, hs, labels, output_embedding=w_out)
    scorer = build_scorer(variant, hidden_size=5, n_layers=len(hs))
    scorer.norm.fit(f)
    w = scorer(f)
    assert w.shape == (f.shape[0],) and ((w > 0) & (w < 1)).all()
    scorer_loss(w, torch.randn(len(w)), 0.3, 1.0, 1e-3, scorer.decay_params()).backward()
    assert all(p.grad is not None for p in scorer.parameters())
    assert "direct" in ALL_VARIANTS


def test_standardizer_running_equals_fixed_and_round_trips():
    f = (
        torch.randn(300, 4, generator=torch.Generator().manual_seed(4))
        * torch.tensor([0.1, 1.0, 10.0, 1000.0])
        + 5
    )
    fixed, running = FeatureStandardizer(4), FeatureStandardizer(4)
    assert torch.equal(fixed(f), f)  # identity before any statistics
    fixed.fit(f)
    for part in f.split([1, 50, 99, 150]):
        running.update(part)
    torch.testing.assert_close(running.mean, fixed.mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(running.var, fixed.var, rtol=1e-4, atol=1e-6)
    z = fixed(f)
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    a, b = LinearScorer(4), LinearScorer(4)
    a.norm.fit(f)
    b.load_state_dict(a.state_dict())  # the statistics are checkpointed with the scorer
    assert torch.equal(a(f), b(f))


def test_forget_feature_cache_round_trip():
    hs, labels, _ = _hidden_batch()
    f = scorer_features("linear_h", hs, labels)
    pos = answer_mask(labels).nonzero()
    cache = ForgetFeatureCache()
    cache.put_batch([10, 3], f, pos)
    assert len(cache) == 2 and 10 in cache and cache.missing([3, 10, 7]) == [7]
    assert torch.equal(cache.gather([10, 3], labels=labels), f)
    assert torch.equal(cache.get(3), f[pos[:, 0] == 1])
    with pytest.raises(ValueError):
        cache.gather([3, 10], labels=labels)  # answer-token counts differ: wrong order/tokenization
    restored = ForgetFeatureCache()
    restored.load_state_dict(cache.state_dict())
    assert torch.equal(restored.gather([10, 3]), f) and torch.equal(restored.all(), cache.all())
    half = ForgetFeatureCache(dtype=torch.bfloat16)
    half.put_batch([0, 1], f, pos)
    assert half.get(0).dtype == torch.bfloat16
