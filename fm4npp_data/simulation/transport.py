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
along its drift in z on the row it sits in. Particles stop when they range out, leave |z| < drift length or the
outer radius, decay (a path length given by the generator), or exceed geometry.MAX_PATH_LENGTH.

All randomness comes from Numba's generator seeded once per call, so one (seed, input) gives identical output.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .. import geometry as g
from .physics import (
    bethe_dedx,
    delta_cos_theta,
    delta_rate,
    highland_theta0,
    landau_mpv,
    moyal,
    orthonormal_frame,
    pair_probability,
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

_ME = g.ELECTRON_MASS
_GAS = (g.GAS_Z_OVER_A, g.GAS_I, g.GAS_DENSITY)
_KEV_TO_ADC = 1e6 * g.ADC_PER_KEV * g.ADC_SCALE  # GeV -> ADC counts
_CURV = 100.0 / (g.C_LIGHT_FIELD * g.B_FIELD)  # R[cm] = _CURV * pT / |q|


def detector_surfaces() -> dict[str, np.ndarray]:
    """The cylinders of the detector model as arrays sorted by radius (see module docstring)."""
    rows = []
    for _name, radius, half_z, x0, areal, layer in g.MATERIAL:
        rows.append((radius, half_z, x0, areal, layer, 0, 0.0))
    module = g.layer_module(np.arange(g.N_LAYERS))
    for i, radius in enumerate(g.LAYER_RADII):
        rows.append((radius, g.DRIFT_LENGTH, 0.0, 0.0, g.FIRST_TPC_LAYER + i, 1, g.ROW_THICKNESS[module[i]]))
    rows.sort(key=lambda row: row[0])
    cols = list(zip(*rows, strict=True))
    return {
        "r": np.array(cols[0], np.float64),
        "half_z": np.array(cols[1], np.float64),
        "x0": np.array(cols[2], np.float64),
        "areal": np.array(cols[3], np.float64),
        "layer": np.array(cols[4], np.int64),
        "tpc": np.array(cols[5], np.int64),
        "row_dr": np.array(cols[6], np.float64),
    }


@nb.njit(cache=True)
def _add_particle(new_f, new_i, cnt, ev, pdg, px, py, pz, x, y, z, t, parent, process):
    k = cnt[1]
    if k >= new_f.shape[0]:
        cnt[2] = 1
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
    cnt[1] = k + 1


@nb.njit(cache=True, inline="always")
def _add_hit(hit_f, hit_i, cnt, ev, particle, layer, x, y, z, gx, gy, gz, adc):
    k = cnt[0]
    if k >= hit_f.shape[0]:
        cnt[2] = 1
        return -1
    hit_f[k, 0] = x
    hit_f[k, 1] = y
    hit_f[k, 2] = z
    hit_f[k, 3] = gx
    hit_f[k, 4] = gy
    hit_f[k, 5] = gz
    hit_f[k, 6] = adc
    hit_i[k, 0] = ev
    hit_i[k, 1] = particle
    hit_i[k, 2] = layer
    cnt[0] = k + 1
    return k


@nb.njit(cache=True, inline="always")
def _smear_on_cylinder(x, y, z, sigma_rphi, sigma_z):
    """Gaussian smearing along the cylinder's tangent (r-phi) and along z."""
    r = math.sqrt(x * x + y * y)
    shift = np.random.normal() * sigma_rphi / r
    return x - y * shift, y + x * shift, z + np.random.normal() * sigma_z


@nb.njit(cache=True, inline="always")
def _tpc_hit(hit_f, hit_i, cnt, last, ev, particle, layer, x, y, z, adc):
    """Record a TPC cluster, or merge it into this particle's previous cluster on the layer if within the window."""
    j = last[layer]
    if j >= 0:
        dz = abs(hit_f[j, 5] - z)
        dxy = math.hypot(hit_f[j, 3] - x, hit_f[j, 4] - y)
        if dz < g.CLUSTER_WINDOW_Z and dxy < g.CLUSTER_WINDOW_RPHI:
            hit_f[j, 6] = min(hit_f[j, 6] + adc, g.ADC_CLUSTER_MAX)
            return
    sx, sy, sz = _smear_on_cylinder(x, y, z, g.TPC_SIGMA_RPHI, g.TPC_SIGMA_Z)
    k = _add_hit(hit_f, hit_i, cnt, ev, particle, layer, sx, sy, sz, x, y, z, adc)
    if k >= 0:
        last[layer] = k


@nb.njit(cache=True)
def _photon(ev, idx, energy, x, y, z, t, px, py, pz, surf_r, surf_hz, surf_x0, surf_tpc, new_f, new_i, cnt):
    """Straight line through the material cylinders; converts to e+ e- with the pair probability."""
    p = math.sqrt(px * px + py * py + pz * pz)
    ux, uy, uz = px / p, py / p, pz / p
    a = ux * ux + uy * uy
    if a < 1e-12:
        return
    for s in range(surf_r.shape[0]):
        if surf_tpc[s] == 1:
            continue
        rr = surf_r[s]
        c = x * x + y * y - rr * rr
        if c >= 0.0:
            continue
        b = 2.0 * (x * ux + y * uy)
        tpath = (-b + math.sqrt(b * b - 4.0 * a * c)) / (2.0 * a)
        zc = z + tpath * uz
        if abs(zc) > surf_hz[s]:
            continue
        xc, yc = x + tpath * ux, y + tpath * uy
        cos_n = max(abs(xc * ux + yc * uy) / rr, 0.05)
        if np.random.random() < pair_probability(energy, surf_x0[s] / cos_n):
            frac = np.random.random()
            tc = t + tpath / C_CM_PER_NS
            for sign, e_i in ((1, frac * energy), (-1, (1.0 - frac) * energy)):
                if e_i > _ME:
                    pe = math.sqrt(e_i * e_i - _ME * _ME)
                    _add_particle(
                        new_f,
                        new_i,
                        cnt,
                        ev,
                        11 * sign,
                        pe * ux,
                        pe * uy,
                        pe * uz,
                        xc,
                        yc,
                        zc,
                        tc,
                        idx,
                        PROCESS_CONVERSION,
                    )
            return


@nb.njit(cache=True)
def _trapped(ev, idx, z, xc, yc, px, py, pz, mass, s, end_len, hit_f, hit_i, cnt, last):
    """A particle curling between two pad-row centres: clusters along its z drift on the row it sits in."""
    d = math.hypot(xc, yc)
    radii = g.LAYER_RADII
    best = 0
    for j in range(radii.shape[0]):
        if abs(radii[j] - d) < abs(radii[best] - d):
            best = j
    module = best // g.LAYERS_PER_MODULE
    if abs(radii[best] - d) > g.ROW_THICKNESS[module]:
        return
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
    length = min(range_path, zlim, g.MAX_PATH_LENGTH - s, end_len - s)
    if length <= 0.0:
        return
    deposit = kinetic if length >= range_path else dedx * length
    dz_total = length * cz
    n = min(200, max(1, int(math.ceil(abs(dz_total) / g.CLUSTER_WINDOW_Z))))
    layer = g.FIRST_TPC_LAYER + best
    for j in range(n):
        zj = z + (j + 0.5) / n * dz_total
        if g.CENTRAL_MEMBRANE_HALF_WIDTH < abs(zj) < g.DRIFT_LENGTH:
            adc = min(deposit / n * (0.7 + 0.6 * np.random.random()) * _KEV_TO_ADC, g.ADC_CLUSTER_MAX)
            _tpc_hit(hit_f, hit_i, cnt, last, ev, idx, layer, xc, yc, zj, adc)


@nb.njit(cache=True)
def _label_rate(beta_gamma, mass):
    """Knock-on electrons per cm with DELTA_T_LABEL < T < DELTA_T_MIN: absorbed where they are made."""
    return delta_rate(beta_gamma, mass, g.DELTA_T_LABEL, _GAS[0], _GAS[2]) - delta_rate(
        beta_gamma, mass, g.DELTA_T_MIN, _GAS[0], _GAS[2]
    )


@nb.njit(cache=True)
def _charged(ev, idx, n0, pdg, q, mass, x, y, z, t, px, py, pz, end_len, surf, hit_f, hit_i, new_f, new_i, cnt, last):
    """Transport one charged particle crossing by crossing (see the module docstring)."""
    surf_r, surf_hz, surf_x0, surf_areal, surf_layer, surf_tpc, surf_dr, first_gas = surf
    n_surf = surf_r.shape[0]
    is_electron = abs(pdg) == 11
    h = -1.0 if q > 0 else 1.0  # +1: counter-clockwise seen from +z (B along +z)
    rq = _CURV / abs(q)
    k = np.searchsorted(surf_r, math.hypot(x, y))  # gap k lies between surfaces k-1 and k
    s = 0.0
    gas_path = 0.0  # gas path since the last energy-loss / scattering update
    need_circle = True
    radius = xc = yc = phi0 = d = phic = pt = p = e = beta_gamma = dedx = 0.0
    xi_cm = landau_c = 0.0
    p_phys = -1.0  # momentum at which the energy-dependent quantities were last computed
    rate_delta = rate_label = 0.0
    to_delta = -math.log(1.0 - np.random.random())  # remaining optical depths (unit exponentials)
    to_label = -math.log(1.0 - np.random.random())
    for _ in range(100000):
        if need_circle:
            pt = math.hypot(px, py)
            p = math.sqrt(pt * pt + pz * pz)
            e = math.sqrt(p * p + mass * mass)
            if pt < 1e-9 or e - mass < g.STOP_KINETIC_ENERGY:
                return
            radius = rq * pt
            ux, uy = px / pt, py / pt
            xc, yc = x - h * radius * uy, y + h * radius * ux
            phi0 = math.atan2(y - yc, x - xc)
            d = math.hypot(xc, yc)
            phic = math.atan2(yc, xc)
            if abs(p - p_phys) > 0.01 * p_phys:
                p_phys = p
                beta_gamma = p / mass
                dedx = bethe_dedx(beta_gamma, mass, _GAS[0], _GAS[1], _GAS[2])
                mpv1, xi_cm = landau_mpv(beta_gamma, 1.0, _GAS[0], _GAS[1], _GAS[2])
                landau_c = mpv1 / xi_cm  # mpv(L) = xi_cm L (landau_c + ln L)
                rate_delta = delta_rate(beta_gamma, mass, g.DELTA_T_MIN, _GAS[0], _GAS[2])
                rate_label = _label_rate(beta_gamma, mass)
            need_circle = False
        cnt[3] += 1
        best = 1e30
        best_s = -1
        for cand in (k - 1, k):
            if cand < 0 or cand >= n_surf or d < 1e-9:
                continue
            rho = surf_r[cand]
            c = (rho * rho - d * d - radius * radius) / (2.0 * radius * d)
            if c < -1.0 or c > 1.0:
                continue
            a = math.acos(c)
            for alpha in (phic + a, phic - a):
                dphi = (h * (alpha - phi0)) % TWO_PI
                if 1e-7 < dphi < best and dphi < TWO_PI - 1e-7:
                    best = dphi
                    best_s = cand
        in_gas = k >= first_gas
        if best_s < 0:
            if in_gas:
                _trapped(ev, idx, z, xc, yc, px, py, pz, mass, s, end_len, hit_f, hit_i, cnt, last)
            return
        z_new = z + pz / pt * radius * best
        arc = radius * best * p / pt
        if abs(z_new) > g.DRIFT_LENGTH or s + arc > end_len or s + arc > g.MAX_PATH_LENGTH:
            return
        # move along the circle to the crossing
        phi0 = phi0 + h * best
        cphi, sphi = math.cos(phi0), math.sin(phi0)
        x, y, z = xc + radius * cphi, yc + radius * sphi, z_new
        px, py = -h * pt * sphi, h * pt * cphi
        s += arc
        de = 0.0
        if in_gas:
            gas_path += arc
            to_delta -= arc * rate_delta
            while to_delta <= 0.0:  # a delta electron energetic enough to be followed on its own
                tk = sample_delta_energy(beta_gamma, mass, g.DELTA_T_MIN, 1e30)
                _emit_delta(ev, idx, tk, beta_gamma, mass, px, py, pz, x, y, z, t + s / C_CM_PER_NS, new_f, new_i, cnt)
                de += tk
                to_delta -= math.log(1.0 - np.random.random())
        rs = surf_r[best_s]
        cos_n = max(abs(x * px + y * py) / (rs * p), 0.05)
        if surf_tpc[best_s] == 1:
            if abs(z) > g.CENTRAL_MEMBRANE_HALF_WIDTH:
                path = surf_dr[best_s] / cos_n
                xi = xi_cm * path
                deposit = max(xi * (landau_c + math.log(path)) + xi * moyal(), 0.0)
                owner = idx
                to_label -= path * rate_label
                if to_label <= 0.0:  # a knock-on electron in this row: it owns the cluster if it dominates it
                    tk = sample_delta_energy(beta_gamma, mass, g.DELTA_T_LABEL, g.DELTA_T_MIN)
                    absorbed = min(tk, g.DELTA_ABSORBED_MAX)
                    if absorbed > deposit:
                        owner = n0 + cnt[1]
                        _emit_delta(
                            ev,
                            idx,
                            tk,
                            beta_gamma,
                            mass,
                            px,
                            py,
                            pz,
                            x,
                            y,
                            z,
                            t + s / C_CM_PER_NS,
                            new_f,
                            new_i,
                            cnt,
                        )
                        new_i[cnt[1] - 1, 3] = PROCESS_ABSORBED_DELTA
                    deposit += absorbed
                    to_label = -math.log(1.0 - np.random.random())
                adc = min(deposit * _KEV_TO_ADC, g.ADC_CLUSTER_MAX)
                if adc >= g.ADC_CLUSTER_MIN:
                    _tpc_hit(hit_f, hit_i, cnt, last, ev, owner, surf_layer[best_s], x, y, z, adc)
        elif abs(z) < surf_hz[best_s]:
            xx0 = surf_x0[best_s] / cos_n
            de += bethe_dedx(beta_gamma, mass, g.MATERIAL_Z_OVER_A, g.MATERIAL_I, 1.0) * surf_areal[best_s] / cos_n
            theta0 = highland_theta0(p, beta_gamma / math.sqrt(1.0 + beta_gamma**2), xx0)
            if is_electron:
                de += (e - de) * (1.0 - math.exp(-xx0))
            layer = surf_layer[best_s]
            if layer >= 0:
                sigma_rphi = g.MVTX_SIGMA if layer <= 2 else g.INTT_SIGMA_RPHI
                sigma_z = g.MVTX_SIGMA if layer <= 2 else g.INTT_SIGMA_Z
                sx, sy, sz = _smear_on_cylinder(x, y, z, sigma_rphi, sigma_z)
                _add_hit(hit_f, hit_i, cnt, ev, idx, layer, sx, sy, sz, x, y, z, 0.0)
            px, py, pz = scatter(px, py, pz, theta0)
            need_circle = True
        if cnt[2] != 0:
            return
        if gas_path > g.GAS_UPDATE_PATH or (need_circle and gas_path > 0.0):
            de += dedx * gas_path
            px, py, pz = scatter(px, py, pz, highland_theta0(p, p / e, gas_path / g.GAS_X0))
            gas_path = 0.0
            need_circle = True
        if de > 0.0:
            e_new = e - de
            if e_new - mass < g.STOP_KINETIC_ENERGY:
                return
            scale = math.sqrt(e_new * e_new - mass * mass) / p
            px, py, pz = px * scale, py * scale, pz * scale
            need_circle = True
        k = best_s + 1 if x * px + y * py > 0.0 else best_s
        if k >= n_surf:
            return


@nb.njit(cache=True)
def _emit_delta(ev, parent, tk, beta_gamma, mass, px, py, pz, x, y, z, t, new_f, new_i, cnt):
    """A knock-on electron of kinetic energy tk at the parent's position, at the kinematic angle to it."""
    pe = math.sqrt(tk * tk + 2.0 * _ME * tk)
    ex, ey, ez = _rotate_to_angle(px, py, pz, delta_cos_theta(tk, beta_gamma, mass))
    _add_particle(new_f, new_i, cnt, ev, 11, pe * ex, pe * ey, pe * ez, x, y, z, t, parent, PROCESS_DELTA)


@nb.njit(cache=True)
def _rotate_to_angle(px, py, pz, cos_theta):
    """A unit vector at polar angle acos(cos_theta) to (px, py, pz), uniform in azimuth."""
    ux, uy, uz, ax, ay, az, bx, by, bz, _p = orthonormal_frame(px, py, pz)
    sin_theta = math.sqrt(max(0.0, 1.0 - cos_theta * cos_theta))
    phi = np.random.random() * TWO_PI
    cp, sp = math.cos(phi) * sin_theta, math.sin(phi) * sin_theta
    return (
        cos_theta * ux + cp * ax + sp * bx,
        cos_theta * uy + cp * ay + sp * by,
        cos_theta * uz + cp * az + sp * bz,
    )


@nb.njit(cache=True)
def transport(ev_start, pdg, charge, mass, mom, vtx, end_len, surf, seed, hit_cap, new_cap):
    """Transport every particle of a batch of events through the detector.

    ev_start: (n_events + 1) offsets into the particle arrays; pdg, charge (units of e), mass (GeV); mom (n, 3)
    momentum (GeV/c); vtx (n, 4) production point (cm) and time (ns); end_len: path length (cm) after which a
    particle decays (inf when stable). surf: the tuple of detector_surfaces() arrays plus the index of the first
    gas gap. Returns (hit_f, hit_i, new_f, new_i, overflow): hit_f (n_hits, 7) x y z gx gy gz adc, hit_i (n_hits, 3)
    event, particle, layer; new_f (n_new, 7) px py pz x y z t and new_i (n_new, 4) event, pdg, parent, process of
    the particles the detector created. Particle indices >= len(pdg) point at new particle (index - len(pdg)).
    """
    np.random.seed(seed)
    hit_f = np.empty((hit_cap, 7), np.float64)
    hit_i = np.empty((hit_cap, 3), np.int64)
    new_f = np.empty((new_cap, 7), np.float64)
    new_i = np.empty((new_cap, 4), np.int64)
    cnt = np.zeros(4, np.int64)
    last = np.empty(64, np.int64)
    surf_r, surf_hz, surf_x0, surf_tpc = surf[0], surf[1], surf[2], surf[5]
    n0 = pdg.shape[0]
    for ev in range(ev_start.shape[0] - 1):
        first_new = cnt[1]
        j = ev_start[ev]
        k = first_new
        while True:
            if j < ev_start[ev + 1]:
                i, code, q, m = j, pdg[j], charge[j], mass[j]
                px, py, pz = mom[j, 0], mom[j, 1], mom[j, 2]
                x, y, z, t = vtx[j, 0], vtx[j, 1], vtx[j, 2], vtx[j, 3]
                stop = end_len[j]
                j += 1
            elif k < cnt[1]:
                if new_i[k, 3] == PROCESS_ABSORBED_DELTA:
                    k += 1
                    continue
                i, code = n0 + k, new_i[k, 1]
                q = -1.0 if code == 11 else 1.0
                m = _ME
                px, py, pz = new_f[k, 0], new_f[k, 1], new_f[k, 2]
                x, y, z, t = new_f[k, 3], new_f[k, 4], new_f[k, 5], new_f[k, 6]
                stop = 1e30
                k += 1
            else:
                break
            if code == 22:
                e = math.sqrt(px * px + py * py + pz * pz)
                _photon(ev, i, e, x, y, z, t, px, py, pz, surf_r, surf_hz, surf_x0, surf_tpc, new_f, new_i, cnt)
            elif q != 0.0:
                last[:] = -1
                _charged(
                    ev,
                    i,
                    n0,
                    code,
                    q,
                    m,
                    x,
                    y,
                    z,
                    t,
                    px,
                    py,
                    pz,
                    stop,
                    surf,
                    hit_f,
                    hit_i,
                    new_f,
                    new_i,
                    cnt,
                    last,
                )
            if cnt[2] != 0:
                return hit_f[:0], hit_i[:0], new_f[:0], new_i[:0], True
    return hit_f[: cnt[0]], hit_i[: cnt[0]], new_f[: cnt[1]], new_i[: cnt[1]], False
