"""Class weights for the classification heads (PID, noise): counted from the labels actually trained on.

    counts = class_counts(shards, "pid", 5, events=None)     # (C,) int64: labeled spacepoints (label >= 0) per class
    weights = balanced_weights(counts)                       # (C,) float: w_c = N / (C n_c), 0 where n_c = 0

"balanced" is scikit-learn's rule (`compute_class_weight("balanced")`): N labeled spacepoints, C the classes present
(n_c > 0; all of them in the usual case, where it equals scikit-learn's), so that the weighted count sum_c n_c w_c is
N. A class without a training label gets weight 0 (nothing to weigh). The published heads use plain cross entropy
("none"). Torch-free: pyarrow and numpy, column by column.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fm4npp_data.errors import DatasetError
from fm4npp_data.integrity import READ_OPTIONS, damaged


def class_counts(paths: Sequence[Path], column: str, n_classes: int, events: int | None = None) -> np.ndarray:
    """(n_classes,) int64: the spacepoints of each class (label >= 0) in the list column `column` of the Parquet
    files `paths`, read in order; with `events`, of their first `events` events only. DatasetError naming the file
    for a label >= n_classes or a file pyarrow cannot read."""
    counts = np.zeros(n_classes, np.int64)
    left = events
    for path in paths:
        if left is not None and left <= 0:
            break
        try:
            table = pq.read_table(path, columns=[column], **READ_OPTIONS)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(damaged(path, exc)) from exc
        if left is not None:
            table = table.slice(0, left)
            left -= table.num_rows
        labels = pc.list_flatten(table[column]).cast(pa.int64()).to_numpy(zero_copy_only=False)
        labels = labels[labels >= 0]
        if labels.size and labels.max() >= n_classes:
            raise DatasetError(
                f"{path}: {column} label {int(labels.max())} is not one of the {n_classes} classes (0 .. "
                f"{n_classes - 1}); build the repository again from valid labels"
            )
        counts += np.bincount(labels, minlength=n_classes)
    return counts


#: The largest weight of "capped": a class holding a tenth of its balanced share (1 / (10 C) of the labels) or less
#: weighs no more than 10 times a class of average size, so that a class of a few spacepoints (PID's "other", under
#: 0.1 %) cannot dominate the loss.
CAP = 10.0


def balanced_weights(counts: Sequence[int], cap: float | None = None) -> np.ndarray:
    """(C,) float64: w_c = N / (C' n_c) for the C' classes with n_c > 0, 0 for the others (N = sum n_c); all 0 when
    there is no label at all. With `cap`, no weight is above it."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    if present.any():
        weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights if cap is None else np.minimum(weights, cap)
