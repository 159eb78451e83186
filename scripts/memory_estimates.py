"""Per-GPU memory (and rough training time) of ATWU vs GradDiff vs NPO under DeepSpeed ZeRO-2/3.

    .venv/bin/python scripts/memory_estimates.py            # markdown tables for docs/scaling.md

Estimates from formulas (docs/scaling.md explains each term); nothing here is measured. Bytes
per rank, N ranks, P parameters, bf16 weights with fp32 Adam (DeepSpeed's bf16 ZeRO optimizer):
  weights 2P, gradients 2P, fp32 master + Adam moments 12P; ZeRO-2 shards gradients and
  optimizer (2P + 14P/N), ZeRO-3 also the weights (16P/N) plus the gathered working set
  (two decoder layers, prefetch, and the output embedding, 2 V H bytes when gathered);
  NPO's reference model: a frozen bf16 copy, 2P under ZeRO-2 (replicated), 2P/N under ZeRO-3;
  activations with gradient checkpointing: 2 b T H bytes per layer kept + one layer being
  recomputed (~34 b T H, Korthikanti et al. 2022 with flash attention) per forward kept for
  backward (GradDiff/NPO/ATWU keep two: forget and retain), plus logits: bf16 output, fp32
  upcast and log-softmax, 10 b T V bytes per forward;
  ATWU extras (replicated, fp32): two retain banks 2 M (H + d) 4, the random projection V d 4,
  the sketch's transient softmax over at most 1024 answer tokens ~12 min(1024, b A) V, and the
  scorer (negligible); no reference model (reference log-probs are cached at setup); the setup
  pass (no gradients, eval batch b_e, all hidden states kept) (L + 1) b_e T H 2 + 10 b_e T V.
  The forget-feature cache lives in host RAM: n_forget_tokens * 2H * 4 bytes.
Time: training FLOPs ~ 8 P per token (forward + backward + checkpoint recompute) over forget
and retain tokens; ATWU's setup forward (2 P per token over the forget and retain sets) is split
across the ranks; at an assumed sustained 150 TFLOP/s per GPU.
"""

from dataclasses import dataclass

GB = 1e9


@dataclass
class Model:
    name: str
    params: float
    layers: int
    hidden: int
    vocab: int
    gpus: int  # ranks in the table (70B needs more than 8 x 80 GB even under ZeRO-3)


MODELS = [
    Model("Llama-3.2-1B", 1.24e9, 16, 2048, 128256, 8),
    Model("Phi-3-mini (3.8B)", 3.82e9, 32, 3072, 32064, 4),
    Model("Llama-3.1-8B", 8.03e9, 32, 4096, 128256, 8),
    Model("Llama-3.1-70B", 70.6e9, 80, 8192, 128256, 32),
]


@dataclass
class Run:
    gpus: int = 8  # replaced by each model's own count in memory_table
    batch: int = 4  # per-device train batch
    eval_batch: int = 4  # per-device eval batch = ATWU's setup batch
    seq: int = 512  # padded sequence length (upper bound: OU's max_length)
    answer: int = 128  # answer tokens per sample
    bank: int = 8192  # ATWU bank_size
    sketch: int = 256  # ATWU sketch_dim


def model_states(m: Model, stage: int, n: int) -> float:
    p = m.params
    if stage == 2:
        return 2 * p + 14 * p / n
    layer = (p - 2 * m.vocab * m.hidden) / m.layers
    working = 2 * 2 * layer + 2 * m.vocab * m.hidden  # two layers in flight + the gathered output embedding
    return 16 * p / n + working


def reference_model(m: Model, stage: int, n: int) -> float:
    return 2 * m.params if stage == 2 else 2 * m.params / n


def forward_activations(m: Model, r: Run) -> float:
    btH = r.batch * r.seq * m.hidden
    return 2 * btH * m.layers + 34 * btH + 10 * r.batch * r.seq * m.vocab


def atwu_state(m: Model, r: Run) -> float:
    return 2 * r.bank * (m.hidden + r.sketch) * 4 + m.vocab * r.sketch * 4


def atwu_transient(m: Model, r: Run) -> float:
    return 12 * min(1024, r.batch * r.answer) * m.vocab


def atwu_setup_pass(m: Model, r: Run) -> float:
    return (m.layers + 1) * r.eval_batch * r.seq * m.hidden * 2 + 10 * r.eval_batch * r.seq * m.vocab


def per_rank(m: Model, stage: int, method: str, r: Run) -> dict:
    states = model_states(m, stage, r.gpus)
    step = 2 * forward_activations(m, r)  # forget + retain graphs alive at backward
    ref = extra = 0.0
    if method == "NPO":
        ref = reference_model(m, stage, r.gpus)
        step += 10 * r.batch * r.seq * m.vocab  # the reference forward's logits (transient)
    if method == "ATWU":
        extra = atwu_state(m, r)
        step = max(step + atwu_transient(m, r), atwu_setup_pass(m, r))
    total = states + ref + extra + step
    return {"states": states, "ref": ref, "atwu": extra, "activations": step, "total": total}


def memory_table(r: Run) -> str:
    from dataclasses import replace

    rows = ["| model | GPUs | ZeRO | method | weights+grads+optimizer | reference model | ATWU state | activations (peak) | total / GPU | vs GradDiff |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for m in MODELS:
        rm = replace(r, gpus=m.gpus)
        for stage in (2, 3):
            base = per_rank(m, stage, "GradDiff", rm)["total"]
            for method in ("GradDiff", "NPO", "ATWU"):
                e = per_rank(m, stage, method, rm)
                cells = [f"{e[k] / GB:.1f}" for k in ("states", "ref", "atwu", "activations", "total")]
                rows.append(f"| {m.name} | {m.gpus} | {stage} | {method} | " + " | ".join(cells) + f" | {e['total'] / base:.3f} |")
    return "\n".join(rows)


def train_hours(m: Model, r: Run, forget_samples: int, retain_setup_samples: int, epochs: int,
                tokens: int, method: str, tflops: float = 150.0) -> float:
    train = epochs * 2 * forget_samples * tokens * 8 * m.params / (r.gpus * tflops * 1e12)
    setup = (forget_samples + retain_setup_samples) * tokens * 2 * m.params / (r.gpus * tflops * 1e12) if method == "ATWU" else 0.0
    return (train + setup) / 3600


def time_table() -> str:
    cases = [  # (label, model, run, forget samples, retain samples seen by ATWU's setup, epochs, tokens/sample)
        ("TOFU forget10, Llama-3.1-8B, ZeRO-3, 8 GPUs", MODELS[2], Run(gpus=8), 400, 3600, 10, 200),
        ("RWKU batch 1-10, Phi-3-mini, ZeRO-2, 4 GPUs", MODELS[1], Run(gpus=4, batch=2), 801, 800, 3, 180),
    ]
    rows = ["| run | GradDiff training (wall) | ATWU training incl. setup (wall) |", "|---|---|---|"]
    for label, m, r, nf, nr, ep, tok in cases:
        g = train_hours(m, r, nf, nr, ep, tok, "GradDiff")
        a = train_hours(m, r, nf, nr, ep, tok, "ATWU")
        rows.append(f"| {label} | {g * 60:.1f} min | {a * 60:.1f} min |")
    return "\n".join(rows)


def main():
    r = Run()
    print(f"Per-GPU memory in GB (1e9 bytes), per-device batch {r.batch}, "
          f"setup batch {r.eval_batch}, sequence {r.seq}, {r.answer} answer tokens/sample, "
          f"bank {r.bank}, sketch {r.sketch}; gradient checkpointing on.\n")
    print(memory_table(r))
    print("\nTraining time (estimate, 150 TFLOP/s sustained per GPU; model loading and evaluation not included):\n")
    print(time_table())
    m = MODELS[2]
    print(f"\nATWU forget-feature cache (host RAM), TOFU forget10 on {m.name}: "
          f"{400 * 128 * 2 * m.hidden * 4 / GB:.2f} GB (400 samples x 128 answer tokens x 2H fp32)")


if __name__ == "__main__":
    main()
