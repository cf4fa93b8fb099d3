"""The PyTorch loader of the benchmark dataset: Parquet row groups in, shuffled, length-bucketed, padded batches out.

    loader = make_loader("tpc-pp200", "labeled", "train", batch_tokens=65_536, seed=0, rank=rank,
                         world_size=world_size, num_workers=4)
    for batch in loader:            # one epoch; the next `for` is the next epoch
        batch["features"]           # (B, S, 4) float32: [E', eta', phi', r'] in each event's raster-scan `order`
        ...
    state = loader.state_dict()     # mid-epoch; a new loader with `load_state_dict(state)` goes on from there

What happens, in order:

1. **Source.** A dataset repository (`REPO/data/{config}/{split}-NNNNN-of-MMMMM.parquet`), a prepared set or dataset
   folder, one shard, or a `datasets.Dataset` (`load_dataset(REPO, "labeled", split="train")`). Folders and shards
   have no configurations: every event is read and `config` / `split` are not used (a dataset folder of an imported
   release, `ROOT/{config}/{split}`, is the exception). A repository's shards are checked against the sha256 of its
   `splits.json` when the loader is made (fm4npp_data.integrity: hashed once per unchanged file), pages are read with
   their checksums verified, and each row group's `order` (a permutation of the event's spacepoints) and `knn`
   (indices in [-1, n)) are checked when it is read.
2. **Work units** are (shard, row group) pairs (ranges of 1,000 rows of a `datasets.Dataset`). Each epoch, the units
   are shuffled by a generator seeded with (seed, epoch) and dealt round-robin over the global workers
   (rank * W + worker, of world_size * W, W = max(num_workers, 1)): over all ranks and workers every event of the
   split is read exactly once per epoch. Only the columns the batches need are read, one row group at a time.
3. **Shuffle buffer and length buckets.** A worker reads consecutive units of its share into a pool of at least
   `buffer_events` events, orders the pool by length (ties in random order), cuts it greedily into batches whose
   padded size B * S stays within `batch_tokens`, and yields those batches in random order. Events of similar
   length share a batch, so little is padding; an event longer than the budget is a batch of its own (counted in
   `summary()`), never dropped. An empty event counts as one token (S is at least 1).
4. **Collation** copies each event's arrays, already normalized and put in `order` once per row group (vectorized
   over the row group), into padded arrays; the loop is over the events of a batch, never over spacepoints.
5. **Workers.** With num_workers > 0 the stream runs in `torch.utils.data.DataLoader` workers (batch_size=None),
   which hand batches out round-robin. The loader runs no Numba kernel (its normalization is one NumPy expression),
   so nothing in a forked worker depends on a thread pool of the parent.
6. **Resuming.** `state_dict()` records the epoch and how many batches each worker's stream has handed out; a new
   loader given it skips those batches (planned from the list lengths alone, without collating them) and starts the
   round-robin at the worker that was next, so the rest of the epoch equals an uninterrupted run's.

Batches (dicts of torch tensors; B events, S the longest of them, padding on the right):

    run, event        (B,)          int64
    features          (B, S, 4)     float32   [E', eta', phi', r'] (below), in the event's `order`
    mask              (B, S)        bool      True on real spacepoints
    index             (B, S)        int64     the stored index of each position (order[j]); -1 on padding
    targets           (B, S, k, 3)  float32   [eta', phi', r'] of the k nearest neighbours at larger r (`knn`)
    target_mask       (B, S, k)     bool      the neighbour exists (and the position is real)
    weight            (B,)          float32   the event-difficulty weight of difficulty.json (1 without one)
    track, pid        (B, S)        int64     labeled data only: track_id and pid in `order`; -1 on padding
    noise             (B, S)        bool      labeled data only

Normalization (the published FM4NPP code; constants in fm4npp_data.geometry, no clipping):
E' = (E - ENERGY_MEAN) / ENERGY_STD, eta' = (eta + 2) / 4, phi' = (phi + pi) / (2 pi),
r' = (r - R_RANGE[0]) / (R_RANGE[1] - R_RANGE[0]), computed in float64 as kernels.cylindrical.minmax / zscore do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import geometry as g
from .dataset import DIFFICULTY, MANIFEST, open_sets
from .errors import DatasetError, require
from .files import is_partial
from .integrity import READ_OPTIONS, checked_shards, damaged
from .preparation.prepare import difficulty_bin
from .tasks import TASKS, TRUTH_COLUMNS

torch = require("torch", "models", "the PyTorch loader")

#: Columns every batch needs (the labeled data add the tasks' TRUTH_COLUMNS; the `particle_*` lists are never read).
COLUMNS = ("run", "event", "energy", "r", "phi", "eta", "order", "knn", "knn_mean_distance")
PREPARED = ("r", "phi", "eta", "order", "knn", "knn_mean_distance")
#: Rows per work unit of a `datasets.Dataset` (a shard's unit is its row group).
TABLE_UNIT_EVENTS = 1_000
#: Default size of a worker's shuffle pool: a few row groups of the repository (1,000 events each).
BUFFER_EVENTS = 4_096


# ------------------------------------------------------------------------------------------------------------
# The source: which shards (or table) hold the split, cut into work units
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A work unit: row group `start` of shard `part` (or rows start..start+events of a `datasets.Dataset`)."""

    part: int
    start: int
    events: int


@dataclass
class Source:
    """The events of one split: their work units, the data's k, whether it has labels, its difficulty bins."""

    name: str  # for messages
    units: list[Unit]
    k: int
    labels: bool
    difficulty: dict | None
    shards: list[str] = field(default_factory=list)
    table: object = None  # a datasets.Dataset

    @property
    def events(self) -> int:
        return sum(u.events for u in self.units)

    def read(self, unit: Unit, columns: list[str], use_threads: bool = True) -> pa.Table:
        """The events of a unit, with `columns` only."""
        if self.table is not None:
            return self.table.select_columns(columns).with_format("arrow")[unit.start : unit.start + unit.events]
        shard = self.shards[unit.part]
        try:
            file = pq.ParquetFile(shard, **READ_OPTIONS)
            return file.read_row_group(unit.start, columns=columns, use_threads=use_threads)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(damaged(shard, exc, f"cannot read row group {unit.start}")) from exc


def open_source(source, config: str = "labeled", split: str = "train", difficulty=None) -> Source:
    """Find the events of `source` (see the module docstring), check that they are prepared, list the units.

    `difficulty` (a dict or a path to a difficulty.json) overrides the one found beside the data."""
    if _is_hf(source):
        return _table_source(source, split, difficulty)
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory; name a dataset repository, a set or a shard")
    labeled = None  # labels when the data has them
    if path.is_file():
        if path.suffix != ".parquet":
            raise DatasetError(f"{path}: not a Parquet shard; name a .parquet file, a set or a repository folder")
        shards, look = [path], _above(path.parent)
    elif (path / "data").is_dir():
        shards, look, labeled = checked_shards(path, config, split), [path], config == "labeled"
    elif (path / config / split / MANIFEST).is_file():  # a dataset of an imported release: ROOT/labeled/train
        shards, look = _folder_shards(path / config / split), _above(path / config / split)
    else:
        shards, look = _folder_shards(path), _above(path)
    units, k, has_labels = _shard_units(shards)
    if labeled and not has_labels:
        raise DatasetError(f"{shards[0]}: config {config!r} but the shard has no {', '.join(TRUTH_COLUMNS)} columns")
    if difficulty is None:
        difficulty = next((f / DIFFICULTY for f in look if (f / DIFFICULTY).is_file()), None)
    return Source(str(path), units, k, has_labels if labeled is None else labeled, _difficulty(difficulty),
                  shards=[str(p) for p in shards])  # fmt: skip


def _is_hf(source) -> bool:
    return type(source).__module__.split(".")[0] == "datasets"


def _folder_shards(path: Path) -> list[Path]:
    """The shards of a set or dataset folder (its manifests), or the *.parquet files of a folder without one."""
    loose = sorted(p for p in path.glob("*.parquet") if not is_partial(p.name) and not p.name.startswith("."))
    if loose and not (path / MANIFEST).is_file():
        return loose
    if not loose and not any(path.rglob(MANIFEST)):
        raise DatasetError(f"{path}: no shards (*.parquet) and no set ({MANIFEST}) here or below")
    shards = [p for s in open_sets(path) for p in s.shard_paths]
    if not shards:
        raise DatasetError(f"{path}: the set holds no shards")
    return shards


def _shard_units(shards: list[Path]) -> tuple[list[Unit], int, bool]:
    """Every non-empty row group of every shard, the data's k (one for all shards), and whether all have labels."""
    units, ks, labels = [], set(), True
    for part, shard in enumerate(shards):
        try:
            meta = pq.ParquetFile(shard, **READ_OPTIONS)
            schema = meta.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(damaged(shard, exc)) from exc
        k = _check_schema(schema, shard)
        ks.add(k)
        if len(ks) > 1:
            raise DatasetError(f"{shard}: prepared with k = {k}, other shards with k = {min(ks - {k})}; "
                               "prepare every shard with the same --k")  # fmt: skip
        labels = labels and all(c in schema.names for c in TRUTH_COLUMNS)
        for i in range(meta.num_row_groups):
            n = meta.metadata.row_group(i).num_rows
            if n:
                units.append(Unit(part, i, n))
    return units, ks.pop(), labels


def _check_schema(schema: pa.Schema, where) -> int:
    """The data's k; DatasetError when the data is not a prepared events table."""
    missing = [c for c in ("run", "event", "energy") if c not in schema.names]
    if missing:
        raise DatasetError(f"{where}: not an fm4npp events table (no column {', '.join(missing)})")
    missing = [c for c in PREPARED if c not in schema.names]
    if missing:
        raise DatasetError(f"{where}: not prepared (no column {', '.join(missing)}): run `fm4npp-data prepare` on "
                           "the set first")  # fmt: skip
    knn = schema.field("knn").type
    if not (pa.types.is_list(knn) and pa.types.is_fixed_size_list(knn.value_type)):
        raise DatasetError(f"{where}: column 'knn' is {knn}, not list<fixed_size_list<int32, k>>")
    return knn.value_type.list_size


def _table_source(ds, split: str, difficulty) -> Source:
    """A datasets.Dataset (or the `split` of a DatasetDict): units of TABLE_UNIT_EVENTS rows of its Arrow table."""
    if not hasattr(ds, "with_format") or not hasattr(ds, "num_rows"):
        raise DatasetError(f"{type(ds).__name__} is not a datasets.Dataset or DatasetDict")
    if not isinstance(ds.num_rows, int):  # a DatasetDict
        if split not in ds:
            raise DatasetError(f"the DatasetDict has no split {split!r}; the splits are: {', '.join(ds)}")
        ds = ds[split]
    k = _check_schema(ds.data.schema, "the datasets.Dataset")
    units = [Unit(0, s, min(TABLE_UNIT_EVENTS, ds.num_rows - s)) for s in range(0, ds.num_rows, TABLE_UNIT_EVENTS)]
    labels = all(c in ds.column_names for c in TRUTH_COLUMNS)
    return Source(f"datasets.Dataset ({ds.num_rows} events)", units, k, labels, _difficulty(difficulty), table=ds)


def _above(folder: Path) -> list[Path]:
    """Where a set's difficulty.json may be: its folder, or a dataset folder above it (as prepare writes it)."""
    return [folder, *folder.resolve().parents[:3]]


def _difficulty(found) -> dict | None:
    """The difficulty bins (`edges`, `weights`) of a dict or a file, checked."""
    if found is None or isinstance(found, dict):
        data, where = found, "the difficulty"
    else:
        where = found
        try:
            data = json.loads(Path(found).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(
                f"{found}: cannot read the difficulty bins ({exc}); run fm4npp-data prepare again"
            ) from exc
    if data is None:
        return None
    edges, weights = (data.get("edges"), data.get("weights")) if isinstance(data, dict) else (None, None)
    if not (isinstance(edges, list) and isinstance(weights, list) and len(edges) == len(weights) + 1 >= 2):
        raise DatasetError(f"{where}: needs 'edges' (n + 1 numbers) and 'weights' (n numbers)")
    return {"edges": [float(v) for v in edges], "weights": [float(v) for v in weights]}


# ------------------------------------------------------------------------------------------------------------
# Reading a unit: the events, normalized and in `order`, once per row group
# ------------------------------------------------------------------------------------------------------------


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
        raise DatasetError(f"{where}: the spacepoint columns do not line up (order, knn, energy, r, phi, eta); "
                           "the shard is damaged: prepare it again")  # fmt: skip
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


def _check_indices(table: pa.Table, offsets: np.ndarray, start: np.ndarray, order: np.ndarray, knn: np.ndarray,
                   where: str) -> np.ndarray:  # fmt: skip
    """The stored row of each position (start + order), once each event's `order` is checked to be a permutation of
    its spacepoints and its `knn` to be in [-1, n); DatasetError naming the first event that is not. Vectorized over
    the chunk: n positions in range hit each of the n stored rows once, or leave one of them unhit."""
    lengths = np.diff(offsets)
    own = np.repeat(lengths, lengths)
    outside = (order < 0) | (order >= own)
    perm = start + np.where(outside, 0, order) if outside.any() else start + order
    bad_order = outside | (np.bincount(perm, minlength=offsets[-1]) == 0)  # positions | rows, in their event's range
    bad_knn = ((knn < -1) | (knn >= own[:, None])).any(axis=1)
    for bad, what in ((bad_order, "its `order` is not a permutation of its {n} spacepoints"),
                      (bad_knn, "its `knn` holds indices outside [-1, {n}), {n} being its spacepoints")):  # fmt: skip
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
    """Weight of each event: that of the bin of its knn_mean_distance (prepare.difficulty_bin); 1 for an event
    without neighbours (NaN) or when there are no bins."""
    if difficulty is None:
        return np.ones(distance.shape[0], np.float32)
    bins = difficulty_bin(distance, difficulty)
    weights = np.asarray(difficulty["weights"], np.float64)
    return np.where(bins >= 0, weights[np.maximum(bins, 0)], 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------------------
# Planning: length buckets under a token budget
# ------------------------------------------------------------------------------------------------------------


def plan_batches(lengths: np.ndarray, batch_tokens: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches (arrays of positions into `lengths`) of a pool: ordered by length (ties in random order), cut
    greedily so that B * S <= batch_tokens, in random order. An event longer than the budget is alone.

    Without `rng`, ties keep their pool order and the batches come shortest first."""
    cost = np.maximum(np.asarray(lengths, np.int64), 1)
    n = cost.shape[0]
    ties = rng.permutation(n) if rng is not None else np.arange(n)
    idx = ties[np.argsort(cost[ties], kind="stable")]
    c = cost[idx]
    batches, s = [], 0
    while s < n:
        j = s + 1  # c is increasing: the batch s..j-1 costs (j - s) * c[j - 1]
        while j < n and (j - s + 1) * c[j] <= batch_tokens:
            j += 1
        batches.append(idx[s:j])
        s = j
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


# ------------------------------------------------------------------------------------------------------------
# Collation: padded arrays of a batch
# ------------------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------------------
# The stream of one worker, as a torch IterableDataset
# ------------------------------------------------------------------------------------------------------------


class EventStream(torch.utils.data.IterableDataset):
    """Batches of one epoch of one worker (rank, DataLoader worker); yields (logical worker, batch) pairs.

    The Loader sets `epoch`, `skip` (batches already handed out, per logical worker) and `shift` (DataLoader
    worker w runs the stream of logical worker (w + shift) % W) before each epoch."""

    def __init__(self, source: Source, *, batch_tokens, seed, rank, world_size, num_workers, shuffle, k,
                 buffer_events):  # fmt: skip
        super().__init__()
        self.source, self.batch_tokens, self.seed = source, batch_tokens, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.shuffle, self.k, self.buffer_events = shuffle, k, buffer_events
        self.columns = list(COLUMNS) + (list(TRUTH_COLUMNS) if source.labels else [])
        self.epoch, self.skip, self.shift = 0, [0] * max(num_workers, 1), 0

    @property
    def workers(self) -> int:
        return max(self.num_workers, 1)

    def units_of(self, logical: int) -> list[Unit]:
        """The units of a logical worker this epoch: the epoch's shuffled units, dealt round-robin."""
        units = self.source.units
        order = np.arange(len(units))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(units))
        worker = self.rank * self.workers + logical
        return [units[i] for i in order[worker :: self.world_size * self.workers]]

    def pools(self, units: list[Unit]) -> list[list[Unit]]:
        """Consecutive units grouped until each group holds at least buffer_events events."""
        pools, current, n = [], [], 0
        for unit in units:
            current.append(unit)
            n += unit.events
            if n >= self.buffer_events:
                pools.append(current)
                current, n = [], 0
        return pools + ([current] if current else [])

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        logical = ((info.id if info is not None else 0) + self.shift) % self.workers
        use_threads = info is None  # workers run side by side: one thread each
        rng = None
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank * self.workers + logical])
        skip = self.skip[logical]
        for pool in self.pools(self.units_of(logical)):
            chunks = None
            if skip:  # resuming: plan from the list lengths alone, collate nothing that was handed out before
                lengths = np.concatenate([self._lengths(u) for u in pool])
            else:
                chunks = [self._read(u, use_threads) for u in pool]
                lengths = np.concatenate([c.lengths for c in chunks])
            batches = plan_batches(lengths, self.batch_tokens, rng)
            if skip >= len(batches):
                skip -= len(batches)
                continue
            if chunks is None:
                chunks = [self._read(u, use_threads) for u in pool]
            which = np.repeat(np.arange(len(chunks)), [c.run.shape[0] for c in chunks])
            row = np.concatenate([np.arange(c.run.shape[0]) for c in chunks])
            for batch in batches[skip:]:
                refs = list(zip(which[batch].tolist(), row[batch].tolist(), strict=True))
                yield logical, collate(chunks, refs, self.k, self.source.labels, shared=info is not None)
            skip = 0

    def _where(self, unit: Unit) -> str:
        return f"{self.source.shards[unit.part]} row group {unit.start}" if self.source.shards else self.source.name

    def _read(self, unit: Unit, use_threads: bool) -> Chunk:
        table = self.source.read(unit, self.columns, use_threads)
        return read_chunk(table, self.k, self.source.labels, self.source.difficulty, self._where(unit))

    def _lengths(self, unit: Unit) -> np.ndarray:
        table = self.source.read(unit, ["order"])
        return pc.list_value_length(table["order"]).to_numpy(zero_copy_only=False).astype(np.int64)


# ------------------------------------------------------------------------------------------------------------
# The loader: epochs, workers, resuming, statistics
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the batches handed out in one epoch held (the loader's `summary()`)."""

    epoch: int = 0
    events: int = 0
    batches: int = 0
    spacepoints: int = 0
    padded_tokens: int = 0
    over_budget: int = 0
    over_budget_events: list[tuple[int, int]] = field(default_factory=list)  # (run, event), the first 100

    def add(self, batch: dict, batch_tokens: int) -> None:
        b, s = batch["mask"].shape
        self.events += b
        self.batches += 1
        self.spacepoints += int(batch["mask"].sum())
        self.padded_tokens += b * s
        if b * s > batch_tokens:
            self.over_budget += b
            if len(self.over_budget_events) < 100:
                self.over_budget_events.append((int(batch["run"][0]), int(batch["event"][0])))


class Loader:
    """An iterable over epochs of batches; each `for` loop is the rest of the current epoch, then the epoch advances.

    `state_dict()` / `load_state_dict()` save and restore the position (epoch, batches handed out per worker);
    `set_epoch(e)` starts epoch e from its beginning; `summary()` tells what the batches of this epoch held."""

    def __init__(self, stream: EventStream, epoch: int = 0, pin_memory: bool = False, multiprocessing_context=None):
        self.stream = stream
        self.pin_memory, self.multiprocessing_context = pin_memory, multiprocessing_context
        self.set_epoch(epoch)
        self.stats = Stats(epoch=self._epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def num_events(self) -> int:
        """Events of the split (all ranks together)."""
        return self.stream.source.events

    @property
    def k(self) -> int:
        return self.stream.k

    def set_epoch(self, epoch: int) -> None:
        self._epoch = _count(epoch, "epoch")
        self._handed = [0] * self.stream.workers  # batches of this epoch handed out, per logical worker
        self._next = 0  # the logical worker whose batch comes next

    def __iter__(self):
        stream = self.stream
        stream.epoch, stream.skip, stream.shift = self._epoch, list(self._handed), self._next
        if self.stats.epoch != self._epoch or not any(self._handed):
            self.stats = Stats(epoch=self._epoch)
        if stream.num_workers == 0 and not self.pin_memory:
            batches = iter(stream)
        else:
            loader = torch.utils.data.DataLoader(
                stream,
                batch_size=None,
                num_workers=stream.num_workers,
                pin_memory=self.pin_memory,
                multiprocessing_context=self.multiprocessing_context,
                # its own generator: the workers' base seed must not be drawn from (and advance) the global torch
                # generator, whose state a resumed training restores for its dropout masks
                generator=torch.Generator().manual_seed(stream.seed * 1_000_003 + self._epoch),
            )
            batches = iter(loader)
        for worker, batch in batches:
            self._handed[worker] += 1
            self._next = (worker + 1) % stream.workers
            self.stats.add(batch, stream.batch_tokens)
            yield batch
        self.set_epoch(self._epoch + 1)

    def summary(self) -> dict:
        """Events, batches, spacepoints and padded tokens of the batches handed out in the current (or, between
        epochs, the last) epoch; padding efficiency (real / padded tokens); events over the budget (each a batch of
        its own: their number, and the (run, event) of the first 100)."""
        s = self.stats
        return {
            "epoch": s.epoch,
            "events": s.events,
            "batches": s.batches,
            "spacepoints": s.spacepoints,
            "padded_tokens": s.padded_tokens,
            "padding_efficiency": s.spacepoints / s.padded_tokens if s.padded_tokens else 1.0,
            "over_budget_events": s.over_budget,
            "over_budget": list(s.over_budget_events),
            "batch_tokens": self.stream.batch_tokens,
        }

    # -- resuming -------------------------------------------------------------------------------------------

    def _settings(self) -> dict:
        s = self.stream
        return {"seed": s.seed, "rank": s.rank, "world_size": s.world_size, "num_workers": s.num_workers,
                "shuffle": s.shuffle, "batch_tokens": s.batch_tokens, "k": s.k, "buffer_events": s.buffer_events,
                "units": len(s.source.units), "events": s.source.events}  # fmt: skip

    def state_dict(self) -> dict:
        """The position in the epochs (plain Python values: save it with torch.save or JSON)."""
        return {"epoch": self._epoch, "batches": sum(self._handed), "worker_batches": list(self._handed),
                "next_worker": self._next, "settings": self._settings()}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Go on from a state_dict() of a loader with the same data and settings; DatasetError otherwise."""
        try:
            settings, handed = dict(state["settings"]), [int(v) for v in state["worker_batches"]]
            epoch, nxt = int(state["epoch"]), int(state["next_worker"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"not a loader state ({type(exc).__name__}: {exc}); give what state_dict() returned"
                               ) from exc  # fmt: skip
        ours = self._settings()
        differ = [f"{key} {settings.get(key)!r} (now {value!r})" for key, value in ours.items()
                  if settings.get(key) != value]  # fmt: skip
        if differ:
            raise DatasetError("the state was saved by a loader with other settings or data: " + ", ".join(differ)
                               + "; the rest of its epoch would not be the same batches")  # fmt: skip
        if len(handed) != self.stream.workers or not 0 <= nxt < self.stream.workers or min(handed) < 0:
            raise DatasetError("not a loader state: worker_batches and next_worker do not match num_workers")
        self.set_epoch(epoch)
        self._handed, self._next = handed, nxt

    def __repr__(self) -> str:
        s = self.stream
        return (f"Loader({s.source.name}, {self.num_events} events, k={s.k}, batch_tokens={s.batch_tokens}, "
                f"epoch={self._epoch}, rank={s.rank}/{s.world_size}, num_workers={s.num_workers})")  # fmt: skip


def _count(value, name: str, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise DatasetError(f"{name} must be an integer >= {least}, not {value!r}")
    return int(value)


def make_loader(
    source,
    config: str = "labeled",
    split: str = "train",
    *,
    batch_tokens: int,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    shuffle: bool = True,
    k: int | None = None,
    buffer_events: int = BUFFER_EVENTS,
    difficulty: dict | str | Path | None = None,
    pin_memory: bool = False,
    multiprocessing_context=None,
) -> Loader:
    """A Loader of the `split` of `config` of `source` (module docstring), for one rank of `world_size`.

    batch_tokens bounds B * S of a batch; k (default: the data's) keeps the k nearest neighbours; buffer_events is
    the size of a worker's shuffle pool; difficulty overrides the difficulty.json found beside the data (useful for
    a datasets.Dataset, which has none); pin_memory and multiprocessing_context (default: the platform's, fork on
    Linux) are passed to the DataLoader."""
    batch_tokens = _count(batch_tokens, "batch_tokens", 1)
    seed, world_size = _count(seed, "seed"), _count(world_size, "world_size", 1)
    rank, num_workers = _count(rank, "rank"), _count(num_workers, "num_workers")
    buffer_events = _count(buffer_events, "buffer_events", 1)
    if rank >= world_size:
        raise DatasetError(f"rank must be below world_size ({world_size}), not {rank}")
    src = open_source(source, config, split, difficulty)
    if k is None:
        k = src.k
    k = _count(k, "k", 1)
    if k > src.k:
        raise DatasetError(f"k = {k}, but the data has k = {src.k} neighbours per spacepoint; ask for at most "
                           f"{src.k}, or prepare the data again with --k {k}")  # fmt: skip
    stream = EventStream(src, batch_tokens=batch_tokens, seed=seed, rank=rank, world_size=world_size,
                         num_workers=num_workers, shuffle=bool(shuffle), k=k, buffer_events=buffer_events)  # fmt: skip
    return Loader(stream, _count(epoch, "epoch"), pin_memory, multiprocessing_context)


__all__ = ["Loader", "make_loader", "plan_batches"]
