"""Planning the batches of an epoch: the work units shuffled by (seed, epoch) and dealt round-robin to the workers of
all ranks, grouped into shuffle pools, and each pool cut into length-bucketed batches under a token budget."""

from __future__ import annotations

import numpy as np

from .source import Unit

#: Default size of a worker's shuffle pool: a few row groups of the repository (1,000 events each).
BUFFER_EVENTS = 4_096


def deal(units: list[Unit], worker: int, workers: int, seed: int, epoch: int, shuffle: bool) -> list[Unit]:
    """The units of global worker `worker` of `workers` this epoch: the epoch's units (shuffled by a generator seeded
    with (seed, epoch) when `shuffle`), dealt round-robin."""
    order = np.arange(len(units))
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(units))
    return [units[i] for i in order[worker::workers]]


def pools(units: list[Unit], buffer_events: int) -> list[list[Unit]]:
    """Consecutive units grouped until each group holds at least buffer_events events."""
    grouped, current, n = [], [], 0
    for unit in units:
        current.append(unit)
        n += unit.events
        if n >= buffer_events:
            grouped.append(current)
            current, n = [], 0
    return grouped + ([current] if current else [])


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
