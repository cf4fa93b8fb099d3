"""Fidelity of a simulation to the TPCpp-10M release: `fm4npp-data stats PATHS --compare release --out DIR`.

The release publishes few numbers about its events (fm4npp_data.geometry, "Published event statistics"; docs/physics.md
§12a): the mean TPC spacepoints per event and the noise fraction of its labeled train split, and in the paper's text
the ranges of spacepoints and truth tracks per event. This module sets the same quantities of any input with truth
(ROOT files written by `fm4npp-data simulate`, folders of them, shards, sets, datasets, or the labeled train split of
a dataset repository) beside them, in the three layers of fm4npp_data.plots.events:

- inputs: `read_fidelity` reads through the project's readers (`events.read_input`, `dataset.split_table`), at most
  `events.STATS_MAX_EVENTS` events of each input;
- arrays: `fidelity_of` reduces an event table to a `Fidelity` (per-event counts and spacepoint fractions,
  vectorized); `fidelity_rows` and `markdown_table` make the table (ours, the release's, ours / release);
- figures: `fidelity_figure` draws it; `write_fidelity` writes fidelity.png and fidelity.md.

Counts are of the events the input holds: an event without any tracker cluster and without truth particles has no
row in the evaluator's ntuples, and is not counted among the empty events.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from .. import geometry as g
from ..errors import DisplayError
from ..files import partial_path
from ..integrity import is_repository
from ..labels import PID_CLASSES
from . import events as ev

#: Columns read for the comparison (spacepoints are counted on `energy`).
FIDELITY_COLUMNS = ["run", "event", "energy", "track_id", "pid", "noise"]
#: The table counts the events with more spacepoints than this.
LARGE_EVENT = 5000
#: What the table's release column says where the release gives no number.
NOT_PUBLISHED = "not published"
NO_TRUTH = "no truth"
FIGSIZE = (17.0, 5.0)
#: The histograms' y axes reach this many times their highest bar, so that the legend sits above the bars.
LEGEND_ROOM = 1.6


@dataclass(frozen=True)
class Fidelity:
    """What `fidelity_of` measures of an input.

    `spacepoints`: TPC spacepoints of every event; `tracks`: distinct truth particles with >= 1 TPC spacepoint of
    every event with truth track ids (None without); `pid_fractions`: the fraction of the labeled spacepoints in each
    of the PID_CLASSES (None without labels); `noise_fraction`: the fraction labeled noise (None without labels)."""

    spacepoints: np.ndarray
    tracks: np.ndarray | None
    pid_fractions: np.ndarray | None
    noise_fraction: float | None
    what: str = ""

    @property
    def events(self) -> int:
        return int(self.spacepoints.shape[0])

    @property
    def empty(self) -> int:
        """Events without a TPC spacepoint."""
        return int(np.count_nonzero(self.spacepoints == 0))

    @property
    def large(self) -> int:
        """Events with more than LARGE_EVENT spacepoints."""
        return int(np.count_nonzero(self.spacepoints > LARGE_EVENT))

    def percentiles(self, q: Iterable[float] = (5, 25, 50, 75, 95, 99)) -> dict[float, float]:
        """Percentiles of the spacepoints per event (linear interpolation), by percent."""
        q = list(q)
        return dict(zip(q, np.percentile(self.spacepoints, q).tolist(), strict=True)) if self.events else {}


@dataclass(frozen=True)
class Row:
    """One row of the table: a quantity, our value, the release's (None: not published) and how to write them.

    `kind` is "count" (an integer), "mean" (one decimal) or "fraction" (in percent); `ours` None means the input has
    no truth for it. `release_text` replaces the release's number in the table where it is the paper's words."""

    quantity: str
    ours: float | None
    release: float | None
    kind: str
    release_text: str = ""

    @property
    def ratio(self) -> float | None:
        """ours / release, where both are numbers (and the release's is not 0)."""
        if self.ours is None or self.release is None or self.release == 0:
            return None
        return self.ours / self.release


# ------------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------------


def read_fidelity(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Fidelity:
    """The `Fidelity` of ROOT files (any layout), folders of them, shards, sets or datasets, or of the labeled train
    split of one dataset repository (the split the release's figures describe). At most STATS_MAX_EVENTS events of
    each input (of the split) are read, the first ones. DisplayError where there are no events."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and is_repository(paths[0]):
        from .dataset import split_table

        table = split_table(paths[0], "labeled", "train", FIDELITY_COLUMNS, ev.STATS_MAX_EVENTS)
        if not table.num_rows:
            raise DisplayError(
                f"{paths[0]}: the repository's labeled train split has no events; build it from inputs with truth"
            )
        capped = " (the first)" if table.num_rows == ev.STATS_MAX_EVENTS else ""
        return fidelity_of(table, f"{paths[0].name}, labeled/train, {table.num_rows:,} events{capped}")
    sources = ev.input_sources(paths)
    tables = [ev.read_input(path, FIDELITY_COLUMNS, limit=ev.STATS_MAX_EVENTS) for path in sources]
    rows = sum(t.num_rows for t in tables)
    if rows == 0:
        raise DisplayError(f"no events in {', '.join(map(str, sources))}")
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")
    kind = "file(s)" if all(ev.is_root(s) for s in sources) else "input(s)"
    capped = " (the first of each input)" if any(t.num_rows == ev.STATS_MAX_EVENTS for t in tables) else ""
    return fidelity_of(table, f"{len(sources)} {kind}, {rows:,} events{capped}")


# ------------------------------------------------------------------------------------------------------------
# Arrays and the table (pure)
# ------------------------------------------------------------------------------------------------------------


def fidelity_of(table: pa.Table, what: str = "") -> Fidelity:
    """The per-event counts and spacepoint fractions of an event table in the data contract (vectorized).

    PID and noise fractions are over the spacepoints of the events that carry labels (an unmatched spacepoint is
    class "other" and not noise, as labeled); tracks are counted in the events that carry truth track ids."""
    spacepoints = ev.spacepoints_per_event(table)
    tracks = ev.tracks_per_event(table)
    labeled = np.repeat(ev._present(table, "pid") & ev._present(table, "noise"), spacepoints)
    pid_fractions, noise_fraction = None, None
    if labeled.any():
        pid = ev.spacepoint_values(table, "pid", 0, np.int8)[labeled].astype(np.int64)
        noise = ev.spacepoint_values(table, "noise", False, bool)[labeled]
        pid_fractions = np.bincount(pid, minlength=len(PID_CLASSES)) / pid.shape[0]
        noise_fraction = float(np.count_nonzero(noise) / noise.shape[0])
    return Fidelity(spacepoints, tracks, pid_fractions, noise_fraction, what)


def fidelity_rows(fid: Fidelity) -> list[Row]:
    """The table: our figures beside the release's published ones (fm4npp_data.geometry, docs/physics.md §12a).

    The release's maxima are the paper's words ("tens of thousands", "nearly one hundred") as numbers: their ratios
    say whether a simulation reaches the same order of magnitude, no more."""
    sp = fid.spacepoints
    n = fid.events
    tracks = fid.tracks if fid.tracks is not None and fid.tracks.size else None
    hi_sp = g.RELEASE_SPACEPOINTS_RANGE[1]
    lo_tr, hi_tr = g.RELEASE_TRACKS_RANGE
    mean = g.RELEASE_SPACEPOINTS_PER_EVENT
    published = f"{mean:.1f} ({g.RELEASE_TRAIN_SPACEPOINTS / 1e6:.2f}M / {g.RELEASE_TRAIN_EVENTS:,} events)"
    rows = [
        Row("mean TPC spacepoints / event", float(sp.mean()) if n else None, mean, "mean", published),
        Row("median TPC spacepoints / event", float(np.median(sp)) if n else None, None, "mean"),
        Row(
            "max TPC spacepoints / event",
            float(sp.max()) if n else None,
            float(hi_sp),
            "count",
            f'~{hi_sp:,} (text: "tens of thousands")',
        ),
        Row(f"events with > {LARGE_EVENT:,} spacepoints", float(fid.large), None, "count"),
        Row("empty events (no TPC spacepoint)", float(fid.empty), None, "count"),
        Row(
            "mean truth tracks / event",
            None if tracks is None else float(tracks.mean()),
            None,
            "mean",
            f"{NOT_PUBLISHED} (text: from under {lo_tr} to nearly {hi_tr})",
        ),
        Row(
            "max truth tracks / event",
            None if tracks is None else float(tracks.max()),
            float(hi_tr),
            "count",
            f'~{hi_tr} (text: "nearly one hundred")',
        ),
        Row("noise fraction of spacepoints", fid.noise_fraction, g.RELEASE_NOISE_FRACTION, "fraction"),
    ]
    for i, name in enumerate(PID_CLASSES):
        ours = None if fid.pid_fractions is None else float(fid.pid_fractions[i])
        rows.append(Row(f"PID class {name}", ours, None, "fraction", f"{NOT_PUBLISHED} (Fig. 11 only)"))
    return rows


def _number(value: float, kind: str) -> str:
    if kind == "fraction":
        return f"{100.0 * value:.1f} %"
    if kind == "count":
        return f"{int(round(value)):,}"
    return f"{value:,.1f}"


def markdown_table(rows: list[Row], what: str = "") -> str:
    """The table in Markdown: quantity, ours, the release's, ours / release (blank where the release has no number
    or the input no truth). `what` describes our input in the header of our column."""
    ours_head = f"ours ({what})" if what else "ours"
    lines = [
        f"| quantity | {ours_head} | TPCpp-10M release (labeled train) | ours / release |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        ours = NO_TRUTH if row.ours is None else _number(row.ours, row.kind)
        number = NOT_PUBLISHED if row.release is None else _number(row.release, row.kind)
        release = row.release_text or number
        ratio = "" if row.ratio is None else f"{row.ratio:.3g}"
        lines.append(f"| {row.quantity} | {ours} | {release} | {ratio} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------
# Figure and files
# ------------------------------------------------------------------------------------------------------------


def fidelity_figure(
    spacepoints: np.ndarray,
    tracks: np.ndarray | None,
    fractions: np.ndarray | None,
    title: str = "Simulation beside the TPCpp-10M release",
) -> Figure:
    """Three panels: spacepoints per event (log x; the release's mean as a line and the text's range shaded),
    truth tracks per event (the text's range shaded), and the PID class and noise fractions (bars: ours; a marker:
    the release's noise fraction, the only one it publishes).

    `fractions` holds the 5 PID class fractions, then the noise fraction (None: no labels). The histograms' bars are
    the `BarContainer` `axes[i].containers[0]`, the fraction bars `axes[2].containers[0]` (heights: `fractions`);
    lines and patches carry labels."""
    sp = np.asarray(spacepoints, dtype=np.int64)
    fig = Figure(figsize=FIGSIZE, dpi=ev.DPI, layout="tight")
    ax_sp, ax_tr, ax_fr = fig.subplots(1, 3)

    lo, hi = g.RELEASE_SPACEPOINTS_RANGE
    nonempty = sp[sp > 0]
    top = max(int(nonempty.max()) if nonempty.size else 1, hi)
    edges = np.unique(np.geomspace(1.0, top * 1.5, 50).astype(np.int64))  # integer edges: counts are integers
    label = f"ours: {sp.size:,} events ({sp.size - nonempty.size:,} empty, not drawn)"
    ax_sp.hist(nonempty, bins=edges, color="tab:blue", alpha=0.8, label=label)
    ax_sp.axvspan(lo, hi, color="tab:red", alpha=0.08, label='release text: "a few hundred to tens of thousands"')
    if sp.size:
        ax_sp.axvline(sp.mean(), color="k", ls="--", lw=1.2, label=f"ours: mean {sp.mean():.0f}")
    release_mean = g.RELEASE_SPACEPOINTS_PER_EVENT
    ax_sp.axvline(release_mean, color="tab:red", lw=1.5, label=f"release: mean {release_mean:.0f}")
    ax_sp.set_xscale("log")
    ax_sp.set_ylim(0.0, ax_sp.get_ylim()[1] * LEGEND_ROOM)
    ax_sp.set_xlabel("TPC spacepoints per event")
    ax_sp.set_ylabel("events")
    ax_sp.legend(fontsize=8)

    lo, hi = g.RELEASE_TRACKS_RANGE
    if tracks is not None:
        tracks = np.asarray(tracks, dtype=np.int64)
        t_top = max(int(tracks.max()) if tracks.size else 0, hi)
        step = max(1, -(-(t_top + 1) // 60))
        edges = np.arange(0, t_top + step + 1, step) - 0.5
        ax_tr.hist(tracks, bins=edges, color="tab:blue", alpha=0.8, label=f"ours: {tracks.size:,} events")
        if tracks.size:
            ax_tr.axvline(tracks.mean(), color="k", ls="--", lw=1.2, label=f"ours: mean {tracks.mean():.1f}")
    else:
        ax_tr.text(0.5, 0.5, ev.NO_TRUTH, transform=ax_tr.transAxes, ha="center")
    ax_tr.axvspan(lo, hi, color="tab:red", alpha=0.08, label='release text: "under ten up to nearly one hundred"')
    ax_tr.set_ylim(0.0, ax_tr.get_ylim()[1] * LEGEND_ROOM)
    ax_tr.set_xlabel("truth tracks per event (particles with TPC spacepoints)")
    ax_tr.set_ylabel("events")
    ax_tr.legend(fontsize=8)

    names = [*PID_CLASSES, "noise"]
    x = np.arange(len(names))
    if fractions is not None:
        fractions = np.asarray(fractions, dtype=np.float64)
        bars = ax_fr.bar(x, fractions, width=0.7, color="tab:blue", alpha=0.8, label="ours")
        ax_fr.bar_label(bars, labels=[f"{100 * f:.1f} %" for f in fractions], fontsize=8)
    else:
        ax_fr.text(0.5, 0.5, ev.NO_TRUTH, transform=ax_fr.transAxes, ha="center")
    noise = g.RELEASE_NOISE_FRACTION
    ax_fr.plot([x[-1] + 0.45], [noise], "D", color="tab:red", ms=8, label=f"release: noise {100 * noise:.1f} %")
    ax_fr.set_xticks(x, names)
    ax_fr.set_ylabel("fraction of the spacepoints")
    ax_fr.set_title("release's PID class fractions: not published as numbers (Fig. 11)", fontsize=9)
    ax_fr.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def write_fidelity(fid: Fidelity, out_dir: str | os.PathLike) -> tuple[Path, Path, str]:
    """fidelity.png and fidelity.md (the Markdown table) of `fid` in out_dir; (png, md, the table)."""
    out = Path(out_dir)
    fractions = None if fid.pid_fractions is None else np.append(fid.pid_fractions, fid.noise_fraction)
    title = f"Beside the TPCpp-10M release ({fid.what})" if fid.what else "Beside the TPCpp-10M release"
    png = ev._save(fidelity_figure(fid.spacepoints, fid.tracks, fractions, title), out / "fidelity.png")
    table = markdown_table(fidelity_rows(fid), fid.what)
    md = out / "fidelity.md"
    tmp = partial_path(md)
    tmp.write_text(table)
    os.replace(tmp, md)
    return png, md, table


__all__ = [
    "Fidelity",
    "Row",
    "fidelity_figure",
    "fidelity_of",
    "fidelity_rows",
    "markdown_table",
    "read_fidelity",
    "write_fidelity",
]
