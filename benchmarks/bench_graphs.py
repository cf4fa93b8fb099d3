"""Benchmark: building the graph baselines' per-event graphs, brute force (torch) against cKDTree (SciPy), one run.

Events: the labeled test split of a dataset repository (`--data`, read with fm4npp_data.loader.make_loader; its
events are cycled when it holds fewer than `--events`), or else simulated random events of 1,000 spacepoints
(E', eta', phi' uniform, r' on a uniformly drawn TPC layer: no tracks, so denser neighbourhoods than real events).
The points are those of the graph baselines, fm4npp_models.baselines.graphs.hit_features: (eta_hat, cos phi,
sin phi, r_hat). Two graphs, each built both ways on the same points, best of `--repeats` after a warm-up on a few
events:

1. the SAGEConv GNN's graph: each spacepoint's k = 50 nearest others at distance < 1 (knn_edges: torch.cdist +
   topk per event, against knn_edges_tree: cKDTree.query per event);
2. a radius graph: every pair at distance < `--radius` (radius_edges: torch.cdist + threshold, against
   radius_edges_tree: cKDTree.query_pairs).

Both ways must give the same edges: "same" counts the edges found by one construction only (0 expected; a tie at the
k-th neighbour or a distance within float32 rounding of the cut could differ). "tree/brute" is the ratio of events/s
measured in this run (> 1: the tree is faster). torch uses its default threads; cKDTree one thread.

Run: `python benchmarks/bench_graphs.py [--data REPO] [--events 200] [--radius 0.1]`.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform

import numpy as np
import scipy
import torch
from timing import best_of

from fm4npp_data import geometry as g
from fm4npp_models.baselines.graphs import (
    flat_nodes,
    hit_features,
    knn_edges,
    knn_edges_tree,
    radius_edges,
    radius_edges_tree,
)


def simulated_events(n_events: int, n_hits: int, seed: int = 0) -> list[np.ndarray]:
    """Random events as the loader's features (n_hits, 4) float32 [E', eta', phi', r'], r' on the TPC layers."""
    rng = np.random.default_rng(seed)
    layers = (g.LAYER_RADII - g.R_RANGE[0]) / (g.R_RANGE[1] - g.R_RANGE[0])
    events = []
    for _ in range(n_events):
        f = rng.uniform(0.0, 1.0, (n_hits, 4))
        f[:, 3] = rng.choice(layers, n_hits)
        events.append(f.astype(np.float32))
    return events


def repository_events(data: str, n_events: int) -> tuple[list[np.ndarray], int]:
    """The first n_events of the labeled test split of `data`, cycled if it has fewer (features (n, 4) each), and
    the number of distinct events read."""
    from fm4npp_data.loader import make_loader

    loader = make_loader(data, "labeled", "test", batch_tokens=65_536, shuffle=False)
    events = []
    for batch in loader:
        features, mask = batch["features"], batch["mask"]
        events += [features[b][mask[b]].numpy() for b in range(len(mask))]
    if not events:
        raise SystemExit(f"{data}: the labeled test split holds no events; give another --data or none")
    return list(itertools.islice(itertools.cycle(events), n_events)), len(events)


def graph_points(events: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The events' points (N, 4) float32 (eta_hat, cos phi, sin phi, r_hat), event after event, and offsets (B+1,)."""
    S = max(len(e) for e in events)
    features = torch.zeros(len(events), S, 4)
    mask = torch.zeros(len(events), S, dtype=torch.bool)
    for b, e in enumerate(events):
        features[b, : len(e)] = torch.from_numpy(e)
        mask[b, : len(e)] = True
    return hit_features(features, mask)[:, 1:].contiguous(), flat_nodes(mask).offsets


def edge_keys(edges, n: int) -> np.ndarray:
    """Sorted unique target * n + source of edges (2, E): an edge set, comparable between constructions."""
    edges = edges.numpy() if isinstance(edges, torch.Tensor) else edges
    return np.unique(edges[1].astype(np.int64) * n + edges[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a dataset repository (its labeled test split); default: simulated events")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--hits", type=int, default=1000, help="spacepoints per simulated event")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--max-distance", type=float, default=1.0)
    parser.add_argument("--radius", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    if args.data:
        events, distinct = repository_events(args.data, args.events)
        source = f"{args.data}, labeled test split: {distinct} events" + (
            f", cycled to {len(events)}" if distinct < len(events) else ""
        )
    else:
        events = simulated_events(args.events, args.hits)
        source = f"SIMULATED random events (no --data): {len(events)} of {args.hits:,} spacepoints"
    points, offsets = graph_points(events)
    n, n_events = len(points), len(events)

    graphs = {
        f"kNN k={args.k}, d<{args.max_distance:g}": (
            lambda p, o: knn_edges(p, o, args.k, args.max_distance),
            lambda p, o: knn_edges_tree(p.numpy(), o.numpy(), args.k, args.max_distance),
        ),
        f"radius r<{args.radius:g}": (
            lambda p, o: radius_edges(p, o, args.radius),
            lambda p, o: radius_edges_tree(p.numpy(), o.numpy(), args.radius),
        ),
    }
    few = offsets[: min(4, n_events) + 1]  # the warm-up's events
    print(f"events: {source}; {n / n_events:.0f} spacepoints per event on average (max {max(map(len, events))})")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"{torch.get_num_threads()} threads, SciPy {scipy.__version__} (cKDTree 1 thread); best of {args.repeats}"
    )
    print(f"{'graph':18s} {'method':28s} {'ms/event':>9s} {'events/s':>9s} {'edges/event':>12s} {'tree/brute':>11s}")
    summary = []
    for graph, (brute, tree) in graphs.items():
        brute(points, few), tree(points, few)  # warm-up
        t_brute, e_brute = best_of(args.repeats, functools.partial(brute, points, offsets))
        t_tree, e_tree = best_of(args.repeats, functools.partial(tree, points, offsets))
        a, b = edge_keys(e_brute, n), edge_keys(e_tree, n)
        only = len(np.setdiff1d(a, b)) + len(np.setdiff1d(b, a))
        ratio = t_brute / t_tree
        rows = [("brute (torch.cdist + topk)" if "kNN" in graph else "brute (torch.cdist + <)", t_brute, a)]
        rows.append(("tree (cKDTree)", t_tree, b))
        for name, seconds, keys in rows:
            tail = f"{ratio:10.2f}x" if name.startswith("tree") else ""
            print(
                f"{graph:18s} {name:28s} {seconds / n_events * 1e3:9.2f} {n_events / seconds:9.0f} "
                f"{len(keys) / n_events:12.0f} {tail:>11s}"
            )
        same = "same edges" if only == 0 else f"DIFFERENT: {only} edges in one set only"
        print(f"{'':18s} {same}")
        summary.append(
            f"{graph}: brute {n_events / t_brute:.0f}, tree {n_events / t_tree:.0f} events/s (tree/brute "
            f"{ratio:.2f}x, {'same edges' if only == 0 else f'{only} edges differ'})"
        )
    print(f"summary ({source}): " + "; ".join(summary))


if __name__ == "__main__":
    main()
