"""The loader: EventStream (the batches of one worker's epoch, a torch IterableDataset), Loader (epochs, DataLoader
workers, resuming with state_dict / load_state_dict, statistics) and make_loader, which checks the settings and
puts them together."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ..errors import DatasetError, require
from ..tasks import TRUTH_COLUMNS
from .batching import BUFFER_EVENTS, deal, plan_batches, pools
from .collate import COLUMNS, Chunk, collate, read_chunk
from .source import Source, Unit, open_source

torch = require("torch", "models", "the PyTorch loader")


class EventStream(torch.utils.data.IterableDataset):
    """Batches of one epoch of one worker (rank, DataLoader worker); yields (logical worker, batch) pairs.

    The Loader sets `epoch`, `skip` (batches already handed out, per logical worker) and `shift` (DataLoader
    worker w runs the stream of logical worker (w + shift) % W) before each epoch."""

    def __init__(self, source: Source, *, batch_tokens, seed, rank, world_size, num_workers, shuffle, k, buffer_events):
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
        """The units of a logical worker this epoch (batching.deal over the workers of all ranks)."""
        workers = self.world_size * self.workers
        return deal(self.source.units, self.rank * self.workers + logical, workers, self.seed, self.epoch, self.shuffle)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        logical = ((info.id if info is not None else 0) + self.shift) % self.workers
        use_threads = info is None  # workers run side by side: one thread each
        rng = None
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank * self.workers + logical])
        skip = self.skip[logical]
        for pool in pools(self.units_of(logical), self.buffer_events):
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
        return {
            "seed": s.seed,
            "rank": s.rank,
            "world_size": s.world_size,
            "num_workers": s.num_workers,
            "shuffle": s.shuffle,
            "batch_tokens": s.batch_tokens,
            "k": s.k,
            "buffer_events": s.buffer_events,
            "units": len(s.source.units),
            "events": s.source.events,
        }

    def state_dict(self) -> dict:
        """The position in the epochs (plain Python values: save it with torch.save or JSON)."""
        return {
            "epoch": self._epoch,
            "batches": sum(self._handed),
            "worker_batches": list(self._handed),
            "next_worker": self._next,
            "settings": self._settings(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from a state_dict() of a loader with the same data and settings; DatasetError otherwise."""
        try:
            settings, handed = dict(state["settings"]), [int(v) for v in state["worker_batches"]]
            epoch, nxt = int(state["epoch"]), int(state["next_worker"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"not a loader state ({type(exc).__name__}: {exc}); give what state_dict() returned"
            ) from exc
        ours = self._settings()
        differ = [
            f"{key} {settings.get(key)!r} (now {value!r})" for key, value in ours.items() if settings.get(key) != value
        ]
        if differ:
            raise DatasetError(
                "the state was saved by a loader with other settings or data: "
                + ", ".join(differ)
                + "; the rest of its epoch would not be the same batches"
            )
        if len(handed) != self.stream.workers or not 0 <= nxt < self.stream.workers or min(handed) < 0:
            raise DatasetError("not a loader state: worker_batches and next_worker do not match num_workers")
        self.set_epoch(epoch)
        self._handed, self._next = handed, nxt

    def __repr__(self) -> str:
        s = self.stream
        return (
            f"Loader({s.source.name}, {self.num_events} events, k={s.k}, batch_tokens={s.batch_tokens}, "
            f"epoch={self._epoch}, rank={s.rank}/{s.world_size}, num_workers={s.num_workers})"
        )


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
        raise DatasetError(
            f"k = {k}, but the data has k = {src.k} neighbours per spacepoint; ask for at most "
            f"{src.k}, or prepare the data again with --k {k}"
        )
    stream = EventStream(
        src,
        batch_tokens=batch_tokens,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        shuffle=bool(shuffle),
        k=k,
        buffer_events=buffer_events,
    )
    return Loader(stream, _count(epoch, "epoch"), pin_memory, multiprocessing_context)


__all__ = ["EventStream", "Loader", "make_loader"]
