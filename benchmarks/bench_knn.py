"""Benchmark: the k-next-nearest-neighbour kernel against the published dense approach and SciPy's cKDTree, one run.

Events: realistic TPC-like events, spacepoints on the 48 sPHENIX layer cylinders (r 31.37-75.37 cm, |z| < 102 cm)
made of helices from the beam line (0.15-3 GeV/c, |eta| < 1.1, 1.4 T) plus 20% random noise points; a shard of
3,000-spacepoint events and one event of 50,000. Compared, each best of 3, after a warm-up (JIT compilation excluded):

1. `fm4npp_data.kernels.knn.knn` (Numba, every core);
2. the dense approach of the published code: PyTorch on CPU, per event `torch.cdist` (float32), the pairs with
   r_j <= r_i (r in float64) set to +inf, `torch.topk(k, largest=False)` (target: knn >= 20x faster at 3,000);
3. SciPy `cKDTree` (workers=-1) queried for 4k and 8k neighbours, filtered to r_j > r_i, the first k kept (target:
   knn >= 3x faster than the 4k query);
4. the 50,000-spacepoint event alone (target: under 100 ms);
5. memory: the kernel's working arrays for one event next to the dense approach's n x n distance matrix.

"not exact" is the fraction of spacepoints whose set of k neighbours differs from the exact one.

Exits 1 if a target is missed (after printing everything). Run: `python benchmarks/bench_knn.py [--events N] [--k K]`.
"""

from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np
import scipy
import torch
from scipy.spatial import cKDTree
from timing import best_of

from fm4npp_data.geometry import LAYER_RADII
from fm4npp_data.kernels import knn as knn_module
from fm4npp_data.kernels.knn import knn


def tpc_event(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) float32 spacepoints: 80% on helices crossing the layer cylinders, 20% random noise."""
    points = []
    on_tracks = int(0.8 * n)
    while sum(len(p) for p in points) < on_tracks:
        radius = 100.0 * rng.uniform(0.15, 3.0) / (0.3 * 1.4)  # cm, pT / (0.3 B)
        charge = rng.choice([-1.0, 1.0])
        phi0, cot_theta = rng.uniform(-np.pi, np.pi), np.sinh(rng.uniform(-1.1, 1.1))
        rho = LAYER_RADII[2 * radius > LAYER_RADII]
        turn = 2.0 * np.arcsin(rho / (2.0 * radius))
        phi = phi0 + charge * turn / 2.0 + rng.normal(0.0, 0.02, rho.size) / rho  # 200 um in r-phi
        z = radius * turn * cot_theta + rng.normal(0.0, 0.05, rho.size)
        inside = np.abs(z) < 102.0
        points.append(np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)[inside])
    track = np.concatenate(points)[:on_tracks]
    rho, phi = rng.choice(LAYER_RADII, n - on_tracks), rng.uniform(-np.pi, np.pi, n - on_tracks)
    noise = np.stack([rho * np.cos(phi), rho * np.sin(phi), rng.uniform(-102.0, 102.0, n - on_tracks)], axis=1)
    return rng.permutation(np.concatenate([track, noise])).astype(np.float32)


def dense(events: list[np.ndarray], k: int) -> list[torch.Tensor]:
    """The published code's approach: all pairwise distances, masked to r_j > r_i, top-k smallest."""
    out = []
    for points in events:
        p = torch.from_numpy(points)
        xy = points[:, :2].astype(np.float64)
        r = torch.from_numpy(np.sqrt(xy[:, 0] * xy[:, 0] + xy[:, 1] * xy[:, 1]))  # float64 r, as in the contract
        d = torch.cdist(p, p).masked_fill(r[None, :] <= r[:, None], float("inf"))
        values, index = torch.topk(d, k, dim=1, largest=False)
        out.append(index.masked_fill(torch.isinf(values), -1))
    return out


def kdtree(events: list[np.ndarray], k: int, more: int) -> list[np.ndarray]:
    """cKDTree queried for `more` neighbours, filtered to r_j > r_i, the first k kept (-1 where fewer remain)."""
    out = []
    for points in events:
        xyz = points.astype(np.float64)
        r = np.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)
        _, index = cKDTree(xyz).query(xyz, min(more, len(xyz)), workers=-1)
        valid = (index < len(xyz)) & (r[np.minimum(index, len(xyz) - 1)] > r[:, None])
        first = np.argsort(~valid, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(index, first, axis=1)
        out.append(np.where(np.take_along_axis(valid, first, axis=1), kept, -1))
    return out


def incompleteness(found: list[np.ndarray], exact: np.ndarray) -> float:
    """Fraction of spacepoints whose set of neighbours differs from the exact one (the first rows of `exact`)."""
    found = np.sort(np.concatenate(found), axis=1)
    return float(np.mean(np.any(found != np.sort(exact, axis=1), axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40, help="events of 3,000 spacepoints")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    n_events, k = args.events, args.k
    rng = np.random.default_rng(2026)
    events = [tpc_event(3000, rng) for _ in range(n_events)]
    shard = np.concatenate(events)
    offsets = np.arange(n_events + 1, dtype=np.int64) * 3000
    big = tpc_event(50_000, rng)
    big_offsets = np.array([0, len(big)])

    knn(*shard[:6000].T, offsets[:3], k)  # warm-up: JIT compilation / cache load
    knn(*big[:30_000].T, np.array([0, 30_000]), k)
    t_knn, (exact, _) = best_of(3, lambda: knn(*shard.T, offsets, k))
    t_big, _ = best_of(3, lambda: knn(*big.T, big_offsets, k))
    n_dense = min(n_events, 10)  # the dense approach is slow: a subset of the events
    dense(events[:1], k)
    t_dense, found = best_of(3, lambda: dense(events[:n_dense], k))
    dense_wrong = incompleteness([f.numpy() for f in found], exact[: n_dense * 3000])
    t_tree, more = {}, {}
    for factor in (4, 8):
        t_tree[factor], found = best_of(3, lambda f=factor: kdtree(events, k, f * k))
        more[factor] = incompleteness(found, exact)

    # (method, seconds per event, fraction of spacepoints with a wrong neighbour set)
    rows = [("knn (Numba)", t_knn / n_events, 0.0), ("dense (torch cdist+topk)", t_dense / n_dense, dense_wrong)]
    rows += [(f"cKDTree {f}k + filter", t_tree[f] / n_events, more[f]) for f in (4, 8)]
    per_event = {name: seconds for name, seconds, _ in rows}
    versus_dense = per_event["dense (torch cdist+topk)"] / per_event["knn (Numba)"]
    versus_tree = per_event["cKDTree 4k + filter"] / per_event["knn (Numba)"]
    levels = knn_module._build(*big.T)
    work = sum(a.nbytes for a in levels) + len(big) * k * 4  # the event's levels plus its rows of the output

    print(f"k = {k}; {n_events} events of 3,000 spacepoints (dense: the first {n_dense}); one of {len(big):,}")
    print(f"{os.cpu_count()} cores: Numba {numba.get_num_threads()} threads, torch {torch.__version__} ", end="")
    print(f"{torch.get_num_threads()} threads, SciPy {scipy.__version__} cKDTree workers=-1")
    print(f"{'method':26s} {'ms/event':>9s} {'events/s':>9s} {'knn speed-up':>13s} {'not exact':>10s}")
    for name, seconds, wrong in rows:
        speed_up = seconds / per_event["knn (Numba)"]
        print(f"{name:26s} {seconds * 1e3:9.2f} {1 / seconds:9.0f} {speed_up:12.1f}x {wrong:10.1%}")
    print(f"one event of {len(big):,} spacepoints: knn {t_big * 1e3:.1f} ms (target < 100 ms)")
    print(f"memory at {len(big):,} spacepoints: knn {work / 1e6:.1f} MB of working arrays, {work / len(big):.0f} B per")
    print(f"spacepoint (O(N k)); dense: an n x n float32 matrix, {len(big) ** 2 * 4 / 1e9:.0f} GB (36 MB at 3,000)")
    targets = {
        "knn >= 20x dense": versus_dense >= 20,
        "knn >= 3x cKDTree 4k": versus_tree >= 3,
        "50,000 spacepoints < 100 ms": t_big < 0.1,
    }
    missed = [name for name, ok in targets.items() if not ok]
    print(
        f"summary: knn {n_events / t_knn:.0f} events/s at 3,000 spacepoints: {versus_dense:.0f}x the dense approach, "
        f"{versus_tree:.1f}x cKDTree 4k + filter ({more[4]:.1%} not exact); 50,000 spacepoints in {t_big * 1e3:.0f} "
        f"ms; targets {'MISSED: ' + ', '.join(missed) if missed else 'met'}"
    )
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
