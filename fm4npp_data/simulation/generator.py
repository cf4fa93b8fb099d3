"""PYTHIA 8 p+p events at sqrt(s) = 200 GeV, as flat truth-particle arrays for the detector response.

PYTHIA runs through `pythia8mc` (pinned 8.317.2) with `SoftQCD:inelastic = on` and the Detroit tune
(`Tune:pp = 33`, Aguilar et al., PRD 105 (2022) 016011), and hands over whole batches with `Pythia.nextBatch`
(awkward arrays), so no Python loop touches a particle. PYTHIA decays K0S, Lambda, Sigma, Xi and Omega with
displaced vertices; as in the sPHENIX Geant4 chain, those long-lived hadrons are primaries and their decay products
are secondaries (negative track ids) with the hadron as parent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numba as nb
import numpy as np

from .. import geometry as g

PYTHIA_SETTINGS = (
    f"Beams:eCM = {g.SQRT_S}",
    "SoftQCD:inelastic = on",
    "Tune:pp = 33",
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off",
    "Init:showProcesses = off",
    "Init:showMultipartonInteractions = off",
    "Print:quiet = on",
)

MM_PER_NS = 299.792458
_LONG_LIVED = np.array(g.LONG_LIVED_PDG, np.int64)


@contextlib.contextmanager
def _silenced_stdout():
    """PYTHIA's C++ code prints to file descriptor 1; send it to /dev/null while it initializes."""
    try:
        fd = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(fd, 1)
            os.close(fd)


def pythia_seed(seed: int) -> int:
    """PYTHIA accepts seeds 1..900,000,000."""
    return int(seed) % 900_000_000 + 1


def mpi_init_file() -> Path | None:
    """Where PYTHIA's multiparton-interaction initialization for PYTHIA_SETTINGS is cached: computing it takes
    about 4 s per process, reading it 0.2 s. $FM4NPP_CACHE or ~/.cache/fm4npp; None where the path cannot be a
    PYTHIA setting (a space in it)."""
    from importlib.metadata import version

    root = Path(os.environ.get("FM4NPP_CACHE") or Path.home() / ".cache" / "fm4npp")
    key = hashlib.sha256("\n".join((*PYTHIA_SETTINGS, version("pythia8mc"))).encode()).hexdigest()[:16]
    path = root / f"pythia-mpi-{key}.dat"
    return None if " " in str(path) else path


class EventGenerator:
    """One initialized PYTHIA instance; `generate(n, seed)` re-seeds it, so batches are reproducible alone.

    The multiparton-interaction initialization is always read from its cache file (mpi_init_file), written first
    when missing (atomically, by a throwaway instance), so that every process generates from the same tables; where
    the cache cannot be written PYTHIA computes them itself.
    """

    def __init__(self) -> None:
        from ..errors import require

        pythia8mc = require("pythia8mc", "sim", "the simulation")
        path = mpi_init_file()
        reuse: tuple[str, ...] = ()
        if path is not None:
            try:
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
                    _pythia(
                        pythia8mc,
                        ("MultipartonInteractions:reuseInit = 1", f"MultipartonInteractions:initFile = {partial}"),
                    )
                    os.replace(partial, path)
                reuse = ("MultipartonInteractions:reuseInit = 2", f"MultipartonInteractions:initFile = {path}")
            except (OSError, RuntimeError):
                reuse = ()
        try:
            self.pythia = _pythia(pythia8mc, reuse)
        except RuntimeError:
            if not reuse:
                raise
            self.pythia = _pythia(pythia8mc, ())  # an unreadable cache file: compute the tables here

    def generate(self, n_events: int, seed: int) -> ak.Array:
        """n_events PYTHIA events (awkward, one record per event) from this seed."""
        self.pythia.rndm.init(pythia_seed(seed))
        batch = self.pythia.nextBatch(n_events)
        if len(batch) != n_events:
            raise RuntimeError(f"PYTHIA returned {len(batch)} of {n_events} events")
        return batch


def _pythia(pythia8mc, extra: tuple[str, ...]):
    """An initialized Pythia with PYTHIA_SETTINGS and the extra settings."""
    with _silenced_stdout():
        pythia = pythia8mc.Pythia("", False)
        for line in (*PYTHIA_SETTINGS, "Random:setSeed = on", "Random:seed = 1", *extra):
            if not pythia.readString(line):
                raise RuntimeError(f"PYTHIA rejected the setting {line!r}")
        if not pythia.init():
            raise RuntimeError("PYTHIA failed to initialize for p+p at 200 GeV")
    return pythia


@nb.njit(cache=True, inline="always")
def charge_of(pdg: int) -> float:
    """Electric charge (e) of the long-lived particles that reach a detector; 0 for neutral or unknown."""
    a = abs(pdg)
    if a == 11 or a == 13 or a == 15 or a == 3112 or a == 3312 or a == 3334:
        base = -1.0
    elif a == 211 or a == 321 or a == 2212 or a == 3222 or a == 411 or a == 431 or a == 4122:
        base = 1.0
    else:
        return 0.0
    return base if pdg > 0 else -base


@nb.njit(cache=True)
def _select(offsets, pid, status, mother1, daughter1, vx, vy, vz, long_lived):
    """Truth particles of each event: final-state particles and decayed long-lived hadrons.

    Returns the selected flat indices, whether each is a primary, its parent as an index into the selection (-1 for
    primaries) and the path length after which it decays (inf if it does not).
    """
    n = pid.shape[0]
    keep = np.zeros(n, np.bool_)
    is_ll = np.zeros(n, np.bool_)
    for i in range(n):
        a = abs(pid[i])
        for c in long_lived:
            if a == c:
                is_ll[i] = True
        keep[i] = status[i] > 0 or (is_ll[i] and status[i] < 0)
    position = np.full(n, -1, np.int64)
    count = 0
    for i in range(n):
        if keep[i]:
            position[i] = count
            count += 1
    sel = np.empty(count, np.int64)
    primary = np.ones(count, np.bool_)
    parent = np.full(count, -1, np.int64)
    end_len = np.full(count, np.inf)
    for ev in range(offsets.shape[0] - 1):
        base = offsets[ev]
        for i in range(base, offsets[ev + 1]):
            if not keep[i]:
                continue
            k = position[i]
            sel[k] = i
            j = mother1[i]
            steps = 0
            while j > 0 and steps < 1000:
                if is_ll[base + j] and status[base + j] < 0:
                    primary[k] = False
                    parent[k] = position[base + j]
                    break
                j = mother1[base + j]
                steps += 1
            if is_ll[i] and status[i] < 0 and daughter1[i] > 0:
                d = base + daughter1[i]
                end_len[k] = np.sqrt((vx[d] - vx[i]) ** 2 + (vy[d] - vy[i]) ** 2 + (vz[d] - vz[i]) ** 2)
    return sel, primary, parent, end_len


@nb.njit(cache=True)
def _charges(pdg):
    out = np.empty(pdg.shape[0], np.float64)
    for i in range(pdg.shape[0]):
        out[i] = charge_of(pdg[i])
    return out


def mbd_fired(batch: ak.Array) -> np.ndarray:
    """Whether each event of a PYTHIA batch fires the sPHENIX minimum-bias trigger (bool per event).

    The MBD sees a final-state charged particle in 3.51 < |eta| < 4.61 that is fast enough to make Cherenkov light
    in its quartz radiators (beta > 1/n); the trigger asks for at least geometry.MBD_MIN_HITS such particles on
    each side. Photon conversions in front of the MBD, which can also fire it, are neglected.
    """
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt, axis=1)).astype(np.int64)
    event = np.repeat(np.arange(counts.shape[0]), counts)
    pid = _flat(prt.id).astype(np.int64)
    status = _flat(prt.status)
    momentum = prt.p
    px, py, pz, energy = (_flat(getattr(momentum, f)).astype(np.float64) for f in ("px", "py", "pz", "e"))
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    beta = np.sqrt(pt * pt + pz * pz) / np.maximum(energy, 1e-12)
    lo, hi = g.MBD_ETA
    seen = (status > 0) & (_charges(pid) != 0.0) & (beta > 1.0 / g.QUARTZ_REFRACTIVE_INDEX)
    seen &= (np.abs(eta) > lo) & (np.abs(eta) < hi)
    north = np.bincount(event[seen & (eta > 0)], minlength=counts.shape[0])
    south = np.bincount(event[seen & (eta < 0)], minlength=counts.shape[0])
    return (north >= g.MBD_MIN_HITS) & (south >= g.MBD_MIN_HITS)


@dataclass
class TruthParticles:
    """Generator-level truth particles of a batch of events (flat, with event offsets)."""

    ev_start: np.ndarray  # (n_events + 1,) int64
    pdg: np.ndarray  # int64
    charge: np.ndarray  # float64, e
    mass: np.ndarray  # float64, GeV
    mom: np.ndarray  # (n, 3) float64, GeV/c
    vtx: np.ndarray  # (n, 4) float64, cm and ns, collision vertex included
    end_len: np.ndarray  # float64, cm: decay path length, inf if stable
    primary: np.ndarray  # bool
    parent: np.ndarray  # int64, index into these arrays, -1 for primaries
    collision: np.ndarray  # (n_events, 4) float64: the collision vertex (cm, ns)
    #: time (ns) of each particle's collision relative to the triggered one: 0, except for pile-up collisions
    time_offset: np.ndarray | None = None


def _flat(array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(array, axis=1))


def truth_particles(batch: ak.Array, rng: np.random.Generator) -> TruthParticles:
    """Select the truth particles of a PYTHIA batch and place each event at a random collision vertex."""
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt, axis=1)).astype(np.int64)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    pid = _flat(prt.id).astype(np.int64)
    status = _flat(prt.status).astype(np.int64)
    mother1 = _flat(prt.mother1).astype(np.int64)
    daughter1 = _flat(prt.daughter1).astype(np.int64)
    vprod = prt.vProd
    vx, vy, vz, vt = (_flat(ak.fill_none(getattr(vprod, f), 0.0)) for f in ("px", "py", "pz", "e"))
    sel, primary, parent, end_len = _select(offsets, pid, status, mother1, daughter1, vx, vy, vz, _LONG_LIVED)

    n_events = len(counts)
    collision = np.empty((n_events, 4))
    collision[:, 0] = rng.normal(g.VERTEX_MEAN_XY[0], g.VERTEX_SIGMA_XY, n_events)
    collision[:, 1] = rng.normal(g.VERTEX_MEAN_XY[1], g.VERTEX_SIGMA_XY, n_events)
    collision[:, 2] = rng.normal(0.0, g.VERTEX_SIGMA_Z, n_events)
    collision[:, 3] = rng.normal(0.0, g.VERTEX_SIGMA_T, n_events)

    event_of = np.repeat(np.arange(n_events), counts)[sel]
    ev_start = np.searchsorted(event_of, np.arange(n_events + 1)).astype(np.int64)
    momentum = prt.p
    mom = np.stack([_flat(momentum.px)[sel], _flat(momentum.py)[sel], _flat(momentum.pz)[sel]], axis=1)
    vtx = np.stack([vx[sel] * 0.1, vy[sel] * 0.1, vz[sel] * 0.1, vt[sel] / MM_PER_NS], axis=1)
    vtx += collision[event_of]
    pdg = pid[sel]
    return TruthParticles(
        ev_start=ev_start,
        pdg=pdg,
        charge=_charges(pdg),
        mass=_flat(prt.m)[sel].astype(np.float64),
        mom=np.ascontiguousarray(mom),
        vtx=np.ascontiguousarray(vtx),
        end_len=end_len * 0.1,
        primary=primary,
        parent=parent,
        collision=collision,
    )


def with_pileup(truth: TruthParticles, pile: TruthParticles, owner: np.ndarray, t0: np.ndarray) -> TruthParticles:
    """The triggered events of `truth` with the pile-up collisions of `pile` added to them.

    Pile-up collision j joins triggered event owner[j] (non-decreasing) at time t0[j] (ns) relative to it: its
    particles follow the event's own, their production times are shifted by t0[j], and their parents are re-indexed.
    """
    n_events, n_truth, n_pile = truth.collision.shape[0], truth.pdg.shape[0], pile.pdg.shape[0]
    pile_collision = np.repeat(np.arange(owner.shape[0]), np.diff(pile.ev_start))
    event = np.concatenate([np.repeat(np.arange(n_events), np.diff(truth.ev_start)), owner[pile_collision]])
    from_pile = np.concatenate([np.zeros(n_truth, np.int64), np.ones(n_pile, np.int64)])
    order = np.lexsort((np.arange(n_truth + n_pile), from_pile, event))
    position = np.empty_like(order)
    position[order] = np.arange(order.shape[0])
    parent = np.concatenate([truth.parent, np.where(pile.parent >= 0, pile.parent + n_truth, -1)])
    parent = np.where(parent >= 0, position[np.maximum(parent, 0)], -1)[order]
    offset = np.concatenate([np.zeros(n_truth), t0[pile_collision]])
    vtx = np.concatenate([truth.vtx, pile.vtx])
    vtx[:, 3] += offset
    return TruthParticles(
        ev_start=np.searchsorted(event[order], np.arange(n_events + 1)).astype(np.int64),
        pdg=np.concatenate([truth.pdg, pile.pdg])[order],
        charge=np.concatenate([truth.charge, pile.charge])[order],
        mass=np.concatenate([truth.mass, pile.mass])[order],
        mom=np.ascontiguousarray(np.concatenate([truth.mom, pile.mom])[order]),
        vtx=np.ascontiguousarray(vtx[order]),
        end_len=np.concatenate([truth.end_len, pile.end_len])[order],
        primary=np.concatenate([truth.primary, pile.primary])[order],
        parent=parent,
        collision=truth.collision,
        time_offset=offset[order],
    )
