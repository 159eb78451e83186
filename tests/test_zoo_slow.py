"""The embedded benchmark's real tiny models: quality gates, cache reuse, and the checks that
the benchmark is neither broken nor too easy. Builds the default zoo once (cached under
$ATWU_CACHE_DIR; minutes on 2 cores cold, seconds warm)."""

import time

import pytest
import torch

from atwu_plugin.tasks.embedded import EmbeddedBenchmark
from atwu_plugin.evals.trajectory import TrajectoryCallback, value_at
from atwu_plugin.hosts.lite import build_trainer, load_trainer_config
from atwu_plugin.zoo.build import build_zoo
from atwu_plugin.zoo.loading import load_causal_lm
from atwu_plugin.zoo.quality import model_quality

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench():
    torch.set_num_threads(2)
    t = time.time()
    b = EmbeddedBenchmark().prepare()
    print(f"zoo ready in {time.time() - t:.1f}s (cold build {b.zoo.manifest['build_s']}s)")
    return b


@pytest.fixture(scope="module")
def target_quality(bench):
    return model_quality(bench.model_path, bench.zoo.data_dir, bench.template_args)


def test_quality_gates(bench, target_quality):
    retain = model_quality(bench.retain_model_path, bench.zoo.data_dir, bench.template_args)
    assert target_quality["forget_rouge"] >= 0.9, target_quality
    assert retain["forget_rouge"] <= 0.5, retain
    assert retain["retain_rouge"] >= 0.9, retain
    assert target_quality["world_rouge"] >= 0.9 and retain["world_rouge"] >= 0.9  # both keep the world probes


def test_second_build_reuses_the_cache(bench):
    t = time.time()
    again = build_zoo(bench.cache_dir, bench.spec)
    assert again.root == bench.zoo.root
    assert time.time() - t < 10


def test_graddiff_forgets_and_keeps_retain(bench, target_quality):
    from atwu_plugin.hosts.lite_cell import run_lite_cell

    run = run_lite_cell(bench, "TW_GradDiff", {"args.learning_rate": 5e-5}, 0, "/tmp/atwu-test-graddiff", log=lambda *a: None)
    m = run["metrics"]
    assert m["forget_prob"] < target_quality["forget_prob"] - 0.05
    assert m["forget_rouge"] < target_quality["forget_rouge"] - 0.2
    assert m["retain_rouge"] >= 0.8 * target_quality["retain_rouge"]


def _trajectory(bench, trainer, overrides):
    tok = bench.tokenizer()
    forget, retain = bench.train_datasets(tok)
    cfg = load_trainer_config(trainer, {"args.num_train_epochs": 3, "args.learning_rate": 2e-4, **overrides})
    tr = build_trainer(cfg, load_causal_lm(bench.model_path), tok, forget, retain, f"/tmp/atwu-test-{trainer}", 0)
    traj = TrajectoryCallback(forget, tok.pad_token_id, every=3)
    tr.add_callback(traj)
    tr.train()
    return traj.points


def test_benchmark_discriminates_oracle_from_uniform(bench):
    """At the same forgetting of forget-specific tokens, weighting GA by the ground truth keeps
    the generic tokens of the forget answers far more probable than uniform GradDiff: the
    benchmark rewards token selectivity (if this failed, the benchmark would be too easy)."""
    uniform = _trajectory(bench, "TW_GradDiff", {})
    oracle = _trajectory(bench, "TW_GradDiff", {"method_args.weighter": {"name": "oracle"},
                                               "method_args.normalizer": "weight_sum"})
    reached = max(min(p["forget_specific_prob"] for p in uniform), min(p["forget_specific_prob"] for p in oracle))
    assert reached < 0.7, "neither run forgot enough to compare"
    g_uniform = value_at(uniform, "forget_specific_prob", reached, "forget_generic_prob")
    g_oracle = value_at(oracle, "forget_specific_prob", reached, "forget_generic_prob")
    print(f"at specific prob {reached:.3f}: generic prob oracle {g_oracle:.3f} vs uniform {g_uniform:.3f}")
    assert g_oracle > g_uniform + 0.1
