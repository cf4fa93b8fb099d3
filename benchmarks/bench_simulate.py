"""Benchmark: `fm4npp-data simulate` end to end against PYTHIA generation alone, side by side in one run.

Baseline: PYTHIA 8 `nextBatch` with the same settings, in the same process, on the same events count.
Reported: events/s of each, their ratio (target >= 0.5), the time per event of each stage of the simulation, and the
2-core rate of `simulate --workers 2` (target >= 500 events/s). Run: `make bench` or
`python benchmarks/bench_simulate.py [--events N]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import uproot

from fm4npp_data.simulation import runner, simulate
from fm4npp_data.simulation.generator import truth_particles
from fm4npp_data.simulation.writer import RootWriter, svtx_evaluator_trees


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000)
    args = parser.parse_args()
    n = args.events
    generator, surfaces = runner._tools()  # PYTHIA init and Numba compilation, not timed
    with tempfile.TemporaryDirectory() as tmp:
        simulate(200, Path(tmp) / "warm", seed=1)

        start = time.perf_counter()
        for i in range(0, n, runner.CHUNK_EVENTS):
            generator.generate(min(runner.CHUNK_EVENTS, n - i), 1000 + i)
        pythia = n / (time.perf_counter() - start)

        start = time.perf_counter()
        summary = simulate(n, Path(tmp) / "one", seed=2, events_per_file=runner.CHUNK_EVENTS)
        end_to_end = n / (time.perf_counter() - start)

        stages = dict.fromkeys(("pythia", "truth selection", "transport + assembly", "columns", "write"), 0.0)
        for i in range(0, n, runner.CHUNK_EVENTS):
            seed = 5000 + i
            t0 = time.perf_counter()
            batch = generator.generate(runner.CHUNK_EVENTS, seed)
            t1 = time.perf_counter()
            truth_particles(batch, np.random.default_rng(seed))
            t2 = time.perf_counter()
            content = runner.simulate_chunk(runner.CHUNK_EVENTS, seed)  # includes its own generation + selection
            t3 = time.perf_counter()
            svtx_evaluator_trees(content)
            t4 = time.perf_counter()
            with RootWriter(Path(tmp) / f"w{i}.root", "svtx-evaluator") as writer:
                writer.write(content)
            t5 = time.perf_counter()
            stages["pythia"] += t1 - t0
            stages["truth selection"] += t2 - t1
            stages["transport + assembly"] += (t3 - t2) - (t2 - t0)
            stages["columns"] += t4 - t3
            stages["write"] += (t5 - t4) - (t4 - t3)
        n_chunks = -(-n // runner.CHUNK_EVENTS)

        # The floor that the required output sets: ZSTD(1) of the bytes the svtx-evaluator layout must hold
        # (63 + 25 float32 columns, big-endian as in ROOT baskets), nothing else.
        cluster, gtrack = svtx_evaluator_trees(runner.simulate_chunk(runner.CHUNK_EVENTS, 99))
        zstd = uproot.ZSTD(1)
        payload = [v.astype(">f4").tobytes() for cols in (cluster, gtrack) for v in cols.values()]
        start = time.perf_counter()
        for blob in payload:
            for i in range(0, len(blob), 1 << 20):
                zstd.compress(blob[i : i + (1 << 20)])
        zstd_us = (time.perf_counter() - start) / runner.CHUNK_EVENTS * 1e6
        raw_kb = sum(len(b) for b in payload) / runner.CHUNK_EVENTS / 1e3

        workers = min(2, os.cpu_count() or 1)
        start = time.perf_counter()
        simulate(n, Path(tmp) / "two", seed=3, events_per_file=n // workers or 1, workers=workers)
        two_cores = n / (time.perf_counter() - start)

    # the trigger keeps about half of the generated collisions: PYTHIA's rate per kept event is what it costs
    generated = summary.events + summary.rejected + summary.empty
    pythia_kept = pythia * summary.events / generated
    print(f"events: {n}, TPC spacepoints per event: {summary.spacepoints / n:.0f}")
    print(f"trigger ({summary.trigger}): {summary.events} kept of {generated} generated")
    print(f"PYTHIA nextBatch alone (1 process):     {pythia:8.0f} collisions/s = {pythia_kept:.0f} kept events/s")
    print(f"simulate end to end (1 process):       {end_to_end:8.0f} events/s")
    print(f"ratio simulate / PYTHIA (kept events):  {end_to_end / pythia_kept:8.2f}   (target >= 0.5)")
    print(f"simulate --workers {workers} (incl. start-up):  {two_cores:8.0f} events/s (target >= 500)")
    for name, seconds in stages.items():
        print(f"  {name:24s} {seconds / (n_chunks * runner.CHUNK_EVENTS) * 1e6:7.1f} us/event")
    pythia_us = 1e6 / pythia_kept
    print(
        f"ZSTD(1) alone of the {raw_kb:.0f} kB/event the layout holds: {zstd_us:.0f} us/event = "
        f"{zstd_us / pythia_us:.2f} x PYTHIA; so even with free transport and columns the ratio is at most "
        f"{pythia_us / (pythia_us + zstd_us):.2f}"
    )


if __name__ == "__main__":
    main()
