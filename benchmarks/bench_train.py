"""Benchmark: pretraining step throughput (spacepoints/s) of `tiny` and `m1` on the CPU, with the forward pass alone
as the baseline measured in the same run.

A batch shaped like the loader's at the default budget: 16 events of 1,000 spacepoints (batch_tokens 16,384), k = 10,
features and neighbour targets drawn at random (the throughput does not depend on the values). One training step is
forward + the neighbour loss + backward + gradient clipping + an AdamW step, as `fm4npp pretrain` runs it (μP
groups; the pure-PyTorch SSD path, which scans in chunks of 64 on a CPU; float32). Timings are the best of a few steps
after a warm-up. The paper's m1 pretraining ran about 356 events/s on one H100 (50k steps x 256 events in 10 h): the
last column puts our CPU events/s (at 1,000 spacepoints per event) beside it.

Prints a table and one SUMMARY line. Run: `python benchmarks/bench_train.py [--events 16] [--length 1000]`.
"""

from __future__ import annotations

import argparse
import functools

import torch
from timing import best_of

from fm4npp_models import Backbone
from fm4npp_models.pretrain import PretrainOptions, build_optimizer, neighbour_loss

PAPER_M1_EVENTS_PER_S = 356


def batch(events: int, length: int, k: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    features = torch.rand(events, length, 4, generator=gen)
    features[..., 0] = torch.randn(events, length, generator=gen)
    return {
        "features": features,
        "mask": torch.ones(events, length, dtype=torch.bool),
        "targets": torch.rand(events, length, k, 3, generator=gen),
        "target_mask": torch.ones(events, length, k, dtype=torch.bool),
        "weight": torch.ones(events),
    }


def step(model, optimizer, b: dict) -> None:
    loss = neighbour_loss(model(b["features"], b["mask"]), b["targets"], b["target_mask"], b["weight"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    optimizer.step()


@torch.no_grad()
def forward(model, b: dict) -> None:
    model(b["features"], b["mask"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=16)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--sizes", default="tiny,m1")
    args = parser.parse_args()
    tokens = args.events * args.length
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.events} x {args.length}, k = 10")
    print(
        f"{'model':<6} {'params':>9} {'step ms':>9} {'fwd ms':>8} {'step/fwd':>9} {'tokens/s':>9} {'events/s':>9} "
        f"{'vs paper m1 H100':>17}"
    )
    summary = []
    for name in args.sizes.split(","):
        options = PretrainOptions(model=name, dropout=0.0)
        torch.manual_seed(0)
        model = Backbone.of_size(name, k=10, dropout=0.0)
        optimizer = build_optimizer(model, options)
        b = batch(args.events, args.length, 10)
        model.train()
        train = functools.partial(step, model, optimizer, b)
        train()  # warm-up
        t_step, _ = best_of(3, train)
        model.eval()
        fwd = functools.partial(forward, model, b)
        fwd()
        t_fwd, _ = best_of(3, fwd)
        params = sum(p.numel() for p in model.parameters())
        rate = tokens / t_step
        events = args.events / t_step
        print(
            f"{name:<6} {params:>9,} {t_step * 1e3:>9.0f} {t_fwd * 1e3:>8.0f} {t_step / t_fwd:>8.1f}x {rate:>9,.0f} "
            f"{events:>9.1f} {events / PAPER_M1_EVENTS_PER_S:>16.3f}x"
        )
        summary.append(f"{name} {rate:,.0f} spacepoints/s ({events:.1f} events/s, step {t_step / t_fwd:.1f}x forward)")
    print("SUMMARY train: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
