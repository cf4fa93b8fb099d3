"""Plots of simulated (or converted) sPHENIX TPC data: dE/dx bands, event displays, dataset overview.

The drawing functions are pure over NumPy arrays and write one PNG each; file reading sits at the edges
(`read_tpc_clusters`, `plot_simulation`, `display_event`). Figures are built with `matplotlib.figure.Figure`
and no pyplot state, so they are safe in threads and worker processes and never select or change the
interactive backend of the caller: `Figure.savefig` renders PNG with Agg by itself. Every PNG is written
atomically (a temporary name in the same folder, then `os.replace`) at a fixed size of figsize x DPI pixels.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import uproot
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from . import geometry as g

#: Resolution of every PNG written here; the pixel size is figsize * DPI.
DPI = 110
CLUSTER_TREE = "ntp_cluster"
TRUTH_TREE = "ntp_gtrack"
#: (label, |PDG code|, color) of the species in the energy-loss plot.
SPECIES = (
    ("pions", 211, "tab:blue"),
    ("kaons", 321, "tab:green"),
    ("protons", 2212, "tab:red"),
    ("electrons", 11, "tab:orange"),
)
#: Momentum axis (GeV/c) of the energy-loss plot.
P_RANGE = (0.05, 5.0)
#: Figure sizes (inches); the PNGs are FIGSIZE * DPI pixels (width, height).
FIGSIZE = {
    "energy_vs_momentum": (8.0, 6.0),
    "event_display": (14.0, 6.5),
    "dataset_overview": (16.0, 5.0),
    "serialization": (15.0, 6.5),
}
#: Event displays prefer events below this many TPC clusters (readability).
DISPLAY_MAX_CLUSTERS = 2000
UNMATCHED_COLOR = (0.6, 0.6, 0.6, 1.0)

_DISPLAY_COLUMNS = ("event", "layer", "x", "y", "z", "gtrackID")
_SIMULATION_COLUMNS = ("event", "layer", "x", "y", "z", "adc", "gtrackID", "gflavor", "gpx", "gpy", "gpz")


# ------------------------------------------------------------------------------------------------------------
# I/O
# ------------------------------------------------------------------------------------------------------------


def _as_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError("no input files given")
    return out


def _open_tree(path: Path, tree: str):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        file = uproot.open(path)
    except Exception as exc:  # uproot raises several types for a file that is not ROOT
        raise ValueError(f"{path}: cannot be read as a ROOT file ({exc})") from exc
    if tree not in file:
        keys = ", ".join(file.keys(cycle=False)) or "none"
        file.close()
        raise ValueError(f"{path}: has no TTree {tree!r} (keys: {keys})")
    return file, file[tree]


def read_tpc_clusters(
    paths: str | os.PathLike | Iterable[str | os.PathLike], columns: Sequence[str]
) -> dict[str, np.ndarray]:
    """The given `ntp_cluster` columns of TPC clusters (layers 7..54) from one or more ROOT files.

    Returns native-endian arrays, one per requested column, concatenated over the files in order, plus
    `file` (int64): the index of each row's file in `paths`. `layer` is read for the selection even when
    it is not requested (it is then not returned).

    Raises FileNotFoundError for a missing file, ValueError (naming the file) for a file that is not ROOT,
    lacks the `ntp_cluster` tree, or lacks a requested branch.
    """
    columns = list(dict.fromkeys(columns))
    if "file" in columns:
        raise ValueError("'file' is added by read_tpc_clusters; do not request it")
    to_read = list(dict.fromkeys([*columns, "layer"]))
    parts: dict[str, list[np.ndarray]] = {c: [] for c in [*columns, "file"]}
    for index, path in enumerate(_as_paths(paths)):
        file, tree = _open_tree(path, CLUSTER_TREE)
        with file:
            missing = [c for c in to_read if c not in tree]
            if missing:
                raise ValueError(f"{path}: TTree {CLUSTER_TREE!r} has no branch {', '.join(map(repr, missing))}")
            arrays = tree.arrays(to_read, library="np")
        layer = arrays["layer"]
        keep = (layer >= g.FIRST_TPC_LAYER) & (layer <= g.LAST_TPC_LAYER)
        for c in columns:
            a = np.asarray(arrays[c])
            parts[c].append(a[keep].astype(a.dtype.newbyteorder("="), copy=False))
        parts["file"].append(np.full(int(keep.sum()), index, dtype=np.int64))
    return {c: np.concatenate(v) for c, v in parts.items()}


def _events_in_file(path: Path, clusters_event: np.ndarray | None = None) -> int:
    """Number of events in a file: one more than the largest event number in its cluster and truth trees."""
    file, tree = _open_tree(path, CLUSTER_TREE)
    with file:
        last = -1
        trees = [tree, file[TRUTH_TREE]] if TRUTH_TREE in file else [tree]
        for t in trees:
            if "event" in t and t.num_entries:
                last = max(last, int(np.nanmax(t["event"].array(library="np"))))
    if clusters_event is not None and clusters_event.size:
        last = max(last, int(np.nanmax(clusters_event)))
    return last + 1


def _save(fig: Figure, out_png: str | os.PathLike) -> Path:
    """Write `fig` as PNG at DPI, atomically; returns the path."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


# ------------------------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------------------------


def binned_median(
    x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(geometric bin centres, medians of y) over the bins of x (edges > 0) with >= `min_count` entries."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    idx = np.searchsorted(edges, x, side="right") - 1
    ok = (idx >= 0) & (idx < len(edges) - 1) & np.isfinite(y)
    centres, medians = [], []
    for b in np.unique(idx[ok]):
        sel = y[ok & (idx == b)]
        if sel.size >= min_count:
            centres.append(np.sqrt(edges[b] * edges[b + 1]))
            medians.append(np.median(sel))
    return np.asarray(centres, dtype=np.float64), np.asarray(medians, dtype=np.float64)


def track_colors(key: np.ndarray) -> np.ndarray:
    """RGBA (n, 4) per point: distinct tab20 colors per value of `key` (cycled), grey where key is NaN."""
    key = np.asarray(key, dtype=np.float64)
    out = np.tile(np.asarray(UNMATCHED_COLOR), (key.shape[0], 1))
    ok = np.isfinite(key)
    if ok.any():
        _, rank = np.unique(key[ok], return_inverse=True)
        palette = np.asarray(colormaps["tab20"].colors)
        # step 7 (coprime to 20) so that neighbouring ids get dissimilar colors
        out[ok, :3] = palette[(rank * 7) % len(palette)]
    return out


def per_event_counts(
    file: np.ndarray, event: np.ndarray, track: np.ndarray, n_events: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(spacepoints, distinct matched tracks) per event, for files holding n_events[i] events each.

    Events without rows count 0. `track` NaN (unmatched) does not count as a track.
    """
    offsets = np.concatenate([[0], np.cumsum(n_events)]).astype(np.int64)
    file = np.asarray(file, dtype=np.int64)
    event = np.asarray(event).astype(np.int64)
    gev = offsets[file] + event
    n = int(offsets[-1])
    spacepoints = np.bincount(gev, minlength=n)
    track = np.asarray(track, dtype=np.float64)
    ok = np.isfinite(track)
    pairs = np.unique(np.stack([gev[ok].astype(np.float64), track[ok]]), axis=1)
    tracks = np.bincount(pairs[0].astype(np.int64), minlength=n)
    return spacepoints, tracks


# ------------------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------------------


def energy_vs_momentum(
    p: np.ndarray,
    adc: np.ndarray,
    pdg: np.ndarray,
    out_png: str | os.PathLike,
    title: str = "TPC cluster energy vs truth momentum",
    max_points_per_species: int = 30000,
) -> Path:
    """Cluster ADC versus truth momentum per species (pi, K, p, e): faint scatter and binned medians.

    p in GeV/c, adc in ADC counts, pdg the truth PDG code (NaN for unmatched clusters, which are left out).
    Log momentum axis over P_RANGE; the y axis runs to the 99th percentile of the plotted clusters.
    """
    p, adc = np.asarray(p, dtype=np.float64), np.asarray(adc, dtype=np.float64)
    apdg = np.abs(np.asarray(pdg, dtype=np.float64))
    in_range = np.isfinite(p) & np.isfinite(adc) & (p >= P_RANGE[0]) & (p <= P_RANGE[1])
    edges = np.geomspace(P_RANGE[0], P_RANGE[1], 31)

    fig = Figure(figsize=FIGSIZE["energy_vs_momentum"], dpi=DPI, layout="tight")
    ax = fig.add_subplot()
    plotted = np.zeros(p.shape, dtype=bool)
    for label, code, color in SPECIES:
        sel = in_range & (apdg == code)
        plotted |= sel
        idx = np.flatnonzero(sel)
        n = idx.size
        if n > max_points_per_species:  # deterministic thinning of the scatter only; medians use every point
            idx = idx[:: -(-n // max_points_per_species)]
        ax.scatter(p[idx], adc[idx], s=2, color=color, alpha=0.12, linewidths=0, rasterized=True)
        centres, medians = binned_median(p[sel], adc[sel], edges)
        label = f"{label} (|PDG| {code}), {n:,} clusters"
        ax.plot(centres, medians, "-o", color=color, ms=3.5, lw=1.8, label=label)
    ax.set_xscale("log")
    ax.set_xlim(*P_RANGE)
    top = float(np.percentile(adc[plotted], 99)) if plotted.any() else 1.0
    ax.set_ylim(0.0, top * 1.02 if top > 0 else 1.0)
    if plotted.any():
        note = f"y axis cut at the 99th percentile ({top:.0f} ADC)"
        ax.text(0.01, 0.99, note, transform=ax.transAxes, ha="left", va="top", fontsize=8, color="0.3")
    ax.set_xlabel("truth momentum p [GeV/c]")
    ax.set_ylabel("cluster energy [ADC counts]")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if plotted.any():
        ax.legend(
            loc="upper right",
            bbox_to_anchor=(1.0, 0.96),
            fontsize=9,
            title="median per momentum bin",
            title_fontsize=9,
        )
    else:
        ax.text(0.5, 0.5, "no pion, kaon, proton or electron clusters", transform=ax.transAxes, ha="center")
    return _save(fig, out_png)


def event_display(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    color_key: np.ndarray,
    out_png: str | os.PathLike,
    title: str = "TPC clusters of one event",
) -> Path:
    """One event in x-y (with the 48 layer radii and the module boundaries) and r-z; colored by `color_key`.

    x, y, z in cm; color_key is the truth track id (NaN -> grey).
    """
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    r = np.hypot(x, y)
    key = np.asarray(color_key, dtype=np.float64)
    colors = track_colors(key)
    r_max = float(g.MODULE_BOUNDARIES[-1, 1]) + 4.0
    z_max = g.DRIFT_LENGTH + 5.0

    fig = Figure(figsize=FIGSIZE["event_display"], dpi=DPI, layout="tight")
    ax_xy, ax_rz = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.35]})
    for radius in g.LAYER_RADII:
        ax_xy.add_patch(Circle((0.0, 0.0), radius, fill=False, lw=0.4, color="0.75", zorder=0))
    for radius in g.MODULE_BOUNDARIES.ravel():
        ax_xy.add_patch(Circle((0.0, 0.0), radius, fill=False, lw=0.9, color="0.45", zorder=0))
        ax_rz.axhline(radius, lw=0.9, color="0.45", zorder=0)
    ax_rz.axvline(0.0, lw=0.6, ls=":", color="0.45", zorder=0)  # central membrane
    ax_xy.scatter(x, y, s=3, c=colors, linewidths=0, zorder=2)
    ax_rz.scatter(z, r, s=3, c=colors, linewidths=0, zorder=2)
    ax_xy.set_aspect("equal")
    ax_xy.set_xlim(-r_max, r_max)
    ax_xy.set_ylim(-r_max, r_max)
    ax_xy.set_xlabel("x [cm]")
    ax_xy.set_ylabel("y [cm]")
    ax_xy.set_title("x-y (grey circles: layer radii, dark: module boundaries)", fontsize=10)
    ax_rz.set_xlim(-z_max, z_max)
    r_min = min(g.GAS_R_MIN - 2.0, float(r.min()) - 2.0) if r.size else g.GAS_R_MIN - 2.0
    ax_rz.set_ylim(max(r_min, 0.0), r_max)
    ax_rz.set_xlabel("z [cm]")
    ax_rz.set_ylabel("r = hypot(x, y) [cm]")
    ax_rz.set_title("r-z (lines: module boundaries)", fontsize=10)
    n_tracks = np.unique(key[np.isfinite(key)]).size
    n_unmatched = int(np.sum(~np.isfinite(key)))
    fig.suptitle(f"{title}\n{x.size:,} clusters, {n_tracks:,} truth tracks, {n_unmatched:,} unmatched (grey)")
    return _save(fig, out_png)


def serialization_display(
    x: np.ndarray,
    y: np.ndarray,
    order: np.ndarray,
    box: np.ndarray,
    knn: np.ndarray,
    out_png: str | os.PathLike,
    title: str = "Serialization of one event",
    n_queries: int = 12,
) -> Path:
    """A prepared event: the hierarchical raster scan (points colored by their position in `order`, the path joining
    them, r-bin boundaries) and k-next-nearest-neighbour targets (arrows from a few query spacepoints)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    order = np.asarray(order, np.int64)
    knn = np.asarray(knn, np.int64).reshape(x.shape[0], -1)
    position = np.empty(x.shape[0], np.float64)
    position[order] = np.arange(order.shape[0])
    r_max = float(g.MODULE_BOUNDARIES[-1, 1]) + 4.0

    fig = Figure(figsize=FIGSIZE["serialization"], dpi=DPI, layout="tight")
    ax_seq, ax_knn = fig.subplots(1, 2)
    for ax in (ax_seq, ax_knn):
        for radius in g.MODULE_BOUNDARIES.ravel():
            ax.add_patch(Circle((0.0, 0.0), radius, fill=False, lw=0.8, color="0.6", zorder=0))
        ax.set_aspect("equal")
        ax.set_xlim(-r_max, r_max)
        ax.set_ylim(-r_max, r_max)
        ax.set_xlabel("x [cm]")
        ax.set_ylabel("y [cm]")
    ax_seq.plot(x[order], y[order], lw=0.25, color="0.3", alpha=0.5, zorder=1)
    points = ax_seq.scatter(x, y, s=4, c=position, cmap="viridis", linewidths=0, zorder=2)
    fig.colorbar(points, ax=ax_seq, label="position in the sequence", shrink=0.85)
    n_boxes = np.unique(np.asarray(box)).size
    ax_seq.set_title(f"hierarchical raster scan: {n_boxes} occupied boxes, visited inside out", fontsize=10)

    ax_knn.scatter(x, y, s=2, color="0.7", linewidths=0, zorder=1)
    rng = np.random.default_rng(0)
    queries = rng.choice(x.shape[0], size=min(n_queries, x.shape[0]), replace=False) if x.shape[0] else []
    for i in queries:
        targets = knn[i][knn[i] >= 0]
        for j in targets:
            ax_knn.annotate("", xy=(x[j], y[j]), xytext=(x[i], y[i]),
                            arrowprops={"arrowstyle": "->", "lw": 0.6, "color": "tab:red"})  # fmt: skip
        ax_knn.scatter([x[i]], [y[i]], s=18, color="tab:blue", zorder=3)
    ax_knn.set_title(
        f"k-next-nearest-neighbour targets (k = {knn.shape[1]}) of {len(queries)} spacepoints", fontsize=10
    )
    fig.suptitle(f"{title}\n{x.size:,} spacepoints")
    return _save(fig, out_png)


def dataset_overview(
    per_event_spacepoints: np.ndarray,
    per_event_tracks: np.ndarray,
    adc: np.ndarray,
    out_png: str | os.PathLike,
    title: str = "Dataset overview (TPC layers 7-54)",
) -> Path:
    """Histograms of spacepoints per event, tracks per event and cluster ADC (mean/std vs the release's)."""
    sp = np.asarray(per_event_spacepoints, dtype=np.float64)
    tr = np.asarray(per_event_tracks, dtype=np.float64)
    adc = np.asarray(adc, dtype=np.float64)
    adc = adc[np.isfinite(adc)]

    fig = Figure(figsize=FIGSIZE["dataset_overview"], dpi=DPI, layout="tight")
    axes = fig.subplots(1, 3)
    counts = (
        (axes[0], sp, "TPC spacepoints per event"),
        (axes[1], tr, "truth tracks per event (distinct gtrackID, incl. 1-cluster deltas)"),
    )
    for ax, values, what in counts:
        top = int(values.max()) if values.size else 0
        step = max(1, -(-(top + 1) // 60))  # integer-aligned bins: counts are integers
        ax.hist(values, bins=np.arange(0, top + step + 1, step) - 0.5, color="tab:blue", alpha=0.8)
        if values.size:
            label = f"{values.size:,} events\nmean {values.mean():.1f}, median {np.median(values):.0f}"
            ax.axvline(values.mean(), color="k", ls="--", lw=1, label=label)
            ax.legend(fontsize=9)
        ax.set_xlabel(what)
        ax.set_ylabel("events")

    ax = axes[2]
    top = float(adc.max()) if adc.size else 1.0
    ax.hist(adc, bins=100, range=(0.0, max(top, 1.0)), color="tab:purple", alpha=0.8)
    if adc.size:
        ax.set_yscale("log")
        label = f"this data: mean {adc.mean():.0f}, std {adc.std():.0f}"
        ax.axvline(adc.mean(), color="k", ls="--", lw=1, label=label)
    ax.axvline(
        g.ENERGY_MEAN,
        color="tab:red",
        ls=":",
        lw=1.5,
        label=f"TPCpp-10M release: mean {g.ENERGY_MEAN:.0f}, std {g.ENERGY_STD:.0f}",
    )
    ax.legend(fontsize=9)
    ax.set_xlabel("cluster energy [ADC counts]")
    ax.set_ylabel(f"clusters ({adc.size:,} in all)")
    fig.suptitle(title)
    return _save(fig, out_png)


# ------------------------------------------------------------------------------------------------------------
# From files
# ------------------------------------------------------------------------------------------------------------


def _pick_display_event(event: np.ndarray) -> int:
    """The event with the most clusters below DISPLAY_MAX_CLUSTERS (else the one with the fewest above)."""
    counts = np.bincount(np.asarray(event).astype(np.int64))
    small = np.flatnonzero((counts > 0) & (counts < DISPLAY_MAX_CLUSTERS))
    if small.size:
        return int(small[np.argmax(counts[small])])
    return int(np.flatnonzero(counts == counts[counts > 0].min())[0])


def plot_simulation(paths: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """energy_vs_momentum.png, event_display.png and overview.png of the given ROOT files, in out_dir."""
    paths = _as_paths(paths)
    out = Path(out_dir)
    d = read_tpc_clusters(paths, _SIMULATION_COLUMNS)
    if d["event"].size == 0:
        raise ValueError(f"no TPC clusters (layers 7-54) in {', '.join(map(str, paths))}")
    n_events = [_events_in_file(path, d["event"][d["file"] == i]) for i, path in enumerate(paths)]
    px, py, pz = (d[c].astype(np.float64) for c in ("gpx", "gpy", "gpz"))
    p = np.sqrt(px * px + py * py + pz * pz)
    what = f"{len(paths)} file(s), {sum(n_events):,} events"
    title = f"Cluster energy vs momentum ({what})"
    written = [energy_vs_momentum(p, d["adc"], d["gflavor"], out / "energy_vs_momentum.png", title=title)]

    first = d["file"] == 0
    if not first.any():  # the first file has no TPC clusters: display from the first file that has
        first = d["file"] == d["file"].min()
    ev = _pick_display_event(d["event"][first])
    sel = first & (d["event"] == ev)
    name = paths[int(d["file"][sel][0])].name
    title = f"{name}, event {ev}"
    display = event_display(
        d["x"][sel], d["y"][sel], d["z"][sel], d["gtrackID"][sel], out / "event_display.png", title=title
    )
    written.append(display)

    spacepoints, tracks = per_event_counts(d["file"], d["event"], d["gtrackID"], n_events)
    overview = dataset_overview(spacepoints, tracks, d["adc"], out / "overview.png", title=f"Overview ({what})")
    written.append(overview)
    return written


def _parquet_event(path: Path, event: int) -> dict:
    """The row of `event` from a shard, or from the shards of a converted dataset (first match)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shards = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
    shards = [s for s in shards if "rejects" not in s.parts]
    for shard in shards:
        table = pq.read_table(shard, filters=[("event", "==", event)])
        if table.num_rows:
            return table.slice(0, 1).to_pylist()[0] | {"_shard": shard.name}
    events = sorted(
        {int(v) for s in shards for v in pc.unique(pq.read_table(s, columns=["event"])["event"]).to_pylist()}
    )
    shown = ", ".join(map(str, events[:10])) + (", ..." if len(events) > 10 else "")
    raise ValueError(f"{path}: no event {event}; events present: {shown or 'none'}")


def display_serialization(path: str | os.PathLike, event: int, out_png: str | os.PathLike) -> Path | None:
    """The serialization display of one prepared event of a shard or dataset; None if it is not prepared."""
    row = _parquet_event(Path(path), event)
    if row.get("order") is None:
        return None
    title = f"{row['_shard']}, run {row['run']}, event {event}"
    return serialization_display(row["x"], row["y"], row["order"], row["box"], row["knn"], out_png, title=title)


def display_event(path: str | os.PathLike, event: int, out_png: str | os.PathLike) -> Path:
    """Event display of one event of a ROOT file, a Parquet shard or a converted dataset; ValueError (file, valid
    events) if the event is absent."""
    path = Path(path)
    if path.suffix == ".parquet" or path.is_dir():
        row = _parquet_event(path, event)
        key = np.array([t if t >= 0 else np.nan for t in row.get("track_id", [np.nan] * len(row["x"]))], float)
        title = f"{row['_shard']}, run {row['run']}, event {event}"
        return event_display(row["x"], row["y"], row["z"], key, out_png, title=title)
    d = read_tpc_clusters(path, _DISPLAY_COLUMNS)
    sel = d["event"] == event
    if not sel.any():
        n = _events_in_file(path, d["event"])
        valid = f"valid events are 0..{n - 1}" if n > 0 else "the file holds no events"
        if 0 <= event < n:
            with_clusters = np.unique(d["event"].astype(np.int64))
            valid += f" ({with_clusters.size} of them with TPC clusters)"
        raise ValueError(f"{path}: event {event} has no TPC clusters (layers 7-54); {valid}")
    title = f"{path.name}, event {event}"
    return event_display(d["x"][sel], d["y"][sel], d["z"][sel], d["gtrackID"][sel], out_png, title=title)
