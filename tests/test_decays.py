"""Decays of charged pions, kaons and muons (fm4npp_data/simulation/decays.py) against kinematics worked out
independently here: the pi -> mu nu momentum, four-momentum balance in every K channel, the branching fractions,
charge conservation, the phase-space (flat Dalitz) distribution of the three-body decays, the isotropy of the
two-body decays and the Michel spectrum of muon decays."""

from __future__ import annotations

import math
from collections import Counter

import numba as nb
import numpy as np
import pytest

from fm4npp_data import geometry as g
from fm4npp_data.simulation.decays import (
    MAX_PRODUCTS,
    boost,
    decay,
    decays_in_flight,
    proper_decay_length,
    three_body_rest,
)

M_PI, M_K, M_MU, M_E, M_PI0 = g.PION_MASS, g.KAON_MASS, g.MUON_MASS, g.ELECTRON_MASS, g.PI0_MASS
MASS = {211: M_PI, 13: M_MU, 11: M_E, 22: 0.0}
CHARGE = {211: 1, -211: -1, 13: -1, -13: 1, 11: -1, -11: 1, 22: 0}
#: the K+ channels in the order of KAON_BRANCHING, as the sorted PDG codes of their visible products
K_PLUS_CHANNELS = (
    (-13,),  # mu+ nu
    (22, 22, 211),  # pi+ pi0
    (-211, 211, 211),  # pi+ pi+ pi-
    (-11, 22, 22),  # pi0 e+ nu
    (-13, 22, 22),  # pi0 mu+ nu
    (22, 22, 22, 22, 211),  # pi+ pi0 pi0
)


@nb.njit
def _decays(pdg, mom, seed):
    """Decay a parent of code pdg at each momentum row; the products' counts, codes and momenta."""
    np.random.seed(seed)  # noqa: NPY002
    n = mom.shape[0]
    counts = np.zeros(n, np.int64)
    codes = np.zeros((n, MAX_PRODUCTS), np.int64)
    out = np.zeros((n, MAX_PRODUCTS, 3))
    for i in range(n):
        counts[i], codes[i], out[i] = decay(pdg, mom[i, 0], mom[i, 1], mom[i, 2])
    return counts, codes, out


@nb.njit
def _rest_three_body(n, m, m1, m2, m3, seed):
    np.random.seed(seed)  # noqa: NPY002
    out = np.empty((n, 3, 4))
    for i in range(n):
        out[i] = three_body_rest(m, m1, m2, m3)
    return out


def _parents(n, p_max, seed):
    """n momenta isotropic in direction, uniform in magnitude up to p_max, the first exactly at rest."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    mom = u * rng.uniform(0.0, p_max, size=(n, 1))
    mom[0] = 0.0
    return mom


def _four(codes, mom):
    """Four-momenta (E, p) of the products, E from the PDG mass of each code."""
    mass = np.array([MASS[abs(int(c))] for c in codes])
    return np.column_stack([np.sqrt((mom**2).sum(axis=1) + mass**2), mom])


def _lab_to_rest(four, parent_mom, parent_mass):
    """Slow reference: the Lorentz-boost matrix into the parent's rest frame applied to lab four-vectors."""
    e = math.sqrt(parent_mom @ parent_mom + parent_mass**2)
    gamma = e / parent_mass
    beta = parent_mom / e
    b2 = beta @ beta
    lam = np.eye(4)
    lam[0, 0] = gamma
    lam[0, 1:] = lam[1:, 0] = -gamma * beta
    if b2 > 0:
        lam[1:, 1:] += (gamma - 1.0) * np.outer(beta, beta) / b2
    return four @ lam.T


def _mass2(four):
    return four[..., 0] ** 2 - (four[..., 1:] ** 2).sum(axis=-1)


def test_pions_kaons_and_muons_decay_in_flight_with_their_pdg_proper_lengths():
    for pdg in (211, -211, 321, -321, 13, -13):
        assert decays_in_flight(pdg)
    for pdg in (11, 22, 111, 130, 2212, 3222):
        assert not decays_in_flight(pdg)
        assert proper_decay_length(pdg) == 0.0
        assert decay(pdg, 0.1, 0.2, 0.3)[0] == 0
    assert proper_decay_length(-211) == pytest.approx(780.45)  # c tau of pi+- 7.8045 m, PDG
    assert proper_decay_length(321) == pytest.approx(1.2380e-8 * 2.99792458e10, rel=1e-4)  # tau 1.2380e-8 s, PDG
    assert proper_decay_length(13) == pytest.approx(65_863.8)  # c tau of mu+- 658.638 m, PDG


def test_muons_decay_to_an_electron_of_the_michel_spectrum():
    # at rest: x = E / E_max with E_max = (m_mu^2 + m_e^2) / 2 m_mu = 52.83 MeV follows 2 x^2 (3 - 2 x), mean 0.7;
    # mu- gives e-, mu+ gives e+
    e_max = (g.MUON_MASS**2 + g.ELECTRON_MASS**2) / (2.0 * g.MUON_MASS)
    x = []
    for pdg, electron in ((13, 11), (-13, -11)):
        counts, codes, mom = _decays(pdg, np.zeros((20_000, 3)), 8)
        assert (counts == 1).all()
        assert (codes[:, 0] == electron).all()
        x.append(np.hypot(np.linalg.norm(mom[:, 0], axis=1), g.ELECTRON_MASS) / e_max)
    x = np.concatenate(x)
    assert x.max() <= 1.0 + 1e-12
    assert x.mean() == pytest.approx(0.7, abs=0.005)
    edges = np.linspace(0.0, 1.0, 21)
    expected = np.diff(2.0 * edges**3 - edges**4) * x.size  # the integral of 2 x^2 (3 - 2 x)
    observed = np.histogram(x, edges)[0]
    keep = expected > 20
    assert np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep]) < 50.0
    # in flight: the electron's energy is boosted, at most gamma (1 + beta) E_max
    p = 0.2
    energy = math.hypot(p, g.MUON_MASS)
    _counts, _codes, mom = _decays(13, np.tile([0.0, 0.0, p], (20_000, 1)), 9)
    e = np.hypot(np.linalg.norm(mom[:, 0], axis=1), g.ELECTRON_MASS)
    assert e.max() <= (energy + p) / g.MUON_MASS * e_max + 1e-9
    assert e.mean() == pytest.approx(0.7 * e_max * energy / g.MUON_MASS, rel=0.03)  # <E> = gamma <E*> (isotropic)


def test_boost_matches_the_lorentz_matrix_and_inverts():
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = rng.normal(size=3) * rng.uniform(0, 30)
        q = rng.normal(size=3) * 0.2
        e = math.sqrt(q @ q + M_MU**2)
        lab = np.array(boost(e, *q, math.sqrt(p @ p + M_K**2), *p, M_K))
        # the matrix reference goes lab -> rest, so it must bring `lab` back to (e, q)
        # (boosts up to gamma ~ 150 here: rounding ~1e-12 GeV)
        assert np.allclose(_lab_to_rest(lab, p, M_K), [e, *q], rtol=0, atol=1e-10)
        back = boost(*lab, math.sqrt(p @ p + M_K**2), *(-p), M_K)
        assert np.allclose(back, [e, *q], rtol=0, atol=1e-10)
    # a particle at rest in the parent frame moves with the parent
    e_k = math.sqrt(4.0 + M_K**2)
    assert np.allclose(boost(M_K, 0.0, 0.0, 0.0, e_k, 0.0, 2.0, 0.0, M_K), [e_k, 0.0, 2.0, 0.0], rtol=0, atol=1e-12)


def test_pion_decays_to_a_muon_of_29_79_mev_and_a_massless_neutrino():
    p_star = (M_PI**2 - M_MU**2) / (2 * M_PI)
    assert p_star == pytest.approx(0.029792, abs=1e-6)  # PDG: 29.79 MeV/c
    for pdg in (211, -211):
        mom = _parents(3000, 20.0, seed=2)
        counts, codes, out = _decays(pdg, mom, 5)
        assert (counts == 1).all()
        assert (codes[:, 0] == (-13 if pdg > 0 else 13)).all()
        mu = _four(codes[:, 0], out[:, 0])
        parent = np.column_stack([np.sqrt((mom**2).sum(axis=1) + M_PI**2), mom])
        assert np.abs(_mass2(parent - mu)).max() < 1e-9  # the neutrino
        for i in range(0, 3000, 97):  # the muon in the pion's rest frame
            rest = _lab_to_rest(mu[i], mom[i], M_PI)
            assert np.linalg.norm(rest[1:]) == pytest.approx(p_star, abs=1e-9)


def _by_channel(codes, counts):
    return [tuple(sorted(codes[i, : counts[i]].tolist())) for i in range(len(counts))]


def test_every_kaon_channel_balances_four_momentum_with_massless_neutrinos():
    mom = _parents(6000, 20.0, seed=3)
    counts, codes, out = _decays(321, mom, 7)
    channels = _by_channel(codes, counts)
    kaon = np.column_stack([np.sqrt((mom**2).sum(axis=1) + M_K**2), mom])
    seen = Counter()
    for i, ch in enumerate(channels):
        assert ch in K_PLUS_CHANNELS, ch
        seen[ch] += 1
        four = _four(codes[i, : counts[i]], out[i, : counts[i]])
        missing = kaon[i] - four.sum(axis=0)
        if ch in (K_PLUS_CHANNELS[1], K_PLUS_CHANNELS[2], K_PLUS_CHANNELS[5]):  # nothing invisible
            assert np.abs(missing).max() < 1e-9, (ch, missing)
        else:  # one neutrino
            assert abs(_mass2(missing)) < 1e-9, (ch, missing)
            assert missing[0] > 0
        photons = four[codes[i, : counts[i]] == 22]
        for k in range(0, len(photons), 2):  # the photons come in pi0 pairs, in order
            assert math.sqrt(_mass2(photons[k] + photons[k + 1])) == pytest.approx(M_PI0, abs=1e-9)
    assert set(seen) == set(K_PLUS_CHANNELS)


def test_kaon_channel_frequencies_follow_the_branching_fractions():
    n = 20_000
    mom = _parents(n, 5.0, seed=4)
    counts, codes, _ = _decays(321, mom, 11)
    seen = Counter(_by_channel(codes, counts))
    br = np.array(g.KAON_BRANCHING) / sum(g.KAON_BRANCHING)
    for ch, f in zip(K_PLUS_CHANNELS, br, strict=True):
        sigma = math.sqrt(n * f * (1 - f))
        assert abs(seen[ch] - n * f) < 4 * sigma, (ch, seen[ch], n * f)


def test_negative_parents_decay_to_the_charge_conjugate_products():
    mom = _parents(4000, 5.0, seed=5)
    for pdg, charge in ((-321, -1), (321, 1), (-211, -1)):
        counts, codes, _ = _decays(pdg, mom, 13)
        for i in range(len(counts)):
            assert sum(CHARGE[int(c)] for c in codes[i, : counts[i]]) == charge
    counts, codes, _ = _decays(-321, mom, 13)
    conjugates = {tuple(sorted(-c if c != 22 else c for c in ch)) for ch in K_PLUS_CHANNELS}
    assert set(_by_channel(codes, counts)) == conjugates


def _lam(a, b, c):
    return a * a + b * b + c * c - 2 * (a * b + b * c + c * a)


def _dalitz_projection(edges, m, m1, m2, m3):
    """Expected fraction per bin of m12^2: the length of the allowed m23^2 interval, sqrt(lambda(s, m1^2, m2^2)
    lambda(m^2, s, m3^2)) / s, integrated over each bin by the midpoint rule on a fine grid."""
    frac = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        s = lo + (np.arange(400) + 0.5) * (hi - lo) / 400
        length = np.sqrt(np.clip(_lam(s, m1**2, m2**2) * _lam(m**2, s, m3**2), 0, None)) / s
        frac.append(length.mean() * (hi - lo))
    frac = np.array(frac)
    return frac / frac.sum()


def _chi2(sample, edges, expected_fraction):
    counts, _ = np.histogram(sample, bins=edges)
    expected = expected_fraction * len(sample)
    return ((counts - expected) ** 2 / expected).sum()


def test_k_to_three_pions_fills_the_dalitz_plot_uniformly():
    n, bins = 150_000, 30
    mom = _parents(n, 3.0, seed=6)
    counts, codes, out = _decays(321, mom, 17)
    three = np.flatnonzero([ch == K_PLUS_CHANNELS[2] for ch in _by_channel(codes, counts)])  # K+ -> pi+ pi+ pi-
    assert len(three) == pytest.approx(n * 0.0558, rel=0.1)
    pi_plus = _four(np.full(len(three), 211), out[three, np.argmax(codes[three] == 211, axis=1)])
    pi_minus = _four(np.full(len(three), 211), out[three, np.argmax(codes[three] == -211, axis=1)])
    s = _mass2(pi_plus + pi_minus)
    edges = np.linspace((2 * M_PI) ** 2, (M_K - M_PI) ** 2, bins + 1)
    expected = _dalitz_projection(edges, M_K, M_PI, M_PI, M_PI)
    bound = bins + 5 * math.sqrt(2 * bins)
    assert _chi2(s, edges, expected) < bound  # 23 for 29 degrees of freedom with this seed
    # a sampler uniform in the pion energies, ignoring the Dalitz boundary, fails the same bound
    rng = np.random.default_rng(0)
    e_max = (M_K**2 - 3 * M_PI**2) / (2 * M_K)
    e1, e3 = rng.uniform(M_PI, e_max, (2, 20 * len(three)))
    keep = (M_K - e1 - e3 >= M_PI) & (M_K - e1 - e3 <= e_max)
    biased = (M_K**2 + M_PI**2 - 2 * M_K * e3[keep])[: len(three)]
    assert _chi2(biased, edges, expected) > 5 * bound  # 425


def test_three_body_phase_space_with_unequal_masses_is_flat_in_both_dalitz_variables():
    n, bins = 40_000, 25
    rest = _rest_three_body(n, M_K, M_PI0, M_MU, 0.0, 19)  # K -> pi0 mu nu
    assert np.abs(rest.sum(axis=1) - [M_K, 0, 0, 0]).max() < 1e-12
    assert np.allclose(_mass2(rest), [M_PI0**2, M_MU**2, 0.0], rtol=0, atol=1e-12)
    bound = bins + 5 * math.sqrt(2 * bins)
    s12 = _mass2(rest[:, 0] + rest[:, 1])
    edges = np.linspace((M_PI0 + M_MU) ** 2, M_K**2, bins + 1)
    assert _chi2(s12, edges, _dalitz_projection(edges, M_K, M_PI0, M_MU, 0.0)) < bound
    s23 = _mass2(rest[:, 1] + rest[:, 2])  # the same with the roles of the particles rotated: (2, 3) and then 1
    edges = np.linspace(M_MU**2, (M_K - M_PI0) ** 2, bins + 1)
    assert _chi2(s23, edges, _dalitz_projection(edges, M_K, M_MU, 0.0, M_PI0)) < bound
    # and the decay plane is oriented isotropically
    normal = np.cross(rest[:, 0, 1:], rest[:, 2, 1:])
    cos = normal[:, 2] / np.linalg.norm(normal, axis=1)
    assert abs(cos.mean()) < 4 / math.sqrt(3 * n)
    assert abs(rest[:, 0, 3].mean() / rest[:, 0, 1:].std()) < 4 / math.sqrt(n)


@pytest.mark.parametrize(("pdg", "parent_mass"), [(211, M_PI), (321, M_K)])
def test_two_body_decays_are_isotropic_in_the_rest_frame(pdg, parent_mass):
    n = 20_000
    direction = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    mom = np.tile(2.0 * direction, (n, 1))
    counts, codes, out = _decays(pdg, mom, 23)
    first = codes[:, 0]
    keep = counts == 1  # pi -> mu nu, K -> mu nu
    mu = _four(first[keep], out[keep, 0])
    e = math.sqrt(4.0 + parent_mass**2)
    rest = np.array([boost(*row, e, *(-2.0 * direction), parent_mass) for row in mu])
    q = np.linalg.norm(rest[:, 1:], axis=1)
    expected_q = (parent_mass**2 - M_MU**2) / (2 * parent_mass)
    assert np.allclose(q, expected_q, rtol=0, atol=1e-9)
    cos = rest[:, 1:] @ direction / q
    m = len(cos)
    assert abs(cos.mean()) < 4 / math.sqrt(3 * m)  # uniform cos: variance 1/3
    assert abs((cos**2).mean() - 1 / 3) < 4 * math.sqrt(4 / 45 / m)  # cos^2: mean 1/3, variance 4/45
