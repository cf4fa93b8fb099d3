"""Hierarchical raster scan (FM4NPP, "Serialization"): the order in which a model reads an event's spacepoints.

Boxes are visited in increasing box index, i.e. by (r bin, phi bin, eta bin) with r the outermost; inside a box,
spacepoints go by increasing r, ties by phi, then eta, then stored index. `order[j]` is the stored index (within
the event) of the j-th spacepoint read. Per event: a stable counting sort by box, then a stable merge sort by r inside
each box, then the rare runs of equal r put in (phi, eta, index) order; parallel over events.

Ablation orders (the paper's alternatives): "radial" (global raster scan by r, phi, eta, index, no boxes), "zorder"
(a Z-order space-filling curve over x, y, z quantized to 10 bits each within the event's bounding box, ties by
index) and "input" (the stored order).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

ORDERS = ("hierarchical", "radial", "zorder", "input")


@njit(cache=True)
def _less(r, phi, eta, a, b):
    """(r, phi, eta, index) of a < that of b."""
    if r[a] != r[b]:
        return r[a] < r[b]
    if phi[a] != phi[b]:
        return phi[a] < phi[b]
    if eta[a] != eta[b]:
        return eta[a] < eta[b]
    return a < b


@njit(cache=True)
def _sort_segment(idx, start, stop, r, phi, eta):
    """Sort idx[start:stop] (stored indices, increasing) by (r, phi, eta, index)."""
    if stop - start < 2:
        return
    seg = idx[start:stop].copy()
    by_r = np.argsort(r[seg], kind="mergesort")  # stable: equal r keep index order
    seg = seg[by_r]
    i = 0
    n = seg.shape[0]
    while i < n:
        j = i + 1
        while j < n and r[seg[j]] == r[seg[i]]:
            j += 1
        for a in range(i + 1, j):  # insertion sort of a run of equal r (rare, short)
            v = seg[a]
            b = a - 1
            while b >= i and _less(r, phi, eta, v, seg[b]):
                seg[b + 1] = seg[b]
                b -= 1
            seg[b + 1] = v
        i = j
    idx[start:stop] = seg


# Wide signature on purpose: Numba compiles, parallelizes and caches plain arrays and scalars, not a jitclass.
@njit(parallel=True, cache=True)
def _hierarchical(box, r, phi, eta, offsets, n_boxes, order):
    for e in prange(offsets.shape[0] - 1):
        lo, hi = offsets[e], offsets[e + 1]
        n = hi - lo
        if n == 0:
            continue
        counts = np.zeros(n_boxes + 1, np.int64)
        for i in range(n):
            counts[box[lo + i] + 1] += 1
        for b in range(n_boxes):
            counts[b + 1] += counts[b]
        starts = counts.copy()
        idx = np.empty(n, np.int64)
        for i in range(n):  # stable counting sort by box
            b = box[lo + i]
            idx[starts[b]] = i
            starts[b] += 1
        er, ephi, eeta = r[lo:hi], phi[lo:hi], eta[lo:hi]
        for b in range(n_boxes):
            _sort_segment(idx, counts[b], counts[b + 1], er, ephi, eeta)
        for j in range(n):
            order[lo + j] = idx[j]


@njit(parallel=True, cache=True)
def _radial(r, phi, eta, offsets, order):
    for e in prange(offsets.shape[0] - 1):
        lo, hi = offsets[e], offsets[e + 1]
        idx = np.arange(hi - lo)
        _sort_segment(idx, 0, hi - lo, r[lo:hi], phi[lo:hi], eta[lo:hi])
        for j in range(hi - lo):
            order[lo + j] = idx[j]


@njit(cache=True)
def _spread(v):
    """The low 10 bits of v spread to every third bit (for Morton codes)."""
    v &= 0x3FF
    v = (v | (v << 16)) & 0x30000FF
    v = (v | (v << 8)) & 0x300F00F
    v = (v | (v << 4)) & 0x30C30C3
    return (v | (v << 2)) & 0x9249249


@njit(parallel=True, cache=True)
def _zorder(x, y, z, offsets, order):
    for e in prange(offsets.shape[0] - 1):
        lo, hi = offsets[e], offsets[e + 1]
        n = hi - lo
        if n == 0:
            continue
        code = np.empty(n, np.int64)
        mins = np.full(3, np.inf)
        maxs = np.full(3, -np.inf)
        for i in range(n):
            for d, arr in enumerate((x, y, z)):
                v = np.float64(arr[lo + i])
                mins[d] = min(mins[d], v)
                maxs[d] = max(maxs[d], v)
        for i in range(n):
            c = np.int64(0)
            for d, arr in enumerate((x, y, z)):
                span = maxs[d] - mins[d]
                q = (
                    np.int64(0)
                    if span <= 0
                    else np.int64(min(1023.0, (np.float64(arr[lo + i]) - mins[d]) / span * 1024.0))
                )
                c |= _spread(q) << d
            code[i] = c
        idx = np.argsort(code, kind="mergesort")
        for j in range(n):
            order[lo + j] = idx[j]


def _check(offsets, *arrays):
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    n = arrays[0].shape[0]
    if offsets.ndim != 1 or offsets.shape[0] < 1 or offsets[0] != 0 or offsets[-1] != n or (np.diff(offsets) < 0).any():
        raise ValueError("offsets must start at 0, not decrease, and end at the number of spacepoints")
    if any(a.shape[0] != n for a in arrays):
        raise ValueError("all spacepoint arrays must have the same length")
    return offsets


def raster_order(
    box, r, phi, eta, offsets, n_boxes: int = 384, order: str = "hierarchical", x=None, y=None, z=None
) -> np.ndarray:
    """The permutation `order` (int32, indices within each event) of every event of a shard."""
    r, phi, eta = (np.ascontiguousarray(a, dtype=np.float32) for a in (r, phi, eta))
    offsets = _check(offsets, r, phi, eta)
    out = np.empty(r.shape[0], np.int32)
    if order == "hierarchical":
        box = np.ascontiguousarray(box, dtype=np.int16)
        if box.shape[0] and (box.min() < 0 or box.max() >= n_boxes):
            raise ValueError(f"box indices must lie in [0, {n_boxes})")
        _hierarchical(box, r, phi, eta, offsets, n_boxes, out)
    elif order == "radial":
        _radial(r, phi, eta, offsets, out)
    elif order == "zorder":
        if x is None or y is None or z is None:
            raise ValueError("the zorder order needs x, y and z")
        x, y, z = (np.ascontiguousarray(a, dtype=np.float32) for a in (x, y, z))
        _zorder(x, y, z, offsets, out)
    elif order == "input":
        counts = np.diff(offsets)
        out[:] = np.arange(r.shape[0]) - np.repeat(offsets[:-1], counts)
    else:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    return out


def raster_order_reference(box, r, phi, eta, offsets) -> np.ndarray:
    """Plain NumPy reference of the hierarchical order: one lexsort over (event, box, r, phi, eta, index)."""
    n = len(r)
    event = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    index = np.arange(n) - np.asarray(offsets)[event]
    perm = np.lexsort(
        (
            index,
            np.asarray(eta, np.float32),
            np.asarray(phi, np.float32),
            np.asarray(r, np.float32),
            np.asarray(box),
            event,
        )
    )
    return index[perm].astype(np.int32)
