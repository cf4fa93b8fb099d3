"""Graphs over an event's spacepoints for the graph baselines (Exa.TrkX, EggNet, the SAGEConv GNN).

The loader's padded batch (features (B, S, 4) = [E', eta', phi', r'], mask (B, S)) becomes flat nodes, event after
event (the PyG layout: one graph per batch, events never linked):

    nodes = flat_nodes(mask)                        # .index (N,) into B*S, .batch (N,), .offsets (B+1,)
    x = hit_features(features, mask)                # (N, 5): E', eta_hat, cos phi, sin phi, r_hat (the paper's)
    edges = knn_edges(x[:, 1:], nodes.offsets, k=50, max_distance=1.0)   # (2, E): row 0 source j, row 1 target i
    labels = connected_components(N, edges[:, keep])                     # (N,) component per node

Edges follow PyG's "source_to_target" flow: an edge (j, i) carries a message from j to i, so the k neighbours j of i
are the sources of the edges into i. No self loops. Both constructions give the same edge set:

- `knn_edges`, `radius_edges`: brute force per event in torch (torch.cdist, then top-k or a threshold), O(n^2) per
  event: simple, differentiable inputs welcome (the indices are not), used inside models on small CPU batches;
- `knn_edges_tree`, `radius_edges_tree`: scipy's cKDTree per event (NumPy in, NumPy out), about O(n log n): the
  graphs of inference and of static inputs. benchmarks/bench_graphs.py measures the two.

The input features follow the paper's appendix C: eta_hat = eta / 1.96 (geometry.GNN_ETA_SCALE), (cos phi, sin phi)
for the angle (no seam), r_hat = index of the nearest of the 48 TPC layer radii / 48 (so the unequal layer spacing of
the three modules does not stretch distances).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fm4npp_data import geometry as g


@dataclass(frozen=True)
class Nodes:
    """The flat nodes of a padded batch: index (N,) int64 into the flattened (B*S) positions, batch (N,) int64 the
    event of each node, offsets (B+1,) int64 (event b's nodes are offsets[b]:offsets[b+1]), B and S."""

    index: torch.Tensor
    batch: torch.Tensor
    offsets: torch.Tensor
    B: int
    S: int

    def to_padded(self, values: torch.Tensor, fill: float | int = 0) -> torch.Tensor:
        """(N, ...) node values -> (B, S, ...), `fill` on padding."""
        out = values.new_full((self.B * self.S, *values.shape[1:]), fill)
        out[self.index] = values
        return out.view(self.B, self.S, *values.shape[1:])


def flat_nodes(mask: torch.Tensor) -> Nodes:
    """mask (B, S) bool -> Nodes (the real spacepoints, event after event, in their batch order)."""
    B, S = mask.shape
    flat = mask.reshape(-1)
    index = torch.nonzero(flat, as_tuple=False).squeeze(1)
    counts = mask.sum(1)
    offsets = torch.zeros(B + 1, dtype=torch.int64, device=mask.device)
    offsets[1:] = torch.cumsum(counts, 0)
    batch = torch.repeat_interleave(torch.arange(B, device=mask.device), counts)
    return Nodes(index=index, batch=batch, offsets=offsets, B=B, S=S)


#: The TPC layer radii normalized as the loader's r' (geometry.R_RANGE), for r_hat.
_R_PRIME_LAYERS = (g.LAYER_RADII - g.R_RANGE[0]) / (g.R_RANGE[1] - g.R_RANGE[0])


def hit_features(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """features (B, S, 4) [E', eta', phi', r'] (the loader's), mask (B, S) -> (N, 5) float32 per real spacepoint:
    [E', eta_hat, cos phi, sin phi, r_hat] (module docstring), in flat_nodes(mask) order."""
    f = features.reshape(-1, features.shape[-1])[flat_nodes(mask).index]
    energy, eta_p, phi_p, r_p = f.unbind(-1)
    eta = g.ETA_RANGE[0] + eta_p * (g.ETA_RANGE[1] - g.ETA_RANGE[0])
    phi = g.PHI_RANGE[0] + phi_p * (g.PHI_RANGE[1] - g.PHI_RANGE[0])
    layers = torch.as_tensor(_R_PRIME_LAYERS, dtype=f.dtype, device=f.device)
    nearest = torch.argmin((r_p[:, None] - layers[None, :]).abs(), dim=1)
    r_hat = nearest.to(f.dtype) / g.N_LAYERS
    return torch.stack([energy, eta / g.GNN_ETA_SCALE, torch.cos(phi), torch.sin(phi), r_hat], dim=-1)


def _events(offsets: torch.Tensor | np.ndarray):
    """(event, start, stop) for each non-empty event."""
    bounds = offsets.tolist()
    for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if hi > lo:
            yield b, lo, hi


#: torch.cdist's mode computing |p_i - p_j| from the differences: its default over 25 points, |p|^2 + |q|^2 - 2 p.q,
#: loses ~1e-6 absolute to cancellation (ranks neighbours 1e-6 apart wrongly); this one is about as fast.
EXACT = "donot_use_mm_for_euclid_dist"


def _join(parts: list, device=None) -> torch.Tensor:
    return torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.int64, device=device)


@torch.no_grad()
def knn_edges(points: torch.Tensor, offsets: torch.Tensor, k: int, max_distance: float | None = None) -> torch.Tensor:
    """The k nearest other nodes of each node within its event (fewer in a small event), nearest first, dropping
    those at distance >= max_distance: edges (2, E) int64 (source: neighbour, target: node). Brute force."""
    parts = []
    for _, lo, hi in _events(offsets):
        n = hi - lo
        if n < 2:
            continue
        p = points[lo:hi].detach().float()
        d = torch.cdist(p, p, compute_mode=EXACT)
        d.fill_diagonal_(math.inf)
        m = min(k, n - 1)
        dist, nbr = torch.topk(d, m, dim=1, largest=False)
        target = torch.arange(n, device=p.device)[:, None].expand(n, m)
        keep = torch.ones_like(dist, dtype=torch.bool) if max_distance is None else dist < max_distance
        parts.append(torch.stack([nbr[keep] + lo, target[keep] + lo]))
    return _join(parts, points.device)


@torch.no_grad()
def radius_edges(points: torch.Tensor, offsets: torch.Tensor, radius: float) -> torch.Tensor:
    """Every ordered pair (j, i), j != i, of one event at distance < radius: edges (2, E) int64. Brute force."""
    parts = []
    for _, lo, hi in _events(offsets):
        p = points[lo:hi].detach().float()
        d = torch.cdist(p, p, compute_mode=EXACT)
        d.fill_diagonal_(math.inf)
        target, source = torch.nonzero(d < radius, as_tuple=True)
        parts.append(torch.stack([source + lo, target + lo]))
    return _join(parts, points.device)


def knn_edges_tree(points: np.ndarray, offsets: np.ndarray, k: int, max_distance: float | None = None) -> np.ndarray:
    """knn_edges with scipy's cKDTree per event (NumPy (N, D) in, (2, E) int64 out; the same edge set)."""
    from scipy.spatial import cKDTree

    parts = []
    for _, lo, hi in _events(np.asarray(offsets)):
        n = hi - lo
        if n < 2:
            continue
        p = np.asarray(points[lo:hi], dtype=np.float64)
        m = min(k, n - 1)
        bound = np.inf if max_distance is None else max_distance
        dist, nbr = cKDTree(p).query(p, k=m + 1, distance_upper_bound=bound)
        dist, nbr = dist.reshape(n, m + 1), nbr.reshape(n, m + 1)
        target = np.repeat(np.arange(n)[:, None], m + 1, axis=1)
        keep = (nbr != target) & (nbr < n) & np.isfinite(dist)
        # a node's own entry is normally first; with duplicates it may be elsewhere: keep the m nearest others
        rank = np.cumsum(keep, axis=1)
        keep &= rank <= m
        parts.append(np.stack([nbr[keep] + lo, target[keep] + lo]))
    return np.concatenate(parts, axis=1).astype(np.int64) if parts else np.zeros((2, 0), np.int64)


def radius_edges_tree(points: np.ndarray, offsets: np.ndarray, radius: float) -> np.ndarray:
    """radius_edges with scipy's cKDTree per event (the same edge set, pairs at distance < radius)."""
    from scipy.spatial import cKDTree

    parts = []
    for _, lo, hi in _events(np.asarray(offsets)):
        p = np.asarray(points[lo:hi], dtype=np.float64)
        pairs = cKDTree(p).query_pairs(np.nextafter(radius, 0), output_type="ndarray")  # r inclusive: < radius
        if len(pairs):
            both = np.concatenate([pairs, pairs[:, ::-1]])
            parts.append(both.T + lo)  # both directions: rows (source, target)
    return np.concatenate(parts, axis=1).astype(np.int64) if parts else np.zeros((2, 0), np.int64)


def connected_components(n: int, edges: np.ndarray | torch.Tensor, min_size: int = 1) -> np.ndarray:
    """(n,) int64 component labels 0.. of the undirected graph `edges` (2, E) over n nodes (scipy); nodes in a
    component smaller than min_size are labelled -1 (unassigned)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components

    edges = edges.cpu().numpy() if isinstance(edges, torch.Tensor) else np.asarray(edges)
    if n == 0:
        return np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(edges.shape[1], np.int8), (edges[0], edges[1])), shape=(n, n))
    _, labels = components(graph, directed=False)
    labels = labels.astype(np.int64)
    if min_size > 1:
        small = np.bincount(labels)[labels] < min_size
        labels[small] = -1
    return labels


def same_track(track: torch.Tensor, noise: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Truth of edges (2, E): both ends on one track (track id >= 0, neither end noise). track (N,) int64 and
    noise (N,) bool per flat node."""
    a, b = edges
    return (track[a] == track[b]) & (track[a] >= 0) & ~noise[a] & ~noise[b]
