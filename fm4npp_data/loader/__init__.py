"""The PyTorch loader of the benchmark dataset: Parquet row groups in, shuffled, length-bucketed, padded batches out.

    loader = make_loader("tpc-pp200", "labeled", "train", batch_tokens=65_536, seed=0, rank=rank,
                         world_size=world_size, num_workers=4)
    for batch in loader:            # one epoch; the next `for` is the next epoch
        batch["features"]           # (B, S, 4) float32: [E', eta', phi', r'] in each event's raster-scan `order`
        ...
    state = loader.state_dict()     # mid-epoch; a new loader with `load_state_dict(state)` goes on from there

What happens, in order:

1. **Source** (`source.py`). A dataset repository (`REPO/data/{config}/{split}-NNNNN-of-MMMMM.parquet`), a prepared
   set or dataset folder, one shard, or a `datasets.Dataset` (`load_dataset(REPO, "labeled", split="train")`).
   Folders and shards have no configurations: every event is read and `config` / `split` are not used (a dataset
   folder of an imported release, `ROOT/{config}/{split}`, is the exception). A repository's shards are checked
   against the sha256 of its `splits.json` when the loader is made (fm4npp_data.integrity: hashed once per unchanged
   file), pages are read with their checksums verified, and each row group's `order` (a permutation of the event's
   spacepoints) and `knn` (indices in [-1, n)) are checked when it is read.
2. **Work units** (`batching.py`) are (shard, row group) pairs (ranges of 1,000 rows of a `datasets.Dataset`). Each
   epoch, the units are shuffled by a generator seeded with (seed, epoch) and dealt round-robin over the global
   workers (rank * W + worker, of world_size * W, W = max(num_workers, 1)): over all ranks and workers every event
   of the split is read exactly once per epoch. Only the columns the batches need are read, one row group at a time.
3. **Shuffle buffer and length buckets** (`batching.py`). A worker reads consecutive units of its share into a pool
   of at least `buffer_events` events, orders the pool by length (ties in random order), cuts it greedily into
   batches whose padded size B * S stays within `batch_tokens`, and yields those batches in random order. Events of
   similar length share a batch, so little is padding; an event longer than the budget is a batch of its own
   (counted in `summary()`), never dropped. An empty event counts as one token (S is at least 1).
4. **Collation** (`collate.py`) copies each event's arrays, already normalized and put in `order` once per row group
   (vectorized over the row group), into padded arrays; the loop is over the events of a batch, never over
   spacepoints.
5. **Workers** (`loader.py`). With num_workers > 0 the stream runs in `torch.utils.data.DataLoader` workers
   (batch_size=None), which hand batches out round-robin. The loader runs no Numba kernel (its normalization is one
   NumPy expression), so nothing in a forked worker depends on a thread pool of the parent.
6. **Resuming** (`loader.py`). `state_dict()` records the epoch and how many batches each worker's stream has handed
   out; a new loader given it skips those batches (planned from the list lengths alone, without collating them) and
   starts the round-robin at the worker that was next, so the rest of the epoch equals an uninterrupted run's.

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

from ..errors import require

require("torch", "models", "the PyTorch loader")  # before the modules: a MissingExtraError naming the extra

from .batching import BUFFER_EVENTS, plan_batches  # noqa: E402
from .collate import COLUMNS, collate, read_chunk  # noqa: E402
from .loader import EventStream, Loader, make_loader  # noqa: E402
from .source import TABLE_UNIT_EVENTS, Source, open_source  # noqa: E402

__all__ = [
    "BUFFER_EVENTS",
    "COLUMNS",
    "TABLE_UNIT_EVENTS",
    "EventStream",
    "Loader",
    "Source",
    "collate",
    "make_loader",
    "open_source",
    "plan_batches",
    "read_chunk",
]
