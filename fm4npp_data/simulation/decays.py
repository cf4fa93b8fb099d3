"""Decays in flight and at rest of charged pions, kaons and muons (Numba).

PYTHIA leaves pi+-, K+- and mu+- stable; Geant4 decays them. One of momentum p decays after a path drawn from an
exponential of mean (p / m) c*tau, with c*tau = PION_CTAU = 7.80 m, KAON_CTAU = 3.71 m or MUON_CTAU = 659 m
(geometry.py, [PDG]); at that point `decay` replaces it by its decay products, which the transport then follows.
One that stops first decays at rest (`decay` with zero momentum) when positive; a stopped mu- decays with
probability MUON_MINUS_DECAY_FRACTION, and a stopped pi- or K- is captured by a nucleus (the transport's choice).

Channels (charge conjugates for the negative parent; [PDG] particle listings):

- pi+ -> mu+ nu: taken as 100 % (the 1.2e-4 of pi+ -> e+ nu, and the radiative decays, are neglected);
- mu+ -> e+ nu nu-bar: 100 %, the positron's energy from the Michel spectrum of an unpolarized muon, isotropic;
- K+ -> mu+ nu, pi+ pi0, pi+ pi+ pi-, pi0 e+ nu (Ke3), pi0 mu+ nu (Kmu3), pi+ pi0 pi0, chosen with the branching
  fractions KAON_BRANCHING normalised by their sum (99.99 %; the rare channels left are dropped).

Kinematics: a two-body decay is exact, the products back to back in the parent's rest frame with momentum
p* = sqrt((M^2 - (m1 + m2)^2)(M^2 - (m1 - m2)^2)) / 2M, isotropic (spin-0 parent). A three-body decay is drawn
from phase space with a constant matrix element: a point uniform in the Dalitz plot (m12^2, m23^2), drawn by
accept-reject inside its kinematic boundary, turned into three rest-frame momenta in a plane that is then oriented
isotropically. The real matrix elements of K -> 3 pi (a small linear slope in the odd pion's energy) and of Kl3
(the V-A form factors) are approximated as flat. Every product is boosted to the lab along the parent's velocity.

A pi0 (c*tau 25 nm) decays at once into two photons, back to back and isotropic in its rest frame (the 1.2 % Dalitz
decay pi0 -> e+ e- gamma is neglected). Neutrinos leave no trace and are dropped. So the products returned are
muons, charged pions, electrons and photons, with the PDG sign convention (mu- 13, mu+ -13, e- 11, e+ -11,
pi+ 211, pi- -211, gamma 22).

Random numbers come from np.random inside the jitted functions, so the transport's seeded Numba generator drives
them. Energies and momenta in GeV, lengths in cm.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .. import geometry as g
from .physics import orthonormal_frame

#: the most visible products one decay returns (K+ -> pi+ pi0 pi0 -> pi+ and four photons: 5)
MAX_PRODUCTS = 6

_M_PI = g.PION_MASS
_M_K = g.KAON_MASS
_M_MU = g.MUON_MASS
_M_E = g.ELECTRON_MASS
_M_PI0 = g.PI0_MASS
#: the largest energy the electron of a muon decay takes: (m_mu^2 + m_e^2) / 2 m_mu = 52.83 MeV
_E_MICHEL = (_M_MU * _M_MU + _M_E * _M_E) / (2.0 * _M_MU)
#: cumulative K+ branching fractions, normalised to 1 over the channels listed
_K_CUMULATIVE = np.cumsum(np.array(g.KAON_BRANCHING)) / np.sum(np.array(g.KAON_BRANCHING))


@nb.njit(cache=True)
def decays_in_flight(pdg: int) -> bool:
    """Whether a particle of this PDG code decays in flight here: charged pions, kaons and muons."""
    a = abs(pdg)
    return a == 211 or a == 321 or a == 13


@nb.njit(cache=True)
def proper_decay_length(pdg: int) -> float:
    """Mean proper decay length c*tau (cm) of a particle that decays in flight here, 0.0 for any other."""
    a = abs(pdg)
    if a == 211:
        return g.PION_CTAU
    if a == 321:
        return g.KAON_CTAU
    if a == 13:
        return g.MUON_CTAU
    return 0.0


@nb.njit(cache=True)
def boost(e: float, qx: float, qy: float, qz: float, energy: float, px: float, py: float, pz: float, mass: float):
    """The lab four-momentum (E, px, py, pz) of a four-momentum (e, qx, qy, qz) given in the rest frame of a parent
    of lab energy `energy`, momentum (px, py, pz) and mass `mass`: a Lorentz boost along the parent's velocity,
    gamma = energy / mass, gamma beta = p / mass. Written with E + M in the denominator, it keeps its precision at
    large gamma. With the parent's momentum negated it is the inverse boost, lab -> rest frame."""
    pq = px * qx + py * qy + pz * qz
    f = (pq / (energy + mass) + e) / mass
    return (energy * e + pq) / mass, qx + f * px, qy + f * py, qz + f * pz


@nb.njit(cache=True)
def two_body_momentum(m: float, m1: float, m2: float) -> float:
    """Momentum of either product of the two-body decay of a mass m at rest into masses m1 and m2."""
    return math.sqrt(max(0.0, (m * m - (m1 + m2) ** 2) * (m * m - (m1 - m2) ** 2))) / (2.0 * m)


@nb.njit(cache=True)
def isotropic_direction() -> tuple:
    """A unit vector uniform on the sphere."""
    cos_theta = 2.0 * np.random.random() - 1.0
    sin_theta = math.sqrt(max(0.0, 1.0 - cos_theta * cos_theta))
    phi = 2.0 * math.pi * np.random.random()
    return sin_theta * math.cos(phi), sin_theta * math.sin(phi), cos_theta


@nb.njit(cache=True)
def dalitz_point(m: float, m1: float, m2: float, m3: float) -> tuple:
    """A point (m12^2, m23^2) uniform in the Dalitz plot of the decay of a mass m at rest into m1, m2, m3: uniform
    in the bounding rectangle, accepted when m23^2 lies between its limits at that m12^2 (PDG Review, Kinematics,
    Dalitz plot)."""
    lo12, hi12 = (m1 + m2) ** 2, (m - m3) ** 2
    lo23, hi23 = (m2 + m3) ** 2, (m - m1) ** 2
    while True:
        s12 = lo12 + (hi12 - lo12) * np.random.random()
        s23 = lo23 + (hi23 - lo23) * np.random.random()
        m12 = math.sqrt(s12)
        e2 = (s12 - m1 * m1 + m2 * m2) / (2.0 * m12)  # energies of 2 and 3 in the (12) rest frame
        e3 = (m * m - s12 - m3 * m3) / (2.0 * m12)
        q2 = math.sqrt(max(0.0, e2 * e2 - m2 * m2))
        q3 = math.sqrt(max(0.0, e3 * e3 - m3 * m3))
        if (e2 + e3) ** 2 - (q2 + q3) ** 2 <= s23 <= (e2 + e3) ** 2 - (q2 - q3) ** 2:
            return s12, s23


@nb.njit(cache=True)
def three_body_rest(m: float, m1: float, m2: float, m3: float) -> np.ndarray:
    """Rest-frame four-momenta (3, 4) as rows (E, px, py, pz) of a three-body decay of a mass m into m1, m2, m3 by
    phase space (constant matrix element), isotropically oriented. They sum to (m, 0, 0, 0) to rounding."""
    s12, s23 = dalitz_point(m, m1, m2, m3)
    e1 = (m * m + m1 * m1 - s23) / (2.0 * m)
    e3 = (m * m + m3 * m3 - s12) / (2.0 * m)
    e2 = m - e1 - e3
    p1 = math.sqrt(max(0.0, e1 * e1 - m1 * m1))
    p2 = math.sqrt(max(0.0, e2 * e2 - m2 * m2))
    p3 = math.sqrt(max(0.0, e3 * e3 - m3 * m3))
    # p2 = -(p1 + p3) fixes the angle between p1 and p3
    cos13 = (p2 * p2 - p1 * p1 - p3 * p3) / (2.0 * p1 * p3) if p1 * p3 > 0.0 else 1.0
    cos13 = min(1.0, max(-1.0, cos13))
    sin13 = math.sqrt(1.0 - cos13 * cos13)
    # orientation: p1 along an isotropic u, the decay plane at a uniform angle psi about u
    dx, dy, dz = isotropic_direction()
    ux, uy, uz, ax, ay, az, bx, by, bz, _ = orthonormal_frame(dx, dy, dz)
    psi = 2.0 * math.pi * np.random.random()
    c, s = math.cos(psi), math.sin(psi)
    vx, vy, vz = c * ax + s * bx, c * ay + s * by, c * az + s * bz
    out = np.empty((3, 4))
    out[0, 0], out[0, 1], out[0, 2], out[0, 3] = e1, p1 * ux, p1 * uy, p1 * uz
    out[2, 0] = e3
    out[2, 1] = p3 * (cos13 * ux + sin13 * vx)
    out[2, 2] = p3 * (cos13 * uy + sin13 * vy)
    out[2, 3] = p3 * (cos13 * uz + sin13 * vz)
    out[1, 0] = e2
    for k in range(1, 4):
        out[1, k] = -out[0, k] - out[2, k]
    return out


@nb.njit(cache=True)
def _emit(n, pdg_out, mom_out, pdg, e, qx, qy, qz, energy, px, py, pz, mass):
    """Store a product given in the parent's rest frame, boosted to the lab; a pi0 (pdg 111) is replaced by its two
    photons. Returns the new count."""
    le, lx, ly, lz = boost(e, qx, qy, qz, energy, px, py, pz, mass)
    if pdg != 111:
        pdg_out[n] = pdg
        mom_out[n, 0], mom_out[n, 1], mom_out[n, 2] = lx, ly, lz
        return n + 1
    h = 0.5 * _M_PI0
    dx, dy, dz = isotropic_direction()
    for sign in (1.0, -1.0):
        _, gx, gy, gz = boost(h, sign * h * dx, sign * h * dy, sign * h * dz, le, lx, ly, lz, _M_PI0)
        pdg_out[n] = 22
        mom_out[n, 0], mom_out[n, 1], mom_out[n, 2] = gx, gy, gz
        n += 1
    return n


@nb.njit(cache=True)
def _two_body(n, pdg_out, mom_out, pdg1, m1, pdg2, m2, energy, px, py, pz, mass):
    """Two-body decay of the parent: product 1 (mass m1) along an isotropic direction, product 2 opposite; a
    product with pdg 0 (a neutrino) is dropped."""
    q = two_body_momentum(mass, m1, m2)
    dx, dy, dz = isotropic_direction()
    if pdg1 != 0:
        n = _emit(
            n, pdg_out, mom_out, pdg1, math.sqrt(q * q + m1 * m1), q * dx, q * dy, q * dz, energy, px, py, pz, mass
        )
    if pdg2 != 0:
        e2 = math.sqrt(q * q + m2 * m2)
        n = _emit(n, pdg_out, mom_out, pdg2, e2, -q * dx, -q * dy, -q * dz, energy, px, py, pz, mass)
    return n


@nb.njit(cache=True)
def _three_body(n, pdg_out, mom_out, pdg1, m1, pdg2, m2, pdg3, m3, energy, px, py, pz, mass):
    """Phase-space three-body decay of the parent; a product with pdg 0 (a neutrino) is dropped."""
    rest = three_body_rest(mass, m1, m2, m3)
    for i, code in enumerate((pdg1, pdg2, pdg3)):
        if code != 0:
            n = _emit(
                n, pdg_out, mom_out, code, rest[i, 0], rest[i, 1], rest[i, 2], rest[i, 3], energy, px, py, pz, mass
            )
    return n


@nb.njit(cache=True)
def michel_fraction() -> float:
    """x = E_e / E_max of the electron of a muon decay, from the Michel spectrum of an unpolarized muon with the
    electron mass neglected: dN/dx = 2 x^2 (3 - 2 x) on [0, 1] (PDG Review, "Muon decay parameters"; rho = 3/4),
    by rejection under its maximum 2 at x = 1."""
    while True:
        x = np.random.random()
        if np.random.random() <= x * x * (3.0 - 2.0 * x):
            return x


@nb.njit(cache=True)
def decay(pdg: int, px: float, py: float, pz: float) -> tuple:
    """The visible products of one decay of a pi+-, K+- or mu+- of lab momentum (px, py, pz) GeV/c, in the lab frame:
    (n, pdg (MAX_PRODUCTS,) int64, momentum (MAX_PRODUCTS, 3)); the first n rows are used. Muons, charged pions,
    electrons and photons (from the pi0); neutrinos are dropped. n = 0 for a particle that does not decay here.
    Draws random numbers from np.random."""
    pdg_out = np.zeros(MAX_PRODUCTS, np.int64)
    mom_out = np.zeros((MAX_PRODUCTS, 3))
    n = 0
    a = abs(pdg)
    s = 1 if pdg > 0 else -1  # a pion's or kaon's charge (unused for muons); the positive lepton has the negative code
    if a == 211:
        energy = math.sqrt(px * px + py * py + pz * pz + _M_PI * _M_PI)
        n = _two_body(n, pdg_out, mom_out, -13 * s, _M_MU, 0, 0.0, energy, px, py, pz, _M_PI)
    elif a == 13:  # mu- (13) -> e- nu-bar_e nu_mu, mu+ (-13) -> e+ nu_e nu-bar_mu: the electron, isotropic
        energy = math.sqrt(px * px + py * py + pz * pz + _M_MU * _M_MU)
        e = max(michel_fraction() * _E_MICHEL, _M_E)
        q = math.sqrt(e * e - _M_E * _M_E)
        dx, dy, dz = isotropic_direction()
        n = _emit(n, pdg_out, mom_out, 11 if pdg > 0 else -11, e, q * dx, q * dy, q * dz, energy, px, py, pz, _M_MU)
    elif a == 321:
        energy = math.sqrt(px * px + py * py + pz * pz + _M_K * _M_K)
        r = np.random.random()
        channel = 0
        while channel < _K_CUMULATIVE.size - 1 and r >= _K_CUMULATIVE[channel]:
            channel += 1
        if channel == 0:  # K+ -> mu+ nu
            n = _two_body(n, pdg_out, mom_out, -13 * s, _M_MU, 0, 0.0, energy, px, py, pz, _M_K)
        elif channel == 1:  # K+ -> pi+ pi0
            n = _two_body(n, pdg_out, mom_out, 211 * s, _M_PI, 111, _M_PI0, energy, px, py, pz, _M_K)
        elif channel == 2:  # K+ -> pi+ pi+ pi-
            n = _three_body(
                n, pdg_out, mom_out, 211 * s, _M_PI, 211 * s, _M_PI, -211 * s, _M_PI, energy, px, py, pz, _M_K
            )
        elif channel == 3:  # K+ -> pi0 e+ nu
            n = _three_body(n, pdg_out, mom_out, 111, _M_PI0, -11 * s, _M_E, 0, 0.0, energy, px, py, pz, _M_K)
        elif channel == 4:  # K+ -> pi0 mu+ nu
            n = _three_body(n, pdg_out, mom_out, 111, _M_PI0, -13 * s, _M_MU, 0, 0.0, energy, px, py, pz, _M_K)
        else:  # K+ -> pi+ pi0 pi0
            n = _three_body(n, pdg_out, mom_out, 211 * s, _M_PI, 111, _M_PI0, 111, _M_PI0, energy, px, py, pz, _M_K)
    return n, pdg_out, mom_out
