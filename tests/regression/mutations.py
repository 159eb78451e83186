"""Plausible regressions, injected into real runs of the quick regression spec, to prove that
``atwu-regress`` catches them (tests/test_regression_quick.py, docs/regression.md).

Each mutation hits one method of tests/regression/quick.yaml, through a real mechanism:

* a config override in the leaderboard spec (``overrides``), or
* a patch of the package's code applied by :func:`run_mutated_cell`, the cell runner of the
  mutated leaderboard, around that method's cell only (undone afterwards, so that a worker
  process running several cells applies each mutation to its own method only).

Nothing edits a results file: the scores the check sees come from training and evaluating.
``run_mutated_cell`` is a module-level function so that ``run_leaderboard(..., jobs=2)`` can
send it to its spawned workers (they import this module by name from the parent's sys.path).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Iterator, Optional

from atwu_plugin.leaderboard.spec import LeaderboardSpec, MethodSpec


# ---- the patches ---------------------------------------------------------------------------
@contextlib.contextmanager
def uniform_atwu_weights() -> Iterator[None]:
    """ATWU's learned token weights replaced by uniform weights over the answer tokens (the
    scorer still trains; its output is ignored)."""
    from unittest import mock

    from atwu_plugin.losses.tokens import answer_mask
    from atwu_plugin.weighting.atwu import ATWUWeighting

    real_weights = ATWUWeighting.weights

    def weights(self, labels):
        return answer_mask(labels).to(real_weights(self, labels).dtype)

    with mock.patch.object(ATWUWeighting, "weights", weights):
        yield


@contextlib.contextmanager
def shifted_answer_mask() -> Iterator[None]:
    """The training data's answer mask shifted one token to the left (the classic off-by-one:
    the last prompt token becomes a target, the final answer token (EOS) is dropped). Only the
    unlearning datasets (``QADataset``) are affected, not the evaluation."""
    from unittest import mock

    import atwu_plugin.data.qa_dataset as qa_dataset
    from atwu_plugin.tokens import IGNORE_INDEX

    real_encode = qa_dataset.encode_qa

    def encode_qa(*args, **kwargs):
        enc = real_encode(*args, **kwargs)
        mask = enc.labels != IGNORE_INDEX
        shifted = mask.roll(-1)
        shifted[-1] = False
        enc.labels = enc.input_ids.masked_fill(~shifted, IGNORE_INDEX)
        return enc

    with mock.patch.object(qa_dataset, "encode_qa", encode_qa):
        yield


@contextlib.contextmanager
def flipped_ga_sign() -> Iterator[None]:
    """The gradient-ascent forget loss with its sign flipped (``l_t = -log p_t``): the
    method now fine-tunes on the forget set instead of unlearning it."""
    from unittest import mock

    from atwu_plugin.losses.forget import GradientAscent

    with mock.patch.object(GradientAscent, "per_token", lambda self, logp, ref_logp=None: -logp):
        yield


# ---- the mutations -------------------------------------------------------------------------
@dataclass(frozen=True)
class Mutation:
    name: str
    method: str  # the method of quick.yaml it is applied to
    what: str
    overrides: Dict[str, object] = field(default_factory=dict)  # added to the method's overrides
    patch: Optional[Callable[[], contextlib.AbstractContextManager]] = None
    lr_factor: Optional[float] = None  # trainer.args.learning_rate = lr_factor * the method's resolved rate


MUTATIONS = (
    Mutation("uniform_weights", "ATWU", "ATWU's token weights replaced by uniform weights", patch=uniform_atwu_weights),
    Mutation("no_retain_loss", "SimNPO", "retain loss weight 0", overrides={"trainer.method_args.alpha": 0.0}),
    Mutation("answer_mask_shift", "NPO", "answer mask shifted by one token", patch=shifted_answer_mask),
    Mutation("forget_sign_flip", "WGA", "forget loss sign flipped", patch=flipped_ga_sign),
    Mutation("lower_lr", "Oracle", "learning rate 10 % lower", lr_factor=0.9),
)
PATCHES = {m.method: m for m in MUTATIONS if m.patch is not None}


def mutated_spec(spec: LeaderboardSpec, output_dir) -> LeaderboardSpec:
    """``spec`` with every mutation's overrides added to its method (methods must be unique
    per mutation), writing to ``output_dir``."""
    by_method = {m.method: m for m in MUTATIONS}
    missing = set(by_method) - {m.name for m in spec.methods}
    if missing:
        raise ValueError(f"{spec.source}: no method {sorted(missing)} to mutate")
    methods = []
    for m in spec.methods:
        mut = by_method.get(m.name)
        overrides = {**m.overrides, **(mut.overrides if mut else {})}
        if mut is not None and mut.lr_factor is not None:
            overrides["trainer.args.learning_rate"] = round(mut.lr_factor * _learning_rate(spec, m), 12)
        methods.append(MethodSpec(m.name, m.trainer, overrides, m.description))
    return replace(spec, name=spec.name + "-mutated", methods=tuple(methods)).with_output_dir(output_dir)


def _learning_rate(spec: LeaderboardSpec, method: MethodSpec) -> float:
    """The learning rate ``method`` trains with on the spec's (single) benchmark: the
    benchmark's default < the trainer config's ``args`` < the method's overrides."""
    from atwu_plugin.tasks import get_benchmark
    from atwu_plugin.hosts.lite import load_trainer_config

    (bench,) = spec.benchmarks
    options = dict(bench.options)
    base = get_benchmark(options.pop("benchmark", bench.name), **options).trainer_args
    return float(load_trainer_config(method.trainer, method.overrides, base_args=base)["args"]["learning_rate"])


def with_mutated_run(unchanged: dict, mutated: dict, method: str) -> dict:
    """The one-benchmark results ``unchanged`` with ``method``'s runs taken from ``mutated``:
    what the check sees when only that method regressed (both are real leaderboard outputs)."""
    runs = [r for r in mutated["runs"] if r["method"] == method]
    if not runs:
        raise ValueError(f"the mutated results have no run of {method}")
    return {**unchanged, "runs": [r for r in unchanged["runs"] if r["method"] != method] + runs}


def run_mutated_cell(cell):
    """The leaderboard's default cell runner, with the code patch of ``cell.method``'s
    mutation (if any) applied for this cell only."""
    from atwu_plugin.leaderboard.cells import default_run_cell

    mutation = PATCHES.get(cell.method)
    if mutation is None:
        return default_run_cell(cell)
    with mutation.patch():
        # recorded in the cell file (not in results.json): the patch leaves the config, and so
        # the cell's hash, as they were
        return {**default_run_cell(cell), "mutation": mutation.name}
