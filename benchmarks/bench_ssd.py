"""Benchmark: the chunked SSD scan (`fm4npp_models.model.ssd.ssd_chunked`) against the sequential recurrence
(`ssd_sequential`, a loop over time steps) on the CPU, in one run.

One sequence (b = 1) of 4,000 steps in float32, head dimension p = 64, one group, at two realistic sizes: the m1-like
h = 2 heads with state n = 4, and h = 8 heads with n = 16. dt is drawn as the block initializes it (log-uniform in
[0.001, 0.1]), A uniform in [-16, -1], x, B, C normal, D = 1. Timings are the best of a few calls, after a warm-up;
the chunked scan runs at chunk sizes 32, 64 and 256 (256 is the GPU kernels' and the block's default; small chunks
suit a CPU). "error" is the relative L2 difference of the outputs (float32 rounding).

Target: the chunked scan at least 20x faster than the recurrence at each size (at its best chunk size). Prints a
table, then one SUMMARY line; exits 1 if a target is missed. Run: `python benchmarks/bench_ssd.py [--length L]`.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys

import torch
from timing import best_of

from fm4npp_models.model.ssd import ssd_chunked, ssd_sequential

SIZES = [(2, 4), (8, 16)]  # (heads, state size)
CHUNKS = [32, 64, 256]
TARGET = 20.0


def inputs(length: int, heads: int, state: int, headdim: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, length, heads, headdim, generator=gen)
    log_dt = torch.empty(1, length, heads).uniform_(math.log(1e-3), math.log(1e-1), generator=gen)
    A = -torch.empty(heads).uniform_(1.0, 16.0, generator=gen)
    B = torch.randn(1, length, 1, state, generator=gen)
    C = torch.randn(1, length, 1, state, generator=gen)
    return x, log_dt.exp(), A, B, C, torch.ones(heads)


def compare(length: int, heads: int, state: int) -> dict[int, float]:
    """Print the rows of one size; returns {chunk size: speed-up over the recurrence}."""
    x, dt, A, B, C, D = inputs(length, heads, state)
    size = f"h={heads} n={state}"
    ssd_sequential(x[:, :50], dt[:, :50], A, B[:, :50], C[:, :50], D=D)  # warm-up
    t_seq, (y_seq, _) = best_of(3, functools.partial(ssd_sequential, x, dt, A, B, C, D=D))
    print(f"{size:<14} {'sequential recurrence':<24} {t_seq * 1e3:>9.1f} {'1.0x':>9} {'':>9}")
    ratios = {}
    for chunk in CHUNKS:
        chunked = functools.partial(ssd_chunked, x, dt, A, B, C, chunk_size=chunk, D=D)
        chunked()  # warm-up
        t, (y, _) = best_of(10, chunked)
        error = ((y - y_seq).norm() / y_seq.norm()).item()
        ratios[chunk] = t_seq / t
        print(f"{size:<14} {f'chunked, chunk {chunk}':<24} {t * 1e3:>9.2f} {ratios[chunk]:>8.1f}x {error:>9.1e}")
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=4000)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sequence length {args.length}, float32\n")
    print(f"{'size':<14} {'method':<24} {'ms':>9} {'speed-up':>9} {'error':>9}")
    summary, missed = [], False
    with torch.no_grad():
        for heads, state in SIZES:
            ratios = compare(args.length, heads, state)
            best = max(ratios, key=ratios.get)
            missed |= ratios[best] < TARGET
            summary.append(f"h={heads} n={state}: {ratios[best]:.1f}x (chunk {best}; {ratios[256]:.1f}x at 256)")
    verdict = "met" if not missed else "MISSED"
    print(
        f"\nSUMMARY ssd_chunked vs sequential, L={args.length}, CPU {torch.get_num_threads()} threads: "
        f"{'; '.join(summary)}; target {TARGET:.0f}x {verdict}"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
