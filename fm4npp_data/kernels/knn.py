"""k-next-nearest neighbours (FM4NPP pretraining target) and the event difficulty (mean neighbour distance).

For a spacepoint i of an event, its candidates are the spacepoints j of the same event with r_j > r_i strictly
(r = sqrt(x^2 + y^2)); its k next-nearest neighbours are the k candidates nearest to it in (x, y, z), nearest first,
ties in distance broken by the smaller index, padded with -1. Indices are local to the event (into its stored order).
All arithmetic is float64 on the float32 inputs: r and d = sqrt(dx*dx + dy*dy + dz*dz), compared as (d, index).

Algorithm (exact; about linear in the event size). With the event's points ranked by decreasing r, the candidates of
i are exactly the first m_i ranks, m_i being the rank where i's group of equal r starts. So:

1. per event, nested levels: the first 32, 64, 128, ... ranks (the last level is the whole event), each with a
   uniform grid of cubic cells over its bounding box, about POINTS_PER_CELL points per cell. The box leaves out the
   extreme TRIM fraction of the event on each side (outliers would make the cells huge); points outside it belong
   to the end cells, which reach to infinity. A level stores its points cell by cell (a counting sort) and by rank
   inside a cell, so the candidates of i in a cell are a prefix of it: a scan stops at the first r_j <= r_i, and
   equal r is never a candidate;
2. i is looked up in the smallest level holding its m_i candidates (at least half of that level's points, so the
   grid's resolution suits them even where candidates are few and far, as on the outer layers): shells of cells
   (Chebyshev rings 0, 1, 2, ...) around i's cell, skipping cells farther than the current k-th distance, offer
   their candidates to a buffer of the k best (d, j), kept sorted by insertion; the search stops when the k-th
   best distance is below the distance to the unexplored cells, all m_i candidates have been seen, or the grid is
   exhausted. Cell bounds carry a rounding margin, so a pruned point is surely farther than the k-th best;
3. the mean of the found distances per event (NaN where an event has no (i, neighbour) pair).

Memory: the (N, k) output plus O(N) per event being processed (the levels hold at most 3 n points). Parallel over
events; an event of LARGE_EVENT spacepoints or more is built alone and its lookups are parallel over chunks.

`knn_published` is the published code's variant for ablations: distances in the normalized (eta, phi, r) space and
candidates the spacepoints later in the given sequence order (j > i), i.e. the dense approach (pairwise distances
masked to j > i, the k smallest); here brute force per event, O(n^2). `knn_reference` is the obvious NumPy
implementation of `knn`, for the tests.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: the grids aim at this many points per cell over their bounding box
POINTS_PER_CELL = 2.0
#: the smallest level (ranks 0..SMALLEST_LEVEL-1); each next level doubles
SMALLEST_LEVEL = 32
#: the grids leave out about this fraction of the points on each side of each axis (outliers), estimated on a
#: sample of about SAMPLE points
TRIM = 0.005
SAMPLE = 1024
#: events at least this large use every thread for their lookups
LARGE_EVENT = 20_000
#: spacepoints per parallel work item in a large event
CHUNK = 256


@njit(cache=True, inline="always")  # in the innermost loop of _query
def _insert(best_d, best_j, count, d, j):
    """Insert (d, j) into the buffer sorted by (d, j) holding `count` entries; return the new count."""
    k = best_d.shape[0]
    if count == k:
        if d > best_d[k - 1] or (d == best_d[k - 1] and j > best_j[k - 1]):
            return count
        pos = k - 1
    else:
        pos = count
        count += 1
    while pos > 0 and (d < best_d[pos - 1] or (d == best_d[pos - 1] and j < best_j[pos - 1])):
        best_d[pos] = best_d[pos - 1]
        best_j[pos] = best_j[pos - 1]
        pos -= 1
    best_d[pos] = d
    best_j[pos] = j
    return count


@njit(cache=True)
def _core(xyz):
    """The box (low, high corners) of the event's points but the TRIM fraction on each side of each axis, estimated
    on a sample of about SAMPLE points: the grids stay in it, so that outliers do not make them coarse."""
    n = xyz.shape[0]
    sample = xyz[:: max(1, n // SAMPLE)]
    trim = int(sample.shape[0] * TRIM)
    low, high = np.zeros(3), np.zeros(3)
    for a in range(3):
        if n > 0:
            values = np.partition(sample[:, a].copy(), (trim, sample.shape[0] - 1 - trim))
            low[a], high[a] = values[trim], values[sample.shape[0] - 1 - trim]
    return low, high


@njit(cache=True)
def _grid(xyz, points, core, lo, shape):
    """A grid over the bounding box of xyz[points] clipped to the core box: its corner into lo, cells per axis into
    shape; returns the cell size h. Points outside belong to the end cells, which extend to infinity (any grid gives
    exact results, a good one gives them fast)."""
    n = points.shape[0]
    extent = np.zeros(3)
    lo[:] = 0.0
    for a in range(3):
        low, high = np.inf, -np.inf
        for i in points:
            low = min(low, xyz[i, a])
            high = max(high, xyz[i, a])
        if n > 0:
            lo[a] = min(max(low, core[0][a]), core[1][a])
            extent[a] = max(min(high, core[1][a]) - lo[a], 0.0)
    target = max(1.0, n / POINTS_PER_CELL)
    volume = 1.0
    dims = 0
    for a in range(3):
        if extent[a] > 0.0:
            volume *= extent[a]
            dims += 1
    h = (volume / target) ** (1.0 / dims) if dims > 0 else 1.0
    if not h > 0.0:
        h = 1.0
    cells = (extent // h + 1.0).prod()
    while cells > 4.0 * target + 64.0:  # a flat or elongated event: fewer, larger cells
        h *= 1.25
        cells = (extent // h + 1.0).prod()
    for a in range(3):
        shape[a] = int(extent[a] // h) + 1
    return h


@njit(cache=True)
def _index(v, lo, h, size):
    """Cell index of coordinate v along one axis, clamped into the grid (in floating point first: outliers overflow
    integers)."""
    return max(int(min((v - lo) / h, size - 1.0)), 0)


# Wide signature on purpose: Numba compiles, parallelizes and caches plain arrays and scalars, not a jitclass.
@njit(cache=True)
def _fill(xyz, r, ranked, lo, h, shape, base, starts, point, index):
    """Store the points `ranked` (by rank) cell by cell from position base of point and index, by rank inside a
    cell; starts[c] becomes the position of cell c's first point (a counting sort)."""
    cell = np.empty(ranked.shape[0], np.int64)
    for p in range(ranked.shape[0]):
        cell[p] = 0
        for a in range(3):  # the flat cell index (ix * ny + iy) * nz + iz
            cell[p] = cell[p] * shape[a] + _index(xyz[ranked[p], a], lo[a], h, shape[a])
        starts[cell[p] + 1] += 1
    starts[0] = base
    for c in range(starts.shape[0] - 1):
        starts[c + 1] += starts[c]
    fill = starts[:-1].copy()
    for p in range(ranked.shape[0]):
        q = fill[cell[p]]
        fill[cell[p]] += 1
        i = ranked[p]
        point[q, 0], point[q, 1], point[q, 2], point[q, 3] = xyz[i, 0], xyz[i, 1], xyz[i, 2], r[i]
        index[q] = i


@njit(cache=True)
def _build(x, y, z):
    """The levels of one event (x, y, z: its float32 coordinates); see the module docstring."""
    n = x.shape[0]
    xyz = np.empty((n, 3))
    r = np.empty(n)
    for i in range(n):
        xyz[i, 0], xyz[i, 1], xyz[i, 2] = x[i], y[i], z[i]
        r[i] = math.sqrt(xyz[i, 0] * xyz[i, 0] + xyz[i, 1] * xyz[i, 1])
    by_r = np.argsort(-r, kind="mergesort")
    n_cand = np.empty(n, np.int64)
    group = 0
    for p in range(n):
        if p > 0 and r[by_r[p]] != r[by_r[p - 1]]:
            group = p
        n_cand[by_r[p]] = group
    core = _core(xyz)
    n_levels = 1
    while SMALLEST_LEVEL << (n_levels - 1) < n:
        n_levels += 1
    sizes = np.minimum(SMALLEST_LEVEL << np.arange(n_levels), n)
    lo = np.empty((n_levels, 3))
    h = np.empty(n_levels)
    shape = np.empty((n_levels, 3), np.int64)
    cell_base = np.zeros(n_levels + 1, np.int64)  # level l's cells: cell_start[cell_base[l] : cell_base[l + 1]]
    for level in range(n_levels):
        h[level] = _grid(xyz, by_r[: sizes[level]], core, lo[level], shape[level])
        cell_base[level + 1] = cell_base[level] + shape[level].prod() + 1
    cell_start = np.zeros(cell_base[-1], np.int64)
    point = np.empty((sizes.sum(), 4))  # x, y, z, r of the levels' points, cell by cell, by rank inside a cell
    index = np.empty(sizes.sum(), np.int32)
    base = 0
    for level in range(n_levels):
        starts = cell_start[cell_base[level] : cell_base[level + 1]]
        _fill(xyz, r, by_r[: sizes[level]], lo[level], h[level], shape[level], base, starts, point, index)
        base += sizes[level]
    return xyz, n_cand, sizes, lo, h, shape, cell_base, cell_start, point, index


@njit(cache=True)
def _query(i, levels, best_d, best_j):
    """Fill best_d, best_j with the k next-nearest neighbours of point i; return how many were found."""
    xyz, n_cand, sizes, lo_, h_, shape_, cell_base, cell_start, point, index = levels
    m = n_cand[i]
    if m == 0:
        return 0
    level = 0
    while sizes[level] < m:
        level += 1
    lx, ly, lz = lo_[level, 0], lo_[level, 1], lo_[level, 2]
    nx, ny, nz = shape_[level, 0], shape_[level, 1], shape_[level, 2]
    h = h_[level]
    first = cell_base[level]  # the level's cells: cell_start[first:]
    qx, qy, qz = xyz[i, 0], xyz[i, 1], xyz[i, 2]
    qr = math.sqrt(qx * qx + qy * qy)
    cx, cy, cz = _index(qx, lx, h, nx), _index(qy, ly, h, ny), _index(qz, lz, h, nz)
    tol = 1e-9 * (abs(qx) + abs(qy) + abs(qz) + abs(lx) + abs(ly) + abs(lz) + (nx + ny + nz) * h)  # rounding margin
    k = best_d.shape[0]
    count = 0
    seen = 0
    worst2 = np.inf  # the squared k-th best distance (plus a margin) once the buffer is full
    s = 0
    while seen < m:
        for ix in range(max(cx - s, 0), min(cx + s, nx - 1) + 1):
            gx = _gap(qx, lx, h, ix, nx, tol)
            for iy in range(max(cy - s, 0), min(cy + s, ny - 1) + 1):
                gxy = gx + _gap(qy, ly, h, iy, ny, tol)
                if gxy > worst2:
                    continue
                # on the shell in x or y: the whole z column of the cube; inside: only its two z ends
                step = 1 if abs(ix - cx) == s or abs(iy - cy) == s else 2 * s
                for iz in range(cz - s, cz + s + 1, step):
                    if iz < 0 or iz >= nz or gxy + _gap(qz, lz, h, iz, nz, tol) > worst2:
                        continue
                    cell = first + (ix * ny + iy) * nz + iz
                    for p in range(cell_start[cell], cell_start[cell + 1]):  # by rank: candidates first
                        if point[p, 3] <= qr:
                            break
                        seen += 1
                        dx, dy, dz = point[p, 0] - qx, point[p, 1] - qy, point[p, 2] - qz
                        d2 = dx * dx + dy * dy + dz * dz
                        if d2 > worst2:  # farther than the k-th best, surely (worst2 has a margin)
                            continue
                        count = _insert(best_d, best_j, count, math.sqrt(d2), index[p])
                        if count == k:
                            worst2 = best_d[k - 1] * best_d[k - 1] * (1.0 + 1e-9)
        # the distance from the query to the cells outside the explored cube
        bound = min(_beyond(qx, lx, h, cx, s, nx), _beyond(qy, ly, h, cy, s, ny), _beyond(qz, lz, h, cz, s, nz))
        if bound == np.inf or (count == k and best_d[k - 1] < bound - tol):
            break
        s += 1
    return count


@njit(cache=True)
def _beyond(v, lo, h, cell, s, size):
    """Distance along one axis from v to the cells farther than s from its cell (inf where there are none)."""
    below = v - (lo + (cell - s) * h) if cell - s > 0 else np.inf
    above = lo + (cell + s + 1) * h - v if cell + s < size - 1 else np.inf
    return min(below, above)


@njit(cache=True)
def _gap(v, lo, h, cell, size, tol):
    """A lower bound on the squared distance along one axis from v to the points of a cell (cells clamp the ends)."""
    below = lo + cell * h - tol - v if cell > 0 else 0.0
    above = v - (lo + (cell + 1) * h + tol) if cell < size - 1 else 0.0
    g = max(below, above, 0.0)
    return g * g


@njit(cache=True)
def _queries(levels, start, stop, knn_out):
    """Look up the event's points start..stop-1 of the whole-event level (cell by cell: neighbours in space follow
    each other) into their rows of knn_out; return (sum of their neighbour distances, number of neighbours)."""
    index = levels[-1]
    whole = index.shape[0] - knn_out.shape[0]  # the last level: the whole event
    k = knn_out.shape[1]
    best_d = np.empty(k)
    best_j = np.empty(k, np.int32)
    total = 0.0
    pairs = 0
    for p in range(whole + start, whole + stop):
        i = index[p]
        count = _query(i, levels, best_d, best_j)
        for j in range(k):
            knn_out[i, j] = best_j[j] if j < count else -1
        for j in range(count):
            total += best_d[j]
        pairs += count
    return total, pairs


# Wide signature on purpose: Numba compiles, parallelizes and caches plain arrays and scalars, not a jitclass.
@njit(parallel=True, cache=True)
def _knn_events(x, y, z, offsets, events, knn_out, mean_out):
    for t in prange(events.shape[0]):
        e = events[t]
        start, stop = offsets[e], offsets[e + 1]
        levels = _build(x[start:stop], y[start:stop], z[start:stop])
        total, pairs = _queries(levels, 0, stop - start, knn_out[start:stop])
        mean_out[e] = total / pairs if pairs > 0 else np.nan


@njit(parallel=True, cache=True)
def _knn_large_event(x, y, z, knn_out):
    levels = _build(x, y, z)
    n_chunks = (x.shape[0] + CHUNK - 1) // CHUNK
    totals = np.zeros(n_chunks)
    pairs = np.zeros(n_chunks, np.int64)
    for c in prange(n_chunks):
        totals[c], pairs[c] = _queries(levels, c * CHUNK, min(x.shape[0], (c + 1) * CHUNK), knn_out)
    return totals.sum() / pairs.sum() if pairs.sum() > 0 else np.nan


@njit(parallel=True, cache=True)
def _knn_published(u, v, w, offsets, knn_out, mean_out):
    k = knn_out.shape[1]
    for e in prange(offsets.shape[0] - 1):
        start, stop = offsets[e], offsets[e + 1]
        best_d = np.empty(k)
        best_j = np.empty(k, np.int32)
        total = 0.0
        pairs = 0
        for i in range(start, stop):
            count = 0
            for j in range(i + 1, stop):
                du = np.float64(u[j]) - np.float64(u[i])
                dv = np.float64(v[j]) - np.float64(v[i])
                dw = np.float64(w[j]) - np.float64(w[i])
                count = _insert(best_d, best_j, count, math.sqrt(du * du + dv * dv + dw * dw), j - start)
            knn_out[i, :count] = best_j[:count]
            knn_out[i, count:] = -1
            total += best_d[:count].sum()
            pairs += count
        mean_out[e] = total / pairs if pairs > 0 else np.nan


def _inputs(a, b, c, offsets, k):
    a, b, c = (np.ascontiguousarray(v, dtype=np.float32) for v in (a, b, c))
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if not (a.shape == b.shape == c.shape) or a.ndim != 1:
        raise ValueError("the coordinates must be 1-D arrays of the same length")
    if offsets.ndim != 1 or offsets.shape[0] < 1 or offsets[0] != 0 or offsets[-1] != a.shape[0]:
        raise ValueError("offsets must run from 0 to the number of spacepoints")
    if np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing")
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    return a, b, c, offsets, int(k)


def knn(x: np.ndarray, y: np.ndarray, z: np.ndarray, offsets: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """k next-nearest neighbours (r_j > r_i, 3-D distance) of every spacepoint; see the module docstring.

    x, y, z: flat float32 arrays (cm) of all spacepoints; offsets: int64, event e holds rows offsets[e]:offsets[e+1].
    Returns (knn int32 (N, k), local indices nearest first, -1 padded; mean_distance float32 (n_events,), NaN for an
    event without any pair).
    """
    x, y, z, offsets, k = _inputs(x, y, z, offsets, k)
    out = np.empty((x.shape[0], k), np.int32)
    mean = np.empty(offsets.shape[0] - 1, np.float32)
    large = np.diff(offsets) >= LARGE_EVENT
    _knn_events(x, y, z, offsets, np.flatnonzero(~large), out, mean)
    for e in np.flatnonzero(large):
        rows = slice(offsets[e], offsets[e + 1])
        mean[e] = _knn_large_event(x[rows], y[rows], z[rows], out[rows])
    return out, mean


def knn_published(
    eta_n: np.ndarray, phi_n: np.ndarray, r_n: np.ndarray, offsets: np.ndarray, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The published code's variant: distance in normalized (eta, phi, r), candidates later in the given order.

    Same outputs, tie rule and padding as `knn`; the caller has put each event in its sequence order (sorted by r).
    """
    eta_n, phi_n, r_n, offsets, k = _inputs(eta_n, phi_n, r_n, offsets, k)
    out = np.empty((eta_n.shape[0], k), np.int32)
    mean = np.empty(offsets.shape[0] - 1, np.float32)
    _knn_published(eta_n, phi_n, r_n, offsets, out, mean)
    return out, mean


def knn_reference(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, offsets: np.ndarray, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """`knn` by brute force in plain NumPy (slow, obvious; for the tests)."""
    x, y, z, offsets, k = _inputs(x, y, z, offsets, k)
    out = np.full((x.shape[0], k), -1, np.int32)
    mean = np.full(offsets.shape[0] - 1, np.nan, np.float32)
    for e in range(offsets.shape[0] - 1):
        start, stop = offsets[e], offsets[e + 1]
        ex, ey, ez = (v[start:stop].astype(np.float64) for v in (x, y, z))
        r = np.sqrt(ex * ex + ey * ey)
        distances = [np.empty(0)]
        for i in range(stop - start):
            j = np.flatnonzero(r > r[i])
            dx, dy, dz = ex[j] - ex[i], ey[j] - ey[i], ez[j] - ez[i]
            d = np.sqrt(dx * dx + dy * dy + dz * dz)
            nearest = np.lexsort((j, d))[:k]
            out[start + i, : nearest.size] = j[nearest]
            distances.append(d[nearest])
        distances = np.concatenate(distances)
        if distances.size:
            mean[e] = distances.mean()
    return out, mean
