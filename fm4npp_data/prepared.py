"""The readers of a prepared set's statistics, written by `fm4npp-data prepare` (fm4npp_data.preparation): the
binning's shape and `load_binning` (binning.json, checked), `binning_key` (which binning a shard was prepared with)
and `difficulty_bin` (the difficulty.json bin of an event). NumPy only: no torch, no Numba, so the loader and the
repository read them without the kernels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import geometry as g
from .errors import PrepareError

#: The boxes of the binning: two r bins per TPC module, N_PHI x N_ETA in phi and eta.
N_PHI = N_ETA = 8
BINS_PER_MODULE = 2


def load_binning(path: Path) -> dict:
    """A binning file, checked: `r` (7 edges), `phi` and `eta` (9 edges each), increasing finite numbers; the other
    keys (sample size, seed, ...) are optional. PrepareError naming the file and the key otherwise."""
    try:
        binning = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrepareError(f"{path}: cannot read the binning ({exc}); give JSON with r, phi and eta edges") from exc
    if not isinstance(binning, dict):
        raise PrepareError(f"{path}: the binning must be a JSON object with r, phi and eta edges")
    for key, n in (("r", g.N_MODULES * BINS_PER_MODULE + 1), ("phi", N_PHI + 1), ("eta", N_ETA + 1)):
        edges = binning.get(key)
        ok = isinstance(edges, list) and len(edges) == n and all(isinstance(v, int | float) for v in edges)
        if not ok or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
            raise PrepareError(f"{path}: {key!r} must be a list of {n} increasing finite numbers (docs/data-format.md)")
    n_boxes = (len(binning["r"]) - 1) * N_PHI * N_ETA
    if binning.get("n_boxes", n_boxes) != n_boxes:
        raise PrepareError(f"{path}: 'n_boxes' is {binning['n_boxes']}, but the edges make {n_boxes} boxes")
    return binning


def binning_key(binning: dict) -> str:
    """The first 16 hex digits of the sha256 of the `r`, `phi` and `eta` edges."""
    edges = {k: binning[k] for k in ("r", "phi", "eta")}
    return hashlib.sha256(json.dumps(edges, sort_keys=True).encode()).hexdigest()[:16]


def difficulty_bin(distance: np.ndarray, difficulty: dict) -> np.ndarray:
    """Bin of each event's knn_mean_distance (NaN -> -1)."""
    edges = np.asarray(difficulty["edges"])
    d = np.asarray(distance, np.float64)
    b = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(edges) - 2)
    return np.where(np.isfinite(d), b, -1)
