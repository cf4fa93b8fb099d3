"""The helix transport against hand-worked trajectories in the uniform 1.4 T field."""

import numpy as np
import pytest

from fm4npp_data import geometry as g
from fm4npp_data.simulation.transport import detector, transport

PION = 0.13957


def test_detector_cylinders_sorted_with_the_gas_between_the_field_cages():
    det = detector()
    assert np.all(np.diff(det.r) > 0)
    assert int(det.tpc.sum()) == g.N_LAYERS == 48
    # the gas gaps lie between the TPC field cages (20.7 and 77 cm) and hold every pad row; the calorimeter's
    # face is the last cylinder
    assert det.r[det.first_gas - 1] == 20.7
    assert det.r[det.last_gas] == 77.0
    assert np.all(det.tpc[det.first_gas : det.last_gas] == 1)
    assert np.all(det.tpc[: det.first_gas] == 0)
    assert np.all(det.tpc[det.last_gas :] == 0)
    assert det.r[-1] == g.EMCAL_INNER_RADIUS
    assert det.x0[-1] == 0.0
    assert list(det.layer[det.tpc == 1]) == list(range(g.FIRST_TPC_LAYER, g.FIRST_TPC_LAYER + 48))


def _one_particle(pdg, charge, mom, surfaces, seed=2):
    return transport(
        np.array([0, 1]),
        np.array([pdg]),
        np.array([charge]),
        np.array([PION]),
        np.array([mom], float),
        np.zeros((1, 4)),
        np.array([np.inf]),
        surfaces,
        seed,
        10_000,
        10_000,
    )


def test_stiff_positive_track_follows_the_clockwise_helix_through_all_48_rows(rows_only):
    pt, pz = 1.0, 0.4
    hit_f, hit_i, _new_f, _new_i, overflow = _one_particle(211, 1.0, [pt, 0.0, pz], rows_only)
    assert not overflow
    own = hit_i[:, 1] == 0
    layers = hit_i[own, 2]
    # one cluster per row; about 10 % go to knock-ons (those above the row's most probable loss own the cluster)
    assert len(np.unique(layers)) == layers.shape[0] >= 36
    assert set(layers) <= set(range(7, 55))
    radius = g.curvature_radius(pt)
    true = hit_f[own, 3:6]
    # positive charge turns clockwise seen from +z: centre at (0, -R)
    assert np.hypot(true[:, 0], true[:, 1] + radius) == pytest.approx(radius, abs=0.1)
    assert np.all(true[:, 1] < 0)
    # z grows linearly with the transverse arc length: z = pz / pt * s_T
    arc = radius * np.arcsin(np.clip(true[:, 0] / radius, -1, 1))
    assert true[:, 2] == pytest.approx(pz / pt * arc, abs=0.15)  # gas scattering bends it slightly
    # measured positions are smeared by the resolution, no more
    meas = hit_f[own, 0:3]
    assert np.std(meas[:, 2] - true[:, 2]) == pytest.approx(g.TPC_SIGMA_Z, rel=0.4)


def test_negative_track_turns_the_other_way(rows_only):
    hit_f, hit_i, *_ = _one_particle(-211, -1.0, [1.0, 0.0, 0.0], rows_only)
    assert np.all(hit_f[hit_i[:, 1] == 0, 4] > 0)


def test_track_below_65_mev_pt_from_the_beam_line_never_reaches_the_tpc(rows_only):
    hit_f, *_ = _one_particle(211, 1.0, [0.060, 0.0, 0.01], rows_only)
    assert hit_f.shape[0] == 0


def test_low_pt_looper_turns_back_and_crosses_inner_rows_twice(rows_only):
    pt = 0.10  # R = 23.8 cm: turns at r = 47.7 cm
    hit_f, hit_i, *_ = _one_particle(211, 1.0, [pt, 0.0, 0.03], rows_only)
    own = hit_i[:, 1] == 0
    r = np.hypot(hit_f[own, 3], hit_f[own, 4])
    assert r.max() <= 2 * g.curvature_radius(pt) + 0.5
    first_row = hit_i[own, 2] == g.FIRST_TPC_LAYER
    assert first_row.sum() >= 2


def test_same_seed_same_output_and_other_seed_differs(rows_only):
    surfaces = rows_only
    a = _one_particle(211, 1.0, [0.3, 0.1, 0.2], surfaces, seed=5)
    b = _one_particle(211, 1.0, [0.3, 0.1, 0.2], surfaces, seed=5)
    c = _one_particle(211, 1.0, [0.3, 0.1, 0.2], surfaces, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])
