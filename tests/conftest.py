"""Shared fixtures: a micro benchmark + model built in seconds, for trainer tests.

The tiny-model quality gates and the benchmark-discrimination checks use the real zoo
(``tests/test_zoo_slow.py``, marked ``slow``); everything here stays well under a minute.
"""

import os

# The suite's numbers (zoo quality gates, the regression reference) must not depend on the CPU
# model CI happens to get: portable AVX2 numerics, set by the package's __init__ before torch is
# imported (atwu_plugin/utils/portable_numerics.py).
os.environ["ATWU_PORTABLE_NUMERICS"] = "1"
import atwu_plugin  # noqa: E402,F401  (before torch)

import pytest  # noqa: E402
import torch  # noqa: E402

from atwu_plugin.data.generator import generate_benchmark
from atwu_plugin.data.qa_dataset import QADataset
from atwu_plugin.zoo.build import TinyLlamaSpec, qa_items
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS, train_tokenizer
from atwu_plugin.zoo.train_lm import FitConfig, fit_lm

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on 2 shared cores: one intra-op thread is far faster than two (modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def isolated_plugins(monkeypatch):
    """No local plugin module loaded yet, and the one registry restored afterwards."""
    from atwu_plugin import plugins
    from atwu_plugin.hosts.components import register_builtins
    from atwu_plugin.registry import REGISTRIES

    monkeypatch.setattr(plugins, "_LOCAL", {g: {} for g in plugins.GROUPS})
    monkeypatch.setattr(plugins, "_LOADED_LOCAL", {})
    monkeypatch.setattr(plugins, "_FED", {})
    register_builtins()  # before the snapshot: they stay registered once their modules are imported
    saved = {g: dict(r._items) for g, r in REGISTRIES.items()}
    yield
    for g, r in REGISTRIES.items():
        r._items.clear()
        r._items.update(saved[g])


@pytest.fixture(scope="session")
def bench():
    """A 20-author embedded benchmark (records only)."""
    return generate_benchmark(seed=0, n_authors=20, n_holdout=2)


@pytest.fixture(scope="session")
def tok(bench):
    """A small tokenizer trained on that benchmark's text."""
    texts = bench["world_text"] + [r["question"] + "\n" + r["answer"] for r in bench["full"]]
    return train_tokenizer(texts, vocab_size=500)


@pytest.fixture(scope="session")
def micro():
    """A 20-author benchmark, a tokenizer and a small Llama fitted briefly on all authors."""
    torch.set_num_threads(1)  # tiny models: threads only add contention
    splits = generate_benchmark(seed=0, n_authors=20, n_holdout=4)
    texts = list(splits["world_text"]) + [r["question"] + " " + r["answer"] for r in splits["full"] + splits["holdout"]]
    tok = train_tokenizer(texts, vocab_size=512)
    model = TinyLlamaSpec(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                          max_position_embeddings=128).build(tok, seed=0)
    fit_lm(model, qa_items(tok, splits["full"], 128), tok.pad_token_id, FitConfig(epochs=12, lr=1e-2, batch_size=16))
    forget = QADataset(splits["forget10"], tok, TINY_TEMPLATE_ARGS, max_length=128)
    retain = QADataset(splits["retain90"], tok, TINY_TEMPLATE_ARGS, max_length=128)
    return {"splits": splits, "tokenizer": tok, "model": model, "forget": forget, "retain": retain}
