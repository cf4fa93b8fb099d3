import math

import numpy as np
import pytest

from fm4npp_data import geometry as g


def test_layers_are_48_increasing_radii_in_three_modules_of_16():
    assert g.LAYER_RADII.shape == (48,)
    assert np.all(np.diff(g.LAYER_RADII) > 0)
    for module, (r_min, r_max) in enumerate(g.MODULE_BOUNDARIES):
        radii = g.LAYER_RADII[module * 16 : (module + 1) * 16]
        assert np.all((radii > r_min) & (radii < r_max)), module
    assert g.LAST_TPC_LAYER == 54
    assert list(g.layer_module(np.array([0, 15, 16, 31, 32, 47]))) == [0, 0, 1, 1, 2, 2]


def test_release_normalization_range_is_first_layer_and_last_layer_over_cos_pi_144():
    assert g.R_RANGE[0] == g.LAYER_RADII[0]
    assert g.R_RANGE[1] == pytest.approx(g.LAYER_RADII[-1] / math.cos(math.pi / 144), abs=2e-3)


def test_curvature_radius_matches_238_cm_per_gev_at_1p4_tesla():
    assert g.curvature_radius(1.0) == pytest.approx(238.3, rel=1e-3)
    # a track from the beam line reaches the first pad row (31.1 cm) above p_T = 65.3 MeV/c
    assert 2 * g.curvature_radius(0.0653) == pytest.approx(31.1, rel=5e-3)


def test_material_in_front_of_tpc_is_about_five_percent_of_a_radiation_length():
    inside = [m for m in g.MATERIAL if m[1] < g.LAYER_RADII[0]]
    total = sum(x0 for _name, _r, _hz, x0, _areal, _layer in inside)
    assert 0.04 < total < 0.06
    radii = [r for _name, r, *_ in g.MATERIAL]
    assert radii == sorted(radii)
    # all of it in front of the first pad row but the outer field cage, which bounds the gas outside the last one
    outside = [m for m in g.MATERIAL if m[1] > g.LAYER_RADII[0]]
    assert [m[0] for m in outside] == [g.OUTER_FIELD_CAGE]
    assert g.LAYER_RADII[-1] < g.GAS_R_MAX < outside[0][1] < g.EMCAL_INNER_RADIUS
