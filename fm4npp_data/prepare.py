"""`fm4npp-data prepare`: derived columns for every shard, the binning, and the event-difficulty weights.

Adds to each event (DESIGN.md §3): `r phi eta` (cylindrical), `box` (6 x 8 x 8 physics-informed grid), `order`
(hierarchical raster scan), `knn` (the k nearest spacepoints at larger r) and `knn_mean_distance`. Each shard is
rewritten under a temporary name and renamed (atomic); a shard already prepared with the same binning, k and order
is left alone (idempotent, resumable); shards run in parallel processes.

Beside the data:
- `binning.json`: r edges from the TPC modules (geometry.MODULE_BOUNDARIES, two bins per module), phi and eta edges
  by equal counts over a sample of training events (its size and seed recorded). Given with `--binning`, or reused
  when present, or fitted.
- `difficulty.json`: the event-difficulty bins and weights of the pretraining loss (FM4NPP appendix, "Loss
  Re-scaling by Event Difficulty"): training events are binned by `knn_mean_distance` in equal-count bins; bin g gets
  w_g proportional to 1 / mean(d^2 over its events), so that every bin's expected squared-distance loss is on one
  scale (the paper weights by "the average difficulty of its bin" without the formula; this is our reading of it):
  easy dense events weigh more, sparse hard ones less; the weights are scaled to a mean of 1 over training events.

Training events are those of a part whose manifest says split "train" (imported release), else the events that
fm4npp_data.splits assigns to train.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import geometry as g
from .convert import MANIFEST, ConvertError
from .files import sha256_file, write_json
from .kernels.binning import boxes, equal_count_edges, r_edges_from_modules
from .kernels.cylindrical import cylindrical, minmax
from .kernels.raster import ORDERS, raster_order
from .splits import split_of

BINNING = "binning.json"
DIFFICULTY = "difficulty.json"
DERIVED = ("r", "phi", "eta", "box", "order", "knn", "knn_mean_distance")
N_PHI = N_ETA = 8
BINS_PER_MODULE = 2
_META = b"fm4npp.prepare"


class PrepareError(ConvertError):
    """The data cannot be prepared; the message says which file and why."""


@dataclass
class PrepareSummary:
    root: Path
    prepared: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    events: int = 0
    spacepoints: int = 0
    seconds: float = 0.0
    kernel_seconds: float = 0.0
    io_seconds: float = 0.0
    binning: dict | None = None
    difficulty: dict | None = None


# ------------------------------------------------------------------------------------------------------------
# Datasets: one converted set (manifest.json) or a folder of them (an imported release)
# ------------------------------------------------------------------------------------------------------------


def find_sets(root: Path) -> list[Path]:
    """Folders under root (root included) holding a manifest.json."""
    if (root / MANIFEST).is_file():
        return [root]
    sets = sorted(p.parent for p in root.rglob(MANIFEST) if not any(s.startswith(".") for s in p.parts))
    if not sets:
        raise PrepareError(f"{root}: no {MANIFEST} here or below; run fm4npp-data convert or import-release first")
    return sets


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _flat(table: pa.Table, column: str) -> np.ndarray:
    return pc.list_flatten(table[column]).to_numpy(zero_copy_only=False)


def _offsets(table: pa.Table) -> np.ndarray:
    lengths = pc.list_value_length(table["x"]).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _training_mask(manifest: dict, run: np.ndarray, event: np.ndarray, any_train_part: bool):
    if any_train_part:
        return np.full(run.shape[0], manifest.get("split") == "train")
    return split_of(run, event) == 0


# ------------------------------------------------------------------------------------------------------------
# Binning
# ------------------------------------------------------------------------------------------------------------


def fit_binning(root: Path, sample_events: int = 50_000, seed: int = 0) -> dict:
    """Fit the phi and eta edges on a sample of training events (deterministic for a given seed)."""
    sets = find_sets(root)
    manifests = {s: _manifest(s) for s in sets}
    any_train_part = any(m.get("split") == "train" for m in manifests.values())
    # which training events exist, shard by shard
    candidates = []  # (folder, shard, row)
    for folder, manifest in manifests.items():
        for shard in manifest["shards"]:
            ids = pq.read_table(folder / shard["path"], columns=["run", "event"])
            train = _training_mask(manifest, ids["run"].to_numpy(), ids["event"].to_numpy(), any_train_part)
            candidates.extend((folder, shard["path"], int(row)) for row in np.flatnonzero(train))
    if not candidates:
        raise PrepareError(f"{root}: no training events to fit the binning on; give one with --binning")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(candidates), size=min(sample_events, len(candidates)), replace=False))
    by_shard: dict[tuple[Path, str], list[int]] = {}
    for i in take:
        folder, shard, row = candidates[i]
        by_shard.setdefault((folder, shard), []).append(row)
    phis, etas = [], []
    for (folder, shard), rows in by_shard.items():
        table = pq.read_table(folder / shard, columns=["x", "y", "z"]).take(rows)
        _, phi, eta = cylindrical(_flat(table, "x"), _flat(table, "y"), _flat(table, "z"))
        phis.append(phi)
        etas.append(eta)
    phi, eta = np.concatenate(phis), np.concatenate(etas)
    eta = eta[np.isfinite(eta)]
    return {
        "r": r_edges_from_modules(g.MODULE_BOUNDARIES, BINS_PER_MODULE).tolist(),
        "phi": equal_count_edges(phi, N_PHI, -np.pi, np.pi).tolist(),
        "eta": equal_count_edges(eta, N_ETA).tolist(),
        "n_boxes": (3 * BINS_PER_MODULE) * N_PHI * N_ETA,
        "r_source": "TPC module boundaries (geometry.MODULE_BOUNDARIES), 2 bins per module",
        "sample_events": int(take.shape[0]),
        "sample_spacepoints": int(phi.shape[0]),
        "seed": seed,
        "training_events": "split 'train' part" if any_train_part else "fm4npp_data.splits train events",
    }


def load_binning(path: Path) -> dict:
    try:
        binning = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PrepareError(f"{path}: cannot read the binning ({exc})") from exc
    for key, n in (("r", 7), ("phi", N_PHI + 1), ("eta", N_ETA + 1)):
        edges = binning.get(key)
        if not isinstance(edges, list) or len(edges) != n or (np.diff(edges) <= 0).any():
            raise PrepareError(f"{path}: '{key}' must be {n} increasing edges")
    return binning


def binning_key(binning: dict) -> str:
    edges = {k: binning[k] for k in ("r", "phi", "eta")}
    return hashlib.sha256(json.dumps(edges, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------------
# One shard
# ------------------------------------------------------------------------------------------------------------


def published_knn(r, phi, eta, offsets, k):
    """The published code's targets (an ablation): distances in (eta, phi, r) normalized to [0, 1] by the release's
    ranges, neighbours among the spacepoints after each one in r order; indices mapped back to the stored order."""
    from .kernels.knn import knn_published

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
    """The derived columns of a table of events (and the seconds spent in kernels)."""
    from .kernels.knn import knn

    start = time.perf_counter()
    offsets = _offsets(table)
    x, y, z = (_flat(table, c).astype(np.float32) for c in ("x", "y", "z"))
    r, phi, eta = cylindrical(x, y, z)
    box = boxes(r, phi, eta, binning["r"], binning["phi"], binning["eta"])
    perm = raster_order(box, r, phi, eta, offsets, n_boxes=binning.get("n_boxes", 384), order=order, x=x, y=y, z=z)
    if variant == "exact":
        neighbours, mean_distance = knn(x, y, z, offsets, k)
    else:
        neighbours, mean_distance = published_knn(r, phi, eta, offsets, k)
    seconds = time.perf_counter() - start
    off = pa.array(offsets.astype(np.int32))

    def listed(values):
        return pa.ListArray.from_arrays(off, pa.array(values))

    columns = {
        "r": listed(r),
        "phi": listed(phi),
        "eta": listed(eta),
        "box": listed(box),
        "order": listed(perm),
        "knn": pa.ListArray.from_arrays(off, pa.FixedSizeListArray.from_arrays(pa.array(neighbours.reshape(-1)), k)),
        "knn_mean_distance": pa.array(mean_distance.astype(np.float32)),
    }
    return columns, seconds


def prepare_shard(
    path: str, binning: dict, k: int, order: str, row_group_events: int = 1_000, variant: str = "exact"
) -> dict:
    """Add the derived columns to one shard (atomically); returns its new description and timings."""
    path = Path(path)
    identity = {"binning": binning_key(binning), "k": k, "order": order}
    if variant != "exact":
        identity["knn"] = variant
    identity = json.dumps(identity, sort_keys=True).encode()
    start = time.perf_counter()
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:
        raise PrepareError(f"{path}: cannot read the shard ({exc})") from exc
    if meta.get(_META) == identity:
        return {"path": path.name, "unchanged": True}
    table = pq.read_table(path)
    table = table.drop_columns([c for c in DERIVED if c in table.column_names])
    columns, kernel_seconds = derive(table, binning, k, order, variant)
    for name, column in columns.items():
        table = table.append_column(name, column)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META: identity})
    tmp = path.with_name(f".{path.name}.partial")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_events)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    lengths = pc.list_value_length(table["x"]).to_numpy(zero_copy_only=False)
    return {
        "path": path.name,
        "unchanged": False,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "events": table.num_rows,
        "spacepoints": int(lengths.sum()),
        "kernel_seconds": kernel_seconds,
        "seconds": time.perf_counter() - start,
        "knn_mean_distance": table["knn_mean_distance"].to_numpy(zero_copy_only=False).tolist(),
        "run": table["run"].to_numpy().tolist(),
        "event": table["event"].to_numpy().tolist(),
    }


def _prepare_safely(path: str, binning: dict, k: int, order: str, row_group_events: int, variant: str) -> dict:
    """prepare_shard for pools: failures come back as {"error"}; every result names its shard in "full"."""
    try:
        result = prepare_shard(path, binning, k, order, row_group_events, variant)
    except PrepareError as exc:
        result = {"path": Path(path).name, "error": str(exc)}
    except Exception as exc:
        result = {"path": Path(path).name, "error": f"{path}: {type(exc).__name__}: {exc}"}
    return dict(result, full=path)


def _run_shards(args: list[tuple], workers: int):
    """Results of _prepare_safely over `args`, in this process or in `workers` processes, as they finish."""
    if workers <= 1 or len(args) <= 1:
        for a in args:
            yield _prepare_safely(*a)
        return
    with ProcessPoolExecutor(min(workers, len(args)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_prepare_safely, *a) for a in args]
        for future in as_completed(futures):
            yield future.result()


# ------------------------------------------------------------------------------------------------------------
# Difficulty
# ------------------------------------------------------------------------------------------------------------


def difficulty_weights(distance: np.ndarray, n_bins: int = 10) -> dict:
    """Equal-count bins of the training events' knn_mean_distance and the weight of each bin (see the docstring)."""
    d = np.asarray(distance, np.float64)
    d = d[np.isfinite(d)]
    if d.shape[0] < n_bins:
        raise PrepareError(f"only {d.shape[0]} training events with neighbours: too few for {n_bins} difficulty bins")
    edges = np.quantile(d, np.linspace(0, 1, n_bins + 1))
    edges = np.unique(edges)
    n = edges.shape[0] - 1
    which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, n - 1)
    sq = d * d
    per_bin = np.array([sq[which == b].mean() for b in range(n)])
    counts = np.array([(which == b).sum() for b in range(n)])
    weights = (1.0 / per_bin) * counts.sum() / (counts / per_bin).sum()  # mean weight over training events = 1
    return {
        "edges": edges.tolist(),
        "weights": weights.tolist(),
        "events": [int((which == b).sum()) for b in range(n)],
        "mean_distance": [float(d[which == b].mean()) for b in range(n)],
        "definition": "w_g proportional to 1 / mean(d^2, events of bin g), scaled so that the mean weight of the "
        "training events is 1; d = knn_mean_distance (cm); "
        "an event outside the edges takes the nearest end bin; an event without neighbours weighs 1",
    }


def difficulty_bin(distance: np.ndarray, difficulty: dict) -> np.ndarray:
    """Bin of each event's knn_mean_distance (NaN -> -1)."""
    edges = np.asarray(difficulty["edges"])
    d = np.asarray(distance, np.float64)
    b = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(edges) - 2)
    return np.where(np.isfinite(d), b, -1)


# ------------------------------------------------------------------------------------------------------------
# Whole dataset
# ------------------------------------------------------------------------------------------------------------


def prepare(
    root: str | Path,
    k: int = 10,
    binning: str | Path | None = None,
    order: str = "hierarchical",
    workers: int = 1,
    sample_events: int = 50_000,
    seed: int = 0,
    difficulty_bins: int = 10,
    knn_variant: str = "exact",
    progress: Callable[[dict], None] | None = None,
) -> PrepareSummary:
    """Prepare every shard under `root`; write binning.json and difficulty.json beside the data."""
    start = time.perf_counter()
    root = Path(root)
    if not root.is_dir():
        raise PrepareError(f"{root}: no such directory")
    if k < 1:
        raise PrepareError(f"--k must be at least 1, not {k}")
    if knn_variant not in ("exact", "published"):
        raise PrepareError(f"--knn must be exact or published, not {knn_variant!r}")
    if order not in ORDERS:
        raise PrepareError(f"--order must be one of {', '.join(ORDERS)}, not {order!r}")
    sets = find_sets(root)
    summary = PrepareSummary(root=root)
    if binning is not None:
        edges = load_binning(Path(binning))
    elif (root / BINNING).is_file():
        edges = load_binning(root / BINNING)
    else:
        edges = fit_binning(root, sample_events, seed)
    write_json(root / BINNING, edges)
    summary.binning = edges

    manifests = {s: _manifest(s) for s in sets}
    any_train_part = any(m.get("split") == "train" for m in manifests.values())
    tasks = [(folder, shard["path"]) for folder, m in manifests.items() for shard in m["shards"]]
    row_groups = {f: m.get("options", {}).get("row_group_events", 1_000) for f, m in manifests.items()}
    args = [(str(f / p), edges, k, order, row_groups[f], knn_variant) for f, p in tasks]
    folder_of = {str(f / p): f for f, p in tasks}

    results = []
    for result in _run_shards(args, workers):
        results.append(result)
        if progress:
            progress(result)

    distances, train_flags = [], []
    by_folder: dict[Path, dict[str, dict]] = {folder: {} for folder in manifests}
    for result in sorted(results, key=lambda res: res["full"]):
        full = result["full"]
        folder = folder_of[full]
        if "error" in result:
            summary.errors.append(result["error"])
            continue
        if result["unchanged"]:
            summary.unchanged.append(full)
            table = pq.read_table(full, columns=["run", "event", "knn_mean_distance", "x"])
            result = dict(result, run=table["run"].to_numpy(), event=table["event"].to_numpy(),
                          knn_mean_distance=table["knn_mean_distance"].to_numpy(),
                          events=table.num_rows, spacepoints=int(_offsets(table)[-1]))  # fmt: skip
        else:
            summary.prepared.append(full)
            summary.kernel_seconds += result["kernel_seconds"]
            summary.io_seconds += result["seconds"] - result["kernel_seconds"]
            by_folder[folder][result["path"]] = result
        summary.events += result["events"]
        summary.spacepoints += result["spacepoints"]
        run, event = np.asarray(result["run"]), np.asarray(result["event"])
        distances.append(np.asarray(result["knn_mean_distance"], np.float64))
        train_flags.append(_training_mask(manifests[folder], run, event, any_train_part))

    # manifests: the shards' new sha256 and sizes, and what prepare did
    for folder, updates in by_folder.items():
        manifest = manifests[folder]
        for shard in manifest["shards"]:
            if shard["path"] in updates:
                shard["sha256"] = updates[shard["path"]]["sha256"]
                shard["bytes"] = updates[shard["path"]]["bytes"]
        for entry in manifest.get("inputs", []):
            for shard in entry.get("shards", []):
                if shard.get("path") in updates:
                    shard["sha256"] = updates[shard["path"]]["sha256"]
                    shard["bytes"] = updates[shard["path"]]["bytes"]
        manifest["prepare"] = {"k": k, "order": order, "knn": knn_variant, "binning": binning_key(edges),
                               "columns": list(DERIVED)}  # fmt: skip
        write_json(folder / MANIFEST, manifest)

    if distances and not summary.errors:
        d, train = np.concatenate(distances), np.concatenate(train_flags)
        difficulty = difficulty_weights(d[train], difficulty_bins)
        difficulty.update(k=k, training_events=int(train.sum()))
        write_json(root / DIFFICULTY, difficulty)
        summary.difficulty = difficulty
    summary.seconds = time.perf_counter() - start
    return summary
