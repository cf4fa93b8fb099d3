"""Kernels against slow obvious references: cylindrical transform, binning, raster order (hypothesis + edge cases)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fm4npp_data import geometry as g
from fm4npp_data.kernels.binning import boxes, boxes_reference, equal_count_edges, r_edges_from_modules
from fm4npp_data.kernels.cylindrical import cylindrical, minmax, zscore
from fm4npp_data.kernels.raster import raster_order, raster_order_reference

coords = hnp.arrays(np.float32, st.integers(0, 200), elements=st.floats(-120, 120, width=32))
grid = hnp.arrays(np.float32, st.integers(0, 200), elements=st.integers(-3, 3).map(float))


def test_cylindrical_by_hand():
    x = np.array([1.0, 0.0, -1.0, -1.0, 3.0, 0.0, 0.0], np.float32)
    y = np.array([0.0, 2.0, 0.0, -0.0, 4.0, 0.0, 0.0], np.float32)
    z = np.array([0.0, 2.0, 0.0, 1.0, -5.0, 1.0, 0.0], np.float32)
    r, phi, eta = cylindrical(x, y, z)
    np.testing.assert_allclose(r, [1, 2, 1, 1, 5, 0, 0])
    np.testing.assert_allclose(phi, [0, math.pi / 2, math.pi, math.pi, math.atan2(4, 3), 0, 0], rtol=1e-7)
    # eta = -ln tan(theta/2), theta = atan2(r, z): 45 degrees -> 0.8814
    np.testing.assert_allclose(eta[:5], [0, -math.log(math.tan(math.pi / 8)), 0, 0.881373587, -0.881373587], rtol=1e-6)
    assert eta[5] == np.inf
    assert eta[6] == 0.0
    assert r.dtype == phi.dtype == eta.dtype == np.float32
    # just above -pi in float64, but -pi once rounded to float32: stays on the (-pi, pi] side
    assert cylindrical(np.float32([-8.0]), np.float32([-2.418092e-07]), np.float32([0.0]))[1][0] == np.float32(math.pi)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_cylindrical_matches_the_textbook_formula(data):
    n = data.draw(st.integers(0, 300))
    x, y = (data.draw(hnp.arrays(np.float32, n, elements=st.floats(-80, 80, width=32))) for _ in range(2))
    z = data.draw(hnp.arrays(np.float32, n, elements=st.floats(-105, 105, width=32)))
    r, phi, eta = cylindrical(x, y, z)
    r64 = np.hypot(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(r, r64.astype(np.float32), rtol=1e-6)
    pi32 = np.float32(math.pi)
    assert ((phi > -pi32) & (phi <= pi32)).all()
    ok = r64 > 1e-3
    theta = np.arctan2(r64[ok], z[ok].astype(np.float64))
    np.testing.assert_allclose(eta[ok], -np.log(np.tan(theta / 2)), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.cos(phi[ok]) * r[ok], x[ok], atol=1e-4)


def test_normalization():
    np.testing.assert_allclose(
        minmax(np.array([31.372, 75.385, 53.3785], np.float32), *g.R_RANGE), [0, 1, 0.5], atol=1e-6
    )
    np.testing.assert_allclose(zscore(np.array([g.ENERGY_MEAN + g.ENERGY_STD]), g.ENERGY_MEAN, g.ENERGY_STD), [1.0])
    with pytest.raises(ValueError, match=r"empty range \[1.0, 1.0\]"):
        minmax(np.zeros(2), 1.0, 1.0)


def test_r_edges_follow_the_tpc_modules():
    edges = r_edges_from_modules(g.MODULE_BOUNDARIES)
    assert len(edges) == 7
    np.testing.assert_allclose(edges[[0, 6]], [31.105, 75.911])
    np.testing.assert_allclose(edges[[1, 3, 5]], [(31.105 + 40.249) / 2, (41.153 + 57.475) / 2, (58.367 + 75.911) / 2])
    np.testing.assert_allclose(edges[[2, 4]], [(40.249 + 41.153) / 2, (57.475 + 58.367) / 2])
    # 8 of each module's 16 layers on either side of its split
    counts = np.bincount(np.searchsorted(edges, g.LAYER_RADII) - 1, minlength=6)
    assert counts.tolist() == [8] * 6


def test_equal_count_edges_balance_the_bins():
    rng = np.random.default_rng(0)
    values = rng.standard_cauchy(80_000)
    edges = equal_count_edges(values, 8)
    counts = np.bincount(np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 7), minlength=8)
    assert counts.min() > 0.99 * 10_000
    assert counts.max() < 1.01 * 10_000
    assert edges[0] == values.min()
    assert edges[-1] == values.max()


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_boxes_match_the_reference(data):
    n = data.draw(st.integers(0, 300))
    r = data.draw(hnp.arrays(np.float32, n, elements=st.floats(20, 90, width=32)))
    phi = data.draw(hnp.arrays(np.float32, n, elements=st.floats(-3.140625, 3.140625, width=32)))
    eta = data.draw(hnp.arrays(np.float32, n, elements=st.floats(-3, 3, width=32)))
    r_edges = r_edges_from_modules(g.MODULE_BOUNDARIES)
    phi_edges = np.linspace(-np.pi, np.pi, 9)
    eta_edges = np.sort(
        np.concatenate([[-1.1, 1.1], data.draw(st.lists(st.floats(-1, 1), min_size=7, max_size=7, unique=True))])
    )
    # edge values themselves go to the upper bin; values outside go to the end bins
    r = np.concatenate([r, r_edges.astype(np.float32)])
    phi = np.concatenate([phi, np.zeros(7, np.float32)])
    eta = np.concatenate([eta, eta_edges[:7].astype(np.float32)])
    got = boxes(r, phi, eta, r_edges, phi_edges, eta_edges)
    np.testing.assert_array_equal(got, boxes_reference(r, phi, eta, r_edges, phi_edges, eta_edges))
    assert got.min(initial=0) >= 0
    assert got.max(initial=0) < 384


def _events(data, values):
    sizes = data.draw(st.lists(st.integers(0, 60), min_size=1, max_size=6))
    n = sum(sizes)
    arrays = [data.draw(hnp.arrays(np.float32, n, elements=values)) for _ in range(3)]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), arrays


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(st.data(), st.sampled_from([st.integers(-2, 2).map(float), st.floats(-5, 5, width=32)]))
def test_hierarchical_order_equals_lexsort(data, values):
    offsets, (r, phi, eta) = _events(data, values)
    box = data.draw(hnp.arrays(np.int16, r.shape[0], elements=st.integers(0, 5)))
    order = raster_order(box, r, phi, eta, offsets, n_boxes=6)
    np.testing.assert_array_equal(order, raster_order_reference(box, r, phi, eta, offsets))


@pytest.mark.slow
@settings(max_examples=50, deadline=None)
@given(st.data())
def test_ablation_orders_are_permutations_and_radial_is_a_global_raster(data):
    offsets, (r, phi, eta) = _events(data, st.integers(-3, 3).map(float))
    radial = raster_order(None, r, phi, eta, offsets, order="radial")
    np.testing.assert_array_equal(radial, raster_order_reference(np.zeros(r.shape[0], np.int16), r, phi, eta, offsets))
    z = raster_order(None, r, phi, eta, offsets, order="zorder", x=r, y=phi, z=eta)
    ident = raster_order(None, r, phi, eta, offsets, order="input")
    for e in range(len(offsets) - 1):
        n = offsets[e + 1] - offsets[e]
        assert sorted(z[offsets[e] : offsets[e + 1]]) == list(range(n))
        assert ident[offsets[e] : offsets[e + 1]].tolist() == list(range(n))


def test_raster_rejects_bad_offsets():
    with pytest.raises(ValueError, match="offsets"):
        raster_order(np.zeros(3, np.int16), np.zeros(3), np.zeros(3), np.zeros(3), np.array([0, 2]))
