"""Collation: a unit's events read into a Chunk (its `order` and `knn` checked, normalized and put in `order` once,
vectorized over the row group; each event's difficulty weight), and the events of a batch padded into torch tensors
(the loop is over the events of a batch, never over spacepoints)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import geometry as g
from ..errors import DatasetError, require
from ..prepared import difficulty_bin
from ..tasks import TASKS, TRUTH_COLUMNS

torch = require("torch", "models", "the PyTorch loader")

#: Columns every batch needs (the labeled data add the tasks' TRUTH_COLUMNS; the `particle_*` lists are never read).
COLUMNS = ("run", "event", "energy", "r", "phi", "eta", "order", "knn", "knn_mean_distance")


def _normalize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(values - lo) / (hi - lo) as float32, computed as kernels.cylindrical.minmax does (float64, one scale)."""
    return ((values.astype(np.float64) - lo) * (1.0 / (hi - lo))).astype(np.float32)


def _flat(column: pa.ChunkedArray | pa.Array, where: str, name: str, depth: int = 1) -> np.ndarray:
    """The values of a list column (of lists of lists for depth 2), flat; DatasetError on a null list (the data
    would not line up)."""
    if column.null_count:
        raise DatasetError(f"{where}: column {name!r} has null lists; the shard is damaged")
    values = column
    for _ in range(depth):
        values = pc.list_flatten(values)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.to_numpy(zero_copy_only=False)


@dataclass
class Chunk:
    """The events of one unit, ready to collate: per-spacepoint arrays are in each event's `order` (position j of an
    event is its spacepoint order[j]); `neighbours` index `coords` (stored order, one zero row appended, so -1 gives
    zeros)."""

    offsets: np.ndarray  # (n + 1,) int64: event e is rows offsets[e]:offsets[e + 1]
    run: np.ndarray  # (n,) int64
    event: np.ndarray  # (n,) int64
    weight: np.ndarray  # (n,) float32
    features: np.ndarray  # (N, 4) float32, in order
    index: np.ndarray  # (N,) int32: order
    neighbours: np.ndarray  # (N, k) int32 into coords, in order; -1 where none
    coords: np.ndarray  # (N + 1, 3) float32 [eta', phi', r'], stored order, last row zeros
    labels: dict[str, np.ndarray]  # track_id, pid, noise in order (labeled data)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def read_chunk(table: pa.Table, k: int, labels: bool, difficulty: dict | None, where: str) -> Chunk:
    """Normalize and reorder a table of events (vectorized over all its spacepoints)."""
    lengths = pc.list_value_length(table["order"]).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    start = np.repeat(offsets[:-1], lengths)  # first row of each spacepoint's event
    order = _flat(table["order"], where, "order")
    knn_type = table.schema.field("knn").type.value_type
    knn = _flat(table["knn"], where, "knn", depth=2).reshape(-1, knn_type.list_size)[:, :k]
    flat = {c: _flat(table[c], where, c) for c in ("energy", "r", "phi", "eta", *(TRUTH_COLUMNS if labels else ()))}
    n = offsets[-1]
    sizes = {c: a.shape[0] for c, a in flat.items()} | {"order": order.shape[0], "knn": knn.shape[0]}
    if any(s != n for s in sizes.values()):
        raise DatasetError(
            f"{where}: the spacepoint columns do not line up (order, knn, energy, r, phi, eta); "
            "the shard is damaged: prepare it again"
        )
    perm = _check_indices(table, offsets, start, order, knn, where)  # row of the j-th spacepoint read
    coords = np.zeros((n + 1, 3), np.float32)
    coords[:n, 0] = _normalize(flat["eta"], *g.ETA_RANGE)
    coords[:n, 1] = _normalize(flat["phi"], *g.PHI_RANGE)
    coords[:n, 2] = _normalize(flat["r"], *g.R_RANGE)
    features = np.empty((n, 4), np.float32)
    features[:, 0] = _normalize(flat["energy"][perm], g.ENERGY_MEAN, g.ENERGY_MEAN + g.ENERGY_STD)
    features[:, 1:] = coords[perm]
    read_knn = knn[perm]
    neighbours = np.where(read_knn >= 0, read_knn + start[:, None], -1).astype(np.int32)
    distance = table["knn_mean_distance"].to_numpy(zero_copy_only=False).astype(np.float64)
    return Chunk(
        offsets=offsets,
        run=table["run"].to_numpy(zero_copy_only=False).astype(np.int64),
        event=table["event"].to_numpy(zero_copy_only=False).astype(np.int64),
        weight=event_weights(distance, difficulty),
        features=features,
        index=order.astype(np.int32),
        neighbours=neighbours,
        coords=coords,
        labels={c: flat[c][perm] for c in TRUTH_COLUMNS} if labels else {},
    )


def _check_indices(
    table: pa.Table, offsets: np.ndarray, start: np.ndarray, order: np.ndarray, knn: np.ndarray, where: str
) -> np.ndarray:
    """The stored row of each position (start + order), once each event's `order` is checked to be a permutation of
    its spacepoints and its `knn` to be in [-1, n); DatasetError naming the first event that is not. Vectorized over
    the chunk: n positions in range hit each of the n stored rows once, or leave one of them unhit."""
    lengths = np.diff(offsets)
    own = np.repeat(lengths, lengths)
    outside = (order < 0) | (order >= own)
    perm = start + np.where(outside, 0, order) if outside.any() else start + order
    bad_order = outside | (np.bincount(perm, minlength=offsets[-1]) == 0)  # positions | rows, in their event's range
    bad_knn = ((knn < -1) | (knn >= own[:, None])).any(axis=1)
    for bad, what in (
        (bad_order, "its `order` is not a permutation of its {n} spacepoints"),
        (bad_knn, "its `knn` holds indices outside [-1, {n}), {n} being its spacepoints"),
    ):
        if bad.any():
            e = int(np.searchsorted(offsets, np.argmax(bad), side="right") - 1)
            run, event = table["run"][e].as_py(), table["event"][e].as_py()
            raise DatasetError(
                f"{where}: the spacepoint columns do not line up: (run {run}, event {event}): "
                f"{what.format(n=lengths[e])}; the shard is damaged or was not prepared by this fm4npp: re-run "
                "`fm4npp-data prepare` on its set (and build the repository again)"
            )
    return perm


def event_weights(distance: np.ndarray, difficulty: dict | None) -> np.ndarray:
    """Weight of each event: that of the bin of its knn_mean_distance (fm4npp_data.prepared.difficulty_bin); 1 for an
    event without neighbours (NaN) or when there are no bins."""
    if difficulty is None:
        return np.ones(distance.shape[0], np.float32)
    bins = difficulty_bin(distance, difficulty)
    weights = np.asarray(difficulty["weights"], np.float64)
    return np.where(bins >= 0, weights[np.maximum(bins, 0)], 1.0).astype(np.float32)


_NUMPY = {torch.int64: np.int64, torch.float32: np.float32, torch.bool: np.bool_}


def _empty(shape: tuple[int, ...], dtype: torch.dtype, fill, shared: bool) -> torch.Tensor:
    """A tensor filled with `fill`; in shared memory when `shared` (a DataLoader worker), allocated there directly as
    torch's default_collate does: handing it to the main process then copies nothing (moving a finished batch into
    shared memory costs more than making it)."""
    if not shared:  # np.zeros: pages of zeros are mapped lazily, only the real spacepoints are written
        return torch.from_numpy(np.zeros(shape, _NUMPY[dtype]) if fill == 0 else np.full(shape, fill, _NUMPY[dtype]))
    base = torch.empty(0, dtype=dtype)
    storage = base._typed_storage()._new_shared(int(np.prod(shape)))
    tensor = base.new(storage).view(shape)
    return tensor.fill_(fill) if fill != 0 else tensor  # new shared memory is zeros


def collate(chunks: list[Chunk], refs: list[tuple[int, int]], k: int, labels: bool, shared: bool = False) -> dict:
    """Pad the events `refs` ((chunk, row) pairs) into the tensors of a batch (module docstring); the tensors are
    filled through NumPy views of them."""
    lengths = [int(chunks[c].offsets[r + 1] - chunks[c].offsets[r]) for c, r in refs]
    b, s = len(refs), max(max(lengths), 1)
    shapes = {
        "run": ((b,), torch.int64, 0),
        "event": ((b,), torch.int64, 0),
        "features": ((b, s, 4), torch.float32, 0.0),
        "mask": ((b, s), torch.bool, False),
        "index": ((b, s), torch.int64, -1),
        "targets": ((b, s, k, 3), torch.float32, 0.0),
        "target_mask": ((b, s, k), torch.bool, False),
        "weight": ((b,), torch.float32, 0.0),
    }
    if labels:  # each task's labels under its predictions column: track, pid (int64, -1 on padding), noise (bool)
        shapes |= {task.column: ((b, s), *_label_type(task.dtype)) for task in TASKS.values()}
    batch = {name: _empty(shape, dtype, fill, shared) for name, (shape, dtype, fill) in shapes.items()}
    out = {name: t.numpy() for name, t in batch.items()}
    out["run"][:] = [chunks[c].run[r] for c, r in refs]
    out["event"][:] = [chunks[c].event[r] for c, r in refs]
    out["weight"][:] = [chunks[c].weight[r] for c, r in refs]
    for i, ((c, r), n) in enumerate(zip(refs, lengths, strict=True)):
        chunk = chunks[c]
        lo, hi = chunk.offsets[r], chunk.offsets[r + 1]
        neighbours = chunk.neighbours[lo:hi]
        out["features"][i, :n] = chunk.features[lo:hi]
        out["mask"][i, :n] = True
        out["index"][i, :n] = chunk.index[lo:hi]
        out["targets"][i, :n] = chunk.coords[neighbours]  # -1 is the zero row
        out["target_mask"][i, :n] = neighbours >= 0
        if labels:
            for task in TASKS.values():
                out[task.column][i, :n] = chunk.labels[task.truth][lo:hi]
    return batch


def _label_type(dtype: pa.DataType) -> tuple[torch.dtype, bool | int]:
    """The batch tensor's type and padding of a task's labels: bool (False) for a boolean task, else int64 (-1)."""
    return (torch.bool, False) if pa.types.is_boolean(dtype) else (torch.int64, -1)
