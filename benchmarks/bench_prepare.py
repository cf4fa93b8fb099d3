"""Benchmark: raster order against the published approach and NumPy lexsort; `prepare` end to end.

1. Box assignment + raster order on simulated events, side by side in one run:
   - ours: `kernels.binning.boxes` + `kernels.raster.raster_order` (Numba, parallel over events);
   - the published FM4NPP approach: each spacepoint's box by a distance search over all 384 box centres in the
     normalized (r, phi, eta) space, then a sort of (box, r) per event (NumPy, vectorized per event);
   - NumPy `lexsort` over (event, box, r, phi, eta, index) on the same arrays (the order alone).
   Targets: >= 5x the published approach, and at least as fast as lexsort.
2. `fm4npp-data prepare` on converted shards: events/s per core and the share of time in kernels vs Parquet I/O.

Run: `make bench` or `python benchmarks/bench_prepare.py [--events N]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from timing import best_of

from fm4npp_data import geometry as g
from fm4npp_data.conversion.convert import ConvertOptions, convert
from fm4npp_data.kernels.binning import boxes, equal_count_edges, r_edges_from_modules
from fm4npp_data.kernels.cylindrical import cylindrical
from fm4npp_data.kernels.knn import knn
from fm4npp_data.kernels.raster import raster_order, raster_order_reference
from fm4npp_data.preparation.prepare import PrepareOptions, prepare
from fm4npp_data.simulation import simulate


def published_boxes_and_order(r, phi, eta, offsets, r_edges, phi_edges, eta_edges):
    """The published approach: nearest of the 384 box centres (normalized r, phi, eta), then sort by (box, r)."""

    def norm(v, edges):
        return (v - edges[0]) / (edges[-1] - edges[0])

    centres = []
    for a in range(len(r_edges) - 1):
        for b in range(len(phi_edges) - 1):
            for c in range(len(eta_edges) - 1):
                centres.append(
                    (
                        norm(0.5 * (r_edges[a] + r_edges[a + 1]), r_edges),
                        norm(0.5 * (phi_edges[b] + phi_edges[b + 1]), phi_edges),
                        norm(0.5 * (eta_edges[c] + eta_edges[c + 1]), eta_edges),
                    )
                )
    centres = np.asarray(centres, np.float32)
    points = np.stack([norm(r, r_edges), norm(phi, phi_edges), norm(eta, eta_edges)], axis=1).astype(np.float32)
    order = np.empty(r.shape[0], np.int64)
    box = np.empty(r.shape[0], np.int64)
    for e in range(len(offsets) - 1):
        lo, hi = offsets[e], offsets[e + 1]
        d = ((points[lo:hi, None, :] - centres[None, :, :]) ** 2).sum(-1)
        box[lo:hi] = d.argmin(1)
        order[lo:hi] = np.lexsort((r[lo:hi], box[lo:hi]))
    return box, order


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        simulate(args.events, tmp / "sim", seed=3, events_per_file=args.events)
        convert([tmp / "sim"], tmp / "events", ConvertOptions(shard_events=1000))
        shards = sorted((tmp / "events").glob("*.parquet"))
        tables = [pq.read_table(s, columns=["x", "y", "z"]) for s in shards]
        x, y, z = (np.concatenate([pc.list_flatten(t[c]).to_numpy() for t in tables]) for c in ("x", "y", "z"))
        lengths = np.concatenate([pc.list_value_length(t["x"]).to_numpy() for t in tables])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        r, phi, eta = cylindrical(x, y, z)
        r_edges = r_edges_from_modules(g.MODULE_BOUNDARIES)
        phi_edges = equal_count_edges(phi, 8, -np.pi, np.pi)
        eta_edges = equal_count_edges(eta[np.isfinite(eta)], 8)
        box = boxes(r, phi, eta, r_edges, phi_edges, eta_edges)
        raster_order(box, r, phi, eta, offsets)  # compile

        n_ev, n_sp = len(lengths), int(offsets[-1])
        t_ours, _ = best_of(
            3, lambda: raster_order(boxes(r, phi, eta, r_edges, phi_edges, eta_edges), r, phi, eta, offsets)
        )
        t_order, ours = best_of(3, lambda: raster_order(box, r, phi, eta, offsets))
        t_lex, ref = best_of(3, lambda: raster_order_reference(box, r, phi, eta, offsets))
        assert np.array_equal(ours, ref)
        t_pub, _ = best_of(1, lambda: published_boxes_and_order(r, phi, eta, offsets, r_edges, phi_edges, eta_edges))
        numba.set_num_threads(1)
        t_order_1, _ = best_of(3, lambda: raster_order(box, r, phi, eta, offsets))
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        print(f"raster: {n_ev} events, {n_sp} spacepoints ({n_sp / n_ev:.0f} per event), {os.cpu_count()} cores")
        print(f"  {'method':<42} {'ms':>9} {'events/s':>11}")
        for name, t in (
            ("ours: boxes + order (Numba)", t_ours),
            ("ours: order only", t_order),
            ("ours: order only, 1 thread", t_order_1),
            ("NumPy lexsort (order only)", t_lex),
            ("published: centre search + sort", t_pub),
        ):
            print(f"  {name:<42} {t * 1e3:9.1f} {n_ev / t:11.0f}")
        ratio_pub, ratio_lex = t_pub / t_ours, t_lex / t_order
        print(
            f"  ours vs published: {ratio_pub:.0f}x (target >= 5); order vs lexsort: {ratio_lex:.1f}x (target >= 1), "
            f"{t_lex / t_order_1:.1f}x on 1 thread"
        )
        if ratio_pub < 5:
            failed.append("raster vs published")
        if ratio_lex < 1:
            failed.append("raster vs lexsort")

        knn(x[:100], y[:100], z[:100], np.array([0, 100]), 10)  # compile
        start = time.perf_counter()
        summary = prepare(tmp / "events", PrepareOptions(k=10), workers=1)
        seconds = time.perf_counter() - start - summary.compile_seconds
        share = summary.kernel_seconds / (summary.kernel_seconds + summary.io_seconds)
        threads = numba.get_num_threads()
        print(
            f"prepare (1 process, Numba kernels on {threads} threads, k=10): {summary.events} events in "
            f"{seconds:.2f} s = {summary.events / seconds:.0f} "
            f"events/s, {summary.spacepoints / seconds / 1e6:.2f} M spacepoints/s; kernels {share:.0%} of "
            f"shard time, Parquet read/write {1 - share:.0%} (binning fit included in the total; Numba start-up "
            f"{summary.compile_seconds:.2f} s excluded)"
        )
    if failed:
        print("TARGET MISSED:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
