import math

import numba as nb
import numpy as np
import pytest

from fm4npp_data import geometry as g
from fm4npp_data.simulation import physics as ph

GAS = (g.GAS_Z_OVER_A, g.GAS_I, g.GAS_DENSITY)
PION = 0.13957


def test_bethe_minimum_ionizing_loss_in_tpc_gas():
    # Bethe equation (PDG Review, "Passage of particles through matter" §x.2.3) with the gas of docs/physics.md §6:
    # 1.62 MeV cm2/g at beta*gamma = 3.2, i.e. 3.49 keV/cm at the Geant4 density
    dedx = ph.bethe_dedx(3.2, PION, *GAS)
    assert dedx / g.GAS_DENSITY * 1e3 == pytest.approx(1.62, rel=0.03)
    assert dedx * 1e6 == pytest.approx(3.49, rel=0.03)
    # 1/beta^2 rise below the minimum, relativistic rise above it
    assert ph.bethe_dedx(0.5, PION, *GAS) > 3 * dedx
    assert ph.bethe_dedx(100.0, PION, *GAS) > 1.2 * dedx


def test_t_max_for_heavy_particle_is_2_me_beta2_gamma2():
    bg = 2.0
    assert ph.t_max(bg, 100.0) == pytest.approx(2 * g.ELECTRON_MASS * bg * bg, rel=1e-4)


def test_highland_formula_by_hand():
    p, beta, x = 1.0, 0.99, 0.01
    expected = 0.0136 / (beta * p) * math.sqrt(x) * (1 + 0.038 * math.log(x / beta**2))
    assert ph.highland_theta0(p, beta, x) == pytest.approx(expected, rel=1e-12)
    assert ph.highland_theta0(p, beta, 0.0) == 0.0


def test_pair_probability_high_energy_limit_and_threshold():
    x = 0.02
    assert ph.pair_probability(1e4, x) == pytest.approx(1 - math.exp(-7 / 9 * x), rel=0.01)
    assert ph.pair_probability(1.0e-3, x) == 0.0
    assert ph.pair_probability(0.01, x) < ph.pair_probability(0.1, x) < ph.pair_probability(1.0, x)


def test_landau_most_probable_loss_per_pad_row_matches_reference():
    # Landau-Vavilov most probable loss (PDG Review, "Passage of particles through matter" §x.2.9), docs/physics.md §8:
    # MIP (beta*gamma 3.5) MPV 0.96 keV in an inner row (0.57 cm), 1.95 keV in an outer row
    mpv_inner, _ = ph.landau_mpv(3.5, 0.566, *GAS)
    mpv_outer, _ = ph.landau_mpv(3.5, 1.097, *GAS)
    assert mpv_inner * 1e6 == pytest.approx(0.96, rel=0.08)
    assert mpv_outer * 1e6 == pytest.approx(1.95, rel=0.08)


@nb.njit
def _moyal_samples(n, seed):
    np.random.seed(seed)
    out = np.empty(n)
    for i in range(n):
        out[i] = ph.moyal()
    return out


def test_moyal_samples_have_mode_zero_and_mean_euler_gamma_plus_ln2():
    x = _moyal_samples(400_000, 3)
    assert x.mean() == pytest.approx(0.5772 + math.log(2), abs=0.02)
    assert x.var() == pytest.approx(math.pi**2 / 2, rel=0.05)
    counts, edges = np.histogram(x, bins=np.linspace(-2, 4, 61))
    mode = 0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1])
    assert abs(mode) < 0.2


def _kn_differential(k, cos_theta):
    """Klein-Nishina dsigma/dOmega / r_e^2 at photon energy k (units of m_e c^2), written out directly."""
    ratio = 1.0 / (1.0 + k * (1.0 - cos_theta))  # E'/E
    return 0.5 * ratio * ratio * (ratio + 1.0 / ratio - (1.0 - cos_theta * cos_theta))


@pytest.mark.parametrize("energy", [1e-4, 1e-3, 1e-2, 0.1])
def test_klein_nishina_total_equals_the_integrated_differential_cross_section(energy):
    k = energy / g.ELECTRON_MASS
    c = np.linspace(-1.0, 1.0, 200_001)
    integral = 2.0 * math.pi * np.trapezoid(_kn_differential(k, c), c) * g.ELECTRON_RADIUS**2
    assert ph.klein_nishina(energy) == pytest.approx(integral, rel=1e-6)


def test_klein_nishina_limits_and_per_gram_value():
    thomson = 8.0 / 3.0 * math.pi * g.ELECTRON_RADIUS**2  # 0.6652 barn
    assert ph.klein_nishina(1e-9) == pytest.approx(thomson, rel=1e-5)
    # 1 MeV on argon (Z/A = 18/39.95): 0.0573 cm2/g, the incoherent value of the NIST XCOM tables
    assert ph.klein_nishina(1e-3) * g.AVOGADRO * 18 / 39.948 == pytest.approx(0.0573, rel=0.01)
    assert ph.compton_probability(1e-3, 0.0) == 0.0


@nb.njit
def _compton_samples(energy, n, seed):
    np.random.seed(seed)
    out = np.empty((n, 2))
    for i in range(n):
        out[i, 0], out[i, 1] = ph.sample_compton(energy)
    return out


@pytest.mark.parametrize("energy", [2e-3, 30e-3])
def test_compton_sampling_follows_klein_nishina(energy):
    k = energy / g.ELECTRON_MASS
    samples = _compton_samples(energy, 200_000, 5)
    eps, cos_theta = samples[:, 0], samples[:, 1]
    # kinematics: eps = 1 / (1 + k (1 - cos theta)), within [1 / (1 + 2k), 1]
    np.testing.assert_allclose(eps, 1.0 / (1.0 + k * (1.0 - cos_theta)), rtol=1e-9)
    assert eps.min() >= 1.0 / (1.0 + 2.0 * k) - 1e-12
    assert eps.max() <= 1.0
    # the distribution of cos(theta) against the differential cross section, in 20 bins
    edges = np.linspace(-1.0, 1.0, 21)
    fine = np.linspace(-1.0, 1.0, 20_001)
    dens = _kn_differential(k, fine)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    expected = np.diff(np.interp(edges, fine, cum)) / cum[-1] * len(cos_theta)
    observed = np.histogram(cos_theta, edges)[0]
    chi2 = np.sum((observed - expected) ** 2 / expected)
    assert chi2 < 45.0  # 19 degrees of freedom: p ~ 1e-3
    # the mean energy the electron takes
    mean_t = np.sum((1.0 - 1.0 / (1.0 + k * (1.0 - fine))) * dens) / np.sum(dens)
    assert np.mean(1.0 - eps) == pytest.approx(mean_t, rel=0.01)
