"""Chunks of a layout -> labeled events (an Arrow table in the data contract) plus the spacepoints rejected.

Pure functions over arrays. A spacepoint is rejected, with its reason, when it cannot be used: a non-finite position
or energy, or a truth id that names no particle of its event. Rejected spacepoints are not in the events; they go
to the rejects table and are counted, so that spacepoints in = spacepoints out + rejected, always.

Truth: `track_id` is the index of the spacepoint's particle in its event's `particle_*` lists (so
`particle_id[track_id]` is the source's id, which may be negative, like Geant4 secondaries in sPHENIX), or -1 where
the source has no truth match. Without particle lists (a user layout with track ids only), `track_id` is the source's
id, -1 where unmatched. `pid` and `noise` come from the particle's PDG code and momentum (fm4npp_data.labels); an
unmatched spacepoint is pid 0 ("other") and not noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from . import geometry as g
from .labels import noise_from_momentum, pid_from_pdg
from .layouts.base import HIT_TRUTH, Chunk, LayoutError
from .schema import PARTICLE_TYPES, REJECTS_SCHEMA, events_schema

REJECT_REASONS = ("non_finite_position", "non_finite_energy", "unknown_truth_id")
_KEY_SHIFT = 1 << 34  # (event index, source id) -> one int64 key; ids up to +-2**33


@dataclass
class Counts:
    """What one chunk (or one input, summed) held and produced."""

    events: int = 0
    spacepoints_in: int = 0
    spacepoints_out: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    unmatched: int = 0
    particles_in: int = 0
    particles_out: int = 0
    skipped_other_layers: int = 0
    pid_counts: list[int] = field(default_factory=lambda: [0] * 5)
    noise: int = 0

    def add(self, other: Counts) -> None:
        for name in ("events", "spacepoints_in", "spacepoints_out", "unmatched", "particles_in", "particles_out"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped_other_layers += other.skipped_other_layers
        self.noise += other.noise
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        self.pid_counts = [a + b for a, b in zip(self.pid_counts, other.pid_counts, strict=True)]

    @classmethod
    def total(cls, dicts) -> Counts:
        """The sum of counts recorded with `as_dict` (manifest entries)."""
        total = cls()
        for d in dicts:
            counts = cls(**{k: v for k, v in d.items() if k != "rejected"})
            counts.rejected = dict(d["rejected"])
            total.add(counts)
        return total

    def as_dict(self) -> dict:
        return {
            "events": self.events,
            "spacepoints_in": self.spacepoints_in,
            "spacepoints_out": self.spacepoints_out,
            "rejected": dict(self.rejected),
            "unmatched": self.unmatched,
            "particles_in": self.particles_in,
            "particles_out": self.particles_out,
            "skipped_other_layers": self.skipped_other_layers,
            "pid_counts": list(self.pid_counts),
            "noise": self.noise,
        }


def _list(offsets: np.ndarray, values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, mask=mask))


def _event_index(offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))


def particles_from_hits(chunk: Chunk, ev_index: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One truth particle per (event, track id) of the spacepoints' truth columns, sorted by id within events."""
    track = chunk.hits["track"]
    matched = np.flatnonzero(np.isfinite(track))
    key = ev_index[matched] * _KEY_SHIFT + track[matched].astype(np.int64)
    _, first = np.unique(key, return_index=True)
    rows = matched[first]
    counts = np.bincount(ev_index[rows], minlength=chunk.n_events)
    particles = {"id": track[rows]}
    for name in HIT_TRUTH:
        particles[name] = chunk.hits[name][rows] if name in chunk.hits else np.full(rows.shape[0], np.nan)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), particles


def assemble(
    chunk: Chunk, truth: str, source: str, noise_cut: float = g.NOISE_CUT, noise_variable: str = "pt"
) -> tuple[pa.Table, pa.Table, Counts]:
    """Events of a chunk as an Arrow table (schema `events_schema`), its rejects table, and its counts.

    `truth` is the layout's: "full" (labels and particles), "track" (track ids only) or "none".
    """
    hits = chunk.hits
    n = chunk.n_hits
    offsets = chunk.offsets
    ev_index = _event_index(offsets)
    energy = hits.get("energy")
    reason = np.full(n, -1, np.int8)
    finite_pos = np.isfinite(hits["x"]) & np.isfinite(hits["y"]) & np.isfinite(hits["z"])
    reason[~finite_pos] = 0
    if energy is not None:
        reason[(reason < 0) & ~np.isfinite(energy)] = 1
    else:
        energy = np.full(n, np.nan, np.float32)

    counts = Counts(events=chunk.n_events, spacepoints_in=n, skipped_other_layers=chunk.skipped_other_layers)
    track_id = None
    pid = noise = None
    poff = particles = None
    if truth in ("full", "labels", "track") and "track" in hits:
        track = hits["track"]
        matched = np.isfinite(track)
        if truth == "full":
            if chunk.particles is not None:
                poff, particles = chunk.particle_offsets, chunk.particles
            else:
                poff, particles = particles_from_hits(chunk, ev_index)
            p_ev = _event_index(poff)
            pid_src = particles["id"]
            if not np.isfinite(pid_src).all():
                raise LayoutError(f"{source}: a truth particle has a non-finite id")
            p_key = p_ev * _KEY_SHIFT + pid_src.astype(np.int64)
            sort = np.argsort(p_key, kind="stable")
            sorted_key = p_key[sort]
            if (sorted_key[1:] == sorted_key[:-1]).any():
                dup = int(sort[np.flatnonzero(sorted_key[1:] == sorted_key[:-1])[0]])
                raise LayoutError(
                    f"{source}: event {int(chunk.event[p_ev[dup]])}: "
                    f"truth particle id {int(pid_src[dup])} appears twice"
                )
            h_key = ev_index * _KEY_SHIFT + np.where(matched, track, 0).astype(np.int64)
            pos = np.searchsorted(sorted_key, h_key)
            found = matched & (pos < sorted_key.shape[0])
            found[found] = sorted_key[pos[found]] == h_key[found]
            reason[(reason < 0) & matched & ~found] = 2
            row = sort[pos[found]]  # the particle of each found spacepoint
            track_id = np.full(n, -1, np.int64)
            track_id[found] = row - poff[ev_index[found]]
            p_pid = pid_from_pdg(np.rint(np.nan_to_num(particles["pdg"])).astype(np.int64))
            p_noise = noise_from_momentum(particles["px"], particles["py"], particles["pz"], noise_cut, noise_variable)
            pid = np.zeros(n, np.int8)
            pid[found] = p_pid[row]
            noise = np.zeros(n, bool)
            noise[found] = p_noise[row]
        elif truth == "labels":  # labels given per spacepoint by the source (the TPCpp-10M release)
            track_id = np.where(matched, track, -1).astype(np.int64)
            pid = hits["pid"].astype(np.int8)
            noise = hits["noise"].astype(bool)
        else:
            track_id = np.where(matched, track, -1).astype(np.int64)
        counts.unmatched = int((~matched).sum())

    keep = reason < 0
    new_counts = np.bincount(ev_index[keep], minlength=chunk.n_events)
    new_offsets = np.concatenate([[0], np.cumsum(new_counts)]).astype(np.int64)
    for i, name in enumerate(REJECT_REASONS):
        counts.rejected[name] = int((reason == i).sum())
    counts.spacepoints_out = int(keep.sum())
    if track_id is not None:
        counts.unmatched = int((keep & (track_id < 0)).sum())

    columns = {
        "run": pa.array(chunk.run.astype(np.int32)),
        "event": pa.array(chunk.event.astype(np.int64)),
        "x": _list(new_offsets, hits["x"][keep].astype(np.float32)),
        "y": _list(new_offsets, hits["y"][keep].astype(np.float32)),
        "z": _list(new_offsets, hits["z"][keep].astype(np.float32)),
        "energy": _list(new_offsets, energy[keep].astype(np.float32)),
        "layer": _list(new_offsets, hits["layer"][keep].astype(np.int16)),
    }
    if track_id is not None:
        columns["track_id"] = _list(new_offsets, track_id[keep])
    if pid is not None:
        columns["pid"] = _list(new_offsets, pid[keep])
        columns["noise"] = _list(new_offsets, noise[keep])
        counts.pid_counts = np.bincount(pid[keep], minlength=5).tolist()
        counts.noise = int(noise[keep].sum())
    if particles is not None:
        counts.particles_out = int(poff[-1])
        counts.particles_in = chunk.particles_in if chunk.particles is not None else counts.particles_out
        values = {
            "particle_id": particles["id"],
            "particle_pdg": np.rint(np.nan_to_num(particles["pdg"])),
            "particle_px": particles["px"],
            "particle_py": particles["py"],
            "particle_pz": particles["pz"],
            "particle_vx": particles["vx"],
            "particle_vy": particles["vy"],
            "particle_vz": particles["vz"],
        }
        for name, column in values.items():
            columns[name] = _list(poff, np.asarray(column).astype(PARTICLE_TYPES[name]))
        parent = particles["parent"]
        columns["particle_parent"] = _list(poff, np.nan_to_num(parent).astype(np.int64), mask=~np.isfinite(parent))
        primary = particles["primary"]
        columns["particle_primary"] = _list(poff, np.nan_to_num(primary) > 0.5, mask=~np.isfinite(primary))
    level = (
        "full"
        if particles is not None
        else "labels"
        if pid is not None
        else "track"
        if track_id is not None
        else "none"
    )
    table = pa.Table.from_pydict(columns, schema=events_schema(level))

    rej = np.flatnonzero(~keep)
    rejects = pa.Table.from_pydict(
        {
            "source": pa.array([source] * rej.shape[0], pa.string()),
            "run": pa.array(chunk.run[ev_index[rej]].astype(np.int32)),
            "event": pa.array(chunk.event[ev_index[rej]].astype(np.int64)),
            "index": pa.array((rej - offsets[ev_index[rej]]).astype(np.int64)),
            "reason": pa.array([REJECT_REASONS[r] for r in reason[rej]], pa.string()),
            "x": pa.array(hits["x"][rej].astype(np.float32)),
            "y": pa.array(hits["y"][rej].astype(np.float32)),
            "z": pa.array(hits["z"][rej].astype(np.float32)),
            "energy": pa.array(energy[rej].astype(np.float32)),
            "source_track_id": pa.array(hits["track"][rej] if "track" in hits else np.full(rej.shape[0], np.nan)),
        },
        schema=REJECTS_SCHEMA,
    )
    return table, rejects, counts
