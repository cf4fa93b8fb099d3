"""Benchmark: downstream training throughput (events/s) of the three heads on 2 CPU cores, on the frozen `tiny` and
as AdapterOnly, with the backbone's forward pass alone as the baseline measured in the same run.

A batch of 8 events of 500 spacepoints (about the simulated p+p events' size) with 12 tracks each, random features;
one step = the frozen backbone's features (no_grad) + the head's forward + loss + backward + AdamW step, as `fm4npp
finetune` runs it. The track finder runs at the published 150 queries and at the demo's 50. Best of a few steps after
a warm-up. Prints a table and one SUMMARY line. Run: `python benchmarks/bench_adapters.py [--events 8] [--length 500]`.
"""

from __future__ import annotations

import argparse
import functools

import torch
from timing import best_of

from fm4npp_models import Backbone
from fm4npp_models.adapters.downstream import Downstream


def batch(events: int, length: int, tracks: int = 12, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    features = torch.rand(events, length, 4, generator=gen)
    track = torch.randint(0, tracks, (events, length), generator=gen)
    return {
        "features": features,
        "mask": torch.ones(events, length, dtype=torch.bool),
        "track": track,
        "noise": track == 0,
        "pid": torch.randint(0, 5, (events, length), generator=gen),
    }


def step(model: Downstream, optimizer, b: dict) -> None:
    loss = model.loss(model(b["features"], b["mask"]), b)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()


@torch.no_grad()
def features(backbone: Backbone, b: dict) -> None:
    backbone.features(b["features"], b["mask"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=8)
    parser.add_argument("--length", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = Backbone.of_size("tiny", k=10, dropout=0.0).eval()
    b = batch(args.events, args.length)
    run_features = functools.partial(features, backbone, b)
    run_features()
    t_features, _ = best_of(3, run_features)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.events} x {args.length}")
    print(f"frozen tiny features alone: {t_features * 1e3:.0f} ms ({args.events / t_features:.1f} events/s)")
    print(f"{'task':<22} {'model':<12} {'trainable':>10} {'step ms':>8} {'events/s':>9} {'step/features':>14}")
    summary = []
    for task, options in (
        ("tracking", {"n_queries": 150}),
        ("tracking", {"n_queries": 50}),
        ("pid", {}),
        ("noise", {}),
    ):
        for name, source in (("FM tiny", backbone), ("AdapterOnly", None)):
            model = Downstream(task, source, options)
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4)
            model.train()
            run = functools.partial(step, model, optimizer, b)
            run()
            t, _ = best_of(3, run)
            label = f"{task}" + (f" ({options['n_queries']} queries)" if options else "")
            rate = args.events / t
            print(
                f"{label:<22} {name:<12} {sum(p.numel() for p in trainable):>10,} {t * 1e3:>8.0f} {rate:>9.1f} "
                f"{t / t_features:>13.1f}x"
            )
            summary.append(f"{label} {name} {rate:.1f}")
    print("SUMMARY adapters (events/s): " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
