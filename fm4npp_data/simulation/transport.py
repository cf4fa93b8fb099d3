"""Fast detector response: helix transport through the sPHENIX tracker material and TPC pad rows (Numba).

The detector is a set of coaxial cylinders sorted by radius: thin material layers (beam pipe, MVTX, INTT, their
supports, the TPC inner field cage) and the 48 TPC pad-row centres. Between two cylinders a charged particle moves
on an exact helix in the uniform solenoid field; the next crossing is found analytically (circle-circle
intersection), so the cost is one step per crossing, not per millimetre. At each crossing:

- material: mean energy loss (Bethe), bremsstrahlung for e+- (mean, exp(-x/X0)), Highland scattering, photon
  conversions; MVTX/INTT layers also record a silicon cluster;
- TPC pad row: a spacepoint, smeared by the TPC resolution, with a Landau-like (Moyal) energy deposit for the row's
  path length, converted to ADC counts. Crossings of one particle on one row closer than the clusterizer window
  make one cluster.

In the gas between rows the particle loses energy (Bethe), scatters (Highland) and knocks out delta electrons
above geometry.DELTA_T_MIN, which are transported like any other particle. A particle whose circle fits between two
pad-row centres (a soft delta or conversion electron curling in place) deposits its remaining energy as clusters
along its drift in z on the row it sits in. Charged hadrons interact with nuclei in the material and the gas
(hadronic.py): the particle is absorbed and its charged secondaries are transported. Charged pions, kaons and muons
decay in flight, or at rest once stopped (decays.py), and their products are transported. Photons convert or
Compton-scatter in the material and the gas. Particles stop when they range out, leave |z| < drift length, reach
the calorimeter (geometry.EMCAL_INNER_RADIUS), decay (a path length given by the generator, or drawn from c tau for
pions, kaons and muons), interact, or exceed geometry.MAX_PATH_LENGTH. Loopers (low-p_T particles curling in the field)
are followed turn by turn until one of these happens: each turn crosses the rows it reaches twice and the inner
material once each way. A crossing longer than the clusterizer's window (a grazing one, as at a looper's turning
point) makes several clusters along its streak (_streak).

Code: `detector()` gives the cylinders (a `Detector`); `transport()` fills the output `Buffers` (counters indexed
by N_HITS, N_NEW, OVERFLOW, STEPS) and moves one particle at a time in a `TRACK` record (the particle, its helix
and its energy-dependent quantities). `_charged` is the crossing loop: `_set_helix`, `_next_crossing`, a decay
before the crossing (`_decay_angle`, `_decay`), `_advance`, the gas step (`_gas_step`, `_delta_electron`), a pad
row (`_row_deposit`, `_knock_on`, the cluster) or material (the silicon cluster, `_material`), `_gas_update`,
`_lose_energy`. Photons: `_photon`, `_interact` (`_pair`, `_compton`).

Numba: a function that holds a tuple of arrays (`det`, `buf`) across a random draw makes Numba increment and
decrement, atomically, the reference count of each array at every call; at one call per crossing that costs about
5 % of the run time. So the step functions take no `buf` and read what they need of `det` first thing, the
recording functions (`_add_hit`, `_merge_cluster`, `_add_particle`) draw no random numbers, and `_charged` writes
the clusters itself.

All randomness comes from Numba's generator seeded once per call, so one (seed, input) gives identical output.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba as nb
import numpy as np

from .. import geometry as g
from .decays import decay, proper_decay_length
from .generator import charge_of
from .hadronic import interacts, mass_of, nuclear_length, secondaries
from .physics import (
    bethe_dedx,
    compton_probability,
    delta_cos_theta,
    delta_rate,
    highland_theta0,
    landau_mpv,
    moyal,
    pair_probability,
    rotate_to_angle,
    sample_compton,
    sample_delta_energy,
    scatter,
)

TWO_PI = 2.0 * math.pi
C_CM_PER_NS = 29.9792458
#: creator process codes of new particles
PROCESS_CONVERSION = 1
PROCESS_DELTA = 2
#: a knock-on electron absorbed in the cluster it owns: a truth particle, not transported
PROCESS_ABSORBED_DELTA = 3
#: a secondary of an inelastic hadron-nucleus interaction (see hadronic.py)
PROCESS_HADRONIC = 4
#: the electron and the scattered photon of a Compton scatter
PROCESS_COMPTON = 5
#: a product of a charged pion's, kaon's or muon's decay, in flight or at rest (see decays.py)
PROCESS_DECAY = 6
#: slots of Buffers.cnt: hits and new particles written, a buffer overflowed (1), crossings computed
N_HITS = 0
N_NEW = 1
OVERFLOW = 2
STEPS = 3
#: crossings after which a charged particle is given up
MAX_CROSSINGS = 100000
#: Most clusters one pad-row crossing splits into (see _streak)
MAX_STREAK_CLUSTERS = 32

_ME = g.ELECTRON_MASS
_GAS = (g.GAS_Z_OVER_A, g.GAS_I, g.GAS_DENSITY)
_KEV_TO_ADC = 1e6 * g.ADC_PER_KEV * g.ADC_SCALE  # GeV -> ADC counts
_CURV = 100.0 / (g.C_LIGHT_FIELD * g.B_FIELD)  # R[cm] = _CURV * pT / |q|
_GAS_PER_NUCLEAR_LENGTH = g.GAS_DENSITY / g.GAS_NUCLEAR_LENGTH  # nuclear interaction lengths per cm of gas
_GAS_ELECTRONS_PER_CM = g.GAS_DENSITY * g.AVOGADRO * g.GAS_Z_OVER_A  # electrons per cm3 of gas
_MATERIAL_ELECTRONS_PER_G = g.AVOGADRO * g.MATERIAL_Z_OVER_A
_LAST_MVTX_LAYER = g.MVTX_LAYERS[-1]


class Detector(NamedTuple):
    """The cylinders of the detector model, one entry per cylinder, sorted by radius (see the module docstring)."""

    r: np.ndarray  # radius (cm)
    half_z: np.ndarray  # half-length (cm)
    x0: np.ndarray  # x/X0 at normal incidence (0 for pad rows)
    areal: np.ndarray  # areal density (g/cm2; 0 for pad rows)
    layer: np.ndarray  # sPHENIX layer whose clusters it records, -1 for passive material
    tpc: np.ndarray  # 1 for a TPC pad-row centre, 0 for material
    row_dr: np.ndarray  # pad-row thickness (cm; 0 for material)
    nuclear: np.ndarray  # nuclear interaction length (g/cm2; 0 for pad rows)
    first_gas: int  # the first gap in the TPC gas (gap k lies between cylinders k-1 and k)
    last_gas: int  # the last gap in the TPC gas, inside the outer field cage


class Buffers(NamedTuple):
    """What transport() writes; the rows in use are counted in cnt."""

    hit_f: np.ndarray  # (hit_cap, 7) x y z (smeared), gx gy gz (true), adc
    hit_i: np.ndarray  # (hit_cap, 3) event, particle, layer
    new_f: np.ndarray  # (new_cap, 7) px py pz x y z t of the particles the detector made
    new_i: np.ndarray  # (new_cap, 4) event, pdg, parent, process
    cnt: np.ndarray  # (4,) counters indexed by N_HITS, N_NEW, OVERFLOW, STEPS
    last: np.ndarray  # (64,) per layer: the hit_f row of the current particle's latest cluster, -1 for none


_F8 = np.float64
#: The particle being transported (a record of this dtype; its fields are read and set by name).
TRACK = np.dtype(
    [
        # the particle: event, index (into the input particles, then n0 + row of Buffers.new_f), kinematics, the
        # production time, the path length at which it decays and the path length so far
        ("ev", np.int64),
        ("index", np.int64),
        ("pdg", np.int64),
        ("charge", _F8),
        ("mass", _F8),
        ("x", _F8),
        ("y", _F8),
        ("z", _F8),
        ("t", _F8),
        ("px", _F8),
        ("py", _F8),
        ("pz", _F8),
        ("end_len", _F8),
        ("s", _F8),
        # the helix from the current point: sense of rotation seen from +z (-1 clockwise), radius per GeV of pT,
        # radius, centre, phase of the point on the circle, centre's distance from and phase around the beam line
        ("sense", _F8),
        ("r_per_pt", _F8),
        ("radius", _F8),
        ("xc", _F8),
        ("yc", _F8),
        ("phi0", _F8),
        ("d", _F8),
        ("phic", _F8),
        ("pt", _F8),
        ("p", _F8),
        ("e", _F8),
        # the energy-dependent quantities, computed at the momentum p_phys
        ("p_phys", _F8),
        ("beta_gamma", _F8),
        ("dedx", _F8),  # gas
        ("xi_cm", _F8),  # Landau width per cm of gas
        ("landau_c", _F8),  # most probable loss over L: xi_cm L (landau_c + ln L)
        ("rate_delta", _F8),  # delta electrons followed on their own, per cm
        ("rate_label", _F8),  # knock-on electrons absorbed in the row, per cm
        ("row_mpv", _F8),  # most probable loss in the pad row being crossed
        # optical depths left to the next delta electron and knock-on (unit exponentials), gas path not yet
        # applied to energy and direction, the gap the particle is in, whether the helix must be recomputed
        ("to_delta", _F8),
        ("to_label", _F8),
        ("gas_path", _F8),
        ("gap", np.int64),
        ("need_helix", np.bool_),
        # a hadron with nuclear interactions, and its optical depth left to the next one (unit exponential)
        ("hadron", np.bool_),
        ("to_nuclear", _F8),
        # a charged pion, kaon or muon that decays here: its c tau (0 for other particles and for those whose decay
        # the generator made) and the proper decay lengths (units of c tau) it has left to live (unit exponential)
        ("ctau", _F8),
        ("to_decay", _F8),
    ],
    align=True,
)


def detector() -> Detector:
    """The cylinders of the detector model: the material of geometry.MATERIAL and the TPC pad-row centres."""
    rows = []
    for (_name, radius, half_z, x0, areal, layer), a in zip(g.MATERIAL, g.MATERIAL_MASS_NUMBER, strict=True):
        rows.append((radius, half_z, x0, areal, layer, 0, 0.0, nuclear_length(a)))
    module = g.layer_module(np.arange(g.N_LAYERS))
    for i, radius in enumerate(g.LAYER_RADII):
        rows.append((radius, g.DRIFT_LENGTH, 0.0, 0.0, g.FIRST_TPC_LAYER + i, 1, g.ROW_THICKNESS[module[i]], 0.0))
    # the calorimeter's face: the outermost cylinder, no material (x/X0 0, so no conversions); crossing it ends a
    # particle (see _charged)
    rows.append((g.EMCAL_INNER_RADIUS, 1e4, 0.0, 0.0, -1, 0, 0.0, 1.0))
    rows.sort(key=lambda row: row[0])
    cols = list(zip(*rows, strict=True))
    r = np.array(cols[0], np.float64)
    cages = {name: radius for name, radius, *_ in g.MATERIAL}
    inner = int(np.flatnonzero(r == cages[g.INNER_FIELD_CAGE])[0])
    outer = int(np.flatnonzero(r == cages[g.OUTER_FIELD_CAGE])[0])
    return Detector(
        r=r,
        half_z=np.array(cols[1], np.float64),
        x0=np.array(cols[2], np.float64),
        areal=np.array(cols[3], np.float64),
        layer=np.array(cols[4], np.int64),
        tpc=np.array(cols[5], np.int64),
        row_dr=np.array(cols[6], np.float64),
        nuclear=np.array(cols[7], np.float64),
        first_gas=inner + 1,
        last_gas=outer,
    )


# --------------------------------------------------------------------------------------------------------------
# Recording: these take the buffers and draw no random numbers (see the module docstring)
# --------------------------------------------------------------------------------------------------------------


@nb.njit(cache=True, inline="always")
def _add_hit(buf, ev, particle, layer, measured, x, y, z, adc):
    """A cluster of the particle at the true point (x, y, z), measured at `measured` (x, y, z); it becomes the
    particle's latest cluster on the layer."""
    hit_f, hit_i, cnt, last = buf.hit_f, buf.hit_i, buf.cnt, buf.last
    k = cnt[N_HITS]
    if k >= hit_f.shape[0]:
        cnt[OVERFLOW] = 1
        return
    hit_f[k, 0], hit_f[k, 1], hit_f[k, 2] = measured
    hit_f[k, 3] = x
    hit_f[k, 4] = y
    hit_f[k, 5] = z
    hit_f[k, 6] = adc
    hit_i[k, 0] = ev
    hit_i[k, 1] = particle
    hit_i[k, 2] = layer
    cnt[N_HITS] = k + 1
    last[layer] = k


@nb.njit(cache=True, inline="always")
def _merge_cluster(buf, layer, x, y, z, adc):
    """Add adc to the particle's latest cluster on the layer if (x, y, z) is within the clusterizer window of it;
    whether it was."""
    hit_f, last = buf.hit_f, buf.last
    j = last[layer]
    if j >= 0:
        dz = abs(hit_f[j, 5] - z)
        dxy = math.hypot(hit_f[j, 3] - x, hit_f[j, 4] - y)
        if dz < g.CLUSTER_WINDOW_Z and dxy < g.CLUSTER_WINDOW_RPHI:
            hit_f[j, 6] = min(hit_f[j, 6] + adc, g.ADC_CLUSTER_MAX)
            return True
    return False


@nb.njit(cache=True)
def _add_particle(buf, ev, pdg, px, py, pz, x, y, z, t, parent, process):
    """A particle made by the detector, transported after the event's input particles."""
    new_f, new_i, cnt = buf.new_f, buf.new_i, buf.cnt
    k = cnt[N_NEW]
    if k >= new_f.shape[0]:
        cnt[OVERFLOW] = 1
        return
    new_f[k, 0] = px
    new_f[k, 1] = py
    new_f[k, 2] = pz
    new_f[k, 3] = x
    new_f[k, 4] = y
    new_f[k, 5] = z
    new_f[k, 6] = t
    new_i[k, 0] = ev
    new_i[k, 1] = pdg
    new_i[k, 2] = parent
    new_i[k, 3] = process
    cnt[N_NEW] = k + 1


@nb.njit(cache=True)
def _add_products(buf, trk, n, pdg, mom, t, process):
    """The first n rows of (pdg, mom) as new particles made by the particle in trk where it is, at time t."""
    for j in range(n):
        _add_particle(buf, trk.ev, pdg[j], mom[j, 0], mom[j, 1], mom[j, 2], trk.x, trk.y, trk.z, t, trk.index, process)


# --------------------------------------------------------------------------------------------------------------
# Random draws
# --------------------------------------------------------------------------------------------------------------


@nb.njit(cache=True, inline="always")
def _smear_on_cylinder(x, y, z, sigma_rphi, sigma_z):
    """Gaussian smearing along the cylinder's tangent (r-phi) and along z."""
    r = math.sqrt(x * x + y * y)
    shift = np.random.normal() * sigma_rphi / r
    return x - y * shift, y + x * shift, z + np.random.normal() * sigma_z


@nb.njit(cache=True, inline="always")
def _silicon_smear(trk, layer):
    """The measured position of an MVTX or INTT cluster at the particle's position."""
    sigma_rphi = g.MVTX_SIGMA if layer <= _LAST_MVTX_LAYER else g.INTT_SIGMA_RPHI
    sigma_z = g.MVTX_SIGMA if layer <= _LAST_MVTX_LAYER else g.INTT_SIGMA_Z
    return _smear_on_cylinder(trk.x, trk.y, trk.z, sigma_rphi, sigma_z)


# --------------------------------------------------------------------------------------------------------------
# Electrons knocked out by a charged particle (rare: these may take the buffers and draw)
# --------------------------------------------------------------------------------------------------------------


@nb.njit(cache=True)
def _emit_delta(trk, buf, tk, process):
    """A knock-on electron of kinetic energy tk at the particle's position, at the kinematic angle to it."""
    pe = math.sqrt(tk * tk + 2.0 * _ME * tk)
    ex, ey, ez = rotate_to_angle(trk.px, trk.py, trk.pz, delta_cos_theta(tk, trk.beta_gamma, trk.mass))
    t = trk.t + trk.s / C_CM_PER_NS
    _add_particle(buf, trk.ev, 11, pe * ex, pe * ey, pe * ez, trk.x, trk.y, trk.z, t, trk.index, process)


@nb.njit(cache=True)
def _delta_electron(trk, buf):
    """A delta electron energetic enough to be followed on its own, and the depth to the next one; its energy."""
    tk = sample_delta_energy(trk.beta_gamma, trk.mass, g.DELTA_T_MIN, 1e30)
    _emit_delta(trk, buf, tk, PROCESS_DELTA)
    trk.to_delta -= math.log(1.0 - np.random.random())
    return tk


@nb.njit(cache=True)
def _nuclear_interaction(trk, buf):
    """An inelastic nuclear interaction at the particle's position: it is absorbed, its secondaries are new
    particles (see hadronic.py)."""
    n, pdg, mom = secondaries(trk.e - trk.mass, trk.px, trk.py, trk.pz)
    _add_products(buf, trk, n, pdg, mom, trk.t + trk.s / C_CM_PER_NS, PROCESS_HADRONIC)


@nb.njit(cache=True)
def _decay(trk, buf):
    """A charged pion, kaon or muon decays in flight where it is: its visible products are new particles (see
    decays.py)."""
    n, pdg, mom = decay(trk.pdg, trk.px, trk.py, trk.pz)
    _add_products(buf, trk, n, pdg, mom, trk.t + trk.s / C_CM_PER_NS, PROCESS_DECAY)


@nb.njit(cache=True)
def _stopped(trk, buf):
    """A particle that ranged out where it is: a pi+, K+ or mu+ decays at rest after its lifetime, a mu- with
    probability MUON_MINUS_DECAY_FRACTION after its lifetime in the gas's atoms (MUON_MINUS_GAS_LIFETIME); a pi- or
    K-, or a mu- that is not decaying, is captured by a nucleus (its nuclear products are not followed). The
    products' production time carries the delay, which moves their TPC clusters (runner.drift_delays)."""
    if trk.ctau == 0.0:  # not a pion, kaon or muon, or one whose decay the generator already made
        return
    if trk.charge < 0.0 and (abs(trk.pdg) != 13 or np.random.random() >= g.MUON_MINUS_DECAY_FRACTION):
        return
    n, pdg, mom = decay(trk.pdg, 0.0, 0.0, 0.0)
    life = g.MUON_MINUS_GAS_LIFETIME if trk.pdg == 13 else proper_decay_length(trk.pdg) / C_CM_PER_NS
    t = trk.t + trk.s / C_CM_PER_NS - math.log(1.0 - np.random.random()) * life
    _add_products(buf, trk, n, pdg, mom, t, PROCESS_DECAY)


@nb.njit(cache=True)
def _knock_on(trk, buf, deposit, n0):
    """A knock-on electron absorbed in the pad row, and the depth to the next one: (the row's deposit with its
    energy, the cluster's owner). It owns the cluster if it dominates it, as a truth particle (not transported)."""
    tk = sample_delta_energy(trk.beta_gamma, trk.mass, g.DELTA_T_LABEL, g.DELTA_T_MIN)
    absorbed = min(tk, g.DELTA_ABSORBED_MAX)
    owner = trk.index
    if absorbed > min(deposit, trk.row_mpv):
        owner = n0 + buf.cnt[N_NEW]
        _emit_delta(trk, buf, tk, PROCESS_ABSORBED_DELTA)
    deposit += absorbed
    trk.to_label = -math.log(1.0 - np.random.random())
    return deposit, owner


# --------------------------------------------------------------------------------------------------------------
# Photons
# --------------------------------------------------------------------------------------------------------------


@nb.njit(cache=True)
def _photon(trk, det, buf):
    """Straight line through the material cylinders and the TPC gas between the field cages; in each it converts
    to e+ e- or Compton-scatters with the probability of each (_interact), which ends it.

    A photon that starts outside a cylinder (a scattered one, in the gas or beyond) does not cross it again: one
    scattered back inwards is followed through the gas on both sides of the inner field cage as far as the outer
    one, and the inner material it would also cross is neglected."""
    radii, half_z, x0, tpc, areal = det.r, det.half_z, det.x0, det.tpc, det.areal
    energy = math.sqrt(trk.px * trk.px + trk.py * trk.py + trk.pz * trk.pz)
    x, y, z = trk.x, trk.y, trk.z
    ux, uy, uz = trk.px / energy, trk.py / energy, trk.pz / energy
    a = ux * ux + uy * uy
    if a < 1e-12:
        return
    b = 2.0 * (x * ux + y * uy)
    for s in range(radii.shape[0]):
        if tpc[s] == 1:
            continue
        if s == det.last_gas:  # the gas between the field cages, before the outer one
            inner = radii[det.first_gas - 1]
            t_in = _path_to_radius(x, y, a, b, inner)
            t_out = _path_to_radius(x, y, a, b, radii[s])
            if abs(uz) > 1e-12:
                t_out = min(t_out, (math.copysign(g.DRIFT_LENGTH, uz) - z) / uz)
            # one scattered back inwards crosses the inner field cage's cylinder: that chord is not gas
            c_in = x * x + y * y
            chord_in, chord = 0.0, 0.0
            disc = b * b - 4.0 * a * (c_in - inner * inner)
            if b < 0.0 and c_in > inner * inner and disc > 0.0:
                chord_in = (-b - math.sqrt(disc)) / (2.0 * a)
                chord = math.sqrt(disc) / a
            gas = t_out - t_in - chord
            at = t_in + np.random.random() * gas
            if chord > 0.0 and at > chord_in:
                at += chord
            if gas > 0.0 and _interact(trk, buf, energy, ux, uy, uz, at, gas / g.GAS_X0, gas * _GAS_ELECTRONS_PER_CM):
                return
        rr = radii[s]
        tpath = _path_to_radius(x, y, a, b, rr)
        if tpath < 1e-6:  # starts outside this cylinder (or on it, where a scattered photon was made)
            continue
        zc = z + tpath * uz
        if abs(zc) > half_z[s]:
            continue
        xc, yc = x + tpath * ux, y + tpath * uy
        cos_n = max(abs(xc * ux + yc * uy) / rr, 0.05)
        electrons = areal[s] / cos_n * _MATERIAL_ELECTRONS_PER_G
        if _interact(trk, buf, energy, ux, uy, uz, tpath, x0[s] / cos_n, electrons):
            return


@nb.njit(cache=True, inline="always")
def _path_to_radius(x, y, a, b, radius):
    """Path length along a straight line from (x, y) (direction with a = ux^2 + uy^2, b = 2 (x ux + y uy)) to where
    it leaves the cylinder of this radius; 0 if it starts outside."""
    c = x * x + y * y - radius * radius
    if c >= 0.0:
        return 0.0
    return (-b + math.sqrt(b * b - 4.0 * a * c)) / (2.0 * a)


@nb.njit(cache=True)
def _interact(trk, buf, energy, ux, uy, uz, tpath, x_over_x0, electrons):
    """Whether the photon interacts in x_over_x0 of material holding `electrons` per cm2, after tpath cm: it converts
    (_pair) or Compton-scatters (_compton) there, with the probability of each (both small, so they are simply
    added)."""
    u = np.random.random()
    p_pair = pair_probability(energy, x_over_x0)
    interacts_here = u < p_pair + compton_probability(energy, electrons)
    if interacts_here:
        xc, yc, zc = trk.x + tpath * ux, trk.y + tpath * uy, trk.z + tpath * uz
        tc = trk.t + tpath / C_CM_PER_NS
        if u < p_pair:
            _pair(trk, buf, energy, ux, uy, uz, xc, yc, zc, tc)
        else:
            _compton(trk, buf, energy, ux, uy, uz, xc, yc, zc, tc)
    return interacts_here


@nb.njit(cache=True)
def _compton(trk, buf, energy, ux, uy, uz, xc, yc, zc, tc):
    """The photon Compton-scatters at (xc, yc, zc) at time tc (Klein-Nishina): the electron, when above DELTA_T_MIN
    (as for delta electrons), and the scattered photon become new particles; the scattered photon is followed from
    there."""
    eps, cos_theta = sample_compton(energy)
    gx, gy, gz = rotate_to_angle(ux, uy, uz, cos_theta)
    e_out = eps * energy
    if energy - e_out > g.DELTA_T_MIN:  # the electron takes the momentum the photon lost
        ex, ey, ez = energy * ux - e_out * gx, energy * uy - e_out * gy, energy * uz - e_out * gz
        _add_particle(buf, trk.ev, 11, ex, ey, ez, xc, yc, zc, tc, trk.index, PROCESS_COMPTON)
    if e_out > g.DELTA_T_MIN:
        _add_particle(buf, trk.ev, 22, e_out * gx, e_out * gy, e_out * gz, xc, yc, zc, tc, trk.index, PROCESS_COMPTON)


@nb.njit(cache=True)
def _pair(trk, buf, energy, ux, uy, uz, xc, yc, zc, tc):
    """The photon converts at (xc, yc, zc) at time tc: an e+ e- pair along its direction, sharing its energy
    uniformly."""
    frac = np.random.random()
    for sign, e_i in ((1, frac * energy), (-1, (1.0 - frac) * energy)):
        if e_i > _ME:
            pe = math.sqrt(e_i * e_i - _ME * _ME)
            _add_particle(
                buf, trk.ev, 11 * sign, pe * ux, pe * uy, pe * uz, xc, yc, zc, tc, trk.index, PROCESS_CONVERSION
            )


# --------------------------------------------------------------------------------------------------------------
# Charged particles: the steps of a crossing (they take no buffers)
# --------------------------------------------------------------------------------------------------------------


@nb.njit(cache=True)
def _label_rate(beta_gamma, mass):
    """Knock-on electrons per cm with DELTA_T_LABEL < T < DELTA_T_MIN: absorbed where they are made."""
    return delta_rate(beta_gamma, mass, g.DELTA_T_LABEL, _GAS[0], _GAS[2]) - delta_rate(
        beta_gamma, mass, g.DELTA_T_MIN, _GAS[0], _GAS[2]
    )


@nb.njit(cache=True, inline="always")
def _start_track(trk, det):
    """Set-up of a charged particle: its sense of rotation, its gap, and the depths to its first knock-ons."""
    radii = det.r
    trk.sense = -1.0 if trk.charge > 0 else 1.0  # +1: counter-clockwise seen from +z (B along +z)
    trk.r_per_pt = _CURV / abs(trk.charge)
    trk.gap = np.searchsorted(radii, math.hypot(trk.x, trk.y))
    trk.s = 0.0
    trk.gas_path = 0.0
    trk.need_helix = True
    trk.p_phys = -1.0  # nothing computed yet
    trk.to_delta = -math.log(1.0 - np.random.random())
    trk.to_label = -math.log(1.0 - np.random.random())
    trk.hadron = interacts(trk.pdg)
    if trk.hadron:
        trk.to_nuclear = -math.log(1.0 - np.random.random())
    # PYTHIA decays only the particles it gives a decay length; charged pions, kaons and muons decay here, as in
    # Geant4
    trk.ctau = proper_decay_length(trk.pdg) if trk.end_len >= 1e30 else 0.0
    if trk.ctau > 0.0:
        trk.to_decay = -math.log(1.0 - np.random.random())


@nb.njit(cache=True)
def _set_energy_quantities(trk):
    """Energy loss, Landau width, delta and knock-on rates in the gas at the current momentum."""
    trk.p_phys = trk.p
    beta_gamma = trk.p / trk.mass
    trk.beta_gamma = beta_gamma
    trk.dedx = bethe_dedx(beta_gamma, trk.mass, _GAS[0], _GAS[1], _GAS[2])
    mpv1, xi_cm = landau_mpv(beta_gamma, 1.0, _GAS[0], _GAS[1], _GAS[2])
    trk.xi_cm = xi_cm
    trk.landau_c = mpv1 / xi_cm  # mpv(L) = xi_cm L (landau_c + ln L)
    trk.rate_delta = delta_rate(beta_gamma, trk.mass, g.DELTA_T_MIN, _GAS[0], _GAS[2])
    trk.rate_label = _label_rate(beta_gamma, trk.mass)


@nb.njit(cache=True, inline="always")
def _set_helix(trk):
    """The circle through the current point from the momentum; False when the particle has stopped.

    The energy-dependent quantities are recomputed when the momentum changed by more than 1 % since they were."""
    pt = math.hypot(trk.px, trk.py)
    p = math.sqrt(pt * pt + trk.pz * trk.pz)
    e = math.sqrt(p * p + trk.mass * trk.mass)
    if pt < 1e-9 or e - trk.mass < g.STOP_KINETIC_ENERGY:
        return False
    h = trk.sense
    radius = trk.r_per_pt * pt
    ux, uy = trk.px / pt, trk.py / pt
    xc, yc = trk.x - h * radius * uy, trk.y + h * radius * ux
    trk.pt, trk.p, trk.e = pt, p, e
    trk.radius, trk.xc, trk.yc = radius, xc, yc
    trk.phi0 = math.atan2(trk.y - yc, trk.x - xc)
    trk.d = math.hypot(xc, yc)
    trk.phic = math.atan2(yc, xc)
    if abs(p - trk.p_phys) > 0.01 * trk.p_phys:
        _set_energy_quantities(trk)
    trk.need_helix = False
    return True


@nb.njit(cache=True, inline="always")
def _next_crossing(trk, det):
    """(turning angle, cylinder) of the first crossing of the circle with the two cylinders around its gap.

    The cylinder is -1 when the circle crosses neither (it curls inside the gap)."""
    radii = det.r
    k, d, radius, h = trk.gap, trk.d, trk.radius, trk.sense
    best = 1e30
    best_s = -1
    for cand in (k - 1, k):
        if cand < 0 or cand >= radii.shape[0] or d < 1e-9:
            continue
        rho = radii[cand]
        c = (rho * rho - d * d - radius * radius) / (2.0 * radius * d)
        if c < -1.0 or c > 1.0:
            continue
        a = math.acos(c)
        for alpha in (trk.phic + a, trk.phic - a):
            dphi = (h * (alpha - trk.phi0)) % TWO_PI
            if 1e-7 < dphi < best and dphi < TWO_PI - 1e-7:
                best = dphi
                best_s = cand
    return best, best_s


@nb.njit(cache=True, inline="always")
def _advance(trk, dphi):
    """Move along the helix by the turning angle dphi; the path length, or -1 when the particle leaves |z| <
    drift length, decays or exceeds MAX_PATH_LENGTH on the way (it is then not moved)."""
    z_new = trk.z + trk.pz / trk.pt * trk.radius * dphi
    arc = trk.radius * dphi * trk.p / trk.pt
    s_new = trk.s + arc
    if abs(z_new) > g.DRIFT_LENGTH or s_new > trk.end_len or s_new > g.MAX_PATH_LENGTH:
        return -1.0
    h, pt, radius = trk.sense, trk.pt, trk.radius
    trk.phi0 = trk.phi0 + h * dphi
    cphi, sphi = math.cos(trk.phi0), math.sin(trk.phi0)
    trk.x, trk.y, trk.z = trk.xc + radius * cphi, trk.yc + radius * sphi, z_new
    trk.px, trk.py = -h * pt * sphi, h * pt * cphi
    trk.s = s_new
    return arc


@nb.njit(cache=True, inline="always")
def _decay_angle(trk, dphi):
    """The turning angle at which a decaying particle decays if that is within dphi, else -1 (and the proper
    length of the arc is used up)."""
    proper = trk.radius * dphi * trk.p / trk.pt / (trk.beta_gamma * trk.ctau)
    if proper >= trk.to_decay:
        return dphi * trk.to_decay / proper
    trk.to_decay -= proper
    return -1.0


@nb.njit(cache=True, inline="always")
def _gas_step(trk, arc):
    """A gas path arc: it joins the path not yet applied (see _gas_update) and uses up optical depth to the next
    delta electron."""
    trk.gas_path += arc
    trk.to_delta -= arc * trk.rate_delta
    if trk.hadron:
        trk.to_nuclear -= arc * _GAS_PER_NUCLEAR_LENGTH


@nb.njit(cache=True, inline="always")
def _cos_incidence(trk, radius):
    """Cosine of the angle between the transverse momentum and the cylinder's normal, floored at 0.05."""
    return max(abs(trk.x * trk.px + trk.y * trk.py) / (radius * trk.p), 0.05)


@nb.njit(cache=True, inline="always")
def _row_deposit(trk, det, surface):
    """Crossing a pad row: the Moyal energy deposit over the row's path length; uses up optical depth to the next
    knock-on electron (see _knock_on)."""
    radius, row_dr = det.r[surface], det.row_dr[surface]
    path = row_dr / _cos_incidence(trk, radius)
    xi = trk.xi_cm * path
    trk.row_mpv = max(xi * (trk.landau_c + math.log(path)), 0.0)
    deposit = max(trk.row_mpv + xi * moyal(), 0.0)
    trk.to_label -= path * trk.rate_label
    return deposit


@nb.njit(cache=True, inline="always")
def _streak(trk, det, surface):
    """A pad-row crossing's track length in the transverse plane (cm) and the number of clusters it makes. Charge
    closer than CLUSTER_WINDOW_RPHI in r-phi and CLUSTER_WINDOW_Z in z to a cluster joins it (the rule that
    _merge_cluster applies to two crossings), so a streak longer than that (a crossing at a grazing angle, as at a
    looper's turning point, or a steep dip) splits into pieces at that spacing."""
    row_dr, radius = det.row_dr[surface], det.r[surface]
    # a grazing crossing stays in the row over at most the chord whose sagitta, against the row's own curvature,
    # is the row's thickness
    relative_curvature = abs(1.0 / trk.radius - 1.0 / radius)
    path_xy = min(row_dr / _cos_incidence(trk, radius), 2.0 * math.sqrt(2.0 * row_dr / relative_curvature))
    rphi = math.sqrt(max(path_xy * path_xy - row_dr * row_dr, 0.0))
    dz = path_xy * abs(trk.pz) / trk.pt
    pieces = max(rphi / g.CLUSTER_WINDOW_RPHI, dz / g.CLUSTER_WINDOW_Z)
    return path_xy, min(int(math.ceil(pieces)), MAX_STREAK_CLUSTERS) if pieces > 1.0 else 1


@nb.njit(cache=True, inline="always")
def _material(trk, det, surface, de):
    """Crossing a material cylinder: Bethe loss and bremsstrahlung added to de (returned), Highland scattering."""
    radius, x0, areal = det.r[surface], det.x0[surface], det.areal[surface]
    cos_n = _cos_incidence(trk, radius)
    xx0 = x0 / cos_n
    if trk.hadron:
        trk.to_nuclear -= areal / cos_n / det.nuclear[surface]
    de += bethe_dedx(trk.beta_gamma, trk.mass, g.MATERIAL_Z_OVER_A, g.MATERIAL_I, 1.0) * areal / cos_n
    theta0 = highland_theta0(trk.p, trk.beta_gamma / math.sqrt(1.0 + trk.beta_gamma**2), xx0)
    if abs(trk.pdg) == 11:
        de += (trk.e - de) * (1.0 - math.exp(-xx0))
    trk.px, trk.py, trk.pz = scatter(trk.px, trk.py, trk.pz, theta0)
    trk.need_helix = True
    return de


@nb.njit(cache=True, inline="always")
def _gas_update(trk):
    """Apply the gas path gathered so far to direction (Highland) and return its Bethe loss (and, for e+-, the mean
    bremsstrahlung loss (E - Bethe loss) (1 - exp(-x / X0)) as in the solid layers), once it exceeds
    GAS_UPDATE_PATH or GAS_UPDATE_RANGE_FRACTION of the remaining range (a particle about to stop), or before the
    helix is recomputed anyway; 0 otherwise."""
    step = min(g.GAS_UPDATE_PATH, g.GAS_UPDATE_RANGE_FRACTION * (trk.e - trk.mass) / trk.dedx)
    if not (trk.gas_path > step or (trk.need_helix and trk.gas_path > 0.0)):
        return 0.0
    de = trk.dedx * trk.gas_path
    kinetic = trk.e - trk.mass
    if de > 0.02 * kinetic:  # dE/dx changes over the step: take it at the step's mid-point energy (2nd order)
        t_mid = max(kinetic - 0.5 * de, g.STOP_KINETIC_ENERGY)
        beta_gamma = math.sqrt(t_mid * t_mid + 2.0 * t_mid * trk.mass) / trk.mass
        de = bethe_dedx(beta_gamma, trk.mass, _GAS[0], _GAS[1], _GAS[2]) * trk.gas_path
    theta0 = highland_theta0(trk.p, trk.p / trk.e, trk.gas_path / g.GAS_X0)
    if abs(trk.pdg) == 11:  # bremsstrahlung, its mean over the path as in the solid layers
        de += (trk.e - de) * (1.0 - math.exp(-trk.gas_path / g.GAS_X0))
    trk.px, trk.py, trk.pz = scatter(trk.px, trk.py, trk.pz, theta0)
    trk.gas_path = 0.0
    trk.need_helix = True
    return de


@nb.njit(cache=True, inline="always")
def _kinetic(trk):
    """Kinetic energy from the current momentum."""
    p2 = trk.px * trk.px + trk.py * trk.py + trk.pz * trk.pz
    return math.sqrt(p2 + trk.mass * trk.mass) - trk.mass


@nb.njit(cache=True, inline="always")
def _lose_energy(trk, de):
    """Take de off the energy, keeping the direction; False when the particle ranges out."""
    e_new = trk.e - de
    if e_new - trk.mass < g.STOP_KINETIC_ENERGY:
        return False
    scale = math.sqrt(e_new * e_new - trk.mass * trk.mass) / trk.p
    trk.px, trk.py, trk.pz = trk.px * scale, trk.py * scale, trk.pz * scale
    trk.need_helix = True
    return True


# --------------------------------------------------------------------------------------------------------------
# Charged particles: the crossing loop, and the particle that curls in place
# --------------------------------------------------------------------------------------------------------------


@nb.njit(cache=True)
def _trapped(trk, buf):
    """A particle curling between two pad-row centres: clusters along its z drift on the row it sits in, if it is
    within a row's thickness of one; one that ranges out there then stops (_stopped)."""
    d = math.hypot(trk.xc, trk.yc)
    radii = g.LAYER_RADII
    best = 0
    for j in range(radii.shape[0]):
        if abs(radii[j] - d) < abs(radii[best] - d):
            best = j
    on_row = abs(radii[best] - d) <= g.ROW_THICKNESS[best // g.LAYERS_PER_MODULE]
    px, py, pz, mass, z, s = trk.px, trk.py, trk.pz, trk.mass, trk.z, trk.s
    p = math.sqrt(px * px + py * py + pz * pz)
    e = math.sqrt(p * p + mass * mass)
    kinetic = e - mass
    dedx = bethe_dedx(p / mass, mass, _GAS[0], _GAS[1], _GAS[2])
    range_path = kinetic / dedx
    cz = pz / p
    zlim = 1e30
    if cz > 1e-9:
        zlim = (g.DRIFT_LENGTH - z) / cz
    elif cz < -1e-9:
        zlim = (-g.DRIFT_LENGTH - z) / cz
    length = min(range_path, zlim, g.MAX_PATH_LENGTH - s, trk.end_len - s)
    if length <= 0.0:
        return
    deposit = kinetic if length >= range_path else dedx * length
    dz_total = length * cz
    n = min(200, max(1, int(math.ceil(abs(dz_total) / g.CLUSTER_WINDOW_Z)))) if on_row else 0
    layer = g.FIRST_TPC_LAYER + best
    xc, yc = trk.xc, trk.yc
    for j in range(n):
        zj = z + (j + 0.5) / n * dz_total
        if g.CENTRAL_MEMBRANE_HALF_WIDTH < abs(zj) < g.DRIFT_LENGTH:
            adc = min(deposit / n * (0.7 + 0.6 * np.random.random()) * _KEV_TO_ADC, g.ADC_CLUSTER_MAX)
            if not _merge_cluster(buf, layer, xc, yc, zj, adc):
                measured = _smear_on_cylinder(xc, yc, zj, g.TPC_SIGMA_RPHI, g.TPC_SIGMA_Z)
                _add_hit(buf, trk.ev, trk.index, layer, measured, xc, yc, zj, adc)
    if length >= range_path:  # it stops at the end of its drift
        trk.x, trk.y, trk.z = xc, yc, z + dz_total
        trk.s += length
        _stopped(trk, buf)


@nb.njit(cache=True)
def _charged(trk, det, buf, n0):
    """Transport one charged particle crossing by crossing (see the module docstring)."""
    buf.last[:] = -1
    _start_track(trk, det)
    for _ in range(MAX_CROSSINGS):
        if trk.need_helix and not _set_helix(trk):
            if _kinetic(trk) < g.STOP_KINETIC_ENERGY:  # (not a particle moving along the beam line)
                _stopped(trk, buf)
            return  # ranged out
        buf.cnt[STEPS] += 1
        dphi, surface = _next_crossing(trk, det)
        in_gas = det.first_gas <= trk.gap <= det.last_gas
        if surface < 0:  # the circle curls inside its gap
            if in_gas:
                _trapped(trk, buf)
            return
        if trk.ctau > 0.0:
            to_decay = _decay_angle(trk, dphi)
            if to_decay >= 0.0:  # it decays before the crossing
                if _advance(trk, to_decay) >= 0.0:
                    _decay(trk, buf)
                return
        arc = _advance(trk, dphi)
        if arc < 0.0:
            return  # left the drift volume or decayed before the crossing
        de = 0.0  # energy lost at this crossing
        if in_gas:
            _gas_step(trk, arc)
            while trk.to_delta <= 0.0:  # delta electrons energetic enough to be followed on their own
                de += _delta_electron(trk, buf)
        layer = det.layer[surface]
        if det.tpc[surface] == 1:
            if abs(trk.z) > g.CENTRAL_MEMBRANE_HALF_WIDTH:  # the central membrane collects no charge
                deposit, owner = _row_deposit(trk, det, surface), trk.index
                if trk.to_label <= 0.0:  # a knock-on electron absorbed in the row
                    deposit, owner = _knock_on(trk, buf, deposit, n0)
                path_xy, pieces = _streak(trk, det, surface)
                adc = min(deposit * _KEV_TO_ADC / pieces, g.ADC_CLUSTER_MAX)
                if adc >= g.ADC_CLUSTER_MIN:
                    radius, ux, uy, tz = det.r[surface], trk.px / trk.pt, trk.py / trk.pt, trk.pz / trk.pt
                    for j in range(pieces):  # along the streak, centred on the crossing, back on the row's radius
                        step = ((j + 0.5) / pieces - 0.5) * path_xy
                        x, y, z = trk.x + ux * step, trk.y + uy * step, trk.z + tz * step
                        scale = radius / math.hypot(x, y)
                        x, y = x * scale, y * scale
                        if pieces > 1 and not (g.CENTRAL_MEMBRANE_HALF_WIDTH < abs(z) < g.DRIFT_LENGTH):
                            continue
                        if not _merge_cluster(buf, layer, x, y, z, adc):
                            measured = _smear_on_cylinder(x, y, z, g.TPC_SIGMA_RPHI, g.TPC_SIGMA_Z)
                            _add_hit(buf, trk.ev, owner, layer, measured, x, y, z, adc)
        elif abs(trk.z) < det.half_z[surface]:
            if layer >= 0:  # MVTX or INTT: a silicon cluster
                _add_hit(buf, trk.ev, trk.index, layer, _silicon_smear(trk, layer), trk.x, trk.y, trk.z, 0.0)
            de = _material(trk, det, surface, de)
        if buf.cnt[OVERFLOW] != 0:
            return
        if trk.hadron and trk.to_nuclear <= 0.0:
            _nuclear_interaction(trk, buf)
            return  # absorbed
        de += _gas_update(trk)
        if de > 0.0 and not _lose_energy(trk, de):
            _stopped(trk, buf)
            return  # ranged out
        trk.gap = surface + 1 if trk.x * trk.px + trk.y * trk.py > 0.0 else surface
        if trk.gap >= det.r.shape[0]:
            return  # left through the outermost cylinder


# --------------------------------------------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------------------------------------------


@nb.njit(cache=True)
def _set_particle(trk, ev, index, pdg, charge, mass, mom, vtx, end_len):
    """Load a particle into the record: mom (px, py, pz), vtx (x, y, z, t)."""
    trk.ev = ev
    trk.index = index
    trk.pdg = pdg
    trk.charge = charge
    trk.mass = mass
    trk.px, trk.py, trk.pz = mom[0], mom[1], mom[2]
    trk.x, trk.y, trk.z, trk.t = vtx[0], vtx[1], vtx[2], vtx[3]
    trk.end_len = end_len


@nb.njit(cache=True)
def transport(ev_start, pdg, charge, mass, mom, vtx, end_len, det, seed, hit_cap, new_cap):
    """Transport every particle of a batch of events through the detector.

    ev_start: (n_events + 1) offsets into the particle arrays; pdg, charge (units of e), mass (GeV); mom (n, 3)
    momentum (GeV/c); vtx (n, 4) production point (cm) and time (ns); end_len: path length (cm) after which a
    particle decays (inf when stable). det: a Detector (see detector()). Returns (hit_f, hit_i, new_f, new_i,
    overflow): hit_f (n_hits, 7) x y z gx gy gz adc, hit_i (n_hits, 3) event, particle, layer; new_f (n_new, 7)
    px py pz x y z t and new_i (n_new, 4) event, pdg, parent, process of the particles the detector created.
    Particle indices >= len(pdg) point at new particle (index - len(pdg)). overflow: hit_cap or new_cap was too
    small (the arrays are then empty).
    """
    np.random.seed(seed)
    buf = Buffers(
        np.empty((hit_cap, 7), np.float64),
        np.empty((hit_cap, 3), np.int64),
        np.empty((new_cap, 7), np.float64),
        np.empty((new_cap, 4), np.int64),
        np.zeros(4, np.int64),
        np.empty(64, np.int64),
    )
    tracks = np.zeros(1, TRACK)  # holds the record trk: keep it alive while trk is used
    n0 = pdg.shape[0]
    for ev in range(ev_start.shape[0] - 1):
        j = ev_start[ev]
        k = buf.cnt[N_NEW]
        while True:  # the event's input particles, then those the detector makes, in order
            trk = tracks[0]
            if j < ev_start[ev + 1]:
                _set_particle(trk, ev, j, pdg[j], charge[j], mass[j], mom[j], vtx[j], end_len[j])
                j += 1
            elif k < buf.cnt[N_NEW]:
                if buf.new_i[k, 3] == PROCESS_ABSORBED_DELTA:  # a truth particle only, its energy in its cluster
                    k += 1
                    continue
                code = buf.new_i[k, 1]
                q, m = charge_of(code), mass_of(code)
                _set_particle(trk, ev, n0 + k, code, q, m, buf.new_f[k, 0:3], buf.new_f[k, 3:7], 1e30)
                k += 1
            else:
                break
            if trk.pdg == 22:
                _photon(trk, det, buf)
            elif trk.charge != 0.0:
                _charged(trk, det, buf, n0)
            if buf.cnt[OVERFLOW] != 0:
                return buf.hit_f[:0], buf.hit_i[:0], buf.new_f[:0], buf.new_i[:0], True
    n_hits, n_new = buf.cnt[N_HITS], buf.cnt[N_NEW]
    return buf.hit_f[:n_hits], buf.hit_i[:n_hits], buf.new_f[:n_new], buf.new_i[:n_new], False
