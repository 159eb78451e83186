"""Distributed glue for ATWU (data parallel, DeepSpeed ZeRO-2/3): torch.distributed and
``deepspeed.zero`` only; the weighting code stays framework-free and receives plain callables.

Design (docs/scaling.md, "The scorer under ZeRO"):
- the scorer is *replicated*, not a submodule of the model: it has ~2H parameters (16 KB at
  8B), its own Adam and its own steps (several per LM step, before it), which the DeepSpeed
  engine (one optimizer, one backward per step, bf16 master weights, clipping, scheduler)
  cannot express. Every rank runs the same scorer step on the *all-gathered* sampled forget
  features and conflicts of the global batch, so the replicas stay identical and equal the
  single-process update at the same global batch (all-gathering the inputs gives the global
  loss, hence the same gradient as all-reducing per-rank gradients of a global-mean loss);
- the retain bank is fed with all-gathered retain features, so every rank holds the same bank;
- the setup passes (bank, frozen-feature cache) run the same batches on every rank: under
  ZeRO-3 every rank must run the same number of forward passes;
- sharded parameters are read through ``deepspeed.zero.GatheredParameters`` (a collective: the
  callers above call it the same number of times on every rank).
Checkpoints: the replicated state is written once (rank 0) and read by every rank.
"""

import contextlib
from contextlib import contextmanager

import torch
import torch.distributed as dist


def world() -> tuple:
    """``(rank, world_size)``; ``(0, 1)`` without an initialized process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm_device(x: torch.Tensor) -> torch.device:
    """NCCL only moves GPU tensors (ATWU's feature cache lives on the CPU)."""
    if dist.get_backend() == "nccl" and x.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return x.device


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x [n_r, ...]`` of every rank along dim 0, in rank order (``n_r`` may differ
    per rank). Identity in a single process. A collective: every rank must call it."""
    rank, size = world()
    if size == 1:
        return x
    home, x = x.device, x.to(_comm_device(x))
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    counts = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(counts, n)
    counts = [int(c.item()) for c in counts]
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(home)


class EqualForwards:
    """Wraps a forward callable whose number of calls depends on the rank's data (masking
    weighters: one forward per chunk of answer tokens). Under ZeRO-3 each forward gathers the
    layers collectively, so a rank that runs fewer forwards leaves the others waiting forever.
    Lockstep: every real call first all-reduces a "still running" flag (1); ``pad()`` keeps
    all-reducing 0 and running a dummy forward (``dummy_args``) as long as some rank is still
    running, so every rank runs as many forwards as the busiest, in the same order."""

    def __init__(self, fn, *dummy_args):
        self.fn, self.dummy_args, self.calls = fn, dummy_args, 0
        self.distributed = world()[1] > 1

    def _any_running(self, running: int) -> bool:
        probe = self.dummy_args[0] if self.dummy_args and torch.is_tensor(self.dummy_args[0]) else torch.zeros(1)
        flag = torch.tensor([running], dtype=torch.long, device=_comm_device(probe))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def __call__(self, *args):
        if self.distributed:
            self._any_running(1)
        self.calls += 1
        return self.fn(*args)

    @torch.no_grad()
    def pad(self) -> int:
        """Run dummy forwards until no rank is running real ones; returns how many ran."""
        dummies = 0
        while self.distributed and self._any_running(0):
            self.fn(*self.dummy_args)
            dummies += 1
        return dummies


def shard_batches(batches, n_batches: int, dummy: dict):
    """This rank's share of an ordered stream of ``n_batches`` batches for a setup pass: round k
    holds batches ``k W .. k W + W - 1``, rank r takes the r-th, and ranks past the end take
    ``dummy`` (a batch without answer tokens), so every rank runs the same number of forwards
    (ZeRO-3) and all-gathering each round's results concatenates them in batch order."""
    rank, size = world()
    it = iter(batches)
    for k in range(-(-n_batches // size)):
        mine = dummy
        for r in range(size):
            if k * size + r < n_batches:
                batch = next(it)
                if r == rank:
                    mine = batch
        yield mine


def is_zero3_param(p: torch.Tensor) -> bool:
    """A ZeRO-3 partitioned parameter (DeepSpeed tags them with ``ds_id``)."""
    return hasattr(p, "ds_id")


@contextmanager
def gathered(params, modifier_rank=None):
    """Full values of possibly ZeRO-3-sharded ``params`` inside the block (read-only with
    ``modifier_rank=None``); a no-op for ordinary parameters."""
    params = [p for p in params if is_zero3_param(p)]
    if not params:
        yield
        return
    import deepspeed

    # One GatheredParameters per parameter: with several, DeepSpeed (0.15) launches one async
    # all-gather each and waits only on the last ("ensures the operation is enqueued"), which
    # is enough on a CUDA stream but not on gloo, whose worker threads may finish them out of
    # order: a parameter then reads an unfilled buffer (seen once in CI: a layer of zeros and
    # denormals in the resumed ZeRO-3 run of tests/test_zero.py). A single parameter takes
    # DeepSpeed's blocking path.
    with contextlib.ExitStack() as stack:
        for p in params:
            stack.enter_context(deepspeed.zero.GatheredParameters([p], modifier_rank=modifier_rank))
        yield


class WeightRows:
    """Row lookup ``rows[ids]`` of a ``[V, H]`` weight (the output embedding ``W_out``) that
    may be ZeRO-3-sharded: gathers it for the lookup only (at 8B ``W_out`` is 1 GB in bf16,
    so it is never kept whole). ``scorer_features`` only indexes it by label ids."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight

    def __getitem__(self, ids):
        with gathered([self.weight]):
            return self.weight.detach()[ids].clone()


# ---- finite-difference probe on ZeRO-3 shards ------------------------------------------------
def owned_views(p: torch.Tensor) -> list:
    """``[(flat tensor, start), ...]``: what this rank holds of ``p`` and each part's offset in
    ``p.view(-1)``. Under ZeRO-3: its flat shard ``ds_tensor`` (offset ``rank * shard size``),
    plus the full ``p.data`` while it is materialized (parameters under
    ``stage3_param_persistence_threshold`` stay gathered, and the forward reads ``p.data``).
    Otherwise the whole flattened parameter."""
    if not is_zero3_param(p):
        return [(p.data.view(-1), 0)]
    rank, _ = world()
    views = [(p.ds_tensor.view(-1), rank * p.ds_tensor.ds_numel)]
    if p.data.numel() == p.ds_numel:
        views.append((p.data.view(-1), 0))
    return views


@contextmanager
def perturbed(params, directions, scale: float):
    """Inside the block, ``p <- p + scale * d`` for every parameter (``directions``: full-shape
    tensors, identical on every rank); each rank adds the slice of ``d`` that matches what it
    holds, so the gathered parameter is exactly the perturbed full tensor. On exit (also on an
    exception) everything is restored bit-exactly from clones, never by subtracting the step
    again (which rounds)."""
    views = [(v, start, d.reshape(-1)) for p, d in zip(params, directions) for v, start in owned_views(p)]
    saved = [v.clone() for v, _, _ in views]
    try:
        with torch.no_grad():
            for v, start, flat in views:
                n = max(0, min(v.numel(), flat.numel() - start))  # the last shard is padded
                v[:n].add_(flat[start : start + n].to(v.dtype), alpha=scale)
        yield
    finally:
        with torch.no_grad():
            for (v, _, _), s in zip(views, saved):
                v.copy_(s)


def output_layer_probe(forward_logp, lm_head_weight, retain_grad_w, eps: float = 1e-3) -> torch.Tensor:
    """Finite-difference alignment on the output layer under ZeRO (the full-model probe
    ``conflict_ablations.finite_difference_alignment`` needs materialized parameters):
    ``(f(W + eps u) - f(W - eps u)) / (2 eps)`` with ``u = -G / |G|``, ``G = retain_grad_w``
    (``[V, H]``, the same on every rank, e.g. ``sum_s e_s h_s^T`` from ``output_grad``) and
    ``forward_logp()`` the forget tokens' ``log p_t`` (a forward pass: every rank runs two).
    With bf16 weights ``eps * u`` must exceed bf16 resolution (2^-8 relative), else it rounds away."""
    u = -retain_grad_w / retain_grad_w.norm().clamp_min(1e-30)
    with perturbed([lm_head_weight], [u], eps):
        plus = forward_logp().detach()
    with perturbed([lm_head_weight], [u], -eps):
        minus = forward_logp().detach()
    return (plus - minus) / (2 * eps)


def deepspeed_checkpoint_globals() -> list:
    """The non-tensor classes DeepSpeed 0.15 pickles into its ZeRO checkpoints (its optimizer
    states). torch >= 2.6 loads with ``weights_only=True`` and rejects them, so resuming a
    ZeRO run fails; allow exactly these classes, nothing else (no arbitrary pickle)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    # found by loading CPU ZeRO-2 and ZeRO-3 checkpoints (tests/test_zero.py); DynamicLossScaler
    # is what fp16 runs store in place of LossScaler
    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def shutdown() -> None:
    """Leave the process group cleanly at the end of a distributed run: a barrier, then
    ``destroy_process_group``, so no rank exits while gloo's worker threads still run (a
    suspected cause of an intermittent "terminate called without an active exception"
    SIGABRT in the CPU ZeRO tests; it did not remove it alone, see tests/_train_zero.py)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
