"""Physics-informed partitioning of the TPC into 6 (r) x 8 (phi) x 8 (eta) boxes (FM4NPP appendix, Figure 12).

r edges follow the detector: two bins per TPC module, each module split at its radial midpoint (8 of its 16 layers
on each side), neighbouring modules separated at the middle of the gap between them; the outer edges are the
modules' outer limits. phi and eta edges are data-driven: equal counts (quantiles) over a sample of training
spacepoints, the outer edges being the range of the sample (phi: -pi and pi). A value outside the edges goes to the
nearest end bin; a value on an inner edge goes to the upper bin. `box = (r_bin * n_phi + phi_bin) * n_eta + eta_bin`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


def r_edges_from_modules(module_boundaries: np.ndarray, bins_per_module: int = 2) -> np.ndarray:
    """Radial edges (cm): each module [lo, hi] split into equal bins, modules joined at the middle of their gaps."""
    modules = np.asarray(module_boundaries, dtype=np.float64)
    if modules.ndim != 2 or modules.shape[1] != 2 or (np.diff(modules.ravel()) <= 0).any():
        raise ValueError("module_boundaries must be increasing [lo, hi] rows")
    edges = []
    for m, (lo, hi) in enumerate(modules):
        inner = np.linspace(lo, hi, bins_per_module + 1)
        if m == 0:
            edges.append(lo)
        edges.extend(inner[1:-1])
        edges.append(hi if m == len(modules) - 1 else 0.5 * (hi + modules[m + 1, 0]))
    return np.asarray(edges)


def equal_count_edges(values: np.ndarray, n_bins: int, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """n_bins + 1 edges with about equal counts of `values` per bin; outer edges lo/hi (default the sample's range)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.shape[0] < n_bins:
        raise ValueError(
            f"need at least {n_bins} finite values to fit {n_bins} equal-count bins, got {values.shape[0]}"
        )
    edges = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0] = values.min() if lo is None else lo
    edges[-1] = values.max() if hi is None else hi
    if (np.diff(edges) <= 0).any():
        raise ValueError("equal-count edges are not increasing: the sample has too many equal values")
    return edges


@njit(cache=True)
def _bin(value, edges):
    """Index of the bin of `value` (edges increasing); outside -> nearest end bin; on an inner edge -> upper bin."""
    n = edges.shape[0] - 1
    lo, hi = 0, n  # find the last edge <= value among edges[1:n]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid < n and edges[mid] <= value:
            lo = mid
        else:
            hi = mid - 1
    return lo


# Wide signature on purpose: Numba compiles, parallelizes and caches plain arrays and scalars, not a jitclass.
@njit(parallel=True, cache=True)
def _boxes(r, phi, eta, r_edges, phi_edges, eta_edges, out):
    n_phi = phi_edges.shape[0] - 1
    n_eta = eta_edges.shape[0] - 1
    for i in prange(r.shape[0]):
        e = np.float64(eta[i])
        if math.isnan(e):
            e = 0.0
        out[i] = (_bin(np.float64(r[i]), r_edges) * n_phi + _bin(np.float64(phi[i]), phi_edges)) * n_eta + _bin(
            e, eta_edges
        )


def boxes(r, phi, eta, r_edges, phi_edges, eta_edges) -> np.ndarray:
    """Box index (int16) of each spacepoint."""
    edges = [np.ascontiguousarray(e, dtype=np.float64) for e in (r_edges, phi_edges, eta_edges)]
    for name, e in zip(("r", "phi", "eta"), edges, strict=True):
        if e.ndim != 1 or e.shape[0] < 2 or (np.diff(e) <= 0).any():
            raise ValueError(f"{name} edges must be at least two increasing values")
    if (len(edges[0]) - 1) * (len(edges[1]) - 1) * (len(edges[2]) - 1) > np.iinfo(np.int16).max:
        raise ValueError("too many boxes for int16")
    r, phi, eta = (np.ascontiguousarray(a, dtype=np.float32) for a in (r, phi, eta))
    out = np.empty(r.shape[0], np.int16)
    _boxes(r, phi, eta, *edges, out)
    return out


def boxes_reference(r, phi, eta, r_edges, phi_edges, eta_edges) -> np.ndarray:
    """Plain NumPy reference of `boxes` (for tests)."""

    def bin_of(v, e):
        return np.clip(np.searchsorted(e, np.asarray(v, np.float64), side="right") - 1, 0, len(e) - 2)

    eta = np.nan_to_num(np.asarray(eta, np.float64), nan=0.0)
    n_phi, n_eta = len(phi_edges) - 1, len(eta_edges) - 1
    return ((bin_of(r, r_edges) * n_phi + bin_of(phi, phi_edges)) * n_eta + bin_of(eta, eta_edges)).astype(np.int16)
