"""The leaderboard: score a predictions file against the truth of a dataset repository's split. Imports no torch.

    result = score("predictions.parquet", "tpc-pp200", split="test")   # the figures of `fm4npp leaderboard --json`
    print(markdown(result, "my model"))                                  # the paper's tables, as markdown
    scored_on("predictions.parquet", "tpc-pp200", "test")               # what it was scored on (the JSON's scored_on)

The predictions file (docs/data-format.md, "Predictions file"): Parquet, one row per event, `run`, `event` and any of
`track` (list of integer labels, -1 unassigned), `pid` (list of classes 0..4) and `noise` (list of bool), one entry
per stored spacepoint in the event's stored order. It must hold every event of the split exactly once and nothing
else. The truth is read from `REPO/data/labeled/{split}-NNNNN-of-MMMMM.parquet`; the two are joined on (run, event).

A predictions file is read in steps, each checked before the next allocates anything large: its footer (the columns
and their types, the rows and the entries each list column declares in each row group), then its run and event
columns (against the split's events), and only then its lists, when the entries they declare fit the split's
spacepoints. So a small file that declares a huge list (a run-length-encoded repeat) is refused before it is
decoded, and memory stays within a small multiple of the truth's size. (The footer is trusted: a file edited so
that its footer understates what its pages hold is decoded before it is refused, as damaged or by the lengths.)

What is scored (fm4npp_data.evaluation.metrics defines each figure):
- `tracking` (with a `track` column): `tracking_metrics` over every spacepoint of the split, with the truth
  particle's p_T and eta where the shards have the `particle_*` lists (`track_id` indexes them).
- `pid` and `noise` (with those columns): `classification_metrics` pooled over every spacepoint of the split (every
  spacepoint has a truth class; an unmatched one is "other" and not noise, as docs/data-format.md says).

An invalid file raises `PredictionsError` naming the first offending event as (run R, event E) and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import DatasetError, Fm4nppError, PredictionsError
from ..files import sha256_file
from ..integrity import checked_shards, damaged, read_splits
from ..splits import SPLITS, repo_shards
from ..tasks import BY_COLUMN, NOISE, PID, TRACKING
from ..version import tool_version
from .metrics import noise_metrics, pid_metrics, tracking_metrics

KEYS = ["run", "event"]
CONFIG = "labeled"
_PARTICLES = ["particle_px", "particle_py", "particle_pz"]
_SHOWN = 3  # events named in a message
#: A predictions file may hold at most this many rows per event of the split (and _SPARE_ROWS more) before its run
#: and event columns are read: enough to name the events of another split (train is 10 times test), few bytes each.
_ROWS_PER_EVENT, _SPARE_ROWS = 16, 10_000
#: What reading a damaged Parquet file raises; polars panics (a BaseException) on some, e.g. a footer whose counts
#: are not those of its pages.
_UNREADABLE = (OSError, pl.exceptions.PolarsError, pl.exceptions.PanicException, pa.ArrowException)


# ------------------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------------------


def score(predictions_path: str | Path, data_repo: str | Path, split: str = "test") -> dict:
    """Score a predictions file against split `split` of the labeled configuration of repository `data_repo`.

    Returns {"tracking": {...}, "pid": {...}, "noise": {...}}, each task present when the file has its column (the
    JSON of DESIGN §5; the figures of fm4npp_data.evaluation.metrics). Raises PredictionsError for an invalid file and
    DatasetError (both Fm4nppError) for a repository without that split or a damaged one."""
    path = Path(predictions_path)
    tasks, declared = read_footer(path)
    truth = read_truth(truth_shards(data_repo, split), tasks)
    where = f"split {split!r} of {data_repo}"
    keys = read_keys(path, declared, truth, where)
    check_split(keys, truth, path, Path(data_repo), split, where)
    check_events(keys, truth, path, where)
    check_declared(keys, truth, declared, path)
    predictions = read_lists(path, keys, tasks)
    joined = truth.join(predictions.rename({c: f"predicted_{c}" for c in tasks}), on=KEYS, how="inner").sort(KEYS)
    check_lengths(joined, tasks, path)
    joined = joined.filter(pl.col(BY_COLUMN[tasks[0]].truth).list.len() > 0)
    flat, event = flatten(joined, [f"predicted_{c}" for c in tasks] + _truth_columns(joined, tasks), path)
    result = {}
    if TRACKING.column in tasks:
        pt, eta = particle_momenta(joined, event, flat["track_id"]) if _PARTICLES[0] in joined.columns else (None,) * 2
        noise = flat["noise"] if "noise" in flat else np.zeros(event.size, bool)
        result[TRACKING.name] = tracking_metrics(event, flat["track_id"], noise, flat["predicted_track"], pt, eta)
    if PID.column in tasks:
        _check_classes(flat["predicted_pid"], event, joined, path)
        result[PID.name] = pid_metrics(flat["pid"], flat["predicted_pid"])
    if NOISE.column in tasks:
        result[NOISE.name] = noise_metrics(flat["noise"], flat["predicted_noise"])
    return result


def scored_on(predictions_path: str | Path, data_repo: str | Path, split: str = "test") -> dict:
    """What a result was scored on, from splits.json and the predictions file's bytes (the `scored_on` object of
    `fm4npp leaderboard --json`): the predictions file, its sha256 and size; the repository, config and split, the
    split's events, spacepoints and `ids_sha256` (the sha256 of its sorted (run, event) pairs, as splits.json
    records it) and its shards' sha256; the fm4npp version that scored it."""
    path, repo = Path(predictions_path), Path(data_repo)
    info = read_splits(repo)["configs"].get(CONFIG, {}).get(split)
    if info is None:
        raise DatasetError(f"{repo}: splits.json records no split {split!r} of config {CONFIG!r}")
    return {
        "predictions": str(path),
        "predictions_sha256": sha256_file(path),
        "predictions_bytes": path.stat().st_size,
        "data": str(repo),
        "config": CONFIG,
        "split": split,
        "events": info["events"],
        "spacepoints": info["spacepoints"],
        "ids_sha256": info["ids_sha256"],
        "shards_sha256": [s["sha256"] for s in info["shards"]],
        "tool_version": tool_version(),
    }


# ------------------------------------------------------------------------------------------------------------
# Reading the predictions: footer, keys, lists
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Declared:
    """What a predictions file's footer declares: its rows, the rows of each row group, and for each task column the
    entries of each row group (Parquet values: one per list entry, and one per empty or null list)."""

    rows: int
    group_rows: np.ndarray
    entries: dict[str, np.ndarray]


def read_footer(path: Path) -> tuple[list[str], Declared]:
    """The tasks of a predictions file and what its footer declares, its columns checked for types; nothing else of
    the file is read."""
    try:
        schema = pl.read_parquet_schema(path)
        metadata = pq.read_metadata(path)
    except _UNREADABLE as exc:
        raise PredictionsError(
            f"{path}: not a readable Parquet file ({exc}); write the predictions as Parquet "
            "(docs/data-format.md, 'Predictions file')"
        ) from exc
    missing = [c for c in KEYS if c not in schema]
    tasks = [c for c in BY_COLUMN if c in schema]
    if missing or not tasks:
        raise PredictionsError(
            f"{path}: a predictions file needs columns run, event and at least one of track, pid, "
            f"noise; it has {', '.join(schema) or 'none'}"
        )
    for column in KEYS:
        if not schema[column].is_integer():
            raise PredictionsError(f"{path}: column {column!r} must be an integer, not {schema[column]}")
    for column in tasks:
        _check_type(path, column, schema[column])
    groups = [metadata.row_group(g) for g in range(metadata.num_row_groups)]
    entries = {}
    for column in tasks:
        leaves = [i for i in range(metadata.num_columns) if metadata.schema.column(i).path.startswith(f"{column}.")]
        if len(leaves) != 1:  # a list of integers or booleans has one leaf column
            raise PredictionsError(f"{path}: column {column!r} is not stored as one list column; write it as a list")
        entries[column] = np.array([g.column(leaves[0]).num_values for g in groups], np.int64)
    group_rows = np.array([g.num_rows for g in groups], np.int64)
    return tasks, Declared(metadata.num_rows, group_rows, entries)


def _check_type(path: Path, column: str, dtype: pl.DataType) -> None:
    """A task column is a list of its task's type (fm4npp_data.tasks): of integers (track, pid; any width) or of
    booleans (noise)."""
    inner = dtype.inner if isinstance(dtype, pl.List) else None
    boolean = pa.types.is_boolean(BY_COLUMN[column].dtype)
    expected = f"list<{BY_COLUMN[column].dtype}>"
    ok = inner is not None and (inner == pl.Boolean if boolean else inner.is_integer())
    ok = ok and inner != pl.UInt64  # values beyond int64 would wrap around
    if not ok:
        raise PredictionsError(
            f"{path}: column {column!r} must be {expected} (one entry per spacepoint), not "
            f"{dtype}; cast it before writing the file"
        )


def read_keys(path: Path, declared: Declared, truth: pl.DataFrame, where: str) -> pl.DataFrame:
    """The run and event of each row (int64, file order), after checking that the rows the footer declares are not
    far more than the split's events; no nulls."""
    limit = _ROWS_PER_EVENT * truth.height + _SPARE_ROWS
    if declared.rows > limit or int(declared.group_rows.sum()) != declared.rows:
        raise PredictionsError(
            f"{path}: the file declares {declared.rows:,} rows, but {where} has "
            f"{truth.height:,} events; write one row per event of the split (the file was not "
            "read further)"
        )
    frame = _read(path, KEYS)
    try:
        frame = frame.with_columns(pl.col(KEYS).cast(pl.Int64))
    except pl.exceptions.PolarsError as exc:
        raise PredictionsError(
            f"{path}: run or event values beyond the int64 range ({exc}); write the run and "
            "event numbers of the dataset (int32 run, int64 event)"
        ) from exc
    if frame.select(pl.any_horizontal(pl.col(KEYS).is_null()).any()).item():
        raise PredictionsError(f"{path}: some rows have no run or event; every row must name its event")
    return frame


def check_declared(keys: pl.DataFrame, truth: pl.DataFrame, declared: Declared, path: Path) -> None:
    """The entries each row group declares for each list column are at most one per spacepoint of its events (and
    one per row, an empty or null list), before any list is decoded. Called once the rows are the split's events."""
    group = np.repeat(np.arange(declared.group_rows.size), declared.group_rows)
    lengths = truth.select(*KEYS, pl.col(BY_COLUMN[next(iter(declared.entries))].truth).list.len().alias("spacepoints"))
    rows = keys.with_columns(pl.Series("group", group)).join(lengths, on=KEYS, how="left")
    spacepoints = np.bincount(
        rows["group"].to_numpy(), rows["spacepoints"].fill_null(0).to_numpy(), minlength=declared.group_rows.size
    ).astype(np.int64)
    allowed = spacepoints + declared.group_rows
    for column, entries in declared.entries.items():
        over = np.flatnonzero(entries > allowed)
        if over.size:
            g = int(over[0])
            events = rows.filter(pl.col("group") == g)
            have = "that event has" if events.height == 1 else "those events have"
            raise PredictionsError(
                f"{path}: column {column!r} declares {int(entries[g]):,} entries for "
                f"{_names(events)} (row group {g}), but {have} {int(spacepoints[g]):,} "
                "spacepoints; give one entry per stored spacepoint (the lists were not "
                "read)"
            )


def read_lists(path: Path, keys: pl.DataFrame, tasks: list[str]) -> pl.DataFrame:
    """run, event (the checked keys) and the task columns of the predictions file."""
    return pl.concat([keys, _read(path, tasks)], how="horizontal")


def _read(path: Path, columns: list[str]) -> pl.DataFrame:
    try:
        return pl.read_parquet(path, columns=columns)
    except _UNREADABLE as exc:
        raise PredictionsError(f"{path}: the file is damaged ({exc}); write the predictions file again") from exc


def truth_shards(data_repo: str | Path, split: str) -> list[Path]:
    """REPO/data/labeled/{split}-NNNNN-of-MMMMM.parquet, all M of them, each one's sha256 checked against splits.json
    (fm4npp_data.integrity); DatasetError when they are not all there or one differs."""
    if not (Path(data_repo) / "data" / "labeled").is_dir():
        raise DatasetError(
            f"{data_repo}: no data/labeled folder; --data must be a dataset repository "
            "(built by fm4npp-data build, or downloaded)"
        )
    return checked_shards(Path(data_repo), "labeled", split)


def read_truth(shards: list[Path], tasks: list[str]) -> pl.DataFrame:
    """run, event (int64) and the truth columns the tasks need (particle momenta for tracking when the data have
    them) from the shards of a split; DatasetError naming a shard that cannot be read."""
    names = _read_truth_shard(shards[0], None).columns
    wanted = [BY_COLUMN[c].truth for c in tasks]
    missing = [c for c in wanted if c not in names]
    if missing:
        unscored = ", ".join(c for c in tasks if BY_COLUMN[c].truth in missing)
        raise PredictionsError(
            f"{shards[0].parent}: the data have no {', '.join(missing)} truth, so the predictions' "
            f"{unscored} cannot be scored; remove that column or score against data with those "
            "labels"
        )
    if TRACKING.column in tasks:
        wanted += [c for c in ["noise", *_PARTICLES] if c in names and c not in wanted]
        if not all(c in names for c in _PARTICLES):
            wanted = [c for c in wanted if c not in _PARTICLES]
    frames = [_read_truth_shard(shard, KEYS + wanted) for shard in shards]
    frame = pl.concat(frames, how="vertical_relaxed", rechunk=False) if len(frames) > 1 else frames[0]
    return frame.with_columns(pl.col(KEYS).cast(pl.Int64))


def _read_truth_shard(shard: Path, columns: list[str] | None) -> pl.DataFrame:
    """The columns of one truth shard (None: only its schema, as an empty frame); DatasetError when it cannot be
    read (a truncated or damaged file whose checksum splits.json does not catch)."""
    try:
        if columns is None:
            return pl.DataFrame(schema=pl.read_parquet_schema(shard))
        return pl.read_parquet(shard, columns=columns)
    except _UNREADABLE as exc:
        raise DatasetError(damaged(shard, exc)) from exc


def _name(run, event) -> str:
    return f"(run {run}, event {event})"


def _events(n: int, verb: str = "is") -> str:
    """ "1 event is" or "N events are" (verb "is" or "appears")."""
    plural = {"is": "are", "appears": "appear"}[verb]
    return f"1 event {verb}" if n == 1 else f"{n} events {plural}"


def _names(frame: pl.DataFrame) -> str:
    """The first few events of `frame` as (run R, event E), and how many there are."""
    shown = ", ".join(_name(r, e) for r, e in frame.select(KEYS).head(_SHOWN).iter_rows())
    more = f" and {frame.height - _SHOWN} more" if frame.height > _SHOWN else ""
    return f"{shown}{more}"


def check_split(keys: pl.DataFrame, truth: pl.DataFrame, path: Path, repo: Path, split: str, where: str) -> None:
    """Predictions for another split: when the file holds events of this split and, besides, only events of one
    other split, it mixes splits (whatever their proportion); when most of its events are not in this split but in
    another, say which and suggest --split."""
    extra = keys.select(KEYS).join(truth.select(KEYS), on=KEYS, how="anti")
    if extra.height == 0:
        return
    best, found = None, pl.DataFrame(schema={k: pl.Int64 for k in KEYS})
    for other in [s for s in SPLITS if s != split]:
        try:
            ids = pl.read_parquet(repo_shards(repo, CONFIG, other), columns=KEYS)
        except (Fm4nppError, *_UNREADABLE):  # a split the repository does not have, or cannot be read: no hint
            continue
        there = extra.join(ids.with_columns(pl.col(KEYS).cast(pl.Int64)), on=KEYS, how="semi")
        if there.height > found.height:
            best, found = other, there
    here = keys.height - extra.height  # events of this split in the file
    if best is not None and here and found.height == extra.height:
        raise PredictionsError(
            f"{path}: the predictions mix splits: {here} of their {keys.height} events are events "
            f"of {where}, {found.height} of split {best!r}, {_names(found)}; a predictions file "
            "holds the events of one split: remove the others (and score those with --split "
            f"{best})"
        )
    if best is not None and 2 * found.height > keys.height:
        raise PredictionsError(
            f"{path}: the predictions are for another split: {found.height} of their "
            f"{keys.height} events are not events of {where} but of split {best!r}, "
            f"{_names(found)}; score the file with --split {best}, or predict split "
            f"{split!r}"
        )


def check_events(predictions: pl.DataFrame, truth: pl.DataFrame, path: Path, where: str) -> None:
    """Every event of the split exactly once, and no other event."""
    repeated = predictions.select(KEYS).filter(predictions.select(KEYS).is_duplicated()).unique(maintain_order=True)
    if repeated.height:
        events = _events(repeated.height, "appears")
        raise PredictionsError(f"{path}: {events} more than once, {_names(repeated)}; write one row per event")
    missing = truth.select(KEYS).join(predictions.select(KEYS), on=KEYS, how="anti")
    if missing.height:
        raise PredictionsError(
            f"{path}: {missing.height} of the {truth.height} events of {where} have no "
            f"predictions, {_names(missing)}; predict every event of the split (an event with no "
            "spacepoints needs a row with empty lists)"
        )
    doubled = truth.select(KEYS).filter(truth.select(KEYS).is_duplicated()).unique(maintain_order=True)
    if doubled.height:
        raise DatasetError(
            f"{where}: {_events(doubled.height, 'appears')} in more than one row of the split, "
            f"{_names(doubled)}; the repository is damaged: build or download it again"
        )
    extra = predictions.select(KEYS).join(truth.select(KEYS), on=KEYS, how="anti")
    if extra.height:
        raise PredictionsError(
            f"{path}: {_events(extra.height)} not in {where}, {_names(extra)}; remove them, or "
            "score the file against the split they come from (--split)"
        )


def check_lengths(joined: pl.DataFrame, tasks: list[str], path: Path) -> None:
    """Each predicted list has one entry per stored spacepoint of its event."""
    for column in tasks:
        truth, predicted = pl.col(BY_COLUMN[column].truth).list.len(), pl.col(f"predicted_{column}").list.len()
        bad = joined.filter(predicted.ne_missing(truth))
        if bad.height:
            run, event, n, m = bad.select(*KEYS, predicted, truth).row(0)
            given = "no list (null)" if n is None else f"{n} entries"
            raise PredictionsError(
                f"{path}: event {_name(run, event)}: column {column!r} has {given}, but the event "
                f"has {m} spacepoints ({_events(bad.height)} wrong); give one entry per stored "
                "spacepoint, in the event's stored order (that of x, y, z)"
            )


def _truth_columns(joined: pl.DataFrame, tasks: list[str]) -> list[str]:
    names = [BY_COLUMN[c].truth for c in tasks]
    if TRACKING.column in tasks and "noise" in joined.columns and "noise" not in names:
        names.append("noise")
    return names


def flatten(joined: pl.DataFrame, columns: list[str], path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The list columns as flat NumPy arrays over all spacepoints, and the event index (row) of each spacepoint.

    The lists of a row have equal lengths (checked before); a null entry is an error naming its event."""
    lengths = joined.select(pl.col(columns[0]).list.len()).to_series().to_numpy()
    event = np.repeat(np.arange(joined.height, dtype=np.int64), lengths)
    flat = {}
    for column in columns:
        values = joined.get_column(column).explode()
        if values.null_count():
            row = int(event[int(values.is_null().arg_max())])
            run, ev = joined.select(KEYS).row(row)
            side = "the predictions" if column.startswith("predicted_") else "the truth (the repository is damaged)"
            raise PredictionsError(
                f"{path}: event {_name(run, ev)}: {side} column "
                f"{column.removeprefix('predicted_')!r} has null entries; give a value for every "
                "spacepoint (-1 for an unassigned track label)"
            )
        flat[column] = values.to_numpy()
    return flat, event


def _check_classes(predicted: np.ndarray, event: np.ndarray, joined: pl.DataFrame, path: Path) -> None:
    """Predicted PID classes are 0..4."""
    if predicted.size and (predicted.min() < 0 or predicted.max() >= len(PID.classes)):
        first = int(np.flatnonzero((predicted < 0) | (predicted >= len(PID.classes)))[0])
        run, ev = joined.select(KEYS).row(int(event[first]))
        classes = ", ".join(f"{i} {c}" for i, c in enumerate(PID.classes))
        raise PredictionsError(
            f"{path}: event {_name(run, ev)}: predicted pid {int(predicted[first])} is not a "
            f"class ({classes}); write class indices"
        )


def particle_momenta(joined: pl.DataFrame, event: np.ndarray, track_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p_T and pseudorapidity asinh(p_z / p_T) of each spacepoint's truth particle (`track_id` indexes the event's
    particle lists); NaN for a spacepoint without one (track_id -1, or beyond the event's list)."""
    counts = joined.select(pl.col(_PARTICLES[0]).list.len().fill_null(0)).to_series().to_numpy().astype(np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    px, py, pz = (_flat_particles(joined.get_column(c)) for c in _PARTICLES)
    with np.errstate(divide="ignore", invalid="ignore"):
        particle_pt = np.hypot(px, py)
        particle_eta = np.arcsinh(pz / particle_pt)
    known = (track_id >= 0) & (track_id < counts[event])
    if not known.any():
        return np.full(event.size, np.nan), np.full(event.size, np.nan)
    index = np.where(known, offsets[event] + track_id, 0)
    return np.where(known, particle_pt[index], np.nan), np.where(known, particle_eta[index], np.nan)


def _flat_particles(column: pl.Series) -> np.ndarray:
    """The values of a particle list column, event after event, as float64 (a null list counts as empty)."""
    values = pc.list_flatten(column.to_arrow())
    return values.to_numpy(zero_copy_only=False).astype(np.float64)


# ------------------------------------------------------------------------------------------------------------
# Markdown tables
# ------------------------------------------------------------------------------------------------------------


def markdown(result: dict, name: str = "predictions") -> str:
    """The tables of one result of `score` (one row named `name`); see markdown_rows."""
    return markdown_rows({name: result})


def markdown_rows(rows: Mapping[str, dict]) -> str:
    """The paper's tables as markdown, a row per model (name -> result of `score`):
    Table 2 (ARI, efficiency, purity; PID and noise accuracy, macro recall and precision), Table 5 (tracking
    diagnostics: spacepoint efficiency and purity, the sPHENIX subset, track counts), Table 3 (noise per class),
    Table 4 (PID per class), and each model's efficiency in p_T bins. "-" marks a figure a file does not have."""
    parts = [_table2(rows)]
    tracking = {n: r[TRACKING.name] for n, r in rows.items() if TRACKING.name in r}
    if tracking:
        parts.append(_table5(tracking))
    for task, title in (
        (NOISE, "Noise tagging per class (Table 3)"),
        (PID, "Particle identification per class (Table 4)"),
    ):
        results = {n: r[task.name] for n, r in rows.items() if task.name in r}
        if results:
            parts.append(_per_class(title, results, task.classes))
    for name, figures in tracking.items():
        if "efficiency_pt" in figures:
            parts.append(_pt_table(name, figures["efficiency_pt"]))
    return "\n\n".join(parts) + "\n"


def _fmt(value, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if percent else f"{value:.4f}"


def _table(title: str, header: list[str], body: list[list[str]]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _table2(rows: Mapping[str, dict]) -> str:
    header = [
        "model",
        "ARI",
        "ARI (event mean)",
        "efficiency",
        "purity",
        "PID acc.",
        "PID recall",
        "PID pre.",
        "noise acc.",
        "noise recall",
        "noise pre.",
    ]
    body = []
    for name, result in rows.items():
        t, p, n = (result.get(task.name, {}) for task in (TRACKING, PID, NOISE))
        row = [name, _fmt(t.get("ari")), _fmt(t.get("ari_event_mean"))]
        row += [_fmt(t.get("efficiency"), True), _fmt(t.get("purity"), True)]
        row += [_fmt(x.get(k)) for x in (p, n) for k in ("accuracy", "macro_recall", "macro_precision")]
        body.append(row)
    return _table("Track finding, particle identification and noise tagging (Table 2)", header, body)


def _table5(tracking: Mapping[str, dict]) -> str:
    header = [
        "model",
        "ARI",
        "spacepoint efficiency",
        "spacepoint purity",
        "sPHENIX-subset efficiency",
        "true tracks",
        "predicted tracks",
        "matched",
    ]
    body = []
    for name, t in tracking.items():
        subset = t.get("sphenix") or {}
        sub = (
            "-"
            if subset.get("efficiency") is None
            else (f"{100 * subset['efficiency']:.2f}% ± {100 * subset['error']:.2f}% ({subset['true_tracks']} tracks)")
        )
        c = t["counts"]
        body.append(
            [
                name,
                _fmt(t["ari"]),
                _fmt(t["spacepoint_efficiency"], True),
                _fmt(t["spacepoint_purity"], True),
                sub,
                str(c["true_tracks"]),
                str(c["predicted_tracks"]),
                str(c["matched_tracks"]),
            ]
        )
    return _table(
        "Tracking diagnostics (Table 5; sPHENIX subset: >= 20 spacepoints, p_T > 1 GeV/c, |eta| < 1.1)", header, body
    )


def _per_class(title: str, task: Mapping[str, dict], classes) -> str:
    header = ["model", "accuracy", "macro recall", "macro precision"]
    header += [f"{c} {k}" for c in classes for k in ("recall", "precision")]
    body = []
    for name, r in task.items():
        row = [name, _fmt(r["accuracy"]), _fmt(r["macro_recall"]), _fmt(r["macro_precision"])]
        row += [_fmt(r["per_class"][c][k]) for c in classes for k in ("recall", "precision")]
        body.append(row)
    return _table(title, header, body)


def _pt_table(name: str, bins: dict) -> str:
    edges = bins["edges"]
    body = []
    for i, (n, k, e, err) in enumerate(
        zip(bins["true_tracks"], bins["matched"], bins["efficiency"], bins["error"], strict=True)
    ):
        body.append(
            [
                f"{edges[i]:.1f}-{edges[i + 1]:.1f}",
                str(n),
                str(k),
                "-" if e is None else f"{100 * e:.2f}% ± {100 * err:.2f}%",
            ]
        )
    return _table(
        f"Tracking efficiency in p_T bins: {name}", ["p_T (GeV/c)", "true tracks", "matched", "efficiency"], body
    )


__all__ = ["PredictionsError", "markdown", "markdown_rows", "score", "scored_on"]
