"""Energy loss, fluctuations, multiple scattering, pair production and Compton scattering, as Numba functions of
scalars.

Formulas: PDG Review "Passage of particles through matter" (sections named in each docstring); constants from
fm4npp_data.geometry. Energies in GeV, lengths in cm, densities in g/cm3.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .. import geometry as g

_K = g.BETHE_K
_ME = g.ELECTRON_MASS
_X0S, _X1S, _AS, _KS, _CS = g.GAS_STERNHEIMER


@nb.njit(cache=True, inline="always")
def t_max(beta_gamma: float, mass: float) -> float:
    """Maximum kinetic energy transferable to a free electron (PDG §x.2.2)."""
    gamma = math.sqrt(1.0 + beta_gamma * beta_gamma)
    r = _ME / mass
    return 2.0 * _ME * beta_gamma * beta_gamma / (1.0 + 2.0 * gamma * r + r * r)


@nb.njit(cache=True, inline="always")
def density_effect(beta_gamma: float) -> float:
    """Sternheimer density correction delta(beta gamma) of the TPC gas (PDG §x.2.5)."""
    x = math.log10(max(beta_gamma, 1e-12))
    if x < _X0S:
        return 0.0
    if x < _X1S:
        return 2.0 * math.log(10.0) * x - _CS + _AS * (_X1S - x) ** _KS
    return 2.0 * math.log(10.0) * x - _CS


@nb.njit(cache=True)
def bethe_dedx(beta_gamma: float, mass: float, z_over_a: float, mean_i: float, density: float) -> float:
    """Mean energy loss (GeV/cm) of a unit charge by the Bethe equation (PDG §x.2.3).

    Electrons use the same formula with their own mass and T_max; at the momenta that leave TPC hits it is within
    about 10 % of the Berger-Seltzer value. Below geometry.BETHE_MIN_BETA_GAMMA, where the formula no longer holds
    (the stopping power peaks and falls towards zero velocity), it keeps its value there, so that slow heavy
    particles stop within their last few mm instead of coasting; the floor at 0.3 K Z/A keeps it positive.
    """
    beta_gamma = max(beta_gamma, g.BETHE_MIN_BETA_GAMMA)
    bg2 = beta_gamma * beta_gamma
    beta2 = bg2 / (1.0 + bg2)
    tm = t_max(beta_gamma, mass)
    arg = 2.0 * _ME * bg2 * tm / (mean_i * mean_i)
    bracket = 0.5 * math.log(arg) - beta2 - 0.5 * density_effect(beta_gamma)
    return max(_K * z_over_a / beta2 * bracket, 0.3 * _K * z_over_a) * density


@nb.njit(cache=True)
def landau_mpv(beta_gamma: float, length: float, z_over_a: float, mean_i: float, density: float) -> tuple:
    """Landau-Vavilov most probable loss and width xi (GeV) over a path length (cm) (PDG §x.2.9)."""
    bg2 = beta_gamma * beta_gamma
    beta2 = bg2 / (1.0 + bg2)
    xi = 0.5 * _K * z_over_a * length * density / beta2
    mpv = xi * (
        math.log(2.0 * _ME * bg2 / mean_i) + math.log(xi / mean_i) + g.LANDAU_J - beta2 - density_effect(beta_gamma)
    )
    return max(mpv, 0.0), xi


@nb.njit(cache=True, inline="always")
def moyal() -> float:
    """A Moyal variate (location 0, scale 1): -ln(Z^2) with Z standard normal; a Landau-like shape."""
    z = np.random.normal()
    return -math.log(max(z * z, 1e-300))


@nb.njit(cache=True)
def highland_theta0(p: float, beta: float, x_over_x0: float) -> float:
    """RMS projected multiple-scattering angle (rad) after x/X0 of material, unit charge (PDG §x.3)."""
    if x_over_x0 <= 0.0:
        return 0.0
    return 0.0136 / (beta * p) * math.sqrt(x_over_x0) * (1.0 + 0.038 * math.log(x_over_x0 / (beta * beta)))


@nb.njit(cache=True, inline="always")
def orthonormal_frame(px: float, py: float, pz: float) -> tuple:
    """The unit vector u along (px, py, pz), two unit vectors a, b perpendicular to it and each other, and |p|."""
    p = math.sqrt(px * px + py * py + pz * pz)
    ux, uy, uz = px / p, py / p, pz / p
    if abs(uz) < 0.9:
        ax, ay, az = -uy, ux, 0.0
    else:
        ax, ay, az = 0.0, -uz, uy
    na = math.sqrt(ax * ax + ay * ay + az * az)
    ax, ay, az = ax / na, ay / na, az / na
    bx, by, bz = uy * az - uz * ay, uz * ax - ux * az, ux * ay - uy * ax
    return ux, uy, uz, ax, ay, az, bx, by, bz, p


@nb.njit(cache=True)
def rotate_to_angle(px: float, py: float, pz: float, cos_theta: float) -> tuple:
    """A unit vector at polar angle acos(cos_theta) to (px, py, pz), uniform in azimuth."""
    ux, uy, uz, ax, ay, az, bx, by, bz, _p = orthonormal_frame(px, py, pz)
    sin_theta = math.sqrt(max(0.0, 1.0 - cos_theta * cos_theta))
    phi = np.random.random() * 2.0 * math.pi
    cp, sp = math.cos(phi) * sin_theta, math.sin(phi) * sin_theta
    return (
        cos_theta * ux + cp * ax + sp * bx,
        cos_theta * uy + cp * ay + sp * by,
        cos_theta * uz + cp * az + sp * bz,
    )


@nb.njit(cache=True)
def scatter(px: float, py: float, pz: float, theta0: float) -> tuple:
    """Rotate momentum (px, py, pz) by two independent Gaussian projected angles of rms theta0."""
    if theta0 <= 0.0:
        return px, py, pz
    ux, uy, uz, ax, ay, az, bx, by, bz, p = orthonormal_frame(px, py, pz)
    t1 = np.random.normal() * theta0
    t2 = np.random.normal() * theta0
    nx = ux + t1 * ax + t2 * bx
    ny = uy + t1 * ay + t2 * by
    nz = uz + t1 * az + t2 * bz
    nn = math.sqrt(nx * nx + ny * ny + nz * nz)
    return p * nx / nn, p * ny / nn, p * nz / nn


@nb.njit(cache=True)
def pair_probability(energy: float, x_over_x0: float) -> float:
    """Probability that a photon converts in x/X0 of material (PDG §x.4.5).

    High-energy limit 1 - exp(-7/9 x/X0), scaled by an approximate energy dependence of the pair cross section in
    light materials (about 0.4 of the asymptotic value at 10 MeV, 0.75 at 100 MeV, 0.9 at 1 GeV; NIST XCOM).
    """
    if energy <= 2.0 * _ME:
        return 0.0
    suppression = max(0.0, 1.0 - 0.6 * (energy / 0.010) ** -0.35)
    return (1.0 - math.exp(-7.0 / 9.0 * x_over_x0)) * suppression


@nb.njit(cache=True)
def klein_nishina(energy: float) -> float:
    """Compton (Klein-Nishina) cross section per free electron (cm2) for a photon of this energy (GeV) (PDG
    §x.4.4, Fig. 34.15; Heitler, The Quantum Theory of Radiation, §22). Atomic binding, which lowers it below about
    100 keV, is neglected."""
    k = energy / _ME
    if k < 1e-3:  # the Thomson limit, to first order in k
        return 8.0 / 3.0 * math.pi * g.ELECTRON_RADIUS**2 * (1.0 - 2.0 * k)
    lg = math.log(1.0 + 2.0 * k)
    return (
        2.0
        * math.pi
        * g.ELECTRON_RADIUS**2
        * (
            (1.0 + k) / (k * k) * (2.0 * (1.0 + k) / (1.0 + 2.0 * k) - lg / k)
            + lg / (2.0 * k)
            - (1.0 + 3.0 * k) / (1.0 + 2.0 * k) ** 2
        )
    )


@nb.njit(cache=True)
def compton_probability(energy: float, electrons_per_cm2: float) -> float:
    """Probability that a photon Compton-scatters on this many electrons per cm2."""
    return 1.0 - math.exp(-electrons_per_cm2 * klein_nishina(energy))


@nb.njit(cache=True)
def sample_compton(energy: float) -> tuple:
    """(eps, cos_theta) of a Compton scatter drawn from the Klein-Nishina distribution: the scattered photon keeps
    eps = E'/E of the energy and turns by theta; the electron takes (1 - eps) E.

    dsigma/deps ~ (1/eps + eps) (1 - eps sin^2 theta / (1 + eps^2)), eps in [1 / (1 + 2k), 1], sampled as the sum
    of 1/eps and eps (the first two factors, drawn by their shares of the integral) with rejection on the third
    (the method of Butcher and Messel, Nucl. Phys. 20 (1960) 15, as Geant4's G4KleinNishinaCompton uses)."""
    k = energy / _ME
    eps0 = 1.0 / (1.0 + 2.0 * k)
    a1 = -math.log(eps0)
    a2 = 0.5 * (1.0 - eps0 * eps0)
    while True:
        if a1 / (a1 + a2) > np.random.random():
            eps = math.exp(-a1 * np.random.random())
        else:
            eps = math.sqrt(eps0 * eps0 + (1.0 - eps0 * eps0) * np.random.random())
        t = (1.0 - eps) / (k * eps)  # 1 - cos(theta)
        sin2 = max(0.0, t * (2.0 - t))
        if np.random.random() <= 1.0 - eps * sin2 / (1.0 + eps * eps):
            return eps, 1.0 - t


@nb.njit(cache=True)
def delta_rate(beta_gamma: float, mass: float, t_min: float, z_over_a: float, density: float) -> float:
    """Mean number of delta electrons above t_min per cm (PDG §x.2.7, F = 1)."""
    tm = t_max(beta_gamma, mass)
    if mass < 2.0 * _ME:  # Moller: the faster outgoing electron is called the primary
        tm = 0.5 * (math.sqrt(beta_gamma * beta_gamma + 1.0) - 1.0) * mass
    if tm <= t_min:
        return 0.0
    bg2 = beta_gamma * beta_gamma
    beta2 = bg2 / (1.0 + bg2)
    return 0.5 * _K * z_over_a * density / beta2 * (1.0 / t_min - 1.0 / tm)


@nb.njit(cache=True)
def sample_delta_energy(beta_gamma: float, mass: float, t_min: float, t_cap: float) -> float:
    """Kinetic energy (GeV) of a delta electron from dN/dT ~ 1/T^2 between t_min and min(T_max, t_cap)."""
    tm = t_max(beta_gamma, mass)
    if mass < 2.0 * _ME:
        tm = 0.5 * (math.sqrt(beta_gamma * beta_gamma + 1.0) - 1.0) * mass
    tm = min(tm, t_cap)
    u = np.random.random()
    return 1.0 / (1.0 / t_min - u * (1.0 / t_min - 1.0 / tm))


@nb.njit(cache=True)
def delta_cos_theta(t: float, beta_gamma: float, mass: float) -> float:
    """Cosine of the delta electron's angle to the primary: (T/p_e)(p_max/T_max) (PDG §x.2.7)."""
    tm = t_max(beta_gamma, mass)
    pe = math.sqrt(t * t + 2.0 * _ME * t)
    pmax = math.sqrt(tm * tm + 2.0 * _ME * tm)
    return min(1.0, (t / pe) * (pmax / tm))
