"""`fm4npp-data prepare`: derived columns for every shard, the binning, and the event-difficulty weights.

Adds to each event (docs/data-format.md, "Derived columns"): `r phi eta` (cylindrical), `box` (6 x 8 x 8
physics-informed grid), `order` (hierarchical raster scan), `knn` (the k nearest spacepoints at larger r) and
`knn_mean_distance`, with the Arrow types of fm4npp_data.schema. Each shard is rewritten under a temporary name and
renamed (atomic); a shard already prepared with the same binning, k and order is left alone (idempotent,
resumable); shards run through fm4npp_data.parallel (processes or a Dask cluster). A set's manifest says "prepared"
only when every one of its shards is.

Beside the data:
- `binning.json`: r edges from the TPC modules (geometry.MODULE_BOUNDARIES, two bins per module), phi and eta edges
  by equal counts over a sample of training events (its size and seed recorded). Given with `--binning` (checked
  before anything is written; only `r`, `phi` and `eta` are required), or reused when present, or fitted.
- `difficulty.json`: the event-difficulty bins and weights of the pretraining loss (FM4NPP appendix, "Loss
  Re-scaling by Event Difficulty"): training events are binned by `knn_mean_distance` in equal-count bins; bin g gets
  w_g proportional to 1 / mean(d^2 over its events), so that every bin's expected squared-distance loss is on one
  scale (the paper weights by "the average difficulty of its bin" without the formula; this is our reading of it):
  easy dense events weigh more, sparse hard ones less; the weights are scaled to a mean of 1 over training events.
  A small set gets fewer bins (at most one per distinct training event), and the summary says so.
Their readers (`load_binning`, `binning_key`, `difficulty_bin`) are in fm4npp_data.prepared, which needs no Numba.

Training events are those of a part whose manifest says split "train" (imported release), else the events that
fm4npp_data.splits assigns to train; a set too small to have any uses all its events, and binning.json says so.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import geometry as g
from ..dataset import BINNING, DIFFICULTY, EventSet, Manifest, iter_events, open_sets
from ..errors import PrepareError
from ..files import FolderLock, clear_leftovers, partial_path, sha256_file, write_json
from ..integrity import READ_OPTIONS, WRITE_OPTIONS
from ..kernels.binning import boxes, equal_count_edges, r_edges_from_modules
from ..kernels.cylindrical import cylindrical, minmax
from ..kernels.raster import ORDERS, raster_order
from ..parallel import Failed, parallel_map
from ..prepared import BINS_PER_MODULE, N_ETA, N_PHI, binning_key, load_binning
from ..schema import DERIVED, derived_fields
from ..shards import ROW_GROUP_EVENTS
from ..splits import split_of

KNN_VARIANTS = ("exact", "published")
_META = b"fm4npp.prepare"


@dataclass(frozen=True)
class PrepareOptions:
    """What decides the derived columns (and the defaults of `fm4npp-data prepare`)."""

    k: int = 10
    order: str = "hierarchical"
    knn: str = "exact"
    sample_events: int = 50_000
    seed: int = 0
    difficulty_bins: int = 10

    def check(self) -> None:
        if self.k < 1:
            raise PrepareError(f"--k must be at least 1, not {self.k}")
        if self.knn not in KNN_VARIANTS:
            raise PrepareError(f"--knn must be one of {', '.join(KNN_VARIANTS)}, not {self.knn!r}")
        if self.order not in ORDERS:
            raise PrepareError(f"--order must be one of {', '.join(ORDERS)}, not {self.order!r}")
        if self.difficulty_bins < 1:
            raise PrepareError(f"--difficulty-bins must be at least 1, not {self.difficulty_bins}")
        if self.sample_events < 1:
            raise PrepareError(f"--sample-events must be at least 1, not {self.sample_events}")


@dataclass
class PrepareSummary:
    root: Path
    prepared: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cleared: list[Path] = field(default_factory=list)
    events: int = 0
    spacepoints: int = 0
    seconds: float = 0.0
    compile_seconds: float = 0.0  # Numba compilation (or loading its cache) before the first shard
    kernel_seconds: float = 0.0
    io_seconds: float = 0.0
    binning: dict | None = None
    difficulty: dict | None = None

    @property
    def rate(self) -> float:
        """Events per second, compilation excluded."""
        return self.events / max(self.seconds - self.compile_seconds, 1e-9)


def _flat(table: pa.Table, column: str) -> np.ndarray:
    return pc.list_flatten(table[column]).to_numpy(zero_copy_only=False)


def _offsets(table: pa.Table) -> np.ndarray:
    lengths = pc.list_value_length(table["x"]).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _training_mask(manifest: Manifest, run: np.ndarray, event: np.ndarray, any_train_part: bool) -> np.ndarray:
    if any_train_part:
        return np.full(run.shape[0], manifest.split == "train")
    return split_of(run, event) == 0


# ------------------------------------------------------------------------------------------------------------
# Binning
# ------------------------------------------------------------------------------------------------------------


def fit_binning(sets: list[EventSet], sample_events: int = 50_000, seed: int = 0) -> dict:
    """Fit the phi and eta edges on a sample of training events (deterministic for a given seed)."""
    any_train_part = any(s.manifest.split == "train" for s in sets)
    candidates = []  # (shard, row) of every training event
    everything = []
    for eset in sets:
        for shard, ids in iter_events(eset.path, columns=["run", "event"]):
            train = _training_mask(eset.manifest, ids["run"].to_numpy(), ids["event"].to_numpy(), any_train_part)
            candidates.extend((shard, int(row)) for row in np.flatnonzero(train))
            everything.extend((shard, row) for row in range(ids.num_rows))
    which = "split 'train' part" if any_train_part else "fm4npp_data.splits train events"
    if not candidates:  # a set too small to have training events: fit on all of them
        candidates, which = everything, "all events (the set has no training events)"
    if not candidates:
        raise PrepareError(f"{sets[0].path}: the set holds no events; there is nothing to prepare")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(candidates), size=min(sample_events, len(candidates)), replace=False))
    by_shard: dict[Path, list[int]] = {}
    for i in take:
        shard, row = candidates[i]
        by_shard.setdefault(shard, []).append(row)
    phis, etas = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    for shard, rows in by_shard.items():
        table = pq.read_table(shard, columns=["x", "y", "z"]).take(rows)
        _, phi, eta = cylindrical(_flat(table, "x"), _flat(table, "y"), _flat(table, "z"))
        phis.append(phi)
        etas.append(eta)
    phi, eta = np.concatenate(phis), np.concatenate(etas)
    eta = eta[np.isfinite(eta)]
    if phi.shape[0] == 0:
        raise PrepareError(
            f"{sets[0].path}: the sampled events have no spacepoints to fit the binning on; give one with --binning"
        )
    return {
        "r": r_edges_from_modules(g.MODULE_BOUNDARIES, BINS_PER_MODULE).tolist(),
        "phi": equal_count_edges(phi, N_PHI, -np.pi, np.pi).tolist(),
        "eta": equal_count_edges(eta, N_ETA).tolist(),
        "n_boxes": (3 * BINS_PER_MODULE) * N_PHI * N_ETA,
        "r_source": "TPC module boundaries (geometry.MODULE_BOUNDARIES), 2 bins per module",
        "sample_events": int(take.shape[0]),
        "sample_spacepoints": int(phi.shape[0]),
        "seed": seed,
        "training_events": which,
    }


# ------------------------------------------------------------------------------------------------------------
# One shard
# ------------------------------------------------------------------------------------------------------------


def published_knn(r, phi, eta, offsets, k):
    """The published code's targets (an ablation): distances in (eta, phi, r) normalized to [0, 1] by the release's
    ranges, neighbours among the spacepoints after each one in r order; indices mapped back to the stored order."""
    from ..kernels.knn import knn_published

    by_r = raster_order(None, r, phi, eta, offsets, order="radial").astype(np.int64)
    start = np.repeat(offsets[:-1], np.diff(offsets))
    perm = start + by_r  # global index of the j-th spacepoint in r order
    eta_n = minmax(eta[perm], *g.ETA_RANGE)
    phi_n = minmax(phi[perm], *g.PHI_RANGE)
    r_n = minmax(r[perm], *g.R_RANGE)
    found, mean = knn_published(eta_n, phi_n, r_n, offsets, k)
    # row p of `found` is the spacepoint perm[p]; its entries are r-order positions within the event
    back = by_r[start[:, None] + np.where(found >= 0, found, 0)]
    out = np.empty_like(found)
    out[perm] = np.where(found >= 0, back, -1)
    return out, mean


def derive(table: pa.Table, binning: dict, k: int, order: str, variant: str = "exact") -> tuple[dict, float]:
    """The derived columns of a table of events, typed as fm4npp_data.schema.derived_fields (and kernel seconds)."""
    from ..kernels.knn import knn

    start = time.perf_counter()
    offsets = _offsets(table)
    x, y, z = (_flat(table, c).astype(np.float32) for c in ("x", "y", "z"))
    r, phi, eta = cylindrical(x, y, z)
    box = boxes(r, phi, eta, binning["r"], binning["phi"], binning["eta"])
    n_boxes = (len(binning["r"]) - 1) * N_PHI * N_ETA
    perm = raster_order(box, r, phi, eta, offsets, n_boxes=n_boxes, order=order, x=x, y=y, z=z)
    if variant == "exact":
        neighbours, mean_distance = knn(x, y, z, offsets, k)
    else:
        neighbours, mean_distance = published_knn(r, phi, eta, offsets, k)
    seconds = time.perf_counter() - start
    off = pa.array(offsets.astype(np.int32))
    values = {
        "r": r,
        "phi": phi,
        "eta": eta,
        "box": box,
        "order": perm,
        "knn": pa.FixedSizeListArray.from_arrays(pa.array(neighbours.reshape(-1).astype(np.int32)), k),
    }
    types = {f.name: f.type for f in derived_fields(k)}
    columns = {}
    for name, value in values.items():
        inner = value if isinstance(value, pa.Array) else pa.array(value)
        columns[name] = pa.ListArray.from_arrays(off, inner).cast(types[name])
    columns["knn_mean_distance"] = pa.array(mean_distance).cast(types["knn_mean_distance"])
    return columns, seconds


def shard_identity(binning: dict, k: int, order: str, variant: str) -> bytes:
    """What a prepared shard records in its Parquet metadata (fm4npp.prepare)."""
    identity = {"binning": binning_key(binning), "k": k, "order": order}
    if variant != "exact":
        identity["knn"] = variant
    return json.dumps(identity, sort_keys=True).encode()


def prepare_shard(
    path: str, binning: dict, k: int, order: str, row_group_events: int = ROW_GROUP_EVENTS, variant: str = "exact"
) -> dict:
    """Add the derived columns to one shard (atomically); returns its new description and timings."""
    path = Path(path)
    identity = shard_identity(binning, k, order, variant)
    start = time.perf_counter()
    try:
        meta = pq.read_schema(path).metadata or {}
        if meta.get(_META) == identity:  # done, maybe by a run killed before it recorded the new checksum
            table = pq.read_table(path, columns=["run", "event", "x", "knn_mean_distance"], **READ_OPTIONS)
            return _described(path, table, unchanged=True) | {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        table = pq.read_table(path, **READ_OPTIONS)  # a damaged page is refused, not rewritten with a valid checksum
    except (OSError, pa.ArrowException) as exc:
        raise PrepareError(f"{path}: cannot read the shard ({exc}); it is damaged: convert its input again") from exc
    table = table.drop_columns([c for c in DERIVED if c in table.column_names])
    columns, kernel_seconds = derive(table, binning, k, order, variant)
    for name, column in columns.items():
        table = table.append_column(name, column)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META: identity})
    tmp = partial_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_events, **WRITE_OPTIONS)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _described(path, table, unchanged=False) | {
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "kernel_seconds": kernel_seconds,
        "seconds": time.perf_counter() - start,
    }


def _described(path: Path, table: pa.Table, unchanged: bool) -> dict:
    return {
        "path": path.name,
        "unchanged": unchanged,
        "events": table.num_rows,
        "spacepoints": int(_offsets(table)[-1]),
        "knn_mean_distance": table["knn_mean_distance"].to_numpy(zero_copy_only=False),
        "run": table["run"].to_numpy(),
        "event": table["event"].to_numpy(),
    }


def warm_up(k: int, variant: str) -> float:
    """Compile the kernels (or load Numba's cache) on a tiny event; the seconds it took, apart from the rate."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-50, 50, (3, 40)).astype(np.float32)
    table = pa.table(
        {
            name: pa.ListArray.from_arrays(pa.array([0, 40], pa.int32()), pa.array(v))
            for name, v in zip("xyz", xyz, strict=True)
        }
    )
    binning = {
        "r": r_edges_from_modules(g.MODULE_BOUNDARIES, BINS_PER_MODULE).tolist(),
        "phi": np.linspace(-np.pi, np.pi, N_PHI + 1).tolist(),
        "eta": np.linspace(-1.5, 1.5, N_ETA + 1).tolist(),
    }
    for order in ORDERS:
        derive(table, binning, k, order, variant)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------------
# Difficulty
# ------------------------------------------------------------------------------------------------------------


def difficulty_weights(distance: np.ndarray, n_bins: int = 10) -> dict:
    """Equal-count bins of the training events' knn_mean_distance and the weight of each bin (see the docstring).

    Fewer bins than asked are made when there are fewer distinct distances (a small set); `bins_requested` keeps
    the number asked for. PrepareError when no event has neighbours."""
    d = np.asarray(distance, np.float64)
    without = int((~np.isfinite(d)).sum())
    d = d[np.isfinite(d)]
    if d.shape[0] == 0:
        raise PrepareError("no event has a spacepoint with neighbours at larger r: no difficulty can be computed")
    edges = np.unique(np.quantile(d, np.linspace(0, 1, min(n_bins, d.shape[0]) + 1)))
    if edges.shape[0] == 1:  # every event equally difficult: one bin
        edges = np.array([edges[0], edges[0]])
    n = edges.shape[0] - 1
    which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, n - 1)
    counts = np.bincount(which, minlength=n)
    keep = counts > 0  # quantile edges of few values can leave a bin empty: merge it into its neighbour
    if not keep.all():
        edges = np.concatenate([edges[:-1][keep], edges[-1:]])
        n = edges.shape[0] - 1
        which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, n - 1)
        counts = np.bincount(which, minlength=n)
    sq = np.bincount(which, weights=d * d, minlength=n) / counts
    sq = np.where(sq > 0, sq, 1.0)
    weights = (1.0 / sq) * counts.sum() / (counts / sq).sum()  # mean weight over training events = 1
    return {
        "edges": edges.tolist(),
        "weights": weights.tolist(),
        "events": counts.tolist(),
        "mean_distance": (np.bincount(which, weights=d, minlength=n) / counts).tolist(),
        "bins_requested": n_bins,
        "without_neighbours": without,
        "definition": "w_g proportional to 1 / mean(d^2, events of bin g), scaled so that the mean weight of the "
        "training events is 1; d = knn_mean_distance (cm); "
        "an event outside the edges takes the nearest end bin; an event without neighbours weighs 1",
    }


# ------------------------------------------------------------------------------------------------------------
# Whole dataset
# ------------------------------------------------------------------------------------------------------------


def prepare(
    root: str | Path,
    options: PrepareOptions | None = None,
    binning: str | Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[dict], None] | None = None,
) -> PrepareSummary:
    """Prepare every shard under `root`; write binning.json and difficulty.json beside the data."""
    options = options or PrepareOptions()
    start = time.perf_counter()
    root = Path(os.path.abspath(root))
    options.check()
    if workers < 1:
        raise PrepareError(f"--workers must be at least 1, not {workers}")
    if not root.is_dir():
        raise PrepareError(f"{root}: no such directory")
    edges = load_binning(Path(binning)) if binning is not None else None  # checked before anything is written
    summary = PrepareSummary(root=root)
    with FolderLock(root, PrepareError):
        sets = open_sets(root)
        summary.cleared = [p for s in sets for p in clear_leftovers(s.path)]
        if edges is None:
            edges = _existing_binning(root) or fit_binning(sets, options.sample_events, options.seed)
        summary.binning = edges
        edges = {k: v for k, v in edges.items() if k != "reused_from"}
        write_json(root / BINNING, edges)
        _prepare_sets(root, sets, edges, options, workers, scheduler, progress, summary)
    summary.seconds = time.perf_counter() - start
    return summary


def _existing_binning(root: Path) -> dict | None:
    """The binning of the dataset `root` belongs to: its own binning.json, or that of a folder above it (a set of an
    imported release keeps the release's binning), so that one dataset never mixes two binnings."""
    for folder in (root, *root.parents[:3]):
        if (folder / BINNING).is_file():
            return load_binning(folder / BINNING) | {"reused_from": str(folder / BINNING)}
    return None


def _prepare_sets(root, sets, edges, options, workers, scheduler, progress, summary) -> None:
    """Prepare every shard of `sets` with the binning `edges`; update the manifests and difficulty.json."""
    any_train_part = any(s.manifest.split == "train" for s in sets)
    tasks = [(s, p) for s in sets for p in s.shard_paths]
    summary.compile_seconds = warm_up(options.k, options.knn)
    args = [
        (
            str(p),
            edges,
            options.k,
            options.order,
            s.manifest.options.get("row_group_events", ROW_GROUP_EVENTS),
            options.knn,
        )
        for s, p in tasks
    ]
    distances, train_flags = [], []
    done: dict[Path, dict[str, dict]] = {s.path: {} for s in sets}
    for index, result in parallel_map(prepare_shard, args, workers, scheduler):
        eset, shard = tasks[index]
        if isinstance(result, Failed):
            summary.errors.append(result.message if result.expected else f"{shard}: {result.message}")
        else:
            (summary.unchanged if result["unchanged"] else summary.prepared).append(str(shard))
            done[eset.path][shard.name] = result
            summary.events += result["events"]
            summary.spacepoints += result["spacepoints"]
            if not result["unchanged"]:
                summary.kernel_seconds += result["kernel_seconds"]
                summary.io_seconds += result["seconds"] - result["kernel_seconds"]
            distances.append(np.asarray(result["knn_mean_distance"], np.float64))
            train_flags.append(_training_mask(eset.manifest, result["run"], result["event"], any_train_part))
        if progress:
            progress(result if not isinstance(result, Failed) else {"error": result.message})

    # manifests: the shards' new sha256 and sizes; "prepared" only when every shard of the set is
    for eset in sets:
        results = done[eset.path]
        for shard in eset.manifest.shards:
            if shard.path in results:
                shard.sha256, shard.bytes = results[shard.path]["sha256"], results[shard.path]["bytes"]
        complete = len(results) == len(eset.manifest.shards)
        identity = {
            "k": options.k,
            "order": options.order,
            "knn": options.knn,
            "binning": binning_key(edges),
            "columns": list(DERIVED),
        }
        eset.manifest.prepare = identity if complete else None
        eset.manifest.save(eset.path)

    if summary.errors:
        (root / DIFFICULTY).unlink(missing_ok=True)  # it would describe shards that are not all prepared
    elif distances:
        d, train = np.concatenate(distances), np.concatenate(train_flags)
        if not train.any():
            train = np.ones_like(train)  # a set too small to have training events
        difficulty = difficulty_weights(d[train], options.difficulty_bins)
        difficulty.update(k=options.k, training_events=int(train.sum()))
        write_json(root / DIFFICULTY, difficulty)
        summary.difficulty = difficulty
