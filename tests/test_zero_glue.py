"""The distributed glue of atwu_plugin.trainers.zero without DeepSpeed: variable-length
all-gather over 2 gloo processes, exact restore of perturbed parameters, lazy weight rows,
the output-layer probe against the closed form, and the packaged accelerate configs.
(The ZeRO runs themselves: tests/test_zero.py, slow.)"""

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from atwu_plugin.cli.accelerate_config import main as config_main
from atwu_plugin.hosts.accelerate import ACCELERATE_DIR, config_names, resolved_config
from atwu_plugin.trainers import zero


def _rank_worker(rank, port, out, body):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.save(body(rank), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_two_ranks(body, tmp_path):
    """``body(rank) -> dict`` in two gloo processes; returns each rank's dict, in rank order."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_worker, args=(port, str(tmp_path), body), nprocs=2, join=True)
    return [torch.load(tmp_path / f"{r}.pt") for r in range(2)]


def _gather_body(rank):
    x = torch.arange(3 * (rank + 1) * 2, dtype=torch.float32).view(-1, 2) + 100 * rank  # 3 rows, then 6
    ids = torch.tensor([rank] * (rank + 2))
    return {"x": zero.all_gather_rows(x), "ids": zero.all_gather_rows(ids), "world": zero.world()}


def test_all_gather_rows_variable_lengths_in_rank_order(tmp_path):
    results = run_two_ranks(_gather_body, tmp_path)
    expect = torch.cat([torch.arange(6.0).view(-1, 2), torch.arange(12.0).view(-1, 2) + 100])
    for rank, got in enumerate(results):
        assert got["world"] == (rank, 2)
        assert torch.equal(got["x"], expect)  # every rank: rank 0's 3 rows, then rank 1's 6
        assert got["ids"].tolist() == [0, 0, 1, 1, 1]


def _collective_forward(x):  # a collective, like a ZeRO-3 forward gathering its layers
    t = x.clone()
    dist.all_reduce(t)
    return t


def _forwards_body(rank):
    f = zero.EqualForwards(_collective_forward, torch.zeros(1))
    for _ in range(1 + 2 * rank):  # rank 0: 1 forward, rank 1: 3 (without pad(): a hang)
        f(torch.ones(1))
    missing = f.pad()
    return {"missing": missing, "calls": f.calls}


def test_equal_forwards_pads_the_ranks_with_fewer_calls(tmp_path):
    got = run_two_ranks(_forwards_body, tmp_path)
    assert [g["missing"] for g in got] == [2, 0] and [g["calls"] for g in got] == [1, 3]


def test_single_process_is_identity():
    x = torch.randn(4, 3)
    assert zero.world() == (0, 1)
    assert zero.all_gather_rows(x) is x
    f = zero.EqualForwards(lambda t: t, torch.zeros(1))
    f(x)
    assert f.pad() == 0 and f.calls == 1


def test_perturbed_restores_bit_exactly_also_on_error():
    p = torch.nn.Parameter(torch.randn(5, 7))
    before = p.detach().clone()
    d = torch.randn(5, 7)
    with zero.perturbed([p], [d], 0.1):
        assert torch.allclose(p, before + 0.1 * d)
    assert torch.equal(p, before)
    with pytest.raises(RuntimeError):
        with zero.perturbed([p], [d], 1e-3):
            raise RuntimeError("boom")
    assert torch.equal(p, before)  # restored from the clone, not by subtracting the step


def test_weight_rows_reads_label_rows():
    w = torch.nn.Parameter(torch.randn(10, 4))
    ids = torch.tensor([3, 3, 9])
    rows = zero.WeightRows(w)[ids]
    assert torch.equal(rows, w.detach()[ids]) and not rows.requires_grad


def test_output_layer_probe_matches_the_closed_form():
    """On a linear output layer ``log softmax(W h)``, the central difference along ``u`` equals
    the directional derivative ``<grad_W log p_t, u>`` = ``<e_t h_t^T, u>`` to O(eps^2)."""
    torch.manual_seed(0)
    V, H, N = 11, 6, 5
    w = torch.nn.Parameter(torch.randn(V, H))
    h, y = torch.randn(N, H), torch.randint(0, V, (N,))
    g = torch.randn(V, H)

    def logp():
        return torch.log_softmax(h @ w.T, -1)[torch.arange(N), y]

    got = zero.output_layer_probe(logp, w, g, eps=1e-3)
    u = -g / g.norm()
    e = torch.nn.functional.one_hot(y, V).float() - torch.softmax(h @ w.detach().T, -1)
    expect = torch.einsum("nv,nh,vh->n", e, h, u)
    assert torch.allclose(got, expect, atol=1e-3)


def test_packaged_accelerate_configs(tmp_path):
    assert {"zero2", "zero3", "zero2_cpu", "zero3_cpu"} <= set(config_names())
    for name in ("zero2", "zero3", "zero2_cpu", "zero3_cpu"):
        cfg = resolved_config(name, num_processes=4)
        assert cfg["distributed_type"] == "DEEPSPEED" and cfg["num_processes"] == 4
        ds_path = Path(cfg["deepspeed_config"]["deepspeed_config_file"])
        assert ds_path.is_absolute() and ds_path.parent == ACCELERATE_DIR
        ds = json.loads(ds_path.read_text())
        assert ds["zero_optimization"]["stage"] == int(name[4])
        assert ds["bf16"]["enabled"] is (not name.endswith("_cpu"))  # GPU: bf16; CPU twins: fp32
        assert cfg["use_cpu"] is name.endswith("_cpu")
    out = tmp_path / "z3.yaml"
    assert config_main(["zero3", "--num-processes", "8", "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["num_processes"] == 8


def test_accelerate_config_unknown_name(capsys):
    assert config_main(["zero9"]) == 2
    err = capsys.readouterr().err
    assert "zero9" in err and "zero3" in err


@pytest.mark.parametrize("n_batches", [5, 6, 1])
def test_shard_batches_rounds_and_dummies(monkeypatch, n_batches):
    """3 ranks: rank r gets batches r, r+3, ...; every rank gets the same number of items
    (dummies past the end), and the ranks' items, round by round, are the batches in order."""
    shares = []
    for rank in range(3):
        monkeypatch.setattr(zero, "world", lambda rank=rank: (rank, 3))
        shares.append(list(zero.shard_batches(iter(range(n_batches)), n_batches, dummy="D")))
    rounds = -(-n_batches // 3)
    assert all(len(s) == rounds for s in shares)
    in_order = [shares[r][k] for k in range(rounds) for r in range(3)]
    assert [x for x in in_order if x != "D"] == list(range(n_batches))
    assert in_order[n_batches:] == ["D"] * (3 * rounds - n_batches)


def test_feature_cache_put_rows_skips_samples_without_tokens():
    from atwu_plugin.weighting.scorer import ForgetFeatureCache

    cache = ForgetFeatureCache()
    feats = torch.arange(10.0).view(5, 2)
    cache.put_rows(torch.tensor([7, -1, 3]), feats, torch.tensor([2, 0, 3]))  # -1: a dummy sample
    assert len(cache) == 2 and -1 not in cache
    assert torch.equal(cache.get(7), feats[:2]) and torch.equal(cache.get(3), feats[2:])
