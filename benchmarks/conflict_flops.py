"""FLOPs of ATWU's conflict computation relative to the LM step, for an 8B model.

    python benchmarks/conflict_flops.py [--params 8.03e9] [--hidden 4096] [--tokens 4096]

The conflict is N x M cosines of factorized output-layer gradients (N sampled forget tokens,
M bank tokens): 2 * N * M * (d + H) FLOPs (``atwu_plugin.weighting.conflict.conflict_flops``).
An LM training step costs ~6 * P FLOPs per token (forward + backward), for forget + retain.
"""

import argparse

from atwu_plugin.weighting.conflict import conflict_flops


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=float, default=8.03e9)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=4096, help="forget + retain tokens per step")
    args = p.parse_args()
    lm = 6 * args.params * args.tokens
    print(f"LM step: 6 x {args.params:.3g} params x {args.tokens} tokens = {lm:.3g} FLOPs")
    print("| forget tokens N | bank M | sketch d | conflict FLOPs | vs LM step |")
    print("|---:|---:|---:|---:|---:|")
    for n, m, d in [(256, 8192, 256), (256, 65536, 256), (1024, 65536, 256), (256, 65536, 64)]:
        f = conflict_flops(n, m, d, args.hidden)
        print(f"| {n} | {m} | {d} | {f:.3g} | {100 * f / lm:.3f} % |")


if __name__ == "__main__":
    main()
