"""What a dataset repository is: its format name, its files, its configurations and splits, the names of its shards,
and which event goes where (the Catalog of the inputs' events and their Assignment to a configuration and a split).

```
REPO/README.md                  rendered from the project's dataset_card.md: YAML configs + features, then the card
REPO/binning.json  difficulty.json  manifest.json  splits.json
REPO/data/labeled/{train,validation,test}-NNNNN-of-MMMMM.parquet
REPO/data/pretrain/{train,validation}-NNNNN-of-MMMMM.parquet
```

Two configurations: `labeled` (events with truth labels; train / validation / test) and `pretrain` (every other
event; train / validation; truth columns dropped). An event is in exactly one configuration and one split, decided
from its (run, event) alone (fm4npp_data.splits): the labeled events are the ones with the smallest `labeled_key`
among those with labels, so a build does not depend on the order of its inputs or the number of workers. An imported
release keeps its own labeled splits, and its unlabeled parts become `pretrain`. Events a build leaves out (empty
events) are counted by reason in the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dataset import BINNING, DIFFICULTY, MANIFEST
from ..errors import RepoError
from ..splits import (
    FRACTIONS,
    PRETRAIN_FRACTIONS,
    PRETRAIN_SPLITS,
    SPLITS,
    labeled_key,
    pretrain_split_of,
    split_of,
)

#: manifest.json's "format" of a built repository.
REPO_FORMAT = "fm4npp-repo"
#: The dataset card (splits.json, the record of every file, is fm4npp_data.integrity.SPLITS_FILE: readers check it).
README = "README.md"
#: The files beside data/ whose sha256 splits.json records (splits.json itself aside).
TOP_FILES = (README, BINNING, DIFFICULTY, MANIFEST)
CONFIGS = {"labeled": SPLITS, "pretrain": PRETRAIN_SPLITS}
#: The published labeled size (70k / 13k / 7k), taken when the inputs hold at least five times as many events.
LABELED_EVENTS = 90_000


def shard_name(split: str, index: int, count: int) -> str:
    """The file name of shard `index` (from 0) of the `count` shards of a split, in data/CONFIG/."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def data_files(config: str, split: str) -> str:
    """The glob of a split's shards, relative to the repository (the card's `configs`)."""
    return f"data/{config}/{split}-*.parquet"


def ids_digest(run: np.ndarray, event: np.ndarray) -> str:
    """sha256 of the sorted (run, event) pairs of a split (int64 little-endian pairs): its identity in splits.json."""
    order = np.lexsort((event, run))
    pairs = np.stack([run[order].astype("<i8"), event[order].astype("<i8")], axis=1)
    return hashlib.sha256(np.ascontiguousarray(pairs).tobytes()).hexdigest()


@dataclass
class Catalog:
    """Every event of the inputs, as columns: where it is stored, its identity, size, labels and assignment."""

    shards: list[Path]
    shard: np.ndarray  # index into shards
    row: np.ndarray
    run: np.ndarray
    event: np.ndarray
    spacepoints: np.ndarray
    distance: np.ndarray  # knn_mean_distance
    labeled: np.ndarray  # bool: has track_id, pid and noise
    release_split: np.ndarray  # int8: the release's labeled split (0, 1, 2), or -1


def default_labeled_events(total: int) -> int:
    """90k when there are at least 450k events, else a fifth of them: both configurations always get events."""
    return LABELED_EVENTS if total >= 5 * LABELED_EVENTS else total // 5


@dataclass
class Assignment:
    config: np.ndarray  # int8: 0 labeled, 1 pretrain, -1 excluded
    split: np.ndarray  # int8: index into CONFIGS[config]
    excluded: dict[str, int]
    rule: dict


def assign(catalog: Catalog, labeled_events: int | None) -> Assignment:
    """Config and split of every event, from (run, event) alone (an imported release: its labeled parts' splits)."""
    n = catalog.run.shape[0]
    config = np.full(n, 1, np.int8)
    split = np.zeros(n, np.int8)
    empty = catalog.spacepoints == 0
    excluded = {"empty": int(empty.sum())}
    release = catalog.release_split >= 0
    rule: dict = {
        "labeled_splits": dict(zip(SPLITS, FRACTIONS, strict=True)),
        "pretrain_splits": dict(zip(PRETRAIN_SPLITS, PRETRAIN_FRACTIONS, strict=True)),
        "split_hash": "fm4npp_data.splits.split_uniform(run, event)",
        "labeled_hash": "fm4npp_data.splits.labeled_key(run, event): the smallest keys among events with labels",
    }
    if release.any() and labeled_events is not None:
        raise RepoError(
            "--labeled-events cannot apply: an imported release among the inputs keeps its own labeled "
            "splits; build without --labeled-events"
        )
    if release.any() and (catalog.labeled & (catalog.release_split < 0)).any():
        raise RepoError(
            "inputs with labels besides an imported release: the release's labeled splits would be mixed "
            "with others; build the release alone, or the other inputs alone"
        )
    if release.any():  # the release's labeled parts keep their split; nothing else is labeled
        config[release] = 0
        split[release] = catalog.release_split[release]
        rule["labeled_from"] = "the release's labeled parts, with their own splits"
    else:
        candidates = np.flatnonzero(catalog.labeled & ~empty)
        total = int((~empty).sum())
        want = default_labeled_events(total) if labeled_events is None else labeled_events
        want = min(want, candidates.shape[0])
        key = labeled_key(catalog.run[candidates], catalog.event[candidates])
        ranked = np.lexsort((catalog.event[candidates], catalog.run[candidates], key))[:want]
        chosen = candidates[ranked]
        config[chosen] = 0
        split[chosen] = split_of(catalog.run[chosen], catalog.event[chosen])
        rule["labeled_events"] = int(want)
        rule["labeled_key_max"] = int(key[ranked].max()) if want else None
        rule["labeled_from"] = "the events with labels whose labeled_key is at most labeled_key_max"
    pre = config == 1
    split[pre] = pretrain_split_of(catalog.run[pre], catalog.event[pre])
    config[empty] = -1
    return Assignment(config, split, excluded, rule)
