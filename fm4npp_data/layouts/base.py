"""What every input layout produces, and the streaming readers they share.

A layout reads one input file as a stream of `Chunk`s: whole events, columnar (flat arrays and event offsets), in
bounded memory. Spacepoint columns use the names of the data contract (`x y z energy layer`), plus the truth the
source has, named here once:

- `track`: the source's truth id of the spacepoint's particle, float64, NaN where the source has no truth match;
- per-spacepoint truth of that particle (`pdg px py pz vx vy vz primary parent`), float64, NaN where unmatched;
- or a separate particle table (`id pdg px py pz vx vy vz primary parent`) with its own event offsets.

Layouts know nothing of labels, Parquet or kernels: fm4npp_data.conversion.assemble turns chunks into labeled events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import geometry as g
from ..errors import LayoutError

#: Per-spacepoint truth columns a layout may provide (values of the truth particle), and particle-table columns.
HIT_TRUTH = ("pdg", "px", "py", "pz", "vx", "vy", "vz", "primary", "parent")
PARTICLE_COLUMNS = ("id", *HIT_TRUTH)
#: Numeric ROOT types a coordinate, energy or id branch may have (uproot typenames).
NUMERIC_TYPES = frozenset(
    {"float", "double", "int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t", "uint32_t", "int64_t", "uint64_t"}
)


@dataclass
class Chunk:
    """Complete events of one input: per-event identity, spacepoints by event offsets, optional particles."""

    run: np.ndarray  # int32, one per event
    event: np.ndarray  # int64, one per event
    offsets: np.ndarray  # int64, n_events + 1, into the spacepoint columns
    hits: dict[str, np.ndarray]  # x y z energy layer [track] [HIT_TRUTH...]
    particle_offsets: np.ndarray | None = None  # int64, n_events + 1
    particles: dict[str, np.ndarray] | None = None  # PARTICLE_COLUMNS
    #: Clusters of other detectors (silicon, micromegas) present in the input and skipped, by design.
    skipped_other_layers: int = 0
    #: Truth particles read from the input for events of this chunk.
    particles_in: int = 0

    @property
    def n_events(self) -> int:
        return int(self.event.shape[0])

    @property
    def n_hits(self) -> int:
        return int(self.offsets[-1])


@dataclass(frozen=True)
class Layout:
    """An input layout, declared as data: what it is called, how much truth it has, which trees to count.

    `truth` is "full" (labels and truth particles), "track" (track ids only), "labels" (labels given per spacepoint)
    or "none". `row_tree` is the one-row-per-spacepoint tree whose entries are checked against what was converted
    (None for a one-row-per-event tree); `particle_tree` the particle tree checked the same way (None if none).
    Subclasses say how to check a file (`missing`) and read it (`chunks`).
    """

    name: str
    truth: str
    energy_units: str
    row_tree: str | None = None
    particle_tree: str | None = None

    def missing(self, file) -> list[str]:
        """What the open ROOT file lacks for this layout: ["tree NAME"] or ["TREE.branch", ...]; empty if it fits."""
        raise NotImplementedError

    def chunks(self, file, info: SourceInfo) -> Iterator[Chunk]:
        """The file's events as a stream of chunks, in bounded memory."""
        raise NotImplementedError


@dataclass
class SourceInfo:
    """What a layout knows of the file it reads: its path, and the run number to use when the file has none."""

    path: Path
    default_run: int
    step_size: int | str = "64 MB"
    notes: list[str] = field(default_factory=list)


def tree_or_none(file, name: str):
    """The TTree `name` of an open uproot file, or None when the file has no such key.

    A key that exists but cannot be read (a damaged file) raises uproot's error: it is not "missing"."""
    return file.get(name, None)


def missing_branches(tree, branches) -> list[str]:
    """Branches of `branches` the tree does not have."""
    have = set(tree.keys())
    return [b for b in branches if b not in have]


def missing_in(file, tree_name: str, branches) -> list[str]:
    """What a file lacks of a tree and its branches: ["tree NAME"] or ["NAME.branch", ...]; empty if nothing."""
    tree = tree_or_none(file, tree_name)
    if tree is None:
        return [f"tree {tree_name}"]
    return [f"{tree_name}.{b}" for b in missing_branches(tree, branches)]


def check_numeric(path: Path, tree, branches, jagged: bool = False) -> None:
    """Raise LayoutError naming each branch that is not a numeric scalar (or a numeric vector when jagged)."""
    bad = []
    for name in dict.fromkeys(branches):
        typename = str(tree[name].typename)
        core = typename.replace("std::", "")
        if jagged:
            for prefix in ("vector<", "ROOT::VecOps::RVec<"):
                if core.startswith(prefix) and core.endswith(">"):
                    core = core[len(prefix) : -1].strip()
            if core.endswith("[]"):
                core = core[:-2]
        if core not in NUMERIC_TYPES:
            expected = "a numeric vector per event" if jagged else "a numeric scalar per row"
            bad.append(f"{name} is {typename}, expected {expected}")
    if bad:
        raise LayoutError(f"{path}: tree {tree.name!r}: branch of the wrong type: {'; '.join(bad)}")


def as_int(path: Path, name: str, values: np.ndarray, dtype) -> np.ndarray:
    """Integers from a (possibly float) id column; a non-finite or fractional id is an error naming the branch."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.rint(values))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise LayoutError(f"{path}: branch {name!r} holds a non-integer id ({values[row]!r} in row {row})")
        values = np.rint(values)
    return values.astype(dtype)


def group_rows(run: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Offsets of the blocks of consecutive rows with the same (run, event)."""
    n = event.shape[0]
    if n == 0:
        return np.zeros(1, np.int64)
    change = np.flatnonzero((event[1:] != event[:-1]) | (run[1:] != run[:-1])) + 1
    return np.concatenate([[0], change, [n]]).astype(np.int64)


def iterate_flat(
    tree, branches: list[str], info: SourceInfo, event_branch: str, run_branch: str | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """Stream a one-row-per-spacepoint tree as whole events: (run, event, offsets, columns) per chunk.

    Rows of one event are consecutive in such trees; the last event of a chunk may continue in the next one, so
    it is carried over. Memory is bounded by the step size plus one event.
    """
    read = sorted({*branches, event_branch, *([run_branch] if run_branch else [])})
    carry: dict[str, np.ndarray] | None = None
    for arrays in tree.iterate(read, step_size=info.step_size, library="np"):
        if carry is not None:
            arrays = {k: np.concatenate([carry[k], arrays[k]]) for k in read}
        event = as_int(info.path, event_branch, arrays[event_branch], np.int64)
        if event.shape[0] == 0:
            carry = None
            continue
        key = (
            event
            if run_branch is None
            else event * (1 << 31) + as_int(info.path, run_branch, arrays[run_branch], np.int64)
        )
        before_last = np.flatnonzero(key != key[-1])
        tail = int(before_last[-1]) + 1 if before_last.size else 0
        carry = {k: v[tail:] for k, v in arrays.items()}
        if tail == 0:
            continue
        yield _grouped({k: v[:tail] for k, v in arrays.items()}, info, event_branch, run_branch)
    if carry is not None and carry[event_branch].shape[0]:
        yield _grouped(carry, info, event_branch, run_branch)


def _grouped(arrays, info: SourceInfo, event_branch: str, run_branch: str | None):
    event = as_int(info.path, event_branch, arrays[event_branch], np.int64)
    if run_branch:
        run = as_int(info.path, run_branch, arrays[run_branch], np.int64)
    else:
        run = np.full(event.shape[0], info.default_run, np.int64)
    offsets = group_rows(run, event)
    starts = offsets[:-1]
    return run[starts].astype(np.int32), event[starts], offsets, arrays


def select_rows(offsets: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """New event offsets after keeping the rows where `keep` is true (events with no row left stay, empty)."""
    counts = np.add.reduceat(keep.astype(np.int64), offsets[:-1]) if keep.shape[0] else np.zeros(0, np.int64)
    counts = np.where(np.diff(offsets) > 0, counts, 0)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def align_particles(
    chunks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]],
    particles: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]],
    path: Path,
    empty_hits: dict[str, np.ndarray],
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray, dict]]:
    """Merge two event streams sorted by event number (spacepoints, particles) into chunks with both.

    An event present in only one stream gets an empty block in the other, so every spacepoint and every particle
    lands in exactly one event. Yields (run, event, hit offsets, hit columns, particle offsets, particle columns).
    """
    buffer: list[tuple] = []  # particle groups read but not yet used
    exhausted = False
    last_event = None

    def pull_until(limit) -> None:
        nonlocal exhausted
        while not exhausted and (not buffer or limit is None or buffer[-1][1][-1] <= limit):
            try:
                group = next(particles)
            except StopIteration:
                exhausted = True
                break
            ev = group[1]
            if ev.shape[0] == 0:
                continue
            if (np.diff(ev) <= 0).any() or (buffer and ev[0] <= buffer[-1][1][-1]):
                raise LayoutError(f"{path}: events are not in increasing order in the particle tree")
            buffer.append(group)

    def take(limit):
        """Particle groups with event <= limit (all when limit is None), concatenated."""
        run_l, ev_l, count_l, cols_l = [], [], [], []
        while buffer:
            run, ev, off, cols = buffer[0]
            n = ev.shape[0] if limit is None else int(np.searchsorted(ev, limit, side="right"))
            run_l.append(run[:n])
            ev_l.append(ev[:n])
            count_l.append(np.diff(off[: n + 1]))
            cols_l.append({k: v[: off[n]] for k, v in cols.items()})
            if n < ev.shape[0]:
                buffer[0] = (run[n:], ev[n:], off[n:] - off[n], {k: v[off[n] :] for k, v in cols.items()})
                break
            buffer.pop(0)
        return run_l, ev_l, count_l, cols_l

    def merged(run_h, ev_h, off_h, cols_h, parts):
        run_l, ev_l, count_l, cols_l = parts
        ev_p = np.concatenate(ev_l) if ev_l else np.zeros(0, np.int64)
        run_p = np.concatenate(run_l) if run_l else np.zeros(0, np.int32)
        count_p = np.concatenate(count_l) if count_l else np.zeros(0, np.int64)
        pcols = {k: np.concatenate([c[k] for c in cols_l]) for k in cols_l[0]} if cols_l else {}
        events = np.union1d(ev_h, ev_p)
        run = np.empty(events.shape[0], np.int32)
        run[np.searchsorted(events, ev_p)] = run_p
        run[np.searchsorted(events, ev_h)] = run_h
        hit_counts = np.zeros(events.shape[0], np.int64)
        hit_counts[np.searchsorted(events, ev_h)] = np.diff(off_h)
        part_counts = np.zeros(events.shape[0], np.int64)
        part_counts[np.searchsorted(events, ev_p)] = count_p
        hit_off = np.concatenate([[0], np.cumsum(hit_counts)]).astype(np.int64)
        part_off = np.concatenate([[0], np.cumsum(part_counts)]).astype(np.int64)
        return run, events, hit_off, cols_h, part_off, pcols

    for run_h, ev_h, off_h, cols_h in chunks:
        if ev_h.shape[0] == 0:
            continue
        if (np.diff(ev_h) <= 0).any() or (last_event is not None and ev_h[0] <= last_event):
            raise LayoutError(f"{path}: events are not in increasing order in the spacepoint tree")
        last_event = ev_h[-1]
        pull_until(last_event)
        yield merged(run_h, ev_h, off_h, cols_h, take(last_event))
    pull_until(None)
    rest = take(None)
    if sum(e.shape[0] for e in rest[1]):
        yield merged(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(1, np.int64), empty_hits, rest)


def tpc_rows(
    info: SourceInfo, cols: dict[str, np.ndarray], renames: dict[str, str], layer_offset: int = g.FIRST_TPC_LAYER
):
    """The TPC rows of a tracker-wide cluster table, renamed to our columns, `layer` as 0..47; and the row mask.

    `layer_offset` is the source's number of the innermost TPC layer (sPHENIX: 7).
    """
    layer = as_int(info.path, renames["layer"], cols[renames["layer"]], np.int64) - layer_offset
    tpc = (layer >= 0) & (layer < g.N_LAYERS)
    hits = {ours: cols[theirs][tpc] for ours, theirs in renames.items() if ours != "layer"}
    hits["layer"] = layer[tpc].astype(np.int16)
    for name in ("x", "y", "z", "energy"):
        hits[name] = hits[name].astype(np.float32)
    return hits, tpc


def truthless_chunks(
    file, info: SourceInfo, tree_name: str, columns: dict[str, str], event_branch: str, run_branch: str | None
) -> Iterator[Chunk]:
    """Chunks of a one-row-per-cluster tree without truth (recorded-data layouts): TPC rows only."""
    tree = file[tree_name]
    branches = list(columns.values())
    check_numeric(info.path, tree, [event_branch, *([run_branch] if run_branch else []), *branches])
    for run, event, offsets, cols in iterate_flat(tree, branches, info, event_branch, run_branch):
        hits, tpc = tpc_rows(info, cols, columns)
        yield Chunk(run, event, select_rows(offsets, tpc), hits, skipped_other_layers=int((~tpc).sum()))
