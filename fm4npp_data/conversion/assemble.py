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

from .. import geometry as g
from ..labels import noise_from_momentum, pid_from_pdg
from ..layouts.base import HIT_TRUTH, Chunk, LayoutError
from ..schema import PARTICLE_TYPES, REJECTS_SCHEMA, events_schema

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


@dataclass
class _Truth:
    """Per-spacepoint truth labels of a chunk (None where its level has none) and, at level "full", its particles."""

    track_id: np.ndarray | None = None  # int64, -1 where unmatched
    pid: np.ndarray | None = None  # int8
    noise: np.ndarray | None = None  # bool
    unknown: np.ndarray | None = None  # bool: a truth id that names no particle of its event (level "full")
    particle_offsets: np.ndarray | None = None  # int64, n_events + 1
    particles: dict[str, np.ndarray] | None = None


def assemble(
    chunk: Chunk, truth: str, source: str, noise_cut: float = g.NOISE_CUT, noise_variable: str = "pt"
) -> tuple[pa.Table, pa.Table, Counts]:
    """Events of a chunk as an Arrow table (schema `events_schema`), its rejects table, and its counts.

    `truth` is the layout's: "full" (labels and particles), "labels" (given per spacepoint), "track" (track ids
    only) or "none"; the events carry less where the chunk has no track ids (`_truth_level`).
    """
    ev_index = _event_index(chunk.offsets)
    level = _truth_level(truth, chunk.hits)
    labels = _truth_of(level, chunk, ev_index, source, noise_cut, noise_variable)
    reason = _reject_reasons(chunk.hits, chunk.n_hits, labels.unknown)
    keep = reason < 0
    offsets = _kept_offsets(ev_index, keep, chunk.n_events)
    energy = _energy(chunk.hits, chunk.n_hits)
    columns = {
        **_spacepoint_columns(chunk, energy, keep, offsets),
        **_label_columns(labels, keep, offsets),
        **_particle_columns(labels),
    }
    table = pa.Table.from_pydict(columns, schema=events_schema(level))
    rejects = _rejects_table(chunk, energy, reason, ev_index, source)
    return table, rejects, _count(chunk, reason, labels)


def _truth_level(truth: str, hits: dict[str, np.ndarray]) -> str:
    """The truth the events carry: the layout's ("full", "labels" or "track"), or "none" without track ids."""
    return truth if truth in ("full", "labels", "track") and "track" in hits else "none"


def _truth_of(
    level: str, chunk: Chunk, ev_index: np.ndarray, source: str, noise_cut: float, noise_variable: str
) -> _Truth:
    """The spacepoints' truth labels at `level` (raises LayoutError naming `source` for a bad particle list)."""
    hits = chunk.hits
    if level == "full":
        return _full_truth(chunk, ev_index, source, noise_cut, noise_variable)
    if level == "labels":  # labels given per spacepoint by the source (the TPCpp-10M release)
        pid, noise = hits["pid"].astype(np.int8), hits["noise"].astype(bool)
        return _Truth(track_id=_source_track_ids(hits["track"]), pid=pid, noise=noise)
    if level == "track":
        return _Truth(track_id=_source_track_ids(hits["track"]))
    return _Truth()


def _source_track_ids(track: np.ndarray) -> np.ndarray:
    """The source's track ids as int64, -1 where it has no truth match (NaN)."""
    return np.where(np.isfinite(track), track, -1).astype(np.int64)


def _full_truth(chunk: Chunk, ev_index: np.ndarray, source: str, noise_cut: float, noise_variable: str) -> _Truth:
    """Labels from the events' truth particles (the chunk's, or one per track id of its spacepoints)."""
    if chunk.particles is not None:
        poff, particles = chunk.particle_offsets, chunk.particles
    else:
        poff, particles = particles_from_hits(chunk, ev_index)
    sort, sorted_key = _particle_keys(chunk.event, poff, particles["id"], source)
    track = chunk.hits["track"]
    found, row = _find_particles(track, ev_index, sort, sorted_key)
    p_pid = pid_from_pdg(np.rint(np.nan_to_num(particles["pdg"])).astype(np.int64))
    p_noise = noise_from_momentum(particles["px"], particles["py"], particles["pz"], noise_cut, noise_variable)
    return _Truth(
        track_id=_scatter(found, row - poff[ev_index[found]], -1, np.int64),
        pid=_scatter(found, p_pid[row], 0, np.int8),
        noise=_scatter(found, p_noise[row], False, bool),
        unknown=np.isfinite(track) & ~found,
        particle_offsets=poff,
        particles=particles,
    )


def _particle_keys(event: np.ndarray, poff: np.ndarray, ids: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The particles' (event index, id) keys, sorted, and the sort; a non-finite or repeated id is a LayoutError."""
    p_ev = _event_index(poff)
    if not np.isfinite(ids).all():
        raise LayoutError(f"{source}: a truth particle has a non-finite id")
    p_key = p_ev * _KEY_SHIFT + ids.astype(np.int64)
    sort = np.argsort(p_key, kind="stable")
    sorted_key = p_key[sort]
    if (sorted_key[1:] == sorted_key[:-1]).any():
        dup = int(sort[np.flatnonzero(sorted_key[1:] == sorted_key[:-1])[0]])
        raise LayoutError(f"{source}: event {int(event[p_ev[dup]])}: truth particle id {int(ids[dup])} appears twice")
    return sort, sorted_key


def _find_particles(
    track: np.ndarray, ev_index: np.ndarray, sort: np.ndarray, sorted_key: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which spacepoints' truth ids name a particle of their event, and the particle row of each of those."""
    matched = np.isfinite(track)
    h_key = ev_index * _KEY_SHIFT + np.where(matched, track, 0).astype(np.int64)
    pos = np.searchsorted(sorted_key, h_key)
    found = matched & (pos < sorted_key.shape[0])
    found[found] = sorted_key[pos[found]] == h_key[found]
    return found, sort[pos[found]]


def _scatter(where: np.ndarray, values: np.ndarray, fill, dtype) -> np.ndarray:
    """An array of `where`'s length holding `values` where it is true and `fill` elsewhere."""
    out = np.full(where.shape[0], fill, dtype)
    out[where] = values
    return out


def _reject_reasons(hits: dict[str, np.ndarray], n: int, unknown: np.ndarray | None) -> np.ndarray:
    """Per spacepoint, the index in REJECT_REASONS of the first reason that applies to it, -1 if it is kept."""
    reason = np.full(n, -1, np.int8)
    finite_pos = np.isfinite(hits["x"]) & np.isfinite(hits["y"]) & np.isfinite(hits["z"])
    reason[~finite_pos] = 0
    if hits.get("energy") is not None:
        reason[(reason < 0) & ~np.isfinite(hits["energy"])] = 1
    if unknown is not None:
        reason[(reason < 0) & unknown] = 2
    return reason


def _energy(hits: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The spacepoints' energies, NaN where the source has none."""
    energy = hits.get("energy")
    return energy if energy is not None else np.full(n, np.nan, np.float32)


def _kept_offsets(ev_index: np.ndarray, keep: np.ndarray, n_events: int) -> np.ndarray:
    """Event offsets into the kept spacepoints."""
    return np.concatenate([[0], np.cumsum(np.bincount(ev_index[keep], minlength=n_events))]).astype(np.int64)


def _spacepoint_columns(chunk: Chunk, energy: np.ndarray, keep: np.ndarray, offsets: np.ndarray) -> dict:
    """The event identity and the kept spacepoints' measured columns."""
    hits = chunk.hits
    return {
        "run": pa.array(chunk.run.astype(np.int32)),
        "event": pa.array(chunk.event.astype(np.int64)),
        "x": _list(offsets, hits["x"][keep].astype(np.float32)),
        "y": _list(offsets, hits["y"][keep].astype(np.float32)),
        "z": _list(offsets, hits["z"][keep].astype(np.float32)),
        "energy": _list(offsets, energy[keep].astype(np.float32)),
        "layer": _list(offsets, hits["layer"][keep].astype(np.int16)),
    }


def _label_columns(labels: _Truth, keep: np.ndarray, offsets: np.ndarray) -> dict:
    """The kept spacepoints' truth columns that `labels` has (track_id, pid, noise)."""
    columns = {}
    if labels.track_id is not None:
        columns["track_id"] = _list(offsets, labels.track_id[keep])
    if labels.pid is not None:
        columns["pid"] = _list(offsets, labels.pid[keep])
        columns["noise"] = _list(offsets, labels.noise[keep])
    return columns


def _particle_columns(labels: _Truth) -> dict:
    """The `particle_*` list columns (none below level "full")."""
    particles, poff = labels.particles, labels.particle_offsets
    if particles is None:
        return {}
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
    columns = {name: _list(poff, np.asarray(column).astype(PARTICLE_TYPES[name])) for name, column in values.items()}
    parent = particles["parent"]
    columns["particle_parent"] = _list(poff, np.nan_to_num(parent).astype(np.int64), mask=~np.isfinite(parent))
    primary = particles["primary"]
    columns["particle_primary"] = _list(poff, np.nan_to_num(primary) > 0.5, mask=~np.isfinite(primary))
    return columns


def _rejects_table(chunk: Chunk, energy: np.ndarray, reason: np.ndarray, ev_index: np.ndarray, source: str) -> pa.Table:
    """The rejected spacepoints, each with its event, index in the event and reason (schema REJECTS_SCHEMA)."""
    hits = chunk.hits
    rej = np.flatnonzero(reason >= 0)
    return pa.Table.from_pydict(
        {
            "source": pa.array([source] * rej.shape[0], pa.string()),
            "run": pa.array(chunk.run[ev_index[rej]].astype(np.int32)),
            "event": pa.array(chunk.event[ev_index[rej]].astype(np.int64)),
            "index": pa.array((rej - chunk.offsets[ev_index[rej]]).astype(np.int64)),
            "reason": pa.array([REJECT_REASONS[r] for r in reason[rej]], pa.string()),
            "x": pa.array(hits["x"][rej].astype(np.float32)),
            "y": pa.array(hits["y"][rej].astype(np.float32)),
            "z": pa.array(hits["z"][rej].astype(np.float32)),
            "energy": pa.array(energy[rej].astype(np.float32)),
            "source_track_id": pa.array(hits["track"][rej] if "track" in hits else np.full(rej.shape[0], np.nan)),
        },
        schema=REJECTS_SCHEMA,
    )


def _count(chunk: Chunk, reason: np.ndarray, labels: _Truth) -> Counts:
    """What the chunk held and what its events keep."""
    keep = reason < 0
    counts = Counts(events=chunk.n_events, spacepoints_in=chunk.n_hits, skipped_other_layers=chunk.skipped_other_layers)
    counts.rejected = {name: int((reason == i).sum()) for i, name in enumerate(REJECT_REASONS)}
    counts.spacepoints_out = int(keep.sum())
    if labels.track_id is not None:
        counts.unmatched = int((keep & (labels.track_id < 0)).sum())
    if labels.pid is not None:
        counts.pid_counts = np.bincount(labels.pid[keep], minlength=5).tolist()
        counts.noise = int(labels.noise[keep].sum())
    if labels.particles is not None:
        counts.particles_out = int(labels.particle_offsets[-1])
        counts.particles_in = chunk.particles_in if chunk.particles is not None else counts.particles_out
    return counts
