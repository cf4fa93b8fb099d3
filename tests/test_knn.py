"""k-next-nearest neighbours: the grid kernel against the brute-force reference, edge cases, the published variant."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fm4npp_data.kernels import knn as knn_module
from fm4npp_data.kernels.knn import knn, knn_published, knn_reference

RADII = np.linspace(31.37, 75.37, 48)


def _coordinates(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n points of one of several shapes, chosen to make ties, duplicates, equal r and odd grids likely."""
    if kind == "grid":  # small integers: duplicates, equal r, equal distances
        size = rng.integers(1, 5)
        x, y, z = (rng.integers(-size, size + 1, n) for _ in range(3))
    elif kind == "normal":
        x, y, z = (rng.normal(size=n) for _ in range(3))
    elif kind == "far":  # far from the origin, elongated
        x, y, z = rng.normal(1000.0, 30.0, n), rng.normal(-500.0, 1.0, n), rng.normal(0.0, 0.01, n)
    elif kind == "cylinders":  # a few exact radii: groups of (almost) equal r
        r, phi = rng.choice([1.0, 2.0, 3.0], n), rng.integers(0, 8, n) * np.pi / 4
        x, y, z = r * np.cos(phi), r * np.sin(phi), rng.integers(-2, 3, n)
    elif kind == "flat":  # a plane z = 0, few distinct values
        x, y, z = rng.integers(-2, 3, n) * 0.5, rng.normal(size=n), np.zeros(n)
    elif kind == "line":  # the z axis: r = 0 everywhere, no candidates
        x, y, z = np.zeros(n), np.zeros(n), rng.normal(size=n)
    elif kind == "outliers":  # a blob and a few points very far: outside the grids, which leave out the extremes
        x, y, z = (rng.normal(size=n) * np.where(rng.random(n) < 0.02, 1e5, 1.0) for _ in range(3))
    else:  # "clusters": a few points repeated many times
        centres = rng.normal(size=(3, 4))
        pick = rng.integers(0, 4, n)
        x, y, z = centres[0, pick], centres[1, pick], centres[2, pick]
    return tuple(np.asarray(v, dtype=np.float32) for v in (x, y, z))


def _assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].dtype == np.int32
    assert got[1].dtype == np.float32
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)  # NaN equals NaN


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=4),
    kinds=st.lists(
        st.sampled_from(["grid", "normal", "far", "cylinders", "flat", "line", "outliers", "clusters"]), min_size=4
    ),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_knn_matches_reference(sizes, kinds, k, seed):
    rng = np.random.default_rng(seed)
    events = [_coordinates(kind, n, rng) for n, kind in zip(sizes, kinds[: len(sizes)], strict=True)]
    x, y, z = (np.concatenate([event[a] for event in events]) for a in range(3))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    _assert_same(knn(x, y, z, offsets, k), knn_reference(x, y, z, offsets, k))


def test_empty_and_single():
    empty = np.zeros(0, np.float32)
    out, mean = knn(empty, empty, empty, np.array([0]), k=3)
    assert out.shape == (0, 3)
    assert mean.shape == (0,)
    out, mean = knn(empty, empty, empty, np.array([0, 0, 0]), k=3)
    assert out.shape == (0, 3)
    assert np.isnan(mean).all()
    one = np.ones(1, np.float32)
    out, mean = knn(one, one, one, np.array([0, 0, 1]), k=3)
    np.testing.assert_array_equal(out, [[-1, -1, -1]])
    assert np.isnan(mean).all()


@pytest.mark.parametrize("n", [4, 5])  # k and k + 1 spacepoints
def test_k_and_k_plus_one_points(n):
    k = 4
    r = np.arange(1, n + 1, dtype=np.float32)  # point i at r = i + 1: the candidates of i are i+1..n-1, by distance
    x, y, z = r, np.zeros(n, np.float32), np.zeros(n, np.float32)
    out, mean = knn(x, y, z, np.array([0, n]), k)
    want = np.full((n, k), -1)
    for i in range(n):
        later = np.arange(i + 1, n)[:k]
        want[i, : later.size] = later
    np.testing.assert_array_equal(out, want)
    distances = [j - i for i in range(n) for j in range(i + 1, min(n, i + 1 + k))]
    np.testing.assert_allclose(mean, [np.mean(distances)], rtol=1e-6)


def test_duplicates_and_equal_r_are_not_candidates():
    # identical points and points at the same r never neighbour each other
    x, y, z = (np.full(5, v, np.float32) for v in (3.0, 4.0, 1.0))
    out, mean = knn(x, y, z, np.array([0, 5]), k=2)
    assert (out == -1).all()
    assert np.isnan(mean).all()
    x = np.array([5, 0, -5, 0, 3, 4, -3, 4, 3, -4], np.float32)  # all at r = 5 exactly
    y = np.array([0, 5, 0, -5, 4, 3, 4, -3, 4, 3], np.float32)
    z = np.arange(10, dtype=np.float32)
    out, mean = knn(x, y, z, np.array([0, 10]), k=3)
    assert (out == -1).all()
    assert np.isnan(mean).all()
    # a point at the query's r right next to it is skipped for a farther one at larger r
    x = np.array([1.0, 0.0, 10.0], np.float32)
    y = np.array([0.0, 1.0, 0.0], np.float32)
    z = np.zeros(3, np.float32)
    out, _ = knn(x, y, z, np.array([0, 3]), k=2)
    np.testing.assert_array_equal(out, [[2, -1], [2, -1], [-1, -1]])


def test_ties_broken_by_index():
    # the query at the origin; four candidates at distance 2, stored in a scrambled order
    x = np.array([0, 0, -2, 2, 0, 0, 9], np.float32)
    y = np.array([0, 2, 0, 0, -2, 0, 9], np.float32)
    z = np.array([0, 0, 0, 0, 0, 2, 9], np.float32)  # point 5: r = 0, not a candidate
    out, _ = knn(x, y, z, np.array([0, 7]), k=5)
    np.testing.assert_array_equal(out[0], [1, 2, 3, 4, 6])
    np.testing.assert_array_equal(out[5], [1, 2, 3, 4, 6])  # same r as the query: not each other's candidates


def test_invalid_input():
    a = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="offsets"):
        knn(a, a, a, np.array([0, 2]))
    with pytest.raises(ValueError, match="non-decreasing"):
        knn(a, a, a, np.array([0, 2, 1, 3]))
    with pytest.raises(ValueError, match="same length"):
        knn(a, a[:2], a, np.array([0, 3]))
    with pytest.raises(ValueError, match="k must be"):
        knn(a, a, a, np.array([0, 3]), k=0)


def tpc_event(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About n spacepoints on the 48 TPC layer cylinders: helices from the beam line plus 20% random noise."""
    xs, ys, zs = [], [], []
    while sum(v.size for v in xs) < 0.8 * n + 1:
        radius, charge = 238.0 * rng.uniform(0.15, 3.0), rng.choice([-1.0, 1.0])  # cm: pT / (0.3 B) at 1.4 T
        phi0, cot_theta = rng.uniform(-np.pi, np.pi), np.sinh(rng.uniform(-1.1, 1.1))
        rho = RADII[2 * radius > RADII]
        turn = 2 * np.arcsin(rho / (2 * radius))
        z = radius * turn * cot_theta
        phi = phi0 + charge * turn / 2
        xs.append(rho * np.cos(phi))
        ys.append(rho * np.sin(phi))
        zs.append(z)
    on_tracks = int(0.8 * n)
    xs, ys, zs = (np.concatenate(v)[:on_tracks] for v in (xs, ys, zs))
    rho, phi = rng.choice(RADII, n - on_tracks), rng.uniform(-np.pi, np.pi, n - on_tracks)
    xs, ys = np.concatenate([xs, rho * np.cos(phi)]), np.concatenate([ys, rho * np.sin(phi)])
    zs = np.concatenate([zs, rng.uniform(-100, 100, n - on_tracks)])
    keep = np.abs(zs) < 100
    return tuple(v[keep].astype(np.float32) for v in (xs, ys, zs))


def test_realistic_event_matches_reference():
    x, y, z = tpc_event(3000, np.random.default_rng(7))
    offsets = np.array([0, x.size])
    _assert_same(knn(x, y, z, offsets), knn_reference(x, y, z, offsets))


def test_outliers_outside_the_grid():
    # the grids leave out the extreme 0.5% on each side: those points lie in the end cells, still found exactly
    rng = np.random.default_rng(10)
    x, y, z = (rng.normal(size=2000) for _ in range(3))
    far = rng.choice(2000, 40, replace=False)
    x[far] = rng.uniform(-1e6, 1e6, 40)
    y[far[:20]] = 3e4
    z[far[20:]] = -1e5
    x, y, z = (v.astype(np.float32) for v in (x, y, z))
    offsets = np.array([0, 2000])
    _assert_same(knn(x, y, z, offsets), knn_reference(x, y, z, offsets))


@pytest.mark.slow
def test_large_event_path(monkeypatch):
    # events at least LARGE_EVENT big are looked up in parallel chunks: the same result
    rng = np.random.default_rng(8)
    events = [tpc_event(n, rng) for n in (900, 0, 1500, 1, 300)]
    x, y, z = (np.concatenate([event[a] for event in events]) for a in range(3))
    offsets = np.concatenate([[0], np.cumsum([event[0].size for event in events])])
    want = knn_reference(x, y, z, offsets, k=7)
    monkeypatch.setattr(knn_module, "LARGE_EVENT", 500)
    _assert_same(knn(x, y, z, offsets, k=7), want)


def _published_reference(u, v, w, offsets, k):
    """Dense: all pairwise distances, masked to j > i, the k smallest by (distance, index)."""
    out = np.full((u.size, k), -1, np.int32)
    mean = np.full(offsets.size - 1, np.nan, np.float32)
    for e in range(offsets.size - 1):
        s, t = offsets[e], offsets[e + 1]
        p = np.stack([u[s:t], v[s:t], w[s:t]], axis=1).astype(np.float64)
        diff = p[None, :, :] - p[:, None, :]
        d = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2])
        d[np.tril_indices(t - s)] = np.inf  # only j > i
        found = []
        for i in range(t - s):
            j = np.lexsort((np.arange(t - s), d[i]))[:k]
            j = j[np.isfinite(d[i, j])]
            out[s + i, : j.size] = j
            found.append(d[i, j])
        found = np.concatenate(found) if found else np.zeros(0)
        if found.size:
            mean[e] = found.mean()
    return out, mean


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 120), min_size=1, max_size=3), k=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_knn_published_matches_dense(sizes, k, seed):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    eta, phi, r = (rng.integers(0, 5, n) / 4 if seed % 2 else rng.uniform(0, 1, n) for _ in range(3))
    eta, phi, r = (v.astype(np.float32) for v in (eta, phi, r))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    _assert_same(knn_published(eta, phi, r, offsets, k), _published_reference(eta, phi, r, offsets, k))


def test_scales_about_linearly(monkeypatch):
    monkeypatch.setattr(knn_module, "LARGE_EVENT", 10**9)  # the same (one-thread) path for both sizes
    rng = np.random.default_rng(9)
    seconds = {}
    for n in (10_000, 40_000):
        x, y, z = tpc_event(n, rng)
        offsets = np.array([0, x.size])
        knn(x, y, z, offsets)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            knn(x, y, z, offsets)
            runs.append(time.perf_counter() - start)
        seconds[n] = min(runs)
    assert seconds[40_000] / seconds[10_000] < 8.0, seconds
