"""The linear probe (`fm4npp study probe`, the paper's "single linear mapping" and Figure 8): how much of each task a
single linear map of the frozen backbone's per-spacepoint features already solves, against the same map of the raw
inputs.

    probe(REPO, RUN, OUT, ProbeOptions(events=100, split="test"))

Features of a spacepoint:
- FM: the frozen backbone's features of the kind the heads read (Backbone.features, ProbeOptions.features: the
  residual stream x_0..x_L by default, the published z_1..z_L with "z"), the last block and the mean over the
  blocks, concatenated (2 x d_model numbers);
- raw inputs (the baseline): the NeRF encoding of [eta', phi', r'] (fm4npp_models.model.embedding.nerf_encoding, 63
  numbers) and E' (64 numbers): what the backbone's embedding sees, before its random projection.
Both are standardized with the training spacepoints' mean and standard deviation.

Probes, fitted on the spacepoints of the first `events` events of the labeled train split (in (run, event) order,
as `fm4npp finetune --train-events`), scored on every spacepoint of the labeled `split` (its first `eval_events`):
- PID and noise: a linear classifier (scikit-learn LogisticRegression, class_weight="balanced", at most MAX_ITER
  iterations); the macro recall and accuracy of fm4npp_data.evaluation.metrics, as the leaderboard scores them.
- tracking: one linear map W (d -> MAP_DIM, no bias) trained with a pairwise hinge loss on pairs of spacepoints of
  one event (half of the same track, half of different tracks, sampled afresh each step): same-track pairs are pulled
  within PULL of each other, other pairs pushed beyond PUSH. Scored by the ROC AUC of the pair distance separating
  same-track from other pairs (also before the map: the standardized features' own distance), and by the pooled ARI
  (fm4npp_data.evaluation.metrics.tracking_metrics) of DBSCAN (eps EPS, min_samples MIN_SAMPLES) on the mapped
  spacepoints of each event.

OUT/probe.json (every figure), probe.md (the table) and probe.png (one event of the split: the FM features' PCA,
and the PCA of the same features after the linear map, colored by track) are written atomically.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fm4npp_data.errors import DatasetError, TrainError, require
from fm4npp_data.evaluation.metrics import classification_metrics, tracking_metrics
from fm4npp_data.files import write_json
from fm4npp_data.integrity import READ_OPTIONS, checked_shards, damaged
from fm4npp_data.tasks import NOISE, PID, TASKS, TRACKING

from ..adapters.downstream import LOADER_K
from ..model.backbone import Backbone
from ..model.embedding import nerf_encoding
from ..training.distributed import Dist, device_of, to_device
from .common import check_study_folder, markdown_table, pyplot, save_figure, write_text
from .options import MAP_STEPS, MAX_ITER, ProbeOptions

MAP_DIM = 16  # the linear map's output dimension
PULL, PUSH = 0.5, 1.0  # same-track pairs within PULL, other pairs beyond PUSH: a gap, so that DBSCAN can cut it
EPS, MIN_SAMPLES = 0.5, 3  # DBSCAN on the mapped spacepoints
MAP_PAIRS, MAP_LR = 4096, 1e-2  # the map's training: pairs per step, Adam's learning rate
AUC_PAIRS = 20_000  # pairs sampled from the split for the ROC AUC
FM, RAW = "FM", "raw inputs"


@dataclass
class Points:
    """The spacepoints of some events, flattened: features by kind (N, d), labels (N,) by batch key, event (N,) the
    event's index (0 .. events-1), keys the events' (run, event)."""

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    event: np.ndarray
    keys: list[tuple[int, int]]


def first_keys(data: Path, split: str, n: int) -> set[tuple[int, int]]:
    """The (run, event) of the first n events of a labeled split, in the shards' order (finetune's --train-events)."""
    keys: list[tuple[int, int]] = []
    for shard in checked_shards(data, "labeled", split):
        try:
            table = pq.read_table(shard, columns=["run", "event"], **READ_OPTIONS)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(damaged(shard, exc)) from exc
        keys += zip(table["run"].to_pylist(), table["event"].to_pylist(), strict=True)
        if len(keys) >= n:
            break
    if len(keys) < n:
        raise TrainError(f"--events {n}, but the labeled {split} split of {data} has {len(keys)} events; give fewer")
    return set(keys[:n])


def raw_features(features: torch.Tensor) -> torch.Tensor:
    """(..., 4) [E', eta', phi', r'] -> (..., 64): the NeRF encoding of [eta', phi', r'] and E'."""
    return torch.cat([nerf_encoding(features[..., 1:4]), features[..., :1]], dim=-1)


def fm_features(backbone: Backbone, features: torch.Tensor, mask: torch.Tensor, kind: str = "z") -> torch.Tensor:
    """(B, S, 2 d_model): the last block and the mean of the blocks of Backbone.features(kind=kind)."""
    blocks = backbone.features(features, mask, kind=kind)
    return torch.cat([blocks[-1], torch.stack(blocks).mean(0)], dim=-1)


@torch.no_grad()
def collect(
    data: Path,
    split: str,
    backbone: Backbone | None,
    events: int | None,
    batch_tokens: int,
    device: torch.device,
    kind: str = "z",
) -> Points:
    """The spacepoints of the first `events` events (None: all) of a labeled split, with the raw features and (with a
    backbone) the FM features."""
    from fm4npp_data.loader import make_loader

    wanted = None if events is None else first_keys(data, split, events)
    try:
        loader = make_loader(
            data,
            "labeled",
            split,
            batch_tokens=batch_tokens,
            shuffle=False,
            k=LOADER_K,
            **({} if events is None else {"buffer_events": events}),  # the first pool holds the first events
        )
    except DatasetError as exc:
        raise TrainError(f"{data}: {exc}") from exc
    label_keys = [task.column for task in TASKS.values()]  # the batch's label keys: track, pid, noise
    parts: dict[str, list] = {"event": [], RAW: [], FM: [], **{k: [] for k in label_keys}}
    keys: list[tuple[int, int]] = []
    for batch in loader:
        rows = [
            b
            for b, key in enumerate(zip(batch["run"].tolist(), batch["event"].tolist(), strict=True))
            if wanted is None or key in wanted
        ]
        if not rows:
            continue
        batch = to_device({k: v[rows] if torch.is_tensor(v) else v for k, v in batch.items()}, device)
        mask = batch["mask"]
        index = torch.arange(len(keys), len(keys) + len(rows), device=device).unsqueeze(1).expand_as(mask)
        keys += [(int(batch["run"][b]), int(batch["event"][b])) for b in range(len(rows))]
        parts["event"].append(index[mask].cpu().numpy())
        parts[RAW].append(raw_features(batch["features"])[mask].float().cpu().numpy())
        if backbone is not None:
            parts[FM].append(fm_features(backbone, batch["features"], mask, kind)[mask].float().cpu().numpy())
        for k in label_keys:
            parts[k].append(batch[k][mask].cpu().numpy())
        if wanted is not None and len(keys) == len(wanted):
            break
    if not keys:
        raise TrainError(f"the labeled {split} split of {data} has no event to probe")
    kinds = [RAW] + ([FM] if backbone is not None else [])
    return Points(
        {k: np.concatenate(parts[k]) for k in kinds},
        {k: np.concatenate(parts[k]) for k in label_keys},
        np.concatenate(parts["event"]),
        keys,
    )


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every array minus the training mean, over the training standard deviation (1 where it is 0)."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


# ------------------------------------------------------------------------------------------------------------
# PID and noise: a linear classifier
# ------------------------------------------------------------------------------------------------------------


def linear_classifier(
    x_train, y_train, x_test, y_test, classes, what: str = "the labels", max_iter: int = MAX_ITER
) -> dict:
    """A balanced logistic regression on standardized features, fitted on (x_train, y_train), scored on the test
    points: classification_metrics (accuracy, macro recall and precision, per class) and whether it converged."""
    linear_model = require("sklearn.linear_model", "study", "fm4npp study probe")
    exceptions = require("sklearn.exceptions", "study", "fm4npp study probe")
    y_train, y_test = np.asarray(y_train, np.int64), np.asarray(y_test, np.int64)
    present = np.unique(y_train)
    if present.size < 2:
        raise TrainError(
            f"{what}: the training spacepoints hold only class {classes[int(present[0])] if present.size else '-'}; "
            "a classifier needs two: give more --events"
        )
    x_train, x_test = standardize(x_train, x_test)
    model = linear_model.LogisticRegression(class_weight="balanced", max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
        model.fit(x_train, y_train)
    result = classification_metrics(y_test, model.predict(x_test), classes)
    result["converged"] = bool(np.all(model.n_iter_ < max_iter))
    return result


# ------------------------------------------------------------------------------------------------------------
# Tracking: a linear map trained on pairs
# ------------------------------------------------------------------------------------------------------------


class PairSampler:
    """Pairs of spacepoints of one event among those with a truth track (track >= 0): same-track pairs (a point and
    another of its track) and different-track pairs (a point and another of its event on another track)."""

    def __init__(self, track: np.ndarray, event: np.ndarray) -> None:
        valid = np.flatnonzero(track >= 0)
        key = event[valid].astype(np.int64) * (int(track.max(initial=0)) + 1) + track[valid]
        order = np.argsort(key, kind="stable")
        self.points, self.key = valid[order], key[order]  # by event, then track
        self.event = event[self.points]
        _, self.group, group_size = np.unique(self.key, return_inverse=True, return_counts=True)
        self.group_start = np.concatenate([[0], np.cumsum(group_size)[:-1]])
        self.group_size = group_size
        _, self.ev, ev_size = np.unique(self.event, return_inverse=True, return_counts=True)
        self.ev_start, self.ev_size = np.concatenate([[0], np.cumsum(ev_size)[:-1]]), ev_size
        self.paired = np.flatnonzero(group_size[self.group] >= 2)  # positions whose track has another point

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """About n pairs (i, j, same), half of them same-track, as indices into the points given."""
        if self.paired.size == 0 or self.points.size < 2:
            raise TrainError("no two spacepoints share a truth track: the probe's pairs need tracks of 2+ points")
        a = rng.choice(self.paired, n // 2)
        g = self.group[a]
        offset = (a - self.group_start[g] + rng.integers(1, self.group_size[g])) % self.group_size[g]
        b = self.group_start[g] + offset  # another point of a's track
        c = rng.integers(0, self.points.size, n - n // 2)
        e = self.ev[c]
        d = self.ev_start[e] + rng.integers(0, self.ev_size[e])  # a point of c's event
        other = self.key[c] != self.key[d]
        i = np.concatenate([a, c[other]])
        j = np.concatenate([b, d[other]])
        same = np.concatenate([np.ones(a.size, bool), np.zeros(int(other.sum()), bool)])
        return self.points[i], self.points[j], same


def fit_linear_map(x: np.ndarray, sampler: PairSampler, seed: int = 0, steps: int = MAP_STEPS) -> torch.nn.Linear:
    """W: d -> MAP_DIM (no bias) minimizing the pairwise hinge loss: mean relu(|Wx_i - Wx_j| - PULL) over same-track
    pairs plus mean relu(PUSH - |Wx_i - Wx_j|) over other pairs."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(x)
    linear = torch.nn.Linear(x.shape[1], MAP_DIM, bias=False)
    optimizer = torch.optim.Adam(linear.parameters(), lr=MAP_LR)
    for _ in range(steps):
        i, j, same = sampler.sample(rng, MAP_PAIRS)
        d = linear(xt[i] - xt[j]).norm(dim=-1)  # W x_i - W x_j = W (x_i - x_j): one product
        same_t = torch.from_numpy(same)
        loss = torch.relu(d[same_t] - PULL).mean() + (
            torch.relu(PUSH - d[~same_t]).mean() if (~same_t).any() else d.new_zeros(())
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return linear.eval()


def pair_auc(x: np.ndarray, sampler: PairSampler, seed: int = 1, pairs: int = AUC_PAIRS) -> float:
    """The ROC AUC of -distance separating same-track pairs from other pairs (sampled pairs of one event)."""
    metrics = require("sklearn.metrics", "study", "fm4npp study probe")
    i, j, same = sampler.sample(np.random.default_rng(seed), pairs)
    if same.all():
        raise TrainError("no two tracks share an event in the probed split: the pair AUC needs different-track pairs")
    distance = np.linalg.norm(x[i] - x[j], axis=1)
    return float(metrics.roc_auc_score(same, -distance))


def dbscan_ari(mapped: np.ndarray, points: Points) -> dict:
    """DBSCAN per event on the mapped spacepoints; the pooled ARI (and event mean, efficiency, purity) of
    tracking_metrics, with the truth track and noise labels."""
    cluster = require("sklearn.cluster", "study", "fm4npp study probe")
    order = np.argsort(points.event, kind="stable")
    event = points.event[order]
    starts = np.flatnonzero(np.r_[True, event[1:] != event[:-1], True])
    predicted = np.empty(event.size, np.int64)
    for a, b in zip(starts[:-1], starts[1:], strict=True):  # one call per event
        predicted[a:b] = cluster.DBSCAN(eps=EPS, min_samples=MIN_SAMPLES).fit_predict(mapped[order[a:b]])
    truth = points.labels[TRACKING.column][order]
    noise = points.labels[NOISE.column][order]
    m = tracking_metrics(event, truth, noise, predicted)
    return {k: m[k] for k in ("ari", "ari_event_mean", "efficiency", "purity")}


def track_probe(
    train: Points, test: Points, kind: str, seed: int = 0, steps: int = MAP_STEPS
) -> tuple[dict, torch.nn.Linear, list]:
    """The tracking figures of one feature kind, the trained map and the standardized test features."""
    x_train, x_test = standardize(train.features[kind], test.features[kind])
    started = time.monotonic()
    linear = fit_linear_map(x_train, PairSampler(train.labels[TRACKING.column], train.event), seed, steps)
    with torch.no_grad():
        mapped = linear(torch.from_numpy(x_test)).numpy()
    sampler = PairSampler(test.labels[TRACKING.column], test.event)
    result = {
        "pair_auc_before_map": pair_auc(x_test, sampler),
        "pair_auc": pair_auc(mapped, sampler),
        **{f"dbscan_{k}": v for k, v in dbscan_ari(mapped, test).items()},
        "map_seconds": round(time.monotonic() - started, 2),
    }
    return result, linear, [x_test, mapped]


# ------------------------------------------------------------------------------------------------------------
# The study
# ------------------------------------------------------------------------------------------------------------


def pca_figure(x: np.ndarray, mapped: np.ndarray, points: Points, path: Path, title: str) -> Path:
    """Figure 8: one event of the split (the one with most tracks of 5+ spacepoints among its first 50), the FM
    features' PCA (left) and the mapped features' PCA (right); the 10 largest tracks in colors, the rest grey."""
    decomposition = require("sklearn.decomposition", "study", "fm4npp study probe")
    plt = pyplot()
    track = points.labels[TRACKING.column]

    def tracks_of(e):
        ids, counts = np.unique(track[(points.event == e) & (track >= 0)], return_counts=True)
        return ids[np.argsort(-counts)][counts[np.argsort(-counts)] >= 5]

    event = max(range(min(50, len(points.keys))), key=lambda e: len(tracks_of(e)))
    here = points.event == event
    shown = tracks_of(event)[:10]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
    for ax, values, name in ((axes[0], x, "FM features"), (axes[1], mapped, "after the linear map")):
        xy = decomposition.PCA(n_components=2).fit_transform(values[here])
        t = track[here]
        rest = ~np.isin(t, shown)
        ax.scatter(*xy[rest].T, s=4, color="0.8", label="other tracks, noise")
        for k, tid in enumerate(shown):
            ax.scatter(*xy[t == tid].T, s=8, color=f"C{k}", label=f"track {tid}")
        ax.set_title(f"{name} (PCA)")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    axes[1].legend(frameon=False, fontsize=7, markerscale=2, loc="best")
    run, number = points.keys[event]
    fig.suptitle(f"{title}: run {run}, event {number}")
    return save_figure(fig, path)


def _headline(figures: dict) -> str:
    if "macro_recall" in figures:
        return f"macro recall {figures['macro_recall']:.4f}"
    return f"pair AUC {figures['pair_auc']:.4f}, DBSCAN ARI {figures['dbscan_ari']:.4f}"


def markdown(result: dict) -> str:
    header = [
        "features",
        "dimensions",
        "PID macro recall",
        "noise macro recall",
        "pair AUC (unmapped)",
        "pair AUC (linear map)",
        "DBSCAN ARI",
    ]

    def cell(kind, task, key):
        value = result["probes"][kind].get(task, {}).get(key)
        return None if value is None else f"{value:.4f}"

    body = [
        [
            f"{kind} ({result['names'][kind]})",
            result["dimensions"][kind],
            cell(kind, PID.name, "macro_recall"),
            cell(kind, NOISE.name, "macro_recall"),
            cell(kind, TRACKING.name, "pair_auc_before_map"),
            cell(kind, TRACKING.name, "pair_auc"),
            cell(kind, TRACKING.name, "dbscan_ari"),
        ]
        for kind in result["probes"]
    ]
    title = (
        f"## Linear probe: fitted on the first {result['train_events']:,} labeled train events "
        f"({result['train_spacepoints']:,} spacepoints), scored on {result['split']} "
        f"({result['eval_events']:,} events, {result['eval_spacepoints']:,} spacepoints)\n\n"
    )
    return title + markdown_table(header, body)


def probe(data: str | Path, backbone_run: str | Path, out: str | Path, options: ProbeOptions, echo=print) -> dict:
    """The probe (module docstring); its figures, with the outputs' paths and the markdown table."""
    data, out, o = Path(data), Path(out), options
    tasks = list(TASKS) if o.tasks is None else o.tasks
    check_study_folder(out, data)
    require("sklearn", "study", "fm4npp study probe")
    dev = device_of(o.device, Dist())
    backbone = Backbone.from_run(backbone_run).to(dev).eval()
    echo(f"probe: features of the first {o.events} train events and of {o.split} with {backbone_run} ...")
    train = collect(data, "train", backbone, o.events, o.batch_tokens, dev, o.features)
    test = collect(data, o.split, backbone, o.eval_events, o.batch_tokens, dev, o.features)
    probes: dict[str, dict] = {FM: {}, RAW: {}}
    kept = {}
    for kind in (FM, RAW):
        for task in tasks:
            t = TASKS[task]
            started = time.monotonic()
            if t.is_classification:
                probes[kind][task] = linear_classifier(
                    train.features[kind],
                    train.labels[t.column],
                    test.features[kind],
                    test.labels[t.column],
                    t.classes,
                    f"{task} ({kind})",
                    o.max_iter,
                )
            else:
                probes[kind][task], _, kept[kind] = track_probe(train, test, kind, o.seed, o.map_steps)
            echo(f"probe: {task} on the {kind}: {_headline(probes[kind][task])} ({time.monotonic() - started:.1f} s)")
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "backbone": str(backbone_run),
        "data": str(data),
        "split": o.split,
        "train_events": len(train.keys),
        "train_spacepoints": int(train.event.size),
        "eval_events": len(test.keys),
        "eval_spacepoints": int(test.event.size),
        "names": {
            FM: f"{o.features}: the last block and the mean of the blocks",
            RAW: "NeRF encoding of eta', phi', r' and E'",
        },
        "dimensions": {kind: int(train.features[kind].shape[1]) for kind in (FM, RAW)},
        "settings": {
            "max_iter": o.max_iter,
            "map_dim": MAP_DIM,
            "pull": PULL,
            "push": PUSH,
            "eps": EPS,
            "min_samples": MIN_SAMPLES,
            "map_steps": o.map_steps,
            "map_pairs": MAP_PAIRS,
            "seed": o.seed,
        },
        "probes": probes,
    }
    text = markdown(result)
    paths = {"json": str(out / "probe.json"), "markdown": str(write_text(out / "probe.md", text)), "plot": None}
    if FM in kept:
        paths["plot"] = str(pca_figure(*kept[FM], test, out / "probe.png", f"frozen {Path(backbone_run).name}"))
    write_json(out / "probe.json", {**result, "outputs": paths})
    return {**result, **paths, "table": text}


__all__ = ["PairSampler", "ProbeOptions", "collect", "fit_linear_map", "linear_classifier", "pair_auc", "probe"]
