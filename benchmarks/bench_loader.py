"""Benchmark: the PyTorch loader (fm4npp_data.loader) on simulated, prepared events.

1. Throughput: events/s of one epoch with collation (padded torch tensors), in the main process (num_workers=0) and
   per DataLoader worker process (num_workers=1 and 2; worker start-up included), next to the rate of reading the
   same row groups alone (the Parquet floor). Target: >= 1,000 events/s per worker.
2. Padding: padding efficiency (real / padded tokens) of the length-bucketed batches against pad-to-longest batches
   of the same events in random order under the same token budget (the baseline), and the number of batches of
   each (fewer batches: more of the budget used per step). Target: >= 0.9.

Run: `python benchmarks/bench_loader.py [--events N] [--batch-tokens T]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from timing import best_of

from fm4npp_data.conversion.convert import ConvertOptions, convert
from fm4npp_data.loader import COLUMNS, make_loader
from fm4npp_data.preparation.prepare import PrepareOptions, prepare
from fm4npp_data.simulation import simulate
from fm4npp_data.tasks import TRUTH_COLUMNS


def pad_to_longest(lengths: np.ndarray, budget: int, rng: np.random.Generator) -> tuple[float, int]:
    """(padding efficiency, batches) of the baseline: events in random order, each batch as many events as fit
    within the budget when padded to its longest."""
    real = padded = batches = 0
    size = longest = 0
    for n in rng.permutation(np.maximum(lengths, 1)):
        if size and (size + 1) * max(longest, n) > budget:
            padded, batches, size, longest = padded + size * longest, batches + 1, 0, 0
        size, longest = size + 1, max(longest, n)
    padded, batches = padded + size * longest, batches + 1
    real = int(lengths.sum())
    return real / padded, batches


def epoch(loader) -> int:
    """Iterate one epoch; the number of events."""
    return sum(int(batch["run"].shape[0]) for batch in loader)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch-tokens", type=int, default=32_768)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        simulate(args.events, tmp / "sim", seed=3, events_per_file=args.events)
        convert([tmp / "sim"], tmp / "events", ConvertOptions(shard_events=1000, row_group_events=1000))
        prepare(tmp / "events", PrepareOptions(k=args.k))
        shards = sorted((tmp / "events").glob("*.parquet"))
        lengths = np.concatenate(
            [pc.list_value_length(pq.read_table(s, columns=["order"])["order"]).to_numpy() for s in shards]
        )
        n_ev, n_sp = lengths.shape[0], int(lengths.sum())
        source = tmp / "events"

        def loader(**kw):
            return make_loader(source, batch_tokens=args.batch_tokens, **kw)

        def read_only():
            columns = list(COLUMNS) + list(TRUTH_COLUMNS)
            return sum(
                pq.ParquetFile(s).read_row_group(i, columns=columns, use_threads=False).num_rows
                for s in shards
                for i in range(pq.ParquetFile(s).num_row_groups)
            )

        epoch(loader())  # warm the page cache and imports
        t_read, _ = best_of(3, read_only)
        rates = {}
        for workers in (0, 1, 2):
            t, events = best_of(3, lambda w=workers: epoch(loader(num_workers=w)))
            assert events == n_ev
            rates[workers] = n_ev / t / max(workers, 1)

        bucketed = loader(seed=1)
        epoch(bucketed)
        summary = bucketed.summary()
        baseline = [pad_to_longest(lengths, args.batch_tokens, np.random.default_rng(s)) for s in range(5)]
        base_eff, base_batches = np.mean([b[0] for b in baseline]), np.mean([b[1] for b in baseline])

    print(
        f"loader: {n_ev} events, {n_sp} spacepoints ({n_sp / n_ev:.0f} per event), k={args.k}, "
        f"batch_tokens={args.batch_tokens}, {os.cpu_count()} cores"
    )
    print(f"  Parquet read alone (1 thread): {n_ev / t_read:,.0f} events/s")
    for workers, rate in rates.items():
        what = "main process" if workers == 0 else f"{workers} worker{'s' * (workers > 1)}, per worker"
        print(f"  collated batches, {what}: {rate:,.0f} events/s")
    eff = summary["padding_efficiency"]
    print(
        f"  padding efficiency: bucketed {eff:.3f} in {summary['batches']} batches; pad-to-longest random "
        f"{base_eff:.3f} in {base_batches:.0f} batches (mean of 5 orders); {eff / base_eff:.2f}x; "
        f"over-budget events {summary['over_budget_events']}"
    )
    per_worker = min(rates[1], rates[2])
    print(
        f"SUMMARY loader: {per_worker:,.0f} events/s per worker (target >= 1,000), padding efficiency {eff:.3f} "
        f"(target >= 0.9) vs {base_eff:.3f} pad-to-longest ({eff / base_eff:.2f}x), {n_ev} events, "
        f"batch_tokens {args.batch_tokens}"
    )
    if per_worker < 1000:
        failed.append("events/s per worker")
    if eff < 0.9:
        failed.append("padding efficiency")
    if failed:
        print("TARGET MISSED:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - start:.0f} s)")
    sys.exit(code)
