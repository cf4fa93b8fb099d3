"""Write simulated events as ROOT TTrees in the sPHENIX layouts that `convert` reads (docs/layouts.md).

`svtx-evaluator`: `ntp_cluster` (one row per cluster of every tracker, every column Float_t, the 63 columns of the
SvtxEvaluator schema used 2023-2026) and `ntp_gtrack` (one row per truth particle). `trkr-ntuplizer`: the
truth-less `ntp_cluster` of TrkrNtuplizer, as written for recorded data. Files are written with uproot's
`mktree`/`extend` (real TTrees, not RNTuples), ZSTD-compressed, under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uproot

from .. import geometry as g

#: SvtxEvaluator ntp_cluster columns (coresoftware simulation/g4simulation/g4eval/SvtxEvaluator.cc, the schema of
#: 2023-05 to 2026-06, before the addition of pedge/redge/ovlp; see docs/layouts.md).
NTP_CLUSTER_COLUMNS = tuple(
    [
        "event",
        "seed",
        "hitID",
        "x",
        "y",
        "z",
        "r",
        "phi",
        "eta",
        "theta",
        "ex",
        "ey",
        "ez",
        "ephi",
        "pez",
        "pephi",
        "e",
        "adc",
        "maxadc",
        "layer",
        "phielem",
        "zelem",
        "size",
        "phisize",
        "zsize",
        "trackID",
        "niter",
        "g4hitID",
        "gx",
        "gy",
        "gz",
        "gr",
        "gphi",
        "geta",
        "gt",
        "gtrackID",
        "gflavor",
        "gpx",
        "gpy",
        "gpz",
        "gvx",
        "gvy",
        "gvz",
        "gvt",
        "gfpx",
        "gfpy",
        "gfpz",
        "gfx",
        "gfy",
        "gfz",
        "gembed",
        "gprimary",
        "efromtruth",
        "nparticles",
        "nhittpcall",
        "nhittpcin",
        "nhittpcmid",
        "nhittpcout",
        "nclusall",
        "nclustpc",
        "nclusintt",
        "nclusmaps",
        "nclusmms",
    ]
)
#: The truth columns of SvtxEvaluator's ntp_gtrack that a simulation without reconstruction can fill, with the
#: parent columns (g4eval/SvtxEvaluator.cc). The real tree also holds ~100 reconstructed-track columns.
NTP_GTRACK_COLUMNS = tuple(
    [
        "event",
        "seed",
        "gntracks",
        "gtrackID",
        "gflavor",
        "gnhits",
        "gnmaps",
        "gnintt",
        "gntpc",
        "gpx",
        "gpy",
        "gpz",
        "gpt",
        "geta",
        "gphi",
        "gvx",
        "gvy",
        "gvz",
        "gvt",
        "gembed",
        "gprimary",
        "gparentflavor",
        "gparentid",
        "gprimaryflavor",
        "gprimaryid",
    ]
)
#: TrkrNtuplizer ntp_cluster columns (coresoftware offline/packages/TrackingDiagnostics/TrkrNtuplizer.cc; the real
#: tree has more; recorded data: no truth).
TRKR_NTUPLIZER_COLUMNS = tuple(
    [
        "event",
        "seed",
        "run",
        "seg",
        "job",
        "locx",
        "locy",
        "x",
        "y",
        "z",
        "r",
        "phi",
        "eta",
        "theta",
        "phibin",
        "tbin",
        "fee",
        "chan",
        "sampa",
        "ex",
        "ey",
        "ez",
        "ephi",
        "pez",
        "pephi",
        "e",
        "adc",
        "maxadc",
        "layer",
        "phielem",
        "zelem",
        "size",
        "phisize",
        "zsize",
    ]
)
LAYOUTS = ("svtx-evaluator", "trkr-ntuplizer")
COMPRESSION = uproot.ZSTD(1)


@dataclass
class FileContent:
    """Everything one output file holds, flat over its events.

    Hits: `hit_event`, `hit_particle` (index into the particle arrays, -1 when the truth match failed), `hit_layer`
    (sPHENIX layer), `hit_xyz` (measured), `hit_true_xyz`, `hit_adc`. Particles (generator and detector-made):
    `p_event`, `p_pdg`, `p_mom` (n, 3), `p_vtx` (n, 4), `p_parent` (index, -1 for none), `p_primary`, `p_track_id`
    (sPHENIX gtrackID: positive primaries, negative secondaries), `p_keep` (written to ntp_gtrack).
    """

    n_events: int
    seed: int
    hit_event: np.ndarray
    hit_particle: np.ndarray
    hit_layer: np.ndarray
    hit_xyz: np.ndarray
    hit_true_xyz: np.ndarray
    hit_adc: np.ndarray
    p_event: np.ndarray
    p_pdg: np.ndarray
    p_mom: np.ndarray
    p_vtx: np.ndarray
    p_parent: np.ndarray
    p_primary: np.ndarray
    p_track_id: np.ndarray
    p_keep: np.ndarray
    rejected: int = 0  # generated collisions the trigger rejected to make these n_events
    empty: int = 0  # triggered events dropped for leaving no TPC spacepoint
    pileup_collisions: int = 0  # pile-up collisions added to these events


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _cluster_geometry(xyz: np.ndarray, layer: np.ndarray, adc: np.ndarray) -> dict[str, np.ndarray]:
    """Columns both layouts share: positions, their errors, sectors, sizes and ADC sums."""
    xyz = xyz.astype(np.float32)
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    r = np.hypot(x, y)
    phi = np.arctan2(y, x)
    tpc = layer >= g.FIRST_TPC_LAYER
    sig_rphi = np.where(tpc, g.TPC_SIGMA_RPHI, np.where(layer <= 2, g.MVTX_SIGMA, g.INTT_SIGMA_RPHI))
    sig_z = np.where(tpc, g.TPC_SIGMA_Z, np.where(layer <= 2, g.MVTX_SIGMA, g.INTT_SIGMA_Z))
    phisize = np.where(tpc, np.clip(np.rint(1.0 + adc / 150.0), 1, 7), 1.0)
    zsize = np.where(tpc, np.clip(np.rint(2.0 + adc / 200.0), 1, 11), 1.0)
    return {
        "x": x,
        "y": y,
        "z": z,
        "r": r,
        "phi": phi,
        "eta": np.arcsinh(z / r),
        "theta": np.arctan2(r, z),
        "ex": np.abs(np.sin(phi)) * sig_rphi,
        "ey": np.abs(np.cos(phi)) * sig_rphi,
        "ez": sig_z,
        "ephi": sig_rphi,
        "pez": sig_z,
        "pephi": sig_rphi,
        "e": adc,
        "adc": adc,
        "maxadc": np.minimum(adc / np.maximum(phisize * zsize / 3.0, 1.0), g.ADC_BIN_MAX),
        "layer": layer,
        "phielem": np.floor((phi + np.pi) / (2 * np.pi) * g.N_SECTORS) % g.N_SECTORS,
        "zelem": (z > 0).astype(np.float64),
        "size": phisize * zsize,
        "phisize": phisize,
        "zsize": zsize,
    }


def _cluster_key(layer: np.ndarray, sector: np.ndarray, side: np.ndarray, index: np.ndarray) -> np.ndarray:
    """sPHENIX cluster key, cluskey = hitsetkey << 32 | index, stored (lossily) as a float like the evaluator."""
    tracker = np.where(layer >= g.FIRST_TPC_LAYER, 2, np.where(layer <= 2, 0, 1))
    hitsetkey = (tracker << 24) | (layer.astype(np.int64) << 16) | (sector.astype(np.int64) << 8) | side
    return ((hitsetkey << 32) | index).astype(np.float64)


def svtx_evaluator_trees(c: FileContent) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ntp_cluster and ntp_gtrack columns (float32) of the svtx-evaluator layout."""
    layer = c.hit_layer.astype(np.int64)
    per_particle = _clusters_per_particle(layer, c.hit_particle, c.p_pdg.shape[0])
    cols = {**_cluster_reco_columns(c, layer), **_cluster_truth_columns(c, per_particle)}
    cluster = {name: _f32(cols[name]) for name in NTP_CLUSTER_COLUMNS}
    gtrack = _gtrack_columns(c, per_particle)
    return cluster, {name: _f32(gtrack[name]) for name in NTP_GTRACK_COLUMNS}


def _cluster_reco_columns(c: FileContent, layer: np.ndarray) -> dict[str, np.ndarray]:
    """ntp_cluster's reconstructed side: geometry, cluster keys, event and seed; NaN for the track-fit columns."""
    n_hits = c.hit_event.shape[0]
    cols = _cluster_geometry(c.hit_xyz, layer, c.hit_adc)
    index_in_event = np.arange(n_hits) - np.searchsorted(c.hit_event, c.hit_event)
    sector, side = cols["phielem"].astype(np.int64), cols["zelem"].astype(np.int64)
    cols["hitID"] = _cluster_key(layer, sector, side, index_in_event)
    cols["event"] = c.hit_event
    cols["seed"] = np.full(n_hits, c.seed % (1 << 24))
    nan = np.full(n_hits, np.nan, np.float32)
    for name in ("trackID", "niter", "g4hitID", "gfpx", "gfpy", "gfpz", "gfx", "gfy", "gfz"):
        cols[name] = nan
    return cols


def _particle_rows(hit_particle: np.ndarray, n_part: int) -> np.ndarray:
    """Each cluster's particle index, n_part (one past the last) where the truth match failed."""
    return np.where(hit_particle >= 0, hit_particle, n_part)


def _clusters_per_particle(layer: np.ndarray, hit_particle: np.ndarray, n_part: int) -> dict[str, np.ndarray]:
    """Each particle's cluster counts, by tracker and TPC module (the evaluator's nclus* and nhittpc* columns)."""
    tpc_layer = layer - g.FIRST_TPC_LAYER
    matched = hit_particle >= 0
    part = _particle_rows(hit_particle, n_part)

    def count(mask):
        return np.bincount(part[mask & matched], minlength=n_part + 1)[:n_part]

    is_tpc = layer >= g.FIRST_TPC_LAYER
    return {
        "nclusall": count(np.ones(layer.shape[0], bool)),
        "nclustpc": count(is_tpc),
        "nclusintt": count((layer >= 3) & (layer <= 6)),
        "nclusmaps": count(layer <= 2),
        "nclusmms": np.zeros(n_part, np.int64),
        "nhittpcall": count(is_tpc),
        "nhittpcin": count(is_tpc & (tpc_layer < 16)),
        "nhittpcmid": count(is_tpc & (tpc_layer >= 16) & (tpc_layer < 32)),
        "nhittpcout": count(is_tpc & (tpc_layer >= 32)),
    }


def _of_particle(values: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Per-cluster float32 values of its particle (`part` from _particle_rows); NaN where unmatched."""
    n_part = len(values)
    table = np.empty(n_part + 1, np.float32)
    table[:n_part] = values
    table[n_part] = np.nan
    return table[part]


def _cluster_truth_columns(c: FileContent, per_particle: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ntp_cluster's truth side: each cluster's true position and its particle's columns, NaN where unmatched."""
    matched = c.hit_particle >= 0
    part = _particle_rows(c.hit_particle, c.p_pdg.shape[0])
    true_xyz = c.hit_true_xyz.astype(np.float32)
    true_xyz[~matched] = np.nan
    gr = np.hypot(true_xyz[:, 0], true_xyz[:, 1])
    cols = dict(
        gx=true_xyz[:, 0],
        gy=true_xyz[:, 1],
        gz=true_xyz[:, 2],
        gr=gr,
        gphi=np.arctan2(true_xyz[:, 1], true_xyz[:, 0]),
        geta=np.arcsinh(true_xyz[:, 2] / gr),
        gt=_of_particle(c.p_vtx[:, 3], part),
        gtrackID=_of_particle(c.p_track_id, part),
        gflavor=_of_particle(c.p_pdg, part),
        gpx=_of_particle(c.p_mom[:, 0], part),
        gpy=_of_particle(c.p_mom[:, 1], part),
        gpz=_of_particle(c.p_mom[:, 2], part),
        gvx=_of_particle(c.p_vtx[:, 0], part),
        gvy=_of_particle(c.p_vtx[:, 1], part),
        gvz=_of_particle(c.p_vtx[:, 2], part),
        gvt=_of_particle(c.p_vtx[:, 3], part),
        gembed=np.where(matched, 0.0, np.nan),
        gprimary=_of_particle(c.p_primary.astype(np.float64), part),
        efromtruth=np.where(matched, c.hit_adc / (1e6 * g.ADC_PER_KEV * g.ADC_SCALE), np.nan),
        nparticles=np.where(matched, 1.0, np.nan),
    )
    for name, values in per_particle.items():
        cols[name] = _of_particle(values, part)
    return cols


def _primary_ancestor(parent: np.ndarray) -> np.ndarray:
    """Each particle's primary ancestor (index; itself for a primary), following parents a handful of generations."""
    anc = np.arange(parent.shape[0])
    for _ in range(16):
        up = parent[anc]
        if not (up >= 0).any():
            break
        anc = np.where(up >= 0, up, anc)
    return anc


def _gtrack_columns(c: FileContent, per_particle: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ntp_gtrack: one row per particle kept, event by event as the evaluator fills it."""
    keep = np.flatnonzero(c.p_keep)
    keep = keep[np.argsort(c.p_event[keep], kind="stable")]
    ev = c.p_event[keep]
    mom = c.p_mom[keep]
    pt = np.hypot(mom[:, 0], mom[:, 1])
    parent = c.p_parent[keep]
    has_parent = parent >= 0
    par = np.where(has_parent, parent, 0)
    anc = _primary_ancestor(c.p_parent)[keep]
    primaries_per_event = np.bincount(c.p_event[c.p_primary], minlength=c.n_events)
    return {
        "event": ev,
        "seed": np.full(keep.shape[0], c.seed % (1 << 24)),
        "gntracks": primaries_per_event[ev],
        "gtrackID": c.p_track_id[keep],
        "gflavor": c.p_pdg[keep],
        "gnhits": per_particle["nclusall"][keep],
        "gnmaps": per_particle["nclusmaps"][keep],
        "gnintt": per_particle["nclusintt"][keep],
        "gntpc": per_particle["nclustpc"][keep],
        "gpx": mom[:, 0],
        "gpy": mom[:, 1],
        "gpz": mom[:, 2],
        "gpt": pt,
        "geta": np.arcsinh(np.divide(mom[:, 2], pt, out=np.full(pt.shape, np.inf), where=pt > 0)),
        "gphi": np.arctan2(mom[:, 1], mom[:, 0]),
        "gvx": c.p_vtx[keep, 0],
        "gvy": c.p_vtx[keep, 1],
        "gvz": c.p_vtx[keep, 2],
        "gvt": c.p_vtx[keep, 3],
        "gembed": np.zeros(keep.shape[0]),
        "gprimary": c.p_primary[keep],
        "gparentflavor": np.where(has_parent, c.p_pdg[par], 0),
        "gparentid": np.where(has_parent, c.p_track_id[par], 0),
        "gprimaryflavor": c.p_pdg[anc],
        "gprimaryid": c.p_track_id[anc],
    }


def trkr_ntuplizer_tree(c: FileContent, file_index: int, run: int = 1) -> dict[str, np.ndarray]:
    """The ntp_cluster columns (float32) of the truth-less trkr-ntuplizer layout."""
    n_hits = c.hit_event.shape[0]
    layer = c.hit_layer.astype(np.int64)
    cols = _cluster_geometry(c.hit_xyz, layer, c.hit_adc)
    tpc = layer >= g.FIRST_TPC_LAYER
    module = np.clip((layer - g.FIRST_TPC_LAYER) // g.LAYERS_PER_MODULE, 0, 2)
    pads = g.PADS_PER_ROW[module]
    drift_cm_per_bin = g.DRIFT_VELOCITY * g.TIME_BIN_NS
    nan = np.full(n_hits, np.nan, np.float32)
    cols.update(
        event=c.hit_event,
        seed=np.full(n_hits, c.seed % (1 << 24)),
        run=np.full(n_hits, run),
        seg=np.full(n_hits, file_index),
        job=np.zeros(n_hits),
        locx=nan,
        locy=nan,
        phibin=np.where(tpc, np.floor((cols["phi"] + np.pi) / (2 * np.pi) * pads), np.nan),
        tbin=np.where(tpc, np.floor((g.DRIFT_LENGTH - np.abs(cols["z"])) / drift_cm_per_bin), np.nan),
        fee=nan,
        chan=nan,
        sampa=nan,
    )
    return {name: _f32(cols[name]) for name in TRKR_NTUPLIZER_COLUMNS}


TITLES = {
    "svtx-evaluator": {
        "ntp_cluster": "svtxcluster => max truth",
        "ntp_gtrack": "g4particle => best svtxtrack",
    },
    "trkr-ntuplizer": {"ntp_cluster": "svtxcluster"},
}


class RootWriter:
    """One output ROOT file in a layout, filled chunk by chunk, renamed into place only when closed cleanly."""

    def __init__(self, path: Path, layout: str, file_index: int = 0, run: int = 1) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
        self.path = Path(path)
        self.layout = layout
        self.file_index = file_index
        self.run = run
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.file = None
        self.trees: dict = {}

    def __enter__(self) -> RootWriter:
        self.file = uproot.recreate(self.tmp, compression=COMPRESSION)
        return self

    def write(self, content: FileContent, event_offset: int = 0) -> None:
        """Append a chunk of events; their `event` numbers start at event_offset."""
        if self.layout == "svtx-evaluator":
            cluster, gtrack = svtx_evaluator_trees(content)
            cluster["event"] += np.float32(event_offset)
            gtrack["event"] += np.float32(event_offset)
            trees = {"ntp_cluster": cluster, "ntp_gtrack": gtrack}
        else:
            trees = {"ntp_cluster": trkr_ntuplizer_tree(content, self.file_index, self.run)}
            trees["ntp_cluster"]["event"] += np.float32(event_offset)
        for name, columns in trees.items():
            if name not in self.trees:
                branches = {k: np.float32 for k in columns}
                self.trees[name] = self.file.mktree(name, branches, title=TITLES[self.layout][name])
            self.trees[name].extend(columns)

    def __exit__(self, exc_type, exc, tb) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        elif self.tmp.exists():
            self.tmp.unlink()
