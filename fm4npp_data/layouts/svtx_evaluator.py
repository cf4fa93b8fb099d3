"""`svtx-evaluator`: the SvtxEvaluator ntuples of sPHENIX simulation, with per-cluster truth.

`ntp_cluster` holds one row per cluster of every tracker, every column Float_t (a TNtuple); the TPC is layers
7..54. Columns are read by name, so every schema version (the pre-2023 one, the 63-column one, the 2026 ones with
cluster-shape columns; docs/layouts.md) reads the same. Truth is from the particle that deposited most in the
cluster: `gtrackID` (NaN when no truth cluster matched), with its `gflavor`, `gpx gpy gpz` and `gvx gvy gvz`.
Truth particles and their parents come from `ntp_gtrack` (joined on event, gtrackID) when the file has it, else
from the clusters' own truth columns. `event` is the evaluator's counter from 0 per file and the file has no run
number, so the run is derived from the file's content (see fm4npp_data.conversion.convert).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .base import (
    Chunk,
    Layout,
    SourceInfo,
    align_particles,
    check_numeric,
    iterate_flat,
    missing_branches,
    missing_in,
    select_rows,
    tpc_rows,
    tree_or_none,
)

CLUSTER_TREE = "ntp_cluster"
PARTICLE_TREE = "ntp_gtrack"
#: our column -> ntp_cluster column
HITS = {"x": "x", "y": "y", "z": "z", "energy": "adc", "layer": "layer", "track": "gtrackID"}
HIT_TRUTH = {"pdg": "gflavor", "px": "gpx", "py": "gpy", "pz": "gpz", "vx": "gvx", "vy": "gvy", "vz": "gvz"}
HIT_TRUTH_OPTIONAL = {"primary": "gprimary"}
#: our particle column -> ntp_gtrack column
PARTICLES = {
    "id": "gtrackID",
    "pdg": "gflavor",
    "px": "gpx",
    "py": "gpy",
    "pz": "gpz",
    "vx": "gvx",
    "vy": "gvy",
    "vz": "gvz",
    "primary": "gprimary",
    "parent": "gparentid",
}


def has_particles(file) -> bool:
    tree = tree_or_none(file, PARTICLE_TREE)
    return tree is not None and not missing_branches(tree, ["event", *PARTICLES.values()])


@dataclass(frozen=True)
class SvtxEvaluatorLayout(Layout):
    """ntp_cluster (+ ntp_gtrack when present): the simulation's layout, with full truth."""

    def missing(self, file) -> list[str]:
        return missing_in(file, CLUSTER_TREE, ["event", *HITS.values(), *HIT_TRUTH.values()])

    def chunks(self, file, info: SourceInfo) -> Iterator[Chunk]:
        return _chunks(file, info)


SVTX_EVALUATOR = SvtxEvaluatorLayout(
    name="svtx-evaluator",
    truth="full",
    energy_units="ADC (cluster sum, SvtxEvaluator `adc`)",
    row_tree=CLUSTER_TREE,
    particle_tree=PARTICLE_TREE,
)


def _chunks(file, info: SourceInfo) -> Iterator[Chunk]:
    tree = file[CLUSTER_TREE]
    optional = [b for b in HIT_TRUTH_OPTIONAL.values() if b in tree]
    branches = [*HITS.values(), *HIT_TRUTH.values(), *optional]
    check_numeric(info.path, tree, ["event", *branches])
    stream = iterate_flat(tree, branches, info, "event")
    renames = {**HITS, **HIT_TRUTH, **{k: v for k, v in HIT_TRUTH_OPTIONAL.items() if v in optional}}

    if has_particles(file):
        ptree = file[PARTICLE_TREE]
        check_numeric(info.path, ptree, ["event", *PARTICLES.values()])
        pstream = iterate_flat(ptree, list(PARTICLES.values()), info, "event")
        empty = {b: np.zeros(0, np.float32) for b in branches}
        for run, event, offsets, cols, poff, pcols in align_particles(stream, pstream, info.path, empty):
            particles = {ours: pcols[theirs].astype(np.float64) for ours, theirs in PARTICLES.items()}
            yield _chunk(info, run, event, offsets, cols, renames, poff, particles)
    else:
        info.notes.append(f"no {PARTICLE_TREE}: truth particles taken from the clusters' truth columns")
        for run, event, offsets, cols in stream:
            yield _chunk(info, run, event, offsets, cols, renames, None, None)


def _chunk(info, run, event, offsets, cols, renames, poff, particles) -> Chunk:
    hits, tpc = tpc_rows(info, cols, renames)
    for name in ("track", *HIT_TRUTH, *HIT_TRUTH_OPTIONAL):
        if name in hits:
            hits[name] = hits[name].astype(np.float64)
    return Chunk(
        run=run,
        event=event,
        offsets=select_rows(offsets, tpc),
        hits=hits,
        particle_offsets=poff,
        particles=particles,
        skipped_other_layers=int((~tpc).sum()),
        particles_in=0 if poff is None else int(poff[-1]),
    )
