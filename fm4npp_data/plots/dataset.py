"""Figures of a dataset repository, per split: `fm4npp-data stats REPO --out DIR`.

- `event_sizes.png` (the paper's Fig. 10 analogue): spacepoints per event and truth tracks per event, one step
  histogram per split (tracks: the labeled splits);
- `class_ratios.png` (Fig. 11 analogue): the PID class fractions and the noise fraction of the spacepoints of each
  labeled split;
- `energy_vs_momentum.png`: cluster energy versus truth momentum by species, labeled train split;
- `event_labels.png`: one labeled event in x-y three times, coloured by truth track, by PID class and by noise.

Each figure is built by a pure function over arrays that returns a matplotlib `Figure` (tests look at its artists);
`plot_repo` reads the splits (at most `plots.STATS_MAX_EVENTS` events of each) and writes the PNGs atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from .. import geometry as g
from ..errors import DisplayError
from ..labels import PID_CLASSES
from .events import (
    DPI,
    STATS_MAX_EVENTS,
    _save,
    energy_vs_momentum_figure,
    pick_display_row,
    spacepoint_values,
    spacepoints_per_event,
    track_colors,
    tracks_per_event,
    truth_momentum,
)

#: Colours of the PID classes (0 other .. 4 electron) and of noise / signal.
PID_COLORS = ("0.6", "tab:blue", "tab:green", "tab:red", "tab:orange")
NOISE_COLORS = ("tab:blue", "tab:red")  # signal, noise
SPLIT_STYLES = {"train": "tab:blue", "validation": "tab:orange", "test": "tab:green"}


def split_table(repo: Path, config: str, split: str, columns: list[str], limit: int | None = None) -> pa.Table:
    """The first `limit` events of one split of a repository (the shards splits.json lists, in order)."""
    info = json.loads((repo / "splits.json").read_text())["configs"][config][split]
    tables, n = [], 0
    for shard in info["shards"]:
        path = repo / "data" / config / shard["path"]
        have = [c for c in columns if c in pq.read_schema(path).names]
        table = pq.read_table(path, columns=have)
        tables.append(table if limit is None else table.slice(0, limit - n))
        n += tables[-1].num_rows
        if limit is not None and n >= limit:
            break
    return pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.int64()) for c in columns})


def event_sizes_figure(spacepoints: dict[str, np.ndarray], tracks: dict[str, np.ndarray], note: str = "") -> Figure:
    """Step histograms of spacepoints per event (every split) and truth tracks per event (labeled splits).

    `spacepoints` and `tracks` map a split name ("pretrain/train", "labeled/test", ...) to one number per event;
    each histogram is one line (`axes[i].lines` / patches) labeled with its split and event count."""
    fig = Figure(figsize=(14.0, 5.0), dpi=DPI, layout="tight")
    ax_sp, ax_tr = fig.subplots(1, 2)
    for ax, values, what in (
        (ax_sp, spacepoints, "TPC spacepoints per event"),
        (ax_tr, tracks, "truth tracks per event"),
    ):
        top = max((int(v.max()) for v in values.values() if v.size), default=1)
        edges = np.unique(np.geomspace(1, top + 1, 40).astype(int)) if top > 50 else np.arange(0, top + 2)
        for name, v in values.items():
            if not v.size:
                continue
            color = SPLIT_STYLES.get(name.split("/")[-1], "0.3")
            ls = "-" if name.startswith("labeled") else "--"
            ax.hist(
                v,
                bins=edges,
                histtype="step",
                density=True,
                color=color,
                ls=ls,
                lw=1.5,
                label=f"{name}: {v.size:,} events, mean {v.mean():.0f}",
            )
        if top > 50:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(what)
        ax.set_ylabel("fraction of events per bin")
        ax.legend(fontsize=8)
    fig.suptitle(f"Event sizes per split (cf. FM4NPP Fig. 10){note}")
    return fig


def class_ratios_figure(ratios: dict[str, np.ndarray]) -> Figure:
    """Grouped bars: for each labeled split, the fraction of its spacepoints in each PID class and in noise.

    `ratios` maps a split to 6 fractions (the 5 PID classes, then noise); bar heights are exactly those values."""
    fig = Figure(figsize=(10.0, 5.0), dpi=DPI, layout="tight")
    ax = fig.add_subplot()
    names = [*PID_CLASSES, "noise"]
    width = 0.8 / max(len(ratios), 1)
    for i, (split, values) in enumerate(ratios.items()):
        x = np.arange(len(names)) + (i - (len(ratios) - 1) / 2) * width
        ax.bar(x, values, width=width, color=SPLIT_STYLES.get(split, "0.5"), label=split)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("fraction of the split's spacepoints")
    ax.set_title("PID classes and noise per labeled split (cf. FM4NPP Fig. 11)")
    ax.legend()
    return fig


def event_labels_figure(
    x: np.ndarray, y: np.ndarray, track: np.ndarray, pid: np.ndarray, noise: np.ndarray, title: str
) -> Figure:
    """One event in x-y, three times: by truth track (grey: unmatched), by PID class, by noise. The scatters are
    `axes[i].collections[0]`, with the colours of `track_colors`, PID_COLORS and NOISE_COLORS; the third draws the
    spacepoints in the order `argsort(noise, kind="stable")`, noise last."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    pid = np.asarray(pid, np.int64)
    noise = np.asarray(noise, bool)
    fig = Figure(figsize=(18.0, 6.5), dpi=DPI, layout="tight")
    axes = fig.subplots(1, 3)
    r_max = float(g.MODULE_BOUNDARIES[-1, 1]) + 4.0
    colors = [
        track_colors(track),
        np.array([_rgba(PID_COLORS[c]) for c in pid]).reshape(-1, 4),
        np.array([_rgba(NOISE_COLORS[int(n)]) for n in noise]).reshape(-1, 4),
    ]
    titles = ["by truth track (grey: unmatched)", "by PID class", "by noise (red: noise, drawn on top)"]
    on_top = np.argsort(noise, kind="stable")  # the noise panel draws its few noise points last
    orders = [np.arange(x.shape[0]), np.arange(x.shape[0]), on_top]
    for ax, c, t, o in zip(axes, colors, titles, orders, strict=True):
        for radius in g.MODULE_BOUNDARIES.ravel():
            ax.add_patch(Circle((0.0, 0.0), radius, fill=False, lw=0.8, color="0.6", zorder=0))
        ax.scatter(x[o], y[o], s=4, c=c[o], linewidths=0, zorder=2)
        ax.set_aspect("equal")
        ax.set_xlim(-r_max, r_max)
        ax.set_ylim(-r_max, r_max)
        ax.set_xlabel("x [cm]")
        ax.set_ylabel("y [cm]")
        ax.set_title(t, fontsize=10)
    handles = [axes[1].scatter([], [], color=PID_COLORS[i], label=name) for i, name in enumerate(PID_CLASSES)]
    axes[1].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle(f"{title}\n{x.size:,} spacepoints, {int(noise.sum()):,} noise")
    return fig


def _rgba(color: str) -> tuple:
    from matplotlib.colors import to_rgba

    return to_rgba(color)


def plot_repo(repo: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """The four figures of a dataset repository in out_dir (see the module docstring)."""
    repo, out = Path(repo), Path(out_dir)
    splits = json.loads((repo / "splits.json").read_text())["configs"]
    columns = [
        "run",
        "event",
        "x",
        "y",
        "energy",
        "track_id",
        "pid",
        "noise",
        "particle_px",
        "particle_py",
        "particle_pz",
    ]
    tables = {
        f"{config}/{split}": split_table(repo, config, split, columns, STATS_MAX_EVENTS)
        for config, info in splits.items()
        for split, v in info.items()
        if v["events"]
    }
    if not tables:
        raise DisplayError(f"{repo}: the repository holds no events")
    sizes = {name: spacepoints_per_event(t) for name, t in tables.items()}
    tracks = {name: tracks_per_event(t) for name, t in tables.items() if name.startswith("labeled")}
    tracks = {k: v for k, v in tracks.items() if v is not None}
    capped = any(t.num_rows == STATS_MAX_EVENTS for t in tables.values())
    note = f"; the first {STATS_MAX_EVENTS:,} events of larger splits" if capped else ""
    written = [_save(event_sizes_figure(sizes, tracks, note), out / "event_sizes.png")]
    ratios = {}
    for name, t in tables.items():
        if name.startswith("labeled") and "pid" in t.column_names:
            pid = spacepoint_values(t, "pid", 0, np.int8).astype(np.int64)
            noise = spacepoint_values(t, "noise", False, bool)
            n = max(pid.shape[0], 1)
            ratios[name.split("/")[1]] = np.append(np.bincount(pid, minlength=len(PID_CLASSES)) / n, noise.sum() / n)
    if ratios:
        written.append(_save(class_ratios_figure(ratios), out / "class_ratios.png"))
    train = tables.get("labeled/train")
    if train is not None and "particle_px" in train.column_names:
        pid = spacepoint_values(train, "pid", 0, np.int8)
        energy = spacepoint_values(train, "energy", np.nan, np.float64)
        title = f"Cluster energy vs momentum (labeled/train, {train.num_rows:,} events)"
        written.append(
            _save(
                energy_vs_momentum_figure(truth_momentum(train), energy, pid, title=title),
                out / "energy_vs_momentum.png",
            )
        )
    if train is not None and train.num_rows:
        row = pick_display_row(spacepoints_per_event(train))
        event = train.slice(row, 1)
        flat = {c: np.asarray(event[c][0].as_py()) for c in ("x", "y", "track_id", "pid", "noise")}
        title = f"{repo.name}: labeled/train, run {event['run'][0].as_py()}, event {event['event'][0].as_py()}"
        fig = event_labels_figure(flat["x"], flat["y"], flat["track_id"], flat["pid"], flat["noise"], title)
        written.append(_save(fig, out / "event_labels.png"))
    return written


__all__ = ["plot_repo", "split_table"]
