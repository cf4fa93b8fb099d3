"""`build`: the dataset repository from prepared sets, in steps: check the inputs (prepared, as their manifests
say, one binning), scan their events (a Catalog), assign each event a configuration and a split (layout.assign),
write the shards in parallel, then binning.json, difficulty.json, manifest.json, the card and splits.json.

Shards are sorted by (run, event); every file's sha256 is recorded in splits.json. The build is written into a
staging folder renamed when complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..dataset import BINNING, DIFFICULTY, MANIFEST, EventSet, open_sets
from ..errors import RepoError
from ..files import FolderLock, partial_path, sha256_file, write_json
from ..integrity import READ_OPTIONS, SPLITS_FILE, WRITE_OPTIONS
from ..parallel import Failed, parallel_map
from ..prepared import binning_key
from ..schema import DERIVED, IDENTITY, SCHEMA_VERSION, SPACEPOINTS
from ..shards import COMPRESSION, ROW_GROUP_EVENTS, SHARD_EVENTS
from ..tasks import TRUTH_COLUMNS
from ..version import tool_version
from .card import render_card
from .layout import (
    CONFIGS,
    README,
    REPO_FORMAT,
    TOP_FILES,
    Assignment,
    Catalog,
    assign,
    ids_digest,
    shard_name,
)


@dataclass(frozen=True)
class BuildOptions:
    labeled_events: int | None = None  # None: 90k when there are >= 450k events, else a fifth of them
    shard_events: int = SHARD_EVENTS
    row_group_events: int = ROW_GROUP_EVENTS

    def check(self) -> None:
        if self.labeled_events is not None and self.labeled_events < 0:
            raise RepoError(f"--labeled-events must be >= 0, not {self.labeled_events}")
        if self.shard_events < 1 or self.row_group_events < 1:
            raise RepoError("--shard-events and --row-group-events must be at least 1")


@dataclass
class BuildSummary:
    out: Path
    splits: dict[str, dict[str, dict]] = field(default_factory=dict)  # config -> split -> {events, spacepoints, ...}
    excluded: dict[str, int] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------------------
# Scanning the inputs
# ------------------------------------------------------------------------------------------------------------


def _input_sets(dirs: Iterable[str | Path]) -> list[tuple[Path, list[EventSet]]]:
    found = []
    for d in map(Path, dirs):
        sets = open_sets(d)
        for eset in sets:
            if eset.manifest.prepare is None:
                raise RepoError(f"{eset.path}: not prepared (or not every shard is); run fm4npp-data prepare {d}")
            problems = eset.manifest.problems(eset.path, checksums=True)  # a build trusts no file it did not check
            if problems:
                raise RepoError(f"{eset.path}: the set does not match its manifest: {'; '.join(problems[:5])}")
        found.append((d, sets))
    if not found:
        raise RepoError("no input datasets given")
    return found


def _check_one_binning(inputs: list[tuple[Path, list[EventSet]]]) -> dict:
    """All inputs prepared with one binning, one k and one order; the binning.json they share."""
    first = None
    for folder, sets in inputs:
        for eset in sets:
            identity = {k: eset.manifest.prepare[k] for k in ("binning", "k", "order", "knn")}
            if first is None:
                first = (eset.path, identity)
            elif identity != first[1]:
                raise RepoError(
                    f"{eset.path} was prepared with {identity}, but {first[0]} with {first[1]}: a repository holds "
                    f"one binning; prepare {folder} with --binning {first[0]}/.../binning.json (the other's)"
                )
    for folder, _ in inputs:
        for candidate in (folder, *folder.parents[:3]):
            if (candidate / BINNING).is_file():
                binning = json.loads((candidate / BINNING).read_text())
                if binning_key(binning) == first[1]["binning"]:
                    return binning
    raise RepoError(f"no {BINNING} with the inputs' binning ({first[1]['binning']}) beside them; prepare them again")


def scan(inputs: list[tuple[Path, list[EventSet]]]) -> Catalog:
    """Read the identity, size and difficulty of every event (small columns only)."""
    shards, cols = [], {k: [] for k in ("shard", "row", "run", "event", "spacepoints", "distance", "labeled", "split")}
    for _, sets in inputs:
        for eset in sets:
            release = {"train": 0, "validation": 1, "test": 2}.get(eset.manifest.split or "", -1)
            for path in eset.shard_paths:
                try:
                    names = pq.read_schema(path).names
                    table = pq.read_table(path, columns=["run", "event", "x", "knn_mean_distance"])
                except (OSError, pa.ArrowException) as exc:
                    raise RepoError(f"{path}: cannot be read ({exc}); convert and prepare its input again") from exc
                n = table.num_rows
                has_labels = all(c in names for c in TRUTH_COLUMNS)
                cols["shard"].append(np.full(n, len(shards), np.int32))
                cols["row"].append(np.arange(n, dtype=np.int64))
                cols["run"].append(table["run"].to_numpy().astype(np.int32))
                cols["event"].append(table["event"].to_numpy().astype(np.int64))
                cols["spacepoints"].append(pc.list_value_length(table["x"]).to_numpy(zero_copy_only=False))
                cols["distance"].append(table["knn_mean_distance"].to_numpy(zero_copy_only=False).astype(np.float64))
                cols["labeled"].append(np.full(n, has_labels))
                cols["split"].append(np.full(n, release if has_labels else -1, np.int8))
                shards.append(path)
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    catalog = Catalog(
        shards,
        cat["shard"],
        cat["row"],
        cat["run"],
        cat["event"],
        cat["spacepoints"].astype(np.int64),
        cat["distance"],
        cat["labeled"].astype(bool),
        cat["split"].astype(np.int8),
    )
    order = np.lexsort((catalog.event, catalog.run))
    r, e = catalog.run[order], catalog.event[order]
    same = np.flatnonzero((r[1:] == r[:-1]) & (e[1:] == e[:-1]))
    if same.size:
        a, b = order[same[0]], order[same[0] + 1]
        raise RepoError(
            f"(run {r[same[0]]}, event {e[same[0]]}) is in {shards[catalog.shard[a]]} and in "
            f"{shards[catalog.shard[b]]}: the inputs overlap; build from distinct sets"
        )
    return catalog


# ------------------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------------------


def _columns(config: str, shards: list[Path], used: np.ndarray) -> list[str]:
    """The columns of a configuration: those every input shard it draws from has (pretrain: no truth)."""
    common = None
    for index in np.unique(used):
        names = pq.read_schema(shards[index]).names
        common = [c for c in (common or names) if c in names]
    base = [f.name for f in (*IDENTITY, *SPACEPOINTS)] + list(DERIVED)
    if config == "pretrain":
        return [c for c in base if c in (common or base)]
    return [c for c in (common or []) if c in base or c in TRUTH_COLUMNS or c.startswith("particle_")]


def write_shard(out: str, parts: list[tuple[str, list[int]]], columns: list[str], row_group_events: int) -> dict:
    """One output shard: the rows `parts` = [(input shard, rows)] in that order; written atomically."""
    tables = []
    for path, rows in parts:
        file = pq.ParquetFile(path, **READ_OPTIONS)
        sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        rows = np.asarray(rows, np.int64)
        groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
        table = file.read_row_groups(list(groups), columns=columns)
        tables.append(table.take(rows - starts[groups[0]] if groups.size == 1 else _local(rows, starts, groups)))
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")
    table = table.sort_by([("run", "ascending"), ("event", "ascending")])  # input shards may interleave
    table = table.replace_schema_metadata({b"fm4npp.schema_version": str(SCHEMA_VERSION).encode()})
    out = Path(out)
    tmp = partial_path(out)
    pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=row_group_events, **WRITE_OPTIONS)
    os.replace(tmp, out)
    run, event = table["run"].to_numpy(), table["event"].to_numpy()
    return {
        "path": out.name,
        "events": table.num_rows,
        "spacepoints": int(pc.sum(pc.list_value_length(table["x"])).as_py() or 0),
        "bytes": out.stat().st_size,
        "sha256": sha256_file(out),
        "first": [int(run[0]), int(event[0])] if table.num_rows else None,
        "last": [int(run[-1]), int(event[-1])] if table.num_rows else None,
    }


def _local(rows: np.ndarray, starts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Positions of `rows` (file rows) in the concatenation of row groups `groups`."""
    offsets = np.concatenate([[0], np.cumsum(starts[groups + 1] - starts[groups])])
    which = np.searchsorted(starts[groups], rows, side="right") - 1
    return offsets[which] + rows - starts[groups][which]


def build(
    dirs: Iterable[str | Path],
    out: str | Path,
    options: BuildOptions | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[dict], None] | None = None,
) -> BuildSummary:
    """Build the dataset repository in `out` (new or empty) from prepared sets or datasets."""
    options = options or BuildOptions()
    options.check()
    start = time.perf_counter()
    out = Path(os.path.abspath(out))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RepoError(f"{out} exists and is not empty; choose a new --out (a repository is built whole)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(out.parent, RepoError):  # one build at a time beside `out`: it owns the staging folders there
        for stale in out.parent.glob(f".{out.name}.partial-*"):  # a killed build's (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        return _build(dirs, out, options, workers, scheduler, progress, start)


def _build(dirs, out, options, workers, scheduler, progress, start) -> BuildSummary:
    inputs = _input_sets(dirs)
    binning = _check_one_binning(inputs)
    catalog = scan(inputs)
    assignment = assign(catalog, options.labeled_events)
    summary = BuildSummary(out=out, excluded=assignment.excluded)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    (stage / "data").mkdir(parents=True)
    try:
        splits = _write_splits(catalog, assignment, stage, options, workers, scheduler, progress)
        write_json(stage / BINNING, binning)
        difficulty = _difficulty(catalog, assignment, inputs)
        if difficulty is not None:
            write_json(stage / DIFFICULTY, difficulty)
        summary.inputs = _inputs_record(inputs, catalog)
        manifest = {
            "format": REPO_FORMAT,
            "tool_version": tool_version(),
            "built": date.today().isoformat(),
            "options": {
                "labeled_events": options.labeled_events,
                "shard_events": options.shard_events,
                "row_group_events": options.row_group_events,
            },
            "inputs": summary.inputs,
            "binning": _binning_key(inputs),
            "counts": {
                c: {s: {k: v[k] for k in ("events", "spacepoints")} for s, v in d.items()} for c, d in splits.items()
            },
            "excluded": assignment.excluded,
        }
        write_json(stage / MANIFEST, manifest)
        (stage / README).write_text(render_card(stage, manifest, splits, catalog, assignment))
        files = {name: sha256_file(stage / name) for name in TOP_FILES if (stage / name).is_file()}
        write_json(stage / SPLITS_FILE, {"rule": assignment.rule, "files": files, "configs": splits})
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary.splits = splits
    summary.seconds = time.perf_counter() - start
    return summary


def _binning_key(inputs) -> str:
    return inputs[0][1][0].manifest.prepare["binning"]


def _write_splits(catalog, assignment, stage, options, workers, scheduler, progress) -> dict:
    tasks, where = [], []
    splits: dict[str, dict[str, dict]] = {}
    for c, (config, names) in enumerate(CONFIGS.items()):
        in_config = np.flatnonzero(assignment.config == c)
        columns = _columns(config, catalog.shards, catalog.shard[in_config]) if in_config.size else []
        (stage / "data" / config).mkdir()
        splits[config] = {}
        for s, split in enumerate(names):
            members = in_config[assignment.split[in_config] == s]
            members = members[np.lexsort((catalog.event[members], catalog.run[members]))]
            n_shards = max(1, math.ceil(members.shape[0] / options.shard_events)) if members.size else 0
            splits[config][split] = {
                "events": int(members.shape[0]),
                "spacepoints": int(catalog.spacepoints[members].sum()),
                "ids_sha256": ids_digest(catalog.run[members], catalog.event[members]),
                "columns": columns,
                "shards": [],
            }
            for i in range(n_shards):
                chunk = members[i * options.shard_events : (i + 1) * options.shard_events]
                parts = []
                for shard in np.unique(catalog.shard[chunk]):
                    rows = chunk[catalog.shard[chunk] == shard]
                    parts.append((shard, rows))
                # keep the (run, event) order: input shards in the order their first event appears
                parts.sort(key=lambda p: int(np.flatnonzero(np.isin(chunk, p[1]))[0]))
                path = stage / "data" / config / shard_name(split, i, n_shards)
                spec = [(str(catalog.shards[sh]), catalog.row[rows].tolist()) for sh, rows in parts]
                tasks.append((str(path), spec, columns, options.row_group_events))
                where.append((config, split))
    results: dict[int, dict] = {}
    for index, result in parallel_map(write_shard, tasks, workers, scheduler):
        if isinstance(result, Failed):
            raise RepoError(f"{tasks[index][0]}: {result.message}")
        results[index] = result
        if progress:
            progress(result)
    for index in sorted(results):
        config, split = where[index]
        splits[config][split]["shards"].append(results[index])
    return splits


def _difficulty(catalog: Catalog, assignment: Assignment, inputs) -> dict | None:
    """The difficulty weights over the pretraining events of the train split (fm4npp_data.preparation.prepare)."""
    from ..preparation.prepare import difficulty_weights

    train = (assignment.config == 1) & (assignment.split == 0)
    if not train.any():
        train = assignment.config >= 0
    d = catalog.distance[train]
    if not np.isfinite(d).any():
        return None
    difficulty = difficulty_weights(d, 10)
    difficulty.update(
        k=inputs[0][1][0].manifest.prepare["k"], training_events=int(train.sum()), training_split="pretrain/train"
    )
    return difficulty


def _inputs_record(inputs, catalog: Catalog) -> list[dict]:
    record = []
    shard_of_set = {}
    for folder, sets in inputs:
        for eset in sets:
            for path in eset.shard_paths:
                shard_of_set[str(path)] = (folder, eset)
    by_set: dict[str, dict] = {}
    for index, path in enumerate(catalog.shards):
        folder, eset = shard_of_set[str(path)]
        entry = by_set.setdefault(
            str(eset.path),
            {
                "path": str(eset.path.resolve()),
                "dataset": str(folder.resolve()),
                "layouts": eset.manifest.layouts,
                "truth": eset.manifest.truth,
                "noise_rule": eset.manifest.options.get("noise_variable", "pt"),
                "noise_cut": eset.manifest.options.get("noise_cut"),
                "split": eset.manifest.split,
                "simulated": _simulated(eset),
                "events": 0,
            },
        )
        entry["events"] += int((catalog.shard == index).sum())
    record.extend(sorted(by_set.values(), key=lambda e: e["path"]))  # the same whatever the order of the inputs
    return record


def _simulated(eset: EventSet) -> bool:
    """Whether a set comes from fm4npp's fast simulation (its inputs sit beside a simulation.json)."""
    return any((Path(e.path).parent / "simulation.json").is_file() for e in eset.manifest.inputs)
