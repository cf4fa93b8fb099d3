"""The graph baselines' toolkit (fm4npp_models/baselines/graphs.py): kNN and radius graphs, brute force and cKDTree,
against an obvious double loop; the paper's hit features by hand; connected components; the truth of an edge; the
flat nodes of a padded batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

from fm4npp_data import geometry as g  # noqa: E402
from fm4npp_models.baselines.graphs import (  # noqa: E402
    connected_components,
    flat_nodes,
    hit_features,
    knn_edges,
    knn_edges_tree,
    radius_edges,
    radius_edges_tree,
    same_track,
)

#: Event sizes, with the empty, the single and the pair event, and sizes at and below k.
SIZES = [[0], [1], [2], [3, 0, 1, 2], [7, 0, 40, 1, 13], [0, 0], [25, 2, 0, 60]]


def random_events(sizes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """points (N, 4) float32 like hit_features' (eta_hat, cos phi, sin phi, r_hat) and offsets (B+1,) int64."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    phi = rng.uniform(-math.pi, math.pi, n)
    points = np.stack([rng.uniform(-1, 1, n), np.cos(phi), np.sin(phi), rng.integers(0, 48, n) / 48], axis=1)
    return points.astype(np.float32), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def reference_knn(points, offsets, k, max_distance=None) -> set[tuple[int, int]]:
    """(source, target): for each node its k nearest other nodes of its event, at distance < max_distance."""
    p = points.astype(np.float64)
    edges = set()
    for lo, hi in zip(offsets[:-1], offsets[1:], strict=True):
        for i in range(lo, hi):
            others = sorted((float(np.linalg.norm(p[i] - p[j])), j) for j in range(lo, hi) if j != i)
            for d, j in others[:k]:
                if max_distance is None or d < max_distance:
                    edges.add((j, i))
    return edges


def reference_radius(points, offsets, radius) -> set[tuple[int, int]]:
    """(source, target): every ordered pair of other nodes of one event at distance < radius."""
    p = points.astype(np.float64)
    edges = set()
    for lo, hi in zip(offsets[:-1], offsets[1:], strict=True):
        for i in range(lo, hi):
            for j in range(lo, hi):
                if j != i and np.linalg.norm(p[i] - p[j]) < radius:
                    edges.add((j, i))
    return edges


def edge_set(edges) -> set[tuple[int, int]]:
    edges = edges.numpy() if isinstance(edges, torch.Tensor) else edges
    assert edges.dtype == np.int64
    assert edges.shape[0] == 2
    pairs = set(zip(edges[0].tolist(), edges[1].tolist(), strict=True))
    assert len(pairs) == edges.shape[1], "an edge twice"
    return pairs


def assert_within_events(edges, offsets) -> None:
    """No self loop, and both ends of every edge in one event."""
    edges = edges.numpy() if isinstance(edges, torch.Tensor) else edges
    event = np.searchsorted(offsets, edges, side="right") - 1
    assert np.all(edges[0] != edges[1])
    np.testing.assert_array_equal(event[0], event[1])


# -- kNN and radius graphs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize(("k", "max_distance"), [(1, None), (3, 0.5), (8, 1.0), (50, 1.0), (50, None)])
def test_knn_edges_are_the_double_loops(sizes, k, max_distance):
    points, offsets = random_events(sizes, seed=sum(sizes) + k)
    want = reference_knn(points, offsets, k, max_distance)
    brute = knn_edges(torch.from_numpy(points), torch.from_numpy(offsets), k, max_distance)
    tree = knn_edges_tree(points, offsets, k, max_distance)
    assert edge_set(brute) == want
    assert edge_set(tree) == want
    for edges in (brute, tree):
        assert_within_events(edges, offsets)
        src, dst = np.asarray(edges)
        d = np.linalg.norm(points[src].astype(np.float64) - points[dst], axis=1)
        assert max_distance is None or np.all(d < max_distance)
        assert np.all(np.bincount(dst, minlength=len(points)) <= k)  # k neighbours of each node at most
    if max_distance is None:  # every node of an event of n has min(k, n - 1) neighbours
        degree = np.bincount(np.asarray(brute)[1], minlength=len(points))
        sizes_of = np.repeat(np.diff(offsets), np.diff(offsets))
        np.testing.assert_array_equal(degree, np.minimum(k, sizes_of - 1))


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("radius", [0.05, 0.4, 1.0, 3.0])
def test_radius_edges_are_the_double_loop(sizes, radius):
    points, offsets = random_events(sizes, seed=sum(sizes) + int(radius * 100))
    want = reference_radius(points, offsets, radius)
    brute = radius_edges(torch.from_numpy(points), torch.from_numpy(offsets), radius)
    tree = radius_edges_tree(points, offsets, radius)
    assert edge_set(brute) == want
    assert edge_set(tree) == want
    for edges in (brute, tree):
        assert_within_events(edges, offsets)
    if radius == 3.0:  # beyond the largest distance (2 sqrt 2 < 3): complete graphs within events
        assert len(want) == sum(n * (n - 1) for n in np.diff(offsets))


def test_a_neighbour_at_exactly_the_distance_is_not_linked():
    points = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0.5, 0, 0]], np.float32)  # 0-1 at distance exactly 1
    offsets = np.array([0, 3])
    want = {(2, 0), (0, 2)}  # 0-2 at 0.5; 1-2 at 1.118
    assert edge_set(knn_edges(torch.from_numpy(points), torch.from_numpy(offsets), 5, 1.0)) == want
    assert edge_set(knn_edges_tree(points, offsets, 5, 1.0)) == want
    assert edge_set(radius_edges(torch.from_numpy(points), torch.from_numpy(offsets), 1.0)) == want
    assert edge_set(radius_edges_tree(points, offsets, 1.0)) == want


@pytest.mark.parametrize("seed", range(5))
def test_neighbours_1e6_apart_are_ranked_exactly(seed):
    """Regression: torch.cdist's default (matrix-product) mode, over 25 points, loses ~1e-6 to cancellation and took
    the wrong 20 of 39 neighbours at 0.02 + i 1e-6 (19 seeds of 20), and cut a radius between them wrongly."""
    rng = np.random.default_rng(seed)
    base = np.array([0.9, -0.6, 0.8, 0.75])
    direction = rng.normal(size=(39, 4))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    points = np.concatenate([[base], base + direction * (0.02 + np.arange(1, 40) * 1e-6)[:, None]]).astype(np.float32)
    offsets = np.array([0, 40])
    distance = np.linalg.norm(points[1:].astype(np.float64) - points[0], axis=1)
    nearest = set((np.argsort(distance)[:20] + 1).tolist())
    radius = float(np.sort(distance)[19:21].mean())
    for edges in (
        knn_edges(torch.from_numpy(points), torch.from_numpy(offsets), 20),
        knn_edges_tree(points, offsets, 20),
        radius_edges(torch.from_numpy(points), torch.from_numpy(offsets), radius),
        radius_edges_tree(points, offsets, radius),
    ):
        src, dst = np.asarray(edges)
        assert set(src[dst == 0].tolist()) == nearest


def test_duplicate_points_are_neighbours_and_never_their_own():
    """Each point twice: cKDTree may return the copy before the point itself; both ways keep the copy and k others."""
    points, offsets = random_events([6], seed=3)
    points = np.concatenate([points, points])
    offsets = np.array([0, 12])
    want = reference_knn(points, offsets, 3)  # k odd: the copy, then both copies of the next point (no tie at k)
    assert all((i + 6, i) in want and (i, i + 6) in want for i in range(6))
    assert edge_set(knn_edges(torch.from_numpy(points), torch.from_numpy(offsets), 3)) == want
    assert edge_set(knn_edges_tree(points, offsets, 3)) == want


def test_many_copies_of_a_point_give_k_neighbours_each():
    """8 copies of one point and 4 of another, k = 2: ties everywhere (which copies is arbitrary), but each node
    has exactly 2 neighbours, copies of itself, never itself (cKDTree's k + 1 answers may all be other copies)."""
    points = np.repeat(np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]], np.float32), [8, 4], axis=0)
    offsets = np.array([0, 12])
    for edges in (
        knn_edges(torch.from_numpy(points), torch.from_numpy(offsets), 2),
        knn_edges_tree(points, offsets, 2),
    ):
        src, dst = np.asarray(edges)
        assert_within_events(edges, offsets)
        np.testing.assert_array_equal(np.bincount(dst, minlength=12), 2)
        np.testing.assert_array_equal(points[src], points[dst])


# -- hit features --------------------------------------------------------------------------------------------------


def test_hit_features_by_hand():
    """eta' 0.75 -> eta = -2 + 0.75 * 4 = 1, eta_hat = 1 / 1.96; phi' 0.25 -> phi = -pi/2, (cos, sin) = (0, -1);
    r' of layer radius 10 (or near it) -> r_hat = 10 / 48; the padding is left out."""
    r_prime = (g.LAYER_RADII[10] - g.R_RANGE[0]) / (g.R_RANGE[1] - g.R_RANGE[0])
    spacing = (g.LAYER_RADII[11] - g.LAYER_RADII[10]) / (g.R_RANGE[1] - g.R_RANGE[0])
    features = torch.tensor(
        [
            [[0.3, 0.75, 0.25, r_prime], [9.0, 9.0, 9.0, 9.0]],  # padding
            [[0.0, 0.5, 0.5, 0.0], [1.0, 1.0, 1.0, r_prime + 0.4 * spacing]],  # eta 0, phi 0, r_hat 0; then 2, pi
        ],
        dtype=torch.float32,
    )
    mask = torch.tensor([[True, False], [True, True]])
    x = hit_features(features, mask)
    assert x.shape == (3, 5)
    assert x.dtype == torch.float32
    want = torch.tensor(
        [
            [0.3, 1 / 1.96, 0.0, -1.0, 10 / 48],
            [0.0, 0.0, 1.0, 0.0, 0.0],
            [1.0, 2 / 1.96, -1.0, 0.0, 10 / 48],
        ]
    )
    torch.testing.assert_close(x, want, atol=1e-6, rtol=0)


def test_r_hat_is_the_nearest_layer_index_over_48_for_every_layer():
    r_prime = (g.LAYER_RADII - g.R_RANGE[0]) / (g.R_RANGE[1] - g.R_RANGE[0])
    features = torch.zeros(1, 48, 4)
    features[0, :, 3] = torch.tensor(r_prime, dtype=torch.float32)
    x = hit_features(features, torch.ones(1, 48, dtype=torch.bool))
    torch.testing.assert_close(x[:, 4], torch.arange(48) / 48.0)


# -- connected components, truth of an edge -------------------------------------------------------------------------


def test_connected_components_with_min_size():
    # components {0, 1, 2} (a chain, one edge each way), {3, 4}, {5}, {6, 7, 8, 9} (a star, directed into 6)
    edges = np.array([[0, 2, 3, 7, 8, 9], [1, 1, 4, 6, 6, 6]])
    labels = connected_components(10, edges)
    groups = [[0, 1, 2], [3, 4], [5], [6, 7, 8, 9]]
    assert labels.dtype == np.int64
    assert [len(set(labels[grp])) for grp in groups] == [1, 1, 1, 1]
    assert len({labels[grp[0]] for grp in groups}) == 4
    kept = connected_components(10, torch.from_numpy(edges), min_size=3)
    assert np.all(kept[[3, 4, 5]] == -1)
    assert len(set(kept[[0, 1, 2]])) == 1
    assert len(set(kept[[6, 7, 8, 9]])) == 1
    assert kept[0] >= 0
    assert kept[6] >= 0
    assert kept[0] != kept[6]
    np.testing.assert_array_equal(connected_components(3, np.zeros((2, 0), np.int64)) >= 0, True)
    assert len(set(connected_components(3, np.zeros((2, 0), np.int64)))) == 3
    assert connected_components(0, np.zeros((2, 0), np.int64)).shape == (0,)


def test_same_track_truth_table():
    #                     0  1  2   3   4  5  6
    track = torch.tensor([4, 4, 5, -1, -1, 7, 7])
    noise = torch.tensor([0, 0, 0, 0, 0, 1, 0], dtype=torch.bool)
    cases = {
        (0, 1): True,  # one track
        (1, 0): True,
        (0, 2): False,  # two tracks
        (3, 4): False,  # both without a track: not a track
        (0, 3): False,
        (5, 6): False,  # one track, one end noise
        (6, 5): False,
        (6, 6): True,  # (a self pair, as the rule reads)
    }
    edges = torch.tensor(list(cases)).T
    assert same_track(track, noise, edges).tolist() == list(cases.values())


# -- flat nodes ------------------------------------------------------------------------------------------------------


def test_flat_nodes_and_to_padded_round_trip():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 9, generator=gen) < 0.6
    mask[1] = False  # an empty event
    nodes = flat_nodes(mask)
    counts = mask.sum(1)
    assert nodes.offsets.tolist() == [0, *torch.cumsum(counts, 0).tolist()]
    assert nodes.batch.tolist() == [b for b in range(4) for _ in range(int(counts[b]))]
    torch.testing.assert_close(nodes.index, torch.nonzero(mask.reshape(-1)).squeeze(1))
    values = torch.randn(4, 9, 3, generator=gen)
    padded = nodes.to_padded(values[mask], fill=-7.0)
    assert padded.shape == (4, 9, 3)
    torch.testing.assert_close(padded[mask], values[mask])
    assert torch.all(padded[~mask] == -7.0)
    labels = nodes.to_padded(torch.arange(int(mask.sum())), fill=-1)  # int values, 1-D
    assert labels.dtype == torch.int64
    assert torch.all(labels[~mask] == -1)
    assert labels[mask].tolist() == list(range(int(mask.sum())))
