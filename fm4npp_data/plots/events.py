"""Plots of simulated, recorded or converted sPHENIX TPC data: dE/dx bands, event displays, dataset overview.

Three layers, so that what is drawn can be tested apart from how it is read and written:

- inputs: every input is read through the project's layouts, never by branch name: a ROOT file of any layout with
  `fm4npp_data.conversion.ingest.root_events`, a Parquet shard, a converted set or a dataset with
  `fm4npp_data.dataset.read_events`. Both give events in the data contract (one row per event, list columns per
  spacepoint, truth columns only where the input has truth).
- arrays from tables: pure, vectorized functions over those Arrow tables (`spacepoint_values`, `truth_momentum`,
  `tracks_per_event`, ...) and the event lookup `find_event`.
- figures: `*_figure` functions build a `matplotlib.figure.Figure` from NumPy arrays and touch no file; `_save`
  writes one PNG. Figures use no pyplot state, so they are safe in threads and worker processes and never select
  or change the caller's interactive backend (`Figure.savefig` renders PNG with Agg by itself). Every PNG is
  written atomically (a temporary name in the same folder, then `os.replace`) at a fixed size of figsize x DPI.

`display_event`, `display_serialization` and `plot_stats` join the three for the `display` and `stats` commands.
Truth-less inputs (recorded data, the trkr-ntuplizer layout) are drawn without truth colours, and the figures that
need truth are skipped with a reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from .. import geometry as g
from ..conversion.ingest import root_events
from ..dataset import column_names, read_events
from ..errors import DisplayError

#: Resolution of every PNG written here; the pixel size is figsize * DPI.
DPI = 110
#: (label, PID class of the data contract, |PDG code|, color) of the species in the energy-loss plot.
SPECIES = (
    ("pions", 1, 211, "tab:blue"),
    ("kaons", 2, 321, "tab:green"),
    ("protons", 3, 2212, "tab:red"),
    ("electrons", 4, 11, "tab:orange"),
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
#: Color of every spacepoint of an input without truth.
NO_TRUTH_COLOR = (0.12, 0.47, 0.71, 1.0)  # tab:blue
NO_TRUTH = "no truth in this input"

#: Columns read for an event display, for a serialization display, and for the statistics of `plot_stats`.
DISPLAY_COLUMNS = ["run", "event", "x", "y", "z", "track_id"]
SERIALIZATION_COLUMNS = ["run", "event", "x", "y", "order", "box", "knn"]
STATS_COLUMNS = ["run", "event", "energy", "track_id", "pid", "particle_px", "particle_py", "particle_pz"]
_MOMENTUM = ("particle_px", "particle_py", "particle_pz")
#: `stats` draws at most this many events of each input (the first ones), so that a large dataset fits in memory.
STATS_MAX_EVENTS = 50_000
#: How many events (and runs) an error message lists.
_LISTED = 10


# ------------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------------


def is_root(path: Path) -> bool:
    """Whether `path` is read as a ROOT file (any file but a Parquet shard); folders are sets or datasets."""
    return path.is_file() and path.suffix != ".parquet"


def input_sources(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The inputs named by `paths`, each a ROOT file, a Parquet shard, or a set/dataset folder.

    A folder with a manifest.json is a set; else a folder with `*.root` files stands for those files (sorted; not
    recursive); else a folder with sets below it is a dataset. DisplayError for a folder that is none of these."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise DisplayError(f"{path}: no such file or directory")
        if not path.is_dir() or (path / "manifest.json").is_file():
            out.append(path)
            continue
        roots = sorted(p for p in path.glob("*.root") if p.is_file())
        if roots:
            out.extend(roots)
        elif next(path.rglob("manifest.json"), None) is not None:
            out.append(path)
        else:
            raise DisplayError(
                f"{path}: no .root files and no converted set (manifest.json) here or below; name ROOT files, "
                "a folder of ROOT files, a Parquet shard, a converted set or a dataset"
            )
    if not out:
        raise DisplayError("no inputs given")
    return out


def read_input(
    path: Path,
    columns: Sequence[str] | None = None,
    run: int | None = None,
    event: int | None = None,
    limit: int | None = None,
) -> pa.Table:
    """Events of one input in the data contract, through its layout (ROOT) or its shards (Parquet, sets, datasets).

    `columns` selects the columns the input has (truth columns of a truth-less input are simply absent); `run` and
    `event` select events. Errors are the readers' own (ConvertError, LayoutError, DatasetError): they name the file.
    """
    path = Path(path)
    if not is_root(path):
        return read_events(path, columns=None if columns is None else list(columns), run=run, event=event, limit=limit)
    _, table, _ = root_events(path)
    if limit is not None:
        table = table.slice(0, limit)
    if run is not None or event is not None:
        keep = np.ones(table.num_rows, dtype=bool)
        if run is not None:
            keep &= table["run"].to_numpy() == run
        if event is not None:
            keep &= table["event"].to_numpy() == event
        table = table.filter(pa.array(keep))
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table


def _event_ids(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(run, event) of every event of one input."""
    table = read_input(path, ["run", "event"])
    return table["run"].to_numpy(), table["event"].to_numpy()


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
# Arrays from event tables (pure, vectorized)
# ------------------------------------------------------------------------------------------------------------


def _present(table: pa.Table, column: str) -> np.ndarray:
    """Per event: whether `column` exists and is not null (a null row: an input without it, in a mixed table)."""
    if column not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return table[column].is_valid().to_numpy(zero_copy_only=False)


def list_lengths(table: pa.Table, column: str) -> np.ndarray:
    """Entries of a list column per event (int64); 0 for a null row."""
    if column not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int64)
    lengths = pc.fill_null(pc.list_value_length(table[column]), 0)
    return lengths.to_numpy().astype(np.int64)


def spacepoints_per_event(table: pa.Table) -> np.ndarray:
    """TPC spacepoints per event (the length of `x`, or of `energy` where `x` was not read)."""
    return list_lengths(table, "x" if "x" in table.column_names else "energy")


def _flat(table: pa.Table, column: str) -> np.ndarray:
    """The values of a list column of the table, flat over its events in order (null rows contribute nothing)."""
    return pc.list_flatten(table[column]).to_numpy()


def spacepoint_values(table: pa.Table, column: str, fill, dtype) -> np.ndarray:
    """A per-spacepoint list column, flat over the table's spacepoints in order, `fill` in events without it.

    Aligned with every other spacepoint column even in a mixed table, where an input without truth has null rows."""
    n = spacepoints_per_event(table)
    out = np.full(int(n.sum()), fill, dtype=dtype)
    have = _present(table, column)
    if have.any():
        out[np.repeat(have, n)] = _flat(table, column)
    return out


def truth_level(table: pa.Table) -> str:
    """How much truth the events carry: "full" (particle momenta), "labels" (pid), "track" (track_id) or "none"."""
    if all(_present(table, c).any() for c in _MOMENTUM):
        return "full"
    if _present(table, "pid").any():
        return "labels"
    if _present(table, "track_id").any():
        return "track"
    return "none"


def truth_momentum(table: pa.Table) -> np.ndarray:
    """|p| (GeV/c) of each spacepoint's truth particle, flat over the table's spacepoints; NaN where unmatched.

    The particle of a spacepoint is entry `track_id` of its event's particle lists (-1: unmatched). The lookup is
    vectorized: particle offsets per event, plus the track id, index the flat particle columns."""
    n = spacepoints_per_event(table)
    p = np.full(int(n.sum()), np.nan, dtype=np.float64)
    if not (all(c in table.column_names for c in _MOMENTUM) and "track_id" in table.column_names):
        return p
    track = spacepoint_values(table, "track_id", -1, np.int64)
    n_particles = list_lengths(table, "particle_px")
    first_particle = np.concatenate([[0], np.cumsum(n_particles)[:-1]]).astype(np.int64)
    event_of = np.repeat(np.arange(table.num_rows), n)
    matched = (track >= 0) & (track < n_particles[event_of])
    px, py, pz = (_flat(table, c).astype(np.float64) for c in _MOMENTUM)
    index = first_particle[event_of[matched]] + track[matched]
    p[matched] = np.sqrt(px[index] ** 2 + py[index] ** 2 + pz[index] ** 2)
    return p


def tracks_per_event(table: pa.Table) -> np.ndarray | None:
    """Distinct matched truth tracks (track_id >= 0) per event with truth; None when no event has track ids."""
    have = _present(table, "track_id")
    if not have.any():
        return None
    n = spacepoints_per_event(table)
    track = spacepoint_values(table, "track_id", -1, np.int64)
    event_of = np.repeat(np.arange(table.num_rows), n)
    ok = track >= 0
    event_of, track = event_of[ok], track[ok]
    order = np.lexsort((track, event_of))
    e, t = event_of[order], track[order]
    first = np.ones(e.shape[0], dtype=bool)
    first[1:] = (e[1:] != e[:-1]) | (t[1:] != t[:-1])
    return np.bincount(e[first], minlength=table.num_rows)[have]


def pick_display_row(spacepoints: np.ndarray) -> int | None:
    """The event (row) with the most spacepoints below DISPLAY_MAX_CLUSTERS, else the one with the fewest above;
    None when every event is empty. Ties go to the first row."""
    counts = np.asarray(spacepoints, dtype=np.int64)
    small = np.flatnonzero((counts > 0) & (counts < DISPLAY_MAX_CLUSTERS))
    if small.size:
        return int(small[np.argmax(counts[small])])
    some = np.flatnonzero(counts > 0)
    return int(some[np.argmin(counts[some])]) if some.size else None


def _listed(values: np.ndarray) -> str:
    """The first distinct values, sorted, for a message: "0, 1, 2, ..." ("none" when there is none)."""
    distinct = np.unique(values)
    shown = ", ".join(str(int(v)) for v in distinct[:_LISTED])
    return (shown + (", ..." if distinct.size > _LISTED else "")) or "none"


def find_event(runs: np.ndarray, events: np.ndarray, event: int, run: int | None, where: str | Path) -> int:
    """The row of event `event` (of run `run`, when given) among the (run, event) ids of an input.

    Event numbers repeat across runs (files converted together each count from 0), so without `run` an event
    number present in several runs is ambiguous. DisplayError naming `where`, and listing the runs, or a few of
    the events present, when the event is ambiguous or absent."""
    runs, events = np.asarray(runs), np.asarray(events)
    hit = events == event
    if run is not None:
        in_run = runs == run
        if not (hit & in_run).any():
            if hit.any():
                raise DisplayError(
                    f"{where}: no event {event} in run {run}; event {event} is in run(s) {_listed(runs[hit])}"
                )
            if in_run.any():
                raise DisplayError(
                    f"{where}: no event {event} in run {run}; events of run {run}: {_listed(events[in_run])}"
                )
            raise DisplayError(f"{where}: no run {run}; runs present: {_listed(runs)}")
        hit &= in_run
    if not hit.any():
        raise DisplayError(
            f"{where}: no event {event}; events present: {_listed(events)} ({events.size:,} events; "
            f"run(s) {_listed(runs)})"
        )
    rows = np.flatnonzero(hit)
    if rows.size > 1:
        in_runs = np.unique(runs[rows])
        if in_runs.size > 1:
            raise DisplayError(
                f"{where}: event {event} is in {in_runs.size} runs ({_listed(in_runs)}): "
                "pass --run-number to choose one"
            )
        raise DisplayError(
            f"{where}: run {int(in_runs[0])}, event {event} occurs {rows.size} times (the same input converted "
            "more than once?); name one set folder instead"
        )
    return int(rows[0])


# ------------------------------------------------------------------------------------------------------------
# Figures (pure: arrays in, Figure out)
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


def momentum_edges() -> np.ndarray:
    """The 30 logarithmic momentum bins (GeV/c) of the medians in the energy-loss plot."""
    return np.geomspace(P_RANGE[0], P_RANGE[1], 31)


def track_colors(track: np.ndarray) -> np.ndarray:
    """RGBA (n, 4) per point: distinct tab20 colors per track id (cycled), grey where the id is < 0 (unmatched)."""
    track = np.asarray(track, dtype=np.int64)
    out = np.tile(np.asarray(UNMATCHED_COLOR), (track.shape[0], 1))
    ok = track >= 0
    if ok.any():
        _, rank = np.unique(track[ok], return_inverse=True)
        palette = np.asarray(colormaps["tab20"].colors)
        # step 7 (coprime to 20) so that neighbouring ids get dissimilar colors
        out[ok, :3] = palette[(rank * 7) % len(palette)]
    return out


def energy_vs_momentum_figure(
    p: np.ndarray,
    energy: np.ndarray,
    pid: np.ndarray,
    title: str = "TPC cluster energy vs truth momentum",
    max_points_per_species: int = 30000,
) -> Figure:
    """Cluster energy versus truth momentum per species (pi, K, p, e): faint scatter and binned medians.

    p in GeV/c (NaN for unmatched clusters), energy in ADC counts, pid the PID class of the data contract (other
    classes are left out). One scatter (`ax.collections[i]`) and one median line (`ax.lines[i]`) per SPECIES[i],
    even when empty. Log momentum axis over P_RANGE; the y axis runs to the 99th percentile of the plotted clusters.
    """
    p, energy = np.asarray(p, dtype=np.float64), np.asarray(energy, dtype=np.float64)
    pid = np.asarray(pid, dtype=np.int64)
    in_range = np.isfinite(p) & np.isfinite(energy) & (p >= P_RANGE[0]) & (p <= P_RANGE[1])
    edges = momentum_edges()

    fig = Figure(figsize=FIGSIZE["energy_vs_momentum"], dpi=DPI, layout="tight")
    ax = fig.add_subplot()
    plotted = np.zeros(p.shape, dtype=bool)
    for label, cls, code, color in SPECIES:
        sel = in_range & (pid == cls)
        plotted |= sel
        idx = np.flatnonzero(sel)
        n = idx.size
        if n > max_points_per_species:  # deterministic thinning of the scatter only; medians use every point
            idx = idx[:: -(-n // max_points_per_species)]
        ax.scatter(p[idx], energy[idx], s=2, color=color, alpha=0.12, linewidths=0, rasterized=True)
        centres, medians = binned_median(p[sel], energy[sel], edges)
        label = f"{label} (|PDG| {code}), {n:,} clusters"
        ax.plot(centres, medians, "-o", color=color, ms=3.5, lw=1.8, label=label)
    ax.set_xscale("log")
    ax.set_xlim(*P_RANGE)
    top = float(np.percentile(energy[plotted], 99)) if plotted.any() else 1.0
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
    return fig


def event_display_figure(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    track: np.ndarray | None,
    title: str = "TPC clusters of one event",
) -> Figure:
    """One event in x-y (with the 48 layer radii and the module boundaries) and r-z.

    x, y, z in cm. `track` is the truth track id per spacepoint (-1: unmatched, grey), or None for an input without
    truth: then every spacepoint has one color and the title says so. The scatters are `axes[0].collections[0]`
    (x, y) and `axes[1].collections[0]` (z, r)."""
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    r = np.hypot(x, y)
    colors = np.asarray([NO_TRUTH_COLOR]) if track is None else track_colors(track)
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
    if track is None:
        fig.suptitle(f"{title}\n{x.size:,} clusters; {NO_TRUTH} (one color)")
    else:
        track = np.asarray(track, dtype=np.int64)
        n_tracks = np.unique(track[track >= 0]).size
        n_unmatched = int(np.sum(track < 0))
        fig.suptitle(f"{title}\n{x.size:,} clusters, {n_tracks:,} truth tracks, {n_unmatched:,} unmatched (grey)")
    return fig


def serialization_figure(
    x: np.ndarray,
    y: np.ndarray,
    order: np.ndarray,
    box: np.ndarray,
    knn: np.ndarray,
    title: str = "Serialization of one event",
    n_queries: int = 12,
) -> Figure:
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
            ax_knn.annotate(
                "", xy=(x[j], y[j]), xytext=(x[i], y[i]), arrowprops={"arrowstyle": "->", "lw": 0.6, "color": "tab:red"}
            )
        ax_knn.scatter([x[i]], [y[i]], s=18, color="tab:blue", zorder=3)
    ax_knn.set_title(
        f"k-next-nearest-neighbour targets (k = {knn.shape[1]}) of {len(queries)} spacepoints", fontsize=10
    )
    fig.suptitle(f"{title}\n{x.size:,} spacepoints")
    return fig


def _count_histogram(ax, values: np.ndarray, what: str) -> None:
    """Histogram of per-event counts in integer-aligned bins, with the mean marked."""
    top = int(values.max()) if values.size else 0
    step = max(1, -(-(top + 1) // 60))  # integer-aligned bins: counts are integers
    ax.hist(values, bins=np.arange(0, top + step + 1, step) - 0.5, color="tab:blue", alpha=0.8)
    if values.size:
        label = f"{values.size:,} events\nmean {values.mean():.1f}, median {np.median(values):.0f}"
        ax.axvline(values.mean(), color="k", ls="--", lw=1, label=label)
        ax.legend(fontsize=9)
    ax.set_xlabel(what)
    ax.set_ylabel("events")


def dataset_overview_figure(
    per_event_spacepoints: np.ndarray,
    per_event_tracks: np.ndarray | None,
    energy: np.ndarray,
    title: str = "Dataset overview (TPC layers 7-54)",
) -> Figure:
    """Histograms of spacepoints per event, tracks per event (left out when None: no truth) and cluster energy
    (mean marked, and the TPCpp-10M release's mean). The axes are in that order; the bars are each axis' patches."""
    sp = np.asarray(per_event_spacepoints, dtype=np.float64)
    energy = np.asarray(energy, dtype=np.float64)
    energy = energy[np.isfinite(energy)]

    fig = Figure(figsize=FIGSIZE["dataset_overview"], dpi=DPI, layout="tight")
    axes = list(fig.subplots(1, 2 if per_event_tracks is None else 3))
    _count_histogram(axes[0], sp, "TPC spacepoints per event")
    if per_event_tracks is not None:
        tracks = np.asarray(per_event_tracks, dtype=np.float64)
        _count_histogram(axes[1], tracks, "truth tracks per event (distinct track_id, incl. 1-cluster deltas)")

    ax = axes[-1]
    top = float(energy.max()) if energy.size else 1.0
    ax.hist(energy, bins=100, range=(0.0, max(top, 1.0)), color="tab:purple", alpha=0.8)
    if energy.size:
        ax.set_yscale("log")
        label = f"this data: mean {energy.mean():.0f}, std {energy.std():.0f}"
        ax.axvline(energy.mean(), color="k", ls="--", lw=1, label=label)
    ax.axvline(
        g.ENERGY_MEAN,
        color="tab:red",
        ls=":",
        lw=1.5,
        label=f"TPCpp-10M release: mean {g.ENERGY_MEAN:.0f}, std {g.ENERGY_STD:.0f}",
    )
    ax.legend(fontsize=9)
    ax.set_xlabel("cluster energy [ADC counts]")
    ax.set_ylabel(f"clusters ({energy.size:,} in all)")
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------------------
# From files
# ------------------------------------------------------------------------------------------------------------


def load_event(
    path: str | os.PathLike, event: int, run: int | None = None, columns: Sequence[str] = DISPLAY_COLUMNS
) -> pa.Table:
    """One event (a one-row table with the `columns` the input has) of a ROOT file, shard, set or dataset.

    DisplayError when the event is absent, or in several runs and `run` is not given (see `find_event`)."""
    path = Path(path)
    if is_root(path):  # a ROOT file is read whole anyway: read it once
        table = read_input(path)
        row = find_event(table["run"].to_numpy(), table["event"].to_numpy(), event, run, path)
        return table.slice(row, 1).select([c for c in columns if c in table.column_names])
    runs, events = _event_ids(path)
    row = find_event(runs, events, event, run, path)
    present = set(column_names(path))
    table = read_input(path, [c for c in columns if c in present], run=int(runs[row]), event=int(events[row]))
    return table.slice(0, 1)


def _event_name(table: pa.Table) -> str:
    """ "run R, event N" of the first row of an event table."""
    return f"run {table['run'][0].as_py()}, event {table['event'][0].as_py()}"


def _display_row(path: Path, table: pa.Table) -> Figure:
    """The event display of the one-row table `table` of input `path`; DisplayError if it has no spacepoints."""
    if spacepoints_per_event(table)[0] == 0:
        raise DisplayError(f"{path}: {_event_name(table)} has no TPC spacepoints to draw")
    x, y, z = (_flat(table, c) for c in ("x", "y", "z"))
    track = _flat(table, "track_id") if _present(table, "track_id")[0] else None
    return event_display_figure(x, y, z, track, title=f"{path.name}, {_event_name(table)}")


def display_event(path: str | os.PathLike, event: int, out_png: str | os.PathLike, run: int | None = None) -> Path:
    """Event display of one event of a ROOT file (any layout), a Parquet shard, a set or a dataset, by truth track
    where the input has truth. DisplayError (naming the file, listing events or runs) if the event is absent or
    ambiguous, or has no spacepoints."""
    path = Path(path)
    return _save(_display_row(path, load_event(path, event, run)), out_png)


def display_serialization(
    path: str | os.PathLike, event: int, out_png: str | os.PathLike, run: int | None = None
) -> Path | None:
    """The serialization display of one prepared event of a shard, set or dataset; None if it is not prepared."""
    path = Path(path)
    table = load_event(path, event, run, SERIALIZATION_COLUMNS)
    if not all(_present(table, c)[0] for c in ("order", "box", "knn")):
        return None
    x, y, order, box = (_flat(table, c) for c in ("x", "y", "order", "box"))
    knn = pc.list_flatten(pc.list_flatten(table["knn"])).to_numpy()
    title = f"{path.name}, {_event_name(table)}"
    return _save(serialization_figure(x, y, order, box, knn, title=title), out_png)


@dataclass
class Stats:
    """What `plot_stats` did: the PNGs written, and one line per figure (or panel) skipped, saying why."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plot_stats(paths: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> Stats:
    """energy_vs_momentum.png, event_display.png and overview.png of ROOT files (any layout), folders of them,
    shards, sets or datasets, in out_dir.

    At most STATS_MAX_EVENTS events of each input are drawn (the first ones; the titles say so). The energy-loss
    plot needs truth momenta and the tracks-per-event histogram truth track ids: without them
    they are skipped (reported in `Stats.skipped`). The display shows, from the first input with spacepoints, the
    event with the most spacepoints below DISPLAY_MAX_CLUSTERS."""
    sources = input_sources(paths)
    out = Path(out_dir)
    tables = [read_input(path, STATS_COLUMNS, limit=STATS_MAX_EVENTS) for path in sources]
    rows = np.array([t.num_rows for t in tables], dtype=np.int64)
    named = ", ".join(map(str, sources))
    if rows.sum() == 0:
        raise DisplayError(f"no events in {named}")
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")
    spacepoints = spacepoints_per_event(table)
    if spacepoints.sum() == 0:
        raise DisplayError(f"no TPC spacepoints in {named}")
    truth = sorted({truth_level(t) for t in tables}, key=["full", "labels", "track", "none"].index)
    kind = "file(s)" if all(is_root(s) for s in sources) else "input(s)"
    capped = " (the first of each input)" if (rows == STATS_MAX_EVENTS).any() else ""
    what = f"{len(sources)} {kind}, {table.num_rows:,} events{capped}"
    stats = Stats()

    if "full" in truth:
        pid = spacepoint_values(table, "pid", 0, np.int8)
        title = f"Cluster energy vs momentum ({what})"
        fig = energy_vs_momentum_figure(truth_momentum(table), _flat(table, "energy"), pid, title=title)
        stats.written.append(_save(fig, out / "energy_vs_momentum.png"))
    else:
        stats.skipped.append(f"energy_vs_momentum.png: no truth momenta in the input (truth: {', '.join(truth)})")

    source_of = np.repeat(np.arange(len(sources)), rows)
    first = int(source_of[np.flatnonzero(spacepoints)[0]])
    in_first = np.flatnonzero(source_of == first)
    row = int(in_first[pick_display_row(spacepoints[in_first])])
    run, event = table["run"][row].as_py(), table["event"][row].as_py()
    shown = read_input(sources[first], DISPLAY_COLUMNS, run=run, event=event).slice(0, 1)
    stats.written.append(_save(_display_row(sources[first], shown), out / "event_display.png"))

    tracks = tracks_per_event(table)
    if tracks is None:
        stats.skipped.append(
            f"overview.png, its tracks-per-event histogram: no truth track ids in the input (truth: {', '.join(truth)})"
        )
    fig = dataset_overview_figure(spacepoints, tracks, _flat(table, "energy"), title=f"Overview ({what})")
    stats.written.append(_save(fig, out / "overview.png"))
    return stats
