"""Split assignment: deterministic from (run, event), so that any copy of the data splits the same way.

Each event gets u = splitmix64(run, event) / 2^64, uniform in [0, 1); u < 70/90 is train, u < 83/90 validation,
else test: the proportions of the published labeled splits (70k / 13k / 7k). Data imported from the TPCpp-10M release
keep the release's own split instead (its manifests say which part is which).
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "validation", "test")
FRACTIONS = (70, 13, 7)
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        v = (v + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        v = ((v ^ (v >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        v = ((v ^ (v >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return v ^ (v >> np.uint64(31))


def split_uniform(run: np.ndarray, event: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per event, uniform and fixed by (run, event)."""
    run = np.asarray(run, dtype=np.int64).astype(np.uint64)
    event = np.asarray(event, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _splitmix64(_splitmix64(run) ^ event)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_of(run: np.ndarray, event: np.ndarray, fractions=FRACTIONS) -> np.ndarray:
    """Split index per event (0 train, 1 validation, 2 test)."""
    cuts = np.cumsum(fractions) / np.sum(fractions)
    return np.searchsorted(cuts, split_uniform(run, event), side="right").astype(np.int8)
