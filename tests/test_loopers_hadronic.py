"""What makes the density of the simulated events, against analytic expectations: loopers (number of turns, range),
hadronic interactions (interaction length), the outer field cage that sends loopers back, conversions and Compton
scatters in the gas and the clusterizer's window that splits grazing crossings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fm4npp_data import geometry as g
from fm4npp_data.simulation.hadronic import interaction_probability, nuclear_length, secondaries
from fm4npp_data.simulation.physics import bethe_dedx, klein_nishina
from fm4npp_data.simulation.transport import (
    PROCESS_ABSORBED_DELTA,
    PROCESS_COMPTON,
    PROCESS_CONVERSION,
    PROCESS_DECAY,
    PROCESS_HADRONIC,
    TRACK,
    _gas_update,
    detector,
    transport,
)

M_E, M_PI, M_P = g.ELECTRON_MASS, g.PION_MASS, g.PROTON_MASS


def _run(pdg, charge, mass, mom, vtx, det=None, seed=3):
    """Transport particles each in its own event."""
    mom = np.atleast_2d(np.asarray(mom, float))
    n = mom.shape[0]
    vtx = np.zeros((n, 4)) + np.append(np.asarray(vtx, float), 0.0)
    return transport(
        np.arange(n + 1),
        np.full(n, pdg),
        np.full(n, float(charge)),
        np.full(n, mass),
        mom,
        vtx,
        np.full(n, np.inf),
        det if det is not None else detector(),
        seed,
        2_000_000,
        200_000,
    )


def test_nuclear_interaction_lengths_follow_the_a_one_third_rule_and_the_pdg_table():
    # PDG "Atomic and nuclear properties": lambda_I of Be 77.8, C 85.8, Si 108.4, Ar 119.7 g/cm2
    for a, pdg_value in ((9.012, 77.8), (12.01, 85.8), (28.09, 108.4), (39.95, 119.7)):
        assert nuclear_length(a) == pytest.approx(pdg_value, rel=0.08)
    assert interaction_probability(1.0, 100.0) == pytest.approx(1 - math.exp(-0.01))
    # the gas: mass-weighted 1/lambda over Ar, CF4 (C + 4 F) and iC4H10 (4 C + 10 H)
    lam = {z: nuclear_length(a) for z, a in (("Ar", 39.95), ("C", 12.01), ("F", 19.0), ("H", 1.008))}
    cf4 = 1 / (12.01 / 88.0 / lam["C"] + 76.0 / 88.0 / lam["F"])
    c4h10 = 1 / (48.04 / 58.12 / lam["C"] + 10.08 / 58.12 / lam["H"])
    gas = 1 / (0.594 / lam["Ar"] + 0.349 / cf4 + 0.058 / c4h10)
    assert pytest.approx(gas, rel=0.01) == g.GAS_NUCLEAR_LENGTH


def test_the_fraction_of_pions_that_interact_is_one_minus_exp_of_the_material_over_lambda():
    n = 20_000
    phi = np.random.default_rng(1).uniform(0, 2 * np.pi, n)
    mom = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)  # 1 GeV/c at eta = 0
    _hf, _hi, _nf, new_i, overflow = _run(211, 1.0, M_PI, mom, [0.0, 0.0, 0.0])
    assert not overflow
    interacted = np.unique(new_i[new_i[:, 3] == PROCESS_HADRONIC, 2]).shape[0] / n
    depth = sum(m[4] / nuclear_length(a) for m, a in zip(g.MATERIAL, g.MATERIAL_MASS_NUMBER, strict=True))
    depth += (77.0 - 20.7) * g.GAS_DENSITY / g.GAS_NUCLEAR_LENGTH
    expected = 1 - math.exp(-depth)  # about 1.7 % at normal incidence
    assert interacted == pytest.approx(expected, abs=4 * math.sqrt(expected / n))


def test_secondaries_conserve_energy_and_grow_in_number_with_it():
    counts = {}
    for kinetic in (0.1, 2.0):
        n_all, spent = [], []
        for _ in range(3000):
            n, pdg, mom = secondaries(kinetic, 0.3, 0.0, 0.2)
            mass = np.where(pdg[:n] == 2212, M_P, M_PI)
            p = np.linalg.norm(mom[:n], axis=1)
            spent.append((np.sqrt(p * p + mass * mass) - mass).sum())
            n_all.append(n)
        assert max(spent) <= kinetic * (1 + 1e-9)
        counts[kinetic] = np.mean(n_all)
    assert counts[2.0] > counts[0.1] + 1.5  # 1.2 pions per GeV


def test_a_gas_looper_turns_until_it_leaves_the_drift_volume(rows_only):
    # a 50 MeV/c electron born in the gas, pitch pz/pT = 0.3: R = 11.9 cm, z advances 2 pi R 0.3 = 22.5 cm a turn,
    # so it makes 102.3 / 22.5 = 4.5 turns before it leaves |z| < 102.3 cm (gas scattering changes the pitch by a
    # few % a turn), crossing each row it reaches twice a turn
    pt, pz = 0.050, 0.015
    hit_f, hit_i, *_ = _run(11, -1.0, M_E, [0.0, pt, pz], [50.0, 0.0, 0.0], det=rows_only)
    radius = g.curvature_radius(pt)
    turns = g.DRIFT_LENGTH / (2 * np.pi * radius * pz / pt)
    # an electron turns counter-clockwise seen from +z: moving along +y at (50, 0) its circle spans r = 26..50; the
    # row nearest its centre's distance is crossed steeply
    layer = g.FIRST_TPC_LAYER + int(np.argmin(np.abs(g.LAYER_RADII - (50.0 - radius))))
    on_row = (hit_i[:, 2] == layer) & (hit_i[:, 1] >= 0)
    assert on_row.sum() == pytest.approx(2 * turns, rel=0.25)
    assert hit_f[on_row, 5].max() == pytest.approx(g.DRIFT_LENGTH, abs=25.0)


def test_a_slow_proton_stops_after_its_range(rows_only):
    # a 5 MeV proton (p = 97 MeV/c) across the rows: its clusters end after the CSDA range, the integral of
    # dE / (dE/dx) with the Bethe formula of the gas
    kinetic = 0.005
    p = math.sqrt(kinetic**2 + 2 * kinetic * M_P)
    energies = np.linspace(g.STOP_KINETIC_ENERGY, kinetic, 4000)  # below 1.2 MeV dE/dx is held (BETHE_MIN_BETA_GAMMA)
    dedx = np.array(
        [
            bethe_dedx(math.sqrt(t * t + 2 * t * M_P) / M_P, M_P, g.GAS_Z_OVER_A, g.GAS_I, g.GAS_DENSITY)
            for t in energies
        ]
    )
    expected_range = np.trapezoid(1.0 / dedx, energies)  # cm, about 30 cm
    hit_f, hit_i, *_ = _run(2212, 1.0, M_P, [p, 0.0, 0.0], [31.0, 0.0, 5.0], det=rows_only)
    own = hit_i[:, 1] == 0
    xyz = hit_f[own, 3:6]
    path = np.linalg.norm(np.diff(xyz, axis=0), axis=1).sum() + 0.4  # from the start point to the first row
    assert 15.0 < expected_range < 60.0
    assert path == pytest.approx(expected_range, rel=0.15)


def _family(hit_i, new_i, n0=1):
    """Hits of particle 0 and of the knock-on electrons absorbed in its clusters (which own some of them)."""
    knock_ons = n0 + np.flatnonzero((new_i[:, 2] == 0) & (new_i[:, 3] == PROCESS_ABSORBED_DELTA))
    return (hit_i[:, 1] == 0) | np.isin(hit_i[:, 1], knock_ons)


def test_the_outer_field_cage_sends_a_looper_back_through_the_rows():
    # pT = 175 MeV/c from the beam line: the circle reaches 2R = 83 cm, beyond the outer field cage (77 cm) but short
    # of the calorimeter (90 cm), so it turns back and crosses the outer rows again; at 250 MeV/c (2R = 119 cm) it is
    # absorbed in the calorimeter (a mu+, whose decay length, about 1 km here, does not cut the looper short)
    outer_layer = g.LAST_TPC_LAYER
    hits = {}
    for pt in (0.175, 0.25):
        _hit_f, hit_i, _new_f, new_i, _ = _run(-13, 1.0, g.MUON_MASS, [pt, 0.0, 0.0], [0.0, 0.0, 5.0], seed=4)
        hits[pt] = int((_family(hit_i, new_i) & (hit_i[:, 2] == outer_layer)).sum())
    assert hits[0.25] == 1
    assert hits[0.175] >= 2


def test_grazing_crossings_split_into_clusters_of_the_window_size():
    # pT = 157 MeV/c from the beam line turns near 2R = 74.8 cm: each turn crosses the first row twice, steeply (one
    # cluster each), and the rows near its turning point at a grazing angle, a streak longer than the window, which
    # splits into several clusters (the turning point moves in as the looper loses energy turn by turn); a mu+, whose
    # decay length (about 1 km) does not cut the looper short, with pz = 20 MeV/c so that it leaves the drift volume
    # after a few turns
    _hit_f, hit_i, _new_f, new_i, _ = _run(-13, 1.0, g.MUON_MASS, [0.157, 0.0, 0.02], [0.0, 0.0, 5.0], seed=6)
    per_layer = np.bincount(hit_i[_family(hit_i, new_i), 2], minlength=g.LAST_TPC_LAYER + 1)
    turns = per_layer[g.FIRST_TPC_LAYER] / 2
    assert turns >= 2
    assert per_layer.max() >= 2 * per_layer[g.FIRST_TPC_LAYER]


def test_photons_convert_in_the_gas_too():
    # 1 GeV photons at eta = 0 through the gas alone (no material): conversion probability 7/9 x L / X0 x about 0.9
    n = 100_000
    phi = np.random.default_rng(2).uniform(0, 2 * np.pi, n)
    mom = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
    det = detector()
    no_material = det._replace(x0=np.zeros_like(det.x0), areal=np.zeros_like(det.areal))
    *_, new_i, _ = _run(22, 0.0, 0.0, mom, [0.0, 0.0, 0.0], det=no_material)
    converted = np.unique(new_i[(new_i[:, 3] == PROCESS_CONVERSION) & (new_i[:, 2] < n), 2]).shape[0] / n
    length = 77.0 - 20.7
    expected = 7.0 / 9.0 * length / g.GAS_X0 * 0.9
    assert converted == pytest.approx(expected, rel=0.25)


def test_photons_compton_scatter_in_the_gas_at_the_klein_nishina_rate():
    # 5 MeV photons at eta = 0 through the gas alone: P = 1 - exp(-n_e L sigma_KN); the electron and the scattered
    # photon share the photon's energy and momentum
    n, energy = 100_000, 5e-3
    phi = np.random.default_rng(4).uniform(0, 2 * np.pi, n)
    mom = energy * np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
    det = detector()
    no_material = det._replace(x0=np.zeros_like(det.x0), areal=np.zeros_like(det.areal))
    _hf, _hi, new_f, new_i, _ = _run(22, 0.0, 0.0, mom, [0.0, 0.0, 0.0], det=no_material)
    first = (new_i[:, 3] == PROCESS_COMPTON) & (new_i[:, 2] < n)  # made by the original photons
    scattered = np.unique(new_i[first, 2]).shape[0]
    electrons_per_cm2 = g.GAS_DENSITY * g.AVOGADRO * g.GAS_Z_OVER_A * (77.0 - 20.7)
    expected = n * (1.0 - math.exp(-electrons_per_cm2 * klein_nishina(energy)))
    assert abs(scattered - expected) < 4.0 * math.sqrt(expected)
    radius = np.hypot(new_f[first, 3], new_f[first, 4])
    assert radius.min() > 20.7
    assert radius.max() < 77.0
    # one scatter at a time: when both products were kept, their energies and momenta add up to the photon's
    parents, counts = np.unique(new_i[first, 2], return_counts=True)
    for parent in parents[counts == 2][:50]:
        rows = np.flatnonzero(first & (new_i[:, 2] == parent))
        pdg = new_i[rows, 1]
        p = new_f[rows, :3]
        e_total = np.linalg.norm(p[pdg == 22][0]) + math.hypot(np.linalg.norm(p[pdg == 11][0]), M_E) - M_E
        assert e_total == pytest.approx(energy, rel=1e-9)
        np.testing.assert_allclose(p.sum(axis=0), mom[parent], atol=1e-12)


def test_charged_pions_decay_in_flight_at_their_lifetime_and_the_muon_goes_on():
    # 300 MeV/c pions at eta = 0 without material: the fraction that decays before the calorimeter face (90 cm,
    # reached after an arc of 2 R asin(90 / 2R)) is 1 - exp(-arc / (beta gamma c tau)); each gives a muon there
    n, p = 20_000, 0.3
    phi = np.random.default_rng(5).uniform(0, 2 * np.pi, n)
    mom = p * np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
    det = detector()
    no_material = det._replace(
        x0=np.zeros_like(det.x0), areal=np.zeros_like(det.areal), nuclear=np.full_like(det.nuclear, 1e30)
    )
    _hf, hit_i, new_f, new_i, _ = _run(211, 1.0, M_PI, mom, [0.0, 0.0, 0.0], det=no_material)
    decayed = (new_i[:, 3] == PROCESS_DECAY) & (new_i[:, 2] < n)  # (not the muons' own decays)
    assert set(new_i[decayed, 1]) == {-13}  # pi+ -> mu+ nu
    assert np.unique(new_i[decayed, 2]).shape[0] == decayed.sum()  # one muon per decay
    radius = 100.0 * p / (0.299792458 * g.B_FIELD)
    arc = 2.0 * radius * math.asin(g.EMCAL_INNER_RADIUS / (2.0 * radius))
    expected = n * (1.0 - math.exp(-arc / (p / M_PI * g.PION_CTAU)))
    assert abs(decayed.sum() - expected) < 4.0 * math.sqrt(expected)
    # the muons born inside the outer rows' radius leave clusters of their own
    born = np.hypot(new_f[decayed, 3], new_f[decayed, 4])
    muons = np.flatnonzero(decayed)[born < 60.0] + n
    has_hits = np.isin(muons, hit_i[hit_i[:, 2] >= g.FIRST_TPC_LAYER, 1])
    assert has_hits.mean() > 0.9


@pytest.mark.parametrize(
    ("pdg", "charge", "mass", "product"),
    [
        (-13, 1.0, g.MUON_MASS, -11),  # mu+ -> e+ nu nu-bar
        (13, -1.0, g.MUON_MASS, 11),  # mu- -> e- nu-bar nu, or captured
        (211, 1.0, M_PI, -13),  # pi+ -> mu+ nu
        (-211, -1.0, M_PI, 13),  # pi- -> mu- nu-bar in flight; captured once stopped
    ],
)
def test_particles_that_stop_in_the_gas_decay_at_rest_or_are_captured(pdg, charge, mass, product):
    # 30 MeV/c at r = 50 cm with pz = 0: a 7 cm circle inside the gas, ranging out after tens of cm
    n = 2000
    phi = np.random.default_rng(6).uniform(0, 2 * np.pi, n)
    mom = 0.03 * np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
    _hf, _hi, new_f, new_i, _ = _run(pdg, charge, mass, mom, [50.0, 0.0, 10.0])
    first = (new_i[:, 3] == PROCESS_DECAY) & (new_i[:, 2] < n)
    assert set(new_i[first, 1]) == {product}
    assert np.unique(new_i[first, 2]).shape[0] == first.sum()  # one visible product per decay
    decays = first.sum()
    p = np.linalg.norm(new_f[first, :3], axis=1)
    p_star = (M_PI**2 - g.MUON_MASS**2) / (2.0 * M_PI)  # the muon of a pion decay at rest: 29.79 MeV/c
    if pdg == -211:  # only decays in flight: none at rest, where the muon would have 29.79 MeV/c
        assert 0 < decays < 0.5 * n
        assert np.all(np.abs(p - p_star) > 1e-9)
        return
    if pdg == 13:  # a stopped mu- decays with probability MUON_MINUS_DECAY_FRACTION
        f = g.MUON_MINUS_DECAY_FRACTION
        assert abs(decays - n * f) < 4.0 * math.sqrt(n * f * (1.0 - f))
    else:
        assert decays >= 0.99 * n
    # the products start in the gas, between the field cages, where their parent stopped
    radius = np.hypot(new_f[first, 3], new_f[first, 4])
    assert radius.min() > 20.7
    assert radius.max() < 77.0
    assert np.median(np.abs(radius - 50.0)) < 2 * 7.2  # mostly within the first circle's diameter of the start
    if pdg == 211:  # a pi+ at rest gives a mu+ of 29.79 MeV/c, which stops in turn and gives an e+
        at_rest = n + np.flatnonzero(first)[np.abs(p - p_star) < 1e-9]
        assert at_rest.shape[0] > 0.5 * n  # the others decayed in flight (a decay length of 1.7 m at 30 MeV/c)
        positrons = (new_i[:, 3] == PROCESS_DECAY) & (new_i[:, 1] == -11)
        assert np.isin(at_rest, new_i[positrons, 2]).mean() > 0.98


@pytest.mark.parametrize(("pdg", "mass"), [(11, M_E), (-11, M_E), (211, M_PI)])
def test_electrons_also_radiate_in_the_gas(pdg, mass):
    # 1 GeV/c over 10 cm of gas: e+- lose E (1 - exp(-x/X0)) = 0.90 MeV to bremsstrahlung on top of about 0.05 MeV of
    # ionization; a pion only the ionization
    tracks = np.zeros(1, TRACK).view(np.recarray)
    trk = tracks[0]
    p, path = 1.0, 10.0
    trk.pdg, trk.mass, trk.pz = pdg, mass, p
    trk.p, trk.e = p, math.hypot(p, mass)
    trk.dedx = bethe_dedx(p / mass, mass, g.GAS_Z_OVER_A, g.GAS_I, g.GAS_DENSITY)
    trk.gas_path, trk.need_helix = path, True  # the path is applied now
    de = _gas_update(trk)
    ionization = trk.dedx * path
    assert 0.01e-3 < ionization < 0.06e-3
    radiated = trk.e * (1.0 - math.exp(-path / g.GAS_X0)) if abs(pdg) == 11 else 0.0
    assert de == pytest.approx(ionization + radiated, rel=0.001)
    assert trk.gas_path == 0.0
