"""Split assignment: deterministic from (run, event), so that any copy of the data splits the same way.

Each event gets u = splitmix64(splitmix64(run) ^ event) / 2^64, uniform in [0, 1); in the `labeled` configuration
u < 70/90 is train, u < 83/90 validation, else test: the proportions of the published labeled splits (70k / 13k /
7k); in the `pretrain` configuration u < 95/100 is train, else validation. Which events are labeled (when a build
holds more events with truth than the labeled configuration takes) is decided by a second, independent hash,
`labeled_key`: the events with the smallest keys are labeled. Both depend on (run, event) only, so a build is the
same whatever the order of its inputs or the number of workers. Data imported from the TPCpp-10M release keep the
release's own split instead (its manifests say which part is which).

`repo_shards` lists the shards that hold a split in a dataset repository (data/{config}/{split}-NNNNN-of-MMMMM.parquet)
and checks that none is missing; the loader, the leaderboard and fine-tuning read splits through it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .errors import DatasetError

SPLITS = ("train", "validation", "test")
FRACTIONS = (70, 13, 7)
PRETRAIN_SPLITS = ("train", "validation")
PRETRAIN_FRACTIONS = (95, 5)
#: Salt of the labeled-selection hash (any constant other than 0 makes it independent of `split_uniform`).
LABELED_SALT = np.uint64(0x6C6162656C6564)  # "labeled"
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


def labeled_key(run: np.ndarray, event: np.ndarray) -> np.ndarray:
    """A 64-bit key per event (uint64), fixed by (run, event) and independent of `split_uniform`: a build labels
    the events with the smallest keys."""
    run = np.asarray(run, dtype=np.int64).astype(np.uint64)
    event = np.asarray(event, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        return _splitmix64(_splitmix64(run ^ LABELED_SALT) ^ _splitmix64(event))


def pretrain_split_of(run: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Split index per event of the pretrain configuration (0 train, 1 validation)."""
    return split_of(run, event, PRETRAIN_FRACTIONS)


#: The name of a shard of the repository: data/{config}/{split}-NNNNN-of-MMMMM.parquet.
SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


def repo_shards(root: Path, config: str, split: str) -> list[Path]:
    """REPO/data/{config}/{split}-NNNNN-of-MMMMM.parquet, all M of them (an incomplete download is an error)."""
    data = root / "data"
    listed = root / "splits.json"
    if listed.is_file():  # a build records every split, also the empty ones
        info = json.loads(listed.read_text()).get("configs", {}).get(config, {}).get(split)
        if info is not None and info["events"] == 0:
            raise DatasetError(f"{root}: split {split!r} of config {config!r} holds no events in this build")
    configs = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if config not in configs:
        raise DatasetError(f"{root}: no config {config!r}; the configs are: {', '.join(configs) or 'none'}")
    by_split: dict[str, list[tuple[int, int, Path]]] = {}
    for p in sorted((data / config).glob("*.parquet")):
        m = SHARD_NAME.match(p.name)
        if m:
            by_split.setdefault(m["split"], []).append((int(m["index"]), int(m["count"]), p))
    if not by_split:
        raise DatasetError(
            f"{data / config}: no shards (SPLIT-NNNNN-of-MMMMM.parquet); the repository is incomplete: "
            "build or download it again"
        )
    if split not in by_split:
        raise DatasetError(
            f"{root}: no shards of split {split!r} (no split {split!r} in config {config!r}; the splits "
            f"are: {', '.join(sorted(by_split))})"
        )
    found = by_split[split]
    count = found[0][1]
    missing = sorted(set(range(count)) - {i for i, _, _ in found})
    if missing or any(c != count for _, c, _ in found) or len(found) != count:
        names = ", ".join(f"{split}-{i:05d}-of-{count:05d}.parquet" for i in missing[:5]) or "inconsistent counts"
        raise DatasetError(
            f"{data / config}: split {split!r} should have {count} shards, but is missing or has "
            f"extra ones ({names}); build or download the repository again"
        )
    return [p for _, _, p in sorted(found)]
