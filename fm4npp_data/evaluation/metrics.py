"""The benchmark's figures (DESIGN §6), defined once: track finding, particle identification, noise tagging. NumPy only.

Every function takes flat arrays over all spacepoints of a split (one entry per spacepoint) and, for tracking, the
index of each spacepoint's event, so that labels only need to be unique within an event. Nothing loops over
spacepoints, tracks or events: clusters are numbered by (event, label) keys and counted with `np.bincount`, and the
contingency table of truth and prediction is built by sorting (event, truth cluster, predicted cluster) keys once.

**Which spacepoints count for tracking.** Those with truth: `track_id >= 0` or `noise`. A spacepoint with neither
(`track_id == -1` and not noise: no truth match) is left out of every tracking figure.

**Truth clusters.** A spacepoint's truth cluster is its `track_id`, except that all noise spacepoints of an event form
one cluster together (as in the TPCpp-10M release, whose track id 0 is the noise of an event). A prediction equal to
the truth clusters therefore scores ARI 1, efficiency 1 and purity 1.

**Predicted clusters.** Any integer labels, unique within an event (the same label in two events means two clusters).
The label -1 means "unassigned": for the ARI each unassigned spacepoint is a cluster of its own (a singleton), so
leaving a spacepoint unassigned is never rewarded as grouping it with other unassigned ones; -1 is never a predicted
track.

**ARI** (adjusted Rand index of the truth and predicted clusters, from the pair counts of their contingency table):
`ari` is one score over the whole split, the labels made unique per event (pairs of spacepoints of different events
count as "apart" in both, as they are); `ari_event_mean` is the mean of the per-event scores over the events with
counted spacepoints (the published code's figure, the one of the paper's Table 2). Two identical partitions score 1,
also in the degenerate cases (one spacepoint; both one cluster; both all singletons), as scikit-learn does.

**Tracks and double majority.** True tracks: non-noise truth clusters with >= 3 counted spacepoints. Predicted
tracks: predicted clusters (label != -1) with >= 3 counted spacepoints of which fewer than half are noise. A predicted
track matches a true track when more than half of its counted spacepoints belong to that track and it holds more than
half of that track's spacepoints; a match is therefore one-to-one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fm4npp_data.labels import NOISE_CLASSES, PID_CLASSES

#: Efficiency in p_T bins: 15 bins over 0-3 GeV/c (the published evaluation's binning).
PT_EDGES = np.linspace(0.0, 3.0, 16)
#: The sPHENIX comparison subset of the paper: true tracks with >= 20 spacepoints, p_T > 1 GeV/c, |eta| < 1.1.
SPHENIX_CUTS = {"min_spacepoints": 20, "min_pt": 1.0, "max_abs_eta": 1.1}
_DENSE_LIMIT = 1 << 24  # cluster keys numbered with a lookup table up to this range (or 4 per spacepoint); else sorted


# ------------------------------------------------------------------------------------------------------------
# Numbering clusters
# ------------------------------------------------------------------------------------------------------------


def comb2(n: np.ndarray) -> np.ndarray:
    """n (n - 1) / 2, the number of pairs among n items, as int64."""
    n = np.asarray(n, dtype=np.int64)
    return n * (n - 1) // 2


def _dense(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, distinct): `distinct` are the sorted distinct values of non-negative `key`, `ids` each key's index in it.

    A small key range is numbered with a lookup table (linear time); a large one by np.unique (a sort)."""
    if key.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(key.max()) + 1
    if top <= max(_DENSE_LIMIT, 4 * key.size):
        present = np.zeros(top, bool)
        present[key] = True
        rank = np.cumsum(present, dtype=np.int32 if key.size < 1 << 31 else np.int64) - 1
        return rank[key].astype(np.int64), np.flatnonzero(present)
    distinct, ids = np.unique(key, return_inverse=True)
    return ids.astype(np.int64, copy=False), distinct


def cluster_ids(event: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the clusters (event, label) 0..n-1 in increasing (event, label) order.

    Returns (ids, cluster_event): each spacepoint's cluster id, and the event of each cluster. `event` holds
    non-negative integers; `label` any int64 values."""
    event = np.asarray(event, dtype=np.int64)
    label = np.asarray(label, dtype=np.int64)
    if label.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    low, high = int(label.min()), int(label.max())
    span = high - low + 1
    if span * (int(event.max()) + 1) >= 1 << 62:  # labels too far apart to combine with the event: number them first
        label, low = np.unique(label, return_inverse=True)[1].astype(np.int64), 0
        span = int(label.max()) + 1
    if span * (int(event.max()) + 1) >= 1 << 62:  # still too many (event, label) values: number the pairs
        pairs, ids = np.unique(np.stack([event, label]), axis=1, return_inverse=True)
        return ids.reshape(-1).astype(np.int64), pairs[0]
    ids, distinct = _dense(event * span + (label - low))
    return ids, distinct // span


# ------------------------------------------------------------------------------------------------------------
# Adjusted Rand index
# ------------------------------------------------------------------------------------------------------------


def ari_from_pairs(same_both, same_truth, same_predicted, n) -> np.ndarray:
    """The adjusted Rand index from pair counts (element-wise over arrays, or of scalars).

    same_both: pairs in one truth cluster and one predicted cluster (sum of C(n_ij, 2) over the contingency table);
    same_truth, same_predicted: pairs in one truth (predicted) cluster (sum of C(a_i, 2), of C(b_j, 2)); n: the number
    of items. ARI = 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn)) over the pair confusion counts (as
    scikit-learn computes it); 1 when the two partitions are identical (fn = fp = 0)."""
    tp = np.asarray(same_both, dtype=np.float64)
    fn = np.asarray(same_truth, dtype=np.float64) - tp
    fp = np.asarray(same_predicted, dtype=np.float64) - tp
    pairs = np.asarray(n, dtype=np.float64) * (np.asarray(n, dtype=np.float64) - 1) / 2
    tn = pairs - tp - fn - fp
    identical = (fn == 0) & (fp == 0)
    denominator = np.where(identical, 1.0, (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    return np.where(identical, 1.0, 2 * (tp * tn - fn * fp) / denominator)


def _pooled_ari(same_both: int, same_truth: int, same_predicted: int, n: int) -> float:
    """The ARI of one pair of partitions from its pair counts, in exact integer arithmetic (no overflow)."""
    tp, fn, fp = same_both, same_truth - same_both, same_predicted - same_both
    if fn == 0 and fp == 0:
        return 1.0
    tn = n * (n - 1) // 2 - tp - fn - fp
    return 2 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def adjusted_rand_index(truth, predicted) -> float:
    """The ARI of two labelings of the same items (one event, say); every label is a cluster, -1 included."""
    truth, predicted = np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    _same_length(truth=truth, predicted=predicted)
    one = np.zeros(truth.shape, np.int64)
    t, t_event = cluster_ids(one, truth)
    p, p_event = cluster_ids(one, predicted)
    count = _contingency(t, t_event, p, one, p_event, 1)[2]
    pairs = (comb2(count).sum(), comb2(np.bincount(t)).sum(), comb2(np.bincount(p)).sum(), truth.size)
    return _pooled_ari(*(int(x) for x in pairs))


# ------------------------------------------------------------------------------------------------------------
# Tracking
# ------------------------------------------------------------------------------------------------------------


def tracking_metrics(
    event,
    truth_track,
    noise,
    predicted,
    pt=None,
    eta=None,
    *,
    min_true_spacepoints: int = 3,
    min_predicted_spacepoints: int = 3,
    max_predicted_noise_fraction: float = 0.5,
) -> dict:
    """Track-finding figures of a whole split (the rules are in the module's docstring).

    Arguments, one entry per spacepoint of the split: `event` (non-negative event index), `truth_track` (the truth
    `track_id`, -1 without truth), `noise` (truth noise flag), `predicted` (predicted label, -1 unassigned); and, where
    the data have particle momenta, `pt` and `eta` of each spacepoint's truth particle (p_T in GeV/c and
    pseudorapidity; NaN where unknown). The work goes in blocks of whole events, which keeps it in cache; spacepoints
    not already in event order (`event` non-decreasing, as the leaderboard passes them) are put in it first by a stable
    sort. The figures do not depend on the order of the spacepoints.

    Returns a dict:
    - `ari`: ARI over the whole split (labels made unique per event); `ari_event_mean`: mean per-event ARI over the
      events with counted spacepoints.
    - `efficiency`: matched true tracks / true tracks; `purity`: matched predicted tracks / predicted tracks.
    - `spacepoint_efficiency`: spacepoints shared by matched pairs / spacepoints of true tracks;
      `spacepoint_purity`: the same / spacepoints of predicted tracks.
    - `counts`: events (with counted spacepoints), spacepoints (counted), left_out (spacepoints without truth),
      noise_spacepoints, unassigned (counted spacepoints predicted -1), true_tracks, predicted_tracks, matched_tracks.
    - `settings`: the thresholds used.
    - only with `pt` and `eta`: `efficiency_pt`, the efficiency of true tracks in 15 p_T bins (edge_i, edge_i+1] over
      0-3 GeV/c (`edges`; per bin `true_tracks`, `matched`, `efficiency` and its binomial error sqrt(e (1 - e) / n),
      None for an empty bin), and `sphenix`, the same on the paper's sPHENIX comparison subset (true tracks with >= 20
      spacepoints, p_T > 1 GeV/c, |eta| < 1.1).
    Ratios with a zero denominator are None.
    """
    event = np.asarray(event, dtype=np.int64)
    arrays = {
        "event": event,
        "truth_track": np.asarray(truth_track, dtype=np.int64),
        "noise": np.asarray(noise, dtype=bool),
        "predicted": np.asarray(predicted, dtype=np.int64),
    }
    momenta = pt is not None and eta is not None
    if momenta:
        arrays["pt"] = np.asarray(pt, dtype=np.float64)
        arrays["eta"] = np.asarray(eta, dtype=np.float64)
    _same_length(**arrays)
    if event.size and event.min() < 0:
        raise ValueError("event indices must be >= 0")
    settings = {
        "min_true_spacepoints": min_true_spacepoints,
        "min_predicted_spacepoints": min_predicted_spacepoints,
        "max_predicted_noise_fraction": max_predicted_noise_fraction,
    }
    if event.size and bool(np.any(event[1:] < event[:-1])):
        order = np.argsort(event, kind="stable")
        arrays = {k: a[order] for k, a in arrays.items()}
    if event.size:  # number the events 0..n-1 (any non-negative indices, however large or sparse)
        arrays["event"] = np.concatenate([[0], np.cumsum(arrays["event"][1:] != arrays["event"][:-1])])
    tallies = [_tally({k: a[block] for k, a in arrays.items()}, settings) for block in _event_blocks(arrays["event"])]
    return _figures(_combine(tallies), settings, momenta)


_BLOCK = 1 << 16  # spacepoints per block of whole events
_CELL_LIMIT = 1 << 20  # contingency keys counted with np.bincount up to this range (or 8 per spacepoint); else sorted


def _event_blocks(event: np.ndarray) -> list[slice]:
    """Slices of about _BLOCK spacepoints that cut between events; `event` is non-decreasing."""
    n = event.size
    if n <= _BLOCK:
        return [slice(0, n)]
    starts = np.flatnonzero(event[1:] != event[:-1]) + 1  # where an event begins (the first aside)
    at = np.searchsorted(starts, np.arange(_BLOCK, n, _BLOCK))
    bounds = [0, *np.unique(starts[at[at < starts.size]]).tolist(), n]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _same_length(**arrays: np.ndarray) -> None:
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the arrays must have one entry per spacepoint, but their lengths differ: {sizes}")


def _tally(a: dict[str, np.ndarray], settings: dict) -> dict:
    """The additive counts of one block of whole events (ints, arrays to add, and the per-event ARIs)."""
    counted = (a["truth_track"] >= 0) | a["noise"]
    ev = a["event"][counted]
    ev = ev - ev.min() if ev.size else ev  # event numbers local to the block
    n_events = int(ev.max()) + 1 if ev.size else 0
    noise = a["noise"][counted]
    predicted = a["predicted"][counted]
    truth_id, truth_event = cluster_ids(ev, np.where(noise, -1, a["truth_track"][counted]))  # noise: one cluster
    assigned = predicted != -1
    pred_ev = ev[assigned]
    pred_id, pred_event = cluster_ids(pred_ev, predicted[assigned])
    cells = _contingency(truth_id[assigned], truth_event, pred_id, pred_ev, pred_event, n_events)
    cell_truth, cell_pred, cell_count = cells

    truth_size = np.bincount(truth_id, minlength=truth_event.size)
    truth_noise = np.zeros(truth_event.size, bool)
    truth_noise[truth_id[noise]] = True
    pred_size = np.bincount(pred_id, minlength=pred_event.size)
    pred_noise = np.bincount(pred_id[noise[assigned]], minlength=pred_event.size)

    true_track = ~truth_noise & (truth_size >= settings["min_true_spacepoints"])
    pred_track = (pred_size >= settings["min_predicted_spacepoints"]) & (
        pred_noise < settings["max_predicted_noise_fraction"] * pred_size
    )
    matched = (
        true_track[cell_truth]
        & pred_track[cell_pred]
        & (2 * cell_count > truth_size[cell_truth])
        & (2 * cell_count > pred_size[cell_pred])
    )
    per_event = (  # pair counts of each event: unassigned spacepoints are singletons, they add no predicted pair
        np.bincount(truth_event[cell_truth], weights=comb2(cell_count), minlength=n_events),
        np.bincount(truth_event, weights=comb2(truth_size), minlength=n_events),
        np.bincount(pred_event, weights=comb2(pred_size), minlength=n_events),
        np.bincount(ev, minlength=n_events),
    )
    scored = per_event[3] > 0
    tally = {
        "same_both": int(comb2(cell_count).sum()),
        "same_truth": int(comb2(truth_size).sum()),
        "same_predicted": int(comb2(pred_size).sum()),
        "event_ari": ari_from_pairs(*(x[scored] for x in per_event)),
        "spacepoints": int(ev.size),
        "left_out": int(counted.size - ev.size),
        "noise_spacepoints": int(noise.sum()),
        "unassigned": int(assigned.size - pred_ev.size),
        "true_tracks": int(true_track.sum()),
        "predicted_tracks": int(pred_track.sum()),
        "matched_tracks": int(matched.sum()),
        "shared": int(cell_count[matched].sum()),
        "true_spacepoints": int(truth_size[true_track].sum()),
        "predicted_spacepoints": int(pred_size[pred_track].sum()),
    }
    if "pt" in a:
        is_matched = np.zeros(truth_event.size, bool)
        is_matched[cell_truth[matched]] = True
        track_pt = _per_cluster(truth_id, a["pt"][counted])[true_track]
        track_eta = _per_cluster(truth_id, a["eta"][counted])[true_track]
        tally.update(_momentum_tally(track_pt, track_eta, truth_size[true_track], is_matched[true_track]))
    return tally


def _contingency(truth_id, truth_event, pred_id, pred_ev, pred_event, n_events):
    """The non-zero cells of the contingency table of truth and predicted clusters, over the spacepoints with both.

    Returns (truth cluster, predicted cluster, count) arrays. Cells pair clusters of one event only, so a cell is
    keyed by (truth cluster, rank of the predicted cluster within its event) and counted with np.bincount when that
    key range is small; otherwise the keys truth * n_predicted + predicted are sorted."""
    empty = np.zeros(0, np.int64)
    if truth_id.size == 0:
        return empty, empty, empty
    first = np.searchsorted(pred_event, np.arange(n_events))  # first predicted cluster of each event
    rank = pred_id - first[pred_ev]
    width = int(rank.max()) + 1
    if truth_event.size * width <= max(_CELL_LIMIT, 8 * truth_id.size):
        counts = np.bincount(truth_id * width + rank, minlength=truth_event.size * width)
        cells = np.flatnonzero(counts)
        cell_truth = cells // width
        return cell_truth, first[truth_event[cell_truth]] + cells % width, counts[cells]
    n_pred = pred_event.size
    key = np.sort(truth_id * n_pred + pred_id, kind="stable")
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    return key[starts] // n_pred, key[starts] % n_pred, np.diff(np.append(starts, key.size))


def _per_cluster(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The value of one spacepoint of each cluster (the truth particle's p_T or eta, the same for all of them)."""
    out = np.full(int(ids.max()) + 1 if ids.size else 0, np.nan)
    out[ids] = values
    return out


def _momentum_tally(pt, eta, size, matched) -> dict:
    """Counts of true tracks (all, matched) in the p_T bins and in the sPHENIX comparison subset."""
    # (edge_i, edge_i+1], the first bin closed at 0, as the published evaluation (pandas.cut, include_lowest):
    # p_T = 3.0 is in the last bin; NaN sorts last: no bin
    bins = np.searchsorted(PT_EDGES, pt, side="left") - 1
    bins[pt == PT_EDGES[0]] = 0
    inside = (bins >= 0) & (bins < PT_EDGES.size - 1)
    with np.errstate(invalid="ignore"):
        subset = (
            (size >= SPHENIX_CUTS["min_spacepoints"])
            & (pt > SPHENIX_CUTS["min_pt"])
            & (np.abs(eta) < SPHENIX_CUTS["max_abs_eta"])
        )
    return {
        "pt_true": np.bincount(bins[inside], minlength=PT_EDGES.size - 1),
        "pt_matched": np.bincount(bins[inside & matched], minlength=PT_EDGES.size - 1),
        "sphenix_true": int(subset.sum()),
        "sphenix_matched": int((subset & matched).sum()),
    }


def _combine(tallies: list[dict]) -> dict:
    """Sum the tallies of the blocks (the per-event ARIs are concatenated)."""
    total = {}
    for key in tallies[0]:
        values = [t[key] for t in tallies]
        total[key] = np.concatenate(values) if key == "event_ari" else sum(values[1:], values[0])
    return total


def _figures(t: dict, settings: dict, momenta: bool) -> dict:
    """The figures of the summed tallies."""
    result = {
        "ari": _pooled_ari(t["same_both"], t["same_truth"], t["same_predicted"], t["spacepoints"])
        if t["spacepoints"]
        else None,
        "ari_event_mean": float(t["event_ari"].mean()) if t["event_ari"].size else None,
        "efficiency": _ratio(t["matched_tracks"], t["true_tracks"]),
        "purity": _ratio(t["matched_tracks"], t["predicted_tracks"]),
        "spacepoint_efficiency": _ratio(t["shared"], t["true_spacepoints"]),
        "spacepoint_purity": _ratio(t["shared"], t["predicted_spacepoints"]),
        "counts": {"events": int(t["event_ari"].size)}
        | {
            k: t[k]
            for k in (
                "spacepoints",
                "left_out",
                "noise_spacepoints",
                "unassigned",
                "true_tracks",
                "predicted_tracks",
                "matched_tracks",
            )
        },
        "settings": dict(settings),
    }
    if momenta:
        efficiency, error = _binomial(t["pt_matched"], t["pt_true"])
        result["efficiency_pt"] = {
            "edges": PT_EDGES.tolist(),
            "true_tracks": t["pt_true"].tolist(),
            "matched": t["pt_matched"].tolist(),
            "efficiency": efficiency,
            "error": error,
        }
        efficiency, error = _binomial(np.array([t["sphenix_matched"]]), np.array([t["sphenix_true"]]))
        result["sphenix"] = {
            "cuts": dict(SPHENIX_CUTS),
            "true_tracks": t["sphenix_true"],
            "matched": t["sphenix_matched"],
            "efficiency": efficiency[0],
            "error": error[0],
        }
    return result


def _ratio(numerator, denominator) -> float | None:
    """numerator / denominator as a float; None when the denominator is 0 (the figure is undefined)."""
    return float(numerator) / float(denominator) if denominator else None


def _binomial(matched: np.ndarray, total: np.ndarray) -> tuple[list, list]:
    """Efficiencies matched / total and their binomial errors sqrt(e (1 - e) / total); None where total is 0."""
    efficiency, error = [], []
    for k, n in zip(matched.tolist(), total.tolist(), strict=True):  # one item per bin, not per track
        e = k / n if n else None
        efficiency.append(e)
        error.append(float(np.sqrt(e * (1 - e) / n)) if n else None)
    return efficiency, error


# ------------------------------------------------------------------------------------------------------------
# Classification (PID, noise)
# ------------------------------------------------------------------------------------------------------------


def confusion_matrix(truth, predicted, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: row = true class, column = predicted class; values must be in range."""
    truth = np.asarray(truth, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    _same_length(truth=truth, predicted=predicted)
    for name, values in (("truth", truth), ("predicted", predicted)):
        bad = (values < 0) | (values >= n_classes)
        if bad.any():
            raise ValueError(f"{name} class {int(values[bad][0])} is outside 0..{n_classes - 1}")
    return np.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(truth, predicted, classes: int | Sequence[str]) -> dict:
    """Per-spacepoint classification figures, pooled over every spacepoint given.

    `classes`: the class names (class i is named classes[i]) or their number (named "0", "1", ...).
    - `accuracy`: correct / all.
    - per class: `recall` = correct / true members (0 when the class has none), `precision` = correct / predicted
      members (0 when nothing is predicted as the class), `support` (true members), `predicted` (predicted members);
      recall and precision are None for a class that is neither in the truth nor in the prediction.
    - `macro_recall`, `macro_precision`: unweighted means over the classes that occur in the truth or the prediction
      (scikit-learn's `average="macro"`, `zero_division=0`, as the published evaluation; with every class present,
      simply the mean over the classes).
    - `spacepoints`: how many were scored. Figures are None when there is none.
    """
    names = [str(i) for i in range(classes)] if isinstance(classes, int) else [str(c) for c in classes]
    table = confusion_matrix(truth, predicted, len(names))
    correct = np.diag(table)
    support, claimed = table.sum(axis=1), table.sum(axis=0)
    recall = np.divide(correct, support, out=np.zeros(len(names)), where=support > 0)
    precision = np.divide(correct, claimed, out=np.zeros(len(names)), where=claimed > 0)
    present = (support > 0) | (claimed > 0)
    total = int(table.sum())
    return {
        "accuracy": _ratio(correct.sum(), total),
        "macro_recall": float(recall[present].mean()) if present.any() else None,
        "macro_precision": float(precision[present].mean()) if present.any() else None,
        "per_class": {
            name: {
                "recall": float(recall[i]) if present[i] else None,
                "precision": float(precision[i]) if present[i] else None,
                "support": int(support[i]),
                "predicted": int(claimed[i]),
            }
            for i, name in enumerate(names)
        },
        "spacepoints": total,
    }


def pid_metrics(truth, predicted) -> dict:
    """classification_metrics over the PID classes of fm4npp_data.labels (0 other, 1 pion, 2 kaon, 3 proton,
    4 electron)."""
    return classification_metrics(truth, predicted, PID_CLASSES)


def noise_metrics(truth, predicted) -> dict:
    """classification_metrics of the noise flag: class 0 "signal" (not noise), class 1 "noise"."""
    return classification_metrics(np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool), NOISE_CLASSES)


__all__ = [
    "NOISE_CLASSES",
    "PT_EDGES",
    "SPHENIX_CUTS",
    "adjusted_rand_index",
    "ari_from_pairs",
    "classification_metrics",
    "cluster_ids",
    "comb2",
    "confusion_matrix",
    "noise_metrics",
    "pid_metrics",
    "tracking_metrics",
]
