"""Inelastic hadron-nucleus interactions in the tracker material and the TPC gas (Numba).

Where: a charged pion, kaon, proton or hyperon interacts with probability 1 - exp(-x / lambda_I) over x g/cm2 of a
material, lambda_I = 35 g/cm2 A^(1/3) (PDG, calorimetry). What: the projectile is absorbed and its kinetic energy
goes to secondaries, a compact stand-in for Geant4's Bertini cascade (constants in geometry.py, [SIM]):

- knocked-out protons: Poisson(HADRONIC_PROTONS) of them, exponential kinetic energies of mean
  HADRONIC_PROTON_ENERGY, isotropic; slow and heavily ionizing, they leave short bright stubs;
- charged pions: Poisson(HADRONIC_PIONS_PER_GEV x the energy left) of them, sharing that energy, at Gaussian angles
  of rms HADRONIC_PION_ANGLE to the projectile.

Neutrons, nuclear fragments and photons carry the rest and leave no TPC cluster here.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .. import geometry as g
from .physics import rotate_to_angle

#: the secondaries an interaction can emit
MAX_SECONDARIES = 16


@nb.njit(cache=True)
def interacts(pdg: int) -> bool:
    """Whether a particle of this PDG code has nuclear interactions here: charged pions, kaons, (anti)protons and
    charged hyperons."""
    a = abs(pdg)
    return a == 211 or a == 321 or a == 2212 or a == 3222 or a == 3112 or a == 3312 or a == 3334


@nb.njit(cache=True)
def nuclear_length(mass_number: float) -> float:
    """Nuclear interaction length (g/cm2) of a nucleus of mass number A: 35 g/cm2 A^(1/3)."""
    return g.NUCLEAR_LENGTH_COEFFICIENT * mass_number ** (1.0 / 3.0)


@nb.njit(cache=True)
def interaction_probability(areal: float, length: float) -> float:
    """Probability of an inelastic interaction in `areal` g/cm2 of a material of interaction length `length`."""
    return 1.0 - math.exp(-areal / length)


@nb.njit(cache=True)
def secondaries(kinetic: float, px: float, py: float, pz: float) -> tuple:
    """The charged secondaries of an inelastic interaction of a hadron of kinetic energy `kinetic` (GeV) and
    momentum (px, py, pz): (n, pdg (MAX_SECONDARIES,), momentum (MAX_SECONDARIES, 3)); the first n rows are used."""
    pdg = np.zeros(MAX_SECONDARIES, np.int64)
    mom = np.zeros((MAX_SECONDARIES, 3))
    budget = kinetic
    n = 0
    for _ in range(np.random.poisson(g.HADRONIC_PROTONS)):
        t = np.random.exponential(g.HADRONIC_PROTON_ENERGY)
        if t > budget or n >= MAX_SECONDARIES:
            break
        budget -= t
        p = math.sqrt(t * t + 2.0 * t * g.PROTON_MASS)
        ux, uy, uz = rotate_to_angle(px, py, pz, 2.0 * np.random.random() - 1.0)  # isotropic
        pdg[n] = 2212
        mom[n, 0], mom[n, 1], mom[n, 2] = p * ux, p * uy, p * uz
        n += 1
    n_pions = min(np.random.poisson(g.HADRONIC_PIONS_PER_GEV * budget), MAX_SECONDARIES - n)
    if n_pions > 0:
        shares = np.random.exponential(1.0, n_pions)
        shares /= shares.sum()
        for j in range(n_pions):
            t = budget * shares[j]
            p = math.sqrt(t * t + 2.0 * t * g.PION_MASS)
            ux, uy, uz = rotate_to_angle(px, py, pz, math.cos(np.random.normal() * g.HADRONIC_PION_ANGLE))
            pdg[n] = 211 if np.random.random() < 0.5 else -211
            mom[n, 0], mom[n, 1], mom[n, 2] = p * ux, p * uy, p * uz
            n += 1
    return n, pdg, mom


@nb.njit(cache=True)
def mass_of(pdg: int) -> float:
    """Mass (GeV) of the particles the detector creates: photons, e+-, mu+-, charged pions, protons."""
    a = abs(pdg)
    if a == 22:
        return 0.0
    if a == 11:
        return g.ELECTRON_MASS
    if a == 13:
        return g.MUON_MASS
    if a == 211:
        return g.PION_MASS
    return g.PROTON_MASS
